"""ML engineer: proposes technique specs, runs them on the dev split as jobs, refines them."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, PrivateAttr

from agentlab.lab.search import fallback_technique
from agentlab.lab.training import retraining_change, tuning_recipe
from agentlab.techniques import TechniqueError, TechniqueSpec
from agents import sw_engineer
from agents.base import AgentContext, Answer, Clamp, Limited, Text, ask, cclip, clip, restrict_choices

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
TRAIN = "train_model"  # the proposal's technique name for "fine-tune the model under study"


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


def _history(state: dict) -> str:
    """The baseline's dev result, then each experiment with its paired result against the baseline."""
    base = (state.get("dev_baseline") or {}).get("record")
    parts = [f"baseline {_accuracy(base)}"] if base else []
    for e in (state.get("experiments") or [])[-12:]:
        p = e.get("proposal", {})
        rec = e.get("record")
        res = f"accuracy {rec['accuracy']:.3f} (n={rec['n']}){paired_text(e.get('paired'))}" if rec else \
            ("running (a sibling in this round)" if e.get("pending") else f"failed: {clip(e.get('error'), 80)}")
        branch = f" (branch of #{e['parent']})" if e.get("parent") else ""
        if e.get("training_proposal"):
            t = e["training_proposal"]
            parts.append(f"#{e['iteration']} {TRAIN} {t['method']} target={t.get('target')} lr={t['learning_rate']:g} steps="
                         f"{t['max_steps']} batch={t.get('batch_size')} lora_r={t.get('lora_r')} then {t['evaluate_with']}: {res}")
            continue
        ran = e.get("spec") or {}  # what ran, after the lab's adjustments (0 chains asked = the technique's own)
        parts.append(f"#{e['iteration']} {p.get('technique')}{branch} chains={(ran.get('chains') or {}).get('n', p.get('num_chains'))} "
                     f"T={(ran.get('sampling') or {}).get('temperature', p.get('temperature'))}: {res}")
    return "; ".join(parts) or "none yet"


def _accuracy(record: dict[str, Any]) -> str:
    return f"{record['technique']}: accuracy {record['accuracy']:.3f} ({record['correct']}/{record['n']})"


def paired_text(paired: dict[str, Any] | None) -> str:
    """An experiment against the baseline on the same dev problems, as the agents read it."""
    return "" if not paired else (f", vs the baseline on the same {paired['n']} dev problems: {paired['wins']} wins, "
            f"{paired['losses']} losses, {paired['ties']} ties ({100 * paired['delta']:+.1f} points, "
            f"McNemar p={paired['p_value']:.2g})")


def branch_point(state: dict) -> dict[str, Any] | None:
    """The experiment a new proposal is shown as its starting point: of those it can branch from, the one that
    beat the baseline by most on the same dev problems; None when none did (the baseline is the starting
    point)."""
    better = [e for e in state.get("experiments") or []
              if _branchable(e) and e.get("evidence") and (e.get("paired") or {}).get("delta", 0) > 0]
    return max(better, key=lambda e: (e["paired"]["delta"], -e["paired"]["p_value"], -e["iteration"]),
               default=None)


def node_evidence(state: dict, node: dict[str, Any] | None) -> str:
    """What the node a proposal branches from got wrong on the dev split: experiment ``node``, else the
    baseline; headed by what the node is and how it did against the baseline."""
    if node is None:
        base = state.get("dev_baseline") or {}
        head = f"the baseline {_accuracy(base['record'])}" if base.get("record") else "the baseline (failed)"
        return f"{head}\n{evidence_text(base.get('evidence'))}"
    head = f"experiment #{node['iteration']} (parent={node['iteration']}) {_accuracy(node['record'])}"
    return f"{head}{paired_text(node.get('paired'))}\n{evidence_text(node.get('evidence'))}"


