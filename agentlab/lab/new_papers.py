"""Collaboration during a run: before every experiment iteration the lab asks the preprint server for the
papers on its goal that it has not read yet (another lab may have published one since the literature
review), and adds them to its literature: their ranked results, and their published techniques, which the
ML engineer may start from (``NAME@PAPER_ID``; the paper is then cited as "extends"). Papers read mid-run
are not summarized by the LLM (the abstract stands for the summary), so a refresh costs two requests per
new paper and no tokens.
"""

from __future__ import annotations

from typing import Any

from agentlab.lab.view import LabView

MAX_NEW = 5  # papers added per refresh (the newest unread ones)


def refresh_literature(view: LabView, ctx: Any) -> list[dict[str, Any]] | None:
    """The run's literature (stored form) with the goal's papers it has not read yet (oldest first), or None when
    there is nothing new, no goal on the server, or the server cannot be read (noted; the lab goes on)."""
    goal_id = view.goal_id
    if not goal_id or not ctx.publisher.url:
        return None
    seen = {str(p.id) for p in view.literature}
    try:
        client = ctx.publisher.client()
        page = client.list_papers(goal=str(goal_id), sort="-created", limit=50)
        fresh = [p for p in page.items if str(p.id) not in seen and p.status != "retracted"][:MAX_NEW]
        new = [_entry(client.get_paper(p.id)) for p in reversed(fresh)]
    except Exception as exc:
        ctx.note(f"new papers on goal {goal_id} could not be read ({type(exc).__name__}: {exc}); "
                 "continuing with the literature read so far")
        return None
    if not new:
        return None
    iteration = len(view.experiments) + 1
    ctx.note(f"before experiment {iteration}: {len(new)} new paper(s) on the goal: "
             + ", ".join(f"{p['id']} ({p['lab']})" for p in new))
    ctx.emit("new_papers", iteration=iteration, papers=[p["id"] for p in new])
    return [*(p.dump() for p in view.literature), *new]


def _entry(paper: Any) -> dict[str, Any]:
    """A literature entry as the literature review makes one (id, title, summary, results, techniques)."""
    results = [r.model_dump(mode="json") for r in paper.results if r.ranked]
    techniques = [{"name": t.name, "spec_hash": t.spec_hash, "kind": t.kind, "spec": t.spec}
                  for t in getattr(paper, "techniques", None) or []]
    return {"id": paper.id, "title": paper.title, "summary": (paper.abstract or paper.title)[:400],
            "useful_idea": "", "results": results, "techniques": techniques, "lab": paper.lab, "read": "mid-run"}
