"""The lab's nodes: module-level functions ``(state, runtime) -> update``, as in the LangGraph templates.

A node reads the state (plain JSON, what the checkpoint stores) through its typed view (``LabView.of(state)``,
``agentlab.lab.view``) and returns the dumps of what it changed; from ``runtime.context`` (a ``LabContext``) it
reads the typed run configuration and the runtime objects; agents get the context as their ``AgentContext``. ``lab_node``
gives every node what all of them share: the run's phase in the lab store and on the display; budgets
(a ``BudgetExceeded`` or ``LimitReached`` becomes ``stop_reason`` and the lab wraps up, writing and
publishing what it has); nodes that need LLM work or jobs are skipped once the lab has a stop reason;
the notes the node made go into the state, also through a ``Command``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langgraph.graph import END
from langgraph.runtime import Runtime
from langgraph.types import Command, interrupt

from agentlab.lab.confirm import confirm
from agentlab.lab.context import LabContext, LimitReached
from agentlab.lab.expansion import expand
from agentlab.lab.models import (
    DevBaseline,
    Experiment,
    Final,
    Paired,
    PriorBest,
    Record,
    ReportSizing,
    SpecRef,
    dumped,
)
from agentlab.lab.new_papers import refresh_literature
from agentlab.lab.power import plan_sizing, size_report_split, with_achieved
from agentlab.lab.report.claims import check_paper, spec_settings, verify_draft, verify_related_work
from agentlab.lab.report.paper import build_paper, confirmation_records, dev_records, ran_specs, write_outputs
from agentlab.lab.report.tables import experiments_summary, results_summary, results_table
from agentlab.lab.search import tree_summary
from agentlab.lab.state import LabState
from agentlab.lab.view import Draft, HumanDecision, LabView, LiteraturePaper, Plan, Publication
from agentlab.llm.gateway import BudgetExceeded
from agentlab.techniques import TechniqueSpec
from agents import ml_engineer, phd_student, postdoc, professor, reviewer

Node = Callable[[LabState, Runtime[LabContext]], Any]


def lab_node(phase: str, skip_when_stopped: bool = False) -> Callable[[Node], Node]:
    """A node of the lab in ``phase``; with ``skip_when_stopped`` it does nothing once the lab has a stop reason."""

    def wrap(fn: Node) -> Node:
        @functools.wraps(fn)
        def node(state: LabState, runtime: Runtime[LabContext]) -> Any:
            ctx = runtime.context
            ctx.store.update_run(ctx.run_id, phase=phase, status="running")
            ctx.emit("phase", phase=phase, node=fn.__name__)
            if skip_when_stopped and LabView.of(state).stop_reason:
                return {"phase": phase}
            try:
                ctx.check_limits()
                out = fn(state, runtime)
            except (BudgetExceeded, LimitReached) as exc:
                reason = str(exc)
                ctx.note(f"stopped early in {phase}: {reason}")
                ctx.emit("stopped", reason=reason)
                return {"phase": phase, "stop_reason": reason, "notes": ctx.drain_notes()}
            finally:
                ctx.save_elapsed()
            return _with_notes(out, ctx.drain_notes(), phase)

        return node

    return wrap


def _with_notes(out: Command | dict | None, notes: list[str], phase: str) -> Command | dict:
    """The node's update (or its ``Command``'s) with the notes it made after its own, and the phase."""
    command = out if isinstance(out, Command) else None
    update = dict((command.update if command else out) or {})
    update.update(notes=[*(update.get("notes") or []), *notes], phase=phase)
    return Command(goto=command.goto, update=update) if command else update


# -- literature and plan ---------------------------------------------------------------------


@lab_node("literature_review", skip_when_stopped=True)
def literature_review(state: LabState, runtime: Runtime[LabContext]) -> dict:
    return phd_student.literature_review(LabView.of(state), runtime.context)


@lab_node("plan", skip_when_stopped=True)
def plan(state: LabState, runtime: Runtime[LabContext]) -> dict:
    """The postdoc's plan, with the smallest gain worth reporting and how the report split is sized for it."""
    ctx = runtime.context
    out = postdoc.plan_formulation(LabView.of(state), ctx)
    sizing = plan_sizing(ctx.config, len(ctx.experiments.problems("report")))
    ctx.emit("plan_sizing", text=sizing["text"])  # the CLI prints it
    return {**out, "plan": {**out["plan"], "min_gain": ctx.config.min_gain, "sizing": sizing}}


