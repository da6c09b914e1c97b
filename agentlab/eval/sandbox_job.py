"""Runs INSIDE the sandbox: the evaluation job's target, which runs the harness.

The lab never runs the harness in its own process. Each evaluation is an ``agentlab.jobs`` job
(kind ``eval``, ``target = "agentlab.eval.sandbox_job:run_eval"``) that runs in the bubblewrap sandbox with
``network = "proxy"``: the job has no network at all, and reaches the model under study only through
the metered proxy's unix socket (``$AGENTLAB_MODEL_SOCKET``), which adds the API key on the host side
and logs every call with the job id. The harness's httpx client speaks to that socket directly
(``Endpoint.uds``), so the same retries, timeouts and completion cache apply. We chose ``proxy`` over
``host`` because it works cleanly with the harness's client, keeps the endpoint's key out of the
sandbox and the job store, and meters every evaluation like agent-written code.

Inside the job the harness writes its per-problem results to ``/job/eval.db`` as they complete (so a
killed evaluation's workdir can seed the next attempt, problem by problem) and returns the
``EvalSummary`` and the per-problem results as JSON. The lab (host side) ingests them into the
workspace's ``eval/eval.db`` (``agentlab.eval.records.ingest_job_result``) so reports, ``agentlab eval``
and paired comparisons see them.
The summary's ``job_id`` is the scheduler's job id.

The completion cache is the workspace's, shared by every lab (``agentlab.eval.shared_cache``): the scheduler
seeds the job with the rows of its model identity (``model_id``) and problems (``cache_seed.jsonl``), and the
job journals what it computes (``cache_new.jsonl``) for the scheduler to merge back when it ends. The result
says how many completions the cache answered (``cache``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from agentlab.llm.cache import SqliteCache

CACHE_TABLE = "eval_completion_cache"  # = agentlab.eval.harness.CACHE_TABLE (the harness's own, on the host)
JOB_DB = "eval.db"
WARM_DB = ".warm_eval.db"
SEED_DIR = "/seed"
SEED_FILE = "cache_seed.jsonl"  # = agentlab.eval.shared_cache.SEED_FILE (written by the scheduler)
JOURNAL_FILE = "cache_new.jsonl"  # = agentlab.eval.shared_cache.JOURNAL_FILE (merged back by the scheduler)


def _light_http() -> None:
    """In a fresh job process, keep httpx from importing what the job never uses: its command line (click, rich,
    pygments) and HTTP/2 (h2, ~0.1 s; httpcore then goes without it). The model is spoken to over HTTP/1.1."""
    if "httpx" not in sys.modules and "httpcore" not in sys.modules:
        sys.modules.setdefault("httpx._main", None)  # type: ignore[assignment]
        sys.modules.setdefault("h2", None)  # type: ignore[assignment]


def warm_hint(args: dict[str, Any]) -> dict[str, Any]:
    """Host side: what a warm sandbox for the next job like this one should prepare (its graders; never the
    problems themselves: the next job may be another lab's)."""
    return {"graders": sorted({str(p.get("grader")) for p in args.get("problems") or [] if isinstance(p, dict)})}


def warm(hint: dict[str, Any] | None = None) -> None:
    """A warm sandbox's preparation (``agentlab.jobs.sandbox_entry --warm``): everything ``run_eval`` imports,
    and the graders in ``hint`` (``warm_hint`` of the previous job: math-verify and sympy, or reasoning-gym),
    so that the job's first model request and its first grade wait for no import."""
    _light_http()
    # httpx imports httpcore at its first client (~0.1 s) and httpcore its async backend at the first request
    import anyio._backends._asyncio  # noqa: F401
    import httpcore  # noqa: F401
    import httpcore._backends.anyio  # noqa: F401

    import agentlab.bench.registry
    import agentlab.eval.client
    import agentlab.eval.harness
    import agentlab.eval.job_args
    import agentlab.llm.transport
    import agentlab.techniques  # noqa: F401
    from agentlab.eval.records import ResultStore

    with ResultStore(WARM_DB):  # the job's db, its tables made (run_eval takes it unless it resumes another)
        pass
    JournaledCache(WARM_DB).close()
    graders = set((hint or {}).get("graders") or [])
    if "math" in graders:
        import math_verify  # noqa: F401
    if "reasoning_gym" in graders:
        from agentlab.bench.registry import import_reasoning_gym

        import_reasoning_gym()
        import reasoning_gym  # noqa: F401


def run_eval(**args: Any) -> dict[str, Any]:
    """Job target: evaluate the spec on the problems of ``args`` (``agentlab.eval.job_args.EvalJobArgs``, validated
    here: a bad field fails the job naming it); returns {"summary", "results"} (JSON).

    The model is reached through the metered proxy when the job has one, else at ``base_url``
    (for the process backend run by hand). ``model_id`` is the model's identity (``Endpoint.identity``): the
    completion cache's keys include it, and without it the job shares no completions with other jobs.
    ``serving`` (``Endpoint.serving``: engine and quantization) goes into the record and the cache's keys."""
    _light_http()
    from agentlab.eval.client import Endpoint
    from agentlab.eval.harness import evaluate
    from agentlab.eval.job_args import EvalJobArgs
    from agentlab.eval.records import ResultStore
    from agentlab.llm.transport import RetryPolicy

    job = EvalJobArgs.parse(args)
    sock = os.environ.get("AGENTLAB_MODEL_SOCKET")
    if sock:
        endpoint = Endpoint(model=job.model, base_url="http://model-proxy/v1", uds=sock, identity=job.model_id,
                            serving=job.serving)
    elif job.base_url:
        endpoint = Endpoint.openai(job.base_url, job.model, identity=job.model_id or None, serving=job.serving)
    else:
        raise RuntimeError("no model endpoint: run the job with network='proxy'")
    seed_db = job.seed_db
    if seed_db and Path(seed_db, JOB_DB).is_file() and not Path(JOB_DB).exists():
        for name in (JOB_DB, JOB_DB + "-wal"):  # a killed attempt's finished problems (and its cache)
            if Path(seed_db, name).is_file():
                shutil.copyfile(Path(seed_db, name), name)
    if Path(WARM_DB).is_file():  # made by warm(): an empty db with its tables
        if Path(JOB_DB).exists():
            os.unlink(WARM_DB)
        else:
            os.rename(WARM_DB, JOB_DB)

    def progress(res: Any, done: int, correct: int, total: int) -> None:
        print(f"progress {done} {correct} {total}", flush=True)

    cache = JournaledCache(JOB_DB)
    try:
        seeded = cache.load_seed(SEED_FILE) if job.model_id else 0
        summary = asyncio.run(evaluate(
            job.spec, job.problems, endpoint, benchmark=job.benchmark, subset=job.subset, db_path=JOB_DB,
            run_dir="run", concurrency=job.concurrency, timeout_s=job.timeout_s,
            retry=RetryPolicy(max_retries=job.max_retries),
            job_id=os.environ.get("AGENTLAB_JOB_ID"), on_result=progress, cache=cache))
    finally:
        cache.close()
    store = ResultStore(JOB_DB)
    try:
        results = [r.model_dump(mode="json") for r in store.results(summary.run_id)]
    finally:
        store.close()
    print(f"done {summary.correct}/{summary.n} ({summary.errors} errors; {summary.cached_calls} of {summary.calls}"
          " completions from the cache)", file=sys.stderr, flush=True)
    return {"summary": summary.model_dump(mode="json"), "results": results,
            "cache": {"seeded": seeded, "calls": summary.calls, "cached_calls": summary.cached_calls,
                      "journaled": cache.journaled}}


class JournaledCache(SqliteCache):
    """The job's completion cache: seeded from the workspace's rows, and every completion it stores is also
    appended to the journal the scheduler merges back into the workspace's cache."""

    def __init__(self, path: str) -> None:
        super().__init__(path, table=CACHE_TABLE)
        self.journaled = 0
        self._journal: Any = None

    def load_seed(self, name: str) -> int:
        if not Path(name).is_file():
            return 0
        with open(name) as fh:
            rows = [tuple(json.loads(line)) for line in fh if line.strip()]
        self.merge(rows)  # type: ignore[arg-type]
        return len(rows)

    def put(self, key: str, value: Any, *, model_id: str | None = None, scope: str | None = None,
            request: Any = None) -> None:
        super().put(key, value, model_id=model_id, scope=scope, request=request)
        if model_id and request is not None:
            if self._journal is None:
                self._journal = open(JOURNAL_FILE, "a")
            self._journal.write(json.dumps({"key": key, "request": request, "value": value, "scope": scope}) + "\n")
            self._journal.flush()  # a job killed later still hands this completion back
            self.journaled += 1

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
        super().close()
