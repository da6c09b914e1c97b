"""Reading and writing the tables. Write paths keep a paper all-or-nothing: files are stored
first (content-addressed, harmless if orphaned), embeddings computed outside the lock, then the
rows are written in one SQLite transaction, with the Chroma and keyword entries as its last step
before the commit (taken back out if the commit fails)."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import func, literal_column, or_, select
from sqlalchemy.orm import Session, selectinload

from preprint_server import goals, schemas
from preprint_server.db import Database
from preprint_server.errors import Forbidden, Invalid, NotFound, Unavailable
from preprint_server.models import (
    ApiKey,
    Citation,
    Goal,
    Lab,
    Paper,
    PaperFile,
    PaperTechnique,
    Replication,
    Result,
    Review,
)
from preprint_server.replication import counts_by_result
from preprint_server.search import SearchIndex
from preprint_server.storage import BlobStore

KEY_PREFIX = "alk_"


# -- labs and keys -------------------------------------------------------------------------
def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(db: Database, lab_name: str) -> str:
    """Create the lab if needed and a new key for it; the key itself is returned once, never stored."""
    if not schemas.is_valid_id(lab_name):
        raise Invalid("lab", "use letters, digits, '-' and '_' (at most 64)")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with db.write() as s:
        lab = s.scalar(select(Lab).where(Lab.name == lab_name))
        if lab is None:
            lab = Lab(name=lab_name)
            s.add(lab)
            s.flush()
        s.add(ApiKey(lab_id=lab.id, key_hash=hash_key(key), prefix=key[:10]))
    return key


def list_keys(db: Database) -> list[ApiKey]:
    with db.read() as s:
        return list(s.scalars(select(ApiKey).options(selectinload(ApiKey.lab)).order_by(ApiKey.id)))


def revoke_keys(db: Database, lab_or_prefix: str) -> int:
    """Revoke every key of a lab, or the one key starting with the given prefix."""
    with db.write() as s:
        keys = list(s.scalars(
            select(ApiKey).join(Lab).where(or_(Lab.name == lab_or_prefix, ApiKey.prefix == lab_or_prefix[:10]))
            .where(ApiKey.revoked.is_(False))
        ))
        if lab_or_prefix.startswith(KEY_PREFIX):
            keys = [k for k in keys if lab_or_prefix.startswith(k.prefix)]
        for k in keys:
            k.revoked = True
        return len(keys)


@dataclass
class KeyCheck:
    lab: Lab | None
    known: bool  # False: no such key; True with lab None: revoked


def lab_for_key(db: Database, key: str) -> KeyCheck:
    with db.read() as s:
        row = s.scalar(select(ApiKey).options(selectinload(ApiKey.lab)).where(ApiKey.key_hash == hash_key(key)))
        if row is None:
            return KeyCheck(None, False)
        return KeyCheck(None if row.revoked else row.lab, True)


# -- goals ---------------------------------------------------------------------------------
def create_goal(db: Database, data: schemas.GoalCreate, created_by: str) -> Goal:
    with db.write() as s:
        goal = Goal(id="g" + secrets.token_hex(4), created_by=created_by, **data.model_dump())
        s.add(goal)
    return goal


def list_goals(db: Database, status: str | None = None) -> list[Goal]:
    goals.expire_due(db)  # leases past their expiry end first: their goals are open again
    with db.read() as s:
        q = select(Goal).order_by(Goal.created.desc(), Goal.id)
        if status:
            q = q.where(Goal.status == status)
        return list(s.scalars(q))


def get_goal(db: Database, goal_id: str) -> Goal:
    goals.expire_due(db)
    with db.read() as s:
        goal = s.get(Goal, goal_id) if schemas.is_valid_id(goal_id) else None
        if goal is None:
            raise NotFound(f"no goal {goal_id!r}")
        return goal


# -- papers --------------------------------------------------------------------------------
@dataclass
class Upload:
    kind: str  # pdf | source | artifact
    name: str
    content_type: str
    data: bytes


def _paper_query():
    return select(Paper).options(
        selectinload(Paper.lab), selectinload(Paper.results), selectinload(Paper.files),
        selectinload(Paper.reviews).selectinload(Review.lab),
        selectinload(Paper.replications).selectinload(Replication.lab),
        selectinload(Paper.replications).selectinload(Replication.original), selectinload(Paper.techniques),
    )


def _existing(s: Session, lab: Lab, key: str | None) -> Paper | None:
    if not key:
        return None
    return s.scalar(_paper_query().where(Paper.lab_id == lab.id, Paper.idempotency_key == key))


def _check_refs(s: Session, data: schemas.PaperCreate) -> None:
    if data.goal and s.get(Goal, data.goal) is None:
        raise Invalid("goal", f"unknown goal {data.goal!r}")
    if data.citations:
        found = set(s.scalars(select(Paper.id).where(Paper.id.in_(data.citations))))
        missing = [c for c in data.citations if c not in found]
        if missing:
            raise Invalid("citations", f"unknown paper ids: {', '.join(missing[:5])}")


def create_paper(
    db: Database, index: SearchIndex, store: BlobStore, lab: Lab,
    data: schemas.PaperCreate, uploads: list[Upload] = (),
) -> tuple[Paper, bool]:
    """Store a paper; returns (paper, created). An idempotency key seen before returns the first paper.
    Raises Unavailable (nothing stored) while a standalone Chroma server does not answer."""
    with db.read() as s:
        if (old := _existing(s, lab, data.idempotency_key)) is not None:
            return old, False
        _check_refs(s, data)
    index.check_available()
    uploads = list(uploads)
    if data.latex_source is not None:
        uploads.append(Upload("source", "source.tex", "text/x-tex; charset=utf-8", data.latex_source.encode()))
    stored = [(u, store.put(u.data)) for u in uploads]
    paper_id = secrets.token_hex(6)
    prepared = index.prepare(paper_id, data.title, data.abstract, data.body, data.goal)

    indexed = False
    try:
        with db.write() as s:
            # re-check under the write lock: a concurrent request may have won the race
            if (old := _existing(s, lab, data.idempotency_key)) is not None:
                return old, False
            _check_refs(s, data)
            paper = Paper(
                id=paper_id, title=data.title, abstract=data.abstract, body=data.body, lab_id=lab.id,
                goal_id=data.goal, status=data.status, tags=data.tags, idempotency_key=data.idempotency_key,
            )
            s.add(paper)
            s.flush()
            paper.results = [Result(**r.model_dump()) for r in data.results]
            paper.files = [
                PaperFile(kind=u.kind, name=u.name, sha256=sha, size=len(u.data), content_type=u.content_type)
                for u, sha in stored
            ]
            s.add_all(Citation(citing_id=paper_id, cited_id=c, relation=data.relations.get(c, "background"))
                      for c in data.citations)
            s.add_all(Review(paper_id=paper_id, lab_id=lab.id, scores=r.scores, text=r.text) for r in data.reviews)
            s.add_all(PaperTechnique(paper_id=paper_id, **t.model_dump()) for t in data.techniques)
            s.flush()
            goals.after_publish(s, paper_id, data.goal)  # the goal closes at its target or its paper budget
            index.add([prepared])  # last step before commit: a failure above leaves no index entries
            indexed = True
    except BaseException:
        if indexed:  # the commit itself failed: take the vectors back out (or the next reconcile will)
            with contextlib.suppress(Unavailable):
                index.delete([paper_id])
        raise
    return get_paper(db, paper_id), True


def techniques_by_hash(db: Database, spec_hash: str) -> list[PaperTechnique]:
    """Every published copy of the technique with this hash (in papers that are not retracted), oldest first."""
    with db.read() as s:
        return list(s.scalars(select(PaperTechnique).join(Paper, Paper.id == PaperTechnique.paper_id)
                              .where(PaperTechnique.spec_hash == spec_hash, Paper.status != "retracted")
                              .order_by(Paper.created)))


def get_paper(db: Database, paper_id: str) -> Paper:
    with db.read() as s:
        paper = s.scalar(_paper_query().where(Paper.id == paper_id)) if schemas.is_valid_id(paper_id) else None
        if paper is None:
            raise NotFound(f"no paper {paper_id!r}")
        return paper


def retract_paper(db: Database, paper_id: str, lab: Lab) -> Paper:
    """Retract one of `lab`'s papers: still readable by id, gone from search results and leaderboards."""
    with db.write() as s:
        paper = s.get(Paper, paper_id) if schemas.is_valid_id(paper_id) else None
        if paper is None:
            raise NotFound(f"no paper {paper_id!r}")
        if paper.lab_id != lab.id:
            raise Forbidden(f"paper {paper_id!r} belongs to another lab")
        paper.status = "retracted"
    return get_paper(db, paper_id)


