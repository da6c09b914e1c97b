"""Retrieval quality of the preprint server's search on papers that share their vocabulary, where
the idea that matters is one sentence deep in the body (see search_quality_corpus.py).

    .venv/bin/python benchmarks/bench_search_quality.py [--papers 1000 10000] [--embed-only]

For each corpus size: the papers go into a real index (SQLite, Chroma, tantivy) through the server's
own code, and each query (a paraphrase of one idea, 3 right papers) is searched by
  * baseline: the ranking before this benchmark existed (whole-paper BM25 and the papers of the
    nearest chunks, fused by reciprocal rank), reproduced here over the same vectors;
  * current: `SearchIndex.search`, what the server runs now (queries through the int8 graph);
  * with --fp32-queries, the same and the semantic side alone with queries embedded in fp32.
Printed: recall@5 and recall@10 (the share of the 3 right papers in the top k), hit@5 (a right
paper in the top 5), MRR (of the first right paper), and the ranks of the misses.

Chunk embeddings are real (all-MiniLM-L6-v2) and cached on disk by chunk text
(~/.cache/agentlab/bench-search-quality, or --cache): the first run at 10,000 papers embeds ~64,000
chunks (15 chunks/s on 2 idle cores, about 70 minutes; 5-7/s on a busy machine; `--embed-only`
fills the cache and can be interrupted and resumed); later runs only index and search.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from search_quality_corpus import SynthPaper, check, corpus

from preprint_server.core.config import ServerSettings
from preprint_server.search import SearchIndex
from preprint_server.search.index import chunk_text, paper_text

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "agentlab" / "bench-search-quality"


class EmbeddingCache:
    """Chunk text -> vector (float32), in SQLite: safe to interrupt, grows as corpora grow."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(path)
        self.con.execute("CREATE TABLE IF NOT EXISTS vec (key TEXT PRIMARY KEY, v BLOB)")

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha1(text.encode()).hexdigest()

    def missing(self, texts: list[str]) -> list[str]:
        have = {r[0] for r in self.con.execute("SELECT key FROM vec")}
        return list(dict.fromkeys(t for t in texts if self.key(t) not in have))

    def fill(self, texts: list[str], embedder, batch: int = 256) -> None:
        todo = self.missing(texts)
        t0 = time.perf_counter()
        for s in range(0, len(todo), batch):
            part = todo[s : s + batch]
            vecs = np.asarray(embedder.embed(part), dtype=np.float32)
            self.con.executemany("INSERT OR REPLACE INTO vec VALUES (?, ?)",
                                 [(self.key(t), v.tobytes()) for t, v in zip(part, vecs)])
            self.con.commit()
            done = s + len(part)
            rate = done / (time.perf_counter() - t0)
            print(f"  embedded {done}/{len(todo)} chunks ({rate:.0f}/s, {(len(todo) - done) / rate / 60:.0f} min left)",
                  end="\r", flush=True)
        if todo:
            print()

    def get(self, texts: list[str]) -> list[list[float]]:
        out = []
        for t in texts:
            row = self.con.execute("SELECT v FROM vec WHERE key = ?", (self.key(t),)).fetchone()
            out.append(np.frombuffer(row[0], dtype=np.float32).tolist())
        return out


def paper_chunks(p: SynthPaper, settings: ServerSettings) -> list[str]:
    return chunk_text(paper_text(p.title, p.abstract, p.body), settings.chunk_words, settings.chunk_overlap)


def embed_corpus(papers: list[SynthPaper], cache: EmbeddingCache, settings: ServerSettings) -> None:
    from preprint_server.search import default_embedder

    texts = [c for p in papers for c in paper_chunks(p, settings)]
    todo = cache.missing(texts)
    print(f"{len(papers)} papers, {len(texts)} chunks, {len(todo)} not embedded yet")
    if todo:
        cache.fill(todo, default_embedder())


BASELINE_BOOSTS = {"title": 10.0, "abstract": 4.0, "body": 1.0}


