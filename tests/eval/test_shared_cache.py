"""One completion cache for every lab of a workspace (``agentlab.eval.shared_cache``).

The slow test runs the same baseline as two lab runs, each in a process of its own (``Experiments``: a real
sandboxed evaluation job through the scheduler, bubblewrap, the metered proxy, the real embedded llama.cpp
model behind a counting forwarder): the second lab's job sends the model server no request at all and
returns the same record. The fast tests pin the keys: a model's identity is part of them, sampled chains
stay distinct per chain, and the host takes from a job only completions of the job's own model."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from agentlab.bench import Problem
from agentlab.eval.client import ChatClient, Endpoint, completion_request
from agentlab.eval.harness import run_evaluation
from agentlab.eval.records import ResultStore
from agentlab.eval.sandbox_job import CACHE_TABLE, JOURNAL_FILE, SEED_FILE
from agentlab.eval.shared_cache import EVAL_TARGET, JobCache
from agentlab.eval.shared_cache import JOURNAL_FILE as HOST_JOURNAL
from agentlab.eval.shared_cache import SEED_FILE as HOST_SEED
from agentlab.eval.shared_cache import TABLE as HOST_TABLE
from agentlab.jobs import JobSpec
from agentlab.llm.cache import SqliteCache, request_key
from agentlab.llm.transport import RetryPolicy
from agentlab.techniques import get_technique
from tests.sandbox.conftest import needs_bwrap

REPO = Path(__file__).resolve().parents[2]


def P(i, answer=1):
    return Problem(id=f"p{i}", question=f"Q{i}: what is the number {answer}?", answer=str(answer),
                   benchmark="toy", grader="gsm8k")


def _run(spec, problems, endpoint, db, **kw):
    return run_evaluation(spec, problems, endpoint, benchmark="toy", db_path=db, timeout_s=10,
                          retry=RetryPolicy(max_retries=1), **kw)


# -- keys ---------------------------------------------------------------------------------------------

def test_the_file_names_agree_on_both_sides_of_the_sandbox():
    assert (SEED_FILE, JOURNAL_FILE, CACHE_TABLE) == (HOST_SEED, HOST_JOURNAL, HOST_TABLE)


def test_another_model_behind_the_same_name_never_shares_a_key(tmp_path, scripted_server):
    srv = scripted_server(lambda b: "The answer is 1")
    url = f"http://127.0.0.1:{srv.port}/v1"
    spec, problems, db = get_technique("direct"), [P(0), P(1)], tmp_path / "eval.db"
    base = Endpoint.openai(url, "scripted-model", identity="gguf-sha256:aaaa")
    _run(spec, problems, base, db)
    assert srv.completions() == 2
    # (another subset label: a new evaluation run, so only the cache can spare the requests)
    _run(spec, problems, Endpoint.openai(url, "scripted-model", identity="gguf-sha256:aaaa"), db, subset="b")
    assert srv.completions() == 2  # the same model: answered by the cache
    trained = Endpoint.openai(url, "scripted-model", identity="checkpoint:bbbb")
    s = _run(spec, problems, trained, db, subset="c")
    assert srv.completions() == 4 and s.cached_calls == 0  # a checkpoint served under the same name: asked again
    req = completion_request(base, [{"role": "user", "content": "x"}], {"temperature": 0.0})
    assert req["model_id"] == "gguf-sha256:aaaa"
    assert request_key(req) != request_key(completion_request(trained, req["messages"], {"temperature": 0.0}))


def test_sampled_chains_stay_distinct_per_chain_and_each_is_cached(tmp_path, scripted_server):
    srv = scripted_server(lambda b: f"chain with seed {b['seed']}: the answer is {b['seed'] % 2}")
    spec = get_technique("self_consistency", k=3)  # temperature 0.7, seeds 0, 1, 2
    ep, db = srv.endpoint, tmp_path / "eval.db"
    first = _run(spec, [P(0)], ep, db)
    assert srv.completions() == 3 and sorted(r["seed"] for r in srv.requests) == [0, 1, 2]
    again = _run(spec, [P(0)], ep, db, subset="again")  # another run of the same requests
    assert srv.completions() == 3 and again.cached_calls == again.calls == 3
    store = ResultStore(db)
    texts = [[c["text"] for c in store.results(s.run_id)[0].chains] for s in (first, again)]
    store.close()
    assert texts[0] == texts[1] and len(set(texts[0])) == 3  # three chains, not one collapsed into three


def test_a_sampled_request_without_a_seed_is_never_answered_from_the_cache(tmp_path, scripted_server):
    srv = scripted_server(lambda b: "x")

    async def ask() -> None:
        cache = SqliteCache(tmp_path / "c.db", table=CACHE_TABLE)
        client = ChatClient(srv.endpoint, cache=cache)
        for _ in range(2):
            await client.chat([{"role": "user", "content": "q"}], temperature=0.7)
            await client.chat([{"role": "user", "content": "q"}], temperature=0.7, seed=3)
        await client.aclose()
        cache.close()

    asyncio.run(ask())
    assert srv.completions() == 3  # two independent unseeded draws, one seeded draw answered again from the cache


def test_a_cache_the_caller_owns_is_used_even_while_empty(tmp_path, scripted_server):
    srv = scripted_server(lambda b: "The answer is 1")
    cache = SqliteCache(tmp_path / "own.db", table=CACHE_TABLE)
    try:
        _run(get_technique("direct"), [P(0)], srv.endpoint, tmp_path / "eval.db", cache=cache)
        assert len(cache) == 1  # an empty cache is falsy (len 0): it must still be the one used
    finally:
        cache.close()


# -- the host's side -------------------------------------------------------------------------------

def _job(model_id="gguf-sha256:aaaa", problems=("p0", "p1")):
    return JobSpec(kind="eval", target=EVAL_TARGET, args={
        "model_id": model_id, "problems": [{"id": p, "benchmark": "toy"} for p in problems]})


def _line(model_id="gguf-sha256:aaaa", scope="toy:p0", text="hi", key=None):
    req = {"model": "m", "model_id": model_id, "messages": [{"role": "user", "content": text}], "temperature": 0.0}
    value = {"text": text, "tokens_in": 1, "tokens_out": 1, "latency_s": 0.1, "cached": False, "mean_logprob": None}
    return json.dumps({"key": key or request_key(req), "request": req, "value": value, "scope": scope})


def test_a_job_adds_completions_of_its_own_model_and_problems_only(tmp_path):
    ws = tmp_path / "ws"
    cache = JobCache.for_job(_job(), ws)
    assert cache is not None and JobCache.for_job(_job(model_id=""), ws) is None  # no identity: nothing shared
    assert JobCache.for_job(JobSpec(kind="eval", command=["true"]), ws) is None
    journal = "\n".join([_line(text="a"), _line(text="b", scope="toy:p1"), _line(model_id="other", text="c"),
                         _line(text="d", scope="toy:p9"), _line(text="e", key="0" * 64), "not json", ""])
    assert cache.merge(journal) == 2
    assert cache.merge(journal) == 0  # already there
    seed = cache.seed_files()[SEED_FILE].splitlines()
    assert cache.seeded == 2 and sorted(json.loads(r)[3] for r in seed) == ["toy:p0", "toy:p1"]
    other = JobCache.for_job(_job(problems=("p1",)), ws)
    assert other is not None and len(other.seed_files()[SEED_FILE].splitlines()) == 1  # its problems' rows only
    stranger = JobCache.for_job(_job(model_id="checkpoint:bbbb"), ws)
    assert stranger is not None and stranger.seed_files() == {}  # another model gets none of them


def test_an_older_cache_table_gains_the_columns_and_keeps_its_rows(tmp_path):
    import sqlite3

    db = tmp_path / "eval.db"
    con = sqlite3.connect(db)
    con.execute(f"CREATE TABLE {CACHE_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)")
    con.execute(f"INSERT INTO {CACHE_TABLE} VALUES ('old', '{{\"text\": \"x\"}}', 0)")
    con.commit()
    con.close()
    cache = SqliteCache(db, table=CACHE_TABLE)
    cache.put("new", {"text": "y"}, model_id="m", scope="toy:p0")
    assert cache.get("old") == {"text": "x"} and [r[0] for r in cache.rows("m", ["toy:p0"])] == ["new"]
    cache.close()


WRITERS = 3
SYNC_TIMEOUT_S = 120.0  # generous: three Python start-ups on two busy cores


def _barrier(folder: Path, stage: str, name: str, parties: int = WRITERS) -> None:
    """Wait until every writer has reached ``stage`` (a file per writer in ``folder``); give up when one
    failed (a ``failed-`` file) or after SYNC_TIMEOUT_S."""
    (folder / f"{stage}-{name}").touch()
    deadline = time.monotonic() + SYNC_TIMEOUT_S
    while len(list(folder.glob(f"{stage}-*"))) < parties:
        if any(folder.glob("failed-*")) or time.monotonic() > deadline:
            raise TimeoutError(f"{name}: the other writers never reached {stage!r}")
        time.sleep(0.005)


# one writer: 40 merges of 5 rows each; all writers start together, and none writes its second half before
# every writer wrote its first, so that their transactions interleave
MERGER = """
import sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from agentlab.eval.shared_cache import JobCache
from tests.eval.test_shared_cache import _barrier, _job, _line
ws, name, sync = sys.argv[1], sys.argv[2], Path(sys.argv[3])
cache = JobCache.for_job(_job(), ws)

