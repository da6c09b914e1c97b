"""The terminal side of many labs at once, shared by `labs run|resume` and `demo --labs N`: the dashboard, the
summary at the end and the exit code. Starting and watching the labs is the library's
(``agentlab.lab.launch_many``), which calls this module through ``TerminalLabsUI``."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import TYPE_CHECKING

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from agentlab.cli.common import console, get_settings, say, state

if TYPE_CHECKING:
    from agentlab.lab.launch_many import LabsRequest
    from agentlab.lab.parallel import LabView, SharedServer

STATUS_STYLE = {"done": "green", "wrapped_up": "green", "failed": "red", "killed": "red", "interrupted": "yellow"}


def run_many(req: LabsRequest, quiet: bool) -> None:
    """Run the labs with the terminal as their UI; exit 130 after Ctrl-C, 1 when a lab did not finish."""
    from agentlab.lab.launch_many import run_labs

    settings = get_settings(**req.overrides) if req.overrides else get_settings()
    exit_for(*run_labs(settings, replace(req, argv_prefix=argv_prefix()), TerminalLabsUI(quiet)))


def exit_for(views: list[LabView], interrupted: bool) -> None:
    from agentlab.lab.parallel import FINISHED

    if interrupted:
        raise typer.Exit(130)
    if any(v.status not in FINISHED for v in views):
        raise typer.Exit(1)


def argv_prefix() -> list[str]:
    """``python -m agentlab`` with this command's global options (config file, workspace, data, model)."""
    argv = [sys.executable, "-m", "agentlab"]
    if state.config_file:
        argv += ["--config", str(state.config_file)]
    for flag, key in (("--data-dir", "data_dir"), ("--workspace", "workspace"), ("--model", "agents.model")):
        if key in state.overrides:
            argv += [flag, str(state.overrides[key])]
    return argv + (["--debug"] if state.debug else [])


class TerminalLabsUI:
    """``agentlab.lab.launch_many.LabsUI`` on the terminal: messages, the dashboard, the summary."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def say(self, kind: str, text: str) -> None:
        say(kind, text)

    def board(self) -> Dashboard:
        return Dashboard(self.quiet)

    def report(self, views: list[LabView], srv: SharedServer, interrupted: bool) -> None:
        print_summary(views, srv)


class Dashboard:
    """A rich Live table of the labs, redrawn on every poll; with ``quiet``, one line per phase change."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.live: Live | None = None
        self.seen: dict[str, LabView] = {}

    def __enter__(self) -> Dashboard:
        if not self.quiet:
            self.live = Live(_table([]), console=console, refresh_per_second=2)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.live.__exit__(*exc)

    def update(self, views: list[LabView]) -> None:
        from agentlab.lab.parallel import phase_line

        if self.live:
            self.live.update(_table(views))
            return
        for v in views:
            line = phase_line(self.seen.get(v.run_id), v)
            if line:
                console.print(line, highlight=False, markup=False)
            self.seen[v.run_id] = v

    def say(self, text: str) -> None:
        console.print(text, highlight=False)


def _table(views: list[LabView]) -> Table:
    t = Table(title="labs", title_justify="left")
    for col in ("lab", "run", "goal", "phase", "job", "spend", "best dev", "best report", "status"):
        t.add_column(col, overflow="fold")
    for v in views:
        t.add_row(v.name, v.run_id, escape(_short(v.goal, 40) or "-"), v.phase.replace("_", " "), v.job or "-",
                  f"${v.usd:.4f} · {v.tokens:,} tok", _pct(v.best_dev), _pct(v.best_report), _status(v.status))
    return t


def print_summary(views: list[LabView], srv: SharedServer) -> None:
    """The summary table, the papers and goal pages, how to continue the labs that did not finish."""
    from agentlab.lab.parallel import FINISHED

    console.print()
    t = Table(title="summary", title_justify="left")
    for col in ("lab", "run", "status", "paper", "best report", "note"):
        t.add_column(col, overflow="fold")  # run ids in full, never cut short
    for v in views:
        t.add_row(v.name, v.run_id, _status(v.status), v.paper_id or "-", _pct(v.best_report), escape(v.note or ""))
    console.print(t)
    _print_papers(views, srv)
    unfinished = [v for v in views if v.status not in FINISHED]
    if unfinished:
        console.print(f"continue {'them' if len(unfinished) > 1 else 'it'}: agentlab labs resume "
                      + " ".join(v.run_id for v in unfinished) + "  (one run: agentlab lab resume RUN_ID)",
                      highlight=False)
    console.print("logs: " + "  ".join(v.log for v in views), highlight=False)


def _print_papers(views: list[LabView], srv: SharedServer) -> None:
    """The papers published and the goal pages (``/goals/{id}``) on the server."""
    from preprint_server.client import PreprintClient
    from preprint_server.errors import PreprintServerError

    papers = [v for v in views if v.paper_id]
    with PreprintClient(srv.url) as client:
        for v in papers:
            try:
                paper = client.get_paper(v.paper_id)
                title, lab = paper.title, paper.lab  # the server's name for the lab: its API key's
            except PreprintServerError:
                title, lab = "(not readable on the server now)", v.name
            console.print(f"paper {v.paper_id} by {lab}: {escape(title)}  {srv.url}/papers/{v.paper_id}",
                          highlight=False)
    goal_ids = list(dict.fromkeys(v.goal_id for v in views if v.goal_id))
    for gid in goal_ids:
        console.print(f"goal page: {srv.url}/goals/{gid}", highlight=False)
    if srv.local and papers:
        page = f"goals/{goal_ids[0]}" if len(goal_ids) == 1 else ""
        console.print(f"the local server stops with this command; browse later: agentlab server start --data-dir "
                      f"{srv.data_dir} --port 8000, then open http://127.0.0.1:8000/{page}", highlight=False)


def _status(status: str) -> str:
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/]" if style else status


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
