"""Counts of the paired comparison in prose: wins, losses, ties, "k of the m problems where they disagreed", "on
N problems" and "X solved N problems", judged against the comparison (wins: the technique right and the
baseline wrong; said of the baseline, they are its losses) and the records' sizes.

A "k of m" that counts wins or losses is such a count, not an accuracy: it supersedes the ratio claim the
number rules read in it (``count_claims`` returns those texts).
"""

from __future__ import annotations

import re

from agentlab.lab.report.claim_rules import Claim
from agentlab.lab.report.evidence import record_sentence, split_of
from agentlab.lab.report.prose_context import NUM, Judged, Prose, count_value, pair_sentence, verdict

_PLUS = r"won|wins?|beat|better|right|correct|solved|answered|fixed|outperform\w*|ahead"
_MINUS = r"lost|loss(?:es)?|worse|wrong|incorrect|missed|failed|broke|behind|hurt"
_ONLY, _ITEMS = r"(?:only\s+|just\s+)?", r"(?:problems|questions|items)"
# the forms of a tally: a count (group n) and the word that says whose it is (group w)
_TALLIES = [re.compile(rx, re.I) for rx in (
    rf"\b(?P<n>{NUM})\s+(?P<w>wins?|losses|loss|ties?|draws?|discordant (?:pairs|problems|questions))\b",  # 8 wins
    (rf"\b(?P<w>won|lost|tied|ahead|behind|better|worse|disagreed|differed)\s+(?:on\s+)?{_ONLY}(?P<n>{NUM})\b"
     r"(?!\s*(?:%|of\b|out of|/))"),  # won on 8
    (rf"\b(?P<w>{_PLUS}|{_MINUS})\s+(?:answers?\s+)?(?:on\s+)?{_ONLY}(?P<n>{NUM})\s+(?:(?:\w+\s+)?{_ITEMS}\s+)?"
     r"(?:\w+ly\s+)?(?:that|which|where|on which|in which)\b"),  # solved 35 problems that the baseline missed
    (rf"\b(?P<w>beats?|outperform\w*|(?:was |were |is |did )?(?:better|worse) than|lost to|loses to|trail\w*"
     rf"|underperform\w*)\s+(?:[\w'-]+\s+){{0,3}}?on\s+{_ONLY}(?P<n>{NUM})\s+(?:\w+\s+)?{_ITEMS}\b"),  # beat X on 8
    rf"\b(?P<n>{NUM})\s+(?P<w>more|fewer)\s+{_ITEMS}\b",  # 12 more problems than the baseline
)]
_RATIO = re.compile(r"(?P<k>\d+)\s*(?:/|out of|of)\s*(?:the\s+)?(?P<m>\d+)(?![\d.%])", re.I)
_PAIRED_AFTER = re.compile(r"^\s*(?:\w+\s+){0,2}(?:where|on which|in which|that|when)\b[^.;]{0,40}?(?:disagree\w*"
                           r"|differ\w*|missed|failed|solved|got wrong|was wrong|were wrong|got right)|^\s*discordant",
                           re.I)
_SIZE = re.compile(rf"(?<![/\d])(?<!of )(?<!out of )\b(?P<n>{NUM})\s+(?:(?:held-out|report|test|dev|development|fresh"
                   rf"|evaluation|paired|benchmark|report-split|dev-split|tuning)\s+)*(?:problems|questions|items"
                   rf"|instances)\b", re.I)
_EVAL_CONTEXT = re.compile(r"evaluat|\btest|split|benchmark|held-out|report|\bdev\b|development|\bset\b|sample"
                           r"|paired|McNemar|compar|same|all\b|tun", re.I)
_DISAGREE_AFTER = re.compile(r"\s+(?:where|on which|in which|that)\s+(?:the two|they|both|the techniques)\s+(?:\w+\s+)?"
                             r"(?:disagree|differ)", re.I)
# "both were right on 80 problems" is no size
_NOT_SIZE = re.compile(r"/\s*$|\bboth\s+(?:were\s+|was\s+)?(?:right|correct|wrong|failed|solved|missed)\b[\w ]{0,15}$",
                       re.I)
_SOLVED = re.compile(r"\b(?:solved|solves|answered|answers|got right|correctly answered)\s+(?:only\s+|just\s+)?$", re.I)


def count_claims(p: Prose) -> tuple[list[Judged], set[str]]:
    """The count claims of a sentence, judged; and the ratio texts they supersede."""
    out: list[Judged] = []
    superseded: set[str] = set()
    taken: list[tuple[int, int]] = []
    for rx in _TALLIES:
        for m in rx.finditer(p.s):
            if not any(a < m.end() and m.start() < b for a, b in taken):
                out.append(_tally(p, m.group(0), _side(m.group("w").lower()), count_value(m.group("n")), m.start()))
                taken.append(m.span())
    for m in _RATIO.finditer(p.s):
        side = _ratio_side(p, m)
        if side is not None:
            out.append(_tally(p, m.group(0), side, int(m.group("k")), m.start(), int(m.group("m"))))
            superseded.add(m.group(0))
            taken.append(m.span())
    for m in _SIZE.finditer(p.s):
        if any(a <= m.start() < b for a, b in taken) or _NOT_SIZE.search(p.s[:m.start()]):
            continue
        if _DISAGREE_AFTER.match(p.s, m.end()):  # "the 10 problems where they disagreed"
            out.append(_tally(p, m.group(0), "discordant", count_value(m.group("n")), m.start()))
            continue
        judged = _size(p, m)
        if judged:
            out.append(judged)
    return out, superseded


