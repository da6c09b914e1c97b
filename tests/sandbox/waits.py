"""Bounded waits for tests: wait for the condition itself, fail with a message instead of hanging.

Deadlines are generous (tens of seconds): on a quiet machine the condition holds in milliseconds, on
two busy cores it may take seconds; a test that would hang fails at the deadline instead.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import IO, Any

GENEROUS_S = 60.0


def wait_until(predicate: Callable[[], Any], timeout_s: float = GENEROUS_S, what: str = "the condition",
               interval_s: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); AssertionError at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what} (last value: {value!r})")
        time.sleep(interval_s)


def readline_within(stream: IO[str], timeout_s: float = GENEROUS_S, what: str = "a line") -> str:
    """One line from a pipe (a child's stdout), or AssertionError at the deadline instead of blocking."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout_s)
    except queue.Empty:
        raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}") from None
