"""Preprint server at scale: ingestion, search latency under concurrent HTTP clients, peak RSS,
the naive "re-embed every paper on each query" baseline (the original AgentRxiv server), and the
capacity table of docs/scaling.md ("What one preprint server carries").

    .venv/bin/python benchmarks/bench_server.py [--papers 10000] [--http-papers 30] [--naive-papers 1000]
    # the capacity table, without the ingestion and naive sections:
    .venv/bin/python benchmarks/bench_server.py --sizes 1000,10000,100000 --http-papers 0 --naive-papers 0

How the corpus is built (all-MiniLM-L6-v2 runs at roughly 15-40 chunks/s on 2 busy cores, so
embedding 10,000 papers x ~22 chunks for real would take hours):
  * ingestion throughput is measured for real: `--http-papers` papers POSTed to a uvicorn server,
    each embedded whole (every chunk) before its 201; so is the publish latency at each size;
  * the rest of the corpus is bulk-loaded through the same index code with *precomputed*
    vectors: real model embeddings of per-topic seed passages plus per-chunk noise, so Chroma's
    HNSW and the keyword index hold the full corpus (~22 chunks and ~3,000 words a paper) when searched;
  * queries are real text, embedded by the server per request (distinct queries: no cache hits).

At each of `--sizes` the corpus grows (bulk load), the server starts, and a sweep of closed-loop
clients (`--client-sweep`) measures p50, p99 and searches/s; the capacity is the highest searches/s
whose p99 is within `--p99-target-ms`, and the client count that gave it ("labs searching at once").

The machine is shared: the load average (`os.getloadavg()`) is printed next to each figure, and
the server's CPU time per query (load-independent) next to the latencies.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx
import numpy as np
from sqlalchemy import func, select

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


def bulk_load(settings, n_from: int, n_to: int, bank: dict[str, np.ndarray], rng: random.Random,
              words: int = 3000) -> None:
    """Papers n_from..n_to-1 with precomputed (seed + noise) chunk vectors, through the index code."""
    db = Database(settings.db_path)
    index = SearchIndex(settings, embedder=_NoEmbedder())
    nprng = np.random.default_rng(n_from)
    with db.write() as s:
        lab = s.query(Lab).filter_by(name="bench").one_or_none() or Lab(name="bench")
        s.add(lab)
    progress = _Progress(n_from, n_to)
    for start in range(n_from, n_to, 250):
        preps = []
        with db.write() as s:
            for i in range(start, min(start + 250, n_to)):
                topic, title, abstract, body = make_paper(i, rng, words)
                p = Paper(id=f"b{i:06d}", title=title, abstract=abstract, body=body, lab_id=lab.id, tags=[topic])
                s.add(p)
                s.flush()
                chunks = index.chunks_for(title, abstract, body)
                seeds = bank[topic][nprng.integers(0, len(bank[topic]), len(chunks))]
                vecs = seeds + nprng.normal(0, 0.35 / np.sqrt(seeds.shape[1]), seeds.shape)
                vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
                preps.append(Prepared(p.id, "", chunks, vecs.tolist(), KeywordDoc(p.id, "", title, abstract, body)))
        index.add(preps)
        progress.update(min(start + 250, n_to))
    progress.done()
    db.close()


class _Progress:
    """The bulk-load progress line with rate and time left: rewritten in place on a terminal, a new
    line every 30 s otherwise (a long run logged to a file)."""

    def __init__(self, n_from: int, n_to: int):
        self.n_from, self.n_to, self.t0, self.last = n_from, n_to, time.perf_counter(), 0.0
        self.tty = sys.stdout.isatty()

    def update(self, done: int) -> None:
        now = time.perf_counter()
        rate = (done - self.n_from) / max(now - self.t0, 1e-9)
        line = (f"  bulk-loaded {done - self.n_from}/{self.n_to - self.n_from} ({rate:.1f} papers/s, {now - self.t0:.0f}s so far, "
                f"~{(self.n_to - done) / max(rate, 1e-9):.0f}s left) [{load()}]")
        if self.tty:
            print(line, end="\r", flush=True)
        elif now - self.last >= 30 or done == self.n_to:
            print(line, flush=True)
            self.last = now

    def done(self) -> None:
        if self.tty:
            print()


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


def search_latency(url: str, qs: list[str], clients: int, seconds: float | None = None) -> list[float]:
    """Closed-loop clients, each sending its share of `qs` one after another; with `seconds`, a client
    sends no new query after that long (the latencies of the queries sent are returned)."""
    lat: list[float] = []
    lock = threading.Lock()
    per = [qs[i::clients] for i in range(clients)]
    deadline = time.perf_counter() + seconds if seconds else float("inf")

    host, port = url.removeprefix("http://").split(":")

    def worker(mine):
        # http.client with keep-alive: a load generator light enough (~1 ms CPU per request;
        # httpx costs ~10) not to take the 2 cores away from the server it measures
        conn = http.client.HTTPConnection(host, int(port), timeout=300)
        try:
            for q in mine:
                if time.perf_counter() > deadline:
                    break
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


# -- results -------------------------------------------------------------------------------------
@dataclass
class Point:
    """One point of the client sweep."""
    clients: int
    lat: list[float]
    wall: float
    server_cpu: float  # server CPU seconds per search
    client_cpu: float  # benchmark-process CPU seconds per search
    load: str

    @property
    def p50(self) -> float:
        return pct(self.lat, 50)

    @property
    def p99(self) -> float:
        return pct(self.lat, 99)

    @property
    def qps(self) -> float:
        return len(self.lat) / self.wall


@dataclass
class SizeResult:
    papers: int
    indexed: int
    bulk_s: float
    points: list[Point]
    publish: list[float]  # seconds per POST
    publish_load: str
    rss: float  # server peak RSS, MB
    rss_load: str

    def best(self, target_s: float) -> Point | None:
        """The point with the most searches/s among those whose p99 is within the target."""
        return max((p for p in self.points if p.p99 <= target_s), key=lambda p: p.qps, default=None)


@dataclass
class Naive:
    ours: float  # our search p50, seconds, 1 client
    naive: float  # naive re-embed, seconds per query (nan: not measured)
    n_small: int
    n_docs: int
    small_load: str
    naive_load: str


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    settings: ServerSettings
    rng: random.Random
    emb: object = None
    bank: dict[str, np.ndarray] = field(default_factory=dict)
    key: str = ""
    published: int = 0  # papers POSTed by the publish measurements so far (their make_paper indices)


# -- setup ---------------------------------------------------------------------------------------
def int_list(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--papers", type=int, default=10_000, help="the corpus size when --sizes is not given")
    ap.add_argument("--sizes", type=int_list, default=None,
                    help="comma list of corpus sizes, e.g. 1000,10000,100000: the corpus grows through them in "
                         "one run, the capacity is measured at each (default: --papers)")
    ap.add_argument("--words", type=int, default=3000, help="words per synthetic paper")
    ap.add_argument("--http-papers", type=int, default=30,
                    help="papers ingested over HTTP with real embeddings; 0 skips the ingestion section")
    ap.add_argument("--naive-papers", type=int, default=1_000,
                    help="corpus size of the naive-baseline section; 0 skips the whole section")
    ap.add_argument("--naive-queries", type=int, default=2, help="0 skips the naive baseline (minutes on a busy machine)")
    ap.add_argument("--queries", type=int, default=320, help="distinct queries per point of the client sweep")
    ap.add_argument("--point-seconds", type=float, default=30,
                    help="a sweep point sends no new query after this long (0: no limit)")
    ap.add_argument("--client-sweep", type=int_list, default=[1, 2, 4, 8],
                    help="concurrent closed-loop clients, comma list")
    ap.add_argument("--p99-target-ms", type=float, default=200)
    ap.add_argument("--publish-n", type=int, default=5, help="papers POSTed (real embedding) at each size; 0 skips")
    ap.add_argument("--clients", type=int, default=8,
                    help="the sweep point reported in the SUMMARY (the largest in the sweep if it has no such point)")
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--reuse", action="store_true",
                    help="--dir already holds a bulk-loaded corpus (a copy of an earlier run's dir): skip the bulk "
                         "loads it covers; our search at --naive-papers is then timed on the larger corpus "
                         "(slower, so the speed-up printed is a lower bound)")
    args = ap.parse_args()
    args.sizes = sorted(args.sizes or [args.papers])
    return args


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def git_commit() -> str:
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                           timeout=30, check=False)
        return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def setup(args: argparse.Namespace) -> Bench:
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-server-"))
    b = Bench(args, work, ServerSettings(data_dir=work), random.Random(0))
    print(f"data dir {work}; {os.cpu_count()} CPUs ({cpu_model()}); commit {git_commit()}; {args.words} words a paper; "
          f"sizes {','.join(map(str, args.sizes))}; clients {','.join(map(str, args.client_sweep))}; "
          f"p99 target {args.p99_target_ms:g} ms")
    b.emb = default_embedder()
    t = time.perf_counter()
    have = crud.count_papers(Database(b.settings.db_path)) if args.reuse else 0
    if have < max(args.sizes + [args.naive_papers]):
        b.bank = {tp: np.array(b.emb.embed([f"{make_paper(k * len(TOPICS) + j, b.rng)[3][:900]}" for k in range(6)]))
                  for j, tp in enumerate(TOPICS)}
    print(f"seed vectors: {sum(len(v) for v in b.bank.values())} passages embedded in {time.perf_counter() - t:.1f}s"
          + (f"; reusing {have} bulk-loaded papers in {work}" if have else ""))
    b.key = crud.create_key(Database(b.settings.db_path), "http-lab")
    return b


def next_bulk_index(settings: ServerSettings) -> int:
    """One past the highest bulk-loaded paper (ids b000000..., 7 characters; POSTed papers get 12 hex)."""
    db = Database(settings.db_path)
    with db.read() as s:
        top = s.scalar(select(func.max(Paper.id)).where(Paper.id.like("b%"), func.length(Paper.id) == 7))
    db.close()
    return int(top[1:]) + 1 if top else 0


def grow_to(b: Bench, n: int) -> float:
    """Bulk-load papers until the index holds `n` (nothing if it holds as many already); seconds taken."""
    have = crud.count_papers(Database(b.settings.db_path))
    t = time.perf_counter()
    if have < n:
        start = next_bulk_index(b.settings)
        bulk_load(b.settings, start, start + n - have, b.bank, b.rng, b.args.words)
    dt = time.perf_counter() - t
    print(f"[{load()}] bulk load to {n} papers ({max(0, n - have)} added): {dt:.1f}s"
          + (f" = {(n - have) / dt:.1f} papers/s" if have < n and dt > 0 else ""))
    return dt


# -- 1. ingestion, 2. naive baseline -------------------------------------------------------------
def post_papers(url: str, key: str, texts: list[tuple[str, str, str, str]]) -> list[float]:
    """POST papers one at a time (each embedded whole before its 201); seconds per paper."""
    out = []
    with httpx.Client(base_url=url, timeout=600, headers={"Authorization": f"Bearer {key}"}) as c:
        for topic, title, abstract, body in texts:
            t = time.perf_counter()
            c.post("/api/papers", json={"title": title, "abstract": abstract, "body": body, "tags": [topic]}).raise_for_status()
            out.append(time.perf_counter() - t)
    return out


def step_ingest(b: Bench) -> tuple[float, str] | None:
    n = b.args.http_papers
    if n <= 0:
        print("ingestion over HTTP: skipped (--http-papers 0)")
        return None
    url, proc = start_server(b.work)
    texts = [make_paper(10_000_000 + i, b.rng, b.args.words) for i in range(n)]
    words = sum(len(body.split()) for *_, body in texts) / len(texts)
    try:
        dt = sum(post_papers(url, b.key, texts))
    finally:
        proc.terminate(); proc.wait()
    rate, ld = n / dt, load()
    print(f"[{ld}] ingestion over HTTP: {n} papers (~{words:.0f} words, "
          f"~{len(SearchIndex.chunks_for(_Chunker, '', '', texts[0][3]))} chunks each) in {dt:.1f}s "
          f"= {rate:.2f} papers/s (whole-paper embedding on this machine)")
    return rate, ld


def step_naive(b: Bench) -> Naive | None:
    """Our search vs the naive re-embed baseline at --naive-papers."""
    if b.args.naive_papers <= 0:
        print("naive baseline section: skipped (--naive-papers 0)")
        return None
    grow_to(b, b.args.naive_papers)
    url, proc = start_server(b.work)
    try:
        n_small = httpx.get(url + "/health", timeout=60).json()["papers"]
        qs = queries(40, b.rng)
        search_latency(url, queries(5, b.rng, "warm-up: "), 1)
        small_load = load()
        ours = statistics.median(search_latency(url, qs, 1))
    finally:
        proc.terminate(); proc.wait()
    docs = [p.body for p in crud.all_papers(Database(b.settings.db_path))][: b.args.naive_papers]
    naive = [float("nan")] if not b.args.naive_queries else []  # nan: not measured
    for q in qs[: b.args.naive_queries]:
        t = time.perf_counter()
        qv = np.array(b.emb.embed([q])[0])
        dv = np.array(b.emb.embed(docs))  # what AgentRxiv does per query (the model truncates to 256 tokens)
        top = np.argsort(-(dv @ qv))[:5]
        naive.append(time.perf_counter() - t)
        assert len(top) == 5
    r = Naive(ours, statistics.median(naive), n_small, len(docs), small_load, load())
    print(f"[{r.small_load} / naive: {r.naive_load}] our search p50 {ours * 1000:.1f} ms at {n_small} papers (1 client, "
          f"HTTP); naive re-embed baseline at {len(docs)} papers {r.naive:.1f} s/query -> {r.naive / ours:,.0f}x faster")
    return r


# -- 3. capacity at each size ----------------------------------------------------------------------
def measure_point(b: Bench, url: str, pid: int, clients: int, tag: str) -> Point:
    qs = queries(b.args.queries, random.Random(f"{tag}/{clients}"), f"{tag} c{clients}: ")
    c0, cb0 = cpu_s(pid), time.process_time()
    t = time.perf_counter()
    lat = search_latency(url, qs, clients, b.args.point_seconds or None)
    wall = time.perf_counter() - t
    p = Point(clients, lat, wall, (cpu_s(pid) - c0) / len(lat), (time.process_time() - cb0) / len(lat), load())
    ok = "ok" if p.p99 * 1000 <= b.args.p99_target_ms else "over target"
    print(f"[{p.load}]   {clients:>3} client{'s' if clients > 1 else ''}: {len(lat)} distinct queries in {wall:.1f}s, p50 {p.p50 * 1000:.1f} ms, "
          f"p99 {p.p99 * 1000:.1f} ms ({ok}), {p.qps:.1f} searches/s; CPU per search: server "
          f"{p.server_cpu * 1000:.1f} ms, benchmark clients {p.client_cpu * 1000:.1f} ms")
    return p


def measure_size(b: Bench, size: int) -> SizeResult:
    bulk_s = grow_to(b, size)
    url, proc = start_server(b.work)
    try:
        health = httpx.get(url + "/health", timeout=300).json()
        print(f"at {health['papers']} papers ({health['indexed_papers']} indexed): client sweep")
        search_latency(url, queries(16, random.Random(1), f"warm-up {size}: "), 2)
        points = [measure_point(b, url, proc.pid, c, f"size {size}") for c in b.args.client_sweep]
        texts = [make_paper(20_000_000 + b.published + j, b.rng, b.args.words) for j in range(b.args.publish_n)]
        b.published += len(texts)
        publish = post_papers(url, b.key, texts)
        publish_load = load()
        if publish:
            print(f"[{publish_load}] publish at {health['papers']} papers: {len(publish)} papers one at a time, p50 "
                  f"{statistics.median(publish):.2f} s, {len(publish) / sum(publish):.2f} publishes/s")
        rss, rss_load = rss_mb(proc.pid), load()
        print(f"[{rss_load}] server peak RSS (VmHWM) at {health['papers']} papers: {rss:.0f} MB")
    finally:
        proc.terminate(); proc.wait()
    r = SizeResult(health["papers"], health["indexed_papers"], bulk_s, points, publish, publish_load, rss, rss_load)
    best, target = r.best(b.args.p99_target_ms / 1000), b.args.p99_target_ms
    print(f"capacity at {r.papers} papers: " + (f"{best.qps:.1f} searches/s with {best.clients} clients at p99 "
          f"{best.p99 * 1000:.1f} ms" if best else f"none (p99 > {target:g} ms at every point)"))
    return r


# -- summary ---------------------------------------------------------------------------------------
def summary_point(b: Bench, r: SizeResult) -> Point:
    return next((p for p in r.points if p.clients == b.args.clients), max(r.points, key=lambda p: p.clients))


def print_summary(b: Bench, ingest: tuple[float, str] | None, naive: Naive | None, r: SizeResult) -> None:
    p = summary_point(b, r)
    bench_rss = rss_mb()
    rows = [
        (f"search p99, {r.papers} papers, {p.clients} clients (HTTP)", f"{p.p99 * 1000:.1f} ms",
         "<= 100 ms", "yes" if p.p99 <= 0.1 else "NO", p.load),
        ("search p50, same run", f"{p.p50 * 1000:.1f} ms", "", "", ""),
        ("server CPU per search (load-independent)", f"{p.server_cpu * 1000:.1f} ms", "", "", ""),
    ]
    if naive:
        ratio = naive.naive / naive.ours
        rows += [(f"speed-up vs naive re-embed, {naive.n_docs} papers", f"{ratio:,.0f}x", ">= 100x",
                  "yes" if ratio >= 100 else "NO", naive.naive_load),
                 (f"  our search p50 at {naive.n_small} papers (1 client) / naive per query",
                  f"{naive.ours * 1000:.1f} ms / {naive.naive:.1f} s", "", "", naive.small_load)]
    if ingest:
        rows.append(("ingestion over HTTP (whole paper embedded before 201)", f"{ingest[0]:.2f} papers/s", "", "", ingest[1]))
    rows.append(("peak RSS server / benchmark process", f"{r.rss:.0f} / {bench_rss:.0f} MB", "", "", ""))
    w0 = max(len(row[0]) for row in rows)
    w1 = max(len(row[1]) for row in rows)
    print(f"\nSUMMARY ({os.cpu_count()} CPUs; load average = 1, 5, 15 min at the end of each measurement)")
    print(f"{'figure':<{w0}}  {'measured':>{w1}}  {'target':<9}  {'met':<3}  load")
    for name, val, target, met, ld in rows:
        print(f"{name:<{w0}}  {val:>{w1}}  {target:<9}  {met:<3}  {ld.removeprefix('load avg ')}")


def capacity_row(b: Bench, r: SizeResult, machine: str) -> str:
    target = b.args.p99_target_ms
    best = r.best(target / 1000)
    if best:
        labs, qps, lat = str(best.clients), f"{best.qps:.1f}", f"{best.p50 * 1000:.0f} / {best.p99 * 1000:.0f} ms"
    else:
        low = min(r.points, key=lambda p: p.p99)
        labs, qps = f"none (p99 > {target:g} ms)", "—"
        lat = f"{low.p50 * 1000:.0f} / {low.p99 * 1000:.0f} ms ({low.clients} clients)"
    pub = (f"{statistics.median(r.publish):.2f} s ({len(r.publish) / sum(r.publish):.2f}/s)" if r.publish else "—")
    ld = (best or r.points[-1]).load.split()[2]
    cells = [f"{r.papers:,}", labs, qps, lat, pub, f"{r.rss:,.0f} MB", f"{machine}, load {ld}"]
    return "| " + " | ".join(cells) + " |"


def print_capacity(b: Bench, results: list[SizeResult]) -> None:
    machine = f"{os.cpu_count()} CPUs ({cpu_model()}), commit {git_commit()}"
    print(f"\nCAPACITY (docs/scaling.md; searches/s at p99 <= {b.args.p99_target_ms:g} ms over "
          f"{','.join(map(str, b.args.client_sweep))} closed-loop clients; {b.args.words} words a paper; "
          f"publish = {b.args.publish_n} papers POSTed one at a time; RSS = server VmHWM; load = 1-min load average)")
    print("| papers in the index | labs searching at once | searches/s | search p50 / p99 | publish p50 | server RSS | machine |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(capacity_row(b, r, machine))
    print("\n" + "; ".join(f"bulk load to {r.papers:,}: {r.bulk_s:.0f}s" for r in results))


def main() -> None:
    args = parse_args()
    b = setup(args)
    ingest = step_ingest(b)
    naive = step_naive(b)
    results = [measure_size(b, size) for size in args.sizes]
    print_summary(b, ingest, naive, results[-1])
    print(f"data dir size: {sum(f.stat().st_size for f in b.work.rglob('*') if f.is_file()) / 2**20:.0f} MB")
    print_capacity(b, results)


class _Chunker:
    settings = ServerSettings()


if __name__ == "__main__":
    main()
