"""ML engineer: proposes technique specs, runs them on the dev split as jobs, refines them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from agentlab.techniques import TechniqueError, TechniqueSpec
from agents import sw_engineer
from agents.base import AgentContext, Clamp, Limited, Text, ask, cclip, clip, restrict_choices

ROLE = "ml_engineer"


class StepDraft(BaseModel):
    name: Text(30, "lowercase identifier; later templates use it as {name}")
    template: Text(800, "the step's prompt; may use {question} and earlier steps")


class TechniqueProposal(BaseModel):
    """The next experiment: a technique to start from and its settings; optionally the technique written out
    (every optional field left empty keeps the starting technique's own)."""

    technique: str = Field(description="the technique to start from (a name from the list)")
    num_chains: int = Field(1, ge=1, le=8, description="sampled chains (1 = a single answer)")
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

    def knobs_only(self) -> TechniqueProposal:
        """The same proposal without what was written out (when that does not validate)."""
        return self.model_copy(update={"system": "", "template": "", "steps": [], "few_shot": 0, "aggregation": "",
                                       "refine_rounds": 0, "chain_templates": [], "verify": False})


CUSTOM_CODE = "custom_code"  # the proposal's technique name for "write a code technique"
TRAIN = "train_model"  # the proposal's technique name for "fine-tune the model under study"


class TrainingProposal(BaseModel):
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


def _history(experiments: list[dict[str, Any]]) -> str:
    if not experiments:
        return "none yet"
    parts = []
    for e in experiments[-12:]:
        p = e.get("proposal", {})
        rec = e.get("record")
        res = f"accuracy {rec['accuracy']:.3f} (n={rec['n']})" if rec else f"failed: {clip(e.get('error'), 80)}"
        branch = f" (branch of #{e['parent']})" if e.get("parent") else ""
        if e.get("training_proposal"):
            t = e["training_proposal"]
            parts.append(f"#{e['iteration']} {TRAIN} {t['method']} lr={t['learning_rate']:g} steps={t['max_steps']} "
                         f"then {t['evaluate_with']}: {res}")
            continue
        parts.append(f"#{e['iteration']} {p.get('technique')}{branch} chains={p.get('num_chains')} "
                     f"T={p.get('temperature')}: {res}")
    return "; ".join(parts)


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
    wrong = evidence.get("wrong") or []
    if wrong:
        parts.append(f"{len(wrong)} of {evidence.get('wrong_total', len(wrong))} wrong answers:")
        for i, w in enumerate(wrong, 1):
            parts.append(f"[{i}] question: {w['question']} | model output: {w['output']} | extracted answer: "
                         f"{w['answer']} | gold: {w['gold']}" + (f" | error: {w['error']}" if w.get("error") else ""))
    return "\n".join(parts)


def propose(state: dict, ctx: AgentContext, error: str = "") -> tuple[TechniqueProposal, bool]:
    cfg = ctx.config
    techniques = ctx.technique_names()
    plan = state.get("plan") or {}
    planned = [t for t in plan.get("techniques", []) if t in techniques]
    i = len(state.get("experiments") or [])
    default_name = planned[i % len(planned)] if planned else cfg.baseline

    def fallback() -> TechniqueProposal:
        return TechniqueProposal(technique=default_name, max_tokens=cfg.max_tokens_per_answer,
                                 rationale="the plan's technique (fallback)")

    techniques = [*techniques, *published_techniques(state)]
    if cfg.allow_code_techniques:
        techniques = [*techniques, CUSTOM_CODE]
    if cfg.allow_training:
        techniques = [*techniques, TRAIN]
    schema = restrict_choices(TechniqueProposal, "technique", techniques)
    plan_text = f"{plan.get('hypothesis', '')} Techniques: {', '.join(planned) or cfg.baseline}"
    return ask(ctx, ROLE, "ml_engineer_propose", schema, fallback, "technique proposal", error=error,
               max_tokens=400 if (cfg.context_scale or 1.0) <= 1 else min(1500, int(400 * cfg.context_scale)),
               goal=cclip(ctx, state["goal"], 300), plan=cclip(ctx, plan_text, 400),
               history=cclip(ctx, _history(state.get("experiments") or []), 700), techniques=", ".join(techniques),
               evidence=cclip(ctx, evidence_text(_last_evidence(state)), 1500),
               training=TRAINING_NOTE if cfg.allow_training else "")


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


def _parent_spec(state: dict, parent: int) -> dict[str, Any] | None:
    """The prompt spec of earlier experiment #parent that ran (a branch point of the search tree), or None."""
    for e in state.get("experiments") or []:
        if parent and e.get("iteration") == parent and e.get("record") and (e.get("spec") or {}).get("kind") != "code":
            return e["spec"]
    return None


def _last_evidence(state: dict) -> dict[str, Any] | None:
    """The evidence of the latest dev experiment that finished."""
    done = [e for e in state.get("experiments") or [] if e.get("evidence")]
    return done[-1]["evidence"] if done else None


def run_iteration(state: dict, ctx: AgentContext) -> dict:
    """One experiment: propose, run on the dev split (a job), let the SW engineer fix a failure."""
    iteration = len(state.get("experiments") or []) + 1
    proposal, fell_back, spec = _proposal(state, ctx, iteration)
    entry: dict[str, Any] = {"iteration": iteration, "proposal": proposal.model_dump(),
                             "proposal_source": "fallback" if fell_back else "llm", "attempts": []}
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
        result = ctx.run_job(key, spec, "dev", meta={"proposal": proposal.model_dump(), "fell_back": fell_back})
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


def _proposal(state: dict, ctx: AgentContext, iteration: int) -> tuple[TechniqueProposal, bool, TechniqueSpec | None]:
    """(proposal, fell back, spec) of this iteration: the stored one after a crash, else a new one; the spec is
    None for a training technique (``train_iteration`` makes it)."""
    earlier = ctx.earlier_experiment(f"dev-{iteration}-0")  # resumed after a crash: same proposal
    if earlier and earlier.get("meta", {}).get("proposal"):
        proposal = TechniqueProposal.model_validate(earlier["meta"]["proposal"])
        spec = None if proposal.technique == TRAIN else earlier["spec"]
        return proposal, earlier["meta"].get("fell_back", False), spec
    proposal, fell_back = propose(state, ctx)
    if proposal.technique == TRAIN:
        return proposal, fell_back, None
    # keep the model under study's answers within the configured size on tiny runs
    proposal.max_tokens = min(proposal.max_tokens, max(ctx.config.max_tokens_per_answer, 32))
    if proposal.technique == CUSTOM_CODE:
        spec = write_code(state, ctx, iteration)
        if spec is not None:
            return proposal, fell_back, spec
        # no usable code: the plan's technique instead
        plan = [t for t in (state.get("plan") or {}).get("techniques", []) if t in ctx.technique_names()]
        proposal.technique = plan[0] if plan else ctx.config.baseline
        fell_back = True
    return proposal, fell_back, _authored_spec(state, ctx, proposal, iteration)


def _authored_spec(state: dict, ctx: AgentContext, proposal: TechniqueProposal, iteration: int) -> TechniqueSpec:
    """The proposal's spec; an invalid written-out technique is re-asked once with the validation error
    (it names the field), then run with its settings only (noted)."""
    published = published_techniques(state)

    def build(p: TechniqueProposal) -> TechniqueSpec:
        data = p.model_dump()
        if _parent_spec(state, p.parent):  # a branch of an earlier experiment: its spec, then the changes
            data["base_spec"] = _parent_spec(state, p.parent)
        elif p.technique in published:  # start from another lab's published spec, not a built-in
            data["base_spec"] = published[p.technique][1]
        return ctx.build_spec(data, iteration)

    try:
        return build(proposal)
    except TechniqueError as exc:
        error = str(exc)
    again, fell_back = propose(state, ctx, error=f"Your last technique was invalid: {clip(error, 400)}. Fix it.")
    if not fell_back:
        try:
            return build(again)
        except TechniqueError as exc:
            error = str(exc)
    ctx.note(f"experiment {iteration}: the written-out technique did not validate ({clip(error, 160)}); "
             "ran the starting technique with the proposed settings")
    return build(proposal.knobs_only())


def train_iteration(state: dict, ctx: AgentContext, entry: dict[str, Any], fell_back: bool) -> dict[str, Any]:
    """A training technique: the engineer's training settings become a validated recipe (one bounded re-ask with
    the field named), the model under study is fine-tuned as a sandboxed train job, and the trained checkpoint
    is evaluated on the dev split with the chosen technique. A failure is the experiment's error (agents see it)."""
    iteration = entry["iteration"]
    tp, recipe, error = _training_recipe(state, ctx, iteration)
    entry["training_proposal"] = tp.model_dump() if tp else None
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


def _training_recipe(state: dict, ctx: AgentContext, iteration: int) -> tuple[TrainingProposal | None, Any, str]:
    """(training proposal, validated recipe or None, the last validation error)."""
    names = ctx.trainable_techniques()
    schema = restrict_choices(TrainingProposal, "evaluate_with", names)
    error, tp = "", None
    for _ in range(2):  # one bounded re-ask naming the bad field
        tp, _fell_back = ask(ctx, ROLE, "ml_engineer_train", schema,
                             lambda: schema(evaluate_with=ctx.config.baseline if ctx.config.baseline in names
                                            else names[0], rationale="default training settings (fallback)"),
                             "training proposal", goal=cclip(ctx, state["goal"], 300),
                             history=cclip(ctx, _history(state.get("experiments") or []), 700),
                             evidence=cclip(ctx, evidence_text(_last_evidence(state)), 1500),
                             max_steps=ctx.config.train_max_steps, techniques=", ".join(names),
                             error=f"\nYour last settings were invalid: {error}. Fix them." if error else "")
        recipe, error = ctx.build_recipe(tp.model_dump(), iteration)
        if recipe is not None:
            return tp, recipe, ""
    return tp, None, error


def write_code(state: dict, ctx: AgentContext, iteration: int) -> TechniqueSpec | None:
    """A validated ``code`` technique spec from the model, or None (noted) when it gives no usable code."""
    plan, err = state.get("plan") or {}, ""
    for attempt in range(2):  # one bounded re-ask with the validation error
        obj, fell_back = ask(ctx, ROLE, "ml_engineer_code", CodeTechnique, lambda: CodeTechnique(code=""),
                             "code technique", goal=cclip(ctx, state["goal"], 300),
                             plan=cclip(ctx, plan.get("hypothesis", ""), 300) + (f" (previous code was rejected: {err})"
                                                                          if attempt else ""),
                             history=cclip(ctx, _history(state.get("experiments") or []), 600), max_calls=4,
                             evidence=cclip(ctx, evidence_text(_last_evidence(state)), 1500),
                             max_tokens=1200)
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
                             max_calls=4, max_tokens=2000)
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
