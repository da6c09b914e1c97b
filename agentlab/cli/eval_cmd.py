"""`agentlab eval`: run an evaluation, compare two runs, list runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from agentlab.bench import DEFAULT_BENCHMARK
from agentlab.cli.common import console, get_settings

app = typer.Typer(help="Evaluate reasoning techniques on benchmarks against a model under study.",
                  no_args_is_help=True)


def _csv(value: Optional[str]) -> Optional[list[str]]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@app.command("run")
def run(
    benchmark: str = typer.Option(DEFAULT_BENCHMARK, "--benchmark", "-b", help="math500, gsm8k, aime24, amc23, basic_arithmetic, ... or rg:TASK."),
    technique: str = typer.Option("zero_shot_cot", "--technique", "-t", help="Built-in technique name (see `agentlab techniques list`) or a .yaml/.json spec."),
    k: Optional[int] = typer.Option(None, "--k", help="Number of chains (self-consistency@k)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Override the sampling temperature."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Override max tokens per completion."),
    model_url: Optional[str] = typer.Option(None, "--model-url", help="OpenAI-compatible base URL of the model under study, e.g. http://127.0.0.1:8000/v1."),
    model_name: Optional[str] = typer.Option(None, "--model-name", help="Served model name at --model-url (default: the first one it lists)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="AGENTLAB_EVAL_API_KEY", help="API key for --model-url."),
    litellm_model: Optional[str] = typer.Option(None, "--litellm", help="A litellm model string instead of a URL, e.g. openai/gpt-4o-mini."),
    serve: Optional[str] = typer.Option(None, "--serve", help="Start a server for the run: llama.cpp (default model: the embedded one)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model for --serve: a GGUF path for llama.cpp."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="Evaluate a training run's checkpoint (RUN_ID from `agentlab train list`), served with transformers."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="First n problems (after other filters)."),
    levels: Optional[str] = typer.Option(None, "--levels", help="Comma-separated levels, e.g. 4,5."),
    subjects: Optional[str] = typer.Option(None, "--subjects", help="Comma-separated subjects, e.g. Algebra,Geometry."),
    split: str = typer.Option("all", "--split", help="all, dev or report (stable hash split)."),
    sample: Optional[int] = typer.Option(None, "--sample", help="A seeded random sample of this many problems."),
    seed: int = typer.Option(0, "--seed", help="Seed for --sample and procedural benchmarks."),
    concurrency: int = typer.Option(8, "--concurrency", "-j", help="Requests in flight."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Per-request timeout in seconds (config: llm.timeout_s)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not use the completion cache."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="A run id/record id to compare with (chart + McNemar)."),
    job_id: Optional[str] = typer.Option(None, "--job-id", help="Job id to store in the record."),
) -> None:
    """Run a technique on a benchmark; prints the summary record and writes a chart beside the results."""
    from agentlab.bench import Subset, load_benchmark
    from agentlab.cli.eval_run import choose_endpoint, run_with_progress
    from agentlab.eval.errors import EvalError
    from agentlab.eval.outputs import write_chart
    from agentlab.eval.records import compare as compare_runs
    from agentlab.eval.records import default_db_path, load_summary
    from agentlab.techniques import get_technique

    settings = get_settings()
    if split not in {"all", "dev", "report"}:
        raise typer.BadParameter("use all, dev or report", param_hint="--split")
    subset = Subset(levels=_csv(levels), subjects=_csv(subjects), split=split, sample=sample, seed=seed, limit=limit)
    problems = load_benchmark(benchmark, settings, subset=subset)
    if not problems:
        raise EvalError(f"the subset {subset.describe()!r} of {benchmark} is empty")
    spec = get_technique(technique, k=k, temperature=temperature, max_tokens=max_tokens)
    if checkpoint:
        if any(x is not None for x in (model_url, litellm_model, serve)):
            raise typer.BadParameter("--checkpoint serves the model itself; drop --model-url, --litellm and --serve")
        from agentlab.train.serve import checkpoint_endpoint

        with console.status(f"starting a server for checkpoint {checkpoint}..."):
            endpoint, managed = checkpoint_endpoint(settings.workspace, checkpoint,
                                                    mus=settings.model_under_study)
    else:
        endpoint, managed = choose_endpoint(settings, model_url, model_name, api_key, litellm_model, serve, model)
    try:
        summary = run_with_progress(spec, problems, endpoint, benchmark, subset.describe(), settings, concurrency,
                                     timeout, not no_cache, job_id)
    finally:
        if managed is not None:
            managed.__exit__(None, None, None)
    base = load_summary(baseline, default_db_path(settings)) if baseline else None
    _print_summary(summary)
    if base is not None:
        _print_comparison(compare_runs(summary, base, db_path=default_db_path(settings)))
    if summary.run_dir:
        chart = write_chart(summary, Path(summary.run_dir) / "accuracy.png", baseline=base)
        console.print(f"results: {summary.run_dir} (summary.json, results.jsonl, {chart.name})")



def _print_summary(s) -> None:
    table = Table(title=f"record {s.record_id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("run", s.run_id), ("benchmark", escape(f"{s.benchmark} [{s.subset}]")), ("model", s.model),
        ("technique", f"{s.technique} (spec {s.spec_hash})"),
        ("accuracy", f"{s.correct}/{s.n} = {s.accuracy:.1%}  95% CI [{s.ci_low:.1%}, {s.ci_high:.1%}]"),
        ("tokens", f"{s.tokens_per_problem:.0f}/problem, "
                   + (f"{s.tokens_per_correct:.0f}/correct" if s.tokens_per_correct else "- /correct")),
        ("latency", f"p50 {_fmt_s(s.latency_p50_s)}, p95 {_fmt_s(s.latency_p95_s)}"),
    ]
    if s.serving:  # engine and quantization: a checkpoint is served like its base
        rows.append(("serving", s.serving))
    if s.errors:
        rows.append(("errors", str(s.errors)))
    if s.max_tokens is not None:  # a code technique's replies are not seen by the harness
        rows.append(("cut", f"{s.truncated} of {s.calls} replies hit max_tokens ({s.max_tokens})"))
    for dim, groups in s.breakdown.items():
        rows.append((dim, ", ".join(f"{k}: {g.correct}/{g.n}" for k, g in groups.items())))
    for r in rows:
        table.add_row(*r)
    console.print(table)


def _fmt_s(v) -> str:
    return "-" if v is None else f"{v:.2f}s"


def _print_comparison(c) -> None:
    console.print(f"paired on {c.n_paired} problems: A {c.accuracy_a:.1%} vs B {c.accuracy_b:.1%} "
                  f"(delta {c.delta:+.1%}); A-only correct {c.wins}, B-only correct {c.losses}; "
                  f"exact McNemar p = {c.p_value:.4g}")


@app.command("compare")
def compare(
    run_a: str = typer.Argument(..., help="Run id or record id (or a unique prefix) of A."),
    run_b: str = typer.Argument(..., help="Run id or record id (or a unique prefix) of B (the baseline)."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    chart: Optional[Path] = typer.Option(None, "--chart", help="Also write a PNG chart of A vs B here."),
) -> None:
    """Paired comparison of two runs on their shared problems (wins, losses, exact McNemar p)."""
    from agentlab.eval.outputs import write_chart
    from agentlab.eval.records import compare as compare_runs
    from agentlab.eval.records import default_db_path, load_summary

    db = default_db_path(get_settings())
    c = compare_runs(run_a, run_b, db_path=db)
    if as_json:
        console.print_json(c.model_dump_json())
    else:
        a, b = load_summary(c.run_a, db), load_summary(c.run_b, db)
        console.print(escape(f"A = {a.technique} ({c.record_a}), B = {b.technique} ({c.record_b}), {a.benchmark} [{a.subset}]"))
        _print_comparison(c)
    if chart:
        write_chart(load_summary(c.run_a, db), chart, baseline=load_summary(c.run_b, db))
        console.print(f"chart: {chart}")


@app.command("list")
def list_runs() -> None:
    """List evaluation runs in this workspace."""
    from agentlab.eval.records import ResultStore, default_db_path

    settings = get_settings()
    db = default_db_path(settings)
    if not db.exists():
        console.print("no evaluation runs yet")
        return
    store = ResultStore(db)
    try:
        rows = store.list_runs()
        table = Table()
        for col in ("run", "record", "benchmark", "subset", "model", "technique", "n", "accuracy", "status"):
            table.add_column(col, no_wrap=col in {"run", "record"})
        for r in rows:
            s = store.summary(r["run_id"])
            table.add_row(r["run_id"], s.record_id if s.n else "-", r["benchmark"], r["subset"], r["model"],
                          r["technique"], f"{s.n}/{s.n_planned}", f"{s.accuracy:.1%}" if s.n else "-", r["status"])
    finally:
        store.close()
    console.print(table) if rows else console.print("no evaluation runs yet")


@app.command("show")
def show(ref: str = typer.Argument(..., help="Run id or record id (or a unique prefix)."),
         as_json: bool = typer.Option(False, "--json", help="Print the record as JSON.")) -> None:
    """Show one run's summary record."""
    from agentlab.eval.records import default_db_path, load_summary

    s = load_summary(ref, default_db_path(get_settings()))
    if as_json:
        console.print_json(s.model_dump_json())
    else:
        _print_summary(s)
