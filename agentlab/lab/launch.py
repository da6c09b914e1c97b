"""Run one lab as ``agentlab lab start|resume`` and ``agentlab demo`` do, and each lab of ``agentlab labs run`` (a
child process): the preprint server (the configured one, or a local one started for the run), the goal (given as
text, taken from the server by id, or claimed from the queue under a lease), the run driven to its end through
the copilot's pauses, and a claimed goal given back when it ends.

Nothing here prints: the caller's ``LabUI`` gets the messages, the lab's events, the copilot's questions and
the outcome (the terminal's is ``agentlab/cli/lab_view.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agentlab.errors import AgentlabError
from agentlab.lab.goal_queue import claim_from_queue, reclaim_goal, release_goal
from agentlab.lab.state import LabConfig

if TYPE_CHECKING:
    from agentlab.config import Settings
    from agentlab.lab.parallel import SharedServer
    from agentlab.lab.run import LabOutcome

Say = Callable[[str, str], None]
"""``say(kind, text)``: a message for the user; kind "info", "progress" (a step under way) or "note" (a warning)."""

Events = Callable[[str, dict[str, Any]], None]


def say_nothing(kind: str, text: str) -> None:
    """The ``Say`` of a caller that shows no messages."""


class LabUI(Protocol):
    """The caller's side of a lab run: what it shows and what it asks."""

    def say(self, kind: str, text: str) -> None: ...

    def watch(self, goal: str) -> AbstractContextManager[Events]:
        """The live view of the run while it lasts; the context's value receives the lab's events."""
        ...

    def decide(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The copilot's decision on a paused run's plan or report: approve, edit, feedback (or reject)."""
        ...

    def report(self, outcome: LabOutcome, data_dir: Path | None) -> None:
        """The ended run; ``data_dir``: the data of the local server it published to (None: a configured one)."""
        ...


@dataclass
class LabRequest:
    """One lab to start: its config and where its goal comes from (text, a goal id on the server, or the queue)."""

    config: LabConfig
    goal: str | None = None
    goal_id: str | None = None
    from_queue: bool = False  # claim the next open goal; the lease is renewed while the lab runs
    copilot: bool = False  # ask the caller (LabUI.decide) after the plan and before publishing
    server_url: str | None = None  # default: server.url, else a local server for this run
    run_id: str | None = None  # default: a new one
    keep_server_s: float = 0.0  # keep a local server up this long after a run that did not fail


@dataclass
class _Goal:
    text: str
    goal_id: str | None = None
    benchmark: str | None = None  # the goal's benchmark on the server, the lab's unless one was given
    hold: Any = None  # the lease on a goal claimed from the queue


def run_lab(settings: Settings, req: LabRequest, ui: LabUI) -> LabOutcome:
    """Start a lab and drive it to its end; a run that fails is returned (status ``failed``), not raised."""
    from agentlab.bench import DEFAULT_BENCHMARK
    from agentlab.lab.run import new_run_id, start_lab

    with lab_server(settings, req.server_url, req.config.lab_name, ui.say) as srv:
        key = srv.key_for(req.config.lab_name)
        run_id = req.run_id or (new_run_id() if req.from_queue else None)  # the queue names the holder
        goal = _resolve_goal(settings, srv.url, key, req, run_id, ui.say)
        config = req.config.model_copy()
        if "benchmark" not in config.model_fields_set:
            config.benchmark = goal.benchmark or DEFAULT_BENCHMARK
        config.server_url, config.copilot = srv.url, req.copilot

        def first(on_event: Events) -> LabOutcome:
            return start_lab(settings, goal.text, config, goal_id=goal.goal_id, run_id=run_id, on_event=on_event,
                             server_key=key, from_queue=req.from_queue)

        outcome = _holding(goal.hold, ui.say, lambda: _watched(settings, srv, key, goal.text, first, ui, req.copilot))
        if outcome.status != "failed" and srv.local and req.keep_server_s:
            keep_local_server(srv.url, req.keep_server_s, ui.say, indent="  ")
        return outcome


def resume_run(settings: Settings, run_id: str, server_url: str | None, ui: LabUI) -> LabOutcome:
    """Continue a run after a crash, a kill or a copilot pause, on ``server_url`` or the configured server (else a
    local one); a run started from the queue claims its goal back first and runs on without a lease when
    another lab holds it."""
    from agentlab.lab.run import resume_lab
    from agentlab.lab.store import LabStore

    with LabStore(settings.db_path) as store:
        row = store.get_run(run_id)
    if row is None:
        raise AgentlabError(f"no lab run {run_id!r}: see `agentlab lab list`")
    saved = json.loads(row.get("config") or "{}")
    lab = saved.get("lab") or {}
    lab_name = lab.get("lab_name", "agentlab")
    with lab_server(settings, server_url, lab_name, ui.say) as srv:
        key = srv.key_for(lab_name)
        hold = None
        if saved.get("from_queue") and saved.get("goal_id") and row["status"] not in ("done", "wrapped_up"):
            hold = reclaim_goal(settings, srv.url, key, saved["goal_id"], run_id, ui.say)

        def first(on_event: Events) -> LabOutcome:
            return resume_lab(settings, run_id, on_event=on_event, server_key=key, server_url=srv.url)

        return _holding(hold, ui.say, lambda: _watched(settings, srv, key, row["goal"], first, ui,
                                                       bool(lab.get("copilot"))))


@contextmanager
def lab_server(settings: Settings, url: str | None, lab_name: str, say: Say) -> Iterator[SharedServer]:
    """The server a lab publishes to: ``url`` or server.url, else a local one for this run (stopped after it)."""
    from agentlab.lab.parallel import open_server

    url = url or settings.server.url
    if not url:
        say("progress", "no preprint server configured: starting a local one for this run...")
    srv = open_server(settings.workspace, url, configured_key(settings), lab_name)
    try:
        yield srv
    finally:
        srv.close()


def configured_key(settings: Settings) -> str | None:
    """The lab's API key for the configured server (server.api_key)."""
    return settings.server.api_key.get_secret_value() if settings.server.api_key else None


def keep_local_server(url: str, seconds: float, say: Say, indent: str = "") -> None:
    """Keep a local server up after the run so its papers can be read; Ctrl-C ends the wait."""
    say("info", f"{indent}the local server stays up at {url} for {seconds:.0f}s (Ctrl-C to stop)")
    try:
        time.sleep(seconds)
    except KeyboardInterrupt:
        pass


def _resolve_goal(settings: Settings, url: str, key: str | None, req: LabRequest, run_id: str | None,
                  say: Say) -> _Goal:
    """The run's goal: claimed from the queue, read from the server by id, or the text given."""
    if req.from_queue:
        hold = claim_from_queue(settings, url, key, run_id, say)
        return _Goal(hold.goal.text, hold.goal_id, hold.goal.benchmark, hold)
    if req.goal_id is not None:
        from preprint_server.client import PreprintClient

        with PreprintClient(url, api_key=key) as client:
            goals = {str(g.id): g for g in client.list_goals()}
        g = goals.get(str(req.goal_id))
        if g is None:
            raise AgentlabError(f"no goal {req.goal_id} on {url}: see `agentlab goals list`")
        return _Goal(g.text, req.goal_id, g.benchmark)
    if not req.goal:
        raise AgentlabError("give a research goal: --goal \"...\", --goal-id N or --from-queue")
    return _Goal(req.goal)


def _holding(hold: Any, say: Say, run: Callable[[], LabOutcome]) -> LabOutcome:
    """``run()`` while holding a goal claimed from the queue (if any), then give it back saying how the run ended."""
    released = "interrupted"
    try:
        outcome = run()
        released = outcome.status if outcome.status != "paused" else "interrupted"
        return outcome
    except Exception as exc:
        released = f"failed: {type(exc).__name__}: {exc}"
        raise
    finally:
        if hold is not None:
            release_goal(hold, released, say)


def _watched(settings: Settings, srv: SharedServer, key: str | None, goal: str,
             first: Callable[[Events], LabOutcome], ui: LabUI, copilot: bool) -> LabOutcome:
    """The run shown live from its first step to its end, each pause decided by the copilot (or approved)."""
    from agentlab.lab.run import resume_lab

    with ui.watch(goal) as on_event:
        outcome = first(on_event)
        while outcome.status == "paused":
            decision = ui.decide(outcome.interrupt or {}) if copilot or outcome.interrupt else {"action": "approve"}
            outcome = resume_lab(settings, outcome.run_id, resume=decision, on_event=on_event, server_key=key,
                                 server_url=srv.url)
    ui.report(outcome, srv.data_dir)
    return outcome


def demo_config(**kw: Any) -> LabConfig:
    """The demo's sizes: every phase runs for real with the embedded 135M model in a few minutes on 2 cores.

    Where a demo's time goes is the agents' LLM calls (llama.cpp, ~100 tok/s on 2 cores), mostly prompt
    processing: one plan turn, one experiment iteration, half-length context in the agents' prompts
    (``context_scale``), short answers of the model under study (64 tokens), tiny splits, one literature
    paper, and a revision round only for a clearly weak draft (mean review score below 4). Its report split
    keeps its size (no power sizing), no confirmation or ablation runs, and its paper says it is a demo-size run."""
    base: dict[str, Any] = dict(benchmark="basic_arithmetic", dev_n=3, report_n=5, max_iterations=1,
                                max_tokens_per_answer=64, concurrency=4, max_chains=2, literature_top_n=1,
                                plan_turns=1, lab_name="demo-lab", max_fix_attempts=1, review_threshold=4.0,
                                context_scale=0.5, demo=True, confirm_n=0, ablate=False)
    base.update(kw)
    return LabConfig(**base)
