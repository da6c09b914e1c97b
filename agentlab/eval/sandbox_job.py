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
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path
from typing import Any

JOB_DB = "eval.db"
SEED_DIR = "/seed"


def run_eval(spec: dict[str, Any], problems: list[dict[str, Any]], model: str, benchmark: str, subset: str,
             concurrency: int = 4, timeout_s: float = 180.0, max_retries: int = 2, base_url: str | None = None,
             seed_db: str | None = None) -> dict[str, Any]:
    """Job target: evaluate ``spec`` on ``problems``; returns {"summary", "results"} (JSON).

    The model is reached through the metered proxy when the job has one, else at ``base_url``
    (for the process backend run by hand)."""
    if "httpx" not in sys.modules:  # a fresh job process: skip httpx's optional CLI (click, rich, pygments)
        sys.modules.setdefault("httpx._main", None)  # type: ignore[assignment]
    from agentlab.bench.registry import Problem
    from agentlab.eval.client import Endpoint
    from agentlab.eval.harness import evaluate
    from agentlab.eval.records import ResultStore
    from agentlab.llm.transport import RetryPolicy
    from agentlab.techniques import TechniqueSpec

    sock = os.environ.get("AGENTLAB_MODEL_SOCKET")
    if sock:
        endpoint = Endpoint(model=model, base_url="http://model-proxy/v1", uds=sock)
    elif base_url:
        endpoint = Endpoint.openai(base_url, model)
    else:
        raise RuntimeError("no model endpoint: run the job with network='proxy'")
    if seed_db and Path(seed_db, JOB_DB).is_file() and not Path(JOB_DB).exists():
        for name in (JOB_DB, JOB_DB + "-wal"):  # a killed attempt's finished problems (and its cache)
            if Path(seed_db, name).is_file():
                shutil.copyfile(Path(seed_db, name), name)
    parsed = TechniqueSpec.parse(spec)
    probs = [Problem.model_validate(p) for p in problems]

    def progress(res: Any, done: int, correct: int, total: int) -> None:
        print(f"progress {done} {correct} {total}", flush=True)

    summary = asyncio.run(evaluate(
        parsed, probs, endpoint, benchmark=benchmark, subset=subset, db_path=JOB_DB, run_dir="run",
        concurrency=concurrency, timeout_s=timeout_s, retry=RetryPolicy(max_retries=max_retries),
        job_id=os.environ.get("AGENTLAB_JOB_ID"), on_result=progress))
    store = ResultStore(JOB_DB)
    try:
        results = [r.model_dump(mode="json") for r in store.results(summary.run_id)]
    finally:
        store.close()
    print(f"done {summary.correct}/{summary.n} ({summary.errors} errors)", file=sys.stderr, flush=True)
    return {"summary": summary.model_dump(mode="json"), "results": results}
