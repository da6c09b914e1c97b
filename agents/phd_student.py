"""PhD student: reads the literature and proposes the experiment in the plan dialogue."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

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
    if not results:
        return "none"
    parts = []
    for r in results[:4]:
        acc = r.get("accuracy")
        acc_s = f"{acc:.3f}" if isinstance(acc, (int, float)) else "?"
        parts.append(f"{r.get('technique') or r.get('technique_name') or '?'} on {r.get('benchmark', '?')}: {acc_s}"
                     f" (n={r.get('n', '?')})")
    return "; ".join(parts)


def literature_review(state: dict, ctx: AgentContext) -> dict:
    """Search the preprint server, summarize what comes back, keep the verified results."""
    top_n = ctx.config.literature_top_n
    papers = ctx.search_literature(state["goal"], top_n) if top_n else []
    notes: list[dict[str, Any]] = []
    for paper in papers:
        results = paper.get("results") or []

        def fallback(p=paper) -> PaperNote:
            # unread (no usable note): listed, never cited, unless an experiment uses its technique
            return PaperNote(summary=clip(p.get("abstract") or p.get("title"), 300), useful_idea="", relevant=False)

        note, _ = ask(ctx, ROLE, "phd_paper_note", PaperNote, fallback, "paper summary",
                      goal=cclip(ctx, state["goal"], 300), title=clip(paper.get("title"), 200),
                      abstract=cclip(ctx, paper.get("abstract"), 700), passage=cclip(ctx, paper.get("passage"), 500),
                      techniques=", ".join(t.get("name", "?") for t in paper.get("techniques") or []) or "none",
                      results=format_results(results))
        notes.append({
            "id": paper.get("id"), "title": paper.get("title", ""), "summary": clip(note.summary, 400),
            "useful_idea": clip(note.useful_idea, 200), "relevant": note.relevant, "results": results,
            "techniques": paper.get("techniques") or [],  # published specs another experiment may start from
        })
    return {"literature": notes}


def propose(state: dict, ctx: AgentContext, techniques: list[str], feedback: str) -> PlanProposal:
    cfg = ctx.config
    schema = restrict_choices(PlanProposal, "technique", techniques)
    lit = "; ".join(f"{p['title']}: {p['summary']}" for p in state.get("literature", [])[:3]) or "nothing yet"
    default = next((t for t in techniques if t != cfg.baseline), cfg.baseline)

    def fallback() -> PlanProposal:
        return PlanProposal(hypothesis=f"{default} is more accurate than {cfg.baseline} on {cfg.benchmark}",
                            technique=default)

    obj, _ = ask(ctx, ROLE, "phd_plan_proposal", schema, fallback, "plan proposal",
                 goal=cclip(ctx, state["goal"], 300), benchmark=cfg.benchmark, baseline=cfg.baseline,
                 literature=cclip(ctx, lit, 700), feedback=cclip(ctx, feedback or "none", 300),
                 techniques=", ".join(techniques))
    return obj