@lab_node("plan")
def copilot_plan(state: LabState, runtime: Runtime[LabContext]) -> Command | dict:
    """With ``--copilot``: a human approves, edits or sends feedback on the plan (an ``interrupt``)."""
    ctx, view = runtime.context, LabView.of(state)
    if not ctx.config.copilot or view.stop_reason:
        return {}
    decision = HumanDecision.of(interrupt({"kind": "plan", "run_id": view.run_id, "plan": view.plan.dump()}))
    if decision.action == "edit" and isinstance(decision.plan, dict):
        new_plan = {**view.plan.dump(), **decision.plan, "source": "human"}
        names = set(ctx.technique_names())
        new_plan["techniques"] = ([t for t in Plan.model_validate(new_plan).techniques if t in names]
                                  or view.plan.techniques)
        return {"plan": new_plan, "notes": ["the plan was edited by a human (copilot mode)"]}
    if decision.action == "feedback" and decision.text and len(view.human_feedback) < 3:
        return Command(goto="plan", update={"human_feedback": [str(decision.text)],
                                            "notes": ["the plan was revised after human feedback"]})
    return {}


# -- experiments -----------------------------------------------------------------------------


DEV_BASELINE_KEY = "dev-baseline"


@lab_node("experiments", skip_when_stopped=True)
def dev_baseline(state: LabState, runtime: Runtime[LabContext]) -> dict:
    """The baseline on the dev split, before the first experiment: every experiment is paired with it on the
    same dev problems, and its wrong answers are what the first proposal sees."""
    ctx, cfg = runtime.context, runtime.context.config
    available = len(ctx.experiments.problems("dev"))
    if available < cfg.dev_n:
        ctx.note(f"the dev split of {cfg.benchmark} has {available} problems; {cfg.dev_n} were asked for")
    spec = ctx.experiments.baseline_spec()
    res = ctx.run_job(DEV_BASELINE_KEY, spec, "dev")
    if not res.succeeded:
        ctx.note(f"the baseline's dev job failed ({str(res.error)[:200]}); experiments are not paired")
    return {"dev_baseline": DevBaseline(spec=SpecRef.model_validate(spec.model_dump(mode="json")), record=res.record,
                                        job_id=res.job_id, error=res.error, evidence=res.evidence).dump()}


def paired_with_baseline(ctx: LabContext, record: Record | None, baseline: DevBaseline) -> Paired | None:
    """An experiment against the baseline on the same dev problems: wins (it right, the baseline wrong),
    losses, ties, the accuracy difference and the exact McNemar p; None when either has no record."""
    if not (record and baseline.record):
        return None
    try:
        return ctx.experiments.compare(record, baseline.record).paired()
    except Exception as exc:
        ctx.note(f"paired dev comparison unavailable: {type(exc).__name__}: {exc}")
        return None


@lab_node("experiments", skip_when_stopped=True)
def experiment(state: LabState, runtime: Runtime[LabContext]) -> dict:
    ctx = runtime.context
    literature = refresh_literature(LabView.of(state), ctx)  # papers other labs published on the goal since
    view = LabView.of({**state, "literature": literature} if literature is not None else state)  # the last look
    # the search picks the nodes to expand, the ML engineer proposes the changes (a round's jobs run together)
    entries = expand(view, ctx)
    for entry in entries:
        entry.paired = paired_with_baseline(ctx, entry.record, view.dev_baseline)
        entry.papers_read = [p.id for p in view.literature]  # what it could see
    experiments = [*view.experiments, *entries]
    best = ml_engineer.best_of(experiments)
    if best:
        ctx.store.update_run(ctx.run_id, best_accuracy=best.record.accuracy,
                             best_technique=best.spec.name if best.spec else None)
    return {"experiments": [e.dump() for e in experiments], "best": dumped(best), "iteration": entries[-1].iteration,
            "search": tree_summary(experiments, ctx.config.prune_after),
            **({"literature": literature} if literature is not None else {})}


