"""Start, resume and inspect lab runs: builds the runtime context, runs the graph, reports events.

``start_lab`` and ``resume_lab`` return a ``LabOutcome``: ``done`` (published or queued in the outbox),
``wrapped_up`` (a budget stopped it early; the report says so), or ``paused`` (copilot: the
``interrupt`` payload is in ``outcome.interrupt``; call ``resume_lab(..., resume=decision)``).
A run killed at any point continues with ``resume_lab(settings, run_id)``.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import litellm
from langgraph.types import Command

from agentlab.config import Settings
from agentlab.errors import AgentlabError
from agentlab.lab.context import Event, LabContext
from agentlab.lab.experiments import Experiments
from agentlab.lab.graph import build_graph, checkpointer_for
from agentlab.lab.outbox import Outbox
from agentlab.lab.preflight import run_preflight
from agentlab.lab.publishing import Publisher
from agentlab.lab.state import LabConfig
from agentlab.lab.store import LabStore
from agentlab.lab.view import LabView
from agentlab.llm.gateway import BASE_CONTEXT_TOKENS, Gateway, context_window
from agentlab.llm.serving import is_gguf
from agentlab.llm.usage import UsageLedger
from agentlab.procs import pid_alive

log = logging.getLogger(__name__)


class LabRunError(AgentlabError):
    pass


def new_run_id() -> str:
    return time.strftime("lab-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


@dataclass
class LabOutcome:
    run_id: str
    status: str  # done | wrapped_up | paused | failed
    state: dict[str, Any] = field(default_factory=dict)
    interrupt: dict[str, Any] | None = None
    wall_s: float = 0.0

    @property
    def publication(self) -> dict[str, Any]:
        """Where the report went (stored form; {} when the run did not get that far)."""
        return LabView.of(self.state).publication.dump()


def start_lab(settings: Settings, goal: str, config: LabConfig, *, goal_id: str | None = None,
              run_id: str | None = None, on_event: Event | None = None, gateway: Any = None,
              endpoint: Any = None, server_key: str | None = None, from_queue: bool = False,
              scheduler: Any = None) -> LabOutcome:
    """``from_queue``: the goal was claimed from the server's queue (``lab resume`` claims it back).
    ``scheduler``: a ``LocalScheduler`` shared by several labs in this process (the run cancels only its own
    jobs on it when it ends); None = the run's own scheduler."""
    run_id = run_id or new_run_id()
    saved = {"lab": config.model_dump(), "goal_id": goal_id, "from_queue": from_queue}
    with LabStore(settings.db_path) as store:
        store.create_run(run_id, goal, goal_id=goal_id, lab=config.lab_name, config=json.dumps(saved), pid=os.getpid())
    return _execute(settings, run_id, config, _initial(run_id, goal, goal_id), goal_id, on_event, gateway, endpoint,
                    server_key, scheduler)


def _initial(run_id: str, goal: str, goal_id: str | None) -> dict[str, Any]:
    return {"run_id": run_id, "goal": goal, "goal_id": goal_id, "phase": "literature_review",
            "started_at": time.time(), "experiments": [], "notes": [], "human_feedback": [], "stop_reason": None,
            "revised": False}


def _has_checkpoint(settings: Settings, run_id: str) -> bool:
    saver = checkpointer_for(settings)
    try:
        return saver.get_tuple({"configurable": {"thread_id": run_id}}) is not None
    finally:
        saver.conn.close()


def resume_lab(settings: Settings, run_id: str, *, resume: Any = None, on_event: Event | None = None,
               gateway: Any = None, endpoint: Any = None, server_key: str | None = None,
               server_url: str | None = None, scheduler: Any = None) -> LabOutcome:
    with LabStore(settings.db_path) as store:
        row = store.get_run(run_id)
    if row is None:
        raise LabRunError(f"no lab run {run_id!r} in {settings.db_path}: see `agentlab lab list`")
    if row["status"] == "running" and row.get("pid") not in (None, os.getpid()) and pid_alive(row["pid"]):
        raise LabRunError(f"lab run {run_id} is still running (pid {row['pid']}); stop it before resuming")
    saved = json.loads(row.get("config") or "{}")
    config = LabConfig.model_validate(saved.get("lab") or {})
    if server_url:
        config.server_url = server_url
    inp = Command(resume=resume) if resume is not None else None
    if inp is None and not _has_checkpoint(settings, run_id):  # stopped before its first step (preflight): start it
        inp = _initial(run_id, row["goal"], saved.get("goal_id"))
    return _execute(settings, run_id, config, inp, saved.get("goal_id"), on_event, gateway, endpoint, server_key,
                    scheduler)


