"""A real uvicorn server on loopback: the client, concurrent writers, the CLI; a
restart, reindex and the startup reconciliation with real server and CLI processes."""

from __future__ import annotations

import shutil
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from preprint_server.client import (
    AuthError,
    NotFoundError,
    PreprintClient,
    ServerUnreachable,
    ValidationFailed,
)
from preprint_server.core.config import ServerSettings
from preprint_server.schemas import PaperCreate, ResultRecord
from preprint_server.serve import free_port, local_server
from tests.server.conftest import PAPERS, RESULT
from tests.server.processes import IndexView, agentlab, index_on_disk, lab_key, server_process

pytestmark = pytest.mark.integration


def _publish_all(c: PreprintClient) -> list[str]:
    return [c.publish(PaperCreate(title=t, abstract=a, body=b)).id for t, a, b in PAPERS]


def test_sync_client_against_uvicorn(tmp_path, embedder):
    data = tmp_path / "d"
    key = lab_key(data)
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


def test_concurrent_writers(tmp_path, embedder):
    data = tmp_path / "d"
    key = lab_key(data)
    with local_server(data, embedder=embedder) as url:
        # eight threads publishing at once: all land, none lost or doubled
        def publish(i):
            with PreprintClient(url, key) as c:
                return c.publish(PaperCreate(title=f"paper {i}", body=f"topic number {i}", idempotency_key=f"k{i % 6}")).id
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(publish, range(12)))
        assert len(set(ids)) == 6  # k0..k5, each published once
        with PreprintClient(url, key) as c:
            assert c.health().papers == 6
            page = c.list_papers(limit=100)
            assert sorted(p.id for p in page.items) == sorted(set(ids))
            assert c.search("topic number", k=3)
            p = c.publish(PaperCreate(title="one more paper"))
            assert c.get_paper(p.id).title == "one more paper"


def test_unreachable_server_names_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    with PreprintClient(url, retries=1, backoff_s=0.01) as c, pytest.raises(ServerUnreachable) as exc:
        c.health()
    assert url in str(exc.value) and "\n" not in str(exc.value)


QUERIES = ["majority vote over answers", "protein retrieval", "training order by difficulty"]  # PAPERS' order


def _served_state(c: PreprintClient, queries=QUERIES) -> dict:
    """What readers see: the papers, each paper whole, search results with their scores, the leaderboard."""
    ids = sorted(p.id for p in c.list_papers(limit=100).items)
    return {
        "papers": {pid: c.get_paper(pid).model_dump(mode="json") for pid in ids},
        "hits": [[(h.id, h.score) for h in c.search(q, k=5)] for q in queries],
        "leaderboard": [e.model_dump(mode="json") for e in c.leaderboard()],
    }


def test_data_files_and_search_survive_a_real_process_restart(tmp_path, embedder):
    data = tmp_path / "d"
    key = lab_key(data)
    pdf = b"%PDF-1.4\n% kept across restarts\n"
    with server_process(data) as first, PreprintClient(first.url, key) as c:
        ids = _publish_all(c)
        ids.append(c.publish(PaperCreate(title="Voting, verified", body="We vote over sampled chains.",
                                         results=[ResultRecord(**RESULT)]), pdf=pdf).id)
        before = _served_state(c)
    assert len(before["papers"]) == 4 and before["leaderboard"] and all(before["hits"])
    # the first process left a complete index on disk: read as it is, no reconciliation needed
    on_disk = index_on_disk(data, embedder, QUERIES)
    assert on_disk.vector_ids == on_disk.keyword_ids == set(ids)
    assert on_disk.hits == [[pid for pid, _ in hits] for hits in before["hits"]]

    with server_process(data) as second, PreprintClient(second.url, key) as c:
        assert _served_state(c) == before
        assert httpx.get(f"{second.url}/api/papers/{ids[3]}/pdf").content == pdf
        assert c.health().indexed_papers == 4

    # lose the Chroma files entirely: the next process's startup reconciliation re-indexes every paper
    shutil.rmtree(ServerSettings(data_dir=data).chroma_dir)
    with server_process(data) as third, PreprintClient(third.url, key) as c:
        assert c.health().indexed_papers == 4
        after = _served_state(c)
        # re-embedded in one batch, not one paper at a time: fp32 padding noise (~1e-7) may move a
        # rounded score by its last digit, never the order
        assert {**after, "hits": None} == {**before, "hits": None}
        assert [[pid for pid, _ in hits] for hits in after["hits"]] == [[pid for pid, _ in hits] for hits in before["hits"]]
        assert all(abs(a[1] - b[1]) < 1e-5 for x, y in zip(after["hits"], before["hits"]) for a, b in zip(x, y))
        # and the restarted server still writes: a paper published now is found
        new = c.publish(PaperCreate(title="Octopus camouflage", body="reaction diffusion patterns in skin")).id
        assert c.search("cephalopod skin patterns", k=1)[0].id == new


