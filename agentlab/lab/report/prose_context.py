"""What the prose checkers (``prose_words``, ``prose_counts``, ``prose_method``) read of one sentence: the
techniques it names (names and roles, "our prompting strategy" included), who the subject of a word is, whether
the word is negated, hedged or cited, and the generated sentences that may replace a sentence they reject.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from agentlab.lab.report.claim_rules import Claim
from agentlab.lab.report.claim_text import _WORD, clauses, word_value
from agentlab.lab.report.evidence import Evidence, split_of, splits_named

Mention = tuple[int, int, str]
Judged = tuple[Claim, list[dict[str, Any]], str | None]  # claim, the records it is about, the sentence to put instead

NUM = rf"(?:\d+|{_WORD})"  # a count as digits or words ("eight wins")


def any_of(*alternatives: str) -> str:
    """One pattern matching any of ``alternatives`` (written a few per line, for reading)."""
    return "|".join(alternatives)


# roles Evidence does not know: "our prompting strategy", "the evolved prompt", "this variant"
_ROLE_TECH = re.compile(
    r"\b(?:our|the|this)\s+(?:(?:proposed|new|evolved|improved|modified|final|winning|tuned|best|discovered"
    r"|prompting|prompt|reasoning)\s+){0,2}(?:technique|method|approach|strategy|prompt|framework|pipeline|variant)\b",
    re.I)
# a mention right after these is what the subject is compared with, not the subject
_OBJECT_BEFORE = re.compile(r"\b(?:" + any_of(
    r"than", r"over", r"against", r"versus", r"vs\.?", r"unlike", r"compared (?:to|with)", r"relative to",
    r"as opposed to", r"contrast (?:to|with)", r"beside", r"by", r"behind", r"below", r"above", r"to",
    r"outperform\w*", r"beat(?:s|en)?", r"trail\w*", r"surpass\w*", r"exceed\w*", r"underperform\w*", r"match\w*",
    r"improv\w* (?:on|upon)",
) + r")\s+(?:the\s+|that of\s+)?$", re.I)
_NEGATION = re.compile(r"\b(?:not(?! only)|n't|no|never|neither|nor|without|fail(?:s|ed)? to|cannot|lacks?|lacking"
                       r"|rather than|instead of)\b(?:(?!\b(?:and|but|while|whereas)\b)[\w\s-]){0,25}$", re.I)
# a modal ("may", but not "could not": that is a negation), a question, a plan or a goal
_HEDGE = re.compile(r"\b(?:" + any_of(
    r"whether", r"if", r"(?:may|might|could|can|would|should|will)(?!\s*not\b|n't|'t)", r"hypothes\w+",
    r"expect\w* (?:that|to)", r"aim\w* to", r"goal", r"hope\w*", r"seek\w*", r"intend\w*", r"investigat\w*",
    r"explor\w*", r"examin\w*", r"propos\w* to", r"designed to", r"meant to", r"attempt\w* to", r"in order to",
    r"so as to", r"to see", r"to test", r"future work", r"wonder\w*",
) + r")\b", re.I)
# "[3]", "[p1, p2]", "(Wei et al., 2022)"
_CITED = re.compile(any_of(r"\[[\w.:-]{1,24}(?:\s*[,;–-]\s*[\w.:-]{1,24})*\](?!\()",
                           r"\([A-Z][\w-]+(?: et al\.)?,? \d{4}[a-z]?\)", r"\bet al\."), re.I)
_RELATIVE = re.compile(r"(?:'s)?\s*,?\s*(?:which|that|who|whose)\b", re.I)
_RESULTS = re.compile(r"\b(?:these|the|our|this) (?:findings|results|experiments|evaluations?)\b", re.I)
_FIRST_PERSON = re.compile(r"\b(?:we|our|us)\b", re.I)


def count_value(text: str) -> int:
    return int(text) if text.isdigit() else word_value(text)


def verdict(claim: Claim, ok: bool, bound: list[str], expected: str) -> Claim:
    claim.verdict = claim.status = "ok" if ok else "unsupported"
    claim.bound, claim.expected = bound, expected
    return claim


@dataclass
class Prose:
    """One normalized sentence and the evidence it is judged against."""

    s: str
    ev: Evidence
    mentions: list[Mention]
    cited: bool  # a citation of earlier work and no "we"/"our": a claim about the literature, left alone
    first_person: bool

    @classmethod
    def of(cls, sentence: str, ev: Evidence) -> Prose:
        mentions = ev.mentions(sentence)
        if ev.pair:
            taken = [(a, b) for a, b, _ in mentions]
            mentions += [(m.start(), m.end(), ev.pair[0]) for m in _ROLE_TECH.finditer(sentence)
                         if not any(a < m.end() and m.start() < b for a, b in taken)]
        first = bool(_FIRST_PERSON.search(sentence))
        return cls(sentence, ev, sorted(mentions), bool(_CITED.search(sentence)) and not first, first)

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(m[2] for m in self.mentions))

    def masked(self) -> str:
        """The sentence with the techniques' names blanked out (self_consistency is a name, not a method)."""
        out = self.s
        for a, b, _ in self.mentions:
            out = out[:a] + " " * (b - a) + out[b:]
        return out

    def is_object(self, m: Mention) -> bool:
        return bool(_OBJECT_BEFORE.search(self.s[max(0, m[0] - 30):m[0]]))

    def clause(self, at: int) -> tuple[int, int]:
        for a, b in clauses(self.s, [(x, y) for x, y, _ in self.mentions]):
            if a <= at <= b:
                return a, b
        return 0, len(self.s)

    def negation(self, at: int) -> str:
        """The negation ("did not", "without") in force at ``at``, or ''."""
        m = _NEGATION.search(self.s[max(0, at - 40):at])
        return m.group(0) if m else ""

    def negated(self, at: int) -> bool:
        return bool(self.negation(at))

    def hedged(self, at: int) -> bool:
        """A word in a question, a hypothesis, a goal or a modal clause asserts nothing."""
        a, _ = self.clause(at)
        return self.s.rstrip().endswith("?") or any(m.start() < at for m in _HEDGE.finditer(self.s, a))

    def splits(self, at: int) -> set[str]:
        a, b = self.clause(at)
        return splits_named(self.s[a:b]) or splits_named(self.s)

    def subject(self, at: int) -> str | None:
        """Whom a word at ``at`` is about: the last technique named before it that is no comparand; else the
        other technique of the comparison when only its comparand is named ("it beats the baseline"); else
        the first named after it; "we" alone means the technique."""
        last = [m for m in self.mentions if m[1] <= at]
        if last and _RELATIVE.match(self.s, last[-1][1]):  # "zero_shot_cot, which uses no verifier"
            return last[-1][2]
        before = [m for m in last if not self.is_object(m)]
        if before:
            return before[-1][2]
        pair = self.ev.pair
        objects = [m[2] for m in self.mentions if self.is_object(m)]
        if pair and objects and objects[0] in pair:
            return pair[1] if objects[0] == pair[0] else pair[0]
        after = [m for m in self.mentions if m[0] >= at and not self.is_object(m)]
        if after:
            return after[0][2]
        implicit = self.first_person or _RESULTS.search(self.s)  # "we", "these findings": the technique
        return pair[0] if pair and implicit and not self.mentions else None

    def actor(self, at: int) -> str | None:
        """Who does what a count or a method word at ``at`` says: the technique named before it in its clause,
        else the sentence's first subject ("X solved 35 problems ... and missed 5 that it solved")."""
        a, _ = self.clause(at)
        last = [m for m in self.mentions if m[1] <= at]
        if last and _RELATIVE.match(self.s, last[-1][1]):
            return last[-1][2]
        here = [m for m in last if m[0] >= a and not self.is_object(m)]
        first = [m for m in self.mentions if not self.is_object(m)]
        return here[-1][2] if here else first[0][2] if first else self.subject(at)

    def comparand(self, subject: str, at: int) -> str | None:
        """What ``subject`` is compared with: a named comparand (after the word first), else its partner in
        the comparison."""
        others = [m for m in self.mentions if m[2] != subject]
        ranked = sorted(others, key=lambda m: (not self.is_object(m), m[0] < at))
        if ranked:
            return ranked[0][2]
        pair = self.ev.pair
        if pair and subject in pair:
            return pair[1] if subject == pair[0] else pair[0]
        return None

    def record(self, name: str, splits: set[str]) -> dict[str, Any] | None:
        recs = [r for r in self.ev.recs(name, splits) if r.get("accuracy") is not None]
        recs.sort(key=lambda r: split_of(r) != "report")
        return recs[0] if recs else None


