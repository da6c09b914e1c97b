"""The terminal side of one lab run, shared by `lab start|resume`, `demo` and each lab of `labs run`: options whose
defaults and help come from LabConfig, the live view, the copilot's prompts and the outcome. The run itself is
the library's (``agentlab.lab.launch``), which calls this module through ``TerminalLabUI``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from agentlab.cli.common import console, get_settings, say
from agentlab.lab.state import PHASES, LabConfig

if TYPE_CHECKING:
    from agentlab.config import Settings
    from agentlab.lab.launch import Events, LabRequest
    from agentlab.lab.run import LabOutcome


def lab_option(name: str, *flags: str, help: str | None = None, **kw: Any) -> Any:
    """A typer option for LabConfig's field ``name``: its default and, unless ``help`` is given, its help are the
    field's (one place for both)."""
    info = LabConfig.model_fields[name]
    text = help or info.description or ""
    return typer.Option(info.default, *flags, help=text[:1].upper() + text[1:] + ("." if text else ""), **kw)


def run_one(req: LabRequest, quiet: bool, overrides: dict[str, Any] | None = None) -> LabOutcome:
    """Run a lab with the terminal as its UI; exit 1 when it failed."""
    from agentlab.lab.launch import run_lab

    settings = get_settings(**overrides) if overrides else get_settings()
    outcome = run_lab(settings, req, TerminalLabUI(settings, quiet))
    if outcome.status == "failed":
        raise typer.Exit(1)
    return outcome


class TerminalLabUI:
    """``agentlab.lab.launch.LabUI`` on the terminal: messages, the live panel, prompts, the outcome."""

    def __init__(self, settings: Settings, quiet: bool):
        self.settings, self.quiet = settings, quiet
        self.display: LabDisplay | None = None

    def say(self, kind: str, text: str) -> None:
        say(kind, text)

    @contextmanager
    def watch(self, goal: str) -> Iterator[Events]:
        self.display = LabDisplay(goal, quiet=self.quiet)
        with self.display:
            yield self.display.on_event

    def decide(self, payload: dict[str, Any]) -> dict[str, Any]:
        live = self.display.live if self.display else None
        if live:
            live.stop()
        decision = ask_human(payload)
        if live:
            live.start()
        return decision

    def report(self, outcome: LabOutcome, data_dir: Path | None) -> None:
        print_outcome(outcome, data_dir, self.settings)


class LabDisplay:
    """Rich live view: phases, live cost, the running experiment's accuracy, the latest notes."""

    def __init__(self, goal: str, quiet: bool = False):
        self.goal, self.quiet = goal, quiet
        self.phase, self.done_phases = "literature_review", set()
        self.usd, self.tokens = 0.0, 0
        self.job: dict[str, Any] = {}
        self.results: list[str] = []
        self.notes: list[str] = []
        self.run_id = ""
        self.live = Live(self.render(), console=console, refresh_per_second=4, transient=False) if not quiet else None

    def __enter__(self) -> LabDisplay:
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.live.update(self.render())
            self.live.__exit__(*exc)

    def render(self) -> Panel:
        t = Table.grid(padding=(0, 1))
        for p in PHASES[:-1]:
            mark = "[green]✓[/]" if p in self.done_phases and p != self.phase else ("[yellow]▶[/]" if p == self.phase else "·")
            t.add_row(mark, p.replace("_", " "))
        side = Table.grid(padding=(0, 1))
        side.add_row("[b]cost[/]", f"${self.usd:.4f} · {self.tokens:,} tokens")
        if self.job:
            j = self.job
            acc = f"{j['correct'] / j['done']:.1%}" if j.get("done") else "-"
            side.add_row("[b]job[/]", f"{j.get('key', '')} {j.get('done', 0)}/{j.get('total', '?')} · accuracy {acc}")
        for r in self.results[-4:]:
            side.add_row("", r)
        for n in self.notes[-3:]:
            side.add_row("[dim]note[/]", f"[dim]{n[:110]}[/]")
        grid = Table.grid(padding=(0, 3))
        grid.add_row(t, side)
        return Panel(grid, title=f"lab {self.run_id}", subtitle=self.goal[:80])

    def on_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "run":
            self.run_id = data["run_id"]
        elif kind == "phase":
            if self.phase != data["phase"]:
                self.done_phases.add(self.phase)
            self.phase = data["phase"]
        elif kind == "node_done":
            self.usd, self.tokens = data.get("usd", self.usd), data.get("tokens", self.tokens)
        elif kind == "job_started":
            self.job = {"key": data["key"], "done": 0, "correct": 0, "total": "?"}
        elif kind == "job_progress":
            self.job = {"key": data["key"], "done": data["done"], "correct": data["correct"], "total": data["total"]}
        elif kind in ("job_finished", "job_reused"):
            acc = data.get("accuracy")
            self.results.append(f"{data['key']}: " + (f"{acc:.1%}" if acc is not None else f"[red]{data.get('status')}[/]")
                                + (" (reused)" if kind == "job_reused" else ""))
        elif kind == "note":
            self.notes.append(data["text"])
        elif kind == "plan_sizing" and not self.quiet:  # printed whole: the live panel shows notes cut short
            console.print(f"[b]plan[/] {data['text']}")
        if self.live:
            self.live.update(self.render())
        elif kind in ("phase", "job_finished", "stopped") and not self.quiet:
            console.print(f"[{kind}] {data}")


