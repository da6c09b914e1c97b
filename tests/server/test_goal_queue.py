"""The goal queue: claims under leases (server time), heartbeats, expiry, release, close, and the goal
closing itself at its target or its paper budget; concurrent claims over real HTTP; old databases."""

from __future__ import annotations

import sqlite3
import threading
import time

from preprint_server import crud
from preprint_server.client import ConflictError, PreprintClient
from preprint_server.db import Database
from preprint_server.serve import local_server
from tests.server.conftest import RESULT, paper_json

DEADLINE_S = 60.0


def _goal(client, auth, **kw) -> dict:
    r = client.post("/api/goals", json={"text": "Improve MATH-500", "benchmark": "math500", **kw}, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()


def _claim(client, auth, **kw):
    return client.post("/api/goals/claim", json={"lease_s": 60, **kw}, headers=auth)


def _other_lab(app) -> dict:
    return {"Authorization": f"Bearer {crud.create_key(app.state.services.db, 'lab-b')}"}


def test_claim_heartbeat_release(client, auth):
    g1, g2 = _goal(client, auth, target=0.7, max_papers=5), _goal(client, auth, text="second")
    assert (g1["status"], g1["attempts"], g1["target"], g1["max_papers"]) == ("open", 0, 0.7, 5)
    first = _claim(client, auth, holder="run-1")
    assert first.status_code == 200, first.text
    lease = first.json()
    assert lease["goal_id"] == g1["id"] and lease["active"] and lease["holder"] == "run-1"  # oldest first
    assert lease["goal"]["status"] == "claimed" and lease["goal"]["claimed_by"] == "lab-a" and lease["attempt"] == 1
    assert _claim(client, auth).json()["goal_id"] == g2["id"]
    assert _claim(client, auth).status_code == 204  # nothing open
    assert _claim(client, auth, goal=g1["id"]).status_code == 409  # held by a live lease

    renewed = client.post(f"/api/goals/leases/{lease['id']}/heartbeat", json={"lease_s": 120}, headers=auth).json()
    assert renewed["expires_at"] > lease["expires_at"] and renewed["lease_s"] == 120
    done = client.post(f"/api/goals/leases/{lease['id']}/release", json={"reason": "done"}, headers=auth).json()
    assert not done["active"] and done["end_reason"] == "done" and done["goal"]["status"] == "open"
    again = client.post(f"/api/goals/leases/{lease['id']}/release", json={"reason": "twice"}, headers=auth)
    assert again.status_code == 200 and again.json()["end_reason"] == "done"  # harmless
    r = client.post(f"/api/goals/leases/{lease['id']}/heartbeat", headers=auth)
    assert r.status_code == 409 and "claim the goal again" in r.json()["detail"]

    second = _claim(client, auth).json()  # back in the queue, a new attempt
    assert second["goal_id"] == g1["id"] and second["attempt"] == 2
    history = client.get(f"/api/goals/{g1['id']}/leases").json()
    assert [h["attempt"] for h in history] == [2, 1]


def test_lease_expires_and_the_goal_returns_to_the_queue(client, auth):
    g = _goal(client, auth)
    lease = _claim(client, auth, lease_s=1).json()
    deadline = time.monotonic() + DEADLINE_S
    while client.get(f"/api/goals/{g['id']}").json()["status"] != "open":
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.1)
    r = client.post(f"/api/goals/leases/{lease['id']}/heartbeat", headers=auth)
    assert r.status_code == 409 and "expired" in r.json()["detail"]
    assert client.get(f"/api/goals/{g['id']}/leases").json()[0]["end_reason"] == "expired"
    again = _claim(client, auth).json()
    assert again["goal_id"] == g["id"] and again["attempt"] == 2 and again["goal"]["attempts"] == 2


def test_leases_and_goals_belong_to_labs(client, auth, app):
    other = _other_lab(app)
    g = _goal(client, auth)
    lease = _claim(client, auth).json()
    assert client.post(f"/api/goals/leases/{lease['id']}/heartbeat", headers=other).status_code == 403
    assert client.post(f"/api/goals/leases/{lease['id']}/release", headers=other).status_code == 403
    assert client.post(f"/api/goals/{g['id']}/close", json={"reason": "mine now"}, headers=other).status_code == 403
    assert client.post("/api/goals/leases/gl_nope/heartbeat", headers=auth).status_code == 404
    assert client.post("/api/goals/claim", json={"lease_s": 0}, headers=auth).status_code == 422
    assert client.post("/api/goals/claim", json={"goal": "nope"}, headers=auth).status_code == 404
    assert client.post("/api/goals/claim", json={}).status_code == 401

    closed = client.post(f"/api/goals/{g['id']}/close", json={"reason": "enough"}, headers=auth).json()
    assert closed["status"] == "closed" and closed["closed_reason"] == "enough" and closed["claimed_by"] is None
    assert client.post(f"/api/goals/leases/{lease['id']}/heartbeat", headers=auth).status_code == 409
    assert _claim(client, auth).status_code == 204
    assert _claim(client, auth, goal=g["id"]).status_code == 409
    assert [x["id"] for x in client.get("/api/goals", params={"status": "closed"}).json()] == [g["id"]]


