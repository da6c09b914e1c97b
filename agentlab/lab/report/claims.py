"""The claim checker: result-like numbers in prose must match what the harness records support.

It finds percentages, percentage points, decimals and ``x/y`` / ``x out of y`` in prose and compares them
with the values the records support (accuracies, interval bounds, counts, differences, relative changes,
p-values, spec settings). A claim that matches nothing is fixed (when its sentence names exactly one
technique with a record, the number is replaced by that record's value in the same format) or its
sentence is removed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from agentlab.techniques import TechniqueSpec

_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
_CLAIM = re.compile(
    rf"(?P<ratio>(?P<a>{_NUM})\s*(?:/|out of)\s*(?P<b>{_NUM}))"
    rf"|(?P<pct>(?P<p>{_NUM})\s*(?:%|percent\b|percentage points?\b|pp\b))"
    rf"|(?P<dec>(?<![\w.])(?P<d>0?\.\d+|1\.0+)(?![\w.]))"
)
_SPLIT = re.compile(r"((?<=[.!?])[ \t]+|\n)")


@dataclass
class Claim:
    text: str
    kind: str  # percent | points | decimal | ratio
    value: float
    sentence: str
    status: str = "ok"  # ok | fixed | removed
    replacement: str | None = None


@dataclass
class CheckResult:
    text: str
    claims: list[Claim] = field(default_factory=list)

    @property
    def unmatched(self) -> list[Claim]:
        return [c for c in self.claims if c.status != "ok"]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [asdict(c) for c in self.claims]


def supported_values(records: Iterable[dict[str, Any]], comparison: dict[str, Any] | None = None,
                     extra: Iterable[float] = ()) -> dict[str, set[float]]:
    """Values a claim may state, as proportions (``share``), counts (``count``) and other numbers."""
    share: set[float] = set()
    delta: set[float] = set()
    count: set[float] = set()
    ratios: set[tuple[float, float]] = set()
    recs = list(records)
    for r in recs:
        for k in ("accuracy", "ci_low", "ci_high"):
            if r.get(k) is not None:
                share.add(float(r[k]))
        if r.get("n") is not None and r.get("correct") is not None:
            ratios.add((float(r["correct"]), float(r["n"])))
            count.update({float(r["n"]), float(r["correct"])})
    for a in recs:  # differences between any two records, in either direction
        for b in recs:
            if a is not b and a.get("accuracy") is not None and b.get("accuracy") is not None:
                delta.add(abs(float(a["accuracy"]) - float(b["accuracy"])))
                if b["accuracy"]:
                    delta.add(abs(float(a["accuracy"]) / float(b["accuracy"]) - 1))  # relative change
    other = {float(x) for x in extra}
    if comparison:
        if comparison.get("delta") is not None:
            delta.add(abs(float(comparison["delta"])))
        if comparison.get("p_value") is not None:
            other.add(float(comparison["p_value"]))
        for k in ("wins", "losses", "n"):
            if comparison.get(k) is not None:
                count.add(float(comparison[k]))
    return {"share": share, "delta": delta, "count": count, "other": other, "ratios": ratios}  # type: ignore[dict-item]


def _tol(text: str) -> float:
    digits = len(text.split(".")[1]) if "." in text else 0
    return 0.5 * 10 ** (-digits) + 1e-9


def _matches(c: Claim, raw: str, allowed: dict[str, Any]) -> bool:
    if c.kind == "ratio":
        a, b = c.value
        return (a, b) in allowed["ratios"] or (b == 100 and any(abs(100 * s - a) <= 0.5 for s in allowed["share"]))
    tol = _tol(raw)
    if c.kind == "points":  # percentage points: a difference between two records
        return any(abs(100 * s - c.value) <= tol for s in allowed["delta"])
    if c.kind == "percent":
        return any(abs(100 * s - c.value) <= tol for s in allowed["share"] | allowed["delta"])
    # decimal: a proportion (0.45), a difference, a p-value or a spec setting (temperature 0.7)
    return any(abs(s - c.value) <= tol for s in allowed["share"] | allowed["delta"] | allowed["other"])


def _format_like(c: Claim, raw: str, value: float) -> str:
    digits = len(raw.split(".")[1]) if "." in raw else 0
    if c.kind == "percent":
        return f"{100 * value:.{digits}f}%"
    return f"{value:.{max(digits, 2)}f}"


def check_claims(text: str, records: list[dict[str, Any]], comparison: dict[str, Any] | None = None,
                 extra_values: Iterable[float] = (), fix: bool = True) -> CheckResult:
    """Find result-like numbers in ``text`` and check them against the records; fix or remove misses.

    Returns the corrected text and every claim with its status (ok, fixed, removed).
    """
    allowed = supported_values(records, comparison, extra_values)
    by_name = {r["technique"]: r for r in records if r.get("technique")}
    result = CheckResult(text=text)
    out_parts: list[str] = []
    pieces = _SPLIT.split(text)
    for i in range(0, len(pieces), 2):
        sentence = pieces[i]
        sep = pieces[i + 1] if i + 1 < len(pieces) else ""
        if not sentence:
            out_parts.append(sep)
            continue
        new_sentence, drop = _check_sentence(sentence, result.claims, allowed, by_name, fix)
        if drop:
            for c in result.claims:
                if c.sentence == sentence.strip() and c.status == "fixed":
                    c.status = "removed"
            out_parts.append("\n" if sep == "\n" else "")
        else:
            out_parts.append(new_sentence + sep)
    result.text = re.sub(r"[ \t]{2,}", " ", "".join(out_parts)).strip()
    return result


def _check_sentence(sentence: str, claims: list[Claim], allowed: dict[str, Any], by_name: dict[str, dict[str, Any]],
                    fix: bool) -> tuple[str, bool]:
    """Check one sentence's claims (appended to ``claims``): (the sentence with fixes, whether to drop it)."""
    new_sentence, drop = sentence, False
    for cm in reversed(list(_CLAIM.finditer(sentence))):
        parsed = _claim(cm, sentence)
        if parsed is None:
            continue
        claim, raw = parsed
        claims.append(claim)
        if _matches(claim, raw, allowed):
            continue
        if not fix:
            claim.status = "unmatched"
            continue
        named = [n for n in by_name if n and n in sentence]
        if claim.kind in ("percent", "decimal") and len(named) == 1:
            value = by_name[named[0]]["accuracy"]
            claim.status, claim.replacement = "fixed", _format_like(claim, raw, value)
            new_sentence = new_sentence[: cm.start()] + claim.replacement + new_sentence[cm.end():]
        else:
            claim.status, drop = "removed", True
    return new_sentence, drop


