"""Papers: publish (JSON or multipart with files), list, read, files, citations, reviews, replications, retract."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from preprint_server import crud, replication, schemas
from preprint_server.api.deps import LabDep, ServicesDep, read_access
from preprint_server.convert import paper_out, review_out, summary, technique_out
from preprint_server.errors import Invalid, NotFound, TooLarge

router = APIRouter(prefix="/api/papers", tags=["papers"])
public = APIRouter(prefix="/api/papers", tags=["papers"], dependencies=[Depends(read_access)])
techniques = APIRouter(prefix="/api/techniques", tags=["techniques"], dependencies=[Depends(read_access)])

FILE_FIELDS = {"pdf": "pdf", "source": "source", "artifacts": "artifact"}
_PUBLISH_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PaperCreate"}},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["metadata"],
                "properties": {
                    "metadata": {"type": "string", "description": "PaperCreate as JSON"},
                    "pdf": {"type": "string", "format": "binary"},
                    "source": {"type": "string", "format": "binary", "description": "LaTeX source"},
                    "artifacts": {"type": "array", "items": {"type": "string", "format": "binary"}},
                },
            }},
        },
    }
}


def _validation_error(exc: ValidationError, prefix: tuple) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": prefix + tuple(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    )


def _safe_name(name: str | None, kind: str) -> str:
    # Names are metadata only (blobs are stored by hash), but keep them plain for downloads.
    name = (name or kind).strip()
    if not name or "/" in name or "\\" in name or name in {".", ".."} or "\x00" in name or len(name) > 255:
        raise Invalid(kind, f"file name {name!r} is not a plain file name")
    return name


async def _read_multipart(request: Request, svc) -> tuple[schemas.PaperCreate, list[crud.Upload]]:
    limit = svc.settings.max_upload_bytes
    form = await request.form(max_files=200, max_fields=50, max_part_size=limit)
    raw = form.get("metadata")
    if not isinstance(raw, str):
        raise RequestValidationError([{"loc": ("body", "metadata"), "msg": "Field required", "type": "missing"}])
    try:
        data = schemas.PaperCreate.model_validate_json(raw)
    except ValidationError as exc:
        raise _validation_error(exc, ("body", "metadata")) from None
    uploads: list[crud.Upload] = []
    for field, kind in FILE_FIELDS.items():
        items = form.getlist(field)
        if kind != "artifact" and len(items) > 1:
            raise Invalid(field, "at most one file")
        for item in items:
            if not isinstance(item, UploadFile):
                raise Invalid(field, "expected a file upload")
            blob = await item.read()
            if len(blob) > svc.settings.max_file_bytes:
                raise TooLarge(f"{field}: file larger than {svc.settings.max_file_bytes} bytes")
            if kind == "pdf" and not blob.startswith(b"%PDF-"):
                raise Invalid("pdf", "not a PDF file (no %PDF- header)")
            ctype = {"pdf": "application/pdf", "source": "text/x-tex; charset=utf-8"}.get(
                kind, item.content_type or "application/octet-stream")
            uploads.append(crud.Upload(kind, _safe_name(item.filename, kind), ctype, blob))
    if data.latex_source is not None and any(u.kind == "source" for u in uploads):
        raise Invalid("latex_source", "send the LaTeX source either as text or as a file, not both")
    return data, uploads


@router.post("", status_code=201, response_model=schemas.PaperOut, openapi_extra=_PUBLISH_DOC,
             responses={200: {"description": "already published with this idempotency_key"}})
async def publish(request: Request, response: Response, lab: LabDep, svc: ServicesDep) -> schemas.PaperOut:
    """Publish a paper (JSON body, or multipart with `metadata` + `pdf`/`source`/`artifacts` files).

    Answers 201 once the row, files and index entries are written; 200 with the first paper
    when `idempotency_key` was used before by the same lab."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        data, uploads = await _read_multipart(request, svc)
    else:
        raw = await request.body()
        try:
            data = schemas.PaperCreate.model_validate_json(raw or b"")
        except ValidationError as exc:
            raise _validation_error(exc, ("body",)) from None
        uploads = []
    if len(data.body) > svc.settings.max_body_chars:
        raise TooLarge(f"body: longer than {svc.settings.max_body_chars} characters")
    paper, created = await run_in_threadpool(crud.create_paper, svc.db, svc.index, svc.store, lab, data, uploads)
    response.status_code = 201 if created else 200
    return paper_out(svc.db, paper)


@public.get("", response_model=schemas.PaperPage)
def list_papers(
    svc: ServicesDep,
    goal: str | None = None, lab: str | None = None, benchmark: str | None = None,
    status: schemas.PaperStatus | None = None,
    sort: Literal["created", "-created", "title", "-title"] = "-created",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,  # SQLite integers are 64-bit
) -> schemas.PaperPage:
    rows, total = crud.list_papers(svc.db, goal=goal, lab=lab, benchmark=benchmark, status=status,
                                   sort=sort, limit=limit, offset=offset)
    return schemas.PaperPage(items=[summary(p) for p in rows], total=total, limit=limit, offset=offset)