def _publish(client, auth, goal_id, **result):
    body = paper_json(title=f"paper {time.monotonic_ns()}", goal=goal_id, results=[{**RESULT, **result}])
    r = client.post("/api/papers", json=body, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_goal_closes_at_its_target_with_a_ranked_result(client, auth):
    g = _goal(client, auth, target=0.7)
    lease = _claim(client, auth).json()
    _publish(client, auth, g["id"], correct=80, accuracy=0.8, ci_low=0.71, ci_high=0.87, split="dev")  # not ranked
    _publish(client, auth, g["id"], correct=80, accuracy=0.8, ci_low=0.71, ci_high=0.87, complete=False)
    _publish(client, auth, g["id"], benchmark="gsm8k", correct=80, accuracy=0.8, ci_low=0.71, ci_high=0.87)
    _publish(client, auth, g["id"])  # ranked, 62% < 70%
    assert client.get(f"/api/goals/{g['id']}").json()["status"] == "claimed"
    pid = _publish(client, auth, g["id"], correct=71, accuracy=0.71, ci_low=0.61, ci_high=0.79)
    goal = client.get(f"/api/goals/{g['id']}").json()
    assert goal["status"] == "closed" and "target 70.0% reached" in goal["closed_reason"] and pid in goal["closed_reason"]
    assert goal["papers"] == 5
    ended = client.get(f"/api/goals/{g['id']}/leases").json()[0]
    assert not ended["active"] and ended["end_reason"].startswith("goal closed: target")
    # the holder learns it at its next heartbeat; its release still answers
    assert client.post(f"/api/goals/leases/{lease['id']}/heartbeat", headers=auth).status_code == 409
    assert client.post(f"/api/goals/leases/{lease['id']}/release", headers=auth).status_code == 200


def test_goal_closes_when_its_paper_budget_is_spent(client, auth):
    g = _goal(client, auth, max_papers=2)
    _publish(client, auth, g["id"])
    assert client.get(f"/api/goals/{g['id']}").json()["status"] == "open"
    _publish(client, auth, g["id"])
    goal = client.get(f"/api/goals/{g['id']}").json()
    assert goal["status"] == "closed" and goal["closed_reason"] == "paper budget spent: 2 of 2 papers"


def test_concurrent_claims_over_http_never_share_a_goal(settings, embedder):
    """16 clients claim at once from a real server (uvicorn, thread pool) holding 5 open goals:
    5 distinct goals are handed out, one each, and the other 11 clients hear that none is open."""
    key = crud.create_key(Database(settings.db_path), "lab-a")
    with local_server(settings.data_dir, embedder=embedder) as url:
        with PreprintClient(url, api_key=key) as c:
            goal_ids = {c.add_goal(f"goal {i}").id for i in range(5)}
        results, start = [], threading.Barrier(16)

        def claim_one():
            with PreprintClient(url, api_key=key) as c:
                start.wait(DEADLINE_S)  # one that never comes breaks the barrier: no hang
                results.append(c.claim_goal(lease_s=120, holder=threading.current_thread().name))

        threads = [threading.Thread(target=claim_one, daemon=True) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE_S)
        assert not any(t.is_alive() for t in threads), "a claim never returned"
        leases = [r for r in results if r is not None]
        assert len(results) == 16 and len(leases) == 5
        assert {lease.goal_id for lease in leases} == goal_ids
        with PreprintClient(url, api_key=key) as c:
            assert all(g.status == "claimed" and g.attempts == 1 for g in c.list_goals())
            lease = leases[0]
            c.release_goal(lease.id, "done")
            try:
                c.heartbeat_goal(lease.id)
                raise AssertionError("a released lease was renewed")
            except ConflictError as exc:
                assert exc.status == 409


def test_claims_through_two_database_handles_are_atomic(settings):
    """Two engines on one SQLite file (as two server processes would be) race for one goal."""
    from preprint_server import goals
    from preprint_server.schemas import GoalClaim, GoalCreate

    a, b = Database(settings.db_path), Database(settings.db_path)
    crud.create_key(a, "lab-a")
    lab = crud.get_lab(a, "lab-a")
    for round_ in range(10):
        crud.create_goal(a, GoalCreate(text=f"race {round_}"), created_by="lab-a")
        got, start = [], threading.Barrier(2)

        def race(db, start=start, got=got):
            start.wait(DEADLINE_S)
            got.append(goals.claim(db, lab, GoalClaim(lease_s=60)))

        threads = [threading.Thread(target=race, args=(db,), daemon=True) for db in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE_S)
        assert not any(t.is_alive() for t in threads), "a claim never returned"
        assert None in got and sum(x is not None for x in got) == 1, got


def test_an_old_database_gains_the_queue_columns(tmp_path, embedder):
    """A goals table from before the queue: its goals stay readable and claimable."""
    from fastapi.testclient import TestClient

    from preprint_server.app import create_app
    from preprint_server.core.config import ServerSettings

    data = tmp_path / "old"
    data.mkdir()
    con = sqlite3.connect(data / "preprints.db")
    con.execute("CREATE TABLE goals (id VARCHAR(64) PRIMARY KEY, text TEXT, benchmark VARCHAR(100), baseline FLOAT,"
                " status VARCHAR(16), created_by VARCHAR(100), created DATETIME)")
    con.execute("INSERT INTO goals VALUES ('gold1', 'an old goal', 'math500', 0.5, 'open', 'lab-a',"
                " '2025-01-01 00:00:00.000000')")
    con.commit()
    con.close()
    app = create_app(ServerSettings(data_dir=data), embedder)
    key = crud.create_key(app.state.services.db, "lab-a")
    with TestClient(app) as client:
        old = client.get("/api/goals/gold1").json()
        assert (old["status"], old["attempts"], old["target"], old["papers"]) == ("open", 0, None, 0)
        lease = _claim(client, {"Authorization": f"Bearer {key}"}).json()
        assert lease["goal_id"] == "gold1" and lease["attempt"] == 1
