"""The claim checker: every number, word of comparison, strength or certainty and method description in prose
must match the records (and specs) of the techniques its sentence names.

A number is bound to the record(s) its sentence names (technique names, the roles "our technique" and "the
baseline" of the paired comparison, split words; see ``claim_rules``); words without numbers (direction,
strength, counts of the paired comparison, method descriptions) are read by ``prose_claims``, which supersedes
the number rules' own reading of comparison words. Checking gives each claim a status: ok, unsupported (the
named record or spec says otherwise) or unbound (the sentence names no technique with a record). Fixing (the
lab's drafts) never substitutes another record's value: a sentence with a wrong or unbound number about exactly
one record is replaced by the generated sentence for that record; one whose failed prose claims share one
generated sentence (the pair's comparison, the spec's description) that also states every record its failed
numbers are about is replaced by it; any other is removed; each such claim keeps a note. Generated content
(tables, the McNemar line, boilerplate) is never checked: drafts are checked section by section and papers
through ``claim_text.prose_sentences``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from agentlab.lab.report.claim_rules import Claim, sentence_claims
from agentlab.lab.report.claim_text import normalize, prose_sentences, sentences
from agentlab.lab.report.evidence import Evidence, record_sentence
from agentlab.lab.report.prose_claims import PROSE_KINDS, Judged, Specs, SpecSource, prose_claims
from agentlab.techniques import TechniqueSpec

__all__ = ["Claim", "CheckResult", "check_claims", "check_paper", "verify_draft", "verify_related_work", "spec_settings",
           "PROSE_SECTIONS"]


@dataclass
class CheckResult:
    text: str
    claims: list[Claim] = field(default_factory=list)

    @property
    def unmatched(self) -> list[Claim]:
        return [c for c in self.claims if c.status != "ok"]

    @property
    def unsupported(self) -> list[Claim]:
        return [c for c in self.claims if c.verdict == "unsupported"]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [asdict(c) for c in self.claims]


def check_claims(text: str, records: list[dict[str, Any]], comparison: dict[str, Any] | None = None,
                 extra_values: Iterable[float] = (), fix: bool = True, specs: SpecSource = None) -> CheckResult:
    """Check the claims in prose ``text``; with ``fix``, rewrite or remove the sentences of failed claims.
    ``specs`` (by spec_hash) describe the techniques whose records carry no ``spec`` of their own.

    Statuses: checking (``fix=False``) ok | unsupported | unbound; fixing ok | fixed | removed (the check's
    finding stays in ``verdict``)."""
    ev = Evidence(records, comparison, extra_values)
    book = Specs(ev.records, specs)
    result = CheckResult(text=text)
    out: list[str] = []
    for sentence, sep in sentences(text):
        if not sentence.strip():
            out.append(sep)
            continue
        judged = _judge(normalize(sentence), ev, book)
        for claim, _, _ in judged:
            claim.sentence = sentence.strip()
        result.claims += [c for c, _, _ in judged]
        new = _fix_sentence(sentence, judged, ev) if fix else sentence
        if fix and new and new != sentence and new.strip() in (o.strip() for o in out):
            new = ""  # two sentences rewritten to the same generated one: the text says it once
        out.append(new + sep if new else ("\n" if sep == "\n" else ""))
    result.text = re.sub(r"[ \t]{2,}", " ", "".join(out)).strip() if fix else text
    return result


def _judge(sentence: str, ev: Evidence, book: Specs) -> list[Judged]:
    """The number rules' claims (without the "k of m" counts the prose rules read as wins), then the prose
    rules' claims."""
    prose, superseded = prose_claims(sentence, ev, book)
    rules = [(c, recs, None) for c, recs in sentence_claims(sentence, ev)
             if not (c.kind == "ratio" and c.text in superseded)]
    return rules + prose