def merge(i):
    return cache.merge(chr(10).join(_line(text=f"{{name}}-{{i}}-{{j}}") for j in range(5)))

try:
    _barrier(sync, "start", name)
    n = sum(merge(i) for i in range(20))
    _barrier(sync, "half", name)
    n += sum(merge(i) for i in range(20, 40))
except BaseException:
    (sync / f"failed-{{name}}").touch()  # the others stop waiting for this one
    raise
print(n)
"""


def _writers_in_commit_order(db: Path) -> list[str]:
    """The writer of each cache row, in the order the rows were committed (rowid)."""
    con = sqlite3.connect(db)
    try:
        values = [r[0] for r in con.execute(f"SELECT value FROM {CACHE_TABLE} ORDER BY rowid")]
    finally:
        con.close()
    return [json.loads(v)["text"].split("-")[0] for v in values]


def test_concurrent_writers_lose_nothing(tmp_path):
    """Three processes merge jobs' completions into one workspace cache at once (WAL, busy timeout)."""
    ws, sync = tmp_path / "ws", tmp_path / "sync"
    sync.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", MERGER.format(repo=str(REPO)), str(ws), f"w{k}", str(sync)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(WRITERS)]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert [int(o[0]) for o in outs] == [200, 200, 200]
    cache = SqliteCache(ws / "eval" / "eval.db", table=CACHE_TABLE)
    assert len(cache) == 600
    cache.close()
    # they overlapped: every writer committed rows before and after rows of the others
    order = _writers_in_commit_order(ws / "eval" / "eval.db")
    firsts = [order.index(w) for w in ("w0", "w1", "w2")]
    lasts = [len(order) - 1 - order[::-1].index(w) for w in ("w0", "w1", "w2")]
    assert max(firsts) < min(lasts), (firsts, lasts)


