"""Postdoc: leads the plan dialogue with the PhD student, writes the plan, interprets results."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from agentlab.lab.view import LabView
from agents import phd_student
from agents.base import AgentContext, Text, ask, cclip, clip, restrict_choices

ROLE = "postdoc"


class PlanCritique(BaseModel):
    feedback: Text(200)
    approve: bool


class ResearchPlan(BaseModel):
    hypothesis: Text(200, "one testable sentence")
    techniques: list[str] = Field(description="up to three technique names, best first", min_length=1, max_length=3)
    rationale: Text(200, "one sentence")

    @field_validator("techniques")
    @classmethod
    def _some(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("name at least one technique")
        return list(dict.fromkeys(v))[:3]


class Interpretation(BaseModel):
    summary: Text(400, "two sentences on what the results show")
    hypothesis_supported: bool
    limitation: Text(200, "one limitation")


def plan_formulation(view: LabView, ctx: AgentContext) -> dict:
    """A bounded PhD/postdoc dialogue ending in a structured plan."""
    cfg = ctx.config
    techniques = ctx.technique_names()
    dialogue: list[dict[str, str]] = []
    feedback = "; ".join(view.human_feedback)
    proposal = None
    for turn in range(cfg.plan_turns):
        proposal = phd_student.propose(view, ctx, techniques, feedback)
        dialogue.append({"role": "phd_student", "text": f"{proposal.hypothesis} (technique: {proposal.technique})"})
        if turn == cfg.plan_turns - 1:
            break
        critique, _ = ask(ctx, ROLE, "postdoc_critique", PlanCritique,
                          lambda: PlanCritique(feedback="proceed", approve=True), "critique",
                          goal=cclip(ctx, view.goal, 300), proposal=cclip(ctx, dialogue[-1]["text"], 400))
        dialogue.append({"role": "postdoc", "text": clip(critique.feedback, 300)})
        if critique.approve:
            break
        feedback = critique.feedback
    assert proposal is not None
    schema = restrict_choices(ResearchPlan, "techniques", techniques)

    def fallback() -> ResearchPlan:
        return ResearchPlan(hypothesis=proposal.hypothesis, techniques=[proposal.technique],
                            rationale="proposed by the PhD student")

    plan, fell_back = ask(ctx, ROLE, "postdoc_plan", schema, fallback, "research plan",
                          goal=cclip(ctx, view.goal, 300), benchmark=cfg.benchmark, baseline=cfg.baseline,
                          dialogue=cclip(ctx, " | ".join(f"{d['role']}: {d['text']}" for d in dialogue), 900),
                          techniques=", ".join(techniques))
    out = plan.model_dump()
    out.update(benchmark=cfg.benchmark, subset=cfg.subset or {}, baseline=cfg.baseline,
               dev_n=cfg.dev_n, report_n=cfg.report_n, source="fallback" if fell_back else "llm")
    return {"plan": out, "dialogue": dialogue}


def interpret(view: LabView, ctx: AgentContext, results_text: str, experiments_text: str) -> dict:
    comp = view.final.comparison

    def fallback() -> Interpretation:
        better = comp is not None and (comp.delta or 0) > 0
        return Interpretation(summary="The results table reports the measured accuracies.",
                              hypothesis_supported=bool(better and (comp.p_value or 1) < 0.05),
                              limitation="small evaluation subsets")

    obj, fell_back = ask(ctx, ROLE, "postdoc_interpret", Interpretation, fallback, "interpretation",
                         goal=cclip(ctx, view.goal, 300), hypothesis=cclip(ctx, view.plan.hypothesis, 300),
                         results=cclip(ctx, results_text, 600), experiments=cclip(ctx, experiments_text, 600))
    return {"interpretation": {**obj.model_dump(), "source": "fallback" if fell_back else "llm"}}
