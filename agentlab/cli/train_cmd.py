"""`agentlab train`: run a training recipe (SFT, DPO, GRPO) as a sandboxed job, list and show runs, resume."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agentlab.cli.common import console, get_settings

app = typer.Typer(help="Fine-tune models with TRL (SFT, DPO, GRPO) as sandboxed jobs; list and inspect runs.",
                  no_args_is_help=True)


def _gpu_list(gpus: str | None) -> list[int] | None:
    if gpus is None:
        return None
    try:
        return [int(g) for g in gpus.split(",") if g.strip()]
    except ValueError:
        raise typer.BadParameter("use comma-separated GPU indices, e.g. 0,1", param_hint="--gpus") from None


def _scheduler(settings, gpus: list[int] | None):
    from agentlab.jobs import LocalScheduler

    kw = {"gpus": gpus} if gpus is not None else {}
    return LocalScheduler.from_settings(settings, **kw)


def _execute(run, settings, sched, resume: bool):
    from agentlab.train.runner import execute_run

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(f"{run.method} {run.name}", total=run.max_steps, note="loading")

        def on_progress(step, total, rec):
            note = " ".join(f"{k} {rec[k]:.4g}" for k in ("loss", "reward") if isinstance(rec.get(k), float))
            progress.update(task, completed=step, note=note or ("loading" if not step else ""))

        return execute_run(run, settings.workspace, sched, on_progress=on_progress, resume=resume)


def _report(run) -> None:
    if run.status == "succeeded":
        r = run.result or {}
        console.print(f"[bold green]{run.run_id}[/] {run.status}: {r.get('steps')} steps, "
                      f"checkpoint {run.short_hash} at {run.checkpoint}", highlight=False)
        console.print(f"evaluate it: agentlab eval run --checkpoint {run.run_id}", highlight=False)
    else:
        console.print(f"[bold red]{run.run_id}[/] {run.status}: {escape(run.error or '')}", highlight=False)
        console.print(f"continue from its last checkpoint: agentlab train resume {run.run_id}", highlight=False)
        raise typer.Exit(1)


@app.command("run")
def run(
    recipe: Path = typer.Argument(..., help="Recipe file (.yaml or .json), e.g. examples/train/sft_smollm2_cpu.yaml."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Override the recipe's max_steps."),
    gpus: str | None = typer.Option(None, "--gpus", help="GPU indices to schedule on, e.g. 0,1 (default: config jobs.gpus)."),
) -> None:
    """Train: build leak-checked data, run the recipe as a sandboxed `train` job, collect the checkpoint."""
    from agentlab.eval.records import default_db_path
    from agentlab.train.recipe import Recipe
    from agentlab.train.runner import prepare_run

    settings = get_settings()
    rec = Recipe.load(recipe)
    gpu_list = _gpu_list(gpus)
    if gpu_list:
        rec = Recipe.parse({**rec.model_dump(mode="json"),
                            "resources": {**rec.resources.model_dump(), "gpus": len(gpu_list)}})
    with console.status("preparing training data (leak check against the report split)..."):
        tr = prepare_run(rec, settings.workspace, settings.data_dir, max_steps=max_steps,
                         eval_db=default_db_path(settings))
    console.print(f"run {tr.run_id}: {tr.n_train} training rows ({tr.dropped_leaks} dropped as report-split "
                  f"leaks), model {tr.model}", highlight=False)
    with _scheduler(settings, gpu_list) as sched:
        tr = _execute(tr, settings, sched, resume=False)
    _report(tr)


@app.command("resume")
def resume(run_id: str = typer.Argument(..., help="A failed or killed training run (id or unique prefix).")) -> None:
    """Continue a killed or failed run from the last checkpoint it saved (a new job attempt)."""
    from agentlab.train.runner import load_for_resume

    settings = get_settings()
    with _scheduler(settings, None) as sched:
        tr = load_for_resume(settings.workspace, run_id, sched)
        tr = _execute(tr, settings, sched, resume=True)
    _report(tr)


@app.command("list")
def list_runs() -> None:
    """List training runs in this workspace."""
    from agentlab.train.runs import RunStore

    runs = RunStore(get_settings().workspace).list()
    if not runs:
        console.print("no training runs yet")
        return
    t = Table()
    for c in ("run", "name", "method", "model", "status", "steps", "loss", "checkpoint"):
        t.add_column(c, no_wrap=c == "run")
    for r in runs:
        res = r.result or {}
        loss = res.get("final_loss")
        t.add_row(r.run_id, r.name, f"{r.method} ({r.finetune})", Path(r.model).name, r.status,
                  f"{res.get('steps', '-')}/{r.max_steps}", f"{loss:.4g}" if isinstance(loss, float) else "-",
                  r.short_hash or "-")
    console.print(t)


@app.command("show")
def show(run_id: str = typer.Argument(..., help="Training run id (or a unique prefix)."),
         as_json: bool = typer.Option(False, "--json", help="Print the run record as JSON.")) -> None:
    """Show a run: recipe, data, figures (steps, loss, tokens/s, peak memory), checkpoint and curve."""
    from agentlab.train.outputs import CURVE_FILE, METRICS_FILE, read_metrics
    from agentlab.train.runs import RunStore

    store = RunStore(get_settings().workspace)
    r = store.get(run_id)
    if as_json:
        console.print_json(r.model_dump_json())
        return
    d, res, man = store.dir(r.run_id), r.result or {}, store.manifest(r.run_id)
    prot = man.get("protected", {})
    rows = {
        "run": r.run_id, "name": r.name, "status": r.status, "method": f"{r.method} ({r.finetune})",
        "base model": r.model, "recipe": f"{d / 'recipe.json'} (hash {r.recipe_hash})",
        "data": f"{r.n_train} rows; {r.dropped_leaks} dropped as leaks; disjoint from the report split of "
                f"{prot.get('benchmark')} at seeds {prot.get('seeds')} ({prot.get('n')} problems)",
        "steps": f"{res.get('steps', '-')}/{r.max_steps}" + (f" (resumed at {res['resumed_from_step']})"
                                                             if res.get("resumed_from_step") else "")
        + (" (stopped by the time budget)" if res.get("stopped_by") == "time" else ""),
        "final loss": res.get("final_loss"), "final reward": res.get("final_reward"),
        "tokens/s": res.get("tokens_per_s"), "peak memory MB": res.get("peak_memory_mb"),
        "train wall s": res.get("train_wall_s"), "gpus": r.gpus or "cpu", "gpu minutes": r.gpu_minutes,
        "jobs": ", ".join(r.jobs), "error": r.error,
        "checkpoint": f"{r.checkpoint} (sha256 {r.checkpoint_hash})" if r.checkpoint else None,
        "curve": str(d / CURVE_FILE) if (d / CURVE_FILE).is_file() else None,
        "records": f"{d / METRICS_FILE} ({len(read_metrics(d / METRICS_FILE))} steps)"
        if (d / METRICS_FILE).is_file() else None,
    }
    for k, v in rows.items():
        if v not in (None, "", []):
            console.print(f"[bold]{k}:[/] {escape(str(v))}", highlight=False, soft_wrap=True)


@app.command("export")
def export(run_id: str = typer.Argument(..., help="Training run id (or a unique prefix)."),
           out: Path = typer.Argument(..., help="Folder to write the merged model to.")) -> None:
    """Write a run's checkpoint as merged weights (for `vllm serve` or llama.cpp's GGUF converter)."""
    from agentlab.train.models import export_merged
    from agentlab.train.runs import RunStore, TrainRunError

    r = RunStore(get_settings().workspace).get(run_id)
    if not r.checkpoint:
        raise TrainRunError(f"training run {r.run_id} has no checkpoint (status {r.status})")
    with console.status("merging and writing..."):
        path = export_merged(r.checkpoint, out)
    console.print(f"merged weights of {r.run_id} (checkpoint {r.short_hash}) in {path}", highlight=False)