def evidence_text(evidence: dict[str, Any] | None) -> str:
    """A dev evaluation's evidence (``agentlab.lab.dev_evidence``) as prompt text; clipped to the context budget."""
    if not evidence:
        return "none yet"
    parts = []
    for dim, groups in (evidence.get("breakdown") or {}).items():
        parts.append(f"accuracy by {dim}: " + ", ".join(f"{k} {v}" for k, v in groups.items()))
    parts.append(f"tokens per problem: {evidence.get('tokens_per_problem')}")
    if evidence.get("errors"):
        parts.append(f"{evidence['errors']} problem(s) had failed requests")
    if evidence.get("max_tokens"):
        parts.append(_truncation_text(evidence["truncated"], evidence["answers"], evidence["max_tokens"]))
    wrong = evidence.get("wrong") or []
    if wrong:
        parts.append(f"{len(wrong)} of {evidence.get('wrong_total', len(wrong))} wrong answers:")
        for i, w in enumerate(wrong, 1):
            label = "model output (cut at max_tokens)" if w.get("cut") else "model output"
            parts.append(f"[{i}] question: {w['question']} | {label}: {w['output']} | extracted answer: "
                         f"{w['answer']} | gold: {w['gold']}" + (f" | error: {w['error']}" if w.get("error") else ""))
    return "\n".join(parts)


def _truncation_text(truncated: int, answers: int, max_tokens: int) -> str:
    if not truncated:
        return f"no dev answer hit max_tokens ({max_tokens} tokens)"
    return (f"{truncated} of {answers} dev answers were cut at {max_tokens} tokens (max_tokens): "
            "a cut answer often has no final answer")


def propose(state: dict, ctx: AgentContext, error: str = "") -> tuple[TechniqueProposal, bool]:
    cfg = ctx.config
    techniques = ctx.technique_names()
    plan = state.get("plan") or {}
    planned = [t for t in plan.get("techniques", []) if t in techniques]

    def fallback(builtin: list[str] = techniques) -> TechniqueProposal:  # bound now: the list grows below
        name, why = fallback_technique(state, planned, builtin, cfg.baseline)
        return TechniqueProposal(technique=name, max_tokens=cfg.max_tokens_per_answer, rationale=why)

    techniques = [*techniques, *published_techniques(state)]
    if cfg.allow_code_techniques:
        techniques = [*techniques, CUSTOM_CODE]
    if cfg.allow_training:
        techniques = [*techniques, TRAIN]
    schema = restrict_choices(TechniqueProposal, "technique", techniques)
    plan_text = f"{plan.get('hypothesis', '')} Techniques: {', '.join(planned) or cfg.baseline}"
    choice = state.get("search_choice")  # the node the search expands (agentlab.lab.search), when it chose one
    node = _parent(state, choice["parent"]) if choice else branch_point(state)
    proposal, fell_back = ask(ctx, ROLE, "ml_engineer_propose", schema, fallback, "technique proposal", error=error,
                              max_chains=cfg.max_chains, answer_tokens=cfg.max_tokens_per_answer,
                              goal=cclip(ctx, state["goal"], 300), plan=cclip(ctx, plan_text, 400),
                              history=cclip(ctx, _history(state), 700), techniques=", ".join(techniques),
                              evidence=cclip(ctx, node_evidence(state, node), 1500),
                              training=TRAINING_NOTE if cfg.allow_training else "")
    if choice and proposal.parent != choice["parent"]:  # the search picks the node, the engineer the change
        asked = proposal.parent
        proposal = proposal.model_copy(update={"parent": choice["parent"]})
        proposal._parent_asked = None if fell_back else asked
    return proposal, fell_back


TRAINING_NOTE = (f"\nOr choose {TRAIN} to fine-tune the model under study itself (SFT or GRPO with LoRA, on problems "
                 "outside the dev and report splits); you give the training settings next, and the trained model is "
                 "evaluated on the dev split like any technique.")


def published_techniques(state: dict) -> dict[str, tuple[str, dict[str, Any]]]:
    """Prompt techniques other labs published, found by the literature review: ``NAME@PAPER_ID`` -> (paper id,
    spec). Starting from one extends that paper (it is cited as "extends")."""
    out = {}
    for paper in state.get("literature") or []:
        for t in paper.get("techniques") or []:
            if t.get("kind", "prompt") == "prompt" and t.get("spec"):
                out[f"{t['name']}@{paper['id']}"] = (str(paper["id"]), t["spec"])
    return out


