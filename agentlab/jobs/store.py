"""SQLite persistence of jobs and of the schedulers that run them (WAL; many processes may share it)."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterable
from typing import Any

from agentlab.jobs.spec import TERMINAL, Job, JobSpec
from agentlab.procs import pid_alive
from agentlab.sqlite import SqliteStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    kind TEXT NOT NULL, name TEXT, lab TEXT NOT NULL, run_id TEXT,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    gpus TEXT NOT NULL DEFAULT '[]',
    submitted_at REAL NOT NULL, started_at REAL, finished_at REAL,
    exit_code INTEGER, killed_by TEXT, error TEXT, result TEXT,
    workdir TEXT, log_dir TEXT, scheduler_id TEXT,
    attempt INTEGER NOT NULL DEFAULT 1, retry_of TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    wall_s REAL, cpu_s REAL, peak_rss_mb REAL,
    submitted_by TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
CREATE INDEX IF NOT EXISTS jobs_lab ON jobs(lab, seq);
CREATE TABLE IF NOT EXISTS schedulers (
    id TEXT PRIMARY KEY, pid INTEGER, host TEXT, started_at REAL, heartbeat_at REAL, gpus TEXT
);
"""

_COLS = ("exit_code", "killed_by", "error", "result", "workdir", "log_dir", "wall_s", "cpu_s", "peak_rss_mb",
         "started_at", "finished_at", "state", "gpus", "scheduler_id")


def new_job_id() -> str:
    return "job-" + uuid.uuid4().hex[:12]


