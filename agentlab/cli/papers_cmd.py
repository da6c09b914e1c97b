"""`agentlab papers`: search, show, list, retract and replicate papers on the preprint server."""

from __future__ import annotations

import typer
from rich.table import Table

from agentlab.cli.common import console, get_settings, server_client

app = typer.Typer(help="Papers on the preprint server (server.url, default http://127.0.0.1:8000).", no_args_is_help=True)


@app.command("search")
def search(query: str = typer.Argument(..., help="What to look for."),
           k: int = typer.Option(5, "-k", min=1, max=100, help="Number of papers."),
           goal: str | None = typer.Option(None, "--goal", help="Only papers for this goal id.")) -> None:
    """Semantic + keyword search over whole papers."""
    with server_client() as c:
        hits = c.search(query, k=k, goal=goal)
    if not hits:
        console.print("no papers match")
    for h in hits:
        console.print(f"[bold]{h.id}[/]  {h.title}  [dim]({h.lab}, score {h.score:.4f})[/]", highlight=False)
        console.print(f"    {h.snippet}", style="dim", highlight=False)


@app.command("show")
def show(paper_id: str = typer.Argument(..., help="Paper id.")) -> None:
    """A paper: metadata, results table and body."""
    from rich.markdown import Markdown

    with server_client() as c:
        p = c.get_paper(paper_id)
    console.print(f"[bold]{p.title}[/]\n{p.id} · {p.lab} · {p.created:%Y-%m-%d %H:%M} · {p.status}"
                  + (f" · goal {p.goal}" if p.goal else ""), highlight=False)
    if p.abstract:
        console.print(f"\n{p.abstract}\n", highlight=False)
    if p.results:
        t = Table("benchmark", "subset", "split", "model", "technique", "n", "accuracy", "95% CI", "failed",
                  "job")
        for r in p.results:
            ci = f"{r.ci_low:.3f}–{r.ci_high:.3f}" if r.ci_low is not None and r.ci_high is not None else ""
            n = str(r.n) if r.complete else f"{r.n} of {r.n_planned or '?'} (incomplete)"
            t.add_row(r.benchmark, r.subset, r.split, r.model, r.technique, n, f"{r.accuracy:.3f}", ci,
                      str(r.errors), r.job_id or "not from the harness")
        console.print(t)
        console.print(replication_line(p.replication), highlight=False)
    console.print(Markdown(p.body))
    if p.citations:
        console.print(f"builds on: {', '.join(p.citations)}")


@app.command("retract")
def retract(paper_id: str = typer.Argument(..., help="Id of a paper your lab published.")) -> None:
    """Retract a paper of your lab (server.api_key): still readable by id, gone from search and leaderboards."""
    with server_client() as c:
        p = c.retract(paper_id)
    console.print(f"retracted {p.id}: {p.title}", highlight=False)


