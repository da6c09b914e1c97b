"""Claims with or without a number that the number rules (``claim_rules``) do not read: the prose checkers'
one entry point.

- direction and strength words (``prose_words``): "outperforms", "a slight decrease", "proven", "substantially",
  "not significant", against the named pair's accuracies and the paired McNemar test;
- counts of the paired comparison (``prose_counts``): wins, losses, ties, "on N problems";
- method descriptions (``prose_method``): voting, verifier, refinement, few-shot examples, training, against the
  spec that ran and the records.

Each claim comes with the records it is about and the generated sentence that may replace its sentence (the
pair's comparison sentence, the spec's description, a record's sentence; None: remove the sentence). A sentence
citing earlier work ("[3]", "(Wei et al., 2022)") without "we"/"our" is about the literature and left alone.
"""

from __future__ import annotations

from agentlab.lab.report.evidence import Evidence
from agentlab.lab.report.prose_context import Judged, Prose
from agentlab.lab.report.prose_counts import count_claims
from agentlab.lab.report.prose_method import Specs, SpecSource, method_claims
from agentlab.lab.report.prose_words import word_claims

__all__ = ["PROSE_KINDS", "Judged", "SpecSource", "Specs", "prose_claims"]

PROSE_KINDS = ("direction", "strength", "count", "method")


def prose_claims(sentence: str, ev: Evidence, specs: Specs) -> tuple[list[Judged], set[str]]:
    """The prose claims of one normalized sentence, judged; and the texts of the number rules' claims they
    supersede (a "k of m" that counts wins)."""
    p = Prose.of(sentence, ev)
    counts, superseded = count_claims(p)
    return word_claims(p) + counts + method_claims(p, specs), superseded
