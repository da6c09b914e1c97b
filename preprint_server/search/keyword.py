"""Keyword index: BM25 over passages with tantivy (Rust, on disk next to Chroma).

A paper is several documents: a head (title and abstract) and its body in short passages of whole
sentences (`PASSAGE_WORDS`). A paper ranks by its best passage: an idea stated in one sentence deep
in a long paper scores as it would in a short one, where whole-paper BM25 diluted it by the length
of everything around it (and one common word repeated over a whole paper outweighed it).

Why not SQLite FTS5: FTS5 scores every matching document and reads every position of every query
term in it (bm25 counts instances). At 10,000 papers of 3,000 words a query took 7.6 ms of CPU;
tantivy stores term frequencies (no positions are needed: queries are OR-ed single words): 0.15 ms
for the same queries over whole papers. (It scores every posting of the query's stems: tantivy-py
collects through a MultiCollector, which skips tantivy's block-max WAND; hence COMMON_SHARE.)
Like Chroma, the index is derived from the papers table: a paper row is committed only after its
entries are written, `reconcile` adds what is missing, `reset` starts over.

Writers are short-lived (one per write, serialized in this process): tantivy allows one writer
per index across processes, so nothing holds the lock between writes.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import shutil
import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

FIELD_BOOSTS = {"title": 3.0, "abstract": 1.5, "text": 1.0}  # a title word counts most
# Whole sentences packed into passages of at most PASSAGE_WORDS words, without overlap: a sentence is
# never cut (unless longer than a passage), and each word is indexed once, not 1.5 times as with the
# earlier 48-word windows overlapping by 16. Measured (bench_search_quality.py, 1,000 papers):
# recall@5 0.980 for those windows, 0.990 for 64-word windows without overlap, 0.971 at 96/16;
# half the passages, so half the postings a query scans and ~40% less keyword CPU per search.
PASSAGE_WORDS = 64
SCHEMA_VERSION = 4  # a different version on disk: the index is thrown away and rebuilt from SQLite
RARE_TERM_POWER = 1.0  # query-term weight idf ** this, on top of BM25 (measured: bench_search_quality.py)
# A stem in more than this share of the passages is left out of a query that has rarer stems: weighted
# as above it adds ~1% to a passage's score, and scoring its postings cost most of such a search
# (tantivy-py collects through a MultiCollector, so no block-max WAND skips them: a stem in 70% of
# 560,000 passages took 4.7 ms alone; bench_search_quality.py: recall and MRR unchanged).
# Small indexes keep every stem: they are fast anyway, and their shares say little.
COMMON_SHARE, COMMON_MIN_PASSAGES = 0.5, 10_000
HEAD = 0  # passage number of the head document (title, abstract); body passages count from 1
log = logging.getLogger(__name__)
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


@dataclass
class KeywordHit:
    paper_id: str
    score: float  # BM25 of the paper's best passage
    passage: int  # its number: HEAD, or i + 1 for passages(body)[i]
    span: tuple[int, int] = (0, 0)  # where that passage is in the body (HEAD: none)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")
_WORD = re.compile(r"\S+")


def passage_spans(body: str) -> list[tuple[int, int]]:
    """(start, end) in `body` of each passage: consecutive whole sentences, at most PASSAGE_WORDS words
    (a longer sentence is cut between words). The index stores the spans, so that a snippet is
    `body[start:end]` at search time, without splitting the paper again."""
    spans: list[tuple[int, int]] = []
    start = end = words = 0  # the passage being filled: body[start:end], `words` words
    sentence_start = 0
    for stop in [m.start() for m in _SENTENCE_END.finditer(body)] + [len(body)]:
        cuts = [m.span() for m in _WORD.finditer(body, sentence_start, stop)]
        sentence_start = stop
        if not cuts:
            continue
        if words and words + len(cuts) > PASSAGE_WORDS:
            spans.append((start, end))
            words = 0
        while len(cuts) > PASSAGE_WORDS:  # a sentence longer than a passage (words is 0 here)
            spans.append((cuts[0][0], cuts[PASSAGE_WORDS - 1][1]))
            cuts = cuts[PASSAGE_WORDS:]
        if not words:
            start = cuts[0][0]
        end, words = cuts[-1][1], words + len(cuts)
    if words:
        spans.append((start, end))
    return spans


def passages(body: str) -> list[str]:
    """The body's passages as the index holds them."""
    return [body[a:b] for a, b in passage_spans(body)]


