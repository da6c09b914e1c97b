"""The claim checker's rules: the claims one sentence makes and whether the records it names support them.

A level claim (a percentage, a decimal, ``x/n``, ``x of n``) is bound to the technique named nearest to it in
its clause (else the sentence's first technique) and must match that record's accuracy, CI bounds or
correct/n. A change (points, "by 10%", "10% higher"), a fold ("2.5x", "twice") and words of comparison are
computed from the pair of techniques the sentence names (or the comparison, when it names one of its two). A
p-value must match the comparison's. Words of significance need the comparison's McNemar p.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from agentlab.lab.report.claim_text import clauses
from agentlab.lab.report.evidence import Evidence, describe, splits_named

_CLAIM = re.compile(
    r"(?P<pv>\bp(?:[- ]?value)?\s*(?P<op>=|<=|>=|<|>|≤|≥|\bof\b|\bwas\b|\bis\b)\s*(?P<pnum>\d*\.\d+(?:e-?\d+)?|[01]\b))"
    r"|(?P<ratio>(?P<a>\d+)\s*(?:/|out of|of)\s*(?:the\s+)?(?P<b>\d+)(?![\d.%]))"
    r"|(?P<tok>(?P<t>\d[\d,]*(?:\.\d+)?)\s*(?P<k>k\s*)?(?:output\s+|completion\s+|generated\s+)?tokens?\b)"
    r"|(?P<fold>(?P<f>\d+(?:\.\d+)?)\s*(?:x\b|×|-?fold\b|times\s+(?=as\b|more\b|higher\b|better\b|the\b|larger\b)))"
    r"|(?P<pct>(?P<p>\d+(?:\.\d+)?)\s*(?P<unit>%|per ?cent\b|percentage points?\b|points?\b|pp\b)"
    r"(?!\s*(?:CI\b|confidence)))"
    r"|(?P<dec>(?<![\w.])(?P<d>0?\.\d+|1\.0+)(?![\w.%]))", re.I)
_DIFF_BEFORE = re.compile(r"(?:\bby|\b(?:gain|improvement|increase|decrease|drop|difference|gap|boost|lead|margin"
                          r"|advantage|change)\s+of)\s*$", re.I)
_DIFF_AFTER = re.compile(r"^\s*(?:absolute\s+|relative\s+)?(?:higher|lower|more|less|better|worse|above|below|over"
                         r"|improvement|increase|decrease|gain|drop|relative|difference|gap|lead|advantage|ahead"
                         r"|behind)\b", re.I)
_SETTING = re.compile(r"temperature|top[_ -]?p\b|sampling", re.I)


@dataclass
class Claim:
    text: str
    kind: str  # percent | change | points | decimal | ratio | fold | tokens | p_value | wording | setting
    value: Any
    sentence: str
    status: str = "ok"  # checking: ok | unsupported | unbound; fixing: ok | fixed | removed
    verdict: str = "ok"  # ok | unsupported | unbound (what the check found, also after fixing)
    bound: list[str] = field(default_factory=list)  # the records (or pair) the claim was checked against
    expected: str = ""
    replacement: str | None = None
    note: str = ""


def _tol(raw: str) -> float:
    if "e" in raw.lower():
        return abs(float(raw)) * 0.05 + 1e-12
    digits = len(raw.split(".")[1]) if "." in raw else 0
    return 0.5 * 10 ** (-digits) + 1e-9


def _close(value: float, raw: str, candidates: list[float]) -> bool:
    return any(abs(value - c) <= _tol(raw) for c in candidates)


@dataclass
class _Ctx:
    sentence: str
    mentions: list[tuple[int, int, str]]
    names: list[str]
    splits: set[str]
    respectively: dict[int, str] = field(default_factory=dict)  # level claim start -> the technique it is about


def sentence_claims(sentence: str, ev: Evidence) -> list[tuple[Claim, list[dict[str, Any]]]]:
    """Every claim in one (normalized) sentence, judged; with the records a level claim was bound to."""
    mentions = ev.mentions(sentence)
    names = list(dict.fromkeys(m[2] for m in mentions))
    ctx = _Ctx(sentence, mentions, names, splits_named(sentence))
    ctx.respectively = _respectively(sentence, names)
    out: list[tuple[Claim, list[dict[str, Any]]]] = []
    for start, end in clauses(sentence, [(a, b) for a, b, _ in mentions]):
        clause_splits = splits_named(sentence[start:end]) or ctx.splits
        for cm in _CLAIM.finditer(sentence, start, end):
            out.append(_judge(cm, ctx, start, clause_splits, ev))
    return out  # words of comparison and significance: agentlab.lab.report.prose_words


def _is_level(cm: re.Match, s: str) -> bool:
    """A claim about one record's value (a share, x/n, a decimal), not a change, fold, p-value or setting."""
    if cm.group("pct"):
        return not re.match(r"pp|point|percentage", cm.group("unit"), re.I) \
            and not _DIFF_BEFORE.search(s[:cm.start()]) and not _DIFF_AFTER.match(s[cm.end():])
    return bool(cm.group("ratio") or cm.group("dec")) and not _SETTING.search(s[max(0, cm.start() - 40):cm.start()])


