"""Warm sandboxes (``agentlab.jobs.warm``): the next evaluation job's sandbox is started and waiting; the job
takes it at submit, runs in it with the same isolation, and keeps its own limits, cancel and result; an
unused one leaves nothing; one that misses its job hands it to a cold start."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from agentlab.jobs import JobSpec, JobStore, LocalScheduler, Resources
from sandbox import SandboxOptions
from tests.sandbox.conftest import needs_bwrap
from tests.sandbox.waits import wait_until

pytestmark = [needs_bwrap, pytest.mark.integration]
REPO = Path(__file__).resolve().parents[2]


def sched(tmp_path, **kw):
    kw.setdefault("warm_start", True)
    return LocalScheduler(JobStore(tmp_path / "jobs.db"), tmp_path, gpus=[], cpus=2, max_concurrent=2,
                          sandbox_options=SandboxOptions(backend="bubblewrap"), **kw)


def job(fn="whoami", timeout_s=120.0, **args):
    return JobSpec(kind="eval", lab="lab-a", run_id="run-a", target=f"tests.jobs.callables:{fn}", args=args,
                   resources=Resources(timeout_s=timeout_s, memory_mb=1024))


def stderr(j) -> str:
    return Path(j.log_dir, "stderr.log").read_text()


def _log(j) -> str:
    """stderr so far ('' before the job starts)."""
    p = Path(j.log_dir or "/nonexistent", "stderr.log")
    return p.read_text() if p.exists() else ""


def test_the_next_eval_job_runs_in_the_waiting_sandbox_with_the_same_isolation(tmp_path):
    with sched(tmp_path) as s:
        first = s.wait(s.submit(job(host_path=str(REPO / "pyproject.toml"), marker="a")), timeout=120)
        wait_until(s.warm_ready, what="a waiting sandbox")
        second = s.wait(s.submit(job(host_path=str(REPO / "pyproject.toml"), marker="b")), timeout=120)
        other = s.wait(s.submit(job(host_path=str(REPO / "pyproject.toml"), marker="c", timeout_s=99)), timeout=120)  # another kind
    for j in (first, second, other):
        assert j.state == "succeeded", (j.error, j.stderr_tail())
    assert "warm start" not in stderr(first) and "warm start" in stderr(second) and "warm start" not in stderr(other)
    a, b = first.result, second.result
    assert b == {**a, "marker": "b", "job_id": second.id}  # same uid, /job, nothing of the host visible
    assert b["cwd"] == "/job" and b["host_path_visible"] is False
    if os.geteuid() == 0:
        assert b["uid"] == 65534
    assert Path(second.workdir).parent.name == second.id == b["job_id"]
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == sorted(j.id for j in (first, second, other))


def test_an_unused_waiting_sandbox_goes_away_and_leaves_nothing(tmp_path):
    with sched(tmp_path, warm_idle_s=1.0) as s:
        first = s.wait(s.submit(job()), timeout=120)
        wait_until(lambda: len(list((tmp_path / "jobs").iterdir())) == 2, what="a waiting sandbox's folder")
        wait_until(lambda: len(list((tmp_path / "jobs").iterdir())) == 1, what="its idle end")
        assert [j.id for j in s.store.list()] == [first.id]
        later = s.wait(s.submit(job(marker="later")), timeout=120)  # no waiting sandbox left: a cold start
    assert later.state == "succeeded" and "warm start" not in stderr(later)


def test_a_warm_jobs_timeout_counts_from_its_own_start_and_cancel_reaches_it(tmp_path):
    with sched(tmp_path) as s:
        s.wait(s.submit(job("nap", timeout_s=3, seconds=0)), timeout=120)
        wait_until(s.warm_ready, what="a waiting sandbox")
        time.sleep(3)  # as long as the job's limit: counted from the sandbox's start, it leaves the job none
        slow = s.wait(s.submit(job("nap", timeout_s=3, seconds=60)), timeout=120)
        wait_until(s.warm_ready, what="the next waiting sandbox")
        jid = s.submit(job("nap", timeout_s=3, seconds=60))
        wait_until(lambda: "warm start" in _log(s.get(jid)), what="the job running in its warm sandbox")
        s.cancel(jid)
        cancelled = s.wait(jid, timeout=120)
    assert "warm start" in stderr(slow)
    assert slow.state == "timed_out" and slow.killed_by == "wall_timeout"
    assert slow.error == "exceeded the wall-clock timeout 3 s; partial logs kept"
    # not early: between the job's recorded start and end lie its whole 3 s
    assert slow.finished_at - slow.started_at >= 3, (slow.started_at, slow.finished_at)
    assert cancelled.state == "cancelled"


def test_a_waiting_sandbox_that_misses_its_job_hands_it_to_a_cold_start(tmp_path, monkeypatch):
    from agentlab.jobs import warm

    def lost(workdir, files):  # the inputs never reach the waiting sandbox: it ends unused (status 75)
        raise OSError("simulated")

    monkeypatch.setattr(warm, "_write_into", lost)
    with sched(tmp_path, warm_idle_s=1.0) as s:
        s.wait(s.submit(job()), timeout=120)
        wait_until(s.warm_ready, what="a waiting sandbox")
        j = s.wait(s.submit(job(marker="missed")), timeout=120)
    assert j.state == "succeeded" and j.result["marker"] == "missed" and j.result["job_id"] == j.id
    assert "warm start" not in stderr(j)