def _schema():
    import tantivy

    sb = tantivy.SchemaBuilder()
    sb.add_text_field("id", stored=True, tokenizer_name="raw")
    sb.add_text_field("goal", tokenizer_name="raw", index_option="basic")
    # What a search reads of each hit, as fast fields (columns): reading stored documents cost more
    # than the search itself (~75 per search). The paper id is a string, so a hit carries its hash
    # (paper_key) and the id is read from the stored document once per paper (KeywordIndex._ids).
    sb.add_integer_field("paper_key", fast=True)  # signed: tantivy-py reads a Python int as i64
    sb.add_integer_field(f"passage_v{SCHEMA_VERSION}", indexed=True, fast=True)
    sb.add_integer_field("start", fast=True)
    sb.add_integer_field("end", fast=True)
    for name in FIELD_BOOSTS:  # English stemming; frequencies, no positions (no phrase queries)
        sb.add_text_field(name, tokenizer_name="en_stem", index_option="freq")
    return sb.build()


def _idf(passages: int, df: int) -> float:
    """BM25's inverse document frequency of a stem in `df` of the `passages`."""
    return math.log(1 + (passages - df + 0.5) / (df + 0.5))


def paper_key(paper_id: str) -> int:
    """64 bits of the paper id's hash (two papers sharing one among millions: ~1e-7)."""
    return int.from_bytes(hashlib.blake2b(paper_id.encode(), digest_size=8).digest(), "little", signed=True)


PASSAGE = f"passage_v{SCHEMA_VERSION}"


