"""``jobs.backend = "ray"`` is honoured: every scheduler made from the settings (lab runs, ``agentlab jobs``,
``agentlab train``) is a ``RayScheduler`` at ``jobs.ray_address`` (empty: a local Ray instance with ``jobs.cpus``
CPUs and the ``jobs.gpus`` GPUs), and a missing ray or an unreachable cluster is one clear error naming the fix."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from agentlab.jobs import JobError, JobSpec, LocalScheduler, scheduler_from_settings
from tests.sandbox.conftest import needs_bwrap


@pytest.fixture
def ray_settings(workspace, monkeypatch):
    for k, v in {"AGENTLAB_JOBS__BACKEND": "ray", "AGENTLAB_JOBS__CPUS": "2", "AGENTLAB_JOBS__GPUS": "[]",
                 "AGENTLAB_SANDBOX__BACKEND": "bubblewrap"}.items():
        monkeypatch.setenv(k, v)
    from agentlab.config import load_settings

    return load_settings()


def test_the_local_backend_stays_the_default(workspace):
    from agentlab.config import load_settings

    sched = scheduler_from_settings(load_settings(), start=False, gpus=[])
    try:
        assert type(sched) is LocalScheduler
    finally:
        sched.shutdown()


def test_without_ray_the_error_names_the_fix(ray_settings, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(JobError, match=r"needs the ray package.*pip install 'agentlab\[ray\]'.*jobs.backend"):
        LocalScheduler.from_settings(ray_settings)


@pytest.mark.requires("ray")
def test_an_unreachable_cluster_is_named_with_the_fix(ray_settings, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = ray_settings.model_copy(update={"jobs": ray_settings.jobs.model_copy(
        update={"ray_address": f"127.0.0.1:{port}"})})
    with pytest.raises(JobError, match=rf"cannot reach the Ray cluster at 127.0.0.1:{port}.*ray start --head"
                                       r".*jobs.ray_address"):
        LocalScheduler.from_settings(settings)


def _eval_job(url: str, run_id: str, lab: str) -> JobSpec:
    """A real evaluation job (the harness in the sandbox, the metered proxy) of two toy problems."""
    from agentlab.techniques import get_technique
    from sandbox import ProxyConfig

    problems = [{"id": f"p{i}", "question": f"Q{i}: what is {i} + 1?", "answer": str(i + 1), "benchmark": "toy",
                 "grader": "gsm8k"} for i in range(2)]
    args = {"spec": get_technique("direct").model_dump(mode="json"), "problems": problems, "model": "scripted-model",
            "benchmark": "toy", "subset": "all", "concurrency": 2, "timeout_s": 30, "max_retries": 0,
            "model_id": "gguf-sha256:toy"}
    return JobSpec(kind="eval", lab=lab, run_id=run_id, target="agentlab.eval.sandbox_job:run_eval", args=args,
                   network="proxy", proxy=ProxyConfig(upstream=url, max_requests=None, max_tokens=None))


@needs_bwrap
@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.requires("ray")
def test_jobs_run_on_a_local_ray_started_from_the_settings(ray_settings):
    import ray

    from agentlab.jobs.ray_backend import RayScheduler
    from agentlab.lab.experiments import Experiments
    from agentlab.lab.state import LabConfig
    from tests.eval.conftest import ScriptedLLMServer

    srv = ScriptedLLMServer(lambda b: "The answer is " + str(int(b["messages"][-1]["content"].split("Q")[1][0]) + 1))
    url = f"http://127.0.0.1:{srv.port}/v1"
    assert not ray.is_initialized()
    # a light local instance: 2 CPUs (jobs.cpus), no GPU (jobs.gpus = []), a small object store
    sched = LocalScheduler.from_settings(ray_settings, runs=["run-a", "run-b"],
                                         init_kwargs={"object_store_memory": 80 * 1024 * 1024})
    try:
        assert isinstance(sched, RayScheduler) and ray.is_initialized()
        assert ray.cluster_resources().get("CPU") == 2 and ray.cluster_resources().get("GPU", 0) == 0
        first = sched.wait(sched.submit(_eval_job(url, "run-a", "lab-a")), timeout=300)
        with pytest.raises(JobError, match="outside this scheduler's scope"):
            sched.submit(JobSpec(lab="lab-c", run_id="run-c", command=["true"]))
        # a lab run's Experiments get the same backend from the same settings (the Ray instance is shared)
        exp = Experiments(ray_settings, LabConfig(benchmark="basic_arithmetic"), "run-c", "lab-c")
        assert isinstance(exp.scheduler(), RayScheduler)
        exp.close()
        asked = srv.completions()
        second = sched.wait(sched.submit(_eval_job(url, "run-b", "lab-b")), timeout=300)
    finally:
        sched.shutdown()
        srv.stop()
    for job in (first, second):
        assert job.state == "succeeded", (job.error, job.stderr_tail())
        assert job.scheduler_id == sched.id and job.log_dir == str(ray_settings.workspace / "jobs" / job.id)
        assert "done 2/2" in Path(job.log_dir, "stderr.log").read_text()
        assert job.result["summary"]["correct"] == 2
    assert asked == 2 and srv.completions() == 2  # the second lab's job: answered by the shared cache
    assert first.result["cache"]["merged"] == 2 and second.result["cache"]["cached_calls"] == 2
    assert not ray.is_initialized()  # the instance these schedulers started went with the last of them
