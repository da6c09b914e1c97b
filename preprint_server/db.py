"""Engine and sessions: SQLite in WAL mode with a busy timeout; writes take the lock up front
(BEGIN IMMEDIATE) so concurrent writers queue instead of failing on a lock upgrade."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from preprint_server.models import Base

# Keyword search moved from an FTS5 table to tantivy (keyword.py); drop the old table where it exists.
DROP_OLD_FTS = "DROP TABLE IF EXISTS paper_fts"


def make_engine(db_path: Path, timeout_s: float = 30.0) -> Engine:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        f"sqlite:///{db_path}", connect_args={"timeout": timeout_s, "check_same_thread": False}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN")

    return engine


def init_db(engine: Engine) -> None:
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text(DROP_OLD_FTS))
        add_missing_columns(conn)


def add_missing_columns(conn) -> None:
    """Columns added to a table after a server's database was created (``create_all`` adds tables, not
    columns): ALTER TABLE ADD COLUMN with the column's server default, so old rows stay readable."""
    for table in Base.metadata.sorted_tables:
        have = {row[1] for row in conn.exec_driver_sql(f"PRAGMA table_info({table.name})")}
        for col in table.columns:
            if col.name in have:
                continue
            ddl = f"ALTER TABLE {table.name} ADD COLUMN {col.name} {col.type.compile(conn.dialect)}"
            if col.server_default is not None:
                ddl += f" DEFAULT '{col.server_default.arg}'"
            conn.exec_driver_sql(ddl)


class Database:
    """Owns the engine; `read()` and `write()` give sessions that commit or roll back as a unit;
    `read_sql()` a plain sqlite3 connection in a read transaction (searches)."""

    def __init__(self, db_path: Path):
        self.engine = make_engine(db_path)
        init_db(self.engine)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.engine.execution_options(immediate=True), expire_on_commit=False)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as s:
            yield s

    @contextmanager
    def read_sql(self) -> Iterator[sqlite3.Connection]:
        """The pooled connection itself (sqlite3) in a read transaction: one snapshot for a few plain
        SQL queries. For searches, whose three small queries cost less than a Session around them."""
        pooled = self.engine.raw_connection()
        try:
            conn = pooled.driver_connection
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("ROLLBACK")
        finally:
            pooled.close()  # back to the pool

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._write() as s, s.begin():
            yield s

    def close(self) -> None:
        self.engine.dispose()
