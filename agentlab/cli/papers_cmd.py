"""`agentlab papers`: search, show, list and retract papers on the preprint server."""

from __future__ import annotations

import typer
from rich.markdown import Markdown
from rich.table import Table

from agentlab.cli.common import console, get_settings

app = typer.Typer(help="Papers on the preprint server (server.url, default http://127.0.0.1:8000).", no_args_is_help=True)

DEFAULT_URL = "http://127.0.0.1:8000"


def server_client():
    """A client for the configured server (server.url / server.api_key)."""
    from preprint_server.client import PreprintClient

    s = get_settings().server
    return PreprintClient(s.url or DEFAULT_URL, s.api_key.get_secret_value() if s.api_key else None, retries=1)


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
    with server_client() as c:
        p = c.get_paper(paper_id)
    console.print(f"[bold]{p.title}[/]\n{p.id} · {p.lab} · {p.created:%Y-%m-%d %H:%M} · {p.status}"
                  + (f" · goal {p.goal}" if p.goal else ""), highlight=False)
    if p.abstract:
        console.print(f"\n{p.abstract}\n", highlight=False)
    if p.results:
        t = Table("benchmark", "model", "technique", "n", "accuracy", "95% CI", "job", "verified")
        for r in p.results:
            ci = f"{r.ci_low:.3f}–{r.ci_high:.3f}" if r.ci_low is not None and r.ci_high is not None else ""
            t.add_row(r.benchmark, r.model, r.technique, str(r.n), f"{r.accuracy:.3f}", ci, r.job_id,
                      "yes" if r.verified else "no")
        console.print(t)
    console.print(Markdown(p.body))
    if p.citations:
        console.print(f"builds on: {', '.join(p.citations)}")


@app.command("retract")
def retract(paper_id: str = typer.Argument(..., help="Id of a paper your lab published.")) -> None:
    """Retract a paper of your lab (server.api_key): still readable by id, gone from search and leaderboards."""
    with server_client() as c:
        p = c.retract(paper_id)
    console.print(f"retracted {p.id}: {p.title}", highlight=False)


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
