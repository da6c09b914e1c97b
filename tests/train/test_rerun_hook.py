"""A training job whose Ray node was lost goes on from its last checkpoint: the re-run hook ``agentlab.train``
registers (``agentlab.jobs.rerun_hooks``) binds the lost attempt's ``output`` as a manual resume does. No Ray."""

from __future__ import annotations

import json
from pathlib import Path

import agentlab.train  # noqa: F401  (registers the hook, as every process that submits training jobs does)
from agentlab.jobs import JobSpec
from agentlab.jobs.rerun_hooks import rerun_spec
from agentlab.train.recipe import Recipe
from agentlab.train.runner import RESUME_MOUNT, job_spec, prepare_run
from tests.conftest import SHARED_DATA


def _checkpoint(workdir: Path, step: int, complete: bool = True) -> None:
    ck = workdir / "output" / f"checkpoint-{step}"
    ck.mkdir(parents=True)
    if complete:
        (ck / "trainer_state.json").write_text(json.dumps({"global_step": step}))


def test_a_lost_training_attempt_resumes_from_its_last_checkpoint(tmp_path):
    (tmp_path / "model").mkdir()
    recipe = Recipe.parse({"name": "tiny", "model": str(tmp_path / "model"), "max_steps": 6, "save_steps": 2,
                           "data": {"source": "reasoning_gym", "task": "basic_arithmetic", "size": 8}})
    ws = tmp_path / "ws"
    run = prepare_run(recipe, ws, SHARED_DATA)
    spec = job_spec(run, ws)
    lost = ws / "jobs" / "job-1" / "attempt-1" / "work"
    _checkpoint(lost, 4, complete=False)  # a checkpoint being written as the node died is no resume point
    assert rerun_spec(spec, lost) is None  # nothing saved: the same spec runs again
    _checkpoint(lost, 2)
    resumed = rerun_spec(spec, lost)
    assert resumed == job_spec(run, ws, resume_dir=lost / "output")  # what `agentlab train resume` submits
    assert resumed.args["resume_dir"] == RESUME_MOUNT and resumed.ro_binds[str(lost / "output")] == RESUME_MOUNT
    # the next loss: that attempt's checkpoints, in place of the first attempt's
    again = ws / "jobs" / "job-1" / "attempt-2" / "work"
    _checkpoint(again, 4)
    assert rerun_spec(resumed, again) == job_spec(run, ws, resume_dir=again / "output")
    # other jobs are not the training wing's to change
    other = JobSpec(target="tests.jobs.callables:add", ro_binds={str(tmp_path): "/data"})
    assert rerun_spec(other, lost) is None
