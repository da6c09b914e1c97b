"""Run many labs at once as ``agentlab labs run|resume`` and ``agentlab demo --labs N`` do: one preprint server
for all (configured, or a local one), the goals (one goal added once, or a goals file imported into the queue),
one child process per lab (``agentlab.lab.parallel``) watched to its end, and the runs of a stopped parallel run
continued.

Nothing here prints: the caller's ``LabsUI`` gets the messages, the labs' views while they run, and the end.
"""

from __future__ import annotations

import signal
import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agentlab.errors import AgentlabError
from agentlab.lab.launch import Say, configured_key, keep_local_server, say_nothing
from agentlab.lab.state import LabConfig

if TYPE_CHECKING:
    from agentlab.config import Settings
    from agentlab.lab.parallel import LabProcess, LabSlot, LabView, Registry, SharedServer

AGENTLAB = [sys.executable, "-m", "agentlab"]  # how a child lab is started, before its global options


class Board(Protocol):
    """The live view of the labs: redrawn on every poll."""

    def update(self, views: list[LabView]) -> None: ...

    def say(self, text: str) -> None: ...


class LabsUI(Protocol):
    """The caller's side of a parallel run: messages, the live board, the end."""

    def say(self, kind: str, text: str) -> None: ...

    def board(self) -> AbstractContextManager[Board]: ...

    def report(self, views: list[LabView], srv: SharedServer, interrupted: bool) -> None:
        """The labs' end (called while the server is still up): what they published, how to continue."""
        ...


@dataclass
class LabsRequest:
    """What ``labs run`` (and ``demo --labs N``) start: N labs with one LabConfig and one source of goals."""

    n: int
    config: LabConfig
    goal: str | None = None  # one goal for all labs
    goals: list[Any] | None = None  # a goals file's goals, taken from the queue
    server_url: str | None = None
    name: str = "agentlab"
    overrides: dict[str, Any] = field(default_factory=dict)  # settings the children run with (budgets, backend)
    stop_timeout: float = 60.0
    keep_server_s: float = 0.0
    argv_prefix: list[str] = field(default_factory=lambda: list(AGENTLAB))  # `agentlab` with the global options


def run_labs(settings: Settings, req: LabsRequest, ui: LabsUI) -> tuple[list[LabView], bool]:
    """Start N labs on one server (configured or local) and watch them to their end; (the labs' final views,
    whether Ctrl-C stopped them)."""
    from agentlab.lab.parallel import LabProcess, Registry, child_env, plan_labs, start_argv

    if req.n < 1:
        raise AgentlabError(f"give the number of labs to run (1 or more), not {req.n}")
    srv = open_shared_server(settings, req.server_url or settings.server.url, req.name, ui.say)
    try:
        goal_id, n = prepare_goals(srv, req, ui.say)
        slots = plan_labs(settings.workspace, req.name, n)
        lab_config = req.config.model_dump(mode="json", exclude_unset=True)
        Registry(req.name, slots, None if srv.local else srv.url, req.overrides, goal_id,
                 lab_config).save(settings.workspace)
        procs = [LabProcess(s, start_argv(req.argv_prefix, s, srv.url, lab_config, goal_id),
                            child_env(srv.key_for(s.name), req.overrides)) for s in slots]
        return _watch_to_the_end(settings, procs, srv, ui, req.stop_timeout, req.keep_server_s)
    finally:
        srv.close()


def labs_to_resume(settings: Settings, run_ids: list[str] | None,
                   say: Say = say_nothing) -> tuple[Registry | None, list[LabSlot]]:
    """The registry of the last parallel run and the labs to continue: ``run_ids``, else that run's labs."""
    from agentlab.lab.parallel import LabSlot, Registry, log_path

    reg = Registry.load(settings.workspace)
    if not run_ids:
        if reg is None:
            raise AgentlabError(f"no `agentlab labs run` recorded in {settings.workspace}: name the runs to resume "
                                "(`agentlab lab list`)")
        run_ids = [s.run_id for s in reg.labs]
    rows = run_rows(settings, [LabSlot("", rid, "") for rid in run_ids])
    slots = []
    for rid in run_ids:
        slot = reg.slot(rid) if reg else None
        if rows[rid] is None and slot is None:
            raise AgentlabError(f"no lab run {rid!r}: see `agentlab lab list`")
        if rows[rid] is None:
            say("note", f"{slot.name} ({rid}) was stopped before it started: starting it now")
        slots.append(slot or LabSlot(rows[rid].get("lab") or "agentlab", rid, str(log_path(settings.workspace, rid))))
    return reg, slots