def _branchable(e: dict[str, Any]) -> bool:
    """An experiment a proposal can branch from: a prompt technique that ran (a code technique's spec cannot
    take changes, and a training technique's spec would run without its trained model)."""
    return bool(e.get("record")) and (e.get("spec") or {}).get("kind") != "code" and not e.get("training")


def _parent(state: dict, parent: int) -> dict[str, Any] | None:
    """Earlier experiment #parent when a proposal can branch from it (a branch point of the tree), or None."""
    return next((e for e in state.get("experiments") or [] if parent and e.get("iteration") == parent
                 and _branchable(e)), None)


def _parent_spec(state: dict, parent: int) -> dict[str, Any] | None:
    """The prompt spec of earlier experiment #parent, or None."""
    node = _parent(state, parent)
    return node["spec"] if node else None


def run_iteration(state: dict, ctx: AgentContext) -> dict:
    """One experiment: propose, run on the dev split (a job), let the SW engineer fix a failure."""
    return run_proposed(state, ctx, *propose_iteration(state, ctx))


def propose_iteration(state: dict, ctx: AgentContext) -> tuple[dict[str, Any], TechniqueSpec | None]:
    """(the experiment's entry with its proposal, the spec to run; None for a training technique): the first half
    of ``run_iteration``, so a round of the search can propose all its expansions before running any."""
    iteration = len(state.get("experiments") or []) + 1
    proposal, fell_back, spec, adjusted = _proposal(state, ctx, iteration)
    entry: dict[str, Any] = {"iteration": iteration, "proposal": proposal.model_dump(),
                             "proposal_source": "fallback" if fell_back else "llm", "attempts": [],
                             "adjustments": adjusted}  # what the lab did not run as asked, and why
    if proposal._parent_asked is not None:
        entry["parent_asked"] = proposal._parent_asked
        ctx.note(f"experiment {iteration}: the ML engineer named parent #{proposal._parent_asked}; the search "
                 f"expanded {f'#{proposal.parent}' if proposal.parent else 'the baseline'} (best paired dev score)")
    return entry, spec


def run_proposed(state: dict, ctx: AgentContext, entry: dict[str, Any], spec: TechniqueSpec | None) -> dict:
    """The second half of ``run_iteration``: the proposed experiment's jobs, with the SW engineer's fixes."""
    iteration, fell_back = entry["iteration"], entry["proposal_source"] == "fallback"
    proposal = TechniqueProposal.model_validate(entry["proposal"])
    if spec is None:  # a training technique
        return train_iteration(state, ctx, entry, fell_back)
    published = published_techniques(state)
    if proposal.technique in published:
        entry["extends"] = published[proposal.technique][0]
    if _parent_spec(state, proposal.parent):
        entry["parent"] = proposal.parent
    max_fixes = ctx.config.max_fix_attempts
    for attempt in range(max_fixes + 1):
        key = f"dev-{iteration}-{attempt}"
        result = ctx.run_job(key, spec, "dev", meta={"proposal": proposal.model_dump(), "fell_back": fell_back,
                                                     "adjustments": entry["adjustments"]})
        entry["attempts"].append({"key": key, "job_id": result.get("job_id"), "status": result["status"],
                                  "error": clip(result.get("error"), 300) or None})
        if result["status"] == "succeeded":
            entry.update(spec=spec.model_dump(mode="json"), record=result["record"], job_id=result.get("job_id"),
                         error=None, evidence=result.get("evidence"))
            break
        entry.update(spec=spec.model_dump(mode="json"), record=None, job_id=result.get("job_id"),
                     error=result.get("error"))
        if attempt == max_fixes:
            break
        fixed = debug_code(state, ctx, spec, result.get("error") or "", iteration) if spec.kind == "code" else None
        fixed = fixed or sw_engineer.fix(ctx, spec, result.get("error") or "")
        if fixed is None:
            ctx.note(f"experiment {iteration}: job failed and the software engineer gave up")
            break
        spec = fixed
        ctx.note(f"experiment {iteration}: job failed; the software engineer changed the spec and reran it")
    return entry


