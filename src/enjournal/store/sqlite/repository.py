"""The Repository on an embedded SQLite file.

Concurrency: one writer connection per process behind a lock, and ``BEGIN IMMEDIATE`` so a
unit of work holds the database's write lock from its first read: a conditional create's
search and insert are atomic even across worker processes. Readers use a connection per
thread in WAL mode and never block the writer.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from ... import errors
from ..sql.repository import SqlRepository, SqlUnit
from ..sql.rows import COLUMNS
from .schema import INDEX_FORMAT, migrate

INSERT_SQL = {table: f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})"
              for table, cols in COLUMNS.items()}


def path_of(url: str) -> str:
    """The file path of a ``sqlite:///PATH`` URL."""
    if not url.startswith("sqlite:"):
        raise errors.Invalid(f"not a SQLite URL: {url}")
    path = url[len("sqlite:"):]
    if path.startswith("///"):
        path = path[3:]
    elif path.startswith("//"):
        path = path[2:]
    return path or ":memory:"


class _ThreadConnection:
    """``with repo._reading() as conn``: the calling thread's own reader connection."""
    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        return None


class SqliteRepository(SqlRepository):
    index_format = INDEX_FORMAT     # how index rows are keyed; a change reindexes on start
    hints = True

    def __init__(self, url: str, registry: Any, clock: Callable[[], int] | None = None,
                 new_id: Callable[[], str] | None = None, synchronous: str = "FULL"):
        self.path = path_of(url)
        if self.path == ":memory:":
            raise errors.Invalid("an in-memory SQLite database cannot be shared; give a file path")
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        self._setup(registry, clock, new_id)
        self.synchronous = synchronous
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._writer = self._connect()
        migrate(self._writer)
        self._pids = dict(self._writer.execute("SELECT url, pid FROM sp").fetchall())

    # -- connections -------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               cached_statements=1024, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA mmap_size=1073741824")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _reading(self, valued: bool = False) -> _ThreadConnection:
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._local.reader = _ThreadConnection(self._connect())
        return reader

    def close(self) -> None:
        with self._write_lock:
            self._writer.close()
        reader = getattr(self._local, "reader", None)
        if reader is not None:
            reader.conn.close()
            self._local.reader = None

    @contextmanager
    def _transaction(self, lock: str = "write") -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _write_rows(self, conn: sqlite3.Connection, table: str, rows: list, unit: SqlUnit) -> None:
        conn.executemany(INSERT_SQL[table], rows)
