"""`agentlab jobs ...` and `agentlab gpus`: inspect and manage the job queue and GPU assignments."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer
from rich.table import Table

import agentlab.jobs as jobs_api  # its parts load when first used (PEP 562): the CLI starts without them
from agentlab.cli.common import console, get_settings

app = typer.Typer(help="List, inspect, cancel and retry jobs (evaluation, training, scripts).", no_args_is_help=True)


def _store() -> jobs_api.JobStore:
    return jobs_api.JobStore(get_settings().jobs_db_path)


def _get(store: jobs_api.JobStore, job_id: str):
    job = store.get(job_id)
    if job is None:
        raise jobs_api.JobError(f"no job {job_id!r} in {store.path} (see `agentlab jobs list`)")
    return job


def _ts(t: float | None) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%m-%d %H:%M:%S") if t else "-"


@app.command("list")
def list_jobs(
    state: str | None = typer.Option(None, "--state", help="queued, running, succeeded, failed, cancelled, timed_out"),
    lab: str | None = typer.Option(None, "--lab", help="Only this lab."),
    run_id: str | None = typer.Option(None, "--run", help="Only this lab run."),
    limit: int = typer.Option(50, "--limit", "-n", help="Newest N jobs."),
) -> None:
    """List jobs, newest first."""
    jobs = _store().list(state=state, lab=lab, run_id=run_id, limit=limit, newest_first=True)
    if not jobs:
        console.print("no jobs")
        return
    t = Table()
    for c in ("id", "kind", "lab", "state", "gpus", "submitted", "wall (s)", "note"):
        t.add_column(c)
    for j in jobs:
        t.add_row(j.id, j.spec.kind, j.lab, j.state, ",".join(map(str, j.gpus)) or "-", _ts(j.submitted_at),
                  f"{j.wall_s:.1f}" if j.wall_s is not None else "-", (j.error or j.spec.name or "")[:60])
    console.print(t)


@app.command("show")
def show(job_id: str = typer.Argument(..., help="Job id (a unique prefix is enough).")) -> None:
    """Show a job: spec, state, limits hit, result, paths."""
    j = _get(_store(), job_id)
    rows = {
        "id": j.id, "kind": j.spec.kind, "name": j.spec.name, "lab": j.lab, "run": j.spec.run_id, "state": j.state,
        "entry": j.spec.target or (" ".join(j.spec.command) if j.spec.command else "python code"),
        "resources": j.spec.resources.model_dump(), "network": j.spec.network, "gpus": j.gpus,
        "submitted": _ts(j.submitted_at), "started": _ts(j.started_at), "finished": _ts(j.finished_at),
        "exit code": j.exit_code, "killed by": j.killed_by, "error": j.error, "wall s": j.wall_s, "cpu s": j.cpu_s,
        "peak memory MB": j.peak_rss_mb, "attempt": j.attempt, "retry of": j.retry_of,
        "logs": j.log_dir, "artifacts": j.workdir,
    }
    for k, v in rows.items():
        if v not in (None, "", []):
            console.print(f"[bold]{k}:[/] {v}", highlight=False, soft_wrap=True)
    if j.result is not None:
        console.print("[bold]result:[/]")
        console.print_json(json.dumps(j.result, default=str))


@app.command("logs")
def logs(
    job_id: str = typer.Argument(..., help="Job id."),
    stderr: bool = typer.Option(False, "--stderr", help="Show stderr instead of stdout."),
    tail: int = typer.Option(0, "--tail", "-t", help="Only the last N lines (0 = all)."),
) -> None:
    """Print a job's stdout (or stderr) log."""
    j = _get(_store(), job_id)
    if not j.log_dir:
        raise jobs_api.JobError(f"job {j.id} has not started yet (state {j.state})")
    path = Path(j.log_dir) / ("stderr.log" if stderr else "stdout.log")
    if not path.exists():
        raise jobs_api.JobError(f"no log at {path}")
    text = path.read_text(errors="replace")
    if tail:
        text = "\n".join(text.splitlines()[-tail:])
    typer.echo(text, nl=not text.endswith("\n"))


@app.command("cancel")
def cancel(job_id: str = typer.Argument(..., help="Job id.")) -> None:
    """Cancel a queued job, or ask the scheduler running it to stop it."""
    store = _store()
    j = _get(store, job_id)
    state = store.request_cancel(j.id)
    msg = "cancelled" if state == "cancelled" else f"cancel requested (state {state}; its scheduler stops it)"
    console.print(f"{j.id}: {msg}")


@app.command("retry")
def retry(
    job_id: str = typer.Argument(..., help="A finished job to run again."),
    wait: bool = typer.Option(False, "--run", help="Run it now with a local scheduler and wait for it."),
) -> None:
    """Queue a finished (failed, timed out, cancelled...) job again as a new job."""
    store = _store()
    j = _get(store, job_id)
    if not j.done:
        raise jobs_api.JobError(f"job {j.id} is {j.state}; only finished jobs can be retried")
    if not wait:
        new = store.add(j.spec, retry_of=j.id, attempt=j.attempt + 1)
        console.print(f"queued {new} (retry of {j.id}); a running scheduler picks it up, or use --run")
        return
    import agentlab.eval  # noqa: F401  (registers the completion cache evaluation jobs share)
    import agentlab.train  # noqa: F401  (registers how a training job goes on after its Ray node was lost)

    with jobs_api.LocalScheduler.from_settings(get_settings()) as sched:
        new = sched.retry(j.id)
        console.print(f"running {new} (retry of {j.id}) ...")
        done = sched.wait(new)
    console.print(f"{done.id}: {done.state}" + (f" — {done.error}" if done.error else ""))
    if done.state != "succeeded":
        raise typer.Exit(1)


def gpus() -> None:
    """Show the GPU inventory (config jobs.gpus or nvidia-smi) and which running job holds each GPU."""
    s = get_settings()
    inv = jobs_api.inventory(s.jobs.gpus)
    src = "config jobs.gpus" if s.jobs.gpus is not None else "nvidia-smi"
    if not inv:
        console.print(f"no GPUs (source: {src}); jobs that need no GPU still run")
        return
    store = jobs_api.JobStore(s.jobs_db_path)
    held = {g: j for j in store.list(state="running") for g in j.gpus}
    t = Table(title=f"GPUs (source: {src})")
    for c in ("index", "name", "memory (MB)", "uuid", "job", "lab"):
        t.add_column(c)
    for g in inv:
        j = held.get(g.index)
        t.add_row(str(g.index), g.name or "-", str(g.memory_mb or "-"), g.uuid or "-", j.id if j else "free",
                  j.lab if j else "")
    console.print(t)
