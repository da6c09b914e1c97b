"""Ray backend against a local ray.init(num_cpus=2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlab.jobs import JobError, JobSpec, JobStore, Resources
from sandbox import SandboxOptions

pytestmark = [pytest.mark.requires("bubblewrap", "ray"), pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def local_ray():
    import ray  # here, not at the top: where ray is missing the gate reports it (a skip, or under CI a failure)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_runs_jobs_in_the_sandbox(local_ray, tmp_path):
    from agentlab.jobs.ray_backend import RayScheduler

    sched = RayScheduler(JobStore(tmp_path / "jobs.db"), tmp_path, sandbox_options=SandboxOptions())
    try:
        ok = sched.submit(JobSpec(kind="eval", target="tests.jobs.callables:add", args={"a": 1, "b": 2}))
        code = ("import os, json; print('uid', os.getuid(), 'cwd', os.getcwd());"
                "json.dump({'cuda': os.environ['CUDA_VISIBLE_DEVICES']}, open(os.environ['AGENTLAB_RESULT'], 'w'))")
        script = sched.submit(JobSpec(code=code, resources=Resources(cpus=1)))
        # a shell sleeper: it starts in milliseconds, so a short limit does not race a Python start-up
        slow = sched.submit(JobSpec(command=["sh", "-c", "echo tick; exec sleep 60"], resources=Resources(timeout_s=2)))
        with pytest.raises(JobError, match="GPU"):
            sched.submit(JobSpec(command=["true"], resources=Resources(gpus=1)))
        a, b, c = (sched.wait(j, timeout=180) for j in (ok, script, slow))
    finally:
        sched.shutdown()
    assert a.state == "succeeded" and a.result == {"sum": 3}
    assert b.state == "succeeded" and b.result == {"cuda": ""}
    assert "cwd /job" in (Path(b.log_dir) / "stdout.log").read_text()
    assert c.state == "timed_out" and "wall-clock timeout 2 s" in c.error
    assert (Path(c.log_dir) / "stdout.log").read_text() == "tick\n"
