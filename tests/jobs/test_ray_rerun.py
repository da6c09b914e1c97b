"""Pieces of the Ray backend that need no Ray: its settings (``jobs.max_losses``, ``jobs.node_death_wait_s``), where
a job works on its node (``ray_node.work_base``) and the re-run hooks (``agentlab.jobs.rerun_hooks``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agentlab.jobs import JobSpec
from agentlab.jobs.rerun_hooks import register_rerun, rerun_spec, unregister_rerun

ADD = "tests.jobs.callables:add"


def test_from_settings_takes_the_losses_and_the_death_wait_from_the_jobs_section(workspace, monkeypatch):
    from agentlab.config import JobsConfig, load_settings
    from agentlab.jobs.ray_backend import RayScheduler

    got = {}
    monkeypatch.setattr(RayScheduler, "__init__", lambda self, store, ws, **kw: got.update(kw))  # no Ray started
    RayScheduler.from_settings(load_settings())
    assert got["max_losses"] == 3 and got["node_death_wait_s"] == 30.0  # the defaults
    monkeypatch.setenv("AGENTLAB_JOBS__MAX_LOSSES", "5")
    monkeypatch.setenv("AGENTLAB_JOBS__NODE_DEATH_WAIT_S", "2.5")
    RayScheduler.from_settings(load_settings())
    assert got["max_losses"] == 5 and got["node_death_wait_s"] == 2.5
    RayScheduler.from_settings(load_settings(), max_losses=1)  # explicit arguments win
    assert got["max_losses"] == 1 and got["node_death_wait_s"] == 2.5
    for bad in ({"max_losses": 0}, {"node_death_wait_s": -1}):
        with pytest.raises(ValidationError):
            JobsConfig(**bad)


def test_a_job_works_in_the_workspace_only_where_the_node_sees_its_folder(tmp_path):
    from agentlab.jobs.ray_node import work_base

    attempt = tmp_path / "jobs" / "job-1" / "attempt-1"
    attempt.mkdir(parents=True)  # made by the driver
    assert work_base("job-1", str(attempt), "10.0.0.9") == (attempt, None)
    elsewhere = tmp_path / "not-shared" / "attempt-1"
    base, problem = work_base("job-1", str(elsewhere), "10.0.0.9")
    assert base == elsewhere and not elsewhere.exists()  # nothing made where the workspace is not
    assert problem.startswith(f"the job's folder in the workspace is not on this machine: {elsewhere}; it runs on "
                              "Ray node 10.0.0.9, which does not have them: put the workspace on a filesystem every "
                              "node mounts at the same path")
    temp, none = work_base("job-2", None, "10.0.0.9")  # a job that binds no workspace path: the node's temp
    try:
        assert none is None and temp.is_dir() and temp.name.startswith("agentlab-job-2-")
    finally:
        temp.rmdir()


def test_the_first_hook_that_serves_a_job_gives_its_rerun_and_a_broken_one_is_passed_over(tmp_path):
    spec = JobSpec(target=ADD, args={"a": 1, "b": 2})

    def broken(spec: JobSpec, previous: Path) -> JobSpec | None:
        raise RuntimeError("a bug in a hook")

    def resumes(spec: JobSpec, previous: Path) -> JobSpec | None:
        return spec.model_copy(update={"args": {**spec.args, "from": str(previous)}}) if spec.target == ADD else None

    assert rerun_spec(spec, tmp_path) is None  # no hook serves it: the same spec again
    for hook in (broken, resumes, resumes):
        register_rerun(hook)
    try:
        assert rerun_spec(spec, tmp_path).args == {"a": 1, "b": 2, "from": str(tmp_path)}
        assert rerun_spec(JobSpec(command=["true"]), tmp_path) is None
    finally:
        unregister_rerun(broken)
        unregister_rerun(resumes)
    assert rerun_spec(spec, tmp_path) is None
