"""PhD student: reads the literature and proposes the experiment in the plan dialogue."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from agentlab.lab.models import Record
from agentlab.lab.view import LabView, LiteratureHit
from agents.base import AgentContext, Text, ask, cclip, clip, restrict_choices

ROLE = "phd_student"


class PaperNote(BaseModel):
    summary: Text(300, "one or two sentences")
    useful_idea: Text(200, "one idea from the paper useful for the goal")
    relevant: bool = Field(True, description="false when the paper does not bear on the goal (it is then not cited)")


class PlanProposal(BaseModel):
    hypothesis: Text(200, "one testable sentence")
    technique: str = Field(description="the technique to try first")


def format_results(results: list[dict[str, Any]]) -> str:
    """A paper's ranked records in one line (technique, benchmark, accuracy, n)."""
    records = [Record.model_validate(r) for r in results[:4]]
    return "; ".join(f"{r.technique or '?'} on {r.benchmark or '?'}: {r.accuracy:.3f} (n={r.n})" for r in records) \
        or "none"


def literature_review(view: LabView, ctx: AgentContext) -> dict:
    """Search the preprint server, summarize what comes back, keep the verified results."""
    top_n = ctx.config.literature_top_n
    papers = ctx.search_literature(view.goal, top_n) if top_n else []
    notes: list[dict[str, Any]] = []
    for paper in papers:

        def fallback(p: LiteratureHit = paper) -> PaperNote:
            # unread (no usable note): listed, never cited, unless an experiment uses its technique
            return PaperNote(summary=clip(p.abstract or p.title, 300), useful_idea="", relevant=False)

        note, _ = ask(ctx, ROLE, "phd_paper_note", PaperNote, fallback, "paper summary",
                      goal=cclip(ctx, view.goal, 300), title=clip(paper.title, 200),
                      abstract=cclip(ctx, paper.abstract, 700), passage=cclip(ctx, paper.passage, 500),
                      techniques=", ".join(t.name or "?" for t in paper.techniques) or "none",
                      results=format_results(paper.results))
        notes.append({
            "id": paper.id, "title": paper.title or "", "summary": clip(note.summary, 400),
            "useful_idea": clip(note.useful_idea, 200), "relevant": note.relevant, "results": paper.results,
            # published specs another experiment may start from
            "techniques": [t.dump() for t in paper.techniques],
        })
    return {"literature": notes}


def propose(view: LabView, ctx: AgentContext, techniques: list[str], feedback: str) -> PlanProposal:
    cfg = ctx.config
    schema = restrict_choices(PlanProposal, "technique", techniques)
    lit = "; ".join(f"{p.title}: {p.summary}" for p in view.literature[:3]) or "nothing yet"
    default = next((t for t in techniques if t != cfg.baseline), cfg.baseline)

    def fallback() -> PlanProposal:
        return PlanProposal(hypothesis=f"{default} is more accurate than {cfg.baseline} on {cfg.benchmark}",
                            technique=default)

    obj, _ = ask(ctx, ROLE, "phd_plan_proposal", schema, fallback, "plan proposal",
                 goal=cclip(ctx, view.goal, 300), benchmark=cfg.benchmark, baseline=cfg.baseline,
                 literature=cclip(ctx, lit, 700), feedback=cclip(ctx, feedback or "none", 300),
                 techniques=", ".join(techniques))
    return obj
