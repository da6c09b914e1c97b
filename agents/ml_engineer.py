"""ML engineer: proposes technique specs, runs them on the dev split as jobs, refines them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, PrivateAttr

from agentlab.lab.models import Attempt, Experiment, JobResult, ProposalRef, SpecRequest, TrainingRequest
from agentlab.lab.view import LabView
from agentlab.techniques import TechniqueError, TechniqueSpec
from agents import sw_engineer
from agents.base import AgentContext, Answer, Clamp, Limited, Text, ask, cclip, clip, restrict_choices
from agents.ml_context import TRAIN, adjusted_text, branch_point, history, node_evidence, parent_node

ROLE = "ml_engineer"


class StepDraft(Answer):
    name: Text(30, "lowercase identifier; later templates use it as {name}")
    template: Text(800, "the step's prompt; may use {question} and earlier steps")


class TechniqueProposal(Answer):
    """The next experiment: a technique to start from and its settings; optionally the technique written out
    (every optional field left empty keeps the starting technique's own)."""

    technique: str = Field(description="the technique to start from (a name from the list)")
    num_chains: int = Field(0, ge=0, le=8, description="sampled chains: 0 = the technique's own, 1 = a single answer")
    temperature: Annotated[float, Clamp(0.0, 1.5)] = Field(0.0, ge=0.0, le=1.5)
    max_tokens: Annotated[int, Clamp(32, 2048)] = Field(512, ge=32, le=2048)
    instruction: Text(160, "one extra instruction line for the prompt, or empty") = ""
    system: Text(800, "a system prompt you write, or empty") = ""
    template: Text(1500, "the solving prompt you write, or empty; must contain {question}; may use {examples}, "
                         "{answer_instruction} and your steps' names") = ""
    steps: list[StepDraft] = Field(default_factory=list, max_length=3, description="pre-steps run before solving "
                                   "(e.g. a plan), or none")
    few_shot: Annotated[int, Clamp(0, 8)] = Field(0, ge=0, le=8, description="worked examples to show (from the dev "
                                                                              "pool), 0 = none")
    aggregation: Literal["", "majority", "weighted", "embedding_consensus"] = Field(
        "", description="how chains are combined when num_chains > 1; empty = the technique's")
    refine_rounds: Annotated[int, Clamp(0, 3)] = Field(0, ge=0, le=3, description="critique-and-revise rounds")
    chain_templates: list[Text(800, "one chain's solving prompt; must contain {question}")] = Field(
        default_factory=list, max_length=4, description="a different solving prompt per chain (sets the number of "
                                                        "chains), or none")
    verify: bool = Field(False, description="a judge checks each chain's answer; only accepted answers vote")
    parent: Annotated[int, Clamp(0, 99)] = Field(0, ge=0, le=99, description="branch from experiment #parent's "
                                                 "technique (its spec, then these changes); 0 = from `technique`")
    rationale: Text(200, "one sentence") = ""
    _parent_asked: int | None = PrivateAttr(None)  # the parent the engineer named when the search chose another

    def knobs_only(self) -> TechniqueProposal:
        """The same proposal without what was written out (when that does not validate)."""
        return self.model_copy(update={"system": "", "template": "", "steps": [], "few_shot": 0, "aggregation": "",
                                       "refine_rounds": 0, "chain_templates": [], "verify": False})


CUSTOM_CODE = "custom_code"  # the proposal's technique name for "write a code technique"


class TrainingProposal(Answer):
    """A training technique: fine-tune the model under study (LoRA) on problems outside the dev and report
    splits, then evaluate the trained model with a one-prompt technique (whose prompt training also uses)."""

    method: Literal["sft", "grpo"] = Field("sft", description="sft: learn from correct solutions; grpo: "
                                           "reinforcement learning with the grader as reward")
    evaluate_with: str = Field(description="the technique whose prompt training and evaluation use")
    target: Literal["boxed", "worked", "gold"] = Field(
        "worked", description="sft targets: worked (step by step where the data has steps), boxed (the final "
                              "answer in \\boxed{}) or gold (the bare answer)")
    learning_rate: Annotated[float, Clamp(1e-6, 5e-3)] = Field(1e-3, ge=1e-6, le=5e-3)
    max_steps: Annotated[int, Clamp(1, 100_000)] = Field(20, ge=1, le=100_000, description="optimizer steps")
    batch_size: Annotated[int, Clamp(2, 64)] = Field(8, ge=2, le=64)
    lora_r: Annotated[int, Clamp(1, 128)] = Field(16, ge=1, le=128, description="LoRA rank")
    rationale: Text(200, "one sentence") = ""


CODE_LIMIT = 6000  # characters of solve() source an engineer may write


class CodeTechnique(BaseModel):
    code: Limited(CODE_LIMIT, "the code", "Python source defining solve(problem, client)")
    rationale: Text(200, "one sentence") = ""


def propose(view: LabView, ctx: AgentContext, error: str = "") -> tuple[TechniqueProposal, bool]:
    cfg = ctx.config
    techniques = ctx.technique_names()
    planned = [t for t in view.plan.techniques if t in techniques]

    def fallback(builtin: list[str] = techniques) -> TechniqueProposal:  # bound now: the list grows below
        name, why = fallback_technique(view, planned, builtin, cfg.baseline)
        return TechniqueProposal(technique=name, max_tokens=cfg.max_tokens_per_answer, rationale=why)

    techniques = [*techniques, *published_techniques(view)]
    if cfg.allow_code_techniques:
        techniques = [*techniques, CUSTOM_CODE]
    if cfg.allow_training:
        techniques = [*techniques, TRAIN]
    schema = restrict_choices(TechniqueProposal, "technique", techniques)
    plan_text = f"{view.plan.hypothesis} Techniques: {', '.join(planned) or cfg.baseline}"
    choice = view.search_choice  # the node the search expands (agentlab.lab.search), when it chose one
    node = parent_node(view, choice.parent) if choice else branch_point(view)
    proposal, fell_back = ask(ctx, ROLE, "ml_engineer_propose", schema, fallback, "technique proposal", error=error,
                              max_chains=cfg.max_chains, answer_tokens=cfg.max_tokens_per_answer,
                              goal=cclip(ctx, view.goal, 300), plan=cclip(ctx, plan_text, 400),
                              history=cclip(ctx, history(view), 700), techniques=", ".join(techniques),
                              evidence=cclip(ctx, node_evidence(view, node), 1500),
                              training=TRAINING_NOTE if cfg.allow_training else "")
    if choice and proposal.parent != choice.parent:  # the search picks the node, the engineer the change
        asked = proposal.parent
        proposal = proposal.model_copy(update={"parent": choice.parent})
        proposal._parent_asked = None if fell_back else asked
    return proposal, fell_back


def fallback_technique(view: LabView, planned: list[str], techniques: list[str], baseline: str) -> tuple[str, str]:
    """(technique, why) when the engineer gave no valid proposal: the next planned technique not tried yet, else
    any built-in one not tried yet, never the baseline (it is already the root of the tree: running it again
    under another name would pass it off as a new technique); only when all were tried, the plan's again."""
    tried = {e.proposal.technique for e in view.experiments}
    fresh = [t for t in [*planned, *techniques] if t != baseline and t not in tried]
    others = fresh or [t for t in planned if t != baseline] or [t for t in techniques if t != baseline] or [baseline]
    name = others[0 if fresh else len(view.experiments) % len(others)]
    return name, ("the plan's technique" if name in planned else "an untried technique") + " (fallback)"


TRAINING_NOTE = (f"\nOr choose {TRAIN} to fine-tune the model under study itself (SFT or GRPO with LoRA, on problems "
                 "outside the dev and report splits); you give the training settings next, and the trained model is "
                 "evaluated on the dev split like any technique.")


def published_techniques(view: LabView) -> dict[str, tuple[str, dict[str, Any]]]:
    """Prompt techniques other labs published, found by the literature review: ``NAME@PAPER_ID`` -> (paper id,
    spec). Starting from one extends that paper (it is cited as "extends")."""
    return {f"{t.name}@{paper.id}": (str(paper.id), t.spec) for paper in view.literature for t in paper.techniques
            if t.kind == "prompt" and t.spec}


def _parent_spec(view: LabView, parent: int) -> dict[str, Any] | None:
    """The prompt spec of earlier experiment #parent, or None."""
    node = parent_node(view, parent)
    return node.spec.dump() if node and node.spec else None


def run_iteration(view: LabView, ctx: AgentContext) -> Experiment:
    """One experiment: propose, run on the dev split (a job), let the SW engineer fix a failure."""
    return run_proposed(view, ctx, *propose_iteration(view, ctx))


def propose_iteration(view: LabView, ctx: AgentContext) -> tuple[Experiment, TechniqueSpec | None]:
    """(the experiment's entry with its proposal, the spec to run; None for a training technique): the first half
    of ``run_iteration``, so a round of the search can propose all its expansions before running any."""
    iteration = len(view.experiments) + 1
    proposal, fell_back, spec, adjusted = _proposal(view, ctx, iteration)
    entry = Experiment(iteration=iteration, proposal=ProposalRef.model_validate(proposal.model_dump()),
                       proposal_source="fallback" if fell_back else "llm", attempts=[],
                       adjustments=adjusted)  # what the lab did not run as asked, and why
    if proposal._parent_asked is not None:
        entry.parent_asked = proposal._parent_asked
        ctx.note(f"experiment {iteration}: the ML engineer named parent #{proposal._parent_asked}; the search "
                 f"expanded {f'#{proposal.parent}' if proposal.parent else 'the baseline'} (best paired dev score)")
    return entry, spec


def _attempt(key: str, result: JobResult) -> Attempt:
    return Attempt(key=key, job_id=result.job_id, status=result.status, error=clip(result.error, 300) or None)


def run_proposed(view: LabView, ctx: AgentContext, entry: Experiment, spec: TechniqueSpec | None) -> Experiment:
    """The second half of ``run_iteration``: the proposed experiment's jobs, with the SW engineer's fixes."""
    iteration, fell_back = entry.iteration, entry.proposal_source == "fallback"
    proposal = TechniqueProposal.model_validate(entry.proposal.dump())
    if spec is None:  # a training technique
        return train_iteration(view, ctx, entry, fell_back)
    published = published_techniques(view)
    if proposal.technique in published:
        entry.extends = published[proposal.technique][0]
    if _parent_spec(view, proposal.parent):
        entry.parent = proposal.parent
    max_fixes = ctx.config.max_fix_attempts
    for attempt in range(max_fixes + 1):
        key = f"dev-{iteration}-{attempt}"
        result = ctx.run_job(key, spec, "dev", meta={"proposal": proposal.model_dump(), "fell_back": fell_back,
                                                     "adjustments": entry.adjustments})
        entry.attempts.append(_attempt(key, result))
        entry = entry.with_result(spec, result)
        if result.succeeded or attempt == max_fixes:
            break
        fixed = debug_code(view, ctx, spec, result.error or "", iteration) if spec.kind == "code" else None
        fixed = fixed or sw_engineer.fix(ctx, spec, result.error or "")
        if fixed is None:
            ctx.note(f"experiment {iteration}: job failed and the software engineer gave up")
            break
        spec = fixed
        ctx.note(f"experiment {iteration}: job failed; the software engineer changed the spec and reran it")
    return entry


def _proposal(view: LabView, ctx: AgentContext,
              iteration: int) -> tuple[TechniqueProposal, bool, TechniqueSpec | None, list[str]]:
    """(proposal, fell back, spec, adjustments) of this iteration: the stored one after a crash, else a new one.
    The spec is None for a training technique (``train_iteration`` makes it). Adjustments are what the lab does
    not run as the engineer asked, with why: it is told once and may keep or change its proposal."""
    earlier = ctx.earlier_experiment(f"dev-{iteration}-0")  # resumed after a crash: same proposal
    if earlier and earlier.meta.proposal:
        meta = earlier.meta
        proposal = TechniqueProposal.model_validate(meta.proposal)
        spec = None if proposal.technique == TRAIN else earlier.spec
        return proposal, meta.fell_back, spec, meta.adjustments
    proposal, fell_back = propose(view, ctx)
    if proposal.technique == TRAIN:
        return proposal, fell_back, None, []
    if proposal.technique == CUSTOM_CODE:
        spec = write_code(view, ctx, iteration, proposal.parent)
        if spec is not None:
            return proposal, fell_back, spec, []
        # no usable code: the plan's technique instead
        plan = [t for t in view.plan.techniques if t in ctx.technique_names()]
        proposal.technique = plan[0] if plan else ctx.config.baseline
        fell_back = True
    proposal, spec, adjusted = _adjusted_spec(view, ctx, proposal, iteration)
    if adjusted and not fell_back:  # one bounded re-ask: its second answer runs, adjusted or not
        again, again_fell_back = propose(view, ctx, error=adjusted_text(ctx, proposal, adjusted))
        if not again_fell_back and again.technique not in (TRAIN, CUSTOM_CODE):
            proposal, spec, adjusted = _adjusted_spec(view, ctx, again, iteration)
    if adjusted:
        ctx.note(f"experiment {iteration} ran with the lab's adjustments: {'; '.join(adjusted)}")
    return proposal, fell_back, spec, adjusted


def _adjusted_spec(view: LabView, ctx: AgentContext, proposal: TechniqueProposal,
                   iteration: int) -> tuple[TechniqueProposal, TechniqueSpec, list[str]]:
    """(the proposal that runs, its spec, what of it the lab adjusted): validation's cuts and clamps, a dropped
    written-out part, and what the spec does not do of the fields the engineer wrote."""
    ran, spec, dropped = _authored_spec(view, ctx, proposal, iteration)
    # what the engineer wrote, with the technique it starts from
    requested = _spec_request(view, ran).model_dump(include=ran.model_fields_set | {"technique", "base_spec"})
    return ran, spec, [*ran.adjustments, *dropped, *ctx.spec_adjustments(SpecRequest.model_validate(requested), spec)]


def _spec_request(view: LabView, p: TechniqueProposal) -> SpecRequest:
    """The proposal as ``build_spec`` reads it: its fields, and the spec it starts from when not a built-in."""
    base_spec = _parent_spec(view, p.parent)  # a branch of an earlier experiment: its spec, then the changes
    published = published_techniques(view)
    if not base_spec and p.technique in published:  # start from another lab's published spec, not a built-in
        base_spec = published[p.technique][1]
    return SpecRequest.model_validate({**p.model_dump(), **({"base_spec": base_spec} if base_spec else {})})


def _authored_spec(view: LabView, ctx: AgentContext, proposal: TechniqueProposal,
                   iteration: int) -> tuple[TechniqueProposal, TechniqueSpec, list[str]]:
    """(the proposal that runs, its spec, a line when its written-out part was dropped): an invalid written-out
    technique is re-asked once with the validation error (it names the field), then run with its settings only."""
    try:
        return proposal, ctx.build_spec(_spec_request(view, proposal), iteration), []
    except TechniqueError as exc:
        error = str(exc)
    again, fell_back = propose(view, ctx, error=f"Your last technique was invalid: {clip(error, 400)}. Fix it.")
    if not fell_back and again.technique not in (TRAIN, CUSTOM_CODE):
        try:
            return again, ctx.build_spec(_spec_request(view, again), iteration), []
        except TechniqueError as exc:
            error = str(exc)
    dropped = (f"the written-out technique did not validate ({clip(error, 160)}): ran {proposal.technique} with the "
               "proposed settings only")
    knobs = proposal.knobs_only()
    return knobs, ctx.build_spec(_spec_request(view, knobs), iteration), [dropped]


def train_iteration(view: LabView, ctx: AgentContext, entry: Experiment, fell_back: bool,
                    evaluate_with: str | None = None, standard: dict[str, Any] | None = None) -> Experiment:
    """A training technique: the engineer's settings (a bounded re-ask; a lost recipe varied; the standard one when
    the search retrains) as a recipe, a sandboxed train job, then the checkpoint evaluated on the dev split."""
    iteration, done = entry.iteration, view.experiments
    if evaluate_with and standard:  # the search's tuning stage: the standard recipe, not the engineer's
        tp = TrainingProposal(**standard, evaluate_with=evaluate_with, rationale="the tuning stage's standard recipe")
        (recipe, error), adjusted = ctx.build_recipe(TrainingRequest.model_validate(tp.model_dump()), iteration), []
    else:
        tp, recipe, error, adjusted = _training_recipe(view, ctx, iteration, entry.proposal.parent, evaluate_with)
    if recipe is not None and (change := ctx.retraining_change(tp.model_dump(), done)):
        tp, adjusted = tp.model_copy(update=change[0]), [*adjusted, change[1]]
        recipe, error = ctx.build_recipe(TrainingRequest.model_validate(tp.model_dump()), iteration)
    entry.training_proposal = TrainingRequest.model_validate(tp.model_dump()) if tp else None
    entry.adjustments = adjusted
    if adjusted:
        ctx.note(f"experiment {iteration} trains with the lab's adjustments: {'; '.join(adjusted)}")
    if recipe is None:
        ctx.note(f"experiment {iteration}: no valid training recipe ({clip(error, 160)})")
        return entry.model_copy(update={"spec": None, "record": None, "error": error})
    key = f"train-{iteration}"
    res = ctx.run_training(key, recipe)
    entry.training = res.training
    entry.attempts.append(_attempt(key, res))
    if not res.succeeded:
        ctx.note(f"experiment {iteration}: the training job failed: {clip(res.error, 200)}")
        return entry.model_copy(update={"spec": None, "record": None, "job_id": res.job_id, "error": res.error})
    spec = ctx.training_eval_spec(tp.evaluate_with, tp.method, iteration)
    key = f"dev-{iteration}-0"
    result = ctx.run_job(key, spec, "dev", checkpoint=entry.training.run_id,
                         meta={"proposal": entry.proposal.dump(), "fell_back": fell_back})
    entry.attempts.append(_attempt(key, result))
    return entry.with_result(spec, result)


def _training_recipe(view: LabView, ctx: AgentContext, iteration: int, parent: int = 0,
                     evaluate_with: str | None = None) -> tuple[TrainingProposal, Any, str, list[str]]:
    """(training proposal, validated recipe or None, the last validation error, adjustments); the engineer sees the
    dev evidence of experiment #parent, else the baseline's. Invalid settings are re-asked once naming the field;
    what the lab adjusts (steps over its bound, ...) is told once, and that second answer runs when it validates."""
    names = [evaluate_with] if evaluate_with else ctx.trainable_techniques()
    schema = restrict_choices(TrainingProposal, "evaluate_with", names)
    last = view.experiments[-1] if view.experiments else None  # a retraining is shown what the failed one answered
    shown = last if last and last.training and last.record else parent_node(view, parent)

    def settings(note: str) -> tuple[TrainingProposal, bool, Any, str]:
        tp, fell_back = ask(ctx, ROLE, "ml_engineer_train", schema,
                            lambda: schema(evaluate_with=ctx.config.baseline if ctx.config.baseline in names
                                           else names[0], rationale="default training settings (fallback)"),
                            "training proposal", goal=cclip(ctx, view.goal, 300), history=cclip(ctx, history(view), 700),
                            evidence=cclip(ctx, node_evidence(view, shown), 1500), max_steps=ctx.config.train_max_steps,
                            techniques=", ".join(names), error=f"\n{note}" if note else "")
        recipe, error = ctx.build_recipe(TrainingRequest.model_validate(tp.model_dump()), iteration)
        return tp, fell_back, recipe, error

    def adjustments(tp: TrainingProposal, recipe: Any) -> list[str]:
        return [*tp.adjustments, *ctx.recipe_adjustments(tp.model_dump(include=tp.model_fields_set), recipe)]

    tp, fell_back, recipe, error = settings("")
    if recipe is None:
        tp, fell_back, recipe, error = settings(f"Your last settings were invalid: {error}. Fix them.")
    if recipe is None:
        return tp, None, error, []
    adjusted = adjustments(tp, recipe)
    if adjusted and not fell_back:
        again, again_fell_back, again_recipe, _ = settings(adjusted_text(ctx, tp, adjusted))
        if again_recipe is not None and not again_fell_back:
            tp, recipe, adjusted = again, again_recipe, adjustments(again, again_recipe)
    return tp, recipe, "", adjusted


def write_code(view: LabView, ctx: AgentContext, iteration: int, parent: int = 0) -> TechniqueSpec | None:
    """A validated ``code`` technique spec from the model, or None (noted) when it gives no usable code; the
    engineer sees the dev evidence of experiment #parent, else the baseline's."""
    err = ""
    for attempt in range(2):  # one bounded re-ask with the validation error
        obj, fell_back = ask(ctx, ROLE, "ml_engineer_code", CodeTechnique, lambda: CodeTechnique(code=""),
                             "code technique", goal=cclip(ctx, view.goal, 300),
                             plan=cclip(ctx, view.plan.hypothesis, 300) + (f" (previous code was rejected: {err})"
                                                                           if attempt else ""),
                             history=cclip(ctx, history(view), 600), max_calls=4,
                             evidence=cclip(ctx, node_evidence(view, parent_node(view, parent)), 1500))
        if fell_back or not obj.code.strip():
            break
        try:
            return ctx.code_spec(obj.code, iteration, obj.rationale)
        except TechniqueError as exc:
            err = clip(str(exc), 160)
    ctx.note(f"ml_engineer: no usable code technique in experiment {iteration}; used the plan's technique")
    return None


def debug_code(view: LabView, ctx: AgentContext, spec: TechniqueSpec, error: str,
               iteration: int) -> TechniqueSpec | None:
    """The engineer reads its own code and the failed job's error (with the stack tail) and revises the code;
    None when it gives no usable revision (the software engineer's generic fix follows)."""
    err = ""
    for _ in range(2):  # one bounded re-ask when the revision does not validate
        obj, fell_back = ask(ctx, ROLE, "ml_engineer_debug", CodeTechnique, lambda: CodeTechnique(code=""),
                             "code revision", goal=cclip(ctx, view.goal, 300), code=spec.code or "",
                             error=cclip(ctx, error[-3000:], 1500) + (f"\nYour last revision was rejected: {err}"
                                                                      if err else ""),
                             max_calls=4)
        if fell_back or not obj.code.strip():
            return None
        try:
            fixed = ctx.code_spec(obj.code, iteration, obj.rationale)
        except TechniqueError as exc:
            err = clip(str(exc), 300)
            continue
        ctx.note(f"experiment {iteration}: the code failed; the ML engineer revised it from the error")
        return fixed
    return None


def best_of(experiments: list[Experiment]) -> Experiment | None:
    """The best dev experiment: the highest accuracy; ties go to the cheaper (fewer tokens), then the earlier one."""
    ok = [e for e in experiments if e.record]
    return max(ok, key=lambda e: (e.record.accuracy, -(e.record.tokens_per_problem or 0), -e.iteration), default=None)