class BaselineKeywords:
    """The keyword index before this benchmark: one BM25 document per paper (title x10, abstract x4,
    body x1), kept here to measure the baseline in the same run."""

    def __init__(self, path: Path):
        import tantivy

        self.t = tantivy
        sb = tantivy.SchemaBuilder()
        sb.add_text_field("id", stored=True, tokenizer_name="raw")
        for name in BASELINE_BOOSTS:
            sb.add_text_field(name, tokenizer_name="en_stem", index_option="freq")
        path.mkdir(parents=True, exist_ok=True)
        self.index = tantivy.Index(sb.build(), path=str(path))

    def add(self, papers: list[SynthPaper]) -> None:
        w = self.index.writer(200_000_000, 1)
        for p in papers:
            w.add_document(self.t.Document(id=p.id, title=p.title, abstract=p.abstract, body=p.body))
        w.commit()
        w.wait_merging_threads()
        self.index.reload()

    def search(self, terms: list[str], limit: int) -> list[tuple[str, float]]:
        q = self.index.parse_query(" OR ".join(f'"{t}"' for t in terms), list(BASELINE_BOOSTS), field_boosts=BASELINE_BOOSTS)
        s = self.index.searcher()
        return [(s.doc(a)["id"][0], score) for score, a in s.search(q, limit, count=False).hits]


def build(papers: list[SynthPaper], cache: EmbeddingCache, settings: ServerSettings):
    """SQLite rows, Chroma vectors and both keyword indexes for `papers`, through the server's code."""
    from preprint_server.db import Database
    from preprint_server.models import Lab, Paper
    from preprint_server.search import default_embedder
    from preprint_server.search.index import Prepared
    from preprint_server.search.keyword import KeywordDoc

    db = Database(settings.db_path)
    index = SearchIndex(settings, embedder=default_embedder())
    baseline = BaselineKeywords(settings.data_dir / "baseline-keywords")
    with db.write() as s:
        lab = Lab(name="bench")
        s.add(lab)
        s.flush()
        lab_id = lab.id
    for start in range(0, len(papers), 500):
        part = papers[start : start + 500]
        with db.write() as s:
            s.add_all(Paper(id=p.id, title=p.title, abstract=p.abstract, body=p.body, lab_id=lab_id) for p in part)
        preps = []
        for p in part:
            chunks = paper_chunks(p, settings)
            preps.append(Prepared(p.id, "", chunks, cache.get(chunks), KeywordDoc(p.id, "", p.title, p.abstract, p.body)))
        index.add(preps)
        print(f"  indexed {start + len(part)}/{len(papers)}", end="\r", flush=True)
    print()
    baseline.add(papers)
    return db, index, baseline


def rrf(*ranked: list[str], k: int = 60) -> list[str]:
    scores: dict[str, float] = {}
    for ids in ranked:
        for rank, pid in enumerate(ids):
            scores[pid] = scores.get(pid, 0.0) + 1.0 / (k + rank + 1)
    return sorted(scores, key=lambda pid: (-scores[pid], pid))


def by_score(scores: dict[str, float]) -> list[str]:
    return sorted(scores, key=lambda pid: (-scores[pid], pid))


def rankings(index, baseline: BaselineKeywords, conn, q: str, explore: bool, fp32_queries=None) -> dict[str, list[str]]:
    """Paper ids, best first, for the baseline, the server's current search and (explore) variants;
    `fp32_queries` (an Embedder): also the current search with queries embedded in fp32."""
    from preprint_server.search.ranking import fuse
    from preprint_server.search.snippets import query_terms

    depth = 50
    sem = index.semantic(q, depth, None)
    old_kw = baseline.search(query_terms(q), depth)
    out = {"baseline": rrf([h.paper_id for h in sem], [pid for pid, _ in old_kw])[:depth],
           "current": [h.id for h in index.search(conn, q, depth, None)]}
    if explore or fp32_queries is not None:
        out["semantic only"] = [h.paper_id for h in sem]
    if fp32_queries is not None:
        int8_queries, index.embedder = index.embedder, fp32_queries
        try:
            out["current, fp32 queries"] = [h.id for h in index.search(conn, q, depth, None)]
            out["semantic only, fp32 queries"] = [h.paper_id for h in index.semantic(q, depth, None)]
        finally:
            index.embedder = int8_queries
    if explore:
        from preprint_server.search import keyword

        kw = {h.paper_id: h.score for h in index.keyword(conn, q, depth, None)}
        power, keyword.RARE_TERM_POWER = keyword.RARE_TERM_POWER, 0.0
        try:
            kw_plain = {h.paper_id: h.score for h in index.keyword(conn, q, depth, None)}
        finally:
            keyword.RARE_TERM_POWER = power
        sims = {h.paper_id: h.similarity for h in sem}
        out["whole-paper BM25 only"] = [pid for pid, _ in old_kw]
        out["passage BM25 only"] = list(kw)
        out["rrf, passage BM25"] = rrf([h.paper_id for h in sem], list(kw))
        out["fuse, whole-paper BM25"] = by_score(fuse(sims, dict(old_kw)))
        out["fuse, passage BM25 without term weights"] = by_score(fuse(sims, kw_plain))
        for w in (0.5, 0.6, 0.8):
            out[f"fuse keyword weight {w}"] = by_score(fuse(sims, kw, w))
    return out


