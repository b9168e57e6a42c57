"""The Repository on PostgreSQL, with psycopg 3 and a connection pool.

It shares its statements with SQLite (``store/sql``); what differs is here:

- Connections come from a ``psycopg_pool.ConnectionPool`` in autocommit mode; reads take
  one for a few statements, a unit of work one for its transaction.
- A unit of work takes a transaction-scoped advisory lock (``WRITE_LOCK``) first, as
  SQLite's ``BEGIN IMMEDIATE`` does: writers run one at a time in every process, so row
  keys and change-feed positions follow commit order, a conditional create's search and
  insert are atomic, and If-Match compares with the committed version. Readers never wait
  (MVCC). Appending to the audit chain takes ``AUDIT_LOCK`` only.
- Buffered rows are written with COPY, each with its patient key ``pk`` (schema.py).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Callable, Iterator

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool

from ... import errors
from .. import Stored
from ..sql.repository import _READ_SQL, SqlRepository, SqlUnit
from ..sql.rows import COLUMNS, RK_COLUMN
from .schema import AUDIT_LOCK, INDEX_FORMAT, MAX_INDEX_TEXT, WRITE_LOCK, migrate, patient_key

COPY_SQL = {table: f"COPY {table} (pk, {', '.join(cols)}) FROM STDIN" for table, cols in COLUMNS.items()}
COPY_SQL["ident"] = "COPY ident (type, id, pk, rk) FROM STDIN"
# the text columns of each index table that sit in a btree index (cut to MAX_INDEX_TEXT)
_INDEXED_TEXT = {
    "ix_str": ("norm",), "ix_tok": ("sys", "code", "cp"), "ix_oft": ("tsys", "tcode", "value"),
    "ix_ref": ("ttype", "tid", "url"), "ix_uri": ("uri",), "ix_comp": ("a_code",),
}
_TEXT_POSITIONS = {table: tuple(COLUMNS[table].index(c) for c in cols) for table, cols in _INDEXED_TEXT.items()}


@lru_cache(maxsize=4096)
def _pg_sql(sql: str) -> str:
    """A statement written with ``?`` placeholders (store/sql) in psycopg's ``%s`` style."""
    return sql.replace("%", "%%").replace("?", "%s")


_AUDIT_TYPES = ("int8", "int8", "int8", "text", "int2", "bytea", "bytea", "bytea")

# The hottest statements (GET by id, the access-facts generation read on every request of
# health personnel) run on libpq itself (psycopg.pq): prepared once per connection under
# their own names, values as text, results in binary. psycopg's cursor layer costs ~90 us of
# Python per statement, as much as the lookup (docs/decisions/0004).
_READ = (b"enjournal_read", _READ_SQL.replace("?", "$1", 1).replace("?", "$2", 1).encode())
_SETTING = (b"enjournal_setting", b"SELECT value FROM setting WHERE name = $1")
_NO_STATEMENT = b"26000"           # invalid_sql_statement_name: not prepared on this connection


def _int(value: bytes) -> int:
    return int.from_bytes(value, "big", signed=True)


def _run_pq(raw: psycopg.Connection, statement: tuple[bytes, bytes], args: list[bytes]) -> Any:
    """The result of a named statement on ``raw``, prepared first where the connection lacks it."""
    pgconn = raw.pgconn
    name, sql = statement
    result = pgconn.exec_prepared(name, args, result_format=1)
    if result.status == pq.ExecStatus.FATAL_ERROR and result.error_field(pq.DiagnosticField.SQLSTATE) == _NO_STATEMENT:
        _check(pgconn.prepare(name, sql))
        result = pgconn.exec_prepared(name, args, result_format=1)
    _check(result)
    return result


def _read_pq(raw: psycopg.Connection, type: str, id: str) -> Stored | None:
    """``_READ_SQL``: (version, updated, deleted, body, seq, pat) of the current version."""
    result = _run_pq(raw, _READ, [type.encode(), id.encode()])
    if result.ntuples == 0:
        return None
    value = result.get_value
    pat = value(0, 5)
    return Stored(type, id, _int(value(0, 0)), _int(value(0, 1)), _int(value(0, 2)) != 0, value(0, 3),
                  _int(value(0, 4)), patient=None if pat is None else pat.decode())


