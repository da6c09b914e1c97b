"""Words of comparison, strength and certainty, judged against the records of the techniques they are about.

A direction word ("outperforms", "a slight decrease", "comparable") is about a subject (``Prose.subject``: the
technique named before it, the technique when only the baseline is named, "we") and a comparand; it must agree
with their accuracies. Strength words ride on the nearest direction word: significance needs the paired McNemar
p < 0.05 (the comparison's own pair, on the report split); certainty ("proven", "shows that", "robust") needs
that and the right direction; size ("substantially", "dramatically") also a gap of at least 10 points; hedges
("slightly") the right direction and no such large, significant gap; "always" no loss. Variability (one run per
technique measures none) and state-of-the-art (nothing here compares with the field) are never supported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from agentlab.lab.report.claim_rules import Claim
from agentlab.lab.report.evidence import describe
from agentlab.lab.report.prose_context import NUM, Judged, Prose, any_of, pair_sentence, verdict

_EFFECT = (r"(?:improvement|gain|increase|boost|margin|drop|decrease|decline|difference|effect|advantage|edge|jump"
           r"|leap|lead|gap)")  # "a large/small ..."
_CUE = re.compile(r"\b(?:(?P<down>" + any_of(
    r"underperform\w*", r"worse", r"lower(?:ed|s)?", r"below", r"behind", r"trail\w*", r"lag\w*", r"falls? short",
    r"fell short", r"inferior", r"less (?:accurate(?:ly)?|effective|successful|helpful)", r"less often", r"fewer", r"hurts?", r"harm\w*", r"degrad\w*",
    r"decreas\w*", r"drops?", r"dropped", r"declin\w*", r"reduc\w*", r"lost to", r"loses to", r"weaker",
    r"regress(?:ed|es)", r"regression(?= in| of)", r"deteriorat\w*", r"(?:went|goes|go|gone) down",
    r"(?:not|n't|never|fail\w* to|unable to) (?:quite )?match(?:ed)?",
) + r")|(?P<up>" + any_of(
    r"outperform\w*", r"better", r"higher", r"greater", r"improv\w*", r"beat(?:s|en)?", r"exceed\w*", r"surpass\w*",
    r"above", r"ahead", r"gain(?:s|ed)?", r"superior", r"more accurate(?:ly)?",
    r"more (?:problems|questions|items|often|errors|mistakes)", r"increas\w*", r"boost\w*", r"rais(?:e|es|ed)",
    r"helps?", r"helped", r"benefit\w*", r"effective(?:ness)?", r"stronger", r"advantage", r"edges? out", r"enhanc\w*",
    r"(?:went|goes|go|gone) up",
) + r")|(?P<same>" + any_of(
    r"comparable", r"on par", r"indistinguishable", r"no (?:\w+ )?difference",
    r"(?:the )?same (?:accuracy|score|performance)",
    r"similar (?:accuracy|scores?|performance|results)", r"performed similarly", r"identical(?:ly)?", r"tied",
    r"(?<!exact )match(?:ed|es)", r"within noise",
) + r"))\b", re.I)
_ACCURACY = re.compile(r"accura|score|performance|correct|solve rate|success", re.I)
_INVERSE = re.compile(r"error|mistake|failure|wrong|incorrect", re.I)
_OTHER = re.compile(r"token|cost|latency|time|length|calls?\b|temperature|budget|compute|price|bound|interval|\bCI\b"
                    r"|confidence|number of|chains?\b|samples?\b|variab|variance|fluctuat|stabil|spread|noise|sensitiv"
                    r"|understand|handle|capture|explain|reflect|table|figure|section|chance|question|concern|issue"
                    r"|idea|intuition|rationale|motivation|take|taking", re.I)
_PART_AFTER = re.compile(r"verifier|refine|step|example|template", re.I)  # "drops the verifier": a part, not a score
# "higher than 40%" is a number, "ahead on 8", "beat it on 8 problems" a count: checked as such, not as a direction
_NUMBER_AFTER = re.compile(any_of(r"\s*(?:than\s+)?(?:about\s+|around\s+)?\.?\d",
                                  rf"\s+(?:on|in)\s+(?:only\s+|just\s+)?{NUM}\b",
                                  rf"(?:\s+[\w'-]+){{1,3}}?\s+(?:on|in)\s+(?:only\s+|just\s+)?{NUM}\s+(?:\w+\s+)?"
                                  r"(?:problems|questions|items|cases)\b"), re.I)
_AUXILIARY = re.compile(r"\b(?:is|was|were|are|been|being|be|gets?|got)\s+(?:\w+ly\s+)?$", re.I)
_PASSIVE = re.compile(r"(?:outperform|surpass|exceed|beat|underperform|improv|trail)\w*(?:ed|en)$", re.I)

_STRENGTH = re.compile(r"\b(?:(?P<sig>" + any_of(
    r"(?:in|non-?)?significan\w*", r"statistically(?! (?:in|non-?)?significan)",
) + r")|(?P<certain>" + any_of(
    r"prov(?:en|ed|es|e)\b", r"demonstrat(?:e|es|ed|ing)\b", r"show(?:s|ed)? that", r"(?:has|have|was|were|been) shown",
    r"confirm(?:s|ed|ing)?\b", r"establish\w*", r"clear(?:ly)?\b", r"conclusive\w*", r"definitive\w*", r"undeniabl\w*",
    r"undoubtedly", r"unquestionabl\w*", r"robust\w*", r"consistent(?:ly)?\b(?! with)", r"reliabl[ey]", r"strongly",
    r"firmly", r"evident\w*", r"guarantee\w*", r"(?:strong|compelling|conclusive|clear|solid|firm) evidence",
) + r")|(?P<big>" + any_of(
    r"substantial(?:ly)?", r"dramatic(?:ally)?", r"drastic(?:ally)?", r"considerabl[ey]", r"marked(?:ly)?",
    r"remarkabl[ey]", r"great(?:ly)?\b", r"huge(?:ly)?", r"vast(?:ly)?", r"massive(?:ly)?", r"sizabl[ey]",
    r"striking(?:ly)?", r"sharp(?:ly)?", r"tremendous\w*", r"impressive\w*",
    r"far (?=better|higher|more|superior|outperform|ahead|worse|lower|below)",
    r"much (?=better|higher|more|worse|lower|stronger|weaker)", rf"(?:large|big|major|strong|wide)(?= {_EFFECT})",
) + r")|(?P<small>" + any_of(
    r"slight(?:ly)?", r"marginal(?:ly)?", r"modest(?:ly)?", r"minor", r"somewhat", r"a bit", r"minimal(?:ly)?", r"tiny",
    r"a little", r"narrow(?:ly)?", rf"small(?= {_EFFECT})",
) + r")|(?P<always>" + any_of(
    r"always", r"every (?:single )?(?:problem|question|item|case|instance)", r"in all cases", r"without exception",
    r"uniformly", r"across the board", r"never (?:worse|lost|fail\w*|underperform\w*)",
) + r")|(?P<variability>" + any_of(
    r"(?:reduc|lower|decreas|minimi[sz]|less|smaller|cut)\w*\s+(?:the\s+)?(?:\w+\s+)?"
    r"(?:variab\w*|variance|fluctuation\w*|instabilit\w*|spread|sensitivity)",
    r"(?:more|greater|improved|higher)\s+(?:stab\w*|consisten\w*|reliab\w*)", r"stabili[sz]\w*", r"less variab\w*",
    r"variance reduction",
) + r")|(?P<sota>" + any_of(
    r"state[- ]of[- ]the[- ]art", r"SOTA", r"best[- ]in[- ]class", r"unprecedented", r"groundbreaking",
    r"revolutionary", r"breakthrough", r"world[- ]class", r"new record", r"best (?:known|reported|published)",
) + r"))", re.I)
_NEG_SIG = re.compile(r"\b(?:no|not|n't|cannot|without|neither|nor|lacks?)\b[^.;,]{0,40}$", re.I)
_DESCRIPTIVE = re.compile(r"(?:table|figure|fig\.|plot|chart)\s*\d*\s*$", re.I)
_DIFFERENCE = re.compile(r"difference|improvement|gain|effect|drop|decrease|increase|advantage|result|gap", re.I)
_NEVER = {"variability": "no record measures variability (one evaluation per technique and split)",
          "sota": "the records compare two techniques on one benchmark, not with the state of the art"}


@dataclass
class _Frame:
    """A direction word's subject and comparand with their records; ``holds``: whether the direction ``kind``
    (up, down, same; "" for a bare strength word) is what the records show."""

    a: str
    b: str
    ra: dict[str, Any]
    rb: dict[str, Any]
    tested: bool
    p: float | None
    at: int
    kind: str = ""
    holds: bool = True

    @property
    def delta(self) -> float:
        return float(self.ra["accuracy"]) - float(self.rb["accuracy"])

    @property
    def significant(self) -> bool:
        return self.tested and self.p is not None and self.p < 0.05

    @property
    def big(self) -> bool:
        return self.significant and abs(self.delta) >= 0.10


def word_claims(p: Prose) -> list[Judged]:
    """Every direction and strength word of a sentence that asserts something, judged."""
    if p.cited:
        return []
    out: list[Judged] = []
    frames: list[_Frame] = []
    for cue in _CUE.finditer(p.s):
        frame = _direction_frame(p, cue)
        if frame is None:
            continue
        frames.append(frame)
        claim = _direction(p, cue, frame)
        if claim:
            out.append((claim, [frame.ra, frame.rb], pair_sentence(p.ev, frame.ra, frame.rb)))
    for word in _STRENGTH.finditer(p.s):
        judged = _strength(p, word, frames)
        if judged:
            out.append(judged)
    return out


def _polarity(p: Prose, cue: re.Match) -> str | None:
    """up, down or same, after passives ("is outperformed by") and inverse quantities ("fewer errors"); None
    when the word is not about accuracy (tokens, bounds, "to better understand", "ahead on 8 problems": a
    count) or sits inside a name."""
    kind = next(k for k in ("down", "up", "same") if cue.group(k))
    if any(a <= cue.start() < b for a, b, _ in p.mentions):
        return None
    if kind == "same":
        return kind
    text = p.masked()  # "refine_cot" names no refine step
    after = text[cue.end():cue.end() + 40]
    next_words = " ".join(after.split()[:4])
    before = text[max(0, cue.start() - 25):cue.start()]
    near = f"{before} {cue.group(0)} {next_words}"
    if _NUMBER_AFTER.match(text, cue.end()):
        return None
    flip = bool(_PASSIVE.search(cue.group(0)) and _AUXILIARY.search(before) and re.match(r"\s+by\b", after))
    if not _ACCURACY.search(near):
        if _INVERSE.search(near):
            flip = not flip
        elif _OTHER.search(near) or _PART_AFTER.search(next_words):
            return None
    return {"up": "down", "down": "up"}[kind] if flip else kind


def _direction_frame(p: Prose, cue: re.Match) -> _Frame | None:
    kind = _polarity(p, cue)
    if kind is None or p.hedged(cue.start()):
        return None
    frame = _frame(p, cue.start())
    if frame is None:
        return None
    frame.kind = kind
    if kind == "same":
        frame.holds = not frame.significant if frame.tested else abs(frame.delta) <= 0.05
    else:
        frame.holds = frame.delta > 0 if kind == "up" else frame.delta < 0
    return frame


def _direction(p: Prose, cue: re.Match, f: _Frame) -> Claim | None:
    """The direction word's claim; None when its negation belongs to a strength word ("did not significantly
    outperform": judged as the strength word's)."""
    negation = p.negation(cue.start())
    if negation and _STRENGTH.search(negation):
        return None
    ok = (not f.holds or (f.kind != "same" and f.tested and not f.significant)) if negation else f.holds
    claim = Claim(cue.group(0), "direction", f.kind, p.s)
    return verdict(claim, ok, [f"{f.a} vs {f.b}"], _expected(f))


