"""Which of a paper's published techniques to take (``agentlab techniques pull PAPER_ID[:NAME]``).

A lab's paper publishes every technique it evaluated, so that each of its records can be re-run: the technique
it proposes, the baseline it compares it with, its dev experiments, ablations and the prior best. The paper
itself says which one it proposes: its method section prints that technique's spec as a JSON block, or, for a
spec too long to print, the ``techniques pull PAPER_ID:NAME`` line that fetches it (``agentlab.lab.report.paper``).
"""

from __future__ import annotations

import re
from typing import Any

from agentlab.techniques.spec import TechniqueError, TechniqueSpec

_JSON_BLOCK = re.compile(r"```json\s*\n(.*?)\n```", re.S)
_PULL_LINE = re.compile(r"techniques pull PAPER_ID:([^`\s]+)`")


def choose_published(paper_id: str, published: list[Any], name: str = "", body: str = "") -> Any:
    """The technique to take from a paper's ``published`` ones: the one named ``name``; without a name, the one
    the paper proposes (read from its ``body``), or its only one. Raises TechniqueError saying what it has."""
    if not published:
        raise TechniqueError(f"paper {paper_id} publishes no techniques")
    names = ", ".join(t.name for t in published)
    if name:
        named = [t for t in published if t.name == name]
        if len(named) != 1:
            raise TechniqueError(f"paper {paper_id} has no technique {name!r} (it has: {names})")
        return named[0]
    if len(published) == 1:
        return published[0]
    proposed = proposed_technique(published, body)
    if proposed is None:
        raise TechniqueError(f"paper {paper_id} publishes {len(published)} techniques ({names}) and does not say "
                             f"which one it proposes: pick one as {paper_id}:NAME")
    return proposed


def proposed_technique(published: list[Any], body: str) -> Any | None:
    """The published technique whose spec the paper's body prints (or names for pulling); None when it has none."""
    by_hash = {t.spec_hash: t for t in published}
    for block in _JSON_BLOCK.findall(body or ""):
        try:
            spec_hash = TechniqueSpec.parse(block).spec_hash()
        except TechniqueError:  # a JSON block that is not a technique spec
            continue
        if spec_hash in by_hash:
            return by_hash[spec_hash]
    for name in _PULL_LINE.findall(body or ""):
        named = [t for t in published if t.name == name]
        if len(named) == 1:
            return named[0]
    return None
