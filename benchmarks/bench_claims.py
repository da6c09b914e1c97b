"""Claim checker benchmark, in one run:

- numbers: the adversarial claim table (tests/lab/test_claims_adversarial.py) through the old checker
  (``agentlab/report.py`` at c697e60, loaded from a temporary file; ``--old-rev ''`` skips it) and the current one;
- prose without numbers: the table of tests/lab/test_claims_prose.py by kind (direction, strength, count, method)
  through the current checker, and the neutral prose a paper writes.

Prints false accepts on the wrong sentences (target 0; for prose, a wrong sentence must be rejected by a claim of
its kind), the false-reject rate on the correct ones (target at most 5%), for prose also the correct sentences in
which no claim of the kind was read, and lists every miss.

    .venv/bin/python benchmarks/bench_claims.py [--old-rev c697e60]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _old_checker(rev: str):
    """``check_claims`` of ``agentlab/report.py`` at ``rev`` (None when git cannot show it)."""
    try:
        src = subprocess.run(["git", "show", f"{rev}:agentlab/report.py"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "old_report.py"
        path.write_text(src)
        spec = importlib.util.spec_from_file_location("old_report", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["old_report"] = mod  # dataclasses look their module up
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod.check_claims


def _score(check, fixtures, extra, wrong, right) -> dict:
    """False accepts (wrong sentences with every claim ok) and false rejects (correct ones with any not ok)."""
    def ok(fixture, sentence):
        records, comparison = fixtures[fixture]
        return all(c.status == "ok" for c in check(sentence, records, comparison, extra, fix=False).claims)

    fa = [row[1] for row in wrong if ok(row[0], row[1])]
    fr = [row[1] for row in right if not ok(row[0], row[1])]
    return {"false_accepts": fa, "false_rejects": fr}


def _numbers(old_rev: str) -> None:
    from agentlab.lab.report.claims import check_claims
    from tests.lab.test_claims_adversarial import EXTRA, FIXTURES, RIGHT, WRONG

    rows = [("new", check_claims)]
    old = _old_checker(old_rev) if old_rev else None
    if old is not None:
        rows.insert(0, (f"old ({old_rev})", old))
    elif old_rev:
        print(f"old checker at {old_rev} unavailable (git show failed)")
    print(f"numbers: {len(WRONG)} wrong sentences, {len(RIGHT)} correct sentences")
    print(f"{'checker':<16} {'false accepts':>14} {'false-reject rate':>18}")
    for name, check in rows:
        s = _score(check, FIXTURES, EXTRA, WRONG, RIGHT)
        rate = len(s["false_rejects"]) / len(RIGHT)
        print(f"{name:<16} {len(s['false_accepts']):>8}/{len(WRONG):<5} {100 * rate:>11.1f}% "
              f"({len(s['false_rejects'])}/{len(RIGHT)})")
        for sent in s["false_accepts"]:
            print(f"    accepted wrong: {sent}")
        for sent in s["false_rejects"]:
            print(f"    rejected right: {sent}")


def _prose() -> None:
    """Per kind: false accepts, false rejects and unread correct sentences; then the neutral prose."""
    from tests.lab.test_claims_prose import KINDS, NEUTRAL, RIGHT, WRONG, caught, judge

    print(f"\nprose without numbers: {sum(map(len, WRONG.values()))} wrong, {sum(map(len, RIGHT.values()))} correct,"
          f" {len(NEUTRAL)} neutral sentences")
    print(f"{'kind':<10} {'false accepts':>14} {'false rejects':>18} {'unread':>7}")
    misses = []
    for kind in KINDS:
        fa = [s for f, s in WRONG[kind] if not caught(kind, judge(f, s))]
        fr = [s for f, s in RIGHT[kind] if any(c.status != "ok" for c in judge(f, s))]
        unread = [s for f, s in RIGHT[kind] if not any(c.kind == kind for c in judge(f, s))]
        n_wrong, n_right = len(WRONG[kind]), len(RIGHT[kind])
        print(f"{kind:<10} {f'{len(fa)}/{n_wrong}':>14} {f'{100 * len(fr) / n_right:.1f}% ({len(fr)}/{n_right})':>18}"
              f" {len(unread):>7}")
        misses += [f"    accepted wrong ({kind}): {s}" for s in fa] + [f"    rejected right ({kind}): {s}" for s in fr]
        misses += [f"    unread right ({kind}): {s}" for s in unread]
    neutral = [s for f, s in NEUTRAL if any(c.status != "ok" for c in judge(f, s))]
    print(f"{'neutral':<10} {'':>14} {f'{100 * len(neutral) / len(NEUTRAL):.1f}% ({len(neutral)}/{len(NEUTRAL)})':>18}")
    misses += [f"    rejected neutral: {s}" for s in neutral]
    print("\n".join(misses))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-rev", default="c697e60", help="the old checker's revision ('' to skip it)")
    args = ap.parse_args()
    _numbers(args.old_rev)
    _prose()


if __name__ == "__main__":
    main()