def _respectively(s: str, names: list[str]) -> dict[int, str]:
    """"A and B reached 55% and 45%, respectively": the i-th group of level claims is about the i-th name."""
    if len(names) < 2 or not re.search(r"\brespectively\b", s, re.I):
        return {}
    levels = [cm.start() for cm in _CLAIM.finditer(s) if _is_level(cm, s)]
    if not levels or len(levels) % len(names):
        return {}
    per = len(levels) // len(names)
    return {at: names[i // per] for i, at in enumerate(levels)}


def _judge(cm: re.Match, ctx: _Ctx, start: int, splits: set[str], ev: Evidence
           ) -> tuple[Claim, list[dict[str, Any]]]:
    s = ctx.sentence
    if cm.group("pv"):
        return _judge_p(Claim(cm.group(0), "p_value", float(cm.group("pnum")), s), cm, ev), []
    if cm.group("tok"):
        value = float(cm.group("t").replace(",", "")) * (1000 if cm.group("k") else 1)
        return _judge_tokens(Claim(cm.group(0), "tokens", value, s), cm, ctx, start, splits, ev)
    if cm.group("fold"):
        claim = Claim(cm.group(0), "fold", float(cm.group("f")), s)
        at_least = bool(re.search(r"\b(?:more than|over|at least)\s*$", s[start:cm.start()], re.I))
        return _judge_pair(claim, cm.group("f"), ctx, splits, ev, at_least), []
    if cm.group("pct"):
        raw = cm.group("p")
        if re.match(r"pp|point|percentage", cm.group("unit"), re.I):
            kind = "points"
        elif _DIFF_BEFORE.search(s[start:cm.start()]) or _DIFF_AFTER.match(s[cm.end():]):
            kind = "change"
        else:
            kind = "percent"
        claim = Claim(cm.group(0), kind, float(raw), s)
        if kind != "percent":
            return _judge_pair(claim, raw, ctx, splits, ev), []
        return _judge_level(claim, raw, cm, ctx, start, splits, ev)
    if cm.group("ratio"):
        claim = Claim(cm.group(0), "ratio", (float(cm.group("a")), float(cm.group("b"))), s)
        return _judge_level(claim, cm.group("a"), cm, ctx, start, splits, ev)
    claim = Claim(cm.group(0), "decimal", float(cm.group("d")), s)
    if _SETTING.search(s[max(0, cm.start() - 40):cm.start()]):
        claim.kind = "setting"
        _set(claim, _close(claim.value, cm.group("d"), ev.extra), "spec settings",
             "settings: " + ", ".join(f"{x:g}" for x in ev.extra))
        return claim, []
    return _judge_level(claim, cm.group("d"), cm, ctx, start, splits, ev)


def _set(claim: Claim, ok: bool, bound: str | list[str], expected: str) -> Claim:
    claim.verdict = claim.status = "ok" if ok else "unsupported"
    claim.bound = [bound] if isinstance(bound, str) else bound
    claim.expected = expected
    return claim


def _unbound(claim: Claim, why: str) -> Claim:
    claim.verdict = claim.status = "unbound"
    claim.expected = why
    return claim


def _bind(cm: re.Match, ctx: _Ctx, start: int) -> str | None:
    """The technique a level claim is about: its place in a "respectively" list, else the nearest named before
    it in its clause, else after, else the subject."""
    if cm.start() in ctx.respectively:
        return ctx.respectively[cm.start()]
    clause_end = len(ctx.sentence)
    before = [m for m in ctx.mentions if start <= m[0] and m[1] <= cm.start()]
    if before:
        return before[-1][2]
    after = [m for m in ctx.mentions if cm.end() <= m[0] < clause_end and _same_clause(ctx, cm.end(), m[0])]
    if after:
        return after[0][2]
    return ctx.names[0] if ctx.names else None


def _same_clause(ctx: _Ctx, a: int, b: int) -> bool:
    return not re.search(r",|;|\s(?:while|whereas|but|and|versus|vs\.?|compared)\s", ctx.sentence[a:b], re.I)


def _judge_level(claim: Claim, raw: str, cm: re.Match, ctx: _Ctx, start: int, splits: set[str], ev: Evidence
                 ) -> tuple[Claim, list[dict[str, Any]]]:
    name = _bind(cm, ctx, start)
    if name is None:
        return _unbound(claim, "the sentence names no technique with a record"), []
    recs = ev.recs(name, splits)
    if not recs:
        return _unbound(claim, f"no {'/'.join(sorted(splits))} record of {name}"), []
    ok = any(_level_ok(claim, raw, r) for r in recs)
    return _set(claim, ok, [describe(r) for r in recs], "; ".join(describe(r) for r in recs)), recs


def _judge_tokens(claim: Claim, cm: re.Match, ctx: _Ctx, start: int, splits: set[str], ev: Evidence
                  ) -> tuple[Claim, list[dict[str, Any]]]:
    """A token count is a budget the specs set (max_tokens) or the named record's tokens per problem (as
    rounded in prose: within 2%, or 1000 for "k tokens")."""
    if any(claim.value == x for x in ev.extra):
        return _set(claim, True, "spec settings", "a max_tokens setting"), []
    name = _bind(cm, ctx, start)
    recs = [r for r in ev.recs(name, splits) if r.get("tokens_per_problem") is not None] if name else []
    if not recs:
        return _unbound(claim, "no record with token counts for the technique the sentence names"), []
    tol = 500 if cm.group("k") else 0
    ok = any(abs(claim.value - float(r["tokens_per_problem"])) <= max(tol, 0.02 * float(r["tokens_per_problem"]), 0.5)
             for r in recs)
    return _set(claim, ok, [describe(r) for r in recs],
                "; ".join(f"{describe(r)}: {float(r['tokens_per_problem']):.0f} tokens per problem" for r in recs)), recs


def _level_ok(claim: Claim, raw: str, r: dict[str, Any]) -> bool:
    shares = [float(r[k]) for k in ("accuracy", "ci_low", "ci_high") if r.get(k) is not None]
    if claim.kind == "ratio":
        a, b = claim.value
        counts = (float(r.get("correct", -1)), float(r.get("n", -1)))
        return (a, b) == counts or (b == 100 and _close(a, "0", [100 * s for s in shares]))
    if claim.kind == "percent":
        return _close(claim.value, raw, [100 * s for s in shares])
    return _close(claim.value, raw, shares)


def _pairs(ctx: _Ctx, ev: Evidence) -> list[tuple[str, str]]:
    """The pairs a change, fold or comparison word may be about: those the sentence names, or the comparison."""
    if len(ctx.names) >= 2:
        return list(itertools.combinations(ctx.names, 2))
    if len(ctx.names) == 1 and ev.pair and ctx.names[0] in ev.pair:
        return [ev.pair]
    return []


def _pair_values(kind: str, a: float, b: float) -> list[float]:
    if kind == "points":
        return [100 * abs(a - b)]
    if kind == "change":
        return [100 * abs(a - b)] + ([100 * abs(a / b - 1)] if b else []) + ([100 * abs(b / a - 1)] if a else [])
    return ([a / b] if b else []) + ([b / a] if a else [])  # fold


def _judge_pair(claim: Claim, raw: str, ctx: _Ctx, splits: set[str], ev: Evidence, at_least: bool = False
                ) -> Claim:
    pairs = _pairs(ctx, ev)
    if not pairs:
        return _unbound(claim, "the sentence names no pair of techniques with records")
    values: list[float] = []
    bound = []
    for a, b in pairs:
        for ra, rb in itertools.product(ev.recs(a, splits), ev.recs(b, splits)):
            if ra.get("accuracy") is not None and rb.get("accuracy") is not None:
                values += _pair_values(claim.kind, float(ra["accuracy"]), float(rb["accuracy"]))
                bound.append(f"{describe(ra)} vs {describe(rb)}")
    if not bound:
        return _unbound(claim, "no records for the named pair on the named split")
    if claim.kind == "fold":  # "3-fold" is 2.75 to 3.25; "more than 2x" is at least 2
        ok = any(v >= claim.value if at_least else abs(v - claim.value) <= _tol(raw) / 2 for v in values)
    else:
        ok = _close(claim.value, raw, values)
    return _set(claim, ok, bound, ", ".join(f"{v:.3g}" for v in values))


def _judge_p(claim: Claim, cm: re.Match, ev: Evidence) -> Claim:
    p = ev.p_value
    if p is None:
        return _unbound(claim, "no paired comparison")
    op, x = cm.group("op").lower(), claim.value
    ok = {"<": p < x, "≤": p <= x, "<=": p <= x, ">": p > x, "≥": p >= x, ">=": p >= x}.get(
        op, abs(p - x) <= _tol(cm.group("pnum")) or (x == 0 and p < 1e-3))
    return _set(claim, ok, "McNemar comparison", f"p = {p:.3g}")
