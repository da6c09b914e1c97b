"""Third-party chatter to our log: what the libraries that build the embedding model print on a fresh
machine (transformers' "Loading weights" progress bar; onnxruntime's quantizer advice, logged on the root
logger) goes to a module's logger at DEBUG instead of the terminal of whoever started the server.
Errors still show where they would have.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def no_progress_bars() -> Iterator[None]:
    """transformers' (and huggingface_hub's) progress bars off while the block runs."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


class _RootStandIn(logging.Handler):
    """Stands in for the root logger's handlers: records a library logs straight on the root logger
    (`logging.warning(...)`) below ERROR go to `logger` at DEBUG; every other record goes where it
    would have gone (the root's handlers, or Python's last-resort stderr handler when there are none)."""

    def __init__(self, logger: logging.Logger, handlers: list[logging.Handler]):
        super().__init__()
        self.logger, self.handlers = logger, handlers

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "root" and record.levelno < logging.ERROR:
            self.logger.debug("%s: %s", record.levelname.lower(), record.getMessage())
            return
        for handler in self.handlers or [logging.lastResort]:
            if handler is not None and record.levelno >= handler.level:
                handler.handle(record)


@contextmanager
def root_logging_to(logger: logging.Logger) -> Iterator[None]:
    """Root-logger records below ERROR go to `logger` at DEBUG while the block runs. Without a stand-in,
    `logging.warning()` in a library would also configure the application's root logger (basicConfig:
    a stderr handler that then prints every later warning of every library)."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [_RootStandIn(logger, saved)]
    try:
        yield
    finally:
        root.handlers = saved