def citations(db: Database, paper_id: str, cited_by: bool = False) -> list[Paper]:
    get_paper(db, paper_id)
    with db.read() as s:
        if cited_by:
            q = select(Paper).join(Citation, Citation.citing_id == Paper.id).where(Citation.cited_id == paper_id)
        else:
            q = select(Paper).join(Citation, Citation.cited_id == Paper.id).where(Citation.citing_id == paper_id)
        return list(s.scalars(q.options(selectinload(Paper.lab)).order_by(Paper.created)))


def citation_ids(db: Database, paper_id: str) -> tuple[list[str], list[str]]:
    with db.read() as s:
        in_order = literal_column("citations.rowid")  # the order the author listed them
        cites = list(s.scalars(select(Citation.cited_id).where(Citation.citing_id == paper_id).order_by(in_order)))
        cited_by = list(s.scalars(select(Citation.citing_id).where(Citation.cited_id == paper_id).order_by(in_order)))
    return cites, cited_by


def citation_relations(db: Database, paper_id: str) -> dict[str, str]:
    """cited paper id -> relation, for the papers ``paper_id`` cites."""
    with db.read() as s:
        return dict(s.execute(select(Citation.cited_id, Citation.relation).where(Citation.citing_id == paper_id)).all())


SORTS = {
    "created": Paper.created.asc(), "-created": Paper.created.desc(),
    "title": Paper.title.asc(), "-title": Paper.title.desc(),
}


