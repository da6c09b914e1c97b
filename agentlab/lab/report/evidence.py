"""What the records say, as the claim checker asks it: which records a sentence names (techniques, roles, splits)
and the values a named record or a named pair of records supports."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_ROLE_TECH = r"\b(?:our|the|this) (?:proposed |tuned |best |new )?(?:technique|method|approach)\b"
_ROLE_BASE = r"\b(?:the |our |a )?baseline\b"
_DEV = re.compile(r"\bdev(?:elopment)?\b|\btuning (?:split|set)|\bvalidation\b", re.I)
_REPORT = re.compile(r"\bheld[- ]?out\b|\breport(?:ing)? (?:split|set)\b|\btest (?:split|set)\b|\bevaluation split\b",
                     re.I)


def split_of(r: dict[str, Any]) -> str:
    return "dev" if str(r.get("split") or "report").lower().startswith("dev") else "report"


def splits_named(text: str) -> set[str]:
    return ({"dev"} if _DEV.search(text) else set()) | ({"report"} if _REPORT.search(text) else set())


class Evidence:
    """The records a report may cite, the paired comparison (technique vs baseline) and spec settings."""

    def __init__(self, records: Iterable[dict[str, Any]], comparison: dict[str, Any] | None = None,
                 extra: Iterable[float] = ()):
        self.records = [r for r in records if r and r.get("technique")]
        self.comparison = comparison or None
        self.extra = [float(x) for x in extra]
        self.pair = self._comparison_pair()
        names = {r["technique"] for r in self.records}
        self._name_rx = [(n, re.compile(_name_pattern(n), re.I)) for n in sorted(names, key=len, reverse=True)]

    def _comparison_pair(self) -> tuple[str, str] | None:
        """Technique names of the comparison's record_a (technique) and record_b (baseline)."""
        if not self.comparison:
            return None
        by_id = {r.get("record_id"): r for r in self.records if r.get("record_id")}
        a, b = by_id.get(self.comparison.get("record_a")), by_id.get(self.comparison.get("record_b"))
        if a is None or b is None:  # older comparisons: the first two report-split records, in build_paper's order
            rep = [r for r in self.records if split_of(r) == "report"]
            if len(rep) < 2:
                return None
            a, b = rep[0], rep[1]
        return a["technique"], b["technique"]

    def mentions(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, technique name) of every technique named in ``text``, roles included, in order."""
        found: list[tuple[int, int, str]] = []
        taken: list[tuple[int, int]] = []
        for name, rx in self._name_rx:
            for m in rx.finditer(text):
                if not any(a < m.end() and m.start() < b for a, b in taken):
                    found.append((m.start(), m.end(), name))
                    taken.append((m.start(), m.end()))
        if self.pair:
            for rx, name in ((_ROLE_TECH, self.pair[0]), (_ROLE_BASE, self.pair[1])):
                for m in re.finditer(rx, text, re.I):
                    if not any(a < m.end() and m.start() < b for a, b in taken):
                        found.append((m.start(), m.end(), name))
        return sorted(found)

    def names_in(self, text: str) -> set[str]:
        """Technique names written out in ``text`` (roles not counted)."""
        return {name for name, rx in self._name_rx if rx.search(text)}

    def recs(self, name: str, splits: set[str]) -> list[dict[str, Any]]:
        """Records of technique ``name`` on the named splits (none named: report if it has one, else dev)."""
        mine = [r for r in self.records if r["technique"] == name]
        if not splits:
            rep = [r for r in mine if split_of(r) == "report"]
            return rep or mine
        return [r for r in mine if split_of(r) in splits]

    def tested(self, a: str, b: str, splits: set[str]) -> bool:
        """Whether (a, b) is the pair the McNemar comparison tested (report split)."""
        return bool(self.pair and self.comparison and self.comparison.get("p_value") is not None
                    and {a, b} == set(self.pair) and "dev" not in splits)

    @property
    def p_value(self) -> float | None:
        p = (self.comparison or {}).get("p_value")
        return None if p is None else float(p)


def _name_pattern(name: str) -> str:
    parts = [re.escape(p) for p in re.split(r"[_\- ]+", name) if p]
    return r"(?<![\w-])" + r"[_\- ]".join(parts) + r"(?![\w-])"


def describe(r: dict[str, Any]) -> str:
    acc = r.get("accuracy")
    ci = (f", 95% CI {100 * r['ci_low']:.1f}-{100 * r['ci_high']:.1f}%" if r.get("ci_low") is not None
          and r.get("ci_high") is not None else "")
    return (f"{r['technique']} ({split_of(r)}): " + ("no accuracy" if acc is None else f"{100 * acc:.1f}%")
            + (f" ({r.get('correct')}/{r.get('n')})" if r.get("n") is not None else "") + ci)


def record_sentence(r: dict[str, Any]) -> str:
    """The generated sentence that states a record's accuracy (what replaces a wrong number about it)."""
    count = f" ({r['correct']}/{r['n']})" if r.get("n") is not None and r.get("correct") is not None else ""
    return f"{r['technique']} reached {100 * float(r['accuracy']):.1f}% accuracy{count} on the {split_of(r)} split."