def _proposal(state: dict, ctx: AgentContext,
              iteration: int) -> tuple[TechniqueProposal, bool, TechniqueSpec | None, list[str]]:
    """(proposal, fell back, spec, adjustments) of this iteration: the stored one after a crash, else a new one.
    The spec is None for a training technique (``train_iteration`` makes it). Adjustments are what the lab does
    not run as the engineer asked, with why: it is told once and may keep or change its proposal."""
    earlier = ctx.earlier_experiment(f"dev-{iteration}-0")  # resumed after a crash: same proposal
    if earlier and earlier.get("meta", {}).get("proposal"):
        meta = earlier["meta"]
        proposal = TechniqueProposal.model_validate(meta["proposal"])
        spec = None if proposal.technique == TRAIN else earlier["spec"]
        return proposal, meta.get("fell_back", False), spec, meta.get("adjustments", [])
    proposal, fell_back = propose(state, ctx)
    if proposal.technique == TRAIN:
        return proposal, fell_back, None, []
    if proposal.technique == CUSTOM_CODE:
        spec = write_code(state, ctx, iteration, proposal.parent)
        if spec is not None:
            return proposal, fell_back, spec, []
        # no usable code: the plan's technique instead
        plan = [t for t in (state.get("plan") or {}).get("techniques", []) if t in ctx.technique_names()]
        proposal.technique = plan[0] if plan else ctx.config.baseline
        fell_back = True
    proposal, spec, adjusted = _adjusted_spec(state, ctx, proposal, iteration)
    if adjusted and not fell_back:  # one bounded re-ask: its second answer runs, adjusted or not
        again, again_fell_back = propose(state, ctx, error=_adjusted_text(ctx, proposal, adjusted))
        if not again_fell_back and again.technique not in (TRAIN, CUSTOM_CODE):
            proposal, spec, adjusted = _adjusted_spec(state, ctx, again, iteration)
    if adjusted:
        ctx.note(f"experiment {iteration} ran with the lab's adjustments: {'; '.join(adjusted)}")
    return proposal, fell_back, spec, adjusted


def _adjusted_text(ctx: AgentContext, answer: Answer, adjusted: list[str]) -> str:
    """The re-ask after the lab adjusted an answer: what the engineer asked, what changed and why."""
    asked = json.dumps(answer.model_dump(include=answer.model_fields_set), default=str)
    return (f"Your last answer was {cclip(ctx, asked, 600)}. The lab adjusted it: "
            f"{cclip(ctx, '; '.join(adjusted), 600)}. Answer again: keep it as adjusted, or change it.")


def _adjusted_spec(state: dict, ctx: AgentContext, proposal: TechniqueProposal,
                   iteration: int) -> tuple[TechniqueProposal, TechniqueSpec, list[str]]:
    """(the proposal that runs, its spec, what of it the lab adjusted): validation's cuts and clamps, a dropped
    written-out part, and what the spec does not do of the fields the engineer wrote."""
    ran, spec, dropped = _authored_spec(state, ctx, proposal, iteration)
    requested = {k: v for k, v in _spec_request(state, ran).items()
                 if k in ran.model_fields_set | {"technique", "base_spec"}}
    return ran, spec, [*ran.adjustments, *dropped, *ctx.spec_adjustments(requested, spec)]


def _spec_request(state: dict, p: TechniqueProposal) -> dict[str, Any]:
    """The proposal as ``build_spec`` reads it: its fields, and the spec it starts from when not a built-in."""
    data = p.model_dump()
    published = published_techniques(state)
    if _parent_spec(state, p.parent):  # a branch of an earlier experiment: its spec, then the changes
        data["base_spec"] = _parent_spec(state, p.parent)
    elif p.technique in published:  # start from another lab's published spec, not a built-in
        data["base_spec"] = published[p.technique][1]
    return data


