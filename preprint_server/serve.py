"""Run the server in this process (uvicorn in a background thread) on a loopback port.

    with local_server(data_dir) as url: ...            # context manager
    url, stop = start_local_server(data_dir); stop()   # or by hand

The lab uses this when no server is configured; tests use it for real HTTP on loopback.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from preprint_server.app import create_app
from preprint_server.core.config import ServerSettings
from preprint_server.errors import ServerStartError
from preprint_server.search import Embedder


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_local_server(
    data_dir: Path | str, host: str = "127.0.0.1", port: int | None = None,
    embedder: Embedder | None = None, timeout_s: float = 120.0, **settings,
) -> tuple[str, Callable[[], None]]:
    """Start a server on `host:port` (a free port by default); returns (url, stop)."""
    cfg = ServerSettings(data_dir=Path(data_dir), **settings)
    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(
        create_app(cfg, embedder), host=host, port=port, log_level="warning", access_log=False,
        timeout_graceful_shutdown=5,
    ))
    thread = threading.Thread(target=server.run, name=f"preprint-server-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive():
            raise ServerStartError(f"preprint server on {host}:{port} failed to start (is the port in use?)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise ServerStartError(f"preprint server on {host}:{port} did not start within {timeout_s:.0f}s")
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=30)

    return f"http://{host}:{port}", stop


@contextmanager
def local_server(data_dir: Path | str, **kw) -> Iterator[str]:
    url, stop = start_local_server(data_dir, **kw)
    try:
        yield url
    finally:
        stop()