def _frame(p: Prose, at: int) -> _Frame | None:
    a = p.subject(at)
    b = p.comparand(a, at) if a else None
    if not a or not b:
        return None
    splits = p.splits(at)
    ra, rb = p.record(a, splits), p.record(b, splits)
    if ra is None or rb is None:
        return None
    return _Frame(a, b, ra, rb, p.ev.tested(a, b, splits), p.ev.p_value, at)


def _expected(f: _Frame) -> str:
    test = f", McNemar p = {f.p:.3g}" if f.tested and f.p is not None else ", no significance test for this pair"
    return f"{describe(f.ra)} vs {describe(f.rb)}: {100 * f.delta:+.1f} points{test}"


def _strength(p: Prose, word: re.Match, frames: list[_Frame]) -> Judged | None:
    kind = next(k for k in ("sig", "certain", "big", "small", "always", "variability", "sota") if word.group(k))
    at = word.start()
    negated = bool(p.negation(at))
    if kind == "sig":
        negated = bool(re.match(r"in|non", word.group(0), re.I) or _NEG_SIG.search(p.s[max(0, at - 45):at]))
    if (p.hedged(at) and not negated) or (kind == "certain" and _DESCRIPTIVE.search(p.s[max(0, at - 20):at])):
        return None  # a hedge, or "Table 1 shows that": what the table shows, not a claim of certainty
    claim = Claim(word.group(0), "strength", kind, p.s)
    if kind in _NEVER:
        if negated or not (p.mentions or p.first_person):
            return None
        return verdict(claim, False, [], _NEVER[kind]), [], _rewrite(p, frames)
    frame = min(frames, key=lambda f: abs(f.at - at)) if frames else _bare_frame(p, kind, at)
    if frame is None:
        return None
    ok = _strength_ok(kind, negated, frame, p)
    return verdict(claim, ok, [f"{frame.a} vs {frame.b}"], _expected(frame)), [frame.ra, frame.rb], \
        pair_sentence(p.ev, frame.ra, frame.rb)


