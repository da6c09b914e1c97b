"""Keyword index: BM25 over title, abstract and body with tantivy (Rust, on disk next to Chroma).

Why not SQLite FTS5: FTS5 scores every matching document and reads every position of every query
term in it (bm25 counts instances). At 10,000 papers of 3,000 words a query took 7.6 ms of CPU;
tantivy stores term frequencies (no positions are needed: queries are OR-ed single words) and
prunes with block-max WAND, 0.15 ms for the same queries. Like Chroma, the index is derived from
the papers table: a paper row is committed only after its entries are written, `reconcile` adds
what is missing, `reset` starts over.

Writers are short-lived (one per write, serialized in this process): tantivy allows one writer
per index across processes, so nothing holds the lock between writes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

FIELD_BOOSTS = {"title": 10.0, "abstract": 4.0, "body": 1.0}  # matches in the title count most
WRITER_HEAP_BYTES = 50_000_000
WRITER_LOCK_WAIT_S = 30.0


class KeywordIndexBusy(RuntimeError):
    """Another process holds the index's writer lock for longer than we wait."""


@dataclass
class KeywordDoc:
    paper_id: str
    goal: str
    title: str
    abstract: str
    body: str


def _schema():
    import tantivy

    sb = tantivy.SchemaBuilder()
    sb.add_text_field("id", stored=True, tokenizer_name="raw")
    sb.add_text_field("goal", tokenizer_name="raw", index_option="basic")
    for name in FIELD_BOOSTS:  # English stemming; frequencies, no positions (no phrase queries)
        sb.add_text_field(name, tokenizer_name="en_stem", index_option="freq")
    return sb.build()


class KeywordIndex:
    def __init__(self, path: Path):
        import tantivy

        self._tantivy = tantivy
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.schema = _schema()
        self.index = tantivy.Index(self.schema, path=str(path), reuse=True)
        self._write_lock = threading.Lock()

    # -- writing -------------------------------------------------------------------------
    @contextmanager
    def _writer(self):
        """A writer for one batch of changes: committed, merged and released on success."""
        with self._write_lock:
            deadline = time.monotonic() + WRITER_LOCK_WAIT_S
            while True:
                try:
                    writer = self.index.writer(WRITER_HEAP_BYTES, 1)
                    break
                except ValueError as e:  # LockBusy: another process is writing
                    if "lock" not in str(e).lower():
                        raise
                    if time.monotonic() > deadline:
                        raise KeywordIndexBusy(f"keyword index {self.path} is locked by another process: {e}") from e
                    time.sleep(0.1)
            try:
                yield writer
                writer.commit()
                writer.wait_merging_threads()  # consumes the writer: the lock is released here
            except BaseException:
                writer.rollback()
                raise
            self.index.reload()  # this process reads its own writes at once

    def add(self, docs: Iterable[KeywordDoc]) -> None:
        docs = list(docs)
        if not docs:
            return
        with self._writer() as w:
            for d in docs:
                w.delete_documents_by_term("id", d.paper_id)  # add = replace
                w.add_document(self._tantivy.Document(
                    id=d.paper_id, goal=d.goal, title=d.title, abstract=d.abstract, body=d.body,
                ))

    def delete(self, paper_ids: Sequence[str]) -> None:
        if paper_ids:
            with self._writer() as w:
                for pid in paper_ids:
                    w.delete_documents_by_term("id", pid)

    def reset(self) -> None:
        with self._writer() as w:
            w.delete_all_documents()

    # -- reading -------------------------------------------------------------------------
    def paper_ids(self) -> set[str]:
        searcher = self.index.searcher()
        if not searcher.num_docs:
            return set()
        hits = searcher.search(self._tantivy.Query.all_query(), searcher.num_docs, count=False).hits
        return {searcher.doc(addr)["id"][0] for _, addr in hits}

    def search(self, terms: Sequence[str], limit: int, goal: str | None = None) -> list[str]:
        """Paper ids by BM25 (per field, weighted by FIELD_BOOSTS), best first; any term may match.

        `terms` are plain words (letters, digits, underscore): each is quoted, so none is read as
        query syntax, and the field's analyzer stems it as it stemmed the papers."""
        if not terms or limit <= 0:
            return []
        Query, Occur = self._tantivy.Query, self._tantivy.Occur
        query = self.index.parse_query(
            " OR ".join(f'"{t}"' for t in terms), list(FIELD_BOOSTS), field_boosts=FIELD_BOOSTS,
        )
        if goal:
            query = Query.boolean_query([(Occur.Must, query), (Occur.Must, Query.term_query(self.schema, "goal", goal))])
        searcher = self.index.searcher()
        hits = searcher.search(query, limit, count=False).hits
        return [searcher.doc(addr)["id"][0] for _, addr in hits]