def list_papers(
    db: Database, *, goal: str | None = None, lab: str | None = None, benchmark: str | None = None,
    status: str | None = None, sort: str = "-created", limit: int = 20, offset: int = 0,
) -> tuple[list[Paper], int]:
    q = select(Paper)
    if goal:
        q = q.where(Paper.goal_id == goal)
    if lab:
        q = q.join(Lab, Lab.id == Paper.lab_id).where(Lab.name == lab)
    if benchmark:
        q = q.where(Paper.id.in_(select(Result.paper_id).where(Result.benchmark == benchmark)))
    if status:
        q = q.where(Paper.status == status)
    with db.read() as s:
        total = s.scalar(select(func.count()).select_from(q.subquery()))
        rows = s.scalars(
            q.options(selectinload(Paper.lab)).order_by(SORTS[sort], Paper.id).limit(limit).offset(offset)
        )
        return list(rows), total


def add_review(db: Database, paper_id: str, lab: Lab, data: schemas.ReviewCreate) -> Review:
    get_paper(db, paper_id)
    with db.write() as s:
        review = Review(paper_id=paper_id, lab_id=lab.id, scores=data.scores, text=data.text)
        s.add(review)
        s.flush()
        review.lab = s.get(Lab, lab.id)
    return review


def _ranked(q):
    """Only results that may be ranked: report split, complete, with harness ids, in a live paper."""
    return q.where(Paper.status != "retracted", Result.split == "report", Result.complete.is_(True),
                   Result.job_id != "", Result.record_id != "")


def leaderboard(db: Database, benchmark: str | None = None, goal: str | None = None,
                replicated: bool = False) -> list[dict]:
    """Best ranked result per (benchmark, subset, model, technique); rows of one (benchmark, subset, model)
    group are comparable, rows of different groups are not (another model, other problems)."""
    q = _ranked(select(Result, Paper, Lab).join(Paper, Paper.id == Result.paper_id).join(Lab, Lab.id == Paper.lab_id))
    if benchmark:
        q = q.where(Result.benchmark == benchmark)
    if goal:
        q = q.where(Paper.goal_id == goal)
    checked = counts_by_result(db)
    best: dict[tuple[str, str, str, str], dict] = {}
    with db.read() as s:
        for r, p, lab in s.execute(q.order_by(Paper.created)):
            consistent, failed = checked.get(r.id, (0, 0))
            if replicated and not consistent:
                continue
            key = (r.benchmark, r.subset, r.model, r.technique)
            if key not in best or r.accuracy > best[key]["accuracy"]:
                best[key] = dict(
                    benchmark=r.benchmark, subset=r.subset, technique=r.technique, spec_hash=r.spec_hash,
                    model=r.model, model_id=r.model_id, split=r.split, accuracy=r.accuracy, ci_low=r.ci_low,
                    ci_high=r.ci_high, n=r.n, errors=r.errors, tokens_per_problem=r.tokens_per_problem,
                    paper_id=p.id, paper_title=p.title, lab=lab.name, created=p.created,
                    replications=consistent, not_reproduced=failed,
                )
    return sorted(best.values(), key=lambda e: (e["benchmark"], e["subset"], e["model"], -e["accuracy"], e["technique"]))