def resume_labs(settings: Settings, reg: Registry | None, slots: list[LabSlot], server_url: str | None,
                ui: LabsUI, stop_timeout: float = 60.0, argv_prefix: list[str] = AGENTLAB) -> tuple[list[LabView], bool]:
    """Continue labs in parallel against the server they started on (``server_url`` instead, if given):
    finished runs are shown, not rerun; a local server is started again on the same data."""
    from agentlab.lab.parallel import LabProcess, child_env

    overrides = reg.overrides if reg else {}
    url = server_url or (reg.server_url if reg else settings.server.url)
    srv = open_shared_server(settings, url, reg.name if reg else slots[0].name, ui.say)
    try:
        rows = run_rows(settings, slots)
        procs = [LabProcess(s, resume_argv_for(s, rows[s.run_id], reg, srv.url, argv_prefix),
                            child_env(srv.key_for(s.name), overrides)) for s in slots]
        if all(p.argv is None for p in procs):
            ui.say("info", "every run has finished: nothing to resume")
        return _watch_to_the_end(settings, procs, srv, ui, stop_timeout, 0.0)
    finally:
        srv.close()


def open_shared_server(settings: Settings, url: str | None, coordinator: str, say: Say) -> SharedServer:
    """The server all labs publish to: ``url``, else a local one on ``<workspace>/preprint``."""
    from agentlab.lab.parallel import open_server

    if not url:
        say("progress", f"no preprint server configured: starting a local one on {settings.workspace / 'preprint'} "
                        "for all labs...")
    srv = open_server(settings.workspace, url, configured_key(settings), coordinator)
    say("info", f"preprint server: {srv.url}")
    return srv


def prepare_goals(srv: SharedServer, req: LabsRequest, say: Say = say_nothing) -> tuple[str | None, int]:
    """(the shared goal id or None, how many labs to start): the goal added once, or the goals imported."""
    from agentlab.lab.parallel import add_goal_once, import_goals
    from preprint_server.client import PreprintClient

    with PreprintClient(srv.url, api_key=srv.key_for(req.name)) as client:
        if req.goal:
            bench = req.config.benchmark if "benchmark" in req.config.model_fields_set else None
            g = add_goal_once(client, req.goal, bench)
            say("info", f"goal {g.id} for all {req.n} labs: {g.text}")
            return g.id, req.n
        if req.goals is not None:
            added = import_goals(client, req.goals)
            say("info", f"goals file: {added} goal(s) added, {len(req.goals) - added} already on the server")
        return None, fit_to_queue(client, srv.url, req.n, say)


def fit_to_queue(client: Any, url: str, n: int, say: Say = say_nothing) -> int:
    """Each lab claims a goal of its own: no more labs than open goals."""
    open_goals = len(client.list_goals(status="open"))
    if open_goals == 0:
        raise AgentlabError(f"no open goal in the queue on {url}: add goals with --goals-file or `agentlab goals add`")
    if open_goals < n:
        say("note", f"{open_goals} open goal(s) in the queue for {n} labs (each lab claims a goal of its own): "
                    f"starting {open_goals} lab(s)")
    return min(n, open_goals)


def resume_argv_for(slot: LabSlot, row: dict[str, Any] | None, reg: Registry | None, url: str,
                    argv_prefix: list[str] = AGENTLAB) -> list[str] | None:
    """`lab resume` for a run; None for a finished one; a lab stopped before its run began starts as planned."""
    from agentlab.lab.parallel import FINISHED, resume_argv, start_argv

    if row is None and reg is not None:
        return start_argv(argv_prefix, slot, url, reg.lab_config, reg.goal_id)
    return None if row["status"] in FINISHED else resume_argv(argv_prefix, slot, url)


def run_rows(settings: Settings, slots: list[LabSlot]) -> dict[str, dict[str, Any] | None]:
    """Each lab's run in the lab store (None: not recorded yet)."""
    from agentlab.lab.store import LabStore

    with LabStore(settings.db_path) as store:
        return {s.run_id: store.get_run(s.run_id) for s in slots}


def _watch_to_the_end(settings: Settings, procs: list[LabProcess], srv: SharedServer, ui: LabsUI,
                      stop_timeout: float, keep_server_s: float) -> tuple[list[LabView], bool]:
    views, interrupted = _run_and_watch(settings, procs, ui, stop_timeout)
    ui.report(views, srv, interrupted)
    if srv.local and keep_server_s and not interrupted:
        keep_local_server(srv.url, keep_server_s, ui.say)
    return views, interrupted


def _run_and_watch(settings: Settings, procs: list[LabProcess], ui: LabsUI,
                   stop_timeout: float) -> tuple[list[LabView], bool]:
    """Start the labs (after the shared model servers) and watch them; (final views, interrupted by Ctrl-C)."""
    from agentlab.lab.parallel import LabMonitor, shared_model_specs, shared_models, stop_all, supervise

    for p in procs:
        if p.argv is not None:
            ui.say("info", f"{p.slot.name} {p.slot.run_id}: log {p.slot.log}")
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM stops the labs like Ctrl-C
    monitor = LabMonitor(settings)
    to_run = any(p.argv is not None for p in procs)
    try:
        if to_run and shared_model_specs(settings):
            ui.say("progress", "starting the local model server once for all labs...")
        with shared_models(settings) if to_run else nullcontext(), ui.board() as board:
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