def metrics(ranks: list[tuple[list[str], frozenset[str]]]) -> dict[str, float]:
    def recall(k):
        return statistics.mean(len(set(r[:k]) & rel) / len(rel) for r, rel in ranks)

    def first(r, rel):
        return next((i + 1 for i, pid in enumerate(r) if pid in rel), None)

    return {"recall@5": recall(5), "recall@10": recall(10),
            "hit@5": statistics.mean(bool(set(r[:5]) & rel) for r, rel in ranks),
            "MRR": statistics.mean(1 / f if (f := first(r, rel)) else 0.0 for r, rel in ranks)}


def evaluate(n: int, cache: EmbeddingCache, explore: bool, fp32_queries=None) -> dict[str, dict[str, float]]:
    papers, queries = corpus(n)
    print(f"corpus of {n} papers: {check(papers)}")
    settings = ServerSettings(data_dir=Path(tempfile.mkdtemp(prefix=f"bench-sq-{n}-")))
    embed_corpus(papers, cache, settings)
    t = time.perf_counter()
    db, index, baseline = build(papers, cache, settings)
    print(f"  built the index in {time.perf_counter() - t:.0f}s ({settings.data_dir})")
    per: dict[str, list] = {}
    with db.read_sql() as conn:
        for q in queries:
            for name, ranked in rankings(index, baseline, conn, q.text, explore, fp32_queries).items():
                per.setdefault(name, []).append((ranked, q.relevant))
    db.close()
    shutil.rmtree(settings.data_dir, ignore_errors=True)
    results = {name: metrics(r) for name, r in per.items()}
    misses = [(q.topic, min((i + 1 for i, pid in enumerate(r) if pid in q.relevant), default=None))
              for q, (r, _) in zip(queries, per["current"]) if not set(r[:5]) & q.relevant]
    print(f"  current: queries with no right paper in the top 5 (topic, first right rank): {misses}")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--papers", type=int, nargs="+", default=[1000, 10_000])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--embed-only", action="store_true", help="fill the embedding cache and stop")
    ap.add_argument("--explore", action="store_true", help="also rank by each lever alone and other weights")
    ap.add_argument("--fp32-queries", action="store_true",
                    help="also rank with queries embedded in fp32 (the server embeds them with its int8 graph)")
    ap.add_argument("--passage-words", type=int, metavar="WORDS",
                    help="keyword passages of at most this many words instead of keyword.PASSAGE_WORDS")
    args = ap.parse_args()
    if args.passage_words:
        from preprint_server.search import keyword

        keyword.PASSAGE_WORDS = args.passage_words
    cache = EmbeddingCache(args.cache / "embeddings.sqlite")
    if args.embed_only:
        for n in args.papers:
            embed_corpus(corpus(n)[0], cache, ServerSettings(data_dir=Path(tempfile.gettempdir())))
        return
    fp32_queries = None
    if args.fp32_queries:
        from preprint_server.search import Embedder

        fp32_queries = Embedder(query_precision="fp32")
    table = {n: evaluate(n, cache, args.explore, fp32_queries) for n in args.papers}
    names = list(next(iter(table.values())))
    cols = ["recall@5", "recall@10", "hit@5", "MRR"]
    print(f"\nSUMMARY ({len(corpus(1)[1])} queries, 3 right papers each; target recall@5 >= 0.95 at 1,000 papers, "
          ">= 0.9 at 10,000)")
    w = max(len(x) for x in names)
    print(f"{'papers':>7}  {'ranking':<{w}}  " + "  ".join(f"{c:>9}" for c in cols))
    for n, res in table.items():
        for name in names:
            print(f"{n:>7}  {name:<{w}}  " + "  ".join(f"{res[name][c]:>9.3f}" for c in cols))


if __name__ == "__main__":
    main()
