"""Professor: writes the report from the verified records and revises it after review."""

from __future__ import annotations

import re

from pydantic import BaseModel

from agentlab.lab.view import LabView
from agents.base import AgentContext, Text, ask, cclip, clip

ROLE = "professor"


class ReportDraft(BaseModel):
    title: Text(120, "at most 15 words")
    abstract: Text(700)
    introduction: Text(600)
    method: Text(600)
    discussion: Text(600)
    conclusion: Text(400)


def fallback_draft(view: LabView, ctx: AgentContext, results_text: str) -> ReportDraft:
    """A plain report written from the records alone, used when the model gives nothing usable."""
    cfg = ctx.config
    best = view.final.technique_name or "the best technique"
    return ReportDraft(
        title=f"{best} versus {cfg.baseline} on {cfg.benchmark}",
        abstract=f"We study the goal: {clip(view.goal, 200)} We compare {best} with the baseline "
                 f"{cfg.baseline} on a held-out split; the results table gives the verified accuracies.",
        introduction=clip(view.goal, 400),
        method=f"Hypothesis: {clip(view.plan.hypothesis, 300)} The technique was tuned on a dev split and "
               "evaluated once on a separate report split.",
        discussion=clip(view.interpretation.summary or "See the results table.", 500),
        conclusion="The measured results are reported in the table; conclusions are limited by the subset size.",
    )


def write_report(view: LabView, ctx: AgentContext, results_text: str, method_text: str,
                 feedback: str = "") -> tuple[ReportDraft, bool]:
    lit = "; ".join(f"[{p.id}] {p.title}" for p in view.literature[:5]) or "none"
    draft, fell_back = ask(ctx, ROLE, "professor_report", ReportDraft, lambda: fallback_draft(view, ctx, results_text),
               "report draft", goal=cclip(ctx, view.goal, 300), hypothesis=cclip(ctx, view.plan.hypothesis, 300),
               method=cclip(ctx, method_text, 400), results=cclip(ctx, results_text, 700),
               interpretation=cclip(ctx, view.interpretation.summary, 400),
               literature=cclip(ctx, lit, 400),
               feedback=("Reviewer feedback to address: " + cclip(ctx, feedback, 600)) if feedback else "",
               max_tokens=900)
    if len(draft.title.split()) < 3 or draft.title.strip().lower() in {"reportdraft", "title", "report"}:
        ctx.note("professor: the model's title was unusable; a title was generated from the records")
        draft.title = fallback_draft(view, ctx, results_text).title
    return ended_at_whole_words(draft, ctx), fell_back


def ended_at_whole_words(draft: ReportDraft, ctx: AgentContext) -> ReportDraft:
    """The draft with every field its length limit cut mid-way (llama.cpp's grammar stops a string at its
    maxLength, wherever the model was) ended at its last whole sentence (the title: its last whole word), each
    noted: a paper never ends a section mid-sentence."""
    for name, field in ReportDraft.model_fields.items():
        limit = next((m.max_length for m in field.metadata if getattr(m, "max_length", None)), None)
        text = getattr(draft, name)
        if limit is None or len(text) < limit:
            continue
        kept = text.rsplit(" ", 1)[0] if name == "title" else _whole_sentences(text)
        if kept != text:
            setattr(draft, name, kept)
            ctx.note(f"professor: the {name} reached its limit of {limit} characters mid-sentence; it ends at its "
                     "last whole " + ("word" if name == "title" else "sentence"))
    return draft


def _whole_sentences(text: str) -> str:
    """``text`` up to its last sentence end; all of it when it has none (nothing whole to keep)."""
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
    return text[:ends[-1]] if ends else text