def _share(r: dict[str, Any]) -> str:
    count = f" ({r['correct']}/{r['n']})" if r.get("correct") is not None and r.get("n") is not None else ""
    return f"{100 * float(r['accuracy']):.1f}%{count}"


def pair_sentence(ev: Evidence, ra: dict[str, Any], rb: dict[str, Any]) -> str:
    """The generated sentence for two records: with the paired test when it is the comparison's pair."""
    a, b = ra["technique"], rb["technique"]
    tested = ev.tested(a, b, {split_of(ra), split_of(rb)})
    if not tested:
        return f"On the {split_of(ra)} split, {a} scored {_share(ra)} and {b} {_share(rb)}."
    if ev.pair and a != ev.pair[0]:
        ra, rb, a, b = rb, ra, b, a
    cmp, p = ev.comparison or {}, float(ev.p_value or 1.0)
    delta = 100 * (float(ra["accuracy"]) - float(rb["accuracy"]))
    counts = (f", {cmp['wins']} wins and {cmp['losses']} losses" if cmp.get("wins") is not None
              and cmp.get("losses") is not None else "")
    ptext = "p < 0.001" if p < 0.001 else f"p = {p:.2g}"
    return (f"On the report split, {a} scored {_share(ra)} against the baseline {b}'s {_share(rb)}: "
            f"{delta:+.1f} points{counts}, McNemar {ptext}, {'significant' if p < 0.05 else 'not significant'}.")
