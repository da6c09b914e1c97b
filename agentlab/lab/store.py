"""Lab-side records of runs and of the experiment jobs each run ran (SQLite, beside the ledger).

``lab_runs``: one row per run (goal, phase, status, paper, wall time used so far across sessions) for ``agentlab lab list/status``.
``lab_experiments``: one row per experiment key of a run (``dev-2-0``, ``report-best``, ...) with its
job id, status and normalized record. A resumed run looks a key up before running it, so a job that
finished before a crash is never run again, even if the crash came before the checkpoint was written.
"""

from __future__ import annotations

import json
import time
from typing import Any

from agentlab.sqlite import SqliteStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lab_runs (
    run_id TEXT PRIMARY KEY,
    goal TEXT NOT NULL,
    goal_id TEXT,
    lab TEXT,
    status TEXT NOT NULL,
    phase TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    pid INTEGER,
    best_accuracy REAL,
    best_technique TEXT,
    paper_id TEXT,
    paper_url TEXT,
    out_dir TEXT,
    config TEXT,
    note TEXT,
    wall_s REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS lab_experiments (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    split TEXT NOT NULL,
    job_id TEXT,
    status TEXT NOT NULL,
    spec_hash TEXT,
    spec TEXT,
    record TEXT,
    error TEXT,
    executions INTEGER NOT NULL DEFAULT 0,
    started REAL,
    finished REAL,
    PRIMARY KEY (run_id, key)
);
"""

RUN_FIELDS = ("goal_id", "lab", "status", "phase", "pid", "best_accuracy", "best_technique", "paper_id",
              "paper_url", "out_dir", "config", "note", "wall_s")


class LabStore(SqliteStore):
    schema = _SCHEMA
    added_columns = {"lab_runs": {"wall_s": "REAL NOT NULL DEFAULT 0"}}  # stores from before wall time was kept

    # -- runs -------------------------------------------------------------------------------
    def create_run(self, run_id: str, goal: str, **fields: Any) -> None:
        now = time.time()
        self.execute("INSERT OR IGNORE INTO lab_runs (run_id, goal, status, created, updated) VALUES (?,?,?,?,?)",
                     (run_id, goal, "running", now, now))
        self.update_run(run_id, **fields)

    def update_run(self, run_id: str, **fields: Any) -> None:
        fields = {k: v for k, v in fields.items() if k in RUN_FIELDS}
        if not fields:
            return
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.execute(f"UPDATE lab_runs SET {sets}, updated = ? WHERE run_id = ?",
                     (*fields.values(), time.time(), run_id))

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM lab_runs WHERE run_id = ?", (run_id,))

    def list_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.all("SELECT * FROM lab_runs ORDER BY created DESC LIMIT ?", (limit,))

    def latest_run(self) -> dict[str, Any] | None:
        runs = self.list_runs(1)
        return runs[0] if runs else None

    # -- experiments ------------------------------------------------------------------------
    def experiment(self, run_id: str, key: str) -> dict[str, Any] | None:
        row = self.one("SELECT * FROM lab_experiments WHERE run_id = ? AND key = ?", (run_id, key))
        return _decode(row) if row else None

    def start_experiment(self, run_id: str, key: str, split: str, spec_hash: str | None,
                         spec: dict[str, Any] | None = None, meta: dict[str, Any] | None = None) -> None:
        self.execute(
            "INSERT INTO lab_experiments (run_id, key, split, status, spec_hash, spec, executions, started)"
            " VALUES (?,?,?,?,?,?,1,?) ON CONFLICT(run_id, key) DO UPDATE SET status = 'running',"
            " executions = executions + 1, started = excluded.started, spec_hash = excluded.spec_hash,"
            " spec = excluded.spec",
            (run_id, key, split, "running", spec_hash, json.dumps({"spec": spec, "meta": meta or {}}), time.time()))

    def set_experiment_job(self, run_id: str, key: str, job_id: str) -> None:
        """The scheduler's job id of a key's current attempt (recorded at submit, before it runs)."""
        self.execute("UPDATE lab_experiments SET job_id = ? WHERE run_id = ? AND key = ?", (job_id, run_id, key))

    def finish_experiment(self, run_id: str, key: str, status: str, job_id: str | None,
                          record: dict[str, Any] | None, error: str | None, meta: dict[str, Any] | None = None) -> None:
        """A key's outcome; ``meta`` is merged into what ``start_experiment`` stored (e.g. a training summary)."""
        self.execute(
            "UPDATE lab_experiments SET status = ?, job_id = ?, record = ?, error = ?, finished = ?"
            " WHERE run_id = ? AND key = ?",
            (status, job_id, json.dumps(record) if record else None, error, time.time(), run_id, key))
        if meta:
            row = self.experiment(run_id, key) or {}
            blob = {"spec": row.get("spec"), "meta": {**(row.get("meta") or {}), **meta}}
            self.execute("UPDATE lab_experiments SET spec = ? WHERE run_id = ? AND key = ?",
                         (json.dumps(blob), run_id, key))

    def experiments(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.all("SELECT * FROM lab_experiments WHERE run_id = ? ORDER BY started", (run_id,))
        return [_decode(r) for r in rows]

    def jobs_used(self, run_id: str) -> int:
        """Job executions counted against budgets.max_jobs (a resumed run keeps counting)."""
        row = self.one("SELECT COALESCE(SUM(executions), 0) AS n FROM lab_experiments WHERE run_id = ?", (run_id,))
        return int(row["n"]) if row else 0


def _decode(d: dict[str, Any]) -> dict[str, Any]:
    d["record"] = json.loads(d["record"]) if d.get("record") else None
    blob = json.loads(d["spec"]) if d.get("spec") else {}
    d["spec"], d["meta"] = blob.get("spec"), blob.get("meta") or {}
    return d
