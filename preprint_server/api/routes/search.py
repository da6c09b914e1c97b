"""Semantic + keyword search and the leaderboard."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from preprint_server import crud, schemas
from preprint_server.api.deps import ServicesDep, read_access

router = APIRouter(prefix="/api", tags=["search"], dependencies=[Depends(read_access)])


def run_search(svc, q: str, k: int, goal: str | None) -> list[schemas.SearchHit]:
    with svc.db.read_sql() as conn:
        hits = svc.index.search(conn, q, k, goal)
    return [
        schemas.SearchHit(id=h.id, title=h.title, abstract=h.abstract, lab=h.lab, goal=h.goal,
                          score=round(h.score, 6), semantic=None if h.semantic is None else round(h.semantic, 4),
                          snippet=h.snippet)
        for h in hits
    ]


@router.get("/search", response_model=list[schemas.SearchHit])
def search(
    svc: ServicesDep,
    q: Annotated[str, Query(min_length=1, max_length=1000, description="what to look for")],
    k: Annotated[int, Query(ge=1, le=100)] = 5,
    goal: str | None = None,
) -> list[schemas.SearchHit]:
    """Papers ranked by meaning (whole-paper chunk embeddings) fused with keyword matches (BM25)."""
    return run_search(svc, q, k, goal)


@router.get("/leaderboard", response_model=list[schemas.LeaderboardEntry])
def leaderboard(
    svc: ServicesDep, benchmark: str | None = None, goal: str | None = None,
    replicated: Annotated[bool, Query(description="only results another lab replicated consistently")] = False,
) -> list[schemas.LeaderboardEntry]:
    """Best result per benchmark, subset, model and technique, from report-split records that are complete and
    name their harness job and record. Rows compare only within one (benchmark, subset, model)."""
    return [schemas.LeaderboardEntry(**e) for e in crud.leaderboard(svc.db, benchmark, goal, replicated)]
