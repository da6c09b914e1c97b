"""A persistent key-value cache in SQLite, keyed by a hash of a JSON-able request.

Used by the LLM gateway (response cache) and the evaluation harness (completion cache), so that
reruns and shared baselines cost nothing.

A row may name the model identity it belongs to (``model_id``: the weights' hash, a checkpoint hash, an
endpoint) and a ``scope`` (the harness uses the benchmark problem): evaluation jobs in the sandbox start
from the rows of their model and problems (``rows``) and hand back what they computed (``merge``), so
one workspace's labs share one completion cache without the sandbox seeing the workspace.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from agentlab.sqlite import SqliteStore

CacheRow = tuple[str, str, str | None, str | None]  # key, value (JSON text), model_id, scope


def request_key(payload: Any) -> str:
    """Stable hash of a request (dict key order and whitespace do not matter)."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class SqliteCache(SqliteStore):
    def __init__(self, path: Path | str, table: str = "cache"):
        if not table.isidentifier():
            raise ValueError(f"bad table name {table!r}")
        super().__init__(path)
        self.table = table
        with self.lock:
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
                              " created REAL NOT NULL, model_id TEXT, scope TEXT)")
            try:
                self._add_missing_columns(table, {"model_id": "TEXT", "scope": "TEXT"})  # caches from before them
            except sqlite3.OperationalError as exc:  # another process added them just now
                if "duplicate column" not in str(exc):
                    raise
            self.conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_scope ON {table}(model_id, scope)")

    def get(self, key: str) -> Any | None:
        row = self.one(f"SELECT value FROM {self.table} WHERE key = ?", (key,))
        return None if row is None else json.loads(row["value"])

    def put(self, key: str, value: Any, *, model_id: str | None = None, scope: str | None = None,
            request: Any = None) -> None:
        """Store ``value`` under ``key`` (``request``: the payload hashed into the key; journaling caches keep it)."""
        self.execute(f"INSERT OR REPLACE INTO {self.table} (key, value, created, model_id, scope) VALUES (?,?,?,?,?)",
                     (key, json.dumps(value), time.time(), model_id, scope))

    def rows(self, model_id: str, scopes: Iterable[str]) -> list[CacheRow]:
        """The rows of one model identity within ``scopes`` (for seeding an evaluation job)."""
        scopes = list(dict.fromkeys(scopes))
        out: list[CacheRow] = []
        for i in range(0, len(scopes), 500):
            chunk = scopes[i:i + 500]
            out += [(r["key"], r["value"], r["model_id"], r["scope"]) for r in self.all(
                f"SELECT key, value, model_id, scope FROM {self.table} WHERE model_id = ?"
                f" AND scope IN ({','.join('?' * len(chunk))})", (model_id, *chunk))]
        return out

    def merge(self, rows: Sequence[CacheRow]) -> int:
        """Add rows another process computed (existing keys are kept); returns how many were new.
        One transaction: safe with concurrent writers (WAL, busy timeout)."""
        if not rows:
            return 0
        now = time.time()
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                before = self.conn.total_changes
                self.conn.executemany(
                    f"INSERT OR IGNORE INTO {self.table} (key, value, created, model_id, scope) VALUES (?,?,?,?,?)",
                    [(k, v, now, m, s) for k, v, m, s in rows])
                added = self.conn.total_changes - before
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return added

    def __len__(self) -> int:
        return (self.one(f"SELECT COUNT(*) AS n FROM {self.table}") or {"n": 0})["n"]