@lab_node("final_evaluation", skip_when_stopped=True)
def final_evaluation(state: LabState, runtime: Runtime[LabContext]) -> dict:
    """The best dev technique and the baseline on the held-out report split; a paired comparison."""
    ctx, best = runtime.context, LabView.of(state).best
    best_spec = best.spec.parsed() if best else None
    base_spec = ctx.experiments.baseline_spec()
    if not best:
        ctx.note("no dev experiment succeeded; the report split is evaluated with the baseline only")
    # fresh dev problems first (the winner's curse), with the report split's jobs kept in the budget
    confirmation = confirm(ctx, best, best_spec, base_spec, reserve=2 + int(ctx.config.compare_prior_best))
    sizing = _size_report_split(ctx, best)
    base = ctx.run_job("report-baseline", base_spec, "report")
    tech = None
    trained = best.training if best else None  # the best is a model this run trained: evaluate that checkpoint
    if best_spec and (trained or best_spec.spec_hash() != base_spec.spec_hash()):
        tech = ctx.run_job("report-best", best_spec, "report", checkpoint=trained.run_id if trained else None)
    elif best:
        ctx.note(f"the best dev technique is the baseline itself ({ctx.config.baseline})")
    final = Final(baseline=base.record, technique=tech.record if tech else None,
                  technique_name=(best_spec.name if best_spec else None) or ctx.config.baseline,
                  # published with the paper (techniques.json), so another lab can replicate it
                  specs={s.spec_hash(): s.model_dump(mode="json") for s in (base_spec, best_spec) if s})
    if confirmation:
        final.confirmation = confirmation
        final.specs.update({r.spec_hash: r.spec for r in confirmation.ablation})
    for name, res in (("baseline", base), ("best technique", tech)):
        if res is not None and not res.succeeded:
            ctx.note(f"the {name} job on the report split failed: {str(res.error)[:200]}")
    if not final.technique and not final.baseline:
        errors = "; ".join(str(r.error)[:300] for r in (base, tech) if r and r.error)
        return {"final": final.dump(),
                "failure": "no evaluation on the report split finished" + (f": {errors}" if errors else "")}
    if final.technique and final.baseline:
        try:
            final.comparison = ctx.experiments.compare(final.technique, final.baseline)
        except Exception as exc:
            ctx.note(f"paired comparison unavailable: {type(exc).__name__}: {exc}")
    final.sizing = with_achieved(sizing, final.comparison)
    if ctx.config.compare_prior_best:
        final = _prior_best(ctx, final, {base_spec.spec_hash(), best_spec.spec_hash() if best_spec else ""})
    return {"final": final.dump()}


def _size_report_split(ctx: LabContext, best: Experiment | None) -> ReportSizing:
    """Size the report split from the best experiment's paired dev comparison (``agentlab.lab.power``); the
    experiments evaluate its first ``report_n`` problems from here on."""
    cfg = ctx.config
    available = len(ctx.experiments.problems("report"))  # up to report_n, before sizing
    sizing = size_report_split(cfg, available, best.paired if best else None)
    asked = min(cfg.report_n, sizing.needed or cfg.report_n)
    if available < asked:  # a real benchmark has so many problems (a generated one makes as many as asked)
        ctx.note(f"the report split of {cfg.benchmark} has {available} problems, fewer than the {asked} "
                 "asked for")
    ctx.experiments.report_size = sizing.report_n
    return sizing


