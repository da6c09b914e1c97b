"""Shared SQLite setup: WAL mode and a busy timeout so that many processes can share one file."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def connect(path: Path | str, timeout_s: float = 30.0) -> sqlite3.Connection:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
    conn.row_factory = sqlite3.Row
    return conn
