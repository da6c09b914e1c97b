"""Only papers the lab used are cited: read and judged relevant, or built on ("extends") or measured against."""

from __future__ import annotations

from agentlab.lab.report.paper import build_paper
from agentlab.lab.state import LabConfig

DRAFT = {k: f"{k} text." for k in ("title", "abstract", "introduction", "method", "discussion", "conclusion")}


def _paper(i: int, relevant: bool) -> dict:
    return {"id": f"p{i}", "title": f"Paper {i}", "summary": f"Summary {i}.", "relevant": relevant, "results": []}


def test_only_used_papers_are_cited(tmp_path):
    lit = [_paper(1, True), _paper(2, False), _paper(3, False)]
    state = {"run_id": "lab-x", "goal": "g", "literature": lit,
             "experiments": [{"iteration": 1, "extends": "p3", "proposal": {}, "record": None, "spec": None}]}
    paper = build_paper(state, DRAFT, LabConfig(), tmp_path)
    assert paper.citations == ["p1", "p3"] and paper.relations == {"p3": "extends"}
    assert "- [p1] *Paper 1*" in paper.markdown and "- [p3] *Paper 3*" in paper.markdown
    assert "- [p2]" not in paper.markdown
    assert "Also returned by the search and not used (not cited): *Paper 2*." in paper.markdown
    assert "Paper 2" not in paper.latex and "Paper 1" in paper.latex


def test_no_relevant_paper_says_so(tmp_path):
    state = {"run_id": "lab-x", "goal": "g", "literature": [_paper(1, False)], "experiments": []}
    paper = build_paper(state, DRAFT, LabConfig(), tmp_path)
    assert paper.citations == []
    assert "No earlier paper the search returned bore on this goal." in paper.markdown