def _prior_best(ctx: LabContext, final: Final, ours: set[str]) -> Final:
    """The best published technique for this benchmark, problem population and model (a fair bar: enough report-split
    problems or a replication, ranked by its CI's lower bound; ``Publisher.prior_best``), re-run on this run's report
    split (a second baseline: the gain over the state of the art, not only over the baseline), compared with ours."""
    try:
        ep = ctx.experiments.endpoint()
        prior = ctx.publisher.prior_best(ctx.config.benchmark, ctx.experiments.subset_label("report"), ep.model,
                                         ep.identity, min_n=ctx.config.prior_best_min_n)
    except Exception as exc:
        ctx.note(f"the prior best result could not be read from the server ({type(exc).__name__}: {exc})")
        return final
    if prior is None:
        return final
    spec = TechniqueSpec.parse(prior["spec"])
    if spec.spec_hash() in ours:
        ctx.note(f"the prior best ({prior['technique']}, paper {prior['paper_id']}) is one of this run's techniques")
        return final
    spec = spec.model_copy(update={"name": f"prior_{spec.name}"[:80]})  # its records never pass as ours
    res = ctx.run_job("report-prior", spec, "report")
    if not res.succeeded:
        ctx.note(f"the prior best's job on the report split failed: {str(res.error)[:200]}")
        return final
    prior_best = PriorBest.model_validate({
        **res.record.dump(), "paper_id": prior["paper_id"], "lab": prior["lab"], "published_accuracy": prior["accuracy"],
        "published_n": prior["n"], "published_ci_low": prior["ci_low"], "replications": prior["replications"]})
    final = final.model_copy(update={"prior_best": prior_best,
                                     "specs": {**final.specs, spec.spec_hash(): spec.model_dump(mode="json")}})
    try:
        final.comparison_prior = ctx.experiments.compare(final.technique or final.baseline, res.record)
    except Exception as exc:
        ctx.note(f"paired comparison with the prior best unavailable: {type(exc).__name__}: {exc}")
    return final


@lab_node("interpretation", skip_when_stopped=True)
def interpretation(state: LabState, runtime: Runtime[LabContext]) -> dict:
    view = LabView.of(state)
    return postdoc.interpret(view, runtime.context, results_summary(view.final), experiments_summary(view.experiments))


# -- report and review -----------------------------------------------------------------------


def _spec_settings(view: LabView) -> list[float]:
    return spec_settings(view.dev_specs())


def _write_report(view: LabView, ctx: LabContext, feedback: str = "") -> dict:
    """The professor's draft (or one from the records alone), checked claim by claim, as paper files."""
    final, best = view.final, view.best
    results_text = results_summary(final)
    method = f"technique {(best.spec.name if best and best.spec else None) or ctx.config.baseline}: " \
             f"{best.proposal.rationale if best else ''}"
    if view.stop_reason:
        draft, fell_back = professor.fallback_draft(view, ctx, results_text), True
        ctx.note("the report was written from the records alone (the lab stopped early)")
    else:
        draft, fell_back = professor.write_report(view, ctx, results_text, method, feedback)
    records = [r.dump() for r in (*final.report_records(), *dev_records(view), *confirmation_records(final))]
    clean, claims = verify_draft(draft.model_dump(), records, dumped(final.comparison), _spec_settings(view),
                                 specs=ran_specs(view))
    literature, related_claims = verify_related_work([p.dump() for p in view.literature])
    claims += related_claims
    bad = [c for c in claims if c["status"] != "ok"]
    if bad:
        ctx.note(f"claim checker: {len(bad)} claim(s) in the prose did not match the records their sentences "
                 "name (" + ", ".join(sorted({c['verdict'] for c in bad})) + ") and were "
                 + ", ".join(sorted({c['status'] for c in bad})) + "; see claims in records.json")
    shown = view.model_copy(update={"literature": [LiteraturePaper.model_validate(p) for p in literature],
                                    "notes": [*view.notes, *ctx.pending_notes()]})
    paper = build_paper(shown, clean, ctx.config, ctx.out_dir)
    paper.claims = claims
    files = write_outputs(paper, ctx.out_dir)
    ctx.store.update_run(ctx.run_id, out_dir=str(ctx.out_dir))
    return {"report": {"draft": clean, "source": "fallback" if fell_back else "llm", "claims": claims,
                       "markdown": paper.markdown, "latex": paper.latex, "files": files,
                       "records": paper.records, "citations": paper.citations, "techniques": paper.techniques,
                       "relations": paper.relations,
                       "title": paper.title, "abstract": paper.abstract}}


@lab_node("report")
def report(state: LabState, runtime: Runtime[LabContext]) -> dict:
    view = LabView.of(state)
    feedback = "; ".join(view.human_feedback[-1:]) if view.revised else ""
    return _write_report(view, runtime.context, feedback)


