"""ORM rows -> wire schemas."""

from __future__ import annotations

from preprint_server import crud, replication, schemas
from preprint_server.db import Database
from preprint_server.models import Paper, Review


def summary(p: Paper) -> schemas.PaperSummary:
    return schemas.PaperSummary(
        id=p.id, title=p.title, abstract=p.abstract, lab=p.lab.name, goal=p.goal_id,
        status=p.status, tags=list(p.tags or []), created=p.created,
    )


def review_out(r: Review) -> schemas.ReviewOut:
    return schemas.ReviewOut(
        id=r.id, paper_id=r.paper_id, lab=r.lab.name, scores=r.scores, text=r.text, created=r.created
    )


def paper_out(db: Database, p: Paper) -> schemas.PaperOut:
    cites, cited_by = crud.citation_ids(db, p.id)
    results = [
        schemas.ResultOut.model_validate(r)  # from_attributes: the row's columns and properties
        for r in p.results
    ]
    files = [
        schemas.FileOut(kind=f.kind, name=f.name, sha256=f.sha256, size=f.size, content_type=f.content_type)
        for f in p.files
    ]
    return schemas.PaperOut(
        **summary(p).model_dump(), body=p.body, results=results, citations=cites, cited_by=cited_by,
        relations=crud.citation_relations(db, p.id),
        reviews=[review_out(r) for r in p.reviews], files=files,
        has_pdf=any(f.kind == "pdf" for f in p.files), has_source=any(f.kind == "source" for f in p.files),
        idempotency_key=p.idempotency_key,
        techniques=[schemas.TechniqueArtifact.model_validate(t) for t in p.techniques],
        replications=[replication.replication_out(r) for r in p.replications],
        replication=replication.summary(p.replications, p.lab_id),
    )


def technique_out(p: Paper, t) -> schemas.TechniqueOut:
    """One of paper ``p``'s techniques, with the paper's results that measured it."""
    return schemas.TechniqueOut(
        **schemas.TechniqueArtifact.model_validate(t).model_dump(), paper_id=p.id, lab=p.lab.name,
        results=[schemas.ResultOut.model_validate(r) for r in p.results if r.spec_hash == t.spec_hash],
    )
