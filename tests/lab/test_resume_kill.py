"""Kill the lab process during the experiments and resume it: exactly one paper, no job repeated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from agentlab.lab.store import LabStore
from preprint_server.client import PreprintClient
from tests.lab.doubles import lab_env

pytestmark = [pytest.mark.integration, pytest.mark.requires("bubblewrap")]  # a lab run starts with a real sandboxed job (lab/preflight.py)


def _env(workspace, llm, preprint):
    env = dict(os.environ)
    env.update(lab_env(llm.url))
    env.update({"AGENTLAB_WORKSPACE": str(workspace), "AGENTLAB_SERVER__URL": preprint["url"],
                "AGENTLAB_SERVER__API_KEY": preprint["key"], "PYTHONUNBUFFERED": "1"})
    return env


def test_kill_during_experiments_then_resume(workspace, llm, preprint):
    llm.mus_delay_s = 0.12  # each dev job takes about a second: room to kill mid-experiments
    run_id = "lab-kill-test"
    env = _env(workspace, llm, preprint)
    cmd = [sys.executable, "-m", "agentlab", "lab", "start", "--goal", "Improve arithmetic", "--run-id", run_id,
           "--benchmark", "basic_arithmetic", "--dev-n", "6", "--report-n", "6", "--iterations", "3",
           "--concurrency", "1", "--max-answer-tokens", "64", "--lab-name", "test-lab", "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    db = workspace / "agentlab.db"
    finished_before: dict[str, int] = {}
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail("the lab finished before it could be killed: " + proc.stdout.read().decode()[-2000:])
            if db.exists():
                store = LabStore(db)
                jobs = store.experiments(run_id)
                store.close()
                done = [j for j in jobs if j["status"] == "succeeded"]
                running = [j for j in jobs if j["status"] == "running"]
                if done and running:
                    finished_before = {j["key"]: j["executions"] for j in done}
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
            time.sleep(0.05)
        else:
            pytest.fail("the experiments never started")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert finished_before

    res = subprocess.run([sys.executable, "-m", "agentlab", "lab", "resume", run_id, "--quiet"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    store = LabStore(db)
    jobs = {j["key"]: j for j in store.experiments(run_id)}
    run = store.get_run(run_id)
    store.close()
    for key, executions in finished_before.items():
        assert jobs[key]["executions"] == executions == 1, f"finished job {key} ran again"
    assert all(j["executions"] <= 2 for j in jobs.values())  # only the job killed mid-run ran again
    assert {"dev-1-0", "dev-2-0", "dev-3-0", "report-baseline"} <= set(jobs)
    assert run["status"] == "done" and run["paper_id"]
    with PreprintClient(preprint["url"]) as c:
        page = c.list_papers(limit=100)
    assert page.total == 1 and page.items[0].id == run["paper_id"]

    # resuming a finished run again publishes nothing new
    res = subprocess.run([sys.executable, "-m", "agentlab", "lab", "resume", run_id, "--quiet"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    with PreprintClient(preprint["url"]) as c:
        assert c.list_papers(limit=100).total == 1
