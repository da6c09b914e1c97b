"""A persistent key-value cache in SQLite, keyed by a hash of a JSON-able request.

Used by the LLM gateway (response cache) and the evaluation harness (completion cache), so that
reruns and shared baselines cost nothing.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

from agentlab.sqlite_util import connect


def request_key(payload: Any) -> str:
    """Stable hash of a request (dict key order and whitespace do not matter)."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class SqliteCache:
    def __init__(self, path: Path | str, table: str = "cache"):
        if not table.isidentifier():
            raise ValueError(f"bad table name {table!r}")
        self.table = table
        self._lock = threading.Lock()
        self._conn = connect(path)
        self._conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)"
        )

    def get(self, key: str) -> Any | None:
        with self._lock:
            row = self._conn.execute(f"SELECT value FROM {self.table} WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._conn.execute(
                f"INSERT OR REPLACE INTO {self.table} (key, value, created) VALUES (?, ?, ?)",
                (key, json.dumps(value), time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0]

    def close(self) -> None:
        self._conn.close()