# -- two labs, one workspace, the real model ------------------------------------------------------------

class CountingForwarder:
    """Forwards every request to the model server and counts them: what the model server was asked."""

    def __init__(self, upstream: str):
        self.count: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else None
                key = f"{method} {self.path}"
                outer.count[key] = outer.count.get(key, 0) + 1
                r = httpx.request(method, upstream.rstrip("/") + self.path.removeprefix("/v1"), content=body,
                                  headers={"Content-Type": "application/json"}, timeout=300)
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            def do_GET(self):
                self._forward("GET")

            def do_POST(self):
                self._forward("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def total(self) -> int:
        return sum(self.count.values())


# one lab run in a process of its own: the lab's Experiments evaluate the baseline on the dev split as a
# sandboxed job of this run, with the model under study at URL (identity ID); prints the outcome as JSON
LAB_RUN = """
import json, sys
sys.path.insert(0, {repo!r})
from agentlab.config import load_settings
from agentlab.eval.client import Endpoint
from agentlab.lab.experiments import Experiments
from agentlab.lab.state import LabConfig
lab, run_id, url, model, identity = sys.argv[1:6]
cfg = LabConfig(benchmark="basic_arithmetic", dev_n=3, report_n=3, concurrency=2, lab_name=lab,
                baseline="zero_shot_cot", max_tokens_per_answer=24)
exp = Experiments(load_settings(), cfg, run_id, lab, endpoint=Endpoint.openai(url, model, identity=identity))
try:
    out = exp.run("baseline-dev", exp.baseline_spec(), "dev").dump()  # its stored (JSON) form
    job = exp.scheduler().get(out["job_id"])
    print(json.dumps({{"out": {{k: out.get(k) for k in ("status", "record", "job_id", "error")}},
                      "lab": job.spec.lab, "run_id": job.spec.run_id, "cache": (job.result or {{}}).get("cache"),
                      "log_dir": job.log_dir}}))
finally:
    exp.close()
"""


LAB_RUN_TIMEOUT_S = 420  # one baseline of 3 problems on the embedded model, on two busy cores


def _lab_run(ws: Path, lab: str, run_id: str, url: str, ep: Endpoint) -> dict:
    r = subprocess.run([sys.executable, "-c", LAB_RUN.format(repo=str(REPO)), lab, run_id, url, ep.model,
                        ep.identity], capture_output=True, text=True, env=os.environ.copy(), cwd=ws.parent,
                       timeout=LAB_RUN_TIMEOUT_S, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@needs_bwrap
@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(2 * LAB_RUN_TIMEOUT_S + 120)  # two lab runs, one after the other
def test_a_second_labs_identical_baseline_costs_no_model_request(workspace, embedded_endpoint):
    fwd = CountingForwarder(embedded_endpoint.base_url)
    try:
        a = _lab_run(workspace, "lab-a", "run-a", fwd.url, embedded_endpoint)
        asked = dict(fwd.count)
        b = _lab_run(workspace, "lab-b", "run-b", fwd.url, embedded_endpoint)
    finally:
        fwd.httpd.shutdown()
    assert a["out"]["status"] == b["out"]["status"] == "succeeded", (a["out"]["error"], b["out"]["error"])
    assert (a["lab"], a["run_id"], b["lab"], b["run_id"]) == ("lab-a", "run-a", "lab-b", "run-b")
    assert a["out"]["job_id"] != b["out"]["job_id"]
    assert asked.get("POST /v1/chat/completions") == 3  # lab A: one completion per dev problem (zero_shot_cot)
    # lab B: the model server got no request at all, not even a probe
    assert fwd.count == asked, (a["cache"], b["cache"])
    # the metered proxy (host side, outside the job) saw no call of lab B's job either
    calls = Path(b["log_dir"], "proxy_calls.jsonl")
    assert not calls.exists() or not calls.read_text().strip()
    ra, rb = ({k: v for k, v in x["out"]["record"].items() if k != "job_id"} for x in (a, b))
    assert ra == rb and ra["n"] == 3 and ra["model_id"] == embedded_endpoint.identity
    assert a["cache"] == {"seeded": 0, "calls": 3, "cached_calls": 0, "journaled": 3, "merged": 3}
    assert b["cache"] == {"seeded": 3, "calls": 3, "cached_calls": 3, "journaled": 0, "merged": 0}
    store = ResultStore(workspace / "eval" / "eval.db")
    summary = store.summary(store.resolve(rb["eval_run_id"]))
    store.close()
    assert summary.calls == summary.cached_calls == 3  # the record says it was served from the cache
    assert re.fullmatch(r"gguf-sha256:[0-9a-f]{16}", embedded_endpoint.identity)