def _side(word: str) -> str:
    if word in ("more", "fewer"):  # "12 more problems than the baseline": wins minus losses
        return "net" if word == "more" else "-net"
    if word.startswith(("tie", "tied", "draw")):
        return "ties"
    if word.startswith(("discordant", "disagreed", "differed")):
        return "discordant"
    return "losses" if re.search(rf"\b(?:{_MINUS}|lost|loses|trail\w*|underperform\w*)\b", word) else "wins"


def _ratio_side(p: Prose, m: re.Match) -> str | None:
    """"wins" or "losses" (or "either") when a k-of-m counts problems the two techniques disagreed on."""
    a, _ = p.clause(m.start())
    before = p.s[a:m.start()]
    paired_after = _PAIRED_AFTER.search(p.s[m.end():])
    if not paired_after and not re.search(r"\b(?:won|wins|lost|losses|beat|outperform\w*|better|worse)\b", before,
                                          re.I):
        return None
    last = list(re.finditer(rf"\b(?:{_PLUS}|{_MINUS})\b", before, re.I))
    return _side(last[-1].group(0).lower()) if last else "either"


def _tally(p: Prose, text: str, side: str, value: int, at: int, of: int | None = None) -> Judged:
    """Wins, losses, ties or discordant pairs from the subject's side (the baseline's wins are the technique's
    losses); ``of`` (a k-of-m's m) must be the comparison's n or its discordant pairs."""
    claim = Claim(text, "count", value, p.s)
    cmp, pair = p.ev.comparison or {}, p.ev.pair
    if not pair or cmp.get("wins") is None or cmp.get("losses") is None or "dev" in p.splits(at):
        claim.verdict = claim.status = "unbound"
        claim.expected = "no paired comparison on this split"
        return claim, [], None
    wins, losses, n = int(cmp["wins"]), int(cmp["losses"]), int(cmp.get("n") or 0)
    if p.actor(at) == pair[1]:
        wins, losses = losses, wins
    allowed = {"wins": {wins}, "losses": {losses}, "either": {wins, losses}, "ties": {n - wins - losses},
               "discordant": {wins + losses}, "net": {wins - losses}, "-net": {losses - wins}}[side]
    ok = value in allowed and (of is None or of in (n, wins + losses))
    ra, rb = p.record(pair[0], {"report"}), p.record(pair[1], {"report"})
    expected = f"{pair[0]} vs {pair[1]}: {int(cmp['wins'])} wins, {int(cmp['losses'])} losses of {n} problems"
    return verdict(claim, ok, ["McNemar comparison"], expected), [r for r in (ra, rb) if r], \
        pair_sentence(p.ev, ra, rb) if ra and rb else None


def _size(p: Prose, m: re.Match) -> Judged | None:
    """"X solved N problems" (its record's correct count) or "on N problems" (a record's or the comparison's
    size, in a sentence about the evaluation)."""
    value, at = count_value(m.group("n")), m.start()
    claim = Claim(m.group(0), "count", value, p.s)
    splits = p.splits(at)
    if _SOLVED.search(p.s[:at]):
        name = p.actor(at)
        recs = [r for r in p.ev.recs(name, splits) if r.get("correct") is not None] if name else []
        if not recs:
            return None
        ok = any(int(r["correct"]) == value for r in recs)
        expected = "; ".join(f"{name} ({split_of(r)}): {r['correct']}/{r['n']}" for r in recs)
        rewrite = record_sentence(recs[0]) if len(recs) == 1 and name in p.ev.names_in(p.s) else None
        return verdict(claim, ok, [name], expected), recs[:1], rewrite
    if not _EVAL_CONTEXT.search(p.s):
        return None
    sizes = _sizes(p, splits)
    if not sizes:
        return None
    return verdict(claim, value in sizes, ["record sizes"], "sizes: " + ", ".join(str(x) for x in sorted(sizes))), \
        [], None


def _sizes(p: Prose, splits: set[str]) -> set[int]:
    """The sizes a sentence may state: of the named techniques' records on the named splits (of any record
    there when those have none), and the comparison's n."""
    on_split = [r for r in p.ev.records if not splits or split_of(r) in splits]
    recs = [r for r in on_split if r["technique"] in p.names] or on_split
    sizes: set[int] = {int(r[k]) for r in recs for k in ("n", "n_planned") if r.get(k) is not None}
    if p.ev.comparison and p.ev.comparison.get("n") and "dev" not in splits:
        sizes.add(int(p.ev.comparison["n"]))
    return sizes