class KeywordIndex:
    def __init__(self, path: Path):
        import tantivy

        self._tantivy = tantivy
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.schema = _schema()
        try:
            self.index = tantivy.Index(self.schema, path=str(path), reuse=True)
        except ValueError as e:
            if "schema does not match" not in str(e):
                raise
            # an older layout (whole papers): derived data, so start empty; the startup
            # reconciliation (or `reindex`) fills it again from the papers table
            log.warning("keyword index in %s has an older layout: rebuilding it", path)
            shutil.rmtree(path)
            path.mkdir(parents=True)
            self.index = tantivy.Index(self.schema, path=str(path), reuse=True)
        self._write_lock = threading.Lock()
        # paper_key -> paper id: filled by paper_ids (startup reconciliation), then as searches meet new
        # papers (a key never changes paper)
        self._ids: dict[int, str] = {}
        # the same analysis as the fields' "en_stem" tokenizer, for looking up words as stems
        self._analyzer = (tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple()).filter(tantivy.Filter.remove_long(40))
                          .filter(tantivy.Filter.lowercase()).filter(tantivy.Filter.stemmer("english")).build())

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
        Document = self._tantivy.Document
        with self._writer() as w:
            for d in docs:
                w.delete_documents_by_term("id", d.paper_id)  # add = replace
                key = paper_key(d.paper_id)
                w.add_document(Document(id=d.paper_id, paper_key=key, goal=d.goal, title=d.title, abstract=d.abstract,
                                        start=0, end=0, **{PASSAGE: HEAD}))
                for i, (start, end) in enumerate(passage_spans(d.body), start=1):
                    w.add_document(Document(id=d.paper_id, paper_key=key, goal=d.goal, text=d.body[start:end],
                                            start=start, end=end, **{PASSAGE: i}))

    def delete(self, paper_ids: Sequence[str]) -> None:
        if paper_ids:
            with self._writer() as w:
                for pid in paper_ids:
                    w.delete_documents_by_term("id", pid)

    def reset(self) -> None:
        with self._writer() as w:
            w.delete_all_documents()

    # -- reading -------------------------------------------------------------------------
    def term_weights(self, terms: Sequence[str]) -> dict[str, float]:
        """term -> how rare it is among the passages (BM25's idf of its rarest stem)."""
        searcher = self.index.searcher()
        n = max(1, searcher.num_docs)
        return {t: max((_idf(n, searcher.doc_freq("text", s)) for s in self._analyzer.analyze(t)), default=0.0)
                for t in terms}

    def _query(self, searcher, terms: Sequence[str]):
        """Any stem of `terms` in any field, each stem weighted by idf ** RARE_TERM_POWER on top of
        BM25's own idf: a passage matching one word that only a few passages hold outranks one
        matching several words that many hold. Stems in most passages are left out when others
        occur (COMMON_SHARE)."""
        Query, Occur = self._tantivy.Query, self._tantivy.Occur
        n = max(1, searcher.num_docs)
        df = {s: searcher.doc_freq("text", s) for t in terms for s in self._analyzer.analyze(t)}
        stems = list(df)
        rarer = [s for s in stems if df[s] <= COMMON_SHARE * n]
        if n >= COMMON_MIN_PASSAGES and any(df[s] for s in rarer):
            stems = rarer
        subqueries = []
        for stem in stems:
            weight = _idf(n, df[stem]) ** RARE_TERM_POWER
            for name, boost in FIELD_BOOSTS.items():
                term = Query.term_query(self.schema, name, stem, index_option="freq")
                subqueries.append((Occur.Should, Query.boost_query(term, boost * weight)))
        return Query.boolean_query(subqueries) if subqueries else None

    def paper_ids(self) -> set[str]:
        searcher = self.index.searcher()
        if not searcher.num_docs:
            return set()
        heads = self._tantivy.Query.term_query(self.schema, PASSAGE, HEAD)  # one per paper
        addrs = [addr for _, addr in searcher.search(heads, searcher.num_docs, count=False).hits]
        ids = [searcher.doc(addr)["id"][0] for addr in addrs]
        self._ids.update(zip(searcher.fast_field_values("paper_key", addrs), ids))  # searches need not read them
        return set(ids)

    def search(self, terms: Sequence[str], limit: int, goal: str | None = None) -> list[KeywordHit]:
        """The `limit` papers with the best passages by BM25 (fields weighted by FIELD_BOOSTS), best
        first; any term may match.

        `terms` are words, looked up as words (never read as query syntax), stemmed as the papers
        were."""
        if not terms or limit <= 0:
            return []
        searcher = self.index.searcher()
        query = self._query(searcher, terms)
        if query is None:
            return []
        if goal:
            Query, Occur = self._tantivy.Query, self._tantivy.Occur
            query = Query.boolean_query([(Occur.Must, query), (Occur.Must, Query.term_query(self.schema, "goal", goal))])
        # a paper may own several of the best passages: look deeper when it does (a larger n costs
        # more: the search keeps the n best passages, and prunes less)
        n = limit * 3 // 2
        while True:
            hits = searcher.search(query, n, count=False).hits
            best: dict[int, tuple[float, object]] = {}  # paper_key -> (score, address) of its best passage
            for (score, addr), key in zip(hits, searcher.fast_field_values("paper_key", [a for _, a in hits])):
                if key not in best:  # best first
                    best[key] = (score, addr)
                    if len(best) == limit:
                        break
            if len(best) == limit or len(hits) < n or n >= 64 * limit:  # enough papers, all there is, or enough looking
                return self._hits(searcher, best)
            n *= 4

    def _hits(self, searcher, best: dict[int, tuple[float, object]]) -> list[KeywordHit]:
        addrs = [addr for _, addr in best.values()]
        columns = zip(*(searcher.fast_field_values(f, addrs) for f in (PASSAGE, "start", "end")))
        out = []
        for (key, (score, addr)), (number, start, end) in zip(best.items(), columns):
            pid = self._ids.get(key)
            if pid is None:
                pid = self._ids[key] = searcher.doc(addr)["id"][0]
            out.append(KeywordHit(pid, score, number, (start, end)))
        return out
