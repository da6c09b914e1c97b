"""The goal queue: labs claim goals under leases kept alive by heartbeats (server time), release them,
close them; a goal also closes by itself when a published paper reaches its target or its paper budget.

States: ``open`` (in the queue), ``claimed`` (one live lease), ``closed``. A lease is live while it has
not ended and its ``expires_at`` lies ahead; a lease past its expiry ends as ``expired`` at the next goal
request (any read or write of goals does it, in a write transaction), and its goal is open again. Every
change happens inside one SQLite write transaction (``BEGIN IMMEDIATE``), so two labs claiming at once
never get the same goal.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from preprint_server import schemas
from preprint_server.db import Database
from preprint_server.errors import Forbidden, NotFound, ServiceError
from preprint_server.models import Goal, GoalLease, Lab, Paper, Result, utcnow


class Conflict(ServiceError):
    """The lease is no longer live (expired, released, its goal closed) or the goal is not claimable."""

    status = 409


def _ranked(q):
    """Results that may be ranked (the same rule as crud's leaderboards): report split, complete, from
    harness records, in a paper that is not retracted."""
    return q.where(Paper.status != "retracted", Result.split == "report", Result.complete.is_(True),
                   Result.job_id != "", Result.record_id != "")


# -- expiry ---------------------------------------------------------------------------------------
def _expire(s: Session, now: datetime) -> int:
    stale = list(s.scalars(select(GoalLease).where(GoalLease.ended.is_(None), GoalLease.expires_at <= now)))
    for lease in stale:
        lease.ended, lease.end_reason = now, "expired"
        goal = s.get(Goal, lease.goal_id)
        if goal is not None and goal.status == "claimed":
            goal.status = "open"
    return len(stale)


def expire_due(db: Database) -> int:
    """End the leases past their expiry and put their goals back in the queue (a read when none is due)."""
    with db.read() as s:
        due = s.scalar(select(func.count()).select_from(GoalLease)
                       .where(GoalLease.ended.is_(None), GoalLease.expires_at <= utcnow()))
    if not due:
        return 0
    with db.write() as s:
        return _expire(s, utcnow())


# -- claims and leases ----------------------------------------------------------------------------
def _live_lease(s: Session, goal_id: str) -> GoalLease | None:
    return s.scalars(select(GoalLease).options(selectinload(GoalLease.lab))
                     .where(GoalLease.goal_id == goal_id, GoalLease.ended.is_(None))).first()


def _claimable(s: Session, req: schemas.GoalClaim) -> Goal | None:
    if req.goal is None:
        q = select(Goal).where(Goal.status == "open")
        if req.benchmark:
            q = q.where(Goal.benchmark == req.benchmark)
        return s.scalars(q.order_by(Goal.created, Goal.id).limit(1)).first()
    goal = s.get(Goal, req.goal)
    if goal is None:
        raise NotFound(f"no goal {req.goal!r}")
    if goal.status == "closed":
        raise Conflict(f"goal {goal.id} is closed ({goal.closed_reason})")
    if goal.status == "claimed":
        held = _live_lease(s, goal.id)
        who = f"lab {held.lab.name} until {held.expires_at:%Y-%m-%d %H:%M:%S} UTC" if held else "another lab"
        raise Conflict(f"goal {goal.id} is claimed by {who}")
    return goal


def claim(db: Database, lab: Lab, req: schemas.GoalClaim) -> str | None:
    """Claim the next open goal (oldest first; or `req.goal`); returns the new lease's id, None when the
    queue has no open goal."""
    with db.write() as s:
        now = utcnow()
        _expire(s, now)
        goal = _claimable(s, req)
        if goal is None:
            return None
        goal.status = "claimed"
        goal.attempts = (goal.attempts or 0) + 1
        lease = GoalLease(id="gl_" + secrets.token_hex(12), goal_id=goal.id, lab_id=lab.id, holder=req.holder,
                          attempt=goal.attempts, lease_s=req.lease_s, created=now, heartbeat_at=now,
                          expires_at=now + timedelta(seconds=req.lease_s))
        s.add(lease)
        return lease.id


def _own_lease(s: Session, lab: Lab, lease_id: str) -> GoalLease:
    lease = s.get(GoalLease, lease_id) if schemas.is_valid_id(lease_id) else None
    if lease is None:
        raise NotFound(f"no lease {lease_id!r}")
    if lease.lab_id != lab.id:
        raise Forbidden(f"lease {lease_id!r} belongs to another lab")
    return lease


def heartbeat(db: Database, lab: Lab, lease_id: str, lease_s: float | None = None) -> str:
    """Renew a live lease: it now expires `lease_s` (default: the claim's) from now. 409 once it ended."""
    with db.write() as s:
        now = utcnow()
        lease = _own_lease(s, lab, lease_id)
        if lease.ended is None and lease.expires_at <= now:
            _expire(s, now)
        ended = lease.ended is not None
        if not ended:
            lease.lease_s = lease_s or lease.lease_s
            lease.heartbeat_at, lease.expires_at = now, now + timedelta(seconds=lease.lease_s)
        reason = lease.end_reason
    if ended:  # raised after the commit: the expiry above is kept
        raise Conflict(f"lease {lease_id} has ended ({reason}); claim the goal again")
    return lease_id


def release(db: Database, lab: Lab, lease_id: str, reason: str) -> str:
    """End the lease; its goal goes back to the queue unless it is closed. Releasing twice is harmless."""
    with db.write() as s:
        now = utcnow()
        lease = _own_lease(s, lab, lease_id)
        if lease.ended is None:
            lease.ended, lease.end_reason = now, ("expired" if lease.expires_at <= now else reason)
            goal = s.get(Goal, lease.goal_id)
            if goal.status == "claimed":
                goal.status = "open"
    return lease_id


def _close(s: Session, goal: Goal, reason: str, now: datetime) -> None:
    if goal.status == "closed":
        return
    goal.status, goal.closed_reason, goal.closed_at = "closed", reason, now
    for lease in s.scalars(select(GoalLease).where(GoalLease.goal_id == goal.id, GoalLease.ended.is_(None))):
        lease.ended, lease.end_reason = now, f"goal closed: {reason}"[:500]


def close(db: Database, lab: Lab, goal_id: str, reason: str) -> None:
    """Close a goal: its creator or the lab holding its live lease may. Closing twice is harmless."""
    with db.write() as s:
        now = utcnow()
        _expire(s, now)
        goal = s.get(Goal, goal_id) if schemas.is_valid_id(goal_id) else None
        if goal is None:
            raise NotFound(f"no goal {goal_id!r}")
        held = _live_lease(s, goal.id)
        if goal.created_by != lab.name and (held is None or held.lab_id != lab.id):
            raise Forbidden(f"goal {goal_id} was set by {goal.created_by}; only it or the lab holding the goal "
                            "may close it")
        _close(s, goal, reason, now)


def after_publish(s: Session, paper_id: str, goal_id: str | None) -> None:
    """Inside the publishing transaction: close the paper's goal when one of the paper's ranked results (on
    the goal's benchmark, if it names one) reaches the goal's target, or when the goal's papers reach its
    paper budget."""
    goal = s.get(Goal, goal_id) if goal_id else None
    if goal is None or goal.status == "closed":
        return
    now = utcnow()
    if goal.target is not None:
        q = _ranked(select(Result).join(Paper, Paper.id == Result.paper_id)
                    .where(Result.paper_id == paper_id, Result.accuracy >= goal.target - 1e-9))
        if goal.benchmark:
            q = q.where(Result.benchmark == goal.benchmark)
        best = s.scalars(q.order_by(Result.accuracy.desc()).limit(1)).first()
        if best is not None:
            _close(s, goal, f"target {goal.target:.1%} reached: {best.technique} {best.accuracy:.1%} "
                            f"({best.correct}/{best.n}) in paper {paper_id}", now)
            return
    if goal.max_papers is not None:
        n = s.scalar(select(func.count(Paper.id)).where(Paper.goal_id == goal.id, Paper.status != "retracted"))
        if n >= goal.max_papers:
            _close(s, goal, f"paper budget spent: {n} of {goal.max_papers} papers", now)


# -- what the API answers ---------------------------------------------------------------------------
def goal_outs(db: Database, goals: list[Goal]) -> list[schemas.GoalOut]:
    """Goals with their paper counts and the holder of their live lease."""
    ids = [g.id for g in goals]
    if not ids:
        return []
    with db.read() as s:
        counts = dict(s.execute(select(Paper.goal_id, func.count(Paper.id))
                                .where(Paper.goal_id.in_(ids), Paper.status != "retracted")
                                .group_by(Paper.goal_id)).all())
        leases = {lease.goal_id: lease for lease in s.scalars(
            select(GoalLease).options(selectinload(GoalLease.lab))
            .where(GoalLease.goal_id.in_(ids), GoalLease.ended.is_(None)))}
    out = []
    for g in goals:
        lease = leases.get(g.id)
        out.append(schemas.GoalOut.model_validate(g).model_copy(update=dict(
            papers=counts.get(g.id, 0), attempts=g.attempts or 0,
            claimed_by=lease.lab.name if lease else None, lease_expires=lease.expires_at if lease else None)))
    return out


def goal_out(db: Database, goal_id: str) -> schemas.GoalOut:
    with db.read() as s:
        goal = s.get(Goal, goal_id) if schemas.is_valid_id(goal_id) else None
    if goal is None:
        raise NotFound(f"no goal {goal_id!r}")
    return goal_outs(db, [goal])[0]


def lease_out(db: Database, lease_id: str) -> schemas.LeaseOut:
    with db.read() as s:
        lease = s.scalars(select(GoalLease).options(selectinload(GoalLease.lab)).where(GoalLease.id == lease_id)).one()
    return _lease_out(lease, goal_out(db, lease.goal_id))


def _lease_out(lease: GoalLease, goal: schemas.GoalOut) -> schemas.LeaseOut:
    return schemas.LeaseOut(
        id=lease.id, goal_id=lease.goal_id, lab=lease.lab.name, holder=lease.holder, attempt=lease.attempt,
        lease_s=lease.lease_s, created=lease.created, heartbeat_at=lease.heartbeat_at, expires_at=lease.expires_at,
        ended=lease.ended, end_reason=lease.end_reason, active=lease.ended is None and lease.expires_at > utcnow(),
        goal=goal)


def leases(db: Database, goal_id: str) -> list[schemas.LeaseOut]:
    """Every lease of a goal, newest first."""
    goal = goal_out(db, goal_id)
    with db.read() as s:
        rows = list(s.scalars(select(GoalLease).options(selectinload(GoalLease.lab))
                              .where(GoalLease.goal_id == goal_id).order_by(GoalLease.created.desc())))
    return [_lease_out(lease, goal) for lease in rows]
