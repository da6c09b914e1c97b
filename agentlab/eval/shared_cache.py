"""One completion cache for every lab of a workspace, with the evaluation jobs kept in their sandbox.

An evaluation job (``agentlab.eval.sandbox_job:run_eval``) runs in bubblewrap and sees only its own workdir,
never the workspace. So the host carries the cache across the sandbox's wall, both ways:

* before the job starts, the scheduler writes ``cache_seed.jsonl`` into its workdir: the rows of the
  workspace's completion cache (``<workspace>/eval/eval.db``, table ``eval_completion_cache``) filed under the
  job's model identity and problems. The job loads them into its own ``eval.db``, so a request another lab
  (or an earlier job, or ``agentlab eval run``) already made costs no model call;
* as the job computes completions it appends them to ``cache_new.jsonl`` (request, key, value); when the job
  ends (whatever its state: a killed job's completions are kept too), the scheduler checks every line and
  merges it into the workspace's cache in one transaction (SQLite WAL and a busy timeout: many schedulers
  and processes may write at once).

Keys are independent of the lab, the run and the job: they hash the request (``client.completion_request``:
the served model name, the model's identity, the messages and every sampling parameter). The host accepts a
line only when its key is the hash of its request and the request names the job's own model identity, so a
job can add completions for its own model only; a job without a model identity (``model_id``) shares nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from agentlab.llm.cache import CacheRow, SqliteCache, request_key

log = logging.getLogger("agentlab.eval")

EVAL_TARGET = "agentlab.eval.sandbox_job:run_eval"
SEED_FILE = "cache_seed.jsonl"
JOURNAL_FILE = "cache_new.jsonl"
TABLE = "eval_completion_cache"
MAX_JOURNAL_BYTES = 256 * 1024 * 1024
_VALUE_FIELDS = {"text": str, "tokens_in": int, "tokens_out": int, "latency_s": (int, float),
                 "cached": bool, "mean_logprob": (int, float, type(None))}
_LATER_VALUE_FIELDS = {"finish_reason": (str, type(None))}  # added later: a value may lack them


def workspace_cache_db(workspace: Path | str) -> Path:
    """The workspace's evaluation db, which holds the shared completion cache (``records.default_db_path``)."""
    return Path(workspace) / "eval" / "eval.db"


def problem_scope(benchmark: str, problem_id: str) -> str:
    return f"{benchmark}:{problem_id}"


class JobCache:
    """The shared cache as one evaluation job sees it: the rows to seed it with, the merge of what it computed."""

    def __init__(self, db: Path | str, model_id: str, scopes: list[str]):
        self.db, self.model_id, self.scopes = Path(db), model_id, set(scopes)
        self.seeded = 0
        self.collect = (JOURNAL_FILE,)  # the workdir files the scheduler brings back for ``merge``

    @classmethod
    def for_job(cls, spec: Any, workspace: Path | str | None) -> JobCache | None:
        """For an evaluation job of a model with an identity; None for any other job."""
        if workspace is None or getattr(spec, "target", None) != EVAL_TARGET:
            return None
        args = spec.args or {}
        model_id = args.get("model_id")
        if not model_id or not isinstance(model_id, str):
            return None
        scopes = [problem_scope(str(p.get("benchmark", "")), str(p.get("id", "")))
                  for p in args.get("problems") or [] if isinstance(p, dict)]
        return cls(workspace_cache_db(workspace), model_id, scopes) if scopes else None

    def seed_files(self) -> dict[str, str]:
        """``{SEED_FILE: jsonl}`` with the workspace's rows for this job (empty when there are none)."""
        if not self.db.exists():
            return {}
        cache = SqliteCache(self.db, table=TABLE)
        try:
            rows = cache.rows(self.model_id, sorted(self.scopes))
        finally:
            cache.close()
        self.seeded = len(rows)
        if not rows:
            return {}
        return {SEED_FILE: "".join(json.dumps([k, v, m, s]) + "\n" for k, v, m, s in rows)}

    def accept(self, text: str) -> list[CacheRow]:
        """The journal's valid lines as cache rows (a line that fails a check is skipped and counted in the log)."""
        rows: list[CacheRow] = []
        bad = 0
        for line in text.splitlines():
            row = self._row(line)
            if row is None:
                bad += bool(line.strip())
            else:
                rows.append(row)
        if bad:
            log.warning("shared completion cache: %d journal line(s) of model %s rejected", bad, self.model_id)
        return rows

    def _row(self, line: str) -> CacheRow | None:
        try:
            entry = json.loads(line)
        except ValueError:
            return None
        if not isinstance(entry, dict):
            return None
        key, req, value, scope = entry.get("key"), entry.get("request"), entry.get("value"), entry.get("scope")
        if not (isinstance(key, str) and isinstance(req, dict) and isinstance(value, dict)):
            return None
        if req.get("model_id") != self.model_id or scope not in self.scopes or request_key(req) != key:
            return None
        known = {**_VALUE_FIELDS, **_LATER_VALUE_FIELDS}
        well_formed = set(_VALUE_FIELDS) <= set(value) <= set(known)
        if not well_formed or any(not isinstance(v, known[k]) for k, v in value.items()):
            return None
        return key, json.dumps({**value, "cached": False}), self.model_id, scope

    def merge_collected(self, collected: dict[str, str]) -> int:
        """``merge`` of the journal among the files the scheduler brought back (``agentlab.jobs.cache_hooks``)."""
        return self.merge(collected.get(JOURNAL_FILE))

    def merge(self, text: str | None) -> int:
        """Merge a job's journal into the workspace's cache; returns the number of new rows."""
        if not text:
            return 0
        rows = self.accept(text)
        if not rows:
            return 0
        cache = SqliteCache(self.db, table=TABLE)
        try:
            return cache.merge(rows)
        finally:
            cache.close()


def evaluation_job_cache(spec: Any, workspace: Path) -> JobCache | None:
    """The factory the schedulers call for every job: a cache for evaluation jobs only."""
    return JobCache.for_job(spec, workspace) if getattr(spec, "kind", None) == "eval" else None


def share_with_jobs() -> None:
    """Have every scheduler seed evaluation jobs with the workspace's completion cache and merge back what
    they computed (``agentlab.jobs`` knows no evaluation: this package tells it)."""
    from agentlab.jobs.cache_hooks import register_job_cache

    register_job_cache(evaluation_job_cache)
