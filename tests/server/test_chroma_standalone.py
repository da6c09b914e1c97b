"""The preprint server on a standalone Chroma server (`--chroma-url`): a real `chroma run` on loopback.

Publish and search through it, restart the preprint server on the kept index (nothing embedded again),
and lose the Chroma server mid-run: search, publishing and /health answer 503 with a message (no stack
trace), SQLite keeps every paper, and once Chroma answers again, with its data or empty, the index
catches up by itself (preprint_server/catchup.py).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import chromadb
import httpx
import pytest
from fastapi.testclient import TestClient

from preprint_server import crud
from preprint_server.app import create_app
from preprint_server.client import PreprintClient
from preprint_server.core.config import ServerSettings
from preprint_server.schemas import PaperCreate
from preprint_server.serve import free_port
from tests.sandbox.waits import wait_until
from tests.server.conftest import PAPERS, paper_json, publish
from tests.server.processes import lab_key, server_process

pytestmark = pytest.mark.integration
DEADLINE_S = 120.0  # waiting for a process or the catch-up on 2 busy cores (never a measured limit)


def _chroma_cli() -> str:
    beside = Path(sys.executable).parent / "chroma"  # the chromadb package's CLI, in the same environment
    return str(beside) if beside.exists() else shutil.which("chroma") or "chroma"


@dataclass
class ChromaServer:
    """`chroma run` on one loopback port; started, killed and started again (on the same or a new path)."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, path: str = "chroma") -> None:
        log = self.root / "chroma.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [_chroma_cli(), "run", "--path", str(self.root / path), "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT)
        wait_until(self._answers, DEADLINE_S, f"chroma run on port {self.port} answering")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"chroma exited with {self.proc.returncode}:\n{(self.root / 'chroma.log').read_text()}")
        try:
            return httpx.get(self.url + "/api/v2/heartbeat", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        """Gone without a goodbye, as a crashed server or a lost machine."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def vectors(self) -> int:
        return chromadb.HttpClient(host="127.0.0.1", port=self.port).get_collection("papers").count()


class CountingEmbedder:
    """The real embedder, counting the chunks it embeds for the index (queries are not counted)."""

    def __init__(self, inner):
        self.inner, self.chunks = inner, 0

    def embed(self, texts):
        self.chunks += len(texts)
        return self.inner.embed(texts)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture
def chroma(tmp_path) -> Iterator[ChromaServer]:
    server = ChromaServer(tmp_path)
    try:
        server.start()
        yield server
    finally:
        server.kill()


@pytest.fixture
def counting(embedder) -> CountingEmbedder:
    return CountingEmbedder(embedder)


def _app(tmp_path: Path, chroma: ChromaServer, embedder) -> TestClient:
    settings = ServerSettings(data_dir=tmp_path / "server", chroma_url=chroma.url, chroma_retry_s=0.1)
    return TestClient(create_app(settings, embedder))


def _found(c: TestClient, q: str) -> list[str]:
    r = c.get("/api/search", params={"q": q, "k": 3})
    assert r.status_code == 200, r.text
    return [h["id"] for h in r.json()]


def _search_works(c: TestClient) -> bool:
    return c.get("/api/search", params={"q": "majority vote"}).status_code == 200


def _key(c: TestClient) -> dict:
    return {"Authorization": f"Bearer {crud.create_key(c.app.state.services.db, 'lab-a')}"}


def test_restart_on_the_kept_index_embeds_nothing_again(tmp_path, chroma, counting):
    with _app(tmp_path, chroma, counting) as c:
        ids = publish(c, _key(c))
        assert _found(c, "majority vote over reasoning chains")[0] == ids[0]
    assert chroma.vectors() >= 3 and not (tmp_path / "server" / "chroma").exists()  # the vectors live in Chroma
    embedded = counting.chunks
    with _app(tmp_path, chroma, counting) as c:  # a new preprint server on the same data dir and Chroma
        assert c.get("/health").json()["indexed_papers"] == 3
        assert _found(c, "protein databases for enzyme questions")[0] == ids[1]
    assert counting.chunks == embedded  # the startup reconciliation found every paper in Chroma


def test_chroma_lost_then_back_with_its_data(tmp_path, chroma, counting):
    with _app(tmp_path, chroma, counting) as c:
        auth = _key(c)
        ids = publish(c, auth, PAPERS[:2])
        chroma.kill()

        r = c.get("/api/search", params={"q": "majority vote"})
        assert r.status_code == 503 and r.headers["Retry-After"]
        assert "Chroma at " + chroma.url in r.json()["detail"] and "unreachable" in r.json()["detail"]
        r = c.post("/api/papers", json=paper_json(*PAPERS[2]), headers=auth)
        assert r.status_code == 503 and "retry" in r.json()["detail"]
        assert c.get("/health").status_code == 503
        # reading papers needs no Chroma; the refused publish left nothing behind
        assert c.get("/api/papers").json()["total"] == 2
        assert c.get(f"/api/papers/{ids[0]}").status_code == 200

        embedded = counting.chunks
        chroma.start()  # back on its own files
        wait_until(lambda: _search_works(c), DEADLINE_S, "search answering again after Chroma came back")
        assert _found(c, "majority vote over reasoning chains")[0] == ids[0]
        assert c.app.state.services.catch_up.caught_up == 0 and counting.chunks == embedded  # nothing was missing
        third = publish(c, auth, PAPERS[2:])[0]
        assert _found(c, "easy examples before hard ones")[0] == third
        assert {"papers": 3, "indexed_papers": 3}.items() <= c.get("/health").json().items()


def test_chroma_back_empty_is_caught_up_from_sqlite(tmp_path, chroma, counting):
    with _app(tmp_path, chroma, counting) as c:
        ids = publish(c, _key(c))
        chroma.kill()
        chroma.start("fresh")  # a new, empty Chroma (a lost volume) at the same address
        # the first request finds the collection gone: 503, and the catch-up re-adds every paper
        wait_until(lambda: _search_works(c) and c.get("/health").json()["indexed_papers"] == 3, DEADLINE_S,
              "every paper back in the new Chroma")
        assert c.app.state.services.catch_up.caught_up == 3
        assert _found(c, "protein databases for enzyme questions")[0] == ids[1]
    assert chroma.vectors() >= 3


def test_server_starts_while_chroma_is_down(tmp_path, chroma, counting):
    with _app(tmp_path, chroma, counting) as c:
        ids = publish(c, _key(c), PAPERS[:2])
    chroma.kill()
    with _app(tmp_path, chroma, counting) as c:  # starts anyway: reads work, search waits for Chroma
        assert c.get("/health").status_code == 503
        assert c.get("/api/search", params={"q": "vote"}).status_code == 503
        assert [p["id"] for p in c.get("/api/papers", params={"sort": "created"}).json()["items"]] == ids
        chroma.start("empty")
        wait_until(lambda: c.get("/health").status_code == 200, DEADLINE_S, "/health answering once Chroma is up")
        wait_until(lambda: c.get("/health").json()["indexed_papers"] == 2, DEADLINE_S,
                   "both papers indexed in the new Chroma")
        assert _found(c, "majority vote over reasoning chains")[0] == ids[0]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_cli_server_on_standalone_chroma(tmp_path, chroma):
    """`agentlab server start --chroma-url`, a process of its own, publishes into the Chroma server."""
    data = tmp_path / "data"
    key = lab_key(data)
    with server_process(data, "--chroma-url", chroma.url) as server, PreprintClient(server.url, key) as client:
        paper = client.publish(PaperCreate(title=PAPERS[0][0], abstract=PAPERS[0][1], body=PAPERS[0][2]))
        assert [h.id for h in client.search("majority vote over reasoning chains", k=1)] == [paper.id]
        assert client.health().indexed_papers == 1
    assert chroma.vectors() >= 1 and not (data / "chroma").exists()
