"""Replications: another lab re-runs one of a paper's report-split results and the server records whether
the new accuracy is consistent with the original. This is the check that means something: the original
record's ``job_id``/``record_id`` are only the publisher's word, a replication is a second lab's measurement.

A replication must match the original result's benchmark, subset, model name and technique (and spec hash and
model identity where both sides give one). Its verdict is "consistent" when its accuracy lies inside the
original record's 95% Wilson interval, recomputed here from ``n`` and ``correct``; "not reproduced" otherwise.
"""

from __future__ import annotations

import math
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from preprint_server import schemas
from preprint_server.db import Database
from preprint_server.errors import Invalid, NotFound
from preprint_server.models import Lab, Paper, Replication, Result

Z95 = 1.959963984540054


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of ``correct / n`` (the harness uses the same interval)."""
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def verdict(original: Result, accuracy: float) -> str:
    low, high = wilson(original.correct, original.n)
    return "consistent" if low - 1e-9 <= accuracy <= high + 1e-9 else "not reproduced"


def _matching_result(paper: Paper, rec: schemas.ReplicationCreate) -> Result:
    """The paper's ranked result that ``rec`` re-runs, or a 422 that says what does not match."""
    same = [r for r in paper.results if r.ranked and r.technique == rec.technique and r.benchmark == rec.benchmark]
    if not same:
        names = sorted({f"{r.technique} on {r.benchmark}" for r in paper.results if r.ranked}) or ["none"]
        raise Invalid("technique", f"paper {paper.id} has no complete report-split result for {rec.technique} on "
                                   f"{rec.benchmark} (it has: {', '.join(names)})")
    for field in ("subset", "model"):
        same_field = [r for r in same if getattr(r, field) == getattr(rec, field)]
        if not same_field:
            raise Invalid(field, f"the original was run with {field} {getattr(same[0], field)!r}, "
                                 f"the replication with {getattr(rec, field)!r}")
        same = same_field
    for field in ("spec_hash", "model_id"):  # compared where both sides know it
        mine = getattr(rec, field)
        same_field = [r for r in same
                      if not comparable_identities(mine, getattr(r, field)) or getattr(r, field) == mine]
        if not same_field:
            raise Invalid(field, f"the original's {field} is {getattr(same[0], field)!r}, the replication's {mine!r}")
        same = same_field
    return same[0]


def comparable_identities(a: str, b: str) -> bool:
    """Two identities say something about each other when both are given and neither is only an
    endpoint (two labs reach the same model at different URLs)."""
    return bool(a and b) and not a.startswith("endpoint:") and not b.startswith("endpoint:")


def add_replication(db: Database, paper_id: str, lab: Lab, rec: schemas.ReplicationCreate) -> Replication:
    with db.write() as s:
        paper = s.scalar(select(Paper).options(selectinload(Paper.results)).where(Paper.id == paper_id)) \
            if schemas.is_valid_id(paper_id) else None
        if paper is None:
            raise NotFound(f"no paper {paper_id!r}")
        if paper.status == "retracted":
            raise Invalid("paper", f"paper {paper_id} is retracted")
        original = _matching_result(paper, rec)
        row = Replication(paper_id=paper_id, result_id=original.id, lab_id=lab.id,
                          record=rec.model_dump(mode="json"), accuracy=rec.accuracy,
                          verdict=verdict(original, rec.accuracy))
        s.add(row)
        s.flush()
        rid = row.id
    return get_replication(db, rid)


def get_replication(db: Database, replication_id: int) -> Replication:
    with db.read() as s:
        return s.scalar(select(Replication).options(selectinload(Replication.lab), selectinload(Replication.original))
                        .where(Replication.id == replication_id))


def replications(db: Database, paper_id: str) -> list[Replication]:
    with db.read() as s:
        return list(s.scalars(select(Replication).options(selectinload(Replication.lab),
                                                          selectinload(Replication.original))
                              .where(Replication.paper_id == paper_id).order_by(Replication.id)))


def replication_out(r: Replication) -> schemas.ReplicationOut:
    low, high = wilson(r.original.correct, r.original.n)
    return schemas.ReplicationOut(
        id=r.id, paper_id=r.paper_id, lab=r.lab.name, created=r.created,
        result=schemas.ReplicationCreate.model_validate(r.record), original_accuracy=r.original.accuracy,
        original_ci_low=round(low, 6), original_ci_high=round(high, 6), verdict=r.verdict,
    )


def labs_by_verdict(rows: list[Replication], author_lab_id: int) -> dict[str, set[int]]:
    """Other labs per verdict (a lab's latest replication of a result counts; the authors never count)."""
    latest: dict[tuple[int, int], str] = {}
    for r in sorted(rows, key=lambda r: r.id):
        if r.lab_id != author_lab_id:
            latest[(r.lab_id, r.result_id)] = r.verdict
    out: dict[str, set[int]] = defaultdict(set)
    for (lab_id, _), v in latest.items():
        out[v].add(lab_id)
    out["consistent"] -= out["not reproduced"]  # a lab that failed to reproduce any result is not a confirmation
    return out


def summary(rows: list[Replication], author_lab_id: int) -> schemas.ReplicationSummary:
    by = labs_by_verdict(rows, author_lab_id)
    return schemas.ReplicationSummary(consistent_labs=len(by["consistent"]),
                                      not_reproduced_labs=len(by["not reproduced"]))


def counts_by_result(db: Database) -> dict[int, tuple[int, int]]:
    """result id -> (labs consistent, labs not reproduced), authors excluded; for the leaderboard."""
    with db.read() as s:
        rows = list(s.scalars(select(Replication).options(selectinload(Replication.original))))
        authors = dict(s.execute(select(Paper.id, Paper.lab_id)).all())
    per_result: dict[int, list[Replication]] = defaultdict(list)
    for r in rows:
        per_result[r.result_id].append(r)
    out = {}
    for rid, rs in per_result.items():
        by = labs_by_verdict(rs, authors.get(rs[0].paper_id, -1))
        out[rid] = (len(by["consistent"]), len(by["not reproduced"]))
    return out