def _execute(settings: Settings, run_id: str, config: LabConfig, inp: Any, goal_id: str | None,
             on_event: Event | None, gateway: Any, endpoint: Any, server_key: str | None,
             scheduler: Any = None) -> LabOutcome:
    started = time.perf_counter()
    ctx = _context(settings, run_id, config, goal_id, on_event, gateway, endpoint, server_key, scheduler)
    saver = checkpointer_for(settings)
    graph = build_graph(saver)
    cfg = {"configurable": {"thread_id": run_id}, "recursion_limit": 200}
    ctx.store.update_run(run_id, pid=os.getpid(), status="running")
    ctx.emit("run", run_id=run_id, out_dir=str(ctx.out_dir))
    try:
        _flush_outbox(ctx)
        run_preflight(ctx)  # before the first LLM call: stop in seconds, naming the fix
        for chunk in graph.stream(inp, cfg, context=ctx, stream_mode="updates"):
            for node, update in chunk.items():
                if node == "__interrupt__":
                    continue
                usd, tokens = _spent(ctx.gateway, settings, run_id)
                ctx.emit("node_done", node=node, usd=usd, tokens=tokens,
                         update=update if isinstance(update, dict) else {})
        snap = graph.get_state(cfg)
        values = dict(snap.values)
        if snap.interrupts:
            ctx.store.update_run(run_id, status="paused")
            return LabOutcome(run_id, "paused", values, snap.interrupts[0].value, time.perf_counter() - started)
        view = LabView.of(values)
        status = "failed" if view.failure else "wrapped_up" if view.stop_reason else "done"
        ctx.store.update_run(run_id, status=status, phase="done", note=view.failure)
        return LabOutcome(run_id, status, values, None, time.perf_counter() - started)
    except BaseException as exc:
        ctx.store.update_run(run_id, status="failed", note=f"{type(exc).__name__}: {exc}"[:500])
        raise
    finally:
        ctx.save_elapsed()
        ctx.experiments.close()
        if gateway is None:  # the gateway this session made
            ctx.gateway.close()
        ctx.publisher.close()
        saver.conn.close()
        ctx.store.close()


def _context(settings: Settings, run_id: str, config: LabConfig, goal_id: str | None, on_event: Event | None,
             gateway: Any, endpoint: Any, server_key: str | None, scheduler: Any = None) -> LabContext:
    """This session's runtime context: the gateway, experiments, publisher and store of the run."""
    config = sized_for_agents(settings, config)
    store = LabStore(settings.db_path)
    gw = gateway or Gateway(settings, lab=config.lab_name, run_id=run_id)
    experiments = Experiments(settings, config, run_id, config.lab_name, endpoint, scheduler=scheduler)
    key = server_key or (settings.server.api_key.get_secret_value() if settings.server.api_key else None)
    publisher = Publisher(config.server_url, key, Outbox(settings.workspace), config.lab_name, goal_id)
    row = store.get_run(run_id) or {}
    return LabContext(settings=settings, run_id=run_id, config=config, gateway=gw, store=store,
                      experiments=experiments, publisher=publisher, out_dir=settings.workspace / "labs" / run_id,
                      on_event=on_event, wall_before=float(row.get("wall_s") or 0.0))


def sized_for_agents(settings: Settings, config: LabConfig) -> LabConfig:
    """``config`` with what the agents' model decides filled in where left empty: the context scale (its window
    over the 4096 tokens the prompt sizes were tuned for) and the longest answer it may write. A strong model is
    not held to a 135M model's numbers, nor a small one flooded."""
    window = context_window(settings)
    sized: dict[str, Any] = {}
    if config.context_scale is None:
        sized["context_scale"] = min(16.0, max(0.25, window / BASE_CONTEXT_TOKENS))
    if config.agent_output_tokens is None:
        sized["agent_output_tokens"] = _answer_tokens(settings, window)
    return config.model_copy(update=sized) if sized else config


def _answer_tokens(settings: Settings, window: int) -> int:
    """Tokens one agent answer may use: the model's own output limit (litellm's model info) within half its window;
    a quarter of the window for a model litellm does not know (a local server), leaving the rest to the prompt."""
    model = settings.model_for_role(None)
    try:
        known = int(litellm.get_model_info(model).get("max_output_tokens") or 0) if model and not is_gguf(model) else 0
    except Exception:  # not in litellm's offline model map
        known = 0
    return max(64, min(known, window // 2) if known else window // 4)


def _flush_outbox(ctx: LabContext) -> None:
    """Publish the reports an earlier run could not deliver (the server was down)."""
    try:
        flushed = ctx.publisher.flush()
    except Exception:
        log.warning("could not publish the outbox's pending reports; they stay for the next run", exc_info=True)
        return
    for rid, res in flushed.items():
        if isinstance(res, dict):
            ctx.emit("outbox_published", run_id=rid, **res)


def _spent(gw: Any, settings: Settings, run_id: str) -> tuple[float, int]:
    try:
        return gw.spent()
    except Exception:
        t = UsageLedger(settings.db_path).totals(run_id)
        return t.cost_usd, t.tokens


def run_status(settings: Settings, run_id: str | None = None) -> dict[str, Any]:
    """Phase, cost, jobs and best result of a run (the latest when ``run_id`` is None)."""
    with LabStore(settings.db_path) as store:
        row = store.get_run(run_id) if run_id else store.latest_run()
        if row is None:
            raise LabRunError(f"no lab run {run_id!r}" if run_id else "no lab runs yet: start one with `agentlab lab start`")
        if row["status"] == "running" and not pid_alive(row.get("pid")):
            row["status"] = "interrupted (resume it)"
        ledger = UsageLedger(settings.db_path)
        totals = ledger.totals(row["run_id"])
        by_role = ledger.summary(group_by="role", run_id=row["run_id"])
        ledger.close()
        jobs = store.experiments(row["run_id"])
    row.pop("config", None)
    return {**row, "usd": totals.cost_usd, "tokens": totals.tokens, "llm_calls": totals.calls, "jobs": jobs,
            "agent_calls": by_role}


def list_runs(settings: Settings, limit: int = 50) -> list[dict[str, Any]]:
    with LabStore(settings.db_path) as store:
        rows = store.list_runs(limit)
    for r in rows:
        r.pop("config", None)
        if r["status"] == "running" and not pid_alive(r.get("pid")):
            r["status"] = "interrupted"
    return rows