def _delete_paper_row(data: Path, paper_id: str) -> None:
    """What an operator's SQL delete leaves behind: the index still holds the paper."""
    with sqlite3.connect(ServerSettings(data_dir=data).db_path) as con:
        for table, column in [("results", "paper_id"), ("paper_files", "paper_id"), ("reviews", "paper_id"),
                              ("citations", "citing_id"), ("citations", "cited_id"), ("papers", "id")]:
            con.execute(f"DELETE FROM {table} WHERE {column} = ?", (paper_id,))


def test_cli_reindex_rebuilds_lost_or_corrupt_indexes_and_drops_deleted_papers(tmp_path, embedder):
    data = tmp_path / "d"
    key = lab_key(data)
    settings = ServerSettings(data_dir=data)
    with server_process(data) as srv, PreprintClient(srv.url, key) as c:
        kept, deleted = (ids := _publish_all(c))[:2], ids[2]
    _delete_paper_row(data, deleted)
    before = index_on_disk(data, embedder, [])
    assert deleted in before.vector_ids and deleted in before.keyword_ids  # orphans until reindexed

    def reindex(note: str = "") -> IndexView:
        r = agentlab(tmp_path, "server", "reindex", "--data-dir", str(data))
        assert r.returncode == 0 and "reindexed 2 papers" in r.stdout and note in r.stderr, r.stdout + r.stderr
        return index_on_disk(data, embedder, QUERIES)

    def assert_rebuilt(view: IndexView) -> None:
        assert view.vector_ids == view.keyword_ids == set(kept)
        assert [hits[0] for hits in view.hits[:2]] == kept  # each query finds its paper first
        assert all(deleted not in hits for hits in view.hits)

    assert_rebuilt(reindex())
    # index files lost: nothing is found until reindex rebuilds them from SQLite
    shutil.rmtree(settings.chroma_dir)
    shutil.rmtree(settings.keyword_dir)
    assert index_on_disk(data, embedder, QUERIES) == IndexView(set(), set(), [[], [], []])
    assert_rebuilt(reindex())
    # index files corrupt (neither Chroma nor tantivy can open them): reindex starts from empty files
    (settings.chroma_dir / "chroma.sqlite3").write_bytes(b"not a database " * 1000)
    (settings.keyword_dir / "meta.json").write_text("garbage")
    assert_rebuilt(reindex(note="cannot be read"))


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
        monkeypatch.setattr(state, "_settings", None)  # settings are read again, and restored after the test
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
        r = run(app, ["papers", "retract", pid])
        assert r.exit_code == 0 and f"retracted {pid}" in r.output, r.output
        assert pid not in run(app, ["papers", "search", "majority vote"]).output
        assert "retracted" in run(app, ["papers", "show", pid]).output
        r = run(app, ["server", "keys", "revoke", "lab-x", "--data-dir", str(data)])
        assert r.exit_code == 0 and "revoked 1" in r.output
        assert isinstance(run(app, ["goals", "add", "x"]).exception, AuthError)
