"""The preprint server and its CLI as real processes (`python -m agentlab ...`): what a restart,
a command-line flag or `reindex` does is only shown by a process of its own (Chroma keeps one
client per directory and process, so a server restarted inside the test process reads its
index from memory, not from disk)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from preprint_server import crud
from preprint_server.app import create_app
from preprint_server.core.config import ServerSettings
from preprint_server.db import Database
from preprint_server.serve import free_port

START_DEADLINE_S = 180.0  # Python start-up and the embedding model on 2 busy cores: seconds, usually
STOP_DEADLINE_S = 60.0
CLI_TIMEOUT_S = 300.0


def lab_key(data_dir: Path, lab: str = "lab-a") -> str:
    """A new key for `lab`, written straight to the server's SQLite file (as `server keys create` does)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return crud.create_key(Database(ServerSettings(data_dir=data_dir).db_path), lab)


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "AGENTLAB_WORKSPACE": str(root / "ws"), "XDG_CONFIG_HOME": str(root / "xdg"),
            "COLUMNS": "200"}


def agentlab(root: Path, *args: str) -> subprocess.CompletedProcess:
    """Run `agentlab ARGS` in a process of its own, in `root`, with a workspace there."""
    return subprocess.run([sys.executable, "-m", "agentlab", *args], capture_output=True, text=True,
                          cwd=root, env=_env(root), timeout=CLI_TIMEOUT_S)


@dataclass
class ServerProcess:
    url: str
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def healthy(self) -> bool:
        """Wait until /health answers (True) or the process has exited (False), within the deadline."""
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if httpx.get(self.url + "/health", timeout=10).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server {self.url} not healthy within {START_DEADLINE_S:.0f}s:\n{self.output()}")

    def stop(self) -> int:
        """SIGTERM, then the exit code (killed when it does not exit within the deadline)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"server {self.url} ignored SIGTERM for {STOP_DEADLINE_S:.0f}s:\n{self.output()}")


def _launch(data_dir: Path, options: Sequence[str]) -> ServerProcess:
    root = data_dir.parent
    for _ in range(3):  # the free port can be taken by someone else before the server binds it
        port = free_port()
        log = root / f"server-{port}-{uuid.uuid4().hex[:6]}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "agentlab", "server", "start", "--data-dir", str(data_dir),
                 "--port", str(port), *options],
                stdout=out, stderr=subprocess.STDOUT, cwd=root, env=_env(root),
            )
        server = ServerProcess(f"http://127.0.0.1:{port}", proc, log)
        try:
            if server.healthy():
                return server
        except BaseException:
            server.stop()
            raise
        if "address already in use" not in server.output():
            raise AssertionError(f"server exited with {proc.returncode} before answering:\n{server.output()}")
    raise AssertionError(f"no free port for the server after 3 tries:\n{server.output()}")


@contextmanager
def server_process(data_dir: Path, *options: str) -> Iterator[ServerProcess]:
    """`agentlab server start --data-dir DATA_DIR --port P OPTIONS` in a process of its own, yielded
    once /health answers; on leaving, SIGTERM and a graceful shutdown are required."""
    server = _launch(data_dir, options)
    try:
        yield server
    except BaseException:
        server.stop()
        raise
    code = server.stop()
    # uvicorn shuts down (lifespan end: SQLite closed), then re-raises the signal to end the process
    clean = code in (0, -signal.SIGTERM) and "Application shutdown complete" in server.output()
    assert clean, f"server exited with {code} on SIGTERM:\n{server.output()}"


@dataclass
class IndexView:
    vector_ids: set[str]
    keyword_ids: set[str]
    hits: list[list[str]]  # paper ids found for each query, best first


def index_on_disk(data_dir: Path, embedder, queries: Sequence[str], k: int = 5) -> IndexView:
    """The index files as they are, read without the startup reconciliation (which would add what is
    missing and drop orphans), from a fresh copy of the data dir: Chroma caches one client per
    directory in this process, so every look needs a directory it has never opened."""
    copy = data_dir.parent / f"view-{uuid.uuid4().hex[:8]}"
    shutil.copytree(data_dir, copy)
    app = create_app(ServerSettings(data_dir=copy, reconcile_on_startup=False), embedder)
    with TestClient(app) as c:
        index = app.state.services.index
        hits = []
        for q in queries:
            r = c.get("/api/search", params={"q": q, "k": k})
            assert r.status_code == 200, r.text
            hits.append([h["id"] for h in r.json()])
        return IndexView(index.vector_paper_ids(), index.keywords.paper_ids(), hits)
