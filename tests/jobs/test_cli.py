"""CLI: `agentlab sandbox run`, `agentlab jobs ...`, `agentlab gpus`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agentlab.jobs import JobSpec, JobStore, LocalScheduler
from sandbox import SandboxOptions
from tests.sandbox.conftest import needs_bwrap

pytestmark = [needs_bwrap, pytest.mark.integration]


def cli(*args):
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "agentlab", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_sandbox_run_passes_output_and_exit_code(workspace):
    r = cli("sandbox", "run", "--timeout", "20", "--", "python", "-c", "import sys; print('out'); sys.exit(7)")
    assert r.returncode == 7 and r.stdout.strip() == "out"
    r = cli("sandbox", "run", "--timeout", "1", "--", "sleep", "30")
    assert r.returncode == 137 and "wall-clock timeout 1 s" in r.stderr


def test_sandbox_run_bwrap_missing(workspace, monkeypatch):
    monkeypatch.setenv("AGENTLAB_SANDBOX__BWRAP_PATH", "/nonexistent/bwrap")
    r = cli("sandbox", "run", "--", "true")
    assert r.returncode == 1 and "apt-get install -y bubblewrap" in r.stderr and "Traceback" not in r.stderr


def test_jobs_commands(workspace, monkeypatch):
    monkeypatch.setenv("AGENTLAB_JOBS__GPUS", "[0, 1]")
    store = JobStore(workspace / "jobs.db")
    with LocalScheduler(store, workspace, gpus=[0, 1], sandbox_options=SandboxOptions()) as s:
        ok = s.submit(JobSpec(code="print('hello from job')", lab="lab-a", name="greeting"))
        bad = s.submit(JobSpec(code="import sys; sys.exit(3)", lab="lab-b"))
        s.wait(ok, 60), s.wait(bad, 60)
    r = cli("jobs", "list")
    assert r.returncode == 0 and ok in r.stdout and "succeeded" in r.stdout and "failed" in r.stdout
    r = cli("jobs", "show", ok[:10])
    assert r.returncode == 0 and "lab-a" in r.stdout
    r = cli("jobs", "logs", ok)
    assert r.stdout.strip() == "hello from job"
    r = cli("jobs", "retry", bad, "--run")
    assert r.returncode == 1 and "failed" in r.stdout
    assert len(JobStore(workspace / "jobs.db").list(lab="lab-b")) == 2
    r = cli("jobs", "show", "job-nope")
    assert r.returncode == 1 and "no job" in r.stderr
    r = cli("gpus")
    assert r.returncode == 0 and "free" in r.stdout
