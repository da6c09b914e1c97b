"""Preprint server at scale: ingestion, search latency under 8 concurrent HTTP clients, peak RSS,
and the naive "re-embed every paper on each query" baseline (the original AgentRxiv server).

    .venv/bin/python benchmarks/bench_server.py [--papers 10000] [--http-papers 30] [--naive-papers 1000]

How the corpus is built (all-MiniLM-L6-v2 runs at roughly 15-40 chunks/s on 2 busy cores, so
embedding 10,000 papers x ~22 chunks for real would take hours):
  * ingestion throughput is measured for real: `--http-papers` papers POSTed to a uvicorn server,
    each embedded whole (every chunk) before its 201;
  * the rest of the corpus is bulk-loaded through the same index code with *precomputed*
    vectors: real model embeddings of per-topic seed passages plus per-chunk noise, so Chroma's
    HNSW and the keyword index hold the full 10,000 papers (~22 chunks and ~3,000 words each) when searched;
  * queries are real text, embedded by the server per request (distinct queries: no cache hits).

The machine is shared: the load average (`os.getloadavg()`) is printed next to each figure, and
the server's CPU time per query (load-independent) next to the latencies.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import numpy as np

from preprint_server import crud
from preprint_server.core.config import ServerSettings
from preprint_server.db import Database
from preprint_server.models import Lab, Paper
from preprint_server.search import SearchIndex, default_embedder
from preprint_server.search.index import Prepared
from preprint_server.search.keyword import KeywordDoc
from preprint_server.serve import free_port

TOPICS = {
    "voting": "majority vote self consistency sampled chains answers aggregation ballots",
    "verifier": "verifier reward model scoring candidate solutions reranking best of n",
    "retrieval": "retrieval augmented generation passages index nearest neighbours documents",
    "curriculum": "curriculum ordering difficulty easy hard staged training schedule",
    "distill": "distillation teacher student logits soft targets compression",
    "critique": "critique refine feedback revision rounds self correction errors",
    "tools": "calculator python tool use program execution arithmetic code interpreter",
    "decoding": "constrained decoding grammar tokens beam search temperature sampling",
    "planning": "plan decompose subgoals tree search lookahead backtracking",
    "prompting": "few shot exemplars prompt template instructions demonstrations",
    "geometry": "triangle circle angle polygon area coordinates geometry proofs",
    "algebra": "polynomial equation roots factorization quadratic inequality algebra",
    "probability": "probability expectation random variable combinatorics counting dice",
    "number": "prime divisors modular arithmetic integers remainders number theory",
    "finetune": "fine tuning lora adapters learning rate epochs supervised data",
    "rl": "reinforcement learning policy gradient reward rollouts ppo grpo",
    "eval": "benchmark evaluation accuracy confidence interval significance test",
    "memory": "memory scratchpad notes context window long documents summaries",
    "ensembles": "ensemble mixture of models routing experts combination",
    "data": "synthetic data generation augmentation filtering deduplication quality",
}
COMMON = ["the", "we", "a", "of", "and", "to", "in", "that", "model", "results", "show", "our", "method", "on", "with", "for", "is", "this", "by", "as", "are", "experiments", "table", "figure", "baseline", "improves", "approach", "problem", "when", "than", "each"]


def make_paper(i: int, rng: random.Random, words: int = 3000) -> tuple[str, str, str, str]:
    topic = list(TOPICS)[i % len(TOPICS)]
    vocab = TOPICS[topic].split()
    other = TOPICS[list(TOPICS)[(i * 7 + 3) % len(TOPICS)]].split()
    def sentence():
        n = rng.randint(10, 22)
        return " ".join(rng.choice(vocab) if rng.random() < 0.25 else rng.choice(other) if rng.random() < 0.1
                        else rng.choice(COMMON) for _ in range(n)).capitalize() + "."
    paras, count = [], 0
    while count < words:
        p = " ".join(sentence() for _ in range(rng.randint(4, 8)))
        paras.append(p)
        count += len(p.split())
    title = f"{topic.title()} study {i}: " + " ".join(rng.sample(vocab, 3))
    return topic, title, sentence() + " " + sentence(), "\n\n".join(paras)


def rss_mb(pid: int | None = None) -> float:
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bulk_load(settings, n_from: int, n_to: int, bank: dict[str, np.ndarray], rng: random.Random) -> None:
    """Papers n_from..n_to-1 with precomputed (seed + noise) chunk vectors, through the index code."""
    db = Database(settings.db_path)
    index = SearchIndex(settings, embedder=_NoEmbedder())
    nprng = np.random.default_rng(n_from)
    with db.write() as s:
        lab = s.query(Lab).filter_by(name="bench").one_or_none() or Lab(name="bench")
        s.add(lab)
    for start in range(n_from, n_to, 250):
        preps = []
        with db.write() as s:
            for i in range(start, min(start + 250, n_to)):
                topic, title, abstract, body = make_paper(i, rng)
                p = Paper(id=f"b{i:06d}", title=title, abstract=abstract, body=body, lab_id=lab.id, tags=[topic])
                s.add(p)
                s.flush()
                chunks = index.chunks_for(title, abstract, body)
                seeds = bank[topic][nprng.integers(0, len(bank[topic]), len(chunks))]
                vecs = seeds + nprng.normal(0, 0.35 / np.sqrt(seeds.shape[1]), seeds.shape)
                vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
                preps.append(Prepared(p.id, "", chunks, vecs.tolist(), KeywordDoc(p.id, "", title, abstract, body)))
        index.add(preps)
        print(f"  bulk-loaded {min(start + 250, n_to)}/{n_to}", end="\r", flush=True)
    print()
    db.close()


class _NoEmbedder:
    def embed(self, texts, batch_size=32):  # pragma: no cover - bulk load passes vectors in
        raise AssertionError("bulk load must not embed")


def start_server(data_dir: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    code = ("import uvicorn; from preprint_server.app import create_app; from preprint_server.core.config import "
            f"ServerSettings; uvicorn.run(create_app(ServerSettings(data_dir={str(data_dir)!r})), host='127.0.0.1', "
            f"port={port}, log_level='warning', access_log=False)")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            if httpx.get(url + "/health", timeout=60).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            time.sleep(0.25)
    raise RuntimeError("server did not start")


def queries(n: int, rng: random.Random, tag: str = "") -> list[str]:
    out = []
    for i in range(n):
        topic = TOPICS[list(TOPICS)[i % len(TOPICS)]].split()
        out.append(f"{tag}how does {' '.join(rng.sample(topic, 3))} help on math benchmarks ({i})")
    assert len(set(out)) == n
    return out


def load() -> str:
    return "load avg " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process (all its threads)."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def search_latency(url: str, qs: list[str], clients: int) -> list[float]:
    lat: list[float] = []
    lock = threading.Lock()
    per = [qs[i::clients] for i in range(clients)]

    host, port = url.removeprefix("http://").split(":")

    def worker(mine):
        # http.client with keep-alive: a load generator light enough (~1 ms CPU per request;
        # httpx costs ~10) not to take the 2 cores away from the server it measures
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            for q in mine:
                path = "/api/search?" + urlencode({"q": q, "k": 5})
                t = time.perf_counter()
                conn.request("GET", path)
                r = conn.getresponse()
                body = r.read()
                dt = time.perf_counter() - t
                if r.status != 200 or not json.loads(body):
                    raise RuntimeError(f"search {q!r}: {r.status} {body[:200]!r}")
                with lock:
                    lat.append(dt)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(m,)) for m in per]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--papers", type=int, default=10_000)
    ap.add_argument("--http-papers", type=int, default=30, help="papers ingested over HTTP with real embeddings")
    ap.add_argument("--naive-papers", type=int, default=1_000)
    ap.add_argument("--naive-queries", type=int, default=2, help="0 skips the naive baseline (minutes on a busy machine)")
    ap.add_argument("--queries", type=int, default=320)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--reuse", action="store_true",
                    help="--dir already holds a bulk-loaded corpus (a copy of an earlier run's dir): skip the bulk "
                         "loads it covers; our search at --naive-papers is then timed on the larger corpus "
                         "(slower, so the speed-up printed is a lower bound)")
    args = ap.parse_args()
    rng = random.Random(0)
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-server-"))
    settings = ServerSettings(data_dir=work)
    print(f"data dir {work}; {os.cpu_count()} CPUs")

    emb = default_embedder()
    t = time.perf_counter()
    have = crud.count_papers(Database(settings.db_path)) if args.reuse else 0
    bank = {} if have >= args.papers else {tp: np.array(emb.embed([f"{make_paper(k * len(TOPICS) + j, rng)[3][:900]}"
                                    for k in range(6)])) for j, tp in enumerate(TOPICS)}
    print(f"seed vectors: {sum(len(v) for v in bank.values())} passages embedded in {time.perf_counter() - t:.1f}s"
          + (f"; reusing {have} bulk-loaded papers in {work}" if have else ""))

    # 1. real ingestion over HTTP
    key = crud.create_key(Database(settings.db_path), "http-lab")
    url, proc = start_server(work)
    texts = [make_paper(10_000_000 + i, rng) for i in range(args.http_papers)]
    words = sum(len(b.split()) for *_, b in texts) / max(1, len(texts))
    with httpx.Client(base_url=url, timeout=300, headers={"Authorization": f"Bearer {key}"}) as c:
        t = time.perf_counter()
        for topic, title, abstract, body in texts:
            c.post("/api/papers", json={"title": title, "abstract": abstract, "body": body, "tags": [topic]}).raise_for_status()
        dt = time.perf_counter() - t
    ingest_rate = args.http_papers / dt
    ingest_load = load()
    print(f"[{ingest_load}] ingestion over HTTP: {args.http_papers} papers (~{words:.0f} words, "
          f"~{len(SearchIndex.chunks_for(_Chunker, '', '', texts[0][3]))} chunks each) in {dt:.1f}s "
          f"= {ingest_rate:.2f} papers/s (whole-paper embedding on this machine)")
    proc.terminate(); proc.wait()

    # 2. our search vs the naive baseline at --naive-papers
    t = time.perf_counter()
    if have < args.naive_papers:
        bulk_load(settings, 0, args.naive_papers - args.http_papers, bank, rng)
    print(f"bulk load to {args.naive_papers} papers: {time.perf_counter() - t:.1f}s")
    url, proc = start_server(work)
    n_small = httpx.get(url + "/health", timeout=60).json()["papers"]
    qs = queries(40, rng)
    search_latency(url, queries(5, rng, "warm-up: "), 1)
    small_load = load()
    lat_small = search_latency(url, qs, 1)
    proc.terminate(); proc.wait()
    db = Database(settings.db_path)
    docs = [p.body for p in crud.all_papers(db)][: args.naive_papers]
    naive = [float("nan")] if not args.naive_queries else []  # nan: not measured
    for q in qs[: args.naive_queries]:
        t = time.perf_counter()
        qv = np.array(emb.embed([q])[0])
        dv = np.array(emb.embed(docs))  # what AgentRxiv does per query (the model truncates to 256 tokens)
        top = np.argsort(-(dv @ qv))[:5]
        naive.append(time.perf_counter() - t)
        assert len(top) == 5
    ours = statistics.median(lat_small)
    naive_load = load()
    print(f"[{small_load} / naive: {naive_load}] our search p50 {ours * 1000:.1f} ms at {n_small} papers (1 client, HTTP); naive re-embed "
          f"baseline at {len(docs)} papers {statistics.median(naive):.1f} s/query -> {statistics.median(naive) / ours:,.0f}x faster")

    # 3. the full corpus, 8 concurrent clients
    t = time.perf_counter()
    if have < args.papers:
        bulk_load(settings, args.naive_papers - args.http_papers, args.papers - args.http_papers, bank, rng)
    print(f"bulk load to {args.papers} papers: {time.perf_counter() - t:.1f}s")
    url, proc = start_server(work)
    health = httpx.get(url + "/health").json()
    search_latency(url, queries(16, random.Random(1), "warm-up: "), args.clients)
    full_load_before = load()
    c0, cb0 = cpu_s(proc.pid), time.process_time()
    t = time.perf_counter()
    lat = search_latency(url, queries(args.queries, random.Random(2)), args.clients)
    wall = time.perf_counter() - t
    server_cpu = (cpu_s(proc.pid) - c0) / len(lat)
    client_cpu = (time.process_time() - cb0) / len(lat)
    full_load = load()
    server_rss = rss_mb(proc.pid)
    proc.terminate(); proc.wait()
    p50, p99 = pct(lat, 50), pct(lat, 99)
    print(f"[{full_load_before} -> {full_load}] at {health['papers']} papers ({health['indexed_papers']} indexed), "
          f"{args.clients} concurrent clients, {len(lat)} distinct queries: p50 {p50 * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, {len(lat) / wall:.1f} queries/s; CPU per query: server "
          f"{server_cpu * 1000:.1f} ms, benchmark clients {client_cpu * 1000:.1f} ms")
    bench_rss = rss_mb()
    print(f"peak RSS: server {server_rss:.0f} MB, benchmark process {bench_rss:.0f} MB")
    print(f"data dir size: {sum(f.stat().st_size for f in work.rglob('*') if f.is_file()) / 2**20:.0f} MB")

    ratio = statistics.median(naive) / ours
    rows = [
        (f"search p99, {health['papers']} papers, {args.clients} clients (HTTP)", f"{p99 * 1000:.1f} ms",
         "<= 100 ms", "yes" if p99 <= 0.1 else "NO", full_load),
        ("search p50, same run", f"{p50 * 1000:.1f} ms", "", "", ""),
        ("server CPU per search (load-independent)", f"{server_cpu * 1000:.1f} ms", "", "", ""),
        (f"speed-up vs naive re-embed, {len(docs)} papers", f"{ratio:,.0f}x", ">= 100x",
         "yes" if ratio >= 100 else "NO", naive_load),
        (f"  our search p50 at {n_small} papers (1 client) / naive per query",
         f"{ours * 1000:.1f} ms / {statistics.median(naive):.1f} s", "", "", small_load),
        ("ingestion over HTTP (whole paper embedded before 201)", f"{ingest_rate:.2f} papers/s", "", "", ingest_load),
        ("peak RSS server / benchmark process", f"{server_rss:.0f} / {bench_rss:.0f} MB", "", "", ""),
    ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"\nSUMMARY ({os.cpu_count()} CPUs; load average = 1, 5, 15 min at the end of each measurement)")
    print(f"{'figure':<{w0}}  {'measured':>{w1}}  {'target':<9}  {'met':<3}  load")
    for name, val, target, met, ld in rows:
        print(f"{name:<{w0}}  {val:>{w1}}  {target:<9}  {met:<3}  {ld.removeprefix('load avg ')}")


class _Chunker:
    settings = ServerSettings()


if __name__ == "__main__":
    main()