class JobStore(SqliteStore):
    schema = SCHEMA
    added_columns = {"jobs": {"submitted_by": "TEXT"}}  # stores from before jobs named their submitter

    # --- jobs ---------------------------------------------------------------------------------
    def add(self, spec: JobSpec, *, retry_of: str | None = None, attempt: int = 1,
            submitted_by: str | None = None, job_id: str | None = None) -> str:
        """Queue a job; `submitted_by` is the scheduler that will run it (None: any scheduler may); `job_id`
        one chosen beforehand with ``new_job_id`` (a warm sandbox started for it), else a new one."""
        job_id = job_id or new_job_id()
        self.conn.execute(
            "INSERT INTO jobs (id, kind, name, lab, run_id, spec, state, submitted_at, retry_of, attempt, submitted_by)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (job_id, spec.kind, spec.name, spec.lab, spec.run_id, spec.public_json(), "queued", time.time(),
             retry_of, attempt, submitted_by),
        )
        return job_id

    def _job(self, row: Any) -> Job:
        d = dict(row)
        d["spec"] = JobSpec.model_validate_json(d.pop("spec"))
        d["gpus"] = json.loads(d["gpus"] or "[]")
        d["result"] = json.loads(d["result"]) if d["result"] is not None else None
        d["cancel_requested"] = bool(d["cancel_requested"])
        for k in ("kind", "name", "lab", "run_id"):
            d.pop(k)
        return Job.model_validate(d)

    def get(self, job_id: str) -> Job | None:
        row = self.conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            # unique prefix, as a convenience for people typing ids
            rows = self.conn.execute("SELECT * FROM jobs WHERE id LIKE ? LIMIT 2", (job_id + "%",)).fetchall()
            row = rows[0] if len(rows) == 1 else None
        return self._job(row) if row is not None else None

    def list(self, state: str | Iterable[str] | None = None, lab: str | None = None, run_id: str | None = None,
             limit: int | None = None, newest_first: bool = False) -> list[Job]:
        q, args = "SELECT * FROM jobs WHERE 1=1", []
        if state:
            states = [state] if isinstance(state, str) else list(state)
            q += f" AND state IN ({','.join('?' * len(states))})"
            args += states
        if lab:
            q += " AND lab = ?"
            args.append(lab)
        if run_id:
            q += " AND run_id = ?"
            args.append(run_id)
        q += " ORDER BY seq" + (" DESC" if newest_first else "")
        if limit:
            q += f" LIMIT {int(limit)}"
        return [self._job(r) for r in self.conn.execute(q, args).fetchall()]

    def claim(self, job_id: str, scheduler_id: str, gpus: list[int], workdir: str, log_dir: str) -> bool:
        """queued -> running, atomically (False if another scheduler or a cancel got there first)."""
        cur = self.conn.execute(
            "UPDATE jobs SET state='running', scheduler_id=?, gpus=?, started_at=?, workdir=?, log_dir=?"
            " WHERE id=? AND state='queued' AND cancel_requested=0",
            (scheduler_id, json.dumps(gpus), time.time(), workdir, log_dir, job_id),
        )
        return cur.rowcount == 1

    def update(self, job_id: str, **fields: Any) -> None:
        bad = set(fields) - set(_COLS)
        if bad:
            raise ValueError(f"unknown job fields {bad}")
        for k in ("result", "gpus"):
            if k in fields and fields[k] is not None:
                fields[k] = json.dumps(fields[k])
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.conn.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*fields.values(), job_id))

    def finish(self, job_id: str, state: str, **fields: Any) -> None:
        assert state in TERMINAL
        self.update(job_id, state=state, finished_at=time.time(), **fields)

    def request_cancel(self, job_id: str) -> str | None:
        """Cancel a queued job now; flag a running one for its scheduler. Returns the new state."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            row = self.conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                self.conn.execute("ROLLBACK")
                return None
            if row["state"] == "queued":
                self.conn.execute("UPDATE jobs SET state='cancelled', finished_at=?, cancel_requested=1,"
                                " error='cancelled before it started' WHERE id=?", (time.time(), job_id))
            elif row["state"] == "running":
                self.conn.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return self.conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()["state"]

    def owned(self, *, lab: str | None = None, run_id: str | None = None, submitted_by: str | None = None,
              states: tuple[str, ...] = ("queued", "running")) -> list[str]:
        """Ids of the jobs of a lab, of a run, or submitted by a scheduler (every filter given must hold)."""
        q = f"SELECT id FROM jobs WHERE state IN ({','.join('?' * len(states))})"
        args: list[Any] = list(states)
        for col, value in (("lab", lab), ("run_id", run_id), ("submitted_by", submitted_by)):
            if value is not None:
                q += f" AND {col} = ?"
                args.append(value)
        if len(args) == len(states):
            raise ValueError("owned() needs a lab, a run or a scheduler")
        return [r["id"] for r in self.conn.execute(q + " ORDER BY seq", args).fetchall()]

    def cancel_requested(self, scheduler_id: str) -> list[str]:
        rows = self.conn.execute("SELECT id FROM jobs WHERE state='running' AND cancel_requested=1 AND scheduler_id=?",
                               (scheduler_id,)).fetchall()
        return [r["id"] for r in rows]

    # --- schedulers -----------------------------------------------------------------------------
    def register_scheduler(self, gpus: list[int]) -> str:
        sid = f"sched-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        now = time.time()
        self.conn.execute("INSERT INTO schedulers (id, pid, host, started_at, heartbeat_at, gpus) VALUES (?,?,?,?,?,?)",
                        (sid, os.getpid(), socket.gethostname(), now, now, json.dumps(gpus)))
        return sid

    def heartbeat(self, scheduler_id: str) -> None:
        self.conn.execute("UPDATE schedulers SET heartbeat_at=? WHERE id=?", (time.time(), scheduler_id))

    def unregister_scheduler(self, scheduler_id: str) -> None:
        self.conn.execute("DELETE FROM schedulers WHERE id=?", (scheduler_id,))

    def live_schedulers(self, stale_after_s: float) -> set[str]:
        now, host, alive = time.time(), socket.gethostname(), set()
        for r in self.conn.execute("SELECT * FROM schedulers").fetchall():
            if r["host"] == host and not pid_alive(r["pid"]):
                continue
            if now - (r["heartbeat_at"] or 0) > stale_after_s:
                continue
            alive.add(r["id"])
        return alive

    def recover_orphans(self, stale_after_s: float, exclude: str | None = None) -> list[str]:
        """Running jobs whose scheduler is gone -> failed (they can be retried). Returns their ids."""
        alive = self.live_schedulers(stale_after_s)
        if exclude:
            alive.add(exclude)
        failed = []
        for job in self.list(state="running"):
            if job.scheduler_id not in alive:
                self.conn.execute(
                    "UPDATE jobs SET state='failed', finished_at=?, error=? WHERE id=? AND state='running'",
                    (time.time(), f"scheduler {job.scheduler_id} stopped while the job was running "
                     "(recovered after a restart); `agentlab jobs retry` runs it again", job.id),
                )
                failed.append(job.id)
        dead = self.conn.execute("SELECT id FROM schedulers").fetchall()
        for r in dead:
            if r["id"] not in alive:
                self.conn.execute("DELETE FROM schedulers WHERE id=?", (r["id"],))
        return failed
