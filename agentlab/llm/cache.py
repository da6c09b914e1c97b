"""A persistent key-value cache in SQLite, keyed by a hash of a JSON-able request.

Used by the LLM gateway (response cache) and the evaluation harness (completion cache), so that
reruns and shared baselines cost nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from agentlab.sqlite import SqliteStore


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
        self.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)"
        )

    def get(self, key: str) -> Any | None:
        row = self.one(f"SELECT value FROM {self.table} WHERE key = ?", (key,))
        return None if row is None else json.loads(row["value"])

    def put(self, key: str, value: Any) -> None:
        self.execute(f"INSERT OR REPLACE INTO {self.table} (key, value, created) VALUES (?, ?, ?)",
                     (key, json.dumps(value), time.time()))

    def __len__(self) -> int:
        return (self.one(f"SELECT COUNT(*) AS n FROM {self.table}") or {"n": 0})["n"]