def ask_human(payload: dict[str, Any]) -> dict[str, Any]:
    """Show the plan or the report and take approve / edit / feedback (/ reject) from the terminal."""
    from rich.markdown import Markdown

    if payload.get("kind") == "plan":
        plan = payload.get("plan") or {}
        shown = {k: plan.get(k) for k in ("hypothesis", "techniques", "rationale", "benchmark", "baseline",
                                          "dev_n", "report_n", "min_gain")}
        sizing = (plan.get("sizing") or {}).get("text", "")
        console.print(Panel(json.dumps(shown, indent=2) + f"\n\n{sizing}", title="research plan (copilot)"))
        action = typer.prompt("approve / edit / feedback", default="approve").strip().lower()
        if action.startswith("e"):
            hyp = typer.prompt("hypothesis", default=plan.get("hypothesis", ""))
            techs = typer.prompt("techniques (comma-separated)", default=",".join(plan.get("techniques", [])))
            return {"action": "edit", "plan": {"hypothesis": hyp, "techniques": [t.strip() for t in techs.split(",") if t.strip()]}}
        if action.startswith("f"):
            return {"action": "feedback", "text": typer.prompt("feedback")}
        return {"action": "approve"}
    console.print(Panel(Markdown(payload.get("markdown", "")[:4000]), title=f"report: {payload.get('title', '')}"))
    console.print(f"full report: {payload.get('path')}")
    action = typer.prompt("approve / edit / feedback / reject", default="approve").strip().lower()
    if action.startswith("e"):
        edited = typer.edit(payload.get("markdown", ""), extension=".md")
        return {"action": "edit", "markdown": edited} if edited else {"action": "approve"}
    if action.startswith("f"):
        return {"action": "feedback", "text": typer.prompt("feedback")}
    if action.startswith("r"):
        return {"action": "reject"}
    return {"action": "approve"}


def agent_calls_line(rows: list[dict[str, Any]]) -> str:
    """Per role: calls, and how structured answers went (grammar-constrained, re-asks, fallbacks to a default)."""
    return "; ".join(f"{r['key']} {r['calls']} calls ({r['grammar'] or 0} grammar, {r['reasks'] or 0} re-asks, "
                     f"{r['fallbacks'] or 0} fallbacks)" for r in rows)


def print_outcome(outcome: LabOutcome, data_dir: Path | None = None, settings: Settings | None = None) -> None:
    st = outcome.state
    pub = st.get("publication") or {}
    final = st.get("final") or {}
    console.print(f"\n[b]run[/] {outcome.run_id}: {outcome.status}"
                  + (f" ([yellow]{st.get('stop_reason')}[/])" if st.get("stop_reason") else ""))
    if st.get("failure"):
        console.print(f"  [red]failed[/]: {escape(st['failure'])}")
        if not pub:
            console.print("  nothing was published (a run without report-split results is not a paper; "
                          "--publish-failures publishes it marked as a failed run)")
    for key in ("technique", "baseline"):
        r = final.get(key)
        if r:
            console.print(f"  {key:9} {r['technique']}: {r['correct']}/{r['n']} = {r['accuracy']:.1%} "
                          f"[{r['ci_low']:.1%}, {r['ci_high']:.1%}] (record {r['record_id']})")
    if settings is not None:
        from agentlab.llm.usage import UsageLedger

        with UsageLedger(settings.db_path) as ledger:
            rows = ledger.summary(group_by="role", run_id=outcome.run_id)
        if rows:
            console.print(f"  agents: {agent_calls_line(rows)}")
    files = (st.get("report") or {}).get("files") or {}
    if files:
        console.print(f"  report: {files.get('markdown')}  latex: {files.get('latex')}"
                      + (f"  pdf: {files['pdf']}" if files.get("pdf") else ""))
    if pub.get("status") == "published":
        console.print(f"  [green]published[/] paper {pub.get('paper_id')}: {pub.get('url')}")
    elif pub.get("status") == "queued":
        console.print(f"  [yellow]server unreachable[/]: kept in the outbox {pub.get('outbox')} "
                      "(published by `agentlab lab publish-pending` or the next run)")
    if data_dir:  # the run's local server stops with the command: how to read the paper afterwards
        pid = pub.get("paper_id")
        console.print(f"  read it: agentlab server start --data-dir {data_dir} --port 8000, then open "
                      + (f"http://127.0.0.1:8000/papers/{pid}" if pid else "http://127.0.0.1:8000/")
                      + (f"  (or: AGENTLAB_SERVER__URL=http://127.0.0.1:8000 agentlab papers show {pid})" if pid else ""))
