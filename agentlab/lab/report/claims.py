"""The claim checker: every number and word of comparison in prose must match the records its sentence names.

A claim is bound to the record(s) its sentence names (technique names, the roles "our technique" and "the
baseline" of the paired comparison, split words; see ``claim_rules``). Checking gives each claim a status:
ok, unsupported (the named record says otherwise) or unbound (the sentence names no technique with a
record). Fixing (the lab's drafts) never substitutes another record's value: a sentence with a wrong or
unbound claim about exactly one record is replaced by the generated sentence for that record, any other is
removed; each such claim keeps a note. Generated content (tables, the McNemar line, boilerplate) is never
checked: drafts are checked section by section and papers through ``claim_text.prose_sentences``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from agentlab.lab.report.claim_rules import Claim, sentence_claims
from agentlab.lab.report.claim_text import normalize, prose_sentences, sentences
from agentlab.lab.report.evidence import Evidence, record_sentence
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
                 extra_values: Iterable[float] = (), fix: bool = True) -> CheckResult:
    """Check the claims in prose ``text``; with ``fix``, rewrite or remove the sentences of failed claims.

    Statuses: checking (``fix=False``) ok | unsupported | unbound; fixing ok | fixed | removed (the check's
    finding stays in ``verdict``)."""
    ev = Evidence(records, comparison, extra_values)
    result = CheckResult(text=text)
    out: list[str] = []
    for sentence, sep in sentences(text):
        if not sentence.strip():
            out.append(sep)
            continue
        judged = sentence_claims(normalize(sentence), ev)
        for claim, _ in judged:
            claim.sentence = sentence.strip()
        result.claims += [c for c, _ in judged]
        new = _fix_sentence(sentence, judged, ev) if fix else sentence
        out.append(new + sep if new else ("\n" if sep == "\n" else ""))
    result.text = re.sub(r"[ \t]{2,}", " ", "".join(out)).strip() if fix else text
    return result


def _fix_sentence(sentence: str, judged: list[tuple[Claim, list[dict[str, Any]]]], ev: Evidence) -> str:
    """The sentence, the generated sentence for the one record its failed claims are about (named by its
    technique name, not only by a role such as "the technique"), or '' (removed)."""
    bad = [(c, recs) for c, recs in judged if c.verdict != "ok"]
    if not bad:
        return sentence
    ids = {id(r) for _, recs in bad for r in recs}
    about = [r for _, recs in bad for r in recs][:1]
    if len(ids) == 1 and all(recs for _, recs in bad) and about[0].get("accuracy") is not None \
            and about[0]["technique"] in ev.names_in(sentence):
        new = record_sentence(about[0])
        for c, _ in bad:
            c.status, c.replacement = "fixed", new
            c.note = f"{c.text!r} does not match {c.expected}; the sentence was replaced by the record's"
        return new
    for c, _ in bad:
        c.status = "removed"
        c.note = (f"{c.text!r} is {c.verdict} ({c.expected}); the sentence was removed: {sentence.strip()!r}")
    return ""


PROSE_SECTIONS = ("abstract", "introduction", "method", "discussion", "conclusion")


def verify_draft(draft: dict[str, Any], records: list[dict[str, Any]], comparison: dict[str, Any] | None,
                 extra_values: Iterable[float] = (), keys: Iterable[str] = ("title", *PROSE_SECTIONS),
                 section: str = "") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The text fields ``keys`` of a draft (every prose section and the title by default; a review's fields)
    through the claim checker; returns (clean copy, claims), each claim tagged with ``section`` or its key."""
    clean, claims = dict(draft), []
    extra = list(extra_values)
    for key in keys:
        res = check_claims(str(draft.get(key) or ""), records, comparison, extra)
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
                extra_values: Iterable[float] = ()) -> list[dict[str, Any]]:
    """Every claim in a Markdown paper's prose (generated tables, lines and sections left out), checked."""
    extra = list(extra_values)
    out = []
    for section, sentence in prose_sentences(markdown):
        for c in check_claims(sentence, records, comparison, extra, fix=False).as_dicts():
            out.append({**c, "section": section})
    return out


def spec_settings(specs: Iterable[TechniqueSpec]) -> list[float]:
    """Settings a report may mention (temperatures, top_p, max_tokens) without a record behind them."""
    out: set[float] = set()
    for s in specs:
        out.update((float(s.sampling.temperature), float(s.sampling.top_p), float(s.sampling.max_tokens)))
        out.update(float(t) for t in s.chains.temperatures or [])
    return sorted(out)