def _authored_spec(state: dict, ctx: AgentContext, proposal: TechniqueProposal,
                   iteration: int) -> tuple[TechniqueProposal, TechniqueSpec, list[str]]:
    """(the proposal that runs, its spec, a line when its written-out part was dropped): an invalid written-out
    technique is re-asked once with the validation error (it names the field), then run with its settings only."""
    try:
        return proposal, ctx.build_spec(_spec_request(state, proposal), iteration), []
    except TechniqueError as exc:
        error = str(exc)
    again, fell_back = propose(state, ctx, error=f"Your last technique was invalid: {clip(error, 400)}. Fix it.")
    if not fell_back and again.technique not in (TRAIN, CUSTOM_CODE):
        try:
            return again, ctx.build_spec(_spec_request(state, again), iteration), []
        except TechniqueError as exc:
            error = str(exc)
    dropped = (f"the written-out technique did not validate ({clip(error, 160)}): ran {proposal.technique} with the "
               "proposed settings only")
    knobs = proposal.knobs_only()
    return knobs, ctx.build_spec(_spec_request(state, knobs), iteration), [dropped]


def train_iteration(state: dict, ctx: AgentContext, entry: dict[str, Any], fell_back: bool,
                    evaluate_with: str | None = None) -> dict[str, Any]:
    """A training technique: the engineer's settings (a bounded re-ask; a lost recipe varied; the standard one when
    the search retrains) as a recipe, a sandboxed train job, then the checkpoint evaluated on the dev split."""
    iteration, done = entry["iteration"], state.get("experiments") or []
    if evaluate_with and (standard := tuning_recipe(done, ctx.config.train_max_steps)):  # the search's tuning stage
        tp = TrainingProposal(**standard, evaluate_with=evaluate_with, rationale="the tuning stage's standard recipe")
        (recipe, error), adjusted = ctx.build_recipe(tp.model_dump(), iteration), []
    else:
        tp, recipe, error, adjusted = _training_recipe(state, ctx, iteration, entry["proposal"].get("parent", 0),
                                                       evaluate_with)
    if recipe is not None and (change := retraining_change(tp.model_dump(), done)):
        tp, adjusted = tp.model_copy(update=change[0]), [*adjusted, change[1]]
        recipe, error = ctx.build_recipe(tp.model_dump(), iteration)
    entry.update(training_proposal=tp.model_dump() if tp else None, adjustments=adjusted)
    if adjusted:
        ctx.note(f"experiment {iteration} trains with the lab's adjustments: {'; '.join(adjusted)}")
    if recipe is None:
        ctx.note(f"experiment {iteration}: no valid training recipe ({clip(error, 160)})")
        return {**entry, "spec": None, "record": None, "error": error}
    key = f"train-{iteration}"
    res = ctx.run_training(key, recipe)
    entry["training"] = res.get("training")
    entry["attempts"].append({"key": key, "job_id": res.get("job_id"), "status": res["status"],
                              "error": clip(res.get("error"), 300) or None})
    if res["status"] != "succeeded":
        ctx.note(f"experiment {iteration}: the training job failed: {clip(res.get('error'), 200)}")
        return {**entry, "spec": None, "record": None, "job_id": res.get("job_id"), "error": res.get("error")}
    spec = ctx.training_eval_spec(tp.evaluate_with, tp.method, iteration)
    key = f"dev-{iteration}-0"
    result = ctx.run_job(key, spec, "dev", checkpoint=entry["training"]["run_id"],
                         meta={"proposal": entry["proposal"], "fell_back": fell_back})
    entry["attempts"].append({"key": key, "job_id": result.get("job_id"), "status": result["status"],
                              "error": clip(result.get("error"), 300) or None})
    return {**entry, "spec": spec.model_dump(mode="json"), "record": result.get("record"),
            "job_id": result.get("job_id"), "error": result.get("error"), "evidence": result.get("evidence")}