def leaderboard_groups(entries: list[dict]) -> list[dict]:
    """Leaderboard rows split into comparable groups: {"benchmark", "subset", "model", "entries"}."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for e in entries:
        groups.setdefault((e["benchmark"], e["subset"], e["model"]), []).append(e)
    return [{"benchmark": b, "subset": sub, "model": m, "entries": es} for (b, sub, m), es in groups.items()]


def progress(db: Database, benchmark: str, subset: str | None = None, model: str | None = None) -> list[tuple[int, float]]:
    """(papers published so far, best ranked accuracy so far) after each paper with a new best, for one
    benchmark (and subset and model when given: only one comparable group makes an honest line)."""
    q = _ranked(select(Result.paper_id, func.max(Result.accuracy)).join(Paper, Paper.id == Result.paper_id)
                .where(Result.benchmark == benchmark))
    if subset is not None:
        q = q.where(Result.subset == subset)
    if model is not None:
        q = q.where(Result.model == model)
    with db.read() as s:
        papers = list(s.execute(select(Paper.id, Paper.created).where(Paper.status != "retracted").order_by(Paper.created)))
        acc: dict[str, float] = dict(s.execute(q.group_by(Result.paper_id)).all())
    points, best = [], None
    for i, (pid, _) in enumerate(papers, start=1):
        if pid in acc and (best is None or acc[pid] > best):
            best = acc[pid]
            points.append((i, best))
    if points and points[-1][0] != len(papers):
        points.append((len(papers), best))
    return points


def benchmarks(db: Database) -> list[str]:
    with db.read() as s:
        return list(s.scalars(select(Result.benchmark).distinct().order_by(Result.benchmark)))


def count_papers(db: Database) -> int:
    with db.read() as s:
        return s.scalar(select(func.count(Paper.id)))


def all_papers(db: Database) -> list[Paper]:
    with db.read() as s:
        return list(s.scalars(select(Paper).order_by(Paper.created)))


def get_lab(db: Database, name: str) -> Lab:
    with db.read() as s:
        lab = s.scalar(select(Lab).where(Lab.name == name)) if schemas.is_valid_id(name) else None
        if lab is None:
            raise NotFound(f"no lab {name!r}")
        return lab


# -- index maintenance (the index is derived from these tables) ----------------------------
def reconcile_index(db: Database, index: SearchIndex, batch: int = 16) -> tuple[int, int]:
    """Index papers missing from Chroma or from the keyword index (each only where it is
    missing: embedding is the slow part), and drop entries of papers that do not exist.
    Returns (papers added to either, orphans removed)."""
    papers = all_papers(db)
    known = {p.id for p in papers}
    with_vectors, with_keywords = index.vector_paper_ids(), index.keywords.paper_ids()
    orphans = sorted((with_vectors | with_keywords) - known)
    index.delete(orphans)
    no_vectors = [p for p in papers if p.id not in with_vectors]
    for i in range(0, len(no_vectors), batch):
        index.add_vectors(index.prepare_many(no_vectors[i : i + batch]))
    no_keywords = [p for p in papers if p.id not in with_keywords]
    index.add_keywords(no_keywords)
    return len({p.id for p in no_vectors + no_keywords}), len(orphans)


def rebuild_index(db: Database, index: SearchIndex, batch: int = 16, progress=None) -> int:
    """Drop and rebuild the whole index (Chroma and keywords) from the papers table."""
    index.reset()
    papers = all_papers(db)
    for i in range(0, len(papers), batch):
        index.add(index.prepare_many(papers[i : i + batch]))
        if progress:
            progress(min(i + batch, len(papers)), len(papers))
    return len(papers)