def _bare_frame(p: Prose, kind: str, at: int) -> _Frame | None:
    """A frame for a strength word with no direction word: significance about the named pair (or, in a
    sentence about a difference that names none, the comparison's); "robust"/"reliable" about the subject."""
    if kind == "sig":
        if not p.mentions and p.ev.pair and _DIFFERENCE.search(p.s):
            a, b = p.ev.pair
            ra, rb = p.record(a, p.splits(at)), p.record(b, p.splits(at))
            return _Frame(a, b, ra, rb, p.ev.tested(a, b, p.splits(at)), p.ev.p_value, at) if ra and rb else None
        return _frame(p, at)
    if kind == "certain" and re.match(r"robust|reliabl|consistent", p.s[at:], re.I):
        frame = _frame(p, at)
        if frame:
            frame.kind, frame.holds = "up", frame.delta > 0
        return frame
    return None


def _strength_ok(kind: str, negated: bool, f: _Frame, p: Prose) -> bool:
    """Significance: p < 0.05 (negated: not significant, or "not significantly better" when it is not
    better); certainty also the direction; size a significant gap of 10 points or more; a hedge no such gap;
    "always" no loss. A negated word holds unless the records show what it denies."""
    moves = f.kind in ("up", "down")
    if kind == "sig":
        if negated:
            return not (f.holds and f.significant) if moves else f.tested and not f.significant
        return f.significant and f.holds
    if negated:
        return not (f.holds and (f.big if kind == "big" else f.significant))
    if kind == "certain":
        return f.significant and f.holds
    if kind == "big":
        return f.big and f.holds
    if kind == "small":
        return f.holds and not f.big and (f.tested or abs(f.delta) < 0.10)
    cmp = p.ev.comparison or {}
    lost = cmp.get("losses") if (f.a == (p.ev.pair or ("",))[0]) == (f.delta > 0) else cmp.get("wins")
    return f.tested and f.holds and lost == 0  # always


def _rewrite(p: Prose, frames: list[_Frame]) -> str | None:
    if frames:
        return pair_sentence(p.ev, frames[0].ra, frames[0].rb)
    ra, rb = (p.record(name, set()) for name in p.ev.pair) if p.ev.pair else (None, None)
    return pair_sentence(p.ev, ra, rb) if ra and rb else None
