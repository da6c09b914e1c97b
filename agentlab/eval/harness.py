"""The evaluation harness: run a technique over benchmark problems against a model under study.

- async, bounded concurrency (a cap on requests in flight) against any OpenAI-compatible endpoint
  (vLLM, llama.cpp; spoken to directly over httpx) or a litellm provider string;
- per-request timeouts; retries with exponential backoff and jitter from the shared transport;
- a completion cache in SQLite (reruns and shared baselines cost nothing);
- per-problem results written as they complete: a killed evaluation resumes where it stopped
  (rerunning the same benchmark/subset/model/technique continues the same run);
- a summary record (``EvalSummary``) with a stable id: accuracy, 95% Wilson interval, tokens, latency,
  per-level/per-subject breakdown, the model replies cut at max_tokens (each reply's ``finish_reason`` is
  recorded); a paired comparison with exact McNemar (``compare``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

from agentlab.bench.grading import grade
from agentlab.bench.registry import Problem
from agentlab.eval.client import ChatClient, Endpoint, cache_scope
from agentlab.eval.errors import EndpointError, EvalError, RequestFailed
from agentlab.eval.outputs import write_run_files
from agentlab.eval.prompting import Chain, Embedder, Outcome, run_prompt_technique
from agentlab.eval.records import EvalSummary, ProblemResult, ResultStore, run_key, summarize
from agentlab.llm.cache import SqliteCache
from agentlab.llm.transport import RetryPolicy
from agentlab.techniques.spec import TechniqueSpec


class CodeSolver(Protocol):
    """Runs a ``code`` technique's ``solve(problem, client)`` in the sandbox; returns the response text
    (which is then graded) and the tokens it used."""

    async def solve(self, spec: TechniqueSpec, problem: Problem, endpoint: Endpoint) -> tuple[str, int]: ...


CACHE_TABLE = "eval_completion_cache"
OnResult = Callable[[ProblemResult, int, int, int], Any]


async def evaluate(
    spec: TechniqueSpec,
    problems: list[Problem],
    endpoint: Endpoint,
    *,
    db_path: Path | str,
    benchmark: str | None = None,
    subset: str = "all",
    run_dir: Path | str | None = None,
    concurrency: int = 8,
    timeout_s: float = 180.0,
    retry: RetryPolicy | None = None,
    cache: bool | SqliteCache = True,
    job_id: str | None = None,
    on_result: OnResult | None = None,
    code_solver: CodeSolver | None = None,
    embedder: Embedder | None = None,
) -> EvalSummary:
    """Evaluate ``spec`` on ``problems`` against ``endpoint``; resumes a previous identical run.

    Results go to ``db_path`` (usually ``default_db_path(settings)``) as each problem completes; the
    completion cache lives in the same file (or ``cache``, a ``SqliteCache`` the caller owns; False = none), its
    rows filed under the endpoint's identity and the problem. Raises ``EndpointError`` when the endpoint is down (the
    finished problems are kept: run the same call again to resume)."""
    _check_inputs(spec, problems, code_solver)
    benchmark = benchmark or problems[0].benchmark
    db, ids = Path(db_path), [p.id for p in problems]
    run_id = run_key(benchmark, subset, ids, endpoint.model, spec.spec_hash(), endpoint.serving)
    rdir = Path(run_dir) if run_dir else db.parent / "runs" / run_id
    store = ResultStore(db)
    own_cache = cache is True
    ccache = SqliteCache(db, table=CACHE_TABLE) if cache is True else (None if cache is False else cache)
    # the endpoint is probed before the first request the cache does not answer: an evaluation the cache
    # answers entirely sends nothing (and is saved even while the endpoint is down)
    client = ChatClient(endpoint, concurrency=concurrency, timeout_s=timeout_s, retry=retry, cache=ccache,
                        probe_first=True)
    try:
        store.ensure_run(run_id, benchmark=benchmark, subset=subset, model=endpoint.model, spec=spec,
                         problem_ids=ids, job_id=job_id, run_dir=str(rdir), serving=endpoint.serving)
        done = store.done_ids(run_id)
        pending = [(i, p) for i, p in enumerate(problems) if p.id not in done]

        async def solve(idx: int, problem: Problem) -> ProblemResult:
            return await _solve_problem(idx, problem, spec, client, endpoint, code_solver, embedder)

        progress = _Progress(store, run_id, len(problems), on_result)
        await _run_workers(pending, solve, progress, min(concurrency, max(1, len(pending))))
        return _finish(store, run_id, job_id, rdir)
    finally:
        await client.aclose()
        store.close()
        if ccache is not None and own_cache:
            ccache.close()


def _check_inputs(spec: TechniqueSpec, problems: list[Problem], code_solver: CodeSolver | None) -> None:
    if not problems:
        raise EvalError("no problems to evaluate (the subset is empty)")
    if spec.kind == "code" and code_solver is None:
        raise EvalError(f"technique {spec.name!r} is a code technique: it runs only in the sandbox; "
                        "pass a code solver (agentlab.eval.code_technique) to evaluate it")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise EvalError("problem ids are not unique")


def _resumable(exc: EndpointError, saved: int, total: int, run_id: str) -> EndpointError:
    return EndpointError(f"{exc}; {saved} of {total} problems are saved (run {run_id}): "
                         "rerun the same command to resume")


async def _solve_problem(idx: int, problem: Problem, spec: TechniqueSpec, client: ChatClient, endpoint: Endpoint,
                         code_solver: CodeSolver | None, embedder: Embedder | None) -> ProblemResult:
    """Run the technique on one problem and grade it; a request that failed for good scores as wrong."""
    started = time.perf_counter()
    cache_scope.set(f"{problem.benchmark}:{problem.id}")  # this task's completions are filed under the problem
    try:
        if spec.kind == "code":
            assert code_solver is not None
            text, tokens = await code_solver.solve(spec, problem, endpoint)
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
        cached=out.calls > 0 and out.cached_calls == out.calls, cached_calls=out.cached_calls, error=error,
        truncated=out.cut_calls, chains=[_chain_record(c) for c in out.chains]
        or [{"answer": g.extracted if g else None, "text": out.response[-2000:]}])


def _chain_record(c: Chain) -> dict[str, Any]:
    """What a result keeps of one chain (with why its last reply ended: "length" = cut at max_tokens); a
    verified chain also keeps its verdict and every judge reply."""
    rec: dict[str, Any] = {"answer": c.answer, "temperature": c.temperature, "weight": round(c.weight, 4),
                           "text": c.text[-2000:], "finish_reason": c.finish_reason}
    if c.judgments:
        rec["verdict"] = c.verdict
        rec["judgments"] = [{**j, "reply": j["reply"][-1000:]} for j in c.judgments]
    return rec


class _Progress:
    """Stores each result as it completes and reports (done, correct, total) to ``on_result``."""

    def __init__(self, store: ResultStore, run_id: str, total: int, on_result: OnResult | None):
        prior = store.results(run_id)
        self.store, self.run_id, self.total, self.on_result = store, run_id, total, on_result
        self.done, self.correct = len(prior), sum(r.correct for r in prior)

    async def add(self, res: ProblemResult) -> None:
        self.store.add_result(self.run_id, res)
        self.done += 1
        self.correct += int(res.correct)
        if self.on_result is not None:
            maybe = self.on_result(res, self.done, self.correct, self.total)
            if asyncio.iscoroutine(maybe):
                await maybe


async def _run_workers(pending: list[tuple[int, Problem]], solve: Callable[[int, Problem], Awaitable[ProblemResult]],
                       progress: _Progress, n_workers: int) -> None:
    """Solve ``pending`` with ``n_workers`` concurrent workers; on any failure cancel them all, mark the
    run interrupted and re-raise (an endpoint failure says how many problems are saved)."""
    queue: asyncio.Queue[tuple[int, Problem]] = asyncio.Queue()
    for item in pending:
        queue.put_nowait(item)

    async def worker() -> None:
        while True:
            try:
                idx, problem = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await progress.add(await solve(idx, problem))

    workers = [asyncio.create_task(worker()) for _ in range(n_workers)]
    try:
        await asyncio.gather(*workers)
    except BaseException as exc:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        progress.store.set_status(progress.run_id, "interrupted")
        if isinstance(exc, EndpointError):
            saved = len(progress.store.done_ids(progress.run_id))
            raise _resumable(exc, saved, progress.total, progress.run_id) from None
        raise


def _finish(store: ResultStore, run_id: str, job_id: str | None, run_dir: Path) -> EvalSummary:
    summary = summarize(store.run_row(run_id), store.results(run_id))
    if job_id:
        summary.job_id = job_id
    store.set_status(run_id, "complete", summary)
    write_run_files(summary, store.results(run_id), run_dir)
    return summary


def run_evaluation(*args: Any, **kwargs: Any) -> EvalSummary:
    """Synchronous wrapper around ``evaluate``."""
    return asyncio.run(evaluate(*args, **kwargs))
