"""Reviewers: three NeurIPS-style personas score the report."""

from __future__ import annotations

from statistics import mean
from typing import Any

from pydantic import BaseModel, Field

from agentlab.lab.view import Draft, LabView
from agentlab.lab.view import Review as StoredReview
from agents.base import AgentContext, Text, ask, cclip

ROLE = "reviewer"

# The persona comes last in the prompt: the three reviews share the paper as a common prefix, which
# llama.cpp keeps evaluated between calls (only the tail is processed again).
PERSONAS = {
    "methodologist": "You care most about experimental rigor: baselines, held-out evaluation, sample sizes.",
    "skeptic": "You check that every claim is supported by the reported results and nothing is overstated.",
    "clarity": "You care most about clear writing and whether a reader could reproduce the work.",
}


class Review(BaseModel):
    summary: Text(300)
    strength: Text(200)
    weakness: Text(200)
    soundness: int = Field(ge=1, le=4)
    presentation: int = Field(ge=1, le=4)
    contribution: int = Field(ge=1, le=4)
    overall: int = Field(ge=1, le=10)
    confidence: int = Field(ge=1, le=5)


def review(view: LabView, ctx: AgentContext, draft: Draft, table: str) -> list[dict[str, Any]]:
    """The three personas' reviews of ``draft`` (stored form, each with its persona and whether it fell back)."""
    out = []
    for name, persona in PERSONAS.items():
        obj, fell_back = ask(
            ctx, ROLE, "reviewer", Review,
            lambda: Review(summary="no usable review", strength="", weakness="", soundness=2, presentation=2,
                           contribution=2, overall=5, confidence=1),
            f"review ({name})", persona=persona, title=cclip(ctx, draft.title, 200),
            abstract=cclip(ctx, draft.abstract, 600), table=cclip(ctx, table, 600),
            discussion=cclip(ctx, draft.discussion, 500))
        out.append({"persona": name, **obj.model_dump(), "fallback": fell_back})
    return out


def mean_score(reviews: list[StoredReview]) -> float | None:
    """The mean overall score of the reviews that did not fall back; None when none."""
    scores = [r.overall for r in reviews if not r.fallback]
    return mean(scores) if scores else None
