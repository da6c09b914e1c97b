"""The lab workflow: a LangGraph ``StateGraph`` over ``LabState``, checkpointed to SQLite.

    literature_review -> plan -> [copilot: approve plan] -> experiment (loop) -> final_evaluation
      -> interpretation -> report -> review (-> revision -> review, once) -> [copilot: approve]
      -> publish -> END

One thread per lab run (``thread_id = run_id``). Runtime objects (gateway, experiment runner,
preprint client, UI callback) live in a ``LabContext`` the nodes close over; the state itself is
plain JSON. Budgets (USD/tokens through the gateway, jobs and wall time here) never crash a run:
the node that hits one records ``stop_reason`` and the lab wraps up, writing and publishing what
it has, marked as such.
"""

from __future__ import annotations

import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from agentlab.config import Settings
from agentlab.errors import AgentlabError
from agentlab.lab.store import LabStore
from agentlab.llm.gateway import BudgetExceeded
from agentlab.sqlite import connect
from agentlab.lab.state import LabConfig, LabState
from agents import ml_engineer, phd_student, postdoc, professor, reviewer

Event = Callable[[str, dict[str, Any]], None]


class LimitReached(AgentlabError):
    """A lab budget (jobs, wall time) is exhausted: the lab wraps up."""


class LabError(AgentlabError):
    pass


