"""Labs and the goal queue: a hold renews its lease past the lease's length and gives the goal back; a lab
started with `--from-queue` and killed with SIGKILL loses its lease at expiry (the goal returns to the queue)
and `lab resume` claims the goal back and finishes the run, publishing on the goal.

Leases here are many heartbeats long, so that a lab process starved of CPU on a loaded machine keeps its
lease; where a test needs time past a lease (renewed beyond it, or lapsed), it moves the server's clock
(the server runs in this process) instead of waiting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta

import pytest

from agentlab.lab.goal_lease import GoalHold
from agentlab.lab.store import LabStore
from preprint_server.client import PreprintClient
from tests.lab.doubles import lab_env

DEADLINE_S = 240.0
LAB_LEASE_S, LAB_HEARTBEAT_S = 120, 0.5  # a lab's lease outlives 240 heartbeats


class ServerClock:
    """The goal queue's clock in the preprint server running in this process, ``advance``d at will."""

    def __init__(self, monkeypatch):
        from preprint_server import goals

        self._real, self._ahead = goals.utcnow, timedelta(0)
        monkeypatch.setattr(goals, "utcnow", self.now)

    def now(self) -> datetime:
        return self._real() + self._ahead

    def advance(self, seconds: float) -> None:
        self._ahead += timedelta(seconds=seconds)


@pytest.fixture
def server_clock(monkeypatch) -> ServerClock:
    return ServerClock(monkeypatch)


def _wait(cond, what: str, deadline_s: float = DEADLINE_S):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"waited {deadline_s:.0f} s for {what}")


def _heartbeat_after_now(hold: GoalHold) -> None:
    """Wait for a heartbeat that started after this call (the one in flight may predate it)."""
    beats = hold.beats
    _wait(lambda: hold.beats >= beats + 2, "a heartbeat")


def test_a_hold_renews_its_lease_and_gives_the_goal_back(preprint, server_clock):
    with PreprintClient(preprint["url"], preprint["key"]) as c:
        goal = c.add_goal("Improve arithmetic", benchmark="basic_arithmetic")
        hold = GoalHold.claim(preprint["url"], preprint["key"], lease_s=60, heartbeat_s=0.2, holder="run-x")
        assert hold is not None and hold.goal_id == goal.id
        first = hold.lease
        for _ in range(2):  # 90 s of server time, past the 60 s lease: it holds as long as heartbeats renew it
            server_clock.advance(45)
            _heartbeat_after_now(hold)
        now = c.get_goal(goal.id)
        assert now.status == "claimed" and now.attempts == 1
        assert now.lease_expires >= first.expires_at + timedelta(seconds=90)  # renewed 90 s later or more
        assert hold.lease.id == first.id and not hold.lost  # renewed, never claimed again
        hold.release("done")
        assert c.get_goal(goal.id).status == "open"
        assert c.goal_leases(goal.id)[0].end_reason == "done"
        hold.release("again")  # harmless
        assert GoalHold.claim(preprint["url"], preprint["key"], lease_s=3, benchmark="math500") is None


def test_a_hold_whose_goal_closes_stops_and_says_why(preprint):
    with PreprintClient(preprint["url"], preprint["key"]) as c:
        goal = c.add_goal("Improve arithmetic")
        hold = GoalHold.claim(preprint["url"], preprint["key"], lease_s=30, heartbeat_s=0.2)
        c.close_goal(goal.id, "another lab reached the target")
        _wait(lambda: hold.lost, "the hold to notice the goal closed")
        assert "closed" in hold.lost
        hold.release("done")  # nothing to release: no error
        assert c.get_goal(goal.id).status == "closed"


def test_from_queue_with_no_open_goal_stops_with_one_line(workspace, preprint, monkeypatch):
    from typer.testing import CliRunner

    from agentlab.cli import app
    from agentlab.cli.common import state

    monkeypatch.setenv("AGENTLAB_SERVER__URL", preprint["url"])
    monkeypatch.setenv("AGENTLAB_SERVER__API_KEY", preprint["key"])
    monkeypatch.setattr(state, "_settings", None)
    r = CliRunner().invoke(app, ["lab", "start", "--from-queue", "--quiet"])
    assert r.exit_code == 1 and "no open goal in the queue" in str(r.exception)
    r = CliRunner().invoke(app, ["lab", "start", "--from-queue", "--goal", "x", "--quiet"])
    assert r.exit_code == 1 and "drop --goal" in str(r.exception)


@pytest.mark.integration
def test_sigkilled_lab_loses_its_lease_at_expiry_and_resume_claims_it_back(workspace, llm, preprint, server_clock):
    llm.mus_delay_s = 0.12  # each dev job takes about a second: room to kill mid-experiments
    run_id = "lab-queue-kill"
    env = {**os.environ, **lab_env(llm.url), "AGENTLAB_WORKSPACE": str(workspace), "PYTHONUNBUFFERED": "1",
           "AGENTLAB_SERVER__URL": preprint["url"], "AGENTLAB_SERVER__API_KEY": preprint["key"],
           "AGENTLAB_GOALS__LEASE_S": str(LAB_LEASE_S), "AGENTLAB_GOALS__HEARTBEAT_S": str(LAB_HEARTBEAT_S)}
    client = PreprintClient(preprint["url"], preprint["key"])
    goal = client.add_goal("Improve arithmetic", benchmark="basic_arithmetic")
    cmd = [sys.executable, "-m", "agentlab", "lab", "start", "--from-queue", "--run-id", run_id,
           "--dev-n", "6", "--report-n", "6", "--iterations", "3", "--concurrency", "1",
           "--max-answer-tokens", "64", "--lab-name", "test-lab", "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    db = workspace / "agentlab.db"

    def experiments_running():
        if proc.poll() is not None:
            pytest.fail("the lab ended before it could be killed: " + proc.stdout.read().decode()[-2000:])
        if not db.exists():
            return False
        with LabStore(db) as store:
            jobs = store.experiments(run_id)
        return any(j["status"] == "succeeded" for j in jobs) and any(j["status"] == "running" for j in jobs)

    try:
        _wait(experiments_running, "the experiments to start")
        lease = client.goal_leases(goal.id)[0]
        assert lease.active and lease.holder == run_id and lease.lab == "test-lab"
        assert lease.heartbeat_at > lease.created  # renewed by the lab's heartbeats
        assert client.get_goal(goal.id).status == "claimed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    assert client.get_goal(goal.id).status == "claimed"  # killed, not released: the lease still runs
    server_clock.advance(LAB_LEASE_S + 1)  # past its expiry, with no heartbeat since the kill
    _wait(lambda: client.get_goal(goal.id).status == "open", "the killed lab's lease to expire")
    lease = client.goal_leases(goal.id)[0]
    assert lease.end_reason == "expired" and not lease.active and client.get_goal(goal.id).attempts == 1

    res = subprocess.run([sys.executable, "-m", "agentlab", "lab", "resume", run_id, "--quiet"], env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"claimed goal {goal.id} back (attempt 2)" in res.stdout
    after = client.get_goal(goal.id)
    assert (after.status, after.attempts, after.papers) == ("open", 2, 1)
    last = client.goal_leases(goal.id)[0]
    assert last.holder == run_id and last.end_reason == "done"
    with LabStore(db) as store:
        run = store.get_run(run_id)
    assert run["status"] == "done" and client.get_paper(run["paper_id"]).goal == goal.id
    client.close()