@app.command("replicate")
def replicate(
    paper_id: str = typer.Argument(..., help="Id of the paper whose result to re-run."),
    technique: str | None = typer.Option(None, "--technique", "-t", help="Which of its techniques (default: its best "
                                                                         "report-split result)."),
    model_url: str | None = typer.Option(None, "--model-url", help="OpenAI-compatible URL serving the paper's model "
                                                                   "(default: start llama.cpp with --model)."),
    model_name: str | None = typer.Option(None, "--model-name", help="Served model name at --model-url."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="AGENTLAB_EVAL_API_KEY", help="Key for --model-url."),
    model: str | None = typer.Option(None, "--model", help="GGUF file for llama.cpp (default: the embedded model)."),
    concurrency: int = typer.Option(8, "--concurrency", "-j", min=1, help="Requests in flight."),
    timeout: float | None = typer.Option(None, "--timeout", help="Per-request timeout in seconds."),
) -> None:
    """Re-run a paper's published technique on the same benchmark, subset and model, and post the replication
    (server.api_key). The server says whether it is consistent with the paper's confidence interval. Completions
    are never taken from the cache: a replication measures again."""
    from agentlab.bench import load_benchmark
    from agentlab.cli.eval_run import choose_endpoint, run_with_progress
    from agentlab.eval import replicate as rep

    settings = get_settings()
    with server_client() as c:
        paper = c.get_paper(paper_id)
        result = rep.choose_result(paper, technique)
        spec = rep.spec_for(result, {t.spec_hash: t.spec for t in paper.techniques}, paper.body)
        problems = load_benchmark(result.benchmark, settings, subset=rep.subset_of(result))
        rep.check_same_problems(result, problems)
        endpoint, managed = choose_endpoint(settings, model_url, model_name, api_key, None, None, model)
        try:
            rep.check_same_model(result, endpoint)
            console.print(f"replicating {result.technique} on {result.benchmark} ({result.subset}, n={len(problems)}) "
                          f"with {endpoint.model}: the paper reports {result.accuracy:.1%}", highlight=False)
            summary = run_with_progress(spec, problems, endpoint, result.benchmark, result.subset, settings,
                                         concurrency, timeout, False, None)
        finally:
            if managed is not None:
                managed.__exit__(None, None, None)
        out = c.replicate(paper_id, rep.replication_record(summary, result, endpoint.identity))
    console.print(f"{out.verdict}: {out.result.accuracy:.1%} ({out.result.correct}/{out.result.n}) against the "
                  f"paper's {out.original_accuracy:.1%}, 95% CI {out.original_ci_low:.1%}–{out.original_ci_high:.1%} "
                  f"(record {summary.record_id})", highlight=False)
    if out.verdict != "consistent":
        raise typer.Exit(1)


@app.command("leaderboard")
def leaderboard(benchmark: str | None = typer.Option(None, "--benchmark", "-b"),
                goal: str | None = typer.Option(None, "--goal"),
                replicated: bool = typer.Option(False, "--replicated", help="Only results another lab replicated.")) -> None:
    """Best report-split results, one table per benchmark, subset and model (rows compare only within one)."""
    from itertools import groupby

    with server_client() as c:
        entries = c.leaderboard(benchmark=benchmark, goal=goal, replicated=replicated)
    if not entries:
        console.print("no ranked results yet (report split, complete, from harness records)")
    # the server sorts by (benchmark, subset, model, -accuracy): each run of one group is one table
    for (bench, subset, model), rows in groupby(entries, key=lambda e: (e.benchmark, e.subset, e.model)):
        t = Table("#", "technique", "accuracy", "95% CI", "n", "failed", "replicated", "paper", "lab",
                  title=f"{bench} · {model} · {subset or 'all'}")
        for i, e in enumerate(rows, 1):
            ci = f"{e.ci_low:.1%}–{e.ci_high:.1%}" if e.ci_low is not None and e.ci_high is not None else ""
            rep = f"not reproduced ({e.not_reproduced})" if e.not_reproduced else str(e.replications or "–")
            t.add_row(str(i), e.technique, f"{e.accuracy:.1%}", ci, str(e.n), str(e.errors), rep, e.paper_id, e.lab)
        console.print(t)


def replication_line(summary) -> str:
    if summary.not_reproduced_labs:
        return f"not reproduced by {summary.not_reproduced_labs} lab(s); consistent for {summary.consistent_labs}"
    if summary.consistent_labs:
        return f"replicated by {summary.consistent_labs} lab(s), consistent within the confidence interval"
    return "not replicated yet"


@app.command("list")
def list_(goal: str | None = typer.Option(None, "--goal"), lab: str | None = typer.Option(None, "--lab"),
          benchmark: str | None = typer.Option(None, "--benchmark"),
          status: str | None = typer.Option(None, "--status", help="submitted, published or retracted."),
          sort: str = typer.Option("-created", "--sort", help="created, -created, title or -title."),
          limit: int = typer.Option(20, "--limit", min=1, max=100), offset: int = typer.Option(0, "--offset", min=0)) -> None:
    """Papers, newest first."""
    with server_client() as c:
        page = c.list_papers(goal=goal, lab=lab, benchmark=benchmark, status=status, sort=sort, limit=limit, offset=offset)
    t = Table("id", "title", "lab", "goal", "created", title=f"{page.total} papers")
    for p in page.items:
        t.add_row(p.id, p.title, p.lab, p.goal or "", f"{p.created:%Y-%m-%d %H:%M}")
    console.print(t)