def _check(result: Any) -> None:
    if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
        sqlstate = (result.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
        message = (result.error_message or b"").decode("utf-8", "replace").strip()
        raise psycopg.errors.lookup(sqlstate)(message) if sqlstate else psycopg.OperationalError(message)


class PgConnection:
    """A psycopg connection seen through the small sqlite3-like surface store/sql uses:
    ``execute(sql, args)`` with ``?`` placeholders, returning a cursor. Values the database
    refuses (a NUL character, a number out of range) become ``errors.Invalid``.

    With ``prepare`` None a statement is prepared on its second use (and, being prepared,
    may get a generic plan); with False it is planned for its values every time."""
    __slots__ = ("raw", "prepare")
    arrays = True           # store/sql passes key lists as one array parameter (_among)

    def __init__(self, raw: psycopg.Connection, prepare: bool | None = None):
        self.raw = raw
        self.prepare = prepare

    def execute(self, sql: str, args: Any = None) -> psycopg.Cursor:
        try:
            if not args:
                return self.raw.execute(sql, prepare=self.prepare, binary=True)
            return self.raw.execute(_pg_sql(sql), args, prepare=self.prepare, binary=True)
        except psycopg.errors.DataError as exc:
            raise errors.Invalid(f"the database refused a value: {exc.diag.message_primary or exc}") from None

    def executemany(self, sql: str, rows: list) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(_pg_sql(sql), rows)


def _configure(conn: psycopg.Connection) -> None:
    """Statements are prepared on their second use (psycopg's default is the sixth), so a
    lookup by key gets PostgreSQL's generic plan after five runs and is not planned again
    (planning was measured at ~130 us of server CPU per GET by id). JIT compilation is off:
    it starts above a cost estimate, not a measured time, and a misestimated key-list
    statement ($everything) was measured spending 40-50 ms compiling to run for 25."""
    conn.prepare_threshold = 1
    conn.prepared_max = 512
    conn.execute("SET jit = off")


def _configure_valued(conn: psycopg.Connection) -> None:
    """Connections for searches: prepared too (parsing a search was measured at ~0.35 ms),
    but always planned for their values: a generic plan cannot see that a patient has 50
    rows and a code 50,000, and was measured 10-40x slower for patient-scoped searches."""
    _configure(conn)
    conn.execute("SET plan_cache_mode = force_custom_plan")


class _Reading:
    """``with repo._reading() as conn``: a pooled connection for a few autocommit reads."""
    __slots__ = ("pool", "raw")

    def __init__(self, pool: ConnectionPool):
        self.pool = pool

    def __enter__(self) -> PgConnection:
        self.raw = self.pool.getconn()
        return PgConnection(self.raw)

    def __exit__(self, *exc: object) -> None:
        self.pool.putconn(self.raw)


class PostgresRepository(SqlRepository):
    index_format = INDEX_FORMAT
    hints = False
    max_index_text = MAX_INDEX_TEXT
    bodies_with_keys = True         # a round trip costs more than reading 20 bodies at once
    fixed_plans = True              # one patient's page: one generic plan, no planning per search

    def __init__(self, url: str, registry: Any, clock: Callable[[], int] | None = None,
                 new_id: Callable[[], str] | None = None, pool_min: int = 2, pool_max: int = 20,
                 **_ignored: Any):
        self._setup(registry, clock, new_id)
        self.url = url
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                migrate(conn)
        except psycopg.OperationalError as exc:
            raise errors.Invalid(f"cannot connect to PostgreSQL: {str(exc).strip()}", "database") from None
        self.pool = ConnectionPool(url, min_size=pool_min, max_size=max(pool_min, pool_max),
                                   kwargs={"autocommit": True}, configure=_configure, open=True, name="enjournal")
        self.valued_pool = ConnectionPool(url, min_size=1, max_size=max(1, pool_max), kwargs={"autocommit": True},
                                          configure=_configure_valued, open=True, name="enjournal-searches")
        self.pool.wait(timeout=30)
        self.valued_pool.wait(timeout=30)
        # reads started ahead (members_ahead) run on server processes of their own
        self._ahead = ThreadPoolExecutor(max_workers=max(1, pool_max // 4), thread_name_prefix="enjournal-ahead")
        with self._reading() as conn:
            self._pids = dict(conn.execute("SELECT url, pid FROM sp").fetchall())

    def read(self, type: str, id: str) -> Stored | None:
        if "\x00" in type or "\x00" in id:
            return None         # libpq's text values end at a NUL; no id or type holds one
        raw = self.pool.getconn()
        try:
            return _read_pq(raw, type, id)
        finally:
            self.pool.putconn(raw)

    def get_setting(self, name: str) -> str | None:
        if "\x00" in name:
            return None
        raw = self.pool.getconn()
        try:
            result = _run_pq(raw, _SETTING, [name.encode()])
        finally:
            self.pool.putconn(raw)
        return result.get_value(0, 0).decode() if result.ntuples else None

    def _reading(self, valued: bool = False) -> _Reading:
        """Two pools: lookups by key keep generic plans, ``valued`` reads (searches) are
        planned for their values; a session's plan cache mode is one or the other."""
        return _Reading(self.valued_pool if valued else self.pool)

    def close(self) -> None:
        self._ahead.shutdown(wait=True)
        self.valued_pool.close()
        self.pool.close()

    @contextmanager
    def _transaction(self, lock: str = "write") -> Iterator[PgConnection]:
        with self.pool.connection() as raw:
            with raw.transaction():
                if lock != "none":
                    raw.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK if lock == "audit" else WRITE_LOCK,))
                yield PgConnection(raw)

    def _valued(self, conn: PgConnection) -> PgConnection:
        # a unit's connection keeps generic plans: its searches (conditional creates and
        # updates) are not prepared, so each is planned for its values
        return PgConnection(conn.raw, prepare=False)

    def _new_unit(self, conn: PgConnection) -> "PgUnit":
        return PgUnit(self, conn)

    # -- dialect ---------------------------------------------------------------------------

    def _write_rows(self, conn: PgConnection, table: str, rows: list, unit: SqlUnit) -> None:
        """COPY the rows in, each with its patient key; new resources also get their ident row."""
        pks = unit.pks
        rk_at = RK_COLUMN[table]
        cut = _TEXT_POSITIONS.get(table)
        try:
            with conn.raw.cursor() as cur:
                with cur.copy(COPY_SQL[table]) as copy:
                    write = copy.write_row
                    for row in rows:
                        if cut is not None:
                            row = _cut(row, cut)
                        write((pks[row[rk_at]],) + row)
                if table == "res":
                    with cur.copy(COPY_SQL["ident"]) as copy:
                        for row in rows:
                            copy.write_row((row[1], row[2], pks[row[0]], row[0]))
        except psycopg.errors.DataError as exc:
            raise errors.Invalid(f"the database refused a value: {exc.diag.message_primary or exc}") from None

    def _update_res(self, conn: PgConnection, rk: int, version: int, seq: int, updated: int, deleted: bool,
                    patient: str | None) -> None:
        if deleted:
            conn.execute("UPDATE res SET version = ?, seq = ?, updated = ?, deleted = 1 WHERE rk = ?",
                         (version, seq, updated, rk))
            return
        pk = patient_key(patient)
        moved = conn.execute("UPDATE res SET version = ?, seq = ?, updated = ?, deleted = 0, pat = ? "
                             "WHERE rk = ? AND pk = ? RETURNING rk", (version, seq, updated, patient, rk, pk))
        if moved.fetchone() is None:
            # it belongs to another patient now: move the row, since a distributed table's
            # key cannot be updated in place
            type_, id_ = conn.execute("DELETE FROM res WHERE rk = ? RETURNING type, id", (rk,)).fetchone()
            conn.execute("INSERT INTO res (pk, rk, type, id, version, seq, updated, deleted, pat) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)", (pk, rk, type_, id_, version, seq, updated, patient))
            conn.execute("UPDATE ident SET pk = ? WHERE id = ? AND type = ?", (pk, id_, type_))

    def _set_patient(self, conn: PgConnection, rk: int, patient: str | None) -> None:
        conn.execute("UPDATE res SET pat = ?, pk = ? WHERE rk = ?", (patient, patient_key(patient), rk))

    def _lock_audit(self, conn: PgConnection) -> None:
        conn.raw.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK,))

    def _insert_audit(self, conn: PgConnection, rows: list[tuple]) -> None:
        with conn.raw.cursor() as cur:
            # binary: the hashes and bodies go as they are, not as hex text (~25 us a row less)
            with cur.copy("COPY audit (pk, seq, recorded, patient, emergency, body, prev, hash) "
                          "FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(_AUDIT_TYPES)
                for row in rows:
                    copy.write_row((patient_key(row[2]),) + row)

    def _insert_grant(self, conn: PgConnection, grant: tuple) -> None:
        conn.execute("INSERT INTO access_grant (pk, patient, hpr, until, reason, created) VALUES (?, ?, ?, ?, ?, ?)",
                     (patient_key(grant[0]),) + grant)

    _AGENT_CLAUSE = ("EXISTS (SELECT 1 FROM jsonb_array_elements(convert_from(body, 'UTF8')::jsonb -> 'agent') a "
                     "WHERE a -> 'who' -> 'identifier' ->> 'value' = ? OR a -> 'who' ->> 'reference' = ? "
                     "OR a ->> 'altId' = ?)")


class PgUnit(SqlUnit):
    """A unit of work on PostgreSQL: remembers each touched resource's patient key."""

    def __init__(self, repo: PostgresRepository, conn: PgConnection):
        super().__init__(repo, conn)
        self.pks: dict[int, int] = {}

    def _placed(self, rk: int, patient: str | None, deleted: bool) -> None:
        if not deleted:
            self.pks[rk] = patient_key(patient)
        elif rk not in self.pks:
            row = self.conn.execute("SELECT pk FROM res WHERE rk = ?", (rk,)).fetchone()
            self.pks[rk] = row[0] if row else 0


def _cut(row: tuple, positions: tuple) -> tuple:
    """``row`` with its indexed text values cut to MAX_INDEX_TEXT characters."""
    for i in positions:
        value = row[i]
        if value is not None and len(value) > MAX_INDEX_TEXT:
            row = row[:i] + (value[:MAX_INDEX_TEXT],) + row[i + 1:]
    return row

