"""The FastAPI application: `create_app(settings)` wires SQLite, the blob store and the index."""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from preprint_server import __version__, contract, crud, schemas
from preprint_server.api.deps import Services
from preprint_server.api.routes import goals, pages, papers, search
from preprint_server.catchup import IndexCatchUp
from preprint_server.core.config import ServerSettings
from preprint_server.db import Database
from preprint_server.errors import ServiceError, Unavailable
from preprint_server.search import Embedder, SearchIndex
from preprint_server.storage import BlobStore

log = logging.getLogger("preprint_server")
STATIC = Path(__file__).resolve().parent / "static"


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """413 for request bodies over the limit, by Content-Length or while streaming, before any
    handler buffers them."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._reject(send)
        seen, started = 0, False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        await JSONResponse({"detail": f"request body larger than {self.limit} bytes"}, 413)(
            {"type": "http"}, None, send)


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith(("/api", "/health", "/docs", "/openapi"))


def _error(request: Request, status: int, message: str, headers=None, extra=None):
    if _wants_html(request):
        return pages.TEMPLATES.TemplateResponse(
            request, "error.html", {"status": status, "message": message}, status_code=status, headers=headers)
    return JSONResponse({"detail": message, **(extra or {})}, status_code=status, headers=headers)


def create_app(settings: ServerSettings | None = None, embedder: Embedder | None = None) -> FastAPI:
    settings = settings or ServerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc: Services = app.state.services
        if settings.reconcile_on_startup and not svc.index.lost:  # lost: the catch-up does it on its return
            added, removed = crud.reconcile_index(svc.db, svc.index)
            if added or removed:
                log.info("index reconciled: %d papers added, %d orphans removed", added, removed)
        with svc.db.read_sql() as conn:  # the first search must not pay for loading the model and index
            svc.index.warm(conn)
        # What startup built (models, indexes, the app: ~160,000 objects) lives as long as the
        # process; out of the collector's sight, a full collection no longer scans it, so it no longer
        # stops every request for ~100 ms every few hundred searches.
        gc.collect()
        gc.freeze()
        if svc.catch_up:  # a standalone Chroma server may go away and come back
            svc.catch_up.start()
        yield
        if svc.catch_up:
            svc.catch_up.stop()
        svc.db.close()

    app = FastAPI(
        title="agentlab preprint server", version=__version__, lifespan=lifespan,
        description="Labs publish reports with verified results; other labs search and build on them.",
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db, index = Database(settings.db_path), SearchIndex(settings, embedder)
    app.state.services = Services(
        settings=settings, db=db, index=index, store=BlobStore(settings.blob_dir),
        catch_up=IndexCatchUp(db, index, settings.chroma_retry_s) if settings.chroma_url else None,
    )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for r in (papers.router, papers.public, papers.techniques, search.router, goals.router, pages.router):
        app.include_router(r)

    @app.get("/health", response_model=schemas.Health, tags=["health"])
    def health() -> schemas.Health:
        """Paper counts; 503 while a standalone Chroma server does not answer (search and publishing fail too)."""
        svc: Services = app.state.services
        return schemas.Health(papers=crud.count_papers(svc.db), indexed_papers=len(svc.index.indexed_paper_ids()),
                              version=__version__)

    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.openapi = lambda: contract.openapi(app, settings.private)
    app.add_middleware(contract.JsonBodyCheck, document=app.openapi)  # bodies as the document says
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes)  # before any form parser buffers
    return app


async def _service_error(request: Request, exc: ServiceError):
    extra = {"fields": [exc.field]} if hasattr(exc, "field") else None
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Unavailable) else None
    return _error(request, exc.status, exc.message, headers=headers, extra=extra)


async def _invalid(request: Request, exc: RequestValidationError):
    errors = [
        {"field": ".".join(str(p) for p in e["loc"] if p not in ("body", "query", "path")) or "body",
         "loc": list(e["loc"]), "msg": e["msg"], "type": e.get("type", "")}
        for e in exc.errors()
    ]
    fields = list(dict.fromkeys(e["field"] for e in errors))
    return _error(request, 422, f"invalid fields: {', '.join(fields)}", extra={"fields": fields, "errors": errors})


async def _http_error(request: Request, exc: StarletteHTTPException):
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405 and (allowed := contract.allowed_methods(request.app.openapi(), request.url.path)):
        headers = {**(headers or {}), "Allow": ", ".join(allowed)}
    return _error(request, exc.status_code, str(exc.detail), headers=headers)
