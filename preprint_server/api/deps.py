"""Request dependencies: the service bundle and the two auth levels (write; read when private)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from preprint_server import crud
from preprint_server.catchup import IndexCatchUp
from preprint_server.core.config import ServerSettings
from preprint_server.db import Database
from preprint_server.models import Lab
from preprint_server.search import SearchIndex
from preprint_server.storage import BlobStore


@dataclass
class Services:
    settings: ServerSettings
    db: Database
    index: SearchIndex
    store: BlobStore
    catch_up: IndexCatchUp | None = None  # with a standalone Chroma server: re-adds papers after its loss


async def get_services(request: Request) -> Services:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per request
    return request.app.state.services


bearer = HTTPBearer(auto_error=False, description="a lab key from `agentlab server keys create LAB`")
ServicesDep = Annotated[Services, Depends(get_services)]


def _lab(svc: Services, creds: HTTPAuthorizationCredentials | None) -> Lab:
    challenge = {"WWW-Authenticate": "Bearer"}
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise HTTPException(401, "missing API key: send 'Authorization: Bearer <lab key>'", headers=challenge)
    check = crud.lab_for_key(svc.db, creds.credentials)
    if not check.known:
        raise HTTPException(403, "invalid API key")
    if check.lab is None:
        raise HTTPException(403, "API key revoked")
    return check.lab


def require_lab(svc: ServicesDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Lab:
    return _lab(svc, creds)


async def read_access(request: Request, svc: ServicesDep) -> None:
    """Reads need a key only on a private server. The header is read here rather than through the
    `bearer` dependency, which would declare a key for every read in the OpenAPI document (app.py
    declares it on reads when the server is private)."""
    if svc.settings.private:
        scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
        creds = HTTPAuthorizationCredentials(scheme=scheme, credentials=token) if scheme else None
        await run_in_threadpool(_lab, svc, creds)  # a database lookup: off the event loop


LabDep = Annotated[Lab, Depends(require_lab)]