@public.get("/{paper_id}", response_model=schemas.PaperOut)
def get_paper(paper_id: str, svc: ServicesDep) -> schemas.PaperOut:
    return paper_out(svc.db, crud.get_paper(svc.db, paper_id))


def _file_response(svc, paper_id: str, kind: str, name: str | None = None) -> Response:
    paper = crud.get_paper(svc.db, paper_id)
    for f in paper.files:
        if f.kind == kind and (name is None or f.name == name):
            disposition = "attachment" if kind != "pdf" else "inline"
            fallback = f.name.encode("ascii", "replace").decode().replace('"', "_")
            return Response(
                svc.store.read(f.sha256), media_type=f.content_type,
                headers={"Content-Disposition": f'{disposition}; filename="{fallback}"',
                         "X-Content-Type-Options": "nosniff"},
            )
    raise NotFound(f"paper {paper_id!r} has no {kind}" + (f" named {name!r}" if name else ""))


@public.get("/{paper_id}/pdf", response_class=Response, responses={200: {"content": {"application/pdf": {}}}})
def get_pdf(paper_id: str, svc: ServicesDep) -> Response:
    return _file_response(svc, paper_id, "pdf")


@public.get("/{paper_id}/source", response_class=Response)
def get_source(paper_id: str, svc: ServicesDep) -> Response:
    return _file_response(svc, paper_id, "source")


@public.get("/{paper_id}/artifacts/{name}", response_class=Response)
def get_artifact(paper_id: str, name: str, svc: ServicesDep) -> Response:
    return _file_response(svc, paper_id, "artifact", name)


@public.get("/{paper_id}/citations", response_model=list[schemas.PaperSummary])
def get_citations(paper_id: str, svc: ServicesDep) -> list[schemas.PaperSummary]:
    """Papers this paper builds on."""
    return [summary(p) for p in crud.citations(svc.db, paper_id)]


@public.get("/{paper_id}/cited-by", response_model=list[schemas.PaperSummary])
def get_cited_by(paper_id: str, svc: ServicesDep) -> list[schemas.PaperSummary]:
    """Papers that build on this paper."""
    return [summary(p) for p in crud.citations(svc.db, paper_id, cited_by=True)]


@router.post("/{paper_id}/retract", response_model=schemas.PaperOut)
def retract(paper_id: str, lab: LabDep, svc: ServicesDep) -> schemas.PaperOut:
    """Retract a paper of the calling lab (403 for another lab's): it stays readable by id but leaves
    search results and leaderboards. Retracting twice changes nothing."""
    return paper_out(svc.db, crud.retract_paper(svc.db, paper_id, lab))


@router.post("/{paper_id}/reviews", status_code=201, response_model=schemas.ReviewOut)
def add_review(paper_id: str, review: schemas.ReviewCreate, lab: LabDep, svc: ServicesDep) -> schemas.ReviewOut:
    return review_out(crud.add_review(svc.db, paper_id, lab, review))


@router.post("/{paper_id}/replications", status_code=201, response_model=schemas.ReplicationOut)
def add_replication(paper_id: str, rec: schemas.ReplicationCreate, lab: LabDep, svc: ServicesDep) -> schemas.ReplicationOut:
    """Record the calling lab's re-run of one of the paper's report-split results (same benchmark, subset,
    model and technique). The server judges it: "consistent" when its accuracy lies in the original record's
    95% interval, else "not reproduced". 422 names what does not match the original."""
    return replication.replication_out(replication.add_replication(svc.db, paper_id, lab, rec))


@public.get("/{paper_id}/replications", response_model=list[schemas.ReplicationOut])
def get_replications(paper_id: str, svc: ServicesDep) -> list[schemas.ReplicationOut]:
    """Every replication of the paper's results, oldest first."""
    crud.get_paper(svc.db, paper_id)
    return [replication.replication_out(r) for r in replication.replications(svc.db, paper_id)]


@public.get("/{paper_id}/techniques", response_model=list[schemas.TechniqueOut])
def get_techniques(paper_id: str, svc: ServicesDep) -> list[schemas.TechniqueOut]:
    """The techniques the paper evaluated, as full specs with the results that measured them."""
    paper = crud.get_paper(svc.db, paper_id)
    return [technique_out(paper, t) for t in paper.techniques]


@techniques.get("/{spec_hash}", response_model=list[schemas.TechniqueOut])
def get_technique_by_hash(spec_hash: str, svc: ServicesDep) -> list[schemas.TechniqueOut]:
    """Every paper that published the technique with this content hash (oldest first), with its results."""
    rows = crud.techniques_by_hash(svc.db, spec_hash)
    if not rows:
        raise NotFound(f"no published technique with hash {spec_hash!r}")
    papers = {pid: crud.get_paper(svc.db, pid) for pid in dict.fromkeys(t.paper_id for t in rows)}
    return [technique_out(papers[t.paper_id], t) for t in rows]
