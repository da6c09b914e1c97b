"""A real uvicorn server on loopback: sync and async clients, concurrent writers, restart,
reindex and startup reconciliation, and the CLI."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from typer.testing import CliRunner

from preprint_server import crud
from preprint_server.client import (
    AsyncPreprintClient,
    AuthError,
    NotFoundError,
    PreprintClient,
    ServerUnreachable,
    ValidationFailed,
)
from preprint_server.core.config import ServerSettings
from preprint_server.db import Database
from preprint_server.serve import free_port, local_server
from preprint_server.schemas import PaperCreate, ResultRecord
from tests.server.conftest import PAPERS, RESULT

pytestmark = pytest.mark.integration


def _key(data_dir, lab="lab-a"):
    data_dir.mkdir(parents=True, exist_ok=True)
    return crud.create_key(Database(ServerSettings(data_dir=data_dir).db_path), lab)


def _publish_all(c: PreprintClient) -> list[str]:
    return [c.publish(PaperCreate(title=t, abstract=a, body=b)).id for t, a, b in PAPERS]


def test_sync_client_against_uvicorn(tmp_path, embedder):
    data = tmp_path / "d"
    key = _key(data)
    with local_server(data, embedder=embedder) as url, PreprintClient(url, key) as c:
        assert c.health().status == "ok"
        goal = c.add_goal("improve MATH-500", benchmark="math500", baseline=0.5)
        p = c.publish(PaperCreate(title="Voting", body="majority vote", goal=goal.id,
                                  results=[ResultRecord(**RESULT)], idempotency_key="run-1"))
        assert c.publish(PaperCreate(title="Voting", idempotency_key="run-1")).id == p.id
        assert c.get_paper(p.id).results[0].accuracy == 0.62
        assert c.search("majority vote", k=1)[0].id == p.id
        assert c.leaderboard(benchmark="math500")[0].technique == "self-consistency"
        assert [g.id for g in c.list_goals()] == [goal.id]
        assert c.add_review(p.id, "fine", {"overall": 6}).lab == "lab-a"
        assert c.list_papers(goal=goal.id).total == 1
        with pytest.raises(NotFoundError, match="404"):
            c.get_paper("../../etc")
        with pytest.raises(ValidationFailed) as exc:
            c.publish({"title": "x", "goal": "missing"})
        assert exc.value.fields == ["goal"] and "\n" not in str(exc.value)
        with PreprintClient(url) as anon, pytest.raises(AuthError, match="401"):
            anon.add_goal("x")


async def test_async_client_and_concurrent_writers(tmp_path, embedder):
    data = tmp_path / "d"
    key = _key(data)
    with local_server(data, embedder=embedder) as url:
        # eight threads publishing at once: all land, none lost or doubled
        def publish(i):
            with PreprintClient(url, key) as c:
                return c.publish(PaperCreate(title=f"paper {i}", body=f"topic number {i}", idempotency_key=f"k{i % 6}")).id
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(publish, range(12)))
        assert len(set(ids)) == 6  # k0..k5, each published once
        async with AsyncPreprintClient(url, key) as c:
            assert (await c.health()).papers == 6
            page = await c.list_papers(limit=100)
            assert sorted(p.id for p in page.items) == sorted(set(ids))
            assert (await c.search("topic number", k=3))
            p = await c.publish(PaperCreate(title="async paper"))
            assert (await c.get_paper(p.id)).title == "async paper"


def test_unreachable_server_names_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    with PreprintClient(url, retries=1, backoff_s=0.01) as c, pytest.raises(ServerUnreachable) as exc:
        c.health()
    assert url in str(exc.value) and "\n" not in str(exc.value)


def test_restart_keeps_data_and_reindex_reproduces_search(tmp_path, embedder):
    data = tmp_path / "d"
    key = _key(data)
    queries = ["majority vote over answers", "protein retrieval", "training order by difficulty"]
    with local_server(data, embedder=embedder) as url, PreprintClient(url, key) as c:
        ids = _publish_all(c)
        before = [[(h.id, h.score) for h in c.search(q, k=3)] for q in queries]
    with local_server(data, embedder=embedder) as url, PreprintClient(url) as c:
        assert sorted(p.id for p in c.list_papers().items) == sorted(ids)
        assert [[(h.id, h.score) for h in c.search(q, k=3)] for q in queries] == before
    # rebuild the index from SQLite with the CLI, then search again
    from agentlab.cli import app
    r = CliRunner().invoke(app, ["server", "reindex", "--data-dir", str(data)])
    assert r.exit_code == 0 and "reindexed 3 papers" in r.output
    # lose the Chroma files entirely: startup reconciliation re-indexes every paper
    shutil.rmtree(ServerSettings(data_dir=data).chroma_dir)
    with local_server(data, embedder=embedder) as url, PreprintClient(url) as c:
        assert c.health().indexed_papers == 3
        assert [[(h.id, h.score) for h in c.search(q, k=3)] for q in queries] == before


def test_cli_keys_papers_goals(tmp_path, embedder, workspace, monkeypatch):
    from agentlab.cli import app
    run = CliRunner().invoke
    data = tmp_path / "d"
    r = run(app, ["server", "keys", "create", "lab-x", "--data-dir", str(data)])
    assert r.exit_code == 0, r.output
    key = r.output.strip().splitlines()[-1]
    assert key.startswith("alk_")
    assert "lab-x" in run(app, ["server", "keys", "list", "--data-dir", str(data)]).output
    assert run(app, ["server", "keys", "create", "../bad", "--data-dir", str(data)]).exit_code == 1
    with local_server(data, embedder=embedder) as url:
        monkeypatch.setenv("AGENTLAB_SERVER__URL", url)
        monkeypatch.setenv("AGENTLAB_SERVER__API_KEY", key)
        from agentlab.cli.common import state
        state._settings = None
        r = run(app, ["goals", "add", "improve MATH-500", "--benchmark", "math500", "--baseline", "0.702"])
        assert r.exit_code == 0 and "added" in r.output
        assert "improve MATH-500" in run(app, ["goals", "list"]).output
        with PreprintClient(url, key) as c:
            pid = c.publish(PaperCreate(title="Voting paper", body="majority vote", results=[ResultRecord(**RESULT)])).id
        r = run(app, ["papers", "search", "majority vote"])
        assert r.exit_code == 0 and pid in r.output
        r = run(app, ["papers", "show", pid])
        assert r.exit_code == 0 and "job-1" in r.output and "0.620" in r.output, r.output
        assert pid in run(app, ["papers", "list"]).output
        r = run(app, ["papers", "show", "nope"])
        assert r.exit_code == 1 and isinstance(r.exception, NotFoundError)
        r = run(app, ["server", "keys", "revoke", "lab-x", "--data-dir", str(data)])
        assert r.exit_code == 0 and "revoked 1" in r.output
        assert isinstance(run(app, ["goals", "add", "x"]).exception, AuthError)
        state._settings = None