def _training_recipe(state: dict, ctx: AgentContext, iteration: int, parent: int = 0,
                     evaluate_with: str | None = None) -> tuple[TrainingProposal, Any, str, list[str]]:
    """(training proposal, validated recipe or None, the last validation error, adjustments); the engineer sees the
    dev evidence of experiment #parent, else the baseline's. Invalid settings are re-asked once naming the field;
    what the lab adjusts (steps over its bound, ...) is told once, and that second answer runs when it validates."""
    names = [evaluate_with] if evaluate_with else ctx.trainable_techniques()
    schema = restrict_choices(TrainingProposal, "evaluate_with", names)
    last = (state.get("experiments") or [{}])[-1]  # a retraining is shown what the failed training answered
    shown = last if last.get("training") and last.get("record") else _parent(state, parent)

    def settings(note: str) -> tuple[TrainingProposal, bool, Any, str]:
        tp, fell_back = ask(ctx, ROLE, "ml_engineer_train", schema,
                            lambda: schema(evaluate_with=ctx.config.baseline if ctx.config.baseline in names
                                           else names[0], rationale="default training settings (fallback)"),
                            "training proposal", goal=cclip(ctx, state["goal"], 300), history=cclip(ctx, _history(state), 700),
                            evidence=cclip(ctx, node_evidence(state, shown), 1500), max_steps=ctx.config.train_max_steps,
                            techniques=", ".join(names), error=f"\n{note}" if note else "")
        recipe, error = ctx.build_recipe(tp.model_dump(), iteration)
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
        again, again_fell_back, again_recipe, _ = settings(_adjusted_text(ctx, tp, adjusted))
        if again_recipe is not None and not again_fell_back:
            tp, recipe, adjusted = again, again_recipe, adjustments(again, again_recipe)
    return tp, recipe, "", adjusted


def write_code(state: dict, ctx: AgentContext, iteration: int, parent: int = 0) -> TechniqueSpec | None:
    """A validated ``code`` technique spec from the model, or None (noted) when it gives no usable code; the
    engineer sees the dev evidence of experiment #parent, else the baseline's."""
    plan, err = state.get("plan") or {}, ""
    for attempt in range(2):  # one bounded re-ask with the validation error
        obj, fell_back = ask(ctx, ROLE, "ml_engineer_code", CodeTechnique, lambda: CodeTechnique(code=""),
                             "code technique", goal=cclip(ctx, state["goal"], 300),
                             plan=cclip(ctx, plan.get("hypothesis", ""), 300) + (f" (previous code was rejected: {err})"
                                                                          if attempt else ""),
                             history=cclip(ctx, _history(state), 600), max_calls=4,
                             evidence=cclip(ctx, node_evidence(state, _parent(state, parent)), 1500))
        if fell_back or not obj.code.strip():
            break
        try:
            return ctx.code_spec(obj.code, iteration, obj.rationale)
        except TechniqueError as exc:
            err = clip(str(exc), 160)
    ctx.note(f"ml_engineer: no usable code technique in experiment {iteration}; used the plan's technique")
    return None


def debug_code(state: dict, ctx: AgentContext, spec: TechniqueSpec, error: str, iteration: int) -> TechniqueSpec | None:
    """The engineer reads its own code and the failed job's error (with the stack tail) and revises the code;
    None when it gives no usable revision (the software engineer's generic fix follows)."""
    err = ""
    for _ in range(2):  # one bounded re-ask when the revision does not validate
        obj, fell_back = ask(ctx, ROLE, "ml_engineer_debug", CodeTechnique, lambda: CodeTechnique(code=""),
                             "code revision", goal=cclip(ctx, state["goal"], 300), code=spec.code or "",
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


def best_of(experiments: list[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [e for e in experiments if e.get("record")]
    if not ok:
        return None
    # highest accuracy; ties go to the cheaper (fewer tokens) and then the earlier experiment
    return max(ok, key=lambda e: (e["record"]["accuracy"], -(e["record"].get("tokens_per_problem") or 0),
                                  -e["iteration"]))
