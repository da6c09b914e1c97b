"""The usage ledger: one row per agent LLM call, persisted to SQLite.

Every gateway call records model, role, tokens, cost, latency and the lab/run it belongs to.
Budgets are enforced from these rows, so a resumed run keeps counting what it already spent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from agentlab.sqlite import SqliteStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS llm_calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    model TEXT NOT NULL,
    role TEXT,
    lab TEXT,
    run_id TEXT,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    latency_s REAL NOT NULL DEFAULT 0,
    cached INTEGER NOT NULL DEFAULT 0,
    ok INTEGER NOT NULL DEFAULT 1,
    error TEXT
);
CREATE INDEX IF NOT EXISTS llm_calls_run ON llm_calls(run_id);
"""


@dataclass
class CallRecord:
    model: str
    role: str | None = None
    lab: str | None = None
    run_id: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    cached: bool = False
    ok: bool = True
    error: str | None = None


@dataclass
class Totals:
    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out


class UsageLedger(SqliteStore):
    schema = _SCHEMA

    def record(self, rec: CallRecord) -> None:
        self.execute(
            "INSERT INTO llm_calls (ts, model, role, lab, run_id, tokens_in, tokens_out, cost_usd,"
            " latency_s, cached, ok, error) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (time.time(), rec.model, rec.role, rec.lab, rec.run_id, rec.tokens_in, rec.tokens_out,
             rec.cost_usd, rec.latency_s, int(rec.cached), int(rec.ok), rec.error),
        )

    def totals(self, run_id: str | None = None) -> Totals:
        """Spend of one run (or of everything), cached answers excluded: they cost nothing."""
        sql = "SELECT COUNT(*) AS calls, COALESCE(SUM(tokens_in),0) AS tin, COALESCE(SUM(tokens_out),0) AS tout," \
              " COALESCE(SUM(cost_usd),0) AS usd FROM llm_calls WHERE cached = 0"
        args: tuple = ()
        if run_id is not None:
            sql += " AND run_id = ?"
            args = (run_id,)
        row = self.one(sql, args) or {}
        return Totals(calls=row["calls"], tokens_in=row["tin"], tokens_out=row["tout"], cost_usd=row["usd"])

    def summary(self, group_by: str = "model", run_id: str | None = None, since: float | None = None) -> list[dict]:
        """Rows grouped by model, role, lab or run_id, with calls, tokens, cost and latency."""
        if group_by not in {"model", "role", "lab", "run_id"}:
            raise ValueError(f"cannot group by {group_by!r}: use model, role, lab or run_id")
        where, args = ["1=1"], []
        if run_id is not None:
            where.append("run_id = ?")
            args.append(run_id)
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        sql = (
            f"SELECT COALESCE({group_by}, '-') AS key, COUNT(*) AS calls, SUM(cached) AS cached,"
            " SUM(1 - ok) AS errors, SUM(tokens_in) AS tokens_in, SUM(tokens_out) AS tokens_out,"
            " SUM(cost_usd) AS cost_usd, AVG(latency_s) AS mean_latency_s"
            f" FROM llm_calls WHERE {' AND '.join(where)} GROUP BY key ORDER BY cost_usd DESC, calls DESC"
        )
        return self.all(sql, args)
