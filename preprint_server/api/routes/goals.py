"""Research goals."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from preprint_server import crud, schemas
from preprint_server.api.deps import LabDep, ServicesDep, read_access

router = APIRouter(prefix="/api/goals", tags=["goals"])


@router.post("", status_code=201, response_model=schemas.GoalOut)
def add_goal(goal: schemas.GoalCreate, lab: LabDep, svc: ServicesDep) -> schemas.GoalOut:
    return schemas.GoalOut.model_validate(crud.create_goal(svc.db, goal, created_by=lab.name))


@router.get("", response_model=list[schemas.GoalOut], dependencies=[Depends(read_access)])
def list_goals(svc: ServicesDep, status: schemas.GoalStatus | None = None) -> list[schemas.GoalOut]:
    return [schemas.GoalOut.model_validate(g) for g in crud.list_goals(svc.db, status)]


@router.get("/{goal_id}", response_model=schemas.GoalOut, dependencies=[Depends(read_access)])
def get_goal(goal_id: str, svc: ServicesDep) -> schemas.GoalOut:
    return schemas.GoalOut.model_validate(crud.get_goal(svc.db, goal_id))
