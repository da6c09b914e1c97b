"""Evaluations as jobs: the job target that runs the harness, and the lab-side submit/ingest.

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
``EvalSummary`` and the per-problem results as JSON. The lab ingests them into the workspace's
``eval/eval.db`` (``ingest``) so reports, ``agentlab eval`` and paired comparisons see them.
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
    from agentlab.llm.transport import RetryPolicy
    from agentlab.eval.records import ResultStore
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


def ingest(db_path: Path, result: dict[str, Any], spec: dict[str, Any], problem_ids: list[str]) -> Any:
    """Store a finished job's summary and per-problem results in the workspace's eval db."""
    from agentlab.eval.outputs import write_run_files
    from agentlab.eval.records import EvalSummary, ProblemResult, ResultStore
    from agentlab.techniques import TechniqueSpec

    summary = EvalSummary.model_validate(result["summary"])
    results = [ProblemResult.model_validate(r) for r in result.get("results") or []]
    rdir = Path(db_path).parent / "runs" / summary.run_id
    summary.run_dir = str(rdir)
    store = ResultStore(db_path)
    try:
        store.ensure_run(summary.run_id, benchmark=summary.benchmark, subset=summary.subset, model=summary.model,
                         spec=TechniqueSpec.parse(spec), problem_ids=problem_ids, job_id=summary.job_id,
                         run_dir=str(rdir))
        for r in results:
            store.add_result(summary.run_id, r)
        store.set_status(summary.run_id, "complete", summary)
    finally:
        store.close()
    write_run_files(summary, results, rdir)
    return summary


def stderr_tail(job: Any, chars: int = 1500) -> str:
    """The end of a job's stderr (what the agents see when it failed)."""
    if not job.log_dir:
        return ""
    p = Path(job.log_dir) / "stderr.log"
    try:
        with open(p, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - chars))
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
