"""`agentlab goals`: research goals on the preprint server."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from agentlab.cli.common import console, server_client
from agentlab.errors import AgentlabError
from agentlab.lab.goals_file import GoalFileError, check_benchmark, read_goals_file

if TYPE_CHECKING:
    from preprint_server.schemas import GoalCreate

app = typer.Typer(help="Research goals labs work on (stored on the preprint server).", no_args_is_help=True)


@app.command("add")
def add(text: str = typer.Argument(..., help="The goal, e.g. \"improve accuracy on MATH-500\"."),
        benchmark: str | None = typer.Option(None, "--benchmark", help="e.g. math500"),
        baseline: float | None = typer.Option(None, "--baseline", min=0.0, max=1.0, help="Accuracy to beat, e.g. 0.702."),
        target: float | None = typer.Option(None, "--target", min=0.0, max=1.0, help="Close the goal when a ranked "
                                            "report-split result on it reaches this accuracy."),
        max_papers: int | None = typer.Option(None, "--max-papers", min=1, help="Close the goal after this many papers.")) -> None:
    """Add a goal to the queue (needs server.api_key)."""
    if benchmark:
        check_benchmark(benchmark)
    with server_client() as c:
        g = c.add_goal(text, benchmark=benchmark, baseline=baseline, target=target, max_papers=max_papers)
    console.print(f"goal {g.id} added", highlight=False)


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="A .yaml/.yml/.json list of goals, or .jsonl with one goal per line.")],
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the file and show what would be added; add nothing."),
) -> None:
    """Add every goal in FILE to the preprint server (needs server.url and a lab key in server.api_key).

    A goal has `text` (required), `benchmark` (math500, gsm8k, aime24, amc23, ... or rg:TASK), `baseline` (0-1).
    The whole file is validated first: a bad item stops the import before any goal is added.
    Goals already on the server (same text and benchmark) are skipped, so a second import adds nothing.
    Examples: examples/goals/ (`agentlab goals import examples/goals/math500.yaml`).
    """
    from preprint_server.errors import PreprintServerError

    goals = read_goals_file(file)
    if dry_run:
        for i, g in enumerate(goals, 1):
            console.print(f"item {i}: would add: {_label(g)}", highlight=False, markup=False)
        console.print(f"{file}: {len(goals)} valid goal(s); nothing added (--dry-run)", highlight=False)
        return
    with server_client() as c:
        existing = {(g.text, g.benchmark) for g in c.list_goals()}
        added = 0
        for i, g in enumerate(goals, 1):
            if (g.text, g.benchmark) in existing:
                continue
            try:
                out = c.add_goal(g.text, benchmark=g.benchmark, baseline=g.baseline, target=g.target,
                                 max_papers=g.max_papers)
            except PreprintServerError as exc:  # the client's errors (not AgentlabErrors: the server is a layer below)
                raise GoalFileError(f"{file}: item {i}: {exc} ({added} goal(s) added before it; run the import "
                                    "again to add the rest, goals already added are skipped)") from None
            existing.add((g.text, g.benchmark))
            added += 1
            console.print(f"goal {out.id} added: {_label(g)}", highlight=False, markup=False)
    skipped = f", {len(goals) - added} already on the server" if added < len(goals) else ""
    console.print(f"{file}: {added} goal(s) added{skipped}", highlight=False)


@app.command("list")
def list_(status: str | None = typer.Option(None, "--status", help="open, claimed or closed.")) -> None:
    """Goals, newest first, with their queue state."""
    if status is not None and status not in STATUSES:
        raise AgentlabError(f"--status: use one of {', '.join(STATUSES)}, not {status!r}")
    with server_client() as c:
        goals = c.list_goals(status=status)
    t = Table("id", "benchmark", "status", "papers", "claims", "target")
    t.add_column("goal", min_width=24, ratio=1)
    for g in goals:
        state = f"{g.status} ({g.claimed_by})" if g.claimed_by else g.status
        papers = f"{g.papers}/{g.max_papers}" if g.max_papers else str(g.papers)
        t.add_row(g.id, g.benchmark or "", state, papers, str(g.attempts), _pct(g.target), g.text)
    console.print(t)


@app.command("show")
def show(goal_id: str = typer.Argument(..., help="A goal id (`agentlab goals list`).")) -> None:
    """A goal: its queue state, its claims (leases) and its best result so far."""
    with server_client() as c:
        g, leases, prog = c.get_goal(goal_id), c.goal_leases(goal_id), c.goal_progress(goal_id)
    console.print(f"goal {g.id}: {g.text}", highlight=False, markup=False)
    facts = [f"status {g.status}", f"benchmark {g.benchmark or '-'}", f"baseline {_pct(g.baseline) or '-'}",
             f"target {_pct(g.target) or '-'}", f"papers {g.papers}" + (f" of at most {g.max_papers}" if g.max_papers else ""),
             f"claims {g.attempts}", f"set by {g.created_by}"]
    console.print("  " + " · ".join(facts), highlight=False, markup=False)
    if g.claimed_by:
        console.print(f"  claimed by {g.claimed_by} until {g.lease_expires:%Y-%m-%d %H:%M:%S} UTC (unless renewed)")
    if g.closed_reason:
        console.print(f"  closed {g.closed_at:%Y-%m-%d %H:%M} UTC: {g.closed_reason}", highlight=False, markup=False)
    for group in prog.groups[:1]:
        combined = group.lines[0]
        best = max((p.best for p in combined.points), default=None)
        console.print(f"  best so far ({group.benchmark}, {group.model}, {group.subset or 'all'}): {_pct(best)} "
                      f"after {prog.papers} paper(s); `agentlab goals progress {g.id}` draws it", highlight=False)
    if leases:
        t = Table("#", "lab", "holder", "claimed", "ended", "how")
        for lease in leases:
            t.add_row(str(lease.attempt), lease.lab, lease.holder, f"{lease.created:%Y-%m-%d %H:%M:%S}",
                      f"{lease.ended:%Y-%m-%d %H:%M:%S}" if lease.ended else f"live until {lease.expires_at:%H:%M:%S}",
                      lease.end_reason or "")
        console.print(t)


@app.command("claim")
def claim(goal: str | None = typer.Option(None, "--goal", help="Claim this goal instead of the next open one."),
          benchmark: str | None = typer.Option(None, "--benchmark", help="Only goals on this benchmark."),
          lease_s: float = typer.Option(300.0, "--lease-s", min=1.0, help="Lease length; it lapses without heartbeats."),
          holder: str = typer.Option("", "--holder", help="Who holds it (shown on the goal page).")) -> None:
    """Claim the next open goal by hand (a lab started with `lab start --from-queue` does this itself).

    Prints the lease id; `agentlab goals release LEASE_ID` gives the goal back, or it lapses after --lease-s."""
    with server_client() as c:
        lease = c.claim_goal(lease_s=lease_s, goal=goal, benchmark=benchmark, holder=holder)
    if lease is None:
        raise AgentlabError("no open goal" + (f" on {benchmark}" if benchmark else "") + ": add one with `agentlab goals add`")
    console.print(f"goal {lease.goal_id} claimed (attempt {lease.attempt}), lease {lease.id} until "
                  f"{lease.expires_at:%H:%M:%S} UTC: {lease.goal.text}", highlight=False, markup=False)


@app.command("release")
def release(lease_id: str = typer.Argument(..., help="The lease id `goals claim` printed."),
            reason: str = typer.Option("released", "--reason")) -> None:
    """Give a claimed goal back to the queue."""
    with server_client() as c:
        lease = c.release_goal(lease_id, reason)
    console.print(f"lease {lease.id} ended ({lease.end_reason}); goal {lease.goal_id} is {lease.goal.status}")


@app.command("close")
def close(goal_id: str = typer.Argument(..., help="A goal id."),
          reason: str = typer.Option("closed by hand", "--reason", help="Why (shown on the goal page).")) -> None:
    """Close a goal (the lab that set it, or the lab holding it): no lab claims it again."""
    with server_client() as c:
        g = c.close_goal(goal_id, reason)
    console.print(f"goal {g.id} closed: {g.closed_reason}", highlight=False, markup=False)


@app.command("progress")
def progress(goal_id: str = typer.Argument(..., help="A goal id."),
             by: str = typer.Option("index", "--by", help="x axis: index (papers published) or time."),
             png: Path | None = typer.Option(None, "--png", help="Also write both charts to this PNG file."),
             width: int = typer.Option(60, "--width", min=20, max=200, help="Chart width in characters.")) -> None:
    """Best-so-far ranked report-split accuracy after each paper on the goal: the combined line and one line per
    lab, per comparable group (benchmark, subset, model); time to target when the goal has one."""
    from agentlab.cli.goal_charts import duration, text_chart, write_png

    if by not in ("index", "time"):
        raise AgentlabError(f"--by: use index or time, not {by!r}")
    with server_client() as c:
        prog = c.goal_progress(goal_id)
    g = prog.goal
    console.print(f"goal {g.id} ({g.status}): {g.text}", highlight=False, markup=False)
    if not prog.groups:
        console.print(f"no ranked report-split results yet ({prog.papers} paper(s) on the goal)")
    for group in prog.groups:
        console.print(f"\n{group.benchmark} · {group.model} · subset {group.subset or 'all'}", highlight=False, markup=False)
        xmax = prog.papers if by == "index" else prog.span_s
        for row in text_chart(group, by, xmax, g.target, width=width):
            console.print(row, highlight=False, markup=False, soft_wrap=True)
        t = Table("line", "papers", "best", "time to target" if g.target is not None else "last paper")
        for line in group.lines:
            best = max(p.best for p in line.points) if line.points else None
            if g.target is None:
                end = f"#{line.points[-1].index}" if line.points else "-"
            elif line.reached:
                end = f"paper {line.reached.index}, {duration(line.reached.elapsed_s)}"
            else:
                end = "not reached"
            t.add_row(line.lab or "all labs", str(line.papers), _pct(best), end)
        console.print(t)
    if png is not None:
        console.print(f"wrote {write_png(prog, png)}")


STATUSES = ("open", "claimed", "closed")


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.1f}%"


def _label(g: GoalCreate) -> str:
    text = g.text if len(g.text) <= 50 else g.text[:47] + "..."
    extra = "".join([f" [{g.benchmark}]" if g.benchmark else "",
                     f" baseline {g.baseline:.3f}" if g.baseline is not None else ""])
    return f"{text}{extra}"