def _fix_sentence(sentence: str, judged: list[Judged], ev: Evidence) -> str:
    """The sentence, its generated replacement (see the module doc), or '' (removed)."""
    bad = [j for j in judged if j[0].verdict != "ok"]
    if not bad:
        return sentence
    new = _replacement(sentence, bad, ev)
    for c, _, _ in bad:
        if new:
            c.status, c.replacement = "fixed", new
            by = "the record's" if c.kind not in PROSE_KINDS else "one generated from the records"
            c.note = f"{c.text!r} does not match {c.expected}; the sentence was replaced by {by}"
        else:
            c.status = "removed"
            c.note = f"{c.text!r} is {c.verdict} ({c.expected}); the sentence was removed: {sentence.strip()!r}"
    return new or ""


def _replacement(sentence: str, bad: list[Judged], ev: Evidence) -> str | None:
    """Failed prose claims: their one proposed sentence, when it states every record the failed numbers are
    about. Failed numbers alone: the generated sentence of the one record they are about, named by its
    technique name (not only by a role such as "the technique")."""
    prose = [j for j in bad if j[0].kind in PROSE_KINDS]
    numbers = [j for j in bad if j[0].kind not in PROSE_KINDS]
    if prose:
        proposed = {new for _, _, new in prose}
        stated = {id(r) for _, recs, _ in prose for r in recs}
        if len(proposed) == 1 and None not in proposed and all(
                recs and {id(r) for r in recs} <= stated for _, recs, _ in numbers):
            return proposed.pop()
        return None
    ids = {id(r) for _, recs, _ in numbers for r in recs}
    about = [r for _, recs, _ in numbers for r in recs][:1]
    if len(ids) == 1 and all(recs for _, recs, _ in numbers) and about[0].get("accuracy") is not None \
            and about[0]["technique"] in ev.names_in(sentence):
        return record_sentence(about[0])
    return None


PROSE_SECTIONS = ("abstract", "introduction", "method", "discussion", "conclusion")


def verify_draft(draft: dict[str, Any], records: list[dict[str, Any]], comparison: dict[str, Any] | None,
                 extra_values: Iterable[float] = (), keys: Iterable[str] = ("title", *PROSE_SECTIONS),
                 section: str = "", specs: SpecSource = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The text fields ``keys`` of a draft (every prose section and the title by default; a review's fields)
    through the claim checker; returns (clean copy, claims), each claim tagged with ``section`` or its key."""
    clean, claims = dict(draft), []
    extra = list(extra_values)
    for key in keys:
        res = check_claims(str(draft.get(key) or ""), records, comparison, extra, specs=specs)
        clean[key] = res.text
        for c in res.as_dicts():
            claims.append({**c, "section": section or key})
    return clean, claims


def verify_related_work(literature: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each cited paper's summary against that paper's own ranked records (fetched from the server with it):
    a number the cited paper does not report is fixed from its record or removed, like in the lab's own prose."""
    clean, claims = [], []
    for paper in literature:
        fixed, found = verify_draft(paper, paper.get("results") or [], None, keys=("summary",),
                                    section=f"related work [{paper.get('id')}]")
        clean.append(fixed)
        claims += found
    return clean, claims


def check_paper(markdown: str, records: list[dict[str, Any]], comparison: dict[str, Any] | None = None,
                extra_values: Iterable[float] = (), specs: SpecSource = None) -> list[dict[str, Any]]:
    """Every claim in a Markdown paper's prose (generated tables, lines and sections left out), checked."""
    extra = list(extra_values)
    out = []
    for section, sentence in prose_sentences(markdown):
        for c in check_claims(sentence, records, comparison, extra, fix=False, specs=specs).as_dicts():
            out.append({**c, "section": section})
    return out


def spec_settings(specs: Iterable[TechniqueSpec]) -> list[float]:
    """Settings a report may mention (temperatures, top_p, max_tokens) without a record behind them."""
    out: set[float] = set()
    for s in specs:
        out.update((float(s.sampling.temperature), float(s.sampling.top_p), float(s.sampling.max_tokens)))
        out.update(float(t) for t in s.chains.temperatures or [])
    return sorted(out)
