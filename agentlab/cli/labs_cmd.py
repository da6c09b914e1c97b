"""``agentlab labs run|resume``: many labs at once on one preprint server, watched on one dashboard.

The process management, the dashboard's model and the run registry are in ``agentlab/lab/parallel.py``;
this module parses the options, prints, and renders the dashboard (rich).
"""

from __future__ import annotations

import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from agentlab.cli.common import console, err_console, get_settings, state
from agentlab.errors import AgentlabError
from agentlab.lab.parallel import (FINISHED, LabMonitor, LabProcess, LabSlot, LabView, Registry, SharedServer,
                                   add_goal_once, child_env, import_goals, log_path, open_server, phase_line,
                                   plan_labs, resume_argv, shared_model_specs, shared_models, start_argv, stop_all,
                                   supervise)
from agentlab.lab.state import LabConfig

app = typer.Typer(help="Run many labs at once: they share one preprint server, the workspace (jobs, GPUs) and "
                       "one model server, on one dashboard.", no_args_is_help=True)

BACKENDS = ("local", "ray")


@dataclass
class LabsRequest:
    """What `labs run` (and `demo --labs N`) start: N labs with one LabConfig and one source of goals."""

    n: int
    config: LabConfig
    goal: str | None = None  # one goal for all labs
    goals: list[Any] | None = None  # a goals file's goals, taken from the queue
    server_url: str | None = None
    name: str = "agentlab"
    overrides: dict[str, Any] = field(default_factory=dict)
    quiet: bool = False
    stop_timeout: float = 60.0
    keep_server_s: float = 0.0


# -- commands --------------------------------------------------------------------------------------------


RUN_HELP = (
    "Run N labs at once on one preprint server, on one dashboard; Ctrl-C stops them all (resumable).\n\n"
    "Goals: exactly one of --goal TEXT (all labs on one goal), --goals-file FILE or --from-queue (each lab claims "
    "a goal of its own from the server's queue).\n\n"
    "Each lab is a child process with its own run id (`agentlab lab status RUN_ID`) and a log under "
    "<workspace>/logs/labs/. Continue stopped labs with `agentlab labs resume`."
)


