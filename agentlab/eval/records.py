"""Evaluation records and their store: per-problem results written as they complete, the summary record
every reported accuracy cites (``EvalSummary``, a stable record id), and the paired comparison of two
runs (``compare``)."""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agentlab.eval.errors import EvalError
from agentlab.eval.stats import mcnemar, percentile, wilson_interval
from agentlab.sqlite import SqliteStore
from agentlab.techniques.spec import TechniqueSpec


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
    calls: int = Field(0, description="completions the technique asked for")
    cached_calls: int = Field(0, description="of them, answered by the completion cache (no model request)")
    truncated: int = Field(0, description=(
        "of them, replies cut at max_tokens (finish_reason 'length'). Every reply counts, not only the final "
        "solutions: a cut plan, critique or judge reply spoils what is built on it. Code techniques: not "
        "counted (their calls go through the sandbox's proxy)"))
    max_tokens: int | None = Field(None, description=(
        "the solving replies' limit (the spec's sampling.max_tokens; pre-steps, refine and verifier may set "
        "their own); None: a code technique, or a record from before this field"))
    serving: str = Field("", description=(
        "what served the model: engine and quantization ('llama.cpp Q4_1', 'transformers f32'); a trained "
        "checkpoint is served like its base, and both records say so. Empty: not known (an external "
        "endpoint, or a record from before this field)"))
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
    cached: bool = False  # every call of this problem came from the completion cache
    cached_calls: int = 0
    error: str | None = None
    truncated: int = 0  # of its calls, replies cut at max_tokens
    chains: list[dict[str, Any]] = Field(default_factory=list)  # each with its last reply's finish_reason


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


def default_db_path(settings: Any) -> Path:
    """Where evaluation records live: ``<workspace>/eval/eval.db``."""
    return Path(settings.workspace) / "eval" / "eval.db"


class ResultStore(SqliteStore):
    schema = _SCHEMA
    added_columns = {"eval_runs": {"serving": "TEXT NOT NULL DEFAULT ''"}}  # files from before the field

    def ensure_run(self, run_id: str, *, benchmark: str, subset: str, model: str, spec: TechniqueSpec,
                   problem_ids: list[str], job_id: str | None, run_dir: str, serving: str = "") -> None:
        now = time.time()
        self.conn.execute(
            "INSERT INTO eval_runs (run_id, benchmark, subset, model, technique, spec_hash, spec_json, problem_ids,"
            " status, job_id, created, updated, run_dir, serving)"
            " VALUES (?,?,?,?,?,?,?,?,'running',?,?,?,?,?)"
            " ON CONFLICT(run_id) DO UPDATE SET status='running', updated=excluded.updated,"
            " job_id=COALESCE(excluded.job_id, eval_runs.job_id)",
            (run_id, benchmark, subset, model, spec.name, spec.spec_hash(), spec.to_json(None),
             json.dumps(problem_ids), job_id, now, now, run_dir, serving))

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


def run_key(benchmark: str, subset: str, problem_ids: list[str], model: str, spec_hash: str,
            serving: str = "") -> str:
    """The run's id. Another serving (engine, quantization) is another run: a resumed run never mixes two."""
    key = {"benchmark": benchmark, "subset": subset, "problems": problem_ids, "model": model,
           "spec": spec_hash}
    if serving:  # only when known: the ids of runs without it stay as they were
        key["serving"] = serving
    blob = json.dumps(key, sort_keys=True)
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
        subset=row["subset"], model=row["model"], serving=row.get("serving") or "",
        technique=row["technique"], spec_hash=row["spec_hash"], n=n, n_planned=len(planned), complete=n == len(planned) and n > 0,
        correct=correct, accuracy=correct / n if n else 0.0, ci_low=lo, ci_high=hi,
        tokens_per_problem=sum(tokens) / n if n else 0.0,
        tokens_per_correct=sum(tokens) / correct if correct else None,
        latency_p50_s=percentile(lats, 50), latency_p95_s=percentile(lats, 95),
        errors=sum(r.error is not None for r in results), calls=sum(r.calls for r in results),
        cached_calls=sum(r.cached_calls for r in results), truncated=sum(r.truncated for r in results),
        max_tokens=_solving_max_tokens(row.get("spec_json")), breakdown=breakdown, created=row["created"],
        finished=row["updated"] if last is not None and n == len(planned) else None, run_dir=row.get("run_dir"))


def _solving_max_tokens(spec_json: str | None) -> int | None:
    """The max_tokens of a prompt technique's solving replies, from the run's stored spec."""
    spec = json.loads(spec_json) if spec_json else {}
    if spec.get("kind", "prompt") != "prompt":
        return None
    return (spec.get("sampling") or {}).get("max_tokens")


def _sort_key(k: str) -> tuple:
    return (0, int(k), "") if k.lstrip("-").isdigit() else (1, 0, k)


def load_summary(ref: str, db_path: Path | str) -> EvalSummary:
    """The summary record of a run, by run id, record id or a unique prefix of either."""
    store = ResultStore(db_path)
    try:
        return store.summary(store.resolve(ref))
    finally:
        store.close()


def compare(a: EvalSummary | str, b: EvalSummary | str, *, db_path: Path | str) -> Comparison:
    """Paired comparison of two runs on the problems both answered: wins/losses of A over B and the
    exact McNemar p-value."""
    store = ResultStore(db_path)
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


def ingest_job_result(db_path: Path | str, result: dict[str, Any], spec: TechniqueSpec,
                      problem_ids: list[str]) -> EvalSummary:
    """Store a finished evaluation job's summary and per-problem results (``agentlab.eval.sandbox_job``'s
    return value) in the workspace's eval db, and write the run's files beside it."""
    from agentlab.eval.outputs import write_run_files

    summary = EvalSummary.model_validate(result["summary"])
    results = [ProblemResult.model_validate(r) for r in result.get("results") or []]
    rdir = Path(db_path).parent / "runs" / summary.run_id
    summary.run_dir = str(rdir)
    with ResultStore(db_path) as store:
        store.ensure_run(summary.run_id, benchmark=summary.benchmark, subset=summary.subset, model=summary.model,
                         spec=spec, problem_ids=problem_ids, job_id=summary.job_id, run_dir=str(rdir),
                         serving=summary.serving)
        for r in results:
            store.add_result(summary.run_id, r)
        store.set_status(summary.run_id, "complete", summary)
    write_run_files(summary, results, rdir)
    return summary