def _claim(cm: re.Match, sentence: str) -> tuple[Claim, str] | None:
    """The claim a match of ``_CLAIM`` makes and its number as written (None for ``x/0``)."""
    if cm.group("ratio"):
        a, b = float(cm.group("a").replace(",", "")), float(cm.group("b").replace(",", ""))
        if b == 0:
            return None
        return Claim(cm.group(0), "ratio", (a, b), sentence.strip()), cm.group("a")  # type: ignore[arg-type]
    if cm.group("pct"):
        raw = cm.group("p").replace(",", "")
        kind = "points" if re.search(r"point|pp\b", cm.group(0)) else "percent"
        return Claim(cm.group(0), kind, float(raw), sentence.strip()), raw
    raw = cm.group("d")
    return Claim(cm.group(0), "decimal", float(raw), sentence.strip()), raw


PROSE_SECTIONS = ("abstract", "introduction", "method", "discussion", "conclusion")


def verify_draft(draft: dict[str, Any], records: list[dict[str, Any]], comparison: dict[str, Any] | None,
                 extra_values: Iterable[float] = ()) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every prose section (and the title) through the claim checker; returns (clean draft, claims)."""
    clean, claims = dict(draft), []
    extra = list(extra_values)
    for key in ("title", *PROSE_SECTIONS):
        res = check_claims(str(draft.get(key) or ""), records, comparison, extra)
        clean[key] = res.text
        for c in res.as_dicts():
            claims.append({**c, "section": key})
    return clean, claims


def spec_settings(specs: Iterable[TechniqueSpec]) -> list[float]:
    """Settings a report may mention (temperatures, top_p) without a record behind them."""
    out: set[float] = set()
    for s in specs:
        out.update((float(s.sampling.temperature), float(s.sampling.top_p)))
        out.update(float(t) for t in s.chains.temperatures or [])
    return sorted(out)
