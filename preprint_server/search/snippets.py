"""What a search reads from the query and shows of a paper: the query's words that keyword search ranks
by, and the words of the best passage around them (a snippet)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

_WORD_RE = re.compile(r"\w+", re.UNICODE)
_SUFFIX_RE = re.compile(r"(?:ies|es|s|ing|ed|ly)$")  # crude stemming, for snippets only
# Words too common to rank by: left out of keyword queries.
_STOP = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "has", "have", "how", "in", "is", "it", "its", "of", "on", "or", "our", "that", "the", "their", "this", "to", "was", "we", "were", "what", "when", "which", "who", "why", "will", "with"]
)


def query_terms(q: str) -> list[str]:
    """The words of a query that keyword search ranks by: lowercased, distinct, no stop words, at most 32."""
    return [w for w in dict.fromkeys(_WORD_RE.findall(q.lower())) if w not in _STOP][:32]


def _word_starts(body: str, stems: Sequence[str], per_stem: int = 40) -> list[tuple[int, str]]:
    """[(offset, stem)] where a word of `body` starts with a stem (any case), in text order; the
    first `per_stem` of each stem only (a word repeated all over a long paper need not be seen
    everywhere to place a snippet, and searches hold the GIL while this runs).

    str.find over the lowercased text: twice as fast as one regex alternation with \\b."""
    lower = body.lower()
    if len(lower) != len(body):  # lowercasing changed offsets (a few non-ASCII letters do)
        rx = re.compile(r"\b(" + "|".join(map(re.escape, stems)) + r")", re.IGNORECASE)
        return [(m.start(), m.group(1).lower()) for m in rx.finditer(body)]
    hits = []
    for stem in stems:
        i, n = lower.find(stem), 0
        while i != -1 and n < per_stem:
            if i == 0 or not (lower[i - 1].isalnum() or lower[i - 1] == "_"):
                hits.append((i, stem))
                n += 1
            i = lower.find(stem, i + 1)
    hits.sort()
    return hits


def keyword_snippet(body: str, terms: Sequence[str], words: int = 24, weights: Mapping[str, float] | None = None) -> str:
    """About `words` words of `body` around the best cluster of query terms ("" if none occurs): the
    most distinct terms, each counting its weight (1 unless `weights` gives one: rarer words count
    more, so the sentence that made the paper match is the one shown).

    Made in Python from the text already loaded (the keyword index stores no text)."""
    if not terms:
        return ""
    # the index stems: match the words sharing a term's plain stem, and count them as that term
    weight_of: dict[str, float] = {}
    for t in terms:
        stem = _SUFFIX_RE.sub("", t) if len(t) > 4 else t
        weight_of[stem] = max(weight_of.get(stem, 0.0), (weights or {}).get(t, 1.0))
    hits = _word_starts(body, list(weight_of))
    if not hits:
        return ""
    span = words * 5  # characters a window of `words` words covers, roughly
    # The window starting at each hit: the highest total weight of distinct terms wins, first on
    # ties. Two pointers and per-term counts of the window [i, j): linear in the number of hits.
    best, best_w, window_w, j = 0, 0.0, 0.0, 0
    counts: dict[str, int] = {}
    for pos, term in hits:
        while j < len(hits) and hits[j][0] < pos + span:
            stem = hits[j][1]
            counts[stem] = counts.get(stem, 0) + 1
            window_w += weight_of[stem] if counts[stem] == 1 else 0.0
            j += 1
        if window_w > best_w + 1e-9:
            best, best_w = pos, window_w
        counts[term] -= 1
        if not counts[term]:
            del counts[term]
            window_w -= weight_of[term]
    start = body.rfind(" ", 0, max(0, best - 20)) + 1  # a few words of context before the first hit
    picked = body[start:].split(None, words)
    out = " ".join(picked[:words])
    return ("… " if start > 0 else "") + out + (" …" if len(picked) > words else "")


def trim(s: str, n: int = 300) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1].rsplit(" ", 1)[0] + " …"
