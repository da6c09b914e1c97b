"""Claim checker benchmark: the adversarial claim table (tests/lab/test_claims_adversarial.py) through the old
checker (``agentlab/report.py`` at c697e60, loaded from a temporary file) and the current one, in one run.

Prints false accepts on the wrong sentences (target 0) and the false-reject rate on the correct ones
(target at most 5%), and lists every miss.

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

    fa = [s for f, s, _ in wrong if ok(f, s)]
    fr = [s for f, s in right if not ok(f, s)]
    return {"false_accepts": fa, "false_rejects": fr}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-rev", default="c697e60")
    args = ap.parse_args()
    from agentlab.lab.report.claims import check_claims
    from tests.lab.test_claims_adversarial import EXTRA, FIXTURES, RIGHT, WRONG

    rows = [("new", check_claims)]
    old = _old_checker(args.old_rev)
    if old is not None:
        rows.insert(0, (f"old ({args.old_rev})", old))
    else:
        print(f"old checker at {args.old_rev} unavailable (git show failed)")
    print(f"{len(WRONG)} wrong sentences, {len(RIGHT)} correct sentences")
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


if __name__ == "__main__":
    main()
