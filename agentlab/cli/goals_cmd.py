"""`agentlab goals`: research goals on the preprint server."""

from __future__ import annotations

import typer
from rich.table import Table

from agentlab.cli.common import console
from agentlab.cli.papers_cmd import server_client

app = typer.Typer(help="Research goals labs work on (stored on the preprint server).", no_args_is_help=True)


@app.command("add")
def add(text: str = typer.Argument(..., help="The goal, e.g. \"improve accuracy on MATH-500\"."),
        benchmark: str | None = typer.Option(None, "--benchmark", help="e.g. math500"),
        baseline: float | None = typer.Option(None, "--baseline", min=0.0, max=1.0, help="Accuracy to beat, e.g. 0.702.")) -> None:
    """Add a goal (needs server.api_key)."""
    with server_client() as c:
        g = c.add_goal(text, benchmark=benchmark, baseline=baseline)
    console.print(f"goal {g.id} added", highlight=False)


@app.command("list")
def list_(status: str | None = typer.Option(None, "--status", help="open or closed.")) -> None:
    """Goals, newest first."""
    with server_client() as c:
        goals = c.list_goals(status=status)
    t = Table("id", "goal", "benchmark", "baseline", "status", "by")
    for g in goals:
        t.add_row(g.id, g.text, g.benchmark or "", "" if g.baseline is None else f"{g.baseline:.3f}", g.status, g.created_by)
    console.print(t)
