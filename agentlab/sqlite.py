"""SQLite for every agentlab store: WAL mode and a busy timeout so that many processes can share one
file, and ``SqliteStore``, the base of the stores (usage ledger, response cache, evaluation records,
jobs, lab runs): one connection opened with its schema, a lock for threads, ``close()`` and ``with``."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, ClassVar


def connect(path: Path | str, timeout_s: float = 30.0) -> sqlite3.Connection:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
    conn.row_factory = sqlite3.Row
    return conn


class SqliteStore:
    """A store over one SQLite file. Subclasses set ``schema`` (run at open, so it must be idempotent:
    ``CREATE ... IF NOT EXISTS``) and may list ``added_columns`` for files written by older versions."""

    schema: ClassVar[str] = ""
    added_columns: ClassVar[dict[str, dict[str, str]]] = {}  # table -> {column: "TYPE ..."}

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.lock = threading.RLock()  # one connection shared by the threads of a process
        self.conn = connect(self.path)
        if self.schema:
            self.conn.executescript(self.schema)
        for table, columns in self.added_columns.items():
            self._add_missing_columns(table, columns)

    def _add_missing_columns(self, table: str, columns: dict[str, str]) -> None:
        have = {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}
        for name, decl in columns.items():
            if name not in have:
                self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")

    def execute(self, sql: str, args: tuple | list = ()) -> sqlite3.Cursor:
        with self.lock:
            return self.conn.execute(sql, args)

    def one(self, sql: str, args: tuple | list = ()) -> dict[str, Any] | None:
        with self.lock:
            row = self.conn.execute(sql, args).fetchone()
        return dict(row) if row is not None else None

    def all(self, sql: str, args: tuple | list = ()) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self.conn.execute(sql, args).fetchall()]

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
