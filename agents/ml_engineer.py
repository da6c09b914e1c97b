"""ML engineer: proposes technique specs, runs them on the dev split as jobs, refines them."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from agentlab.techniques import TechniqueError, TechniqueSpec
from agents import sw_engineer
from agents.base import AgentContext, Clamp, Text, ask, cclip, clip, restrict_choices

ROLE = "ml_engineer"


class TechniqueProposal(BaseModel):
    technique: str = Field(description="a technique name from the list")
    num_chains: int = Field(1, ge=1, le=8, description="sampled chains (1 = a single answer)")
    temperature: Annotated[float, Clamp(0.0, 1.5)] = Field(0.0, ge=0.0, le=1.5)
    max_tokens: Annotated[int, Clamp(32, 2048)] = Field(512, ge=32, le=2048)
    instruction: Text(160, "one extra instruction line for the prompt, or empty") = ""
    rationale: Text(200, "one sentence") = ""


CUSTOM_CODE = "custom_code"  # the proposal's technique name for "write a code technique"


class CodeTechnique(BaseModel):
    code: Text(3000, "Python source defining solve(problem, client)")
    rationale: Text(200, "one sentence") = ""


def _history(experiments: list[dict[str, Any]]) -> str:
    if not experiments:
        return "none yet"
    parts = []
    for e in experiments[-4:]:
        p = e.get("proposal", {})
        rec = e.get("record")
        res = f"accuracy {rec['accuracy']:.3f} (n={rec['n']})" if rec else f"failed: {clip(e.get('error'), 80)}"
        parts.append(f"#{e['iteration']} {p.get('technique')} chains={p.get('num_chains')} "
                     f"T={p.get('temperature')}: {res}")
    return "; ".join(parts)


def propose(state: dict, ctx: AgentContext) -> tuple[TechniqueProposal, bool]:
    cfg = ctx.config
    techniques = ctx.technique_names()
    plan = state.get("plan") or {}
    planned = [t for t in plan.get("techniques", []) if t in techniques]
    i = len(state.get("experiments") or [])
    default_name = planned[i % len(planned)] if planned else cfg.baseline

    def fallback() -> TechniqueProposal:
        return TechniqueProposal(technique=default_name, max_tokens=cfg.max_tokens_per_answer,
                                 rationale="the plan's technique (fallback)")

    if cfg.allow_code_techniques:
        techniques = [*techniques, CUSTOM_CODE]
    schema = restrict_choices(TechniqueProposal, "technique", techniques)
    plan_text = f"{plan.get('hypothesis', '')} Techniques: {', '.join(planned) or cfg.baseline}"
    return ask(ctx, ROLE, "ml_engineer_propose", schema, fallback, "technique proposal",
               goal=clip(state["goal"], 300), plan=cclip(ctx, plan_text, 400),
               history=cclip(ctx, _history(state.get("experiments") or []), 700), techniques=", ".join(techniques))


def run_iteration(state: dict, ctx: AgentContext) -> dict:
    """One experiment: propose, run on the dev split (a job), let the SW engineer fix a failure."""
    iteration = len(state.get("experiments") or []) + 1
    proposal, fell_back, spec = _proposal(state, ctx, iteration)
    entry: dict[str, Any] = {"iteration": iteration, "proposal": proposal.model_dump(),
                             "proposal_source": "fallback" if fell_back else "llm", "attempts": []}
    max_fixes = ctx.config.max_fix_attempts
    for attempt in range(max_fixes + 1):
        key = f"dev-{iteration}-{attempt}"
        result = ctx.run_job(key, spec, "dev", meta={"proposal": proposal.model_dump(), "fell_back": fell_back})
        entry["attempts"].append({"key": key, "job_id": result.get("job_id"), "status": result["status"],
                                  "error": clip(result.get("error"), 300) or None})
        if result["status"] == "succeeded":
            entry.update(spec=spec.model_dump(mode="json"), record=result["record"], job_id=result.get("job_id"),
                         error=None)
            break
        entry.update(spec=spec.model_dump(mode="json"), record=None, job_id=result.get("job_id"),
                     error=result.get("error"))
        if attempt == max_fixes:
            break
        fixed = sw_engineer.fix(ctx, spec, result.get("error") or "")
        if fixed is None:
            ctx.note(f"experiment {iteration}: job failed and the software engineer gave up")
            break
        spec = fixed
        ctx.note(f"experiment {iteration}: job failed; the software engineer changed the spec and reran it")
    return entry


def _proposal(state: dict, ctx: AgentContext, iteration: int) -> tuple[TechniqueProposal, bool, TechniqueSpec]:
    """(proposal, fell back, spec) of this iteration: the stored one after a crash, else a new one."""
    earlier = ctx.earlier_experiment(f"dev-{iteration}-0")  # resumed after a crash: same proposal
    if earlier and earlier.get("meta", {}).get("proposal"):
        proposal = TechniqueProposal.model_validate(earlier["meta"]["proposal"])
        return proposal, earlier["meta"].get("fell_back", False), earlier["spec"]
    proposal, fell_back = propose(state, ctx)
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
    return proposal, fell_back, ctx.build_spec(proposal.model_dump(), iteration)


def write_code(state: dict, ctx: AgentContext, iteration: int) -> TechniqueSpec | None:
    """A validated ``code`` technique spec from the model, or None (noted) when it gives no usable code."""
    plan, err = state.get("plan") or {}, ""
    for attempt in range(2):  # one bounded re-ask with the validation error
        obj, fell_back = ask(ctx, ROLE, "ml_engineer_code", CodeTechnique, lambda: CodeTechnique(code=""),
                             "code technique", goal=clip(state["goal"], 300),
                             plan=clip(plan.get("hypothesis", ""), 300) + (f" (previous code was rejected: {err})"
                                                                          if attempt else ""),
                             history=clip(_history(state.get("experiments") or []), 600), max_calls=4,
                             max_tokens=1200)
        if fell_back or not obj.code.strip():
            break
        try:
            return ctx.code_spec(obj.code, iteration, obj.rationale)
        except TechniqueError as exc:
            err = clip(str(exc), 160)
    ctx.note(f"ml_engineer: no usable code technique in experiment {iteration}; used the plan's technique")
    return None


def best_of(experiments: list[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [e for e in experiments if e.get("record")]
    if not ok:
        return None
    # highest accuracy; ties go to the cheaper (fewer tokens) and then the earlier experiment
    return max(ok, key=lambda e: (e["record"]["accuracy"], -(e["record"].get("tokens_per_problem") or 0),
                                  -e["iteration"]))