def new_run_id() -> str:
    return time.strftime("lab-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


@dataclass
class LabContext:
    """What nodes need at run time; rebuilt on resume (nothing here is checkpointed)."""

    settings: Settings
    run_id: str
    config: LabConfig
    gateway: Any
    store: LabStore
    runner: Any  # agentlab.lab.experiments.ExperimentRunner
    publisher: Any  # agentlab.lab.publishing.Publisher
    out_dir: Path
    on_event: Event | None = None
    session_start: float = field(default_factory=time.monotonic)
    wall_before: float = 0.0  # wall seconds earlier sessions of this run used (lab_runs.wall_s)
    _notes: list[str] = field(default_factory=list)

    # -- notes and events ---------------------------------------------------------------------
    def note(self, text: str) -> None:
        self._notes.append(text)
        self.emit("note", text=text)

    def drain_notes(self) -> list[str]:
        out, self._notes = self._notes, []
        return out

    def emit(self, kind: str, **data: Any) -> None:
        if self.on_event is not None:
            try:
                self.on_event(kind, data)
            except Exception:  # a broken display never breaks a run
                pass

    # -- budgets ------------------------------------------------------------------------------
    def elapsed(self) -> float:
        """Wall seconds this run has used, over every session (a resumed run keeps its clock)."""
        return self.wall_before + time.monotonic() - self.session_start

    def save_elapsed(self) -> None:
        self.store.update_run(self.run_id, wall_s=self.elapsed())

    def check_limits(self, need_job: bool = False) -> None:
        b = self.settings.budgets
        if b.max_wall_minutes is not None and self.elapsed() > 60 * b.max_wall_minutes:
            raise LimitReached(f"wall-time budget of {b.max_wall_minutes:g} min reached")
        if need_job and self.store.jobs_used(self.run_id) >= b.max_jobs:
            raise LimitReached(f"job budget of {b.max_jobs} jobs reached")

    # -- what agents call ---------------------------------------------------------------------
    def technique_names(self) -> list[str]:
        return self.runner.technique_names()

    def build_spec(self, proposal: dict[str, Any], iteration: int) -> dict[str, Any]:
        return self.runner.build_spec(proposal, iteration)

    def simplify_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.runner.simplify_spec(spec)

    def earlier_experiment(self, key: str) -> dict[str, Any] | None:
        return self.store.experiment(self.run_id, key)

    def run_job(self, key: str, spec: dict[str, Any], split: str, meta: dict | None = None) -> dict[str, Any]:
        """Run ``spec`` on ``split`` as a job, once per key: a finished key returns its stored result."""
        done = self.store.experiment(self.run_id, key)
        if done and done["status"] == "succeeded":
            self.emit("job_reused", key=key, job_id=done["job_id"], accuracy=done["record"]["accuracy"])
            return {"status": "succeeded", "record": done["record"], "job_id": done["job_id"], "reused": True}
        seed = None
        if done and done.get("job_id"):  # killed while its job ran: a finished job is reused, never rerun
            try:
                recovered, seed = self.runner.recover(done["job_id"], spec, split)
            except Exception:
                recovered = None
            if recovered is not None and recovered["status"] == "succeeded":
                self.store.finish_experiment(self.run_id, key, "succeeded", recovered["job_id"],
                                             recovered["record"], None)
                self.emit("job_reused", key=key, job_id=recovered["job_id"],
                          accuracy=recovered["record"]["accuracy"])
                return {**recovered, "reused": True}
        self.check_limits(need_job=True)
        self.store.start_experiment(self.run_id, key, split, self.runner.spec_hash(spec), spec, meta)
        self.emit("job_started", key=key, split=split, technique=spec.get("name"))
        try:
            result = self.runner.run(key, spec, split, on_progress=lambda **d: self.emit("job_progress", key=key, **d),
                                     on_submit=lambda jid: self.store.set_experiment_job(self.run_id, key, jid),
                                     seed_dir=seed)
        except BudgetExceeded:
            raise
        except Exception as exc:  # a harness/infrastructure failure: the agents see the log
            result = {"status": "failed", "record": None, "job_id": None,
                      "error": "".join(traceback.format_exception_only(type(exc), exc)).strip()}
        self.store.finish_experiment(self.run_id, key, result["status"], result.get("job_id"),
                                     result.get("record"), result.get("error"))
        self.save_elapsed()
        rec = result.get("record") or {}
        self.emit("job_finished", key=key, status=result["status"], accuracy=rec.get("accuracy"),
                  job_id=result.get("job_id"), error=result.get("error"))
        return result

    def search_literature(self, query: str, k: int) -> list[dict[str, Any]]:
        try:
            return self.publisher.search(query, k, goal=None)
        except Exception as exc:
            self.note(f"literature search failed ({type(exc).__name__}: {exc}); continuing without it")
            return []


# -- nodes -------------------------------------------------------------------------------------


def _experiments_text(state: dict) -> str:
    parts = []
    for e in state.get("experiments") or []:
        rec = e.get("record")
        parts.append(f"#{e['iteration']} {e['proposal'].get('technique')}: "
                     + (f"{rec['accuracy']:.3f} on {rec['n']} dev problems" if rec else "failed"))
    return "; ".join(parts) or "none"


def make_nodes(ctx: LabContext) -> dict[str, Callable[[dict], dict]]:
    from agentlab.lab import report as rpt

    def literature_review(state: dict) -> dict:
        return phd_student.literature_review(state, ctx)

    def plan(state: dict) -> dict:
        return postdoc.plan_formulation(state, ctx)

    def copilot_plan(state: dict) -> Command | dict:
        if not state["config"].get("copilot") or state.get("stop_reason"):
            return {}
        decision = interrupt({"kind": "plan", "run_id": state["run_id"], "plan": state.get("plan")})
        action, decision = _decision(decision)
        if action == "edit" and isinstance(decision.get("plan"), dict):
            new_plan = {**(state.get("plan") or {}), **decision["plan"], "source": "human"}
            names = set(ctx.technique_names())
            new_plan["techniques"] = [t for t in new_plan.get("techniques", []) if t in names] or \
                (state.get("plan") or {}).get("techniques", [])
            return {"plan": new_plan, "notes": ["the plan was edited by a human (copilot mode)"]}
        if action == "feedback" and decision.get("text") and len(state.get("human_feedback") or []) < 3:
            return Command(goto="plan", update={"human_feedback": [str(decision["text"])],
                                                "notes": ["the plan was revised after human feedback"]})
        return {}

    def experiment(state: dict) -> dict:
        entry = ml_engineer.run_iteration(state, ctx)
        experiments = [*(state.get("experiments") or []), entry]
        best = ml_engineer.best_of(experiments)
        if best:
            ctx.store.update_run(ctx.run_id, best_accuracy=best["record"]["accuracy"],
                                 best_technique=best["spec"].get("name"))
        return {"experiments": experiments, "best": best, "iteration": entry["iteration"]}

    def final_evaluation(state: dict) -> dict:
        cfg = state["config"]
        best = state.get("best")
        base_spec = ctx.runner.baseline_spec()
        if not best:
            ctx.note("no dev experiment succeeded; the report split is evaluated with the baseline only")
        base = ctx.run_job("report-baseline", base_spec, "report")
        tech = None
        if best and ctx.runner.spec_hash(best["spec"]) != ctx.runner.spec_hash(base_spec):
            tech = ctx.run_job("report-best", best["spec"], "report")
        elif best:
            ctx.note(f"the best dev technique is the baseline itself ({cfg['baseline']})")
        final: dict[str, Any] = {"baseline": base.get("record"), "technique": (tech or {}).get("record"),
                                 "technique_name": (best or {}).get("spec", {}).get("name") or cfg["baseline"]}
        for name, res in (("baseline", base), ("best technique", tech)):
            if res is not None and res["status"] != "succeeded":
                ctx.note(f"the {name} job on the report split failed: {str(res.get('error'))[:200]}")
        if final["technique"] and final["baseline"]:
            try:
                final["comparison"] = ctx.runner.compare(final["technique"], final["baseline"])
            except Exception as exc:
                ctx.note(f"paired comparison unavailable: {type(exc).__name__}: {exc}")
        return {"final": final}

    def interpretation(state: dict) -> dict:
        return postdoc.interpret(state, ctx, rpt.results_summary(state.get("final") or {}), _experiments_text(state))

    def write_report(state: dict, feedback: str = "") -> dict:
        final = state.get("final") or {}
        results_text = rpt.results_summary(final)
        best = state.get("best") or {}
        method = f"technique {best.get('spec', {}).get('name', state['config']['baseline'])}: " \
                 f"{best.get('proposal', {}).get('rationale', '')}"
        if state.get("stop_reason"):
            draft, fell_back = professor.fallback_draft(state, results_text), True
            ctx.note("the report was written from the records alone (the lab stopped early)")
        else:
            draft, fell_back = professor.write_report(state, ctx, results_text, method, feedback)
        records = [r for r in (final.get("technique"), final.get("baseline")) if r]
        records += [e["record"] for e in state.get("experiments") or [] if e.get("record")]
        clean, claims = rpt.verify_draft(draft.model_dump(), records, final.get("comparison"),
                                         ctx.runner.spec_numbers(state))
        bad = [c for c in claims if c["status"] != "ok"]
        if bad:
            ctx.note(f"claim checker: {len(bad)} number(s) in the prose did not match any record and were "
                     + ", ".join(sorted({c['status'] for c in bad})))
        paper = rpt.build_paper({**state, "notes": [*(state.get("notes") or []), *ctx._notes]}, clean, ctx.out_dir)
        paper.claims = claims
        files = rpt.write_outputs(paper, ctx.out_dir)
        ctx.store.update_run(ctx.run_id, out_dir=str(ctx.out_dir))
        return {"report": {"draft": clean, "source": "fallback" if fell_back else "llm", "claims": claims,
                           "markdown": paper.markdown, "latex": paper.latex, "files": files,
                           "records": paper.records, "citations": paper.citations,
                           "title": paper.title, "abstract": paper.abstract}}

    def report(state: dict) -> dict:
        return write_report(state, "; ".join((state.get("human_feedback") or [])[-1:]) if state.get("revised") else "")

    def review(state: dict) -> dict:
        rep = state["report"]
        table = rpt.results_table(rep.get("records", [])[:2], ids=False) if rep.get("records") else "no results"
        reviews = reviewer.review(state, ctx, rep["draft"], table)
        return {"reviews": reviews}

    def revision(state: dict) -> dict:
        feedback = " ".join(f"{r['persona']}: {r['weakness']}" for r in state.get("reviews") or [] if r.get("weakness"))
        ctx.note(f"revised once after review (mean score {reviewer.mean_score(state['reviews']):.1f} "
                 f"below {state['config']['review_threshold']:g})")
        upd = write_report(state, feedback)
        upd["revised"] = True
        return upd

    def copilot_publish(state: dict) -> Command | dict:
        if not state["config"].get("copilot"):
            return {}
        rep = state["report"]
        decision = interrupt({"kind": "publish", "run_id": state["run_id"], "title": rep["title"],
                              "markdown": rep["markdown"], "path": rep["files"].get("markdown")})
        action, decision = _decision(decision)
        if action == "edit" and decision.get("markdown"):
            records = rep.get("records") or []
            res = rpt.check_claims(str(decision["markdown"]), records,
                                   (state.get("final") or {}).get("comparison"), ctx.runner.spec_numbers(state),
                                   fix=False)
            bad = [c for c in res.claims if c.status != "ok"]
            if bad:  # a human edit must not bring in unverified numbers either
                return Command(goto="copilot_publish", update={
                    "notes": [f"human edit rejected: unverified numbers {[c.text for c in bad][:5]}"]})
            new = {**rep, "markdown": str(decision["markdown"]), "edited_by_human": True}
            Path(rep["files"]["markdown"]).write_text(new["markdown"])
            return {"report": new, "notes": ["the report was edited by a human before publishing"]}
        if action == "feedback" and decision.get("text") and len(state.get("human_feedback") or []) < 3:
            upd = write_report({**state, "human_feedback": [*(state.get("human_feedback") or []), decision["text"]]},
                               str(decision["text"]))
            upd["human_feedback"] = [str(decision["text"])]
            return Command(goto="copilot_publish", update=upd)
        if action == "reject":
            return Command(goto=END, update={"publication": {"status": "rejected by human"}})
        return {}

    def publish(state: dict) -> dict:
        rep = state["report"]
        pub = ctx.publisher.publish_run(state, rep)
        ctx.store.update_run(ctx.run_id, paper_id=pub.get("paper_id"), paper_url=pub.get("url"))
        return {"publication": pub}

    return {
        "literature_review": literature_review, "plan": plan, "copilot_plan": copilot_plan,
        "experiment": experiment, "final_evaluation": final_evaluation, "interpretation": interpretation,
        "report": report, "review": review, "revision": revision, "copilot_publish": copilot_publish,
        "publish": publish,
    }


def _decision(value: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(value, str):
        return value.strip().lower() or "approve", {}
    if isinstance(value, dict):
        return str(value.get("action", "approve")).lower(), value
    return "approve", {}


# Nodes that need LLM work or jobs are skipped once the lab has a stop reason; the rest still run.
SKIP_WHEN_STOPPED = {"literature_review", "plan", "experiment", "final_evaluation", "interpretation", "review",
                     "revision"}
PHASE_OF = {"literature_review": "literature_review", "plan": "plan", "copilot_plan": "plan",
            "experiment": "experiments", "final_evaluation": "final_evaluation",
            "interpretation": "interpretation", "report": "report", "review": "review", "revision": "review",
            "copilot_publish": "publish", "publish": "publish"}


def _wrap(name: str, fn: Callable[[dict], Any], ctx: LabContext) -> Callable[[dict], Any]:
    def node(state: dict) -> Any:
        phase = PHASE_OF[name]
        ctx.store.update_run(ctx.run_id, phase=phase, status="running")
        ctx.emit("phase", phase=phase, node=name)
        if state.get("stop_reason") and name in SKIP_WHEN_STOPPED:
            return {"phase": phase}
        try:
            ctx.check_limits()
            out = fn(state)
        except (BudgetExceeded, LimitReached) as exc:
            reason = str(exc)
            ctx.note(f"stopped early in {phase}: {reason}")
            ctx.emit("stopped", reason=reason)
            return {"phase": phase, "stop_reason": reason, "notes": ctx.drain_notes()}
        finally:
            ctx.save_elapsed()
        notes = ctx.drain_notes()
        if isinstance(out, Command):
            upd = dict(out.update or {})
            upd["notes"] = [*(upd.get("notes") or []), *notes]
            upd["phase"] = phase
            return Command(goto=out.goto, update=upd)
        out = dict(out or {})
        out["notes"] = [*(out.get("notes") or []), *notes]
        out["phase"] = phase
        return out

    node.__name__ = name
    return node


def build_graph(ctx: LabContext, checkpointer: Any = None):
    nodes = make_nodes(ctx)
    g = StateGraph(LabState)
    for name, fn in nodes.items():
        if name in ("copilot_plan", "copilot_publish"):
            targets = ("plan", "experiment") if name == "copilot_plan" else ("copilot_publish", "publish", END)
            g.add_node(name, _wrap(name, fn, ctx), destinations=targets)
        else:
            g.add_node(name, _wrap(name, fn, ctx))
    g.add_edge(START, "literature_review")
    g.add_edge("literature_review", "plan")
    g.add_edge("plan", "copilot_plan")
    g.add_edge("copilot_plan", "experiment")

    def after_experiment(state: dict) -> str:
        if state.get("stop_reason"):
            return "final_evaluation"
        if len(state.get("experiments") or []) >= state["config"]["max_iterations"]:
            return "final_evaluation"
        return "experiment"

    g.add_conditional_edges("experiment", after_experiment, ["experiment", "final_evaluation"])
    g.add_edge("final_evaluation", "interpretation")
    g.add_edge("interpretation", "report")
    g.add_edge("report", "review")

    def after_review(state: dict) -> str:
        score = reviewer.mean_score(state.get("reviews") or [])
        if (not state.get("revised") and not state.get("stop_reason") and score is not None
                and score < state["config"]["review_threshold"]):
            return "revision"
        return "copilot_publish"

    g.add_conditional_edges("review", after_review, ["revision", "copilot_publish"])
    g.add_edge("revision", "review")
    g.add_edge("copilot_publish", "publish")
    g.add_edge("publish", END)
    return g.compile(checkpointer=checkpointer)


def checkpointer_for(settings: Settings) -> SqliteSaver:
    conn = connect(settings.workspace / "lab_checkpoints.db")
    saver = SqliteSaver(conn)
    saver.setup()
    return saver
