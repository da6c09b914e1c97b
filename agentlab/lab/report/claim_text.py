"""Text handling for the claim checker: number words, sentences and clauses, and the prose of a Markdown paper.

Generated content (tables, the McNemar and sizing lines, the results boilerplate, code blocks, notes,
provenance, related-work summaries) is left out of what :func:`prose_sentences` yields, so it never counts as claims.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
          "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_WORD = (rf"(?:(?:{'|'.join(_TENS)})(?:[- ](?:{'|'.join(_UNITS[1:10])}))?|(?:one |a )?hundred"
         rf"|{'|'.join(reversed(_UNITS))})")
_UNIT_AFTER = r"(?=\s*(?:%|per ?cent\b|percentage points?\b|points?\b|-?fold\b|times\b|x\b|of\b|out of\b))"
_WORD_NUM = re.compile(rf"\b{_WORD}\b{_UNIT_AFTER}", re.I)
_WORD_AFTER_OF = re.compile(rf"(?<=\d)(\s+(?:of|out of)\s+(?:the\s+)?){_WORD}\b", re.I)
_FOLD_WORDS = [(re.compile(r"\btwice\b", re.I), "2x"), (re.compile(r"\b(?:doubled|doubles|double)\b", re.I), "2x"),
               (re.compile(r"\b(?:tripled|triples|triple)\b", re.I), "3x"),
               (re.compile(r"\bhalf(?= (?:of )?the (?:problems|questions|items|cases|test|examples))", re.I), "50%")]


def word_value(word: str) -> int:
    w = re.sub(r"\s+", " ", word.lower().replace("-", " ")).strip()
    if w.endswith("hundred"):
        return 100
    parts = w.split(" ")
    total = 0
    for p in parts:
        total += _TENS.index(p) * 10 + 20 if p in _TENS else _UNITS.index(p)
    return total


def normalize(sentence: str) -> str:
    """Number words as digits ("ninety percent" -> "90 percent", "nineteen of twenty" -> "19 of 20", "twice" -> 2x),
    without thousands separators."""
    s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", sentence)  # thousands separators: 1,234 -> 1234
    s = _WORD_NUM.sub(lambda m: str(word_value(m.group(0))), s)
    s = _WORD_AFTER_OF.sub(lambda m: m.group(1) + str(word_value(m.group(0)[len(m.group(1)):])), s)
    for rx, rep in _FOLD_WORDS:
        s = rx.sub(rep, s)
    return s


_SPLIT = re.compile(r"((?<=[.!?])[ \t]+(?=[A-Z0-9*_`(\"'])|\n)")


def sentences(text: str) -> list[tuple[str, str]]:
    """(sentence, separator after it) pairs; joining them gives ``text`` back."""
    pieces = _SPLIT.split(text)
    return [(pieces[i], pieces[i + 1] if i + 1 < len(pieces) else "") for i in range(0, len(pieces), 2)]


_CLAUSE = re.compile(r",|;|\s+(?:while|whereas|but|and|versus|vs\.?|compared (?:with|to)|against)\s+", re.I)


def clauses(sentence: str, protected: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(start, end) of the sentence's clauses; separators inside ``protected`` spans (names) do not split."""
    out, start = [], 0
    for m in _CLAUSE.finditer(sentence):
        if any(a <= m.start() < b for a, b in protected):
            continue
        out.append((start, m.start()))
        start = m.end()
    out.append((start, len(sentence)))
    return out


_SKIP_SECTIONS = re.compile(r"related work|notes on this run|provenance|references", re.I)
_GENERATED_LINE = re.compile(
    r"^\s*(?:\||!\[|\*Lab:\*|> \*\*Incomplete run\.\*\*|Paired comparison on the same \d+ problems \(exact McNemar"
    r"|Benchmark `[^`]*`; the technique was tuned on a dev split|No evaluation finished on the report split\."
    r"|Technique specification \(as run by the harness\):|No earlier papers on this goal"
    r"|Prior best: `[^`]*` is the best published technique|The technique's full specification \(\d+ characters\)"
    r"|Report-split sizing: |> \*\*Demo-size run\.\*\*|Confirmation on \d+ fresh dev problems \(|Ablation of \S+ \()")


def prose_sentences(markdown: str) -> Iterator[tuple[str, str]]:
    """(section, sentence) for every prose sentence of a Markdown paper: the title and the text under each
    heading, without tables, code blocks, images, the generated results lines, notes, provenance or related work."""
    section, skip, fenced = "title", False, False
    for line in markdown.splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or not line.strip():
            continue
        head = re.match(r"^(#+)\s+(.*)$", line)
        if head:
            if len(head.group(1)) == 1:
                section, skip = "title", False
                yield section, head.group(2).strip()
            elif len(head.group(1)) == 2:
                section = re.sub(r"^[\d.]+\s*", "", head.group(2)).strip().lower()
                skip = bool(_SKIP_SECTIONS.search(section))
            continue
        if skip or _GENERATED_LINE.match(line):
            continue
        for s, _ in sentences(line.strip()):
            if s.strip():
                yield section, s.strip()