@lab_node("review", skip_when_stopped=True)
def review(state: LabState, runtime: Runtime[LabContext]) -> dict:
    view = LabView.of(state)
    rep = view.report
    table = results_table(rep.records[:2], ids=False) if rep.records else "no results"
    reviews = reviewer.review(view, runtime.context, Draft.model_validate(rep.draft), table)
    return {"reviews": _checked_reviews(view, runtime.context, reviews)}


def _checked_reviews(view: LabView, ctx: LabContext, reviews: list[dict]) -> list[dict]:
    """Reviews are published: their prose goes through the same claim checker as the paper's."""
    out = []
    for r in reviews:
        clean, claims = verify_draft(r, view.report.record_dicts(), dumped(view.final.comparison),
                                     _spec_settings(view), keys=("summary", "strength", "weakness"),
                                     section=f"review ({r['persona']})", specs=ran_specs(view))
        bad = [c for c in claims if c["status"] != "ok"]
        if bad:
            ctx.note(f"the {r['persona']} review stated {len(bad)} number(s) or comparison(s) the records do not "
                     f"support; {', '.join(sorted({c['status'] for c in bad}))} before publishing")
        out.append(clean)
    return out


@lab_node("review", skip_when_stopped=True)
def revision(state: LabState, runtime: Runtime[LabContext]) -> dict:
    ctx, view = runtime.context, LabView.of(state)
    feedback = " ".join(f"{r.persona}: {r.weakness}" for r in view.reviews if r.weakness)
    ctx.note(f"revised once after review (mean score {reviewer.mean_score(view.reviews):.1f} "
             f"below {ctx.config.review_threshold:g})")
    upd = _write_report(view, ctx, feedback)
    upd["revised"] = True
    return upd


# -- publishing ------------------------------------------------------------------------------


@lab_node("publish")
def copilot_publish(state: LabState, runtime: Runtime[LabContext]) -> Command | dict:
    """With ``--copilot``: a human approves, edits (re-checked), sends feedback on or rejects the report."""
    ctx, view = runtime.context, LabView.of(state)
    if not ctx.config.copilot:
        return {}
    rep = view.report
    decision = HumanDecision.of(interrupt({"kind": "publish", "run_id": view.run_id, "title": rep.title,
                                           "markdown": rep.markdown, "path": rep.files.markdown}))
    if decision.action == "edit" and decision.markdown:
        return _human_edit(view, str(decision.markdown))
    if decision.action == "feedback" and decision.text and len(view.human_feedback) < 3:
        text = str(decision.text)
        upd = _write_report(view.model_copy(update={"human_feedback": [*view.human_feedback, text]}), ctx, text)
        upd["human_feedback"] = [text]
        return Command(goto="copilot_publish", update=upd)
    if decision.action == "reject":
        return Command(goto=END, update={"publication": {"status": "rejected by human"}})
    return {}


def _human_edit(view: LabView, markdown: str) -> Command | dict:
    """A human's edit of the report, unless it brings in numbers no record supports."""
    rep = view.report
    claims = check_paper(markdown, rep.record_dicts(), dumped(view.final.comparison), _spec_settings(view),
                         specs=rep.techniques or ran_specs(view))
    bad = [c for c in claims if c["status"] != "ok"]
    if bad:
        return Command(goto="copilot_publish", update={
            "notes": [f"human edit rejected: claims the records do not support {[c['text'] for c in bad][:5]}"]})
    Path(rep.files.markdown).write_text(markdown)
    return {"report": {**rep.dump(), "markdown": markdown, "edited_by_human": True},
            "notes": ["the report was edited by a human before publishing"]}


@lab_node("publish")
def publish(state: LabState, runtime: Runtime[LabContext]) -> dict:
    ctx, view = runtime.context, LabView.of(state)
    pub = Publication.model_validate(ctx.publisher.publish_run(view, view.report, ctx.config.benchmark))
    ctx.store.update_run(ctx.run_id, paper_id=pub.paper_id, paper_url=pub.url)
    return {"publication": pub.dump()}