@app.command("run", help=RUN_HELP)
def run(
    parallel: int = typer.Option(2, "--parallel", "-n", help="How many labs to run at once (named NAME-1 .. NAME-N)."),
    goal: Optional[str] = typer.Option(None, "--goal", "-g", help="One research goal for every lab: added to the "
                                       "server once, all labs work on the same goal id."),
    goals_file: Optional[Path] = typer.Option(None, "--goals-file", help="Import these goals (YAML or JSONL, "
                                              "as `agentlab goals import` reads); each lab claims one from the queue."),
    from_queue: bool = typer.Option(False, "--from-queue", help="Each lab claims the next open goal from the "
                                    "server's queue (`agentlab goals add`)."),
    server: Optional[str] = typer.Option(None, "--server", help="Preprint server URL (config: server.url); empty = "
                                         "a local server on <workspace>/preprint, one API key per lab."),
    name: str = typer.Option("agentlab", "--name", help="Lab name prefix: the labs are NAME-1 .. NAME-N (on the "
                             "local server each has its own API key; a configured server sees server.api_key's lab)."),
    benchmark: Optional[str] = typer.Option(None, "--benchmark", "-b", help="Benchmark (default: the goal's, else "
                                            "basic_arithmetic)."),
    baseline: str = typer.Option("zero_shot_cot", "--baseline", help="Baseline technique."),
    dev_n: int = typer.Option(20, "--dev-n", help="Problems in the dev split (tuning)."),
    report_n: int = typer.Option(500, "--report-n", help="Most problems in the held-out report split (the "
                                 "budget); each lab sizes it for 80% power to detect a 5-point gain."),
    iterations: int = typer.Option(3, "--iterations", help="Experiment iterations on the dev split."),
    max_answer_tokens: int = typer.Option(512, "--max-answer-tokens", help="Max tokens per answer of the model "
                                          "under study."),
    concurrency: int = typer.Option(8, "--concurrency", help="Requests in flight to the model under study, per lab."),
    allow_code: bool = typer.Option(False, "--allow-code", help="Let the ML engineers write code techniques."),
    max_usd: Optional[float] = typer.Option(None, "--max-usd", help="Agents' LLM budget in USD per lab "
                                            "(budgets.max_usd)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Agents' token budget per lab "
                                             "(budgets.max_tokens)."),
    max_jobs: Optional[int] = typer.Option(None, "--max-jobs", help="Maximum jobs per lab (budgets.max_jobs)."),
    max_wall_minutes: Optional[float] = typer.Option(None, "--max-wall-minutes", help="Wall time per lab "
                                                     "(budgets.max_wall_minutes)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Where the labs' jobs run: local or ray "
                                          "(config jobs.backend); default: as configured."),
    stop_timeout: float = typer.Option(60.0, "--stop-timeout", help="After Ctrl-C, seconds the labs get to stop "
                                       "cleanly before they are killed."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No dashboard: one line per phase change."),
) -> None:
    _check_request(parallel, goal, goals_file, from_queue, backend)
    from agentlab.cli.goals_cmd import read_goals_file
    from agentlab.cli.lab_cmd import _budget_overrides

    goals = read_goals_file(goals_file) if goals_file else None  # the whole file is checked before anything starts
    config = LabConfig(**({"benchmark": benchmark} if benchmark else {}), baseline=baseline, dev_n=dev_n,
                       report_n=report_n, max_iterations=iterations, max_tokens_per_answer=max_answer_tokens,
                       concurrency=concurrency, allow_code_techniques=allow_code)
    overrides = {**_budget_overrides(max_usd, max_tokens, max_jobs, max_wall_minutes),
                 **({"jobs.backend": backend} if backend else {})}
    run_labs(LabsRequest(parallel, config, goal=goal, goals=goals, server_url=server, name=name,
                         overrides=overrides, quiet=quiet, stop_timeout=stop_timeout))


@app.command("resume")
def resume(
    run_ids: Optional[list[str]] = typer.Argument(None, help="Runs to continue (default: the runs of the last "
                                                  "`agentlab labs run`)."),
    server: Optional[str] = typer.Option(None, "--server", help="Publish to this server instead of the runs' own."),
    stop_timeout: float = typer.Option(60.0, "--stop-timeout", help="After Ctrl-C, seconds the labs get to stop "
                                       "cleanly before they are killed."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No dashboard: one line per phase change."),
) -> None:
    """Continue labs in parallel (after Ctrl-C, a crash or a kill), against the server they started on.

    Finished runs are shown, not rerun; finished jobs are not rerun and nothing is published twice. A local
    server started by `labs run` is started again on the same data."""
    base = get_settings()
    reg = Registry.load(base.workspace)
    slots = _resume_slots(base, reg, run_ids)
    overrides = reg.overrides if reg else {}
    settings = get_settings(**overrides) if overrides else base
    url = server or (reg.server_url if reg else settings.server.url)
    srv = _open_server(settings, url, reg.name if reg else slots[0].name)
    try:
        rows = _rows(settings, slots)
        procs = [LabProcess(s, _resume_argv(s, rows[s.run_id], reg, srv.url), child_env(srv.key_for(s.name), overrides))
                 for s in slots]
        if all(p.argv is None for p in procs):
            console.print("every run has finished: nothing to resume")
        views, interrupted = _run_and_watch(settings, procs, quiet, stop_timeout)
        _finish(views, srv, interrupted, 0.0)
    finally:
        srv.close()


@app.command("child", hidden=True)
def child(
    run_id: str = typer.Option(..., "--run-id"),
    server: str = typer.Option(..., "--server"),
    lab_config: str = typer.Option(..., "--lab-config", help="The lab's LabConfig as JSON."),
    goal_id: Optional[str] = typer.Option(None, "--goal-id"),
    from_queue: bool = typer.Option(False, "--from-queue"),
) -> None:
    """One lab of `labs run` (run as a child process): `lab start --quiet` with its whole LabConfig."""
    from agentlab.cli.lab_cmd import run_lab_command

    config = LabConfig.model_validate_json(lab_config)  # only the fields given count as set (benchmark)
    run_lab_command(None, goal_id, False, server, config, {}, quiet=True, run_id=run_id, from_queue=from_queue)


# -- running labs -----------------------------------------------------------------------------------------


def run_labs(req: LabsRequest) -> None:
    """Start N labs on one server (configured or local), watch them, print the summary; exit 1 if one failed."""
    if req.n < 1:
        raise AgentlabError(f"give the number of labs to run (1 or more), not {req.n}")
    settings = get_settings(**req.overrides) if req.overrides else get_settings()
    srv = _open_server(settings, req.server_url or settings.server.url, req.name)
    try:
        goal_id, n = _prepare_goals(srv, req)
        slots = plan_labs(settings.workspace, req.name, n)
        lab_config = req.config.model_dump(mode="json", exclude_unset=True)
        Registry(req.name, slots, None if srv.local else srv.url, req.overrides, goal_id,
                 lab_config).save(settings.workspace)
        procs = [LabProcess(s, start_argv(_prefix(), s, srv.url, lab_config, goal_id),
                            child_env(srv.key_for(s.name), req.overrides)) for s in slots]
        views, interrupted = _run_and_watch(settings, procs, req.quiet, req.stop_timeout)
        _finish(views, srv, interrupted, req.keep_server_s)
    finally:
        srv.close()


def _check_request(parallel: int, goal: str | None, goals_file: Path | None, from_queue: bool,
                   backend: str | None) -> None:
    if parallel < 1:
        raise AgentlabError(f"--parallel: give the number of labs to run (1 or more), not {parallel}")
    given = [flag for flag, value in (("--goal", goal), ("--goals-file", goals_file), ("--from-queue", from_queue))
             if value]
    if len(given) != 1:
        raise AgentlabError("give exactly one source of goals: --goal TEXT, --goals-file FILE or --from-queue"
                            + (f" (got {' and '.join(given)})" if given else ""))
    if backend is not None and backend not in BACKENDS:
        raise AgentlabError(f"--backend: use local or ray, not {backend!r}")


def _open_server(settings, url: str | None, coordinator: str) -> SharedServer:
    key = settings.server.api_key.get_secret_value() if settings.server.api_key else None
    if not url:
        console.print(f"[dim]no preprint server configured: starting a local one on {settings.workspace / 'preprint'} "
                      "for all labs...[/]")
    srv = open_server(settings.workspace, url, key, coordinator)
    console.print(f"preprint server: {srv.url}", highlight=False)
    return srv


def _prepare_goals(srv: SharedServer, req: LabsRequest) -> tuple[str | None, int]:
    """(the shared goal id or None, how many labs to start): the goal added once, or the goals imported."""
    from preprint_server.client import PreprintClient

    with PreprintClient(srv.url, api_key=srv.key_for(req.name)) as client:
        if req.goal:
            bench = req.config.benchmark if "benchmark" in req.config.model_fields_set else None
            g = add_goal_once(client, req.goal, bench)
            console.print(f"goal {g.id} for all {req.n} labs: {escape(g.text)}", highlight=False)
            return g.id, req.n
        if req.goals is not None:
            added = import_goals(client, req.goals)
            console.print(f"goals file: {added} goal(s) added, {len(req.goals) - added} already on the server")
        return None, _fit_to_queue(client, srv.url, req.n)


def _fit_to_queue(client, url: str, n: int) -> int:
    """Each lab claims a goal of its own: no more labs than open goals."""
    open_goals = len(client.list_goals(status="open"))
    if open_goals == 0:
        raise AgentlabError(f"no open goal in the queue on {url}: add goals with --goals-file or `agentlab goals add`")
    if open_goals < n:
        err_console.print(f"[yellow]note:[/] {open_goals} open goal(s) in the queue for {n} labs (each lab claims a "
                          f"goal of its own): starting {open_goals} lab(s)")
    return min(n, open_goals)


def _prefix() -> list[str]:
    """``python -m agentlab`` with this command's global options (config file, workspace, data, model)."""
    argv = [sys.executable, "-m", "agentlab"]
    if state.config_file:
        argv += ["--config", str(state.config_file)]
    for flag, key in (("--data-dir", "data_dir"), ("--workspace", "workspace"), ("--model", "agents.model")):
        if key in state.overrides:
            argv += [flag, str(state.overrides[key])]
    return argv + (["--debug"] if state.debug else [])


def _run_and_watch(settings, procs: list[LabProcess], quiet: bool, stop_timeout: float) -> tuple[list[LabView], bool]:
    """Start the labs (after the shared model servers) and watch them; (final views, interrupted by Ctrl-C)."""
    for p in procs:
        if p.argv is not None:
            console.print(f"{p.slot.name} {p.slot.run_id}: log {p.slot.log}", highlight=False)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM stops the labs like Ctrl-C
    monitor = LabMonitor(settings)
    to_run = any(p.argv is not None for p in procs)
    try:
        if to_run and shared_model_specs(settings):
            console.print("[dim]starting the local model server once for all labs...[/]")
        with shared_models(settings) if to_run else nullcontext(), Dashboard(quiet) as board:
            try:
                for p in procs:
                    p.start()
                return supervise(procs, monitor, board.update), False
            except KeyboardInterrupt:
                board.say(f"stopping {sum(p.returncode is None for p in procs)} lab(s) (up to {stop_timeout:g} s; "
                          "Ctrl-C again kills them now)...")
                stop_all(procs, stop_timeout)
                views = [monitor.view(p.slot, p.returncode) for p in procs]
                board.update(views)
                return views, True
            finally:
                if any(p.returncode is None for p in procs):  # an unexpected error: no lab outlives the command
                    stop_all(procs, stop_timeout)
    finally:
        signal.signal(signal.SIGTERM, previous)
        monitor.close()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _resume_slots(settings, reg: Registry | None, run_ids: list[str] | None) -> list[LabSlot]:
    if not run_ids:
        if reg is None:
            raise AgentlabError(f"no `agentlab labs run` recorded in {settings.workspace}: name the runs to resume "
                                "(`agentlab lab list`)")
        run_ids = [s.run_id for s in reg.labs]
    rows = _rows(settings, [LabSlot("", rid, "") for rid in run_ids])
    slots = []
    for rid in run_ids:
        slot = reg.slot(rid) if reg else None
        if rows[rid] is None and slot is None:
            raise AgentlabError(f"no lab run {rid!r}: see `agentlab lab list`")
        if rows[rid] is None:
            err_console.print(f"[yellow]note:[/] {slot.name} ({rid}) was stopped before it started: starting it now")
        slots.append(slot or LabSlot(rows[rid].get("lab") or "agentlab", rid, str(log_path(settings.workspace, rid))))
    return slots


def _resume_argv(slot: LabSlot, row: dict[str, Any] | None, reg: Registry | None, url: str) -> list[str] | None:
    """`lab resume` for a run; None for a finished one; a lab stopped before its run began starts as planned."""
    if row is None and reg is not None:
        return start_argv(_prefix(), slot, url, reg.lab_config, reg.goal_id)
    return None if row["status"] in FINISHED else resume_argv(_prefix(), slot, url)


def _rows(settings, slots: list[LabSlot]) -> dict[str, dict[str, Any] | None]:
    from agentlab.lab.store import LabStore

    with LabStore(settings.db_path) as store:
        return {s.run_id: store.get_run(s.run_id) for s in slots}


# -- dashboard and summary --------------------------------------------------------------------------------


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


STATUS_STYLE = {"done": "green", "wrapped_up": "green", "failed": "red", "killed": "red", "interrupted": "yellow"}


def _table(views: list[LabView]) -> Table:
    t = Table(title="labs", title_justify="left")
    for col in ("lab", "run", "goal", "phase", "job", "spend", "best dev", "best report", "status"):
        t.add_column(col, overflow="fold")
    for v in views:
        t.add_row(v.name, v.run_id, escape(_short(v.goal, 40) or "-"), v.phase.replace("_", " "), v.job or "-",
                  f"${v.usd:.4f} · {v.tokens:,} tok", _pct(v.best_dev), _pct(v.best_report), _status(v.status))
    return t


def _finish(views: list[LabView], srv: SharedServer, interrupted: bool, keep_server_s: float) -> None:
    """The summary table, the papers and goal pages, how to continue; exit 130 after Ctrl-C, 1 if a lab failed."""
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
    if srv.local and keep_server_s and not interrupted:
        console.print(f"the local server stays up at {srv.url} for {keep_server_s:.0f}s (Ctrl-C to stop)")
        try:
            time.sleep(keep_server_s)
        except KeyboardInterrupt:
            pass
    if interrupted:
        raise typer.Exit(130)
    if unfinished:
        raise typer.Exit(1)


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
