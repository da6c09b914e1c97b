"""Research goals and the goal queue: claim under a lease, heartbeat, release, close; progress over papers."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from preprint_server import crud, goals, progress, schemas
from preprint_server.api.deps import LabDep, ServicesDep, read_access

router = APIRouter(prefix="/api/goals", tags=["goals"])

_CONFLICT = {409: {"description": "the lease has ended (expired, released, or its goal closed) or the goal "
                                  "is closed or claimed by another lab",
                   "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}}}


@router.post("", status_code=201, response_model=schemas.GoalOut)
def add_goal(goal: schemas.GoalCreate, lab: LabDep, svc: ServicesDep) -> schemas.GoalOut:
    return goals.goal_outs(svc.db, [crud.create_goal(svc.db, goal, created_by=lab.name)])[0]


@router.get("", response_model=list[schemas.GoalOut], dependencies=[Depends(read_access)])
def list_goals(svc: ServicesDep, status: schemas.GoalStatus | None = None) -> list[schemas.GoalOut]:
    """Goals, newest first. Leases past their expiry end first, so their goals read as open."""
    return goals.goal_outs(svc.db, crud.list_goals(svc.db, status))


@router.post("/claim", response_model=schemas.LeaseOut,
             responses={204: {"description": "no open goal (on that benchmark)"}, **_CONFLICT})
def claim_goal(req: schemas.GoalClaim, lab: LabDep, svc: ServicesDep):
    """Claim the next open goal, oldest first (or the goal named) under a lease of `lease_s` seconds that
    the holder renews with heartbeats. Concurrent claims never get the same goal. 204 when none is open."""
    lease_id = goals.claim(svc.db, lab, req)
    if lease_id is None:
        return Response(status_code=204)
    return goals.lease_out(svc.db, lease_id)


@router.post("/leases/{lease_id}/heartbeat", response_model=schemas.LeaseOut, responses=_CONFLICT)
def heartbeat(lease_id: str, lab: LabDep, svc: ServicesDep,
              req: schemas.LeaseRenew | None = None) -> schemas.LeaseOut:
    """Renew a live lease (it then expires `lease_s` from now); 409 once it has ended."""
    goals.heartbeat(svc.db, lab, lease_id, req.lease_s if req else None)
    return goals.lease_out(svc.db, lease_id)


@router.post("/leases/{lease_id}/release", response_model=schemas.LeaseOut)
def release(lease_id: str, lab: LabDep, svc: ServicesDep,
            req: schemas.LeaseRelease | None = None) -> schemas.LeaseOut:
    """End the lease: the goal goes back to the queue (unless it closed). Releasing twice is harmless."""
    goals.release(svc.db, lab, lease_id, req.reason if req else "released")
    return goals.lease_out(svc.db, lease_id)


@router.get("/{goal_id}", response_model=schemas.GoalOut, dependencies=[Depends(read_access)])
def get_goal(goal_id: str, svc: ServicesDep) -> schemas.GoalOut:
    crud.get_goal(svc.db, goal_id)
    return goals.goal_out(svc.db, goal_id)


@router.post("/{goal_id}/close", response_model=schemas.GoalOut)
def close_goal(goal_id: str, req: schemas.GoalClose, lab: LabDep, svc: ServicesDep) -> schemas.GoalOut:
    """Close a goal (its creator or the lab holding it): its live lease ends; no lab claims it again."""
    goals.close(svc.db, lab, goal_id, req.reason)
    return goals.goal_out(svc.db, goal_id)


@router.get("/{goal_id}/leases", response_model=list[schemas.LeaseOut], dependencies=[Depends(read_access)])
def goal_leases(goal_id: str, svc: ServicesDep) -> list[schemas.LeaseOut]:
    """Every lease of the goal, newest first: who worked on it, when, and how each lease ended."""
    crud.get_goal(svc.db, goal_id)
    return goals.leases(svc.db, goal_id)


@router.get("/{goal_id}/progress", response_model=schemas.GoalProgress, dependencies=[Depends(read_access)])
def goal_progress(goal_id: str, svc: ServicesDep) -> schemas.GoalProgress:
    """Best-so-far ranked report-split accuracy after each of the goal's papers (index and time), per
    comparable group (benchmark, subset, model): the combined line and one line per lab."""
    return progress.goal_progress(svc.db, goal_id)
