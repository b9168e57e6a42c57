"""The Repository and its unit of work over a SQL database, shared by the SQLite and
PostgreSQL backends (``store/sqlite``, ``store/postgres``).

A backend supplies connections (``_reading()`` for reads, ``unit()`` for a write transaction
that holds the database's write lock), how buffered rows are written (``_write_rows``) and
the few statements its dialect spells differently. Every statement here is written with
``?`` placeholders in SQL both engines accept; the PostgreSQL connection translates them.
"""
from __future__ import annotations

import logging
import re
import threading
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterator

from ... import errors
from ...fhir import dates, jsonio
from ...fhir import query as q
from .. import (AUDIT_HEAD, GENESIS, AuditRow, FeedEntry, NewAuditRow, Page, Stored, audit_hash,
                 iter_chunks, parse_head)
from .rows import INDEX_TABLES, add_rows, param_key, patient_of
from .search import SqlBuilder

log = logging.getLogger("enjournal.store")

_COLUMN_PARAMS = frozenset(("_id", "_lastUpdated"))   # searched on res.id / res.updated directly
# an escaped U+0000 in JSON text: "\u0000" not itself preceded by an escaping backslash
_NUL_IN_JSON = re.compile(rb'(?<!\\)(?:\\\\)*\\u0000')
_READ_SQL = ("SELECT r.version, r.updated, r.deleted, h.body, r.seq, r.pat FROM res r JOIN hist h ON h.seq = r.seq "
             "WHERE r.type = ? AND r.id = ?")


class SqlRepository:
    """Reads, the audit log and grants over a DB-API-like connection. Subclasses set
    ``index_format`` and ``hints`` and implement ``_reading``, ``unit``, ``append_audit``
    and ``close``."""
    index_format = 0
    hints = True            # SqlBuilder: planner hints for SQLite
    max_index_text: int | None = None   # index text cut to this many characters (PostgreSQL)
    bodies_with_keys = False            # a search page reads its resources in the same statement
    fixed_plans = False                 # one patient's page runs on a connection keeping generic plans

    def _setup(self, registry: Any, clock: Callable[[], int] | None, new_id: Callable[[], str] | None) -> None:
        import time
        import uuid
        self.registry = registry
        self.clock = clock or (lambda: time.time_ns() // 1_000_000)
        self.new_id = new_id or (lambda: str(uuid.uuid4()))
        self._pids: dict[str, int] = {}
        self._last_updated = 0
        self._pages = threading.local()
        self._ahead: Any = None          # an executor where reads may overlap (members_ahead)

    def _reading(self, valued: bool = False) -> Any:
        """A context manager yielding a connection for a few reads (autocommit). ``valued``:
        for statements whose best plan depends on their values (see ``_valued``)."""
        raise NotImplementedError

    def pid_of(self, resource_type: str | None, param: Any) -> int | None:
        """The id under which ``param``'s index rows for ``resource_type`` are stored."""
        key = param_key(resource_type, param)
        pid = self._pids.get(key)
        if pid is None:
            with self._reading() as conn:
                row = conn.execute("SELECT pid FROM sp WHERE url = ?", (key,)).fetchone()
            if row:
                pid = self._pids[key] = row[0]
        return pid

    # -- reads -------------------------------------------------------------------------

    def read(self, type: str, id: str) -> Stored | None:
        with self._reading() as conn:
            return _read(conn, type, id)

    def vread(self, type: str, id: str, version: int) -> Stored | None:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT h.version, h.updated, h.body IS NULL, h.body, h.seq, h.method, r.pat FROM res r "
                "JOIN hist h ON h.rk = r.rk AND h.version = ? WHERE r.type = ? AND r.id = ?",
                (version, type, id)).fetchone()
            if row is None:
                return None
            return Stored(type, id, row[0], row[1], bool(row[2]), row[3], row[4], row[5], row[6])

    def search(self, query: q.SearchQuery) -> Page:
        with self._reading(valued=True) as conn:
            page = _search(conn, self.pid_of, self.clock(), query, self.hints, self.max_index_text,
                           self.bodies_with_keys, self._reading if self.fixed_plans else None)
        if page.loaded is not None:
            self._pages.last = page
        return page

    def load(self, keys: list, ahead: Any = None) -> list[Stored]:
        """The current resources of ``keys``, in that order; ``ahead``: what ``members_ahead``
        started (only what it has not read is read here)."""
        # the page this thread just searched, when its resources came with it (a round trip less)
        last = getattr(self._pages, "last", None)
        if last is not None:
            self._pages.last = None
            if last.keys == keys and ahead is None:
                return last.loaded
        found: dict = {}
        if ahead is not None:
            try:
                found = dict(ahead.result())
            except Exception as exc:     # e.g. no connection in time: read it all here instead
                log.warning("reading ahead failed (%s): the page is read in full", type(exc).__name__)
        missing = [k for k in keys if k not in found]
        if missing:
            with self._reading() as conn:
                found.update(_load_keyed(conn, missing))
        return [found[k] for k in keys if k in found]

    def members_ahead(self, type: str, id: str, params: list, count: int) -> Any:
        """Start reading ``type/id`` and the first ``count - 1`` members of its compartment
        (``compartment``'s order) on another connection, while the caller works out the whole
        compartment; a future for ``load``, or None where reads do not overlap (SQLite: one
        process, its reads share the interpreter)."""
        if self._ahead is None or count <= 0:
            return None
        return self._ahead.submit(self._members_bodies, type, id, params, count)

    def _members_bodies(self, type: str, id: str, params: list, count: int) -> dict[int, Stored]:
        referring = _referring(type, id, params)
        if referring is None:
            return {}
        with self._reading(valued=True) as conn:
            return _load_keyed(conn, None, (
                "SELECT rk FROM res WHERE type = ? AND id = ? UNION ALL "
                f"(SELECT DISTINCT x.rk FROM ({referring[0]}) AS x ORDER BY x.rk LIMIT ?)",
                [type, id, *referring[1], count - 1]))

    def includes(self, keys: list, includes: list) -> list:
        """Keys of the resources ``_include``/``_revinclude`` add to the page ``keys``."""
        with self._reading(valued=True) as conn:
            return _includes(conn, self.pid_of, keys, includes)

    def patients_of(self, keys: list) -> dict[int, tuple[str, str | None]]:
        """key -> (type, patient) for the current resources among ``keys``."""
        with self._reading() as conn:
            out: dict[int, tuple[str, str | None]] = {}
            for chunk in _chunks(conn, keys, 500):
                among, args = _among(conn, "rk", chunk)
                rows = conn.execute(f"SELECT rk, type, pat FROM res WHERE deleted = 0 AND {among}", args)
                out.update((rk, (t, p)) for rk, t, p in rows)
            return out

    def key_of(self, type: str, id: str) -> int | None:
        with self._reading() as conn:
            row = conn.execute("SELECT rk FROM res WHERE type = ? AND id = ?", (type, id)).fetchone()
            return row[0] if row else None

    def compartment(self, type: str, id: str, params: list) -> tuple[list[int], list[int]]:
        """The keys of the current resources in the compartment of ``type/id``: those that refer
        to it through one of ``params`` ((resource type, search parameter) pairs, as the
        CompartmentDefinition lists them; none is defined on Resource, so each one's index rows
        tell the type), in key order; and, in key order, the keys of the current resources that
        those or ``type/id`` itself refer to and that are neither. One statement: the members'
        references never leave the database."""
        referring = _referring(type, id, params)
        if referring is None:
            return [], []
        with self._reading(valued=True) as conn:      # a patient with ten resources or ten thousand
            rows = conn.execute(
                f"WITH m AS MATERIALIZED (SELECT r.rk, r.type, r.id FROM res r WHERE r.rk IN ({referring[0]}) "
                "AND r.deleted = 0), "
                "t AS (SELECT o.ttype, o.tid FROM ix_ref o WHERE o.rk IN "
                "(SELECT rk FROM m UNION ALL SELECT rk FROM res WHERE type = ? AND id = ?) AND o.tid IS NOT NULL "
                # the references to type/id itself (a third of the rows) go before the set difference
                "AND (o.tid <> ? OR o.ttype <> ?) EXCEPT SELECT type, id FROM m) "
                "SELECT 0, rk FROM m UNION ALL "
                # a probe per target: estimates of t run to thousands when it holds tens
                "SELECT 1, k FROM (SELECT (SELECT r.rk FROM res r WHERE r.type = t.ttype AND r.id = t.tid "
                "AND r.deleted = 0) AS k FROM t) AS f WHERE k IS NOT NULL "
                "ORDER BY 1, 2", [*referring[1], type, id, id, type]).fetchall()
        members = [rk for side, rk in rows if side == 0]
        return members, [rk for side, rk in rows[len(members):]]

    def filter_keys(self, keys: list, since: int | None, types: tuple | None) -> list:
        """The keys whose resources changed at or after ``since`` and are of one of ``types``."""
        with self._reading() as conn:
            keep: set = set()
            for chunk in _chunks(conn, keys, 900):
                among, args = _among(conn, "rk", chunk)
                sql = f"SELECT rk FROM res WHERE {among}"
                if since is not None:
                    sql += " AND updated >= ?"
                    args.append(since)
                if types is not None:
                    sql += f" AND type IN ({','.join('?' * len(types))})"
                    args.extend(types)
                keep.update(row[0] for row in conn.execute(sql, args))
            return [k for k in keys if k in keep]

    def history(self, type: str | None, id: str | None, since: int | None, at: tuple[int, int] | None,
                count: int, offset: int) -> tuple[list[Stored], int]:
        with self._reading(valued=True) as conn:      # a common type or a rare one
            conds, args = [], []
            if type is not None:
                conds.append("r.type = ?")
                args.append(type)
            if id is not None:
                conds.append("r.id = ?")
                args.append(id)
            if since is not None:
                conds.append("h.updated >= ?")
                args.append(since)
            if at is not None:
                conds.append("h.updated <= ? AND NOT EXISTS (SELECT 1 FROM hist h2 WHERE h2.rk = h.rk "
                             "AND h2.version > h.version AND h2.updated <= ?)")
                args.extend([at[1], at[0]])
            where = (" WHERE " + " AND ".join(conds)) if conds else ""
            total = conn.execute(f"SELECT COUNT(*) FROM hist h JOIN res r ON r.rk = h.rk{where}", args).fetchone()[0]
            rows = conn.execute(
                f"SELECT r.type, r.id, h.version, h.updated, h.body IS NULL, h.body, h.seq, h.method, r.pat "
                f"FROM hist h JOIN res r ON r.rk = h.rk{where} ORDER BY h.seq DESC LIMIT ? OFFSET ?",
                args + [count, offset]).fetchall()
            return [Stored(t, i, v, u, bool(d), b, s, m, p) for t, i, v, u, d, b, s, m, p in rows], total

    def feed(self, after: int, limit: int) -> list[FeedEntry]:
        with self._reading() as conn:
            return _feed(conn, after, limit)

    def cursor(self, name: str) -> int:
        with self._reading() as conn:
            row = conn.execute("SELECT seq FROM cursor WHERE name = ?", (name,)).fetchone()
            return row[0] if row else 0

    def bodies_of_type(self, type: str) -> list[bytes]:
        with self._reading() as conn:
            return _bodies_of_type(conn, type)

    def get_setting(self, name: str) -> str | None:
        with self._reading() as conn:
            row = conn.execute("SELECT value FROM setting WHERE name = ?", (name,)).fetchone()
            return row[0] if row else None

    def is_empty(self) -> bool:
        with self._reading() as conn:
            return conn.execute("SELECT 1 FROM res LIMIT 1").fetchone() is None

    def type_counts(self) -> dict[str, int]:
        with self._reading() as conn:
            rows = conn.execute("SELECT type, COUNT(*) FROM res WHERE deleted = 0 GROUP BY type")
            return dict(rows.fetchall())

    # -- writes ------------------------------------------------------------------------

    def _transaction(self, lock: str = "write") -> Any:
        """A context manager yielding a connection inside a transaction, committed when the
        block ends and rolled back on any exception. ``lock``: "write" holds the database's
        write lock, "audit" the audit chain's, "none" neither (a single-row upsert); SQLite has
        one lock for all three."""
        raise NotImplementedError

    def _new_unit(self, conn: Any) -> "SqlUnit":
        return SqlUnit(self, conn)

    def _valued(self, conn: Any) -> Any:
        """``conn`` (a unit's) for statements whose best plan depends on their values
        (searches: a patient with 50 rows or 50,000, a common code or a rare one), planned for
        those values at every run. SQLite always does; on PostgreSQL, see its repository."""
        return conn

    @contextmanager
    def unit(self) -> Iterator["SqlUnit"]:
        """One atomic transaction: commits when the block ends, rolls back on any exception."""
        self._pages.last = None          # a page read before a write is not served after it
        unit = None
        try:
            with self._transaction() as conn:
                unit = self._new_unit(conn)
                yield unit
                unit.flush()
        except BaseException:
            if unit is not None:
                self._pids = {k: v for k, v in self._pids.items() if v not in unit.new_pids}
                for hook in unit.rollback_hooks:
                    hook()
            raise
        self._last_updated = max(self._last_updated, unit.last_updated)

    # -- what a dialect spells its own way ---------------------------------------------------

    def _write_rows(self, conn: Any, table: str, rows: list, unit: "SqlUnit") -> None:
        """Insert buffered rows (columns as ``rows.COLUMNS[table]``)."""
        raise NotImplementedError

    def _update_res(self, conn: Any, rk: int, version: int, seq: int, updated: int, deleted: bool,
                    patient: str | None) -> None:
        """Point an existing resource at its new current version (a deleted resource keeps its
        patient: its history stays theirs)."""
        if deleted:
            conn.execute("UPDATE res SET version = ?, seq = ?, updated = ?, deleted = 1 WHERE rk = ?",
                         (version, seq, updated, rk))
        else:
            conn.execute("UPDATE res SET version = ?, seq = ?, updated = ?, deleted = 0, pat = ? WHERE rk = ?",
                         (version, seq, updated, patient, rk))

    def _set_patient(self, conn: Any, rk: int, patient: str | None) -> None:
        """Record the patient a resource belongs to (after a reindex)."""
        conn.execute("UPDATE res SET pat = ? WHERE rk = ?", (patient, rk))

    def _insert_grant(self, conn: Any, grant: tuple) -> None:
        """Insert an emergency-access grant (patient, hpr, until, reason, created)."""
        conn.execute("INSERT INTO access_grant (patient, hpr, until, reason, created) VALUES (?, ?, ?, ?, ?)", grant)

    def _lock_audit(self, conn: Any) -> None:
        """Serialise appends to the audit chain (the write transaction does it on SQLite)."""

    def _insert_audit(self, conn: Any, rows: list[tuple]) -> None:
        """Insert chained audit rows (seq, recorded, patient, emergency, body, prev, hash)."""
        # many rows per statement: one sqlite3_step (which runs without the GIL) inserts a
        # chunk, so the audit thread does not contend with request threads for the GIL per row
        for chunk in iter_chunks(rows, _AUDIT_CHUNK):
            conn.execute("INSERT INTO audit (seq, recorded, patient, emergency, body, prev, hash) VALUES "
                         + ",".join(("(?,?,?,?,?,?,?)",) * len(chunk)), [v for row in chunk for v in row])

    # the audit AuditEvent's agents matching one identifier (three placeholders)
    _AGENT_CLAUSE = ("EXISTS (SELECT 1 FROM json_each(CAST(body AS TEXT), '$.agent') a WHERE "
                     "json_extract(a.value, '$.who.identifier.value') = ? OR "
                     "json_extract(a.value, '$.who.reference') = ? OR json_extract(a.value, '$.altId') = ?)")

    # -- audit log and emergency grants (access/audit.py, access/guard.py) ------------------

    def append_audit(self, rows: list[NewAuditRow]) -> tuple[int, bytes]:
        """Append audit rows in a transaction of their own, chained after the current head
        (read inside the transaction, so the chain stays linear across threads and
        processes); returns the new head (seq, hash). Must not be called from inside a unit."""
        if not rows:
            return parse_head(self.get_setting(AUDIT_HEAD)) or (0, GENESIS)
        with self._transaction("none") as conn:      # _append_audit takes the audit lock
            return self._append_audit(conn, rows)

    def _append_audit(self, conn: Any, rows: list[NewAuditRow]) -> tuple[int, bytes]:
        """Chain ``rows`` after the head and insert them; the caller holds the write lock in a
        transaction. The head setting is the chain's end, so rows deleted at the end leave a gap
        that verification finds; seq stays above any row present (a forged row blocks nothing)."""
        self._lock_audit(conn)
        value, last_seq, last_hash = conn.execute(
            "SELECT (SELECT value FROM setting WHERE name = ?), (SELECT MAX(seq) FROM audit), "
            "(SELECT hash FROM audit ORDER BY seq DESC LIMIT 1)", (AUDIT_HEAD,)).fetchone()
        head = parse_head(value)
        last = (last_seq, last_hash) if last_seq is not None else None
        if head is None:
            head = (last[0], bytes(last[1])) if last else (0, GENESIS)
        seq, prev = head
        if last is not None and last[0] > seq:
            seq = last[0]
        out = []
        for recorded, patient, emergency, body in rows:
            seq += 1
            digest = audit_hash(prev, seq, body)
            out.append((seq, recorded, patient, 1 if emergency else 0, body, prev, digest))
            prev = digest
        self._insert_audit(conn, out)
        conn.execute("INSERT INTO setting (name, value) VALUES (?, ?) "
                     "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (AUDIT_HEAD, f"{seq}:{prev.hex()}"))
        return seq, prev

    def audit_rows(self, after_seq: int, limit: int) -> list[AuditRow]:
        """Audit rows with seq > ``after_seq`` in seq order, at most ``limit``."""
        with self._reading() as conn:
            return [AuditRow(*_audit_row(r)) for r in conn.execute(
                f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit))]

    def audit_get(self, seq: int) -> AuditRow | None:
        with self._reading() as conn:
            row = conn.execute(f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE seq = ?", (seq,)).fetchone()
            return AuditRow(*_audit_row(row)) if row else None

    def audit_for_patient(self, patient: str, count: int, offset: int = 0,
                          since: int | None = None) -> list[AuditRow]:
        """The audit rows concerning ``patient``, newest first (the citizen's access log)."""
        return self.audit_search(patient=patient, since=since, count=count, offset=offset)

    def audit_search(self, patient: str | None = None, agent: str | None = None, since: int | None = None,
                     until: int | None = None, emergency: bool | None = None, count: int = 100,
                     offset: int = 0) -> list[AuditRow]:
        """Audit rows newest first, filtered by patient, agent (an HPR number, organisation
        number, client id or ``Patient/<id>`` of any agent), recorded time [since, until]
        (epoch ms) and emergency flag. Filtering by agent reads the event bodies."""
        with self._reading(valued=True) as conn:
            conds, args = [], []
            if patient is not None:
                conds.append("patient = ?")
                args.append(patient)
            if since is not None:
                conds.append("recorded >= ?")
                args.append(since)
            if until is not None:
                conds.append("recorded <= ?")
                args.append(until)
            if emergency is not None:
                conds.append("emergency = ?")
                args.append(1 if emergency else 0)
            if agent is not None:
                conds.append(self._AGENT_CLAUSE)
                args.extend([agent, agent, agent])
            where = (" WHERE " + " AND ".join(conds)) if conds else ""
            rows = conn.execute(
                f"SELECT {_AUDIT_COLUMNS} FROM audit{where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                args + [count, offset])
            return [AuditRow(*_audit_row(r)) for r in rows]

    def grants(self, patient: str) -> list[tuple[str, int, str]]:
        """The emergency-access grants recorded for ``patient``: (hpr, until epoch ms, reason),
        expired ones included (the policy tells the two apart), oldest first."""
        with self._reading() as conn:
            return conn.execute(
                "SELECT hpr, until, reason FROM access_grant WHERE patient = ? ORDER BY until, created",
                (patient,)).fetchall()

    # -- bulk export (services/export.py) ----------------------------------------------------

    def export_batch(self, after_key: int, limit: int, types: tuple | None = None, since: int | None = None,
                     until: int | None = None, patients: tuple | None = None,
                     compartments: bool = False, filters: dict | None = None, deleted: bool = False,
                     ) -> list[tuple[int, str, bytes, str, int, str | None]]:
        """(key, type, body, id, version, patient) of current resources with key > ``after_key``,
        in key order, at most ``limit``: of ``types`` (None: all), changed in [since, until]
        (epoch ms), ``compartments``: in some patient's compartment, ``patients``: in one of
        these patients' compartments (a resource of several patients when it refers to one);
        ``filters``: type -> lists of search clauses, a resource of such a type only when it
        matches every clause of one of its lists (``_typeFilter``). ``deleted``: the resources
        whose current version is a deletion instead, without those of the filtered types (a
        deleted resource has no index rows to match a filter); the body is then None, or for a
        resource of several patients its last version before the deletion (to tell whose it
        was); with ``patients``, one of several patients' is left out (its references, which
        would say whether it was a member's, went with the deletion)."""
        conds, args = ["r.rk > ?", f"r.deleted = {1 if deleted else 0}"], [after_key]
        if types is not None:
            # "|| ''" keeps the planner off the (type, id) index: with it SQLite reads every
            # remaining row of the types and sorts them for each batch (quadratic); the key
            # order scan reads the table once
            conds.append(f"r.type || '' IN ({','.join('?' * len(types))})")
            args.extend(types)
        if since is not None:
            conds.append("r.updated >= ?")
            args.append(since)
        if until is not None:
            conds.append("r.updated <= ?")
            args.append(until)
        if compartments:
            conds.append("r.pat IS NOT NULL")
        if patients is not None:
            marks = ",".join("?" * len(patients))
            conds.append(f"(r.pat IN ({marks}) OR r.pat = '*' AND EXISTS (SELECT 1 FROM ix_ref x WHERE "
                         f"x.rk = r.rk AND x.ttype = 'Patient' AND x.url IS NULL AND x.tid IN ({marks})))")
            args.extend(patients)
            args.extend(patients)
        if filters and deleted:
            conds.append(f"r.type NOT IN ({','.join('?' * len(filters))})")
            args.extend(filters)
        elif filters:
            builder = SqlBuilder(self.pid_of, self.clock(), None, self.hints, self.max_index_text)
            for type_, alternatives in filters.items():
                ors, type_args = [], [type_]
                for clauses in alternatives:
                    sql, a = builder.matches(list(clauses))
                    ors.append(sql)
                    type_args.extend(a)
                conds.append(f"(r.type <> ? OR {' OR '.join(ors) or '1 = 0'})")
                args.extend(type_args)
        with self._reading(valued=True) as conn:
            return conn.execute(
                f"SELECT r.rk, r.type, {_BEFORE_DELETION if deleted else 'h.body'}, r.id, r.version, r.pat "
                f"FROM res r "
                f"{'' if deleted else 'JOIN hist h ON h.seq = r.seq '}"
                f"WHERE {' AND '.join(conds)} ORDER BY r.rk LIMIT ?", args + [limit]).fetchall()

    def job_put(self, id: str, kind: str, owner: str, status: str, state: str, now_ms: int) -> None:
        """Create or update a background job's row (``state``: its JSON); a cancelled job
        stays cancelled."""
        with self._transaction("none") as conn:
            conn.execute("INSERT INTO job (id, kind, owner, status, created, updated, state) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET status = excluded.status, "
                         "updated = excluded.updated, state = excluded.state WHERE job.status <> 'cancelled'",
                         (id, kind, owner, status, now_ms, now_ms, state))

    def job_get(self, id: str) -> tuple | None:
        """(kind, owner, status, created, updated, state) of a job, or None."""
        with self._reading() as conn:
            return conn.execute("SELECT kind, owner, status, created, updated, state FROM job WHERE id = ?",
                                (id,)).fetchone()

    def job_delete(self, id: str) -> None:
        with self._transaction("none") as conn:
            conn.execute("DELETE FROM job WHERE id = ?", (id,))

    def job_sweep(self, kind: str, before_ms: int) -> int:
        """Remove the rows of ``kind`` last updated before ``before_ms`` (ended door
        sessions, unredeemed authorization codes); returns how many went."""
        with self._transaction("none") as conn:
            return conn.execute("DELETE FROM job WHERE kind = ? AND updated < ?", (kind, before_ms)).rowcount

    def job_take(self, id: str) -> tuple | None:
        """Remove a job's row and return it as ``job_get`` would, in one statement: of two
        processes taking the same row, one gets it (single-use authorization codes)."""
        with self._transaction("none") as conn:
            return conn.execute("DELETE FROM job WHERE id = ? RETURNING kind, owner, status, created, updated, state",
                                (id,)).fetchone()

    def _pid_for_write(self, conn: Any, url: str, unit: "SqlUnit") -> int:
        pid = self._pids.get(url)
        if pid is None:
            row = conn.execute("SELECT pid FROM sp WHERE url = ?", (url,)).fetchone()
            if row:
                pid = row[0]
            else:
                pid = conn.execute("INSERT INTO sp (url) VALUES (?) RETURNING pid", (url,)).fetchone()[0]
                unit.new_pids.add(pid)
            self._pids[url] = pid
        return pid


class SqlUnit:
    """Reads and writes inside one transaction that holds the database's write lock.

    The unit holds the write lock, so it hands out row keys and feed positions itself (in
    commit order) and buffers new rows (resources, versions, index rows), writing them in
    bulk (``executemany`` on SQLite, COPY on PostgreSQL) before anything in the unit reads
    the database and at commit. ``state`` remembers what the unit wrote, so most writes need
    no read at all."""

    def __init__(self, repo: SqlRepository, conn: Any):
        self.repo = repo
        self.conn = conn
        self.pending: dict[str, list] = defaultdict(list)
        self.new_pids: set[int] = set()
        self.last_updated = 0
        self.next_seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM hist").fetchone()[0] + 1
        self.next_rk = conn.execute("SELECT COALESCE(MAX(rk), 0) FROM res").fetchone()[0] + 1
        self.tx = self.next_seq
        self.state: dict[tuple[str, str], tuple[int, int, bool]] = {}   # (type, id) -> (rk, version, deleted)
        self._pending_rks: set[int] = set()      # resources with rows still in the buffers
        self._absent: set[tuple[str, str]] = set()   # (type, id) known not to exist (prefetch)
        self._param_urls: dict[tuple[str, str], str] = {}
        self.rollback_hooks: list = []

    def prefetch(self, keys: list[tuple[str, str]]) -> None:
        """Look up at once whether these (type, id) exist, so that writing them needs no read
        each (a round trip per resource on a server database)."""
        todo = [k for k in dict.fromkeys(keys) if k not in self.state and k not in self._absent]
        for chunk in _chunks(self.conn, todo, 400):
            values, args = _pairs(self.conn, chunk)
            rows = self.conn.execute(
                f"SELECT r.type, r.id, r.rk, r.version, r.deleted FROM {values} "
                f"JOIN res r ON r.type = v.column1 AND r.id = v.column2", args)
            found = {(t, i): (rk, v, bool(d)) for t, i, rk, v, d in rows}
            for k in chunk:
                if k in found:
                    self.state[k] = found[k]
                else:
                    self._absent.add(k)

    def _placed(self, rk: int, patient: str | None, deleted: bool) -> None:
        """Hook: resource ``rk`` now belongs to ``patient`` (PostgreSQL keys rows by it)."""

    def on_rollback(self, hook) -> None:
        self.rollback_hooks.append(hook)

    def bodies_of_type(self, type: str) -> list[bytes]:
        self.flush()
        return _bodies_of_type(self.conn, type)

    def set_setting(self, name: str, value: str) -> None:
        self.conn.execute("INSERT INTO setting (name, value) VALUES (?, ?) "
                          "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value))

    def reindex(self, types: tuple | None) -> int:
        """Rebuild the search index of every current resource of ``types`` (None: all)."""
        self.flush()
        self._param_urls.clear()
        sql = "SELECT r.rk, r.type, r.id, h.body FROM res r JOIN hist h ON h.seq = r.seq WHERE r.deleted = 0"
        args: list = []
        if types is not None:
            if not types:
                return 0
            sql += f" AND r.type IN ({','.join('?' * len(types))})"
            args.extend(types)
        count = 0
        for rk, type_, id_, body in self.conn.execute(sql, args).fetchall():
            for table in INDEX_TABLES:
                self.conn.execute(f"DELETE FROM {table} WHERE rk = ?", (rk,))
            values = self.repo.registry.extract(jsonio.loads(body))
            patient = _patient(type_, id_, values)
            self.repo._set_patient(self.conn, rk, patient)
            self._placed(rk, patient, False)
            self._index(rk, type_, None, values)
            self._pending_rks.add(rk)
            count += 1
            if len(self.pending["ix_tok"]) > 50_000:
                self.flush()
        self.flush()
        return count

    def fresh_id(self) -> str:
        return self.repo.new_id()

    def now(self) -> int:
        now = max(self.repo.clock(), self.repo._last_updated, self.last_updated)
        self.last_updated = now
        return now

    def read(self, type: str, id: str) -> Stored | None:
        # only a resource this unit wrote can have rows still in the buffers; any other
        # read sees the database as it is, and the buffers keep batching
        known = self.state.get((type, id))
        if known is not None and known[0] in self._pending_rks:
            self.flush()
        return _read(self.conn, type, id)

    def exists(self, type: str, id: str) -> bool:
        known = self.state.get((type, id))
        if known is not None:
            return not known[2]
        row = self.conn.execute("SELECT deleted FROM res WHERE type = ? AND id = ?", (type, id)).fetchone()
        return row is not None and not row[0]

    def search(self, query: q.SearchQuery) -> Page:
        self.flush()
        return _search(self.repo._valued(self.conn), self.repo.pid_of, self.repo.clock(), query, self.repo.hints,
                       self.repo.max_index_text)

    def load(self, keys: list) -> list[Stored]:
        self.flush()
        return _load(self.conn, keys)

    def put(self, type: str, id: str, resource: dict | None, method: str,
            expected_version: int | None = None, values: list | None = None) -> Stored:
        """Write a new version of ``type/id`` (``resource`` None deletes). The resource's
        ``meta.versionId`` and ``meta.lastUpdated`` are set here. Raises PreconditionFailed
        when ``expected_version`` is given and is not the current version. ``values``: the
        resource's index values when the caller extracted them already (outside the lock)."""
        conn = self.conn
        key = (type, id)
        row = self.state.get(key)
        if row is None and key not in self._absent:
            row = conn.execute("SELECT rk, version, deleted FROM res WHERE type = ? AND id = ?", key).fetchone()
        if expected_version is not None:
            current = row[1] if row and not row[2] else None
            if current != expected_version:
                raise errors.PreconditionFailed(
                    f"{type}/{id} is at version {current if current is not None else 'none'}, "
                    f"not {expected_version} (If-Match)")
        version = row[1] + 1 if row else 1
        updated = self.now()
        deleted = resource is None
        body = None
        if resource is not None:
            meta = dict(resource.get("meta") or {})
            meta["versionId"] = str(version)
            meta["lastUpdated"] = dates.to_instant(updated)
            resource["meta"] = meta
            resource["id"] = id
            body = jsonio.dumps(resource)
            if b"\\u0000" in body and _NUL_IN_JSON.search(body):
                # PostgreSQL cannot store U+0000 in text, and FHIR strings may not hold it
                # (https://hl7.org/fhir/R4/datatypes.html#string): refused alike on every backend
                raise errors.Invalid(f"the {type} contains a NUL character (U+0000), which FHIR strings may not "
                                     "hold", type)
        seq = self.next_seq
        self.next_seq += 1
        if resource is not None and values is None:
            values = self.repo.registry.extract(resource)
        patient = _patient(type, id, values) if resource is not None else None
        if row is None:
            rk = self.next_rk
            self.next_rk += 1
            self.pending["res"].append((rk, type, id, version, seq, updated, 1 if deleted else 0, patient))
        else:
            rk = row[0]
            if rk in self._pending_rks:
                self.flush()
            if not row[2]:
                for table in INDEX_TABLES:
                    conn.execute(f"DELETE FROM {table} WHERE rk = ?", (rk,))
            self.repo._update_res(conn, rk, version, seq, updated, deleted, patient)
        self._placed(rk, patient, deleted)
        self.pending["hist"].append((seq, rk, version, updated, method, self.tx, body))
        self._pending_rks.add(rk)
        self.state[key] = (rk, version, deleted)
        if resource is not None:
            self._index(rk, type, resource, values)
        return Stored(type, id, version, updated, deleted, body, seq, method, patient)

    def _index(self, rk: int, type: str, resource: dict | None, values: list | None = None) -> None:
        registry = self.repo.registry
        urls = self._param_urls
        pending = self.pending
        if values is None:
            values = registry.extract(resource)
        patient = patient_of(values) if type != "Patient" else None
        for code, value in values:
            if code in _COLUMN_PARAMS:
                continue
            url = urls.get((type, code))
            if url is None:
                param = registry.get(type, code)
                url = urls[(type, code)] = param_key(type, param) if param is not None else f"{type}.{code}"
            add_rows(pending, self.repo._pid_for_write(self.conn, url, self), rk, value, patient)

    def flush(self) -> None:
        """Write the buffered rows: resources and versions first, then index rows."""
        pending = self.pending
        if not pending:
            return
        write = self.repo._write_rows
        for table in ("res", "hist"):
            rows = pending.pop(table, None)
            if rows:
                write(self.conn, table, rows, self)
        for table, rows in pending.items():
            if rows:
                write(self.conn, table, rows, self)
        pending.clear()
        self._pending_rks.clear()

    def get_cursor(self, name: str) -> int:
        row = self.conn.execute("SELECT seq FROM cursor WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    def feed(self, after: int, limit: int) -> list[FeedEntry]:
        self.flush()
        return _feed(self.conn, after, limit)

    def set_cursor(self, name: str, seq: int) -> None:
        self.conn.execute("INSERT INTO cursor (name, seq) VALUES (?, ?) "
                          "ON CONFLICT(name) DO UPDATE SET seq = excluded.seq", (name, seq))

    def append_audit(self, rows: list[NewAuditRow]) -> tuple[int, bytes]:
        """Append audit rows inside this unit: they commit (or roll back) with its writes."""
        if not rows:
            return parse_head(_setting(self.conn, AUDIT_HEAD)) or (0, GENESIS)
        return self.repo._append_audit(self.conn, rows)

    def add_grant(self, patient: str, hpr: str, until_ms: int, reason: str, created_ms: int) -> None:
        """Record emergency access for health person ``hpr`` to ``patient`` until ``until_ms``."""
        if not patient or not hpr:
            raise errors.Invalid("an emergency-access grant needs a patient and an HPR number")
        self.repo._insert_grant(self.conn, (patient, hpr, until_ms, reason or "", created_ms))


# -- shared query helpers (used by the repository and by units) ----------------------------

_AUDIT_COLUMNS = "seq, recorded, patient, emergency, body, prev, hash"
_AUDIT_CHUNK = 200     # rows per INSERT statement (7 parameters each)


def _audit_row(row: tuple) -> tuple:
    seq, recorded, patient, emergency, body, prev, hash_ = row
    return seq, recorded, patient, bool(emergency), bytes(body), bytes(prev), bytes(hash_)


def _chunks(conn: Any, items: list, size: int) -> Iterator[list]:
    """``items`` in chunks for ``_among``/``_pairs``: at most ``size`` (SQLite's statements
    take at most 999 values), or all at once where the connection takes arrays."""
    if getattr(conn, "arrays", False):
        return iter([list(items)] if items else [])
    return iter_chunks(items, size)


def _among(conn: Any, column: str, values: list) -> tuple[str, list]:
    """Key ``column`` is one of ``values``: an array parameter where the connection takes
    arrays (PostgreSQL: one statement text for any number of keys, prepared once, and no
    driver parsing a thousand placeholders), else an IN list."""
    if getattr(conn, "arrays", False):
        # as one array literal: psycopg's list dumper checks every element with a regex
        return f"{column} = ANY(CAST(? AS bigint[]))", ["{" + ",".join(map(str, map(int, values))) + "}"]
    return f"{column} IN ({','.join('?' * len(values))})", list(values)


def _pairs(conn: Any, pairs: list) -> tuple[str, list]:
    """A relation ``v(column1, column2)`` of (type, id) ``pairs``, for a FROM clause."""
    if getattr(conn, "arrays", False):
        return ("unnest(CAST(? AS text[]), CAST(? AS text[])) AS v(column1, column2)",
                [[p[0] for p in pairs], [p[1] for p in pairs]])
    return f"(VALUES {','.join('(?,?)' for _ in pairs)}) v", [x for pair in pairs for x in pair]


def _setting(conn: Any, name: str) -> str | None:
    row = conn.execute("SELECT value FROM setting WHERE name = ?", (name,)).fetchone()
    return row[0] if row else None


def _patient(type: str, id: str, values: list) -> str | None:
    """The patient a resource belongs to (``res.pat``): a Patient itself, else ``patient_of``."""
    return id if type == "Patient" else patient_of(values)


def _read(conn: Any, type: str, id: str) -> Stored | None:
    row = conn.execute(_READ_SQL, (type, id)).fetchone()
    if row is None:
        return None
    return Stored(type, id, row[0], row[1], bool(row[2]), row[3], row[4], patient=row[5])


def _bodies_of_type(conn: Any, type: str) -> list[bytes]:
    return [row[0] for row in conn.execute(
        "SELECT h.body FROM res r JOIN hist h ON h.seq = r.seq WHERE r.type = ? AND r.deleted = 0 ORDER BY r.rk",
        (type,))]


def _feed(conn: Any, after: int, limit: int) -> list[FeedEntry]:
    rows = conn.execute(
        "SELECT h.seq, r.type, r.id, h.version, h.method, h.updated, h.tx FROM hist h "
        "JOIN res r ON r.rk = h.rk WHERE h.seq > ? ORDER BY h.seq LIMIT ?", (after, limit)).fetchall()
    return [FeedEntry(*row) for row in rows]


def _search(conn: Any, pid_of, now_ms: int, query: q.SearchQuery, hints: bool = True,
            max_text: int | None = None, bodies: bool = False, fixed: Callable[[], Any] | None = None) -> Page:
    """One page of keys. Paging is stable: the first page fixes a snapshot (the largest key
    then), later pages never see resources created after it. A first page without a total
    reads its rows and its snapshot in one statement (one round trip on a server database);
    with ``bodies``, the page's resources too (``Page.loaded``). ``fixed``: where to read a
    page whose plan does not depend on its values (``SqlBuilder.one_patient``)."""
    builder = SqlBuilder(pid_of, now_ms, lambda sql, args: conn.execute(sql, args).fetchone()[0], hints,
                         max_text)
    snapshot = query.snapshot
    counting = query.count == 0 or query.summary == "count" or query.total in ("accurate", "estimate")
    if snapshot is None and counting:
        snapshot = conn.execute(_MAX_KEY).fetchone()[0]
    where, args = builder.where(query, snapshot=snapshot)
    if any(type(a) is str and "\x00" in a for a in args):
        # PostgreSQL refuses it; SQLite would only find nothing: refused alike
        raise errors.Invalid("a search value may not contain a NUL character (U+0000)")
    total = None
    if query.count == 0 or query.summary == "count":
        total = conn.execute(f"SELECT COUNT(*) FROM res r WHERE {where}", args).fetchone()[0]
        return Page([], total, False, snapshot)
    order, order_args = builder.order_by(query)
    ceiling = _MAX_KEY_EXPR if snapshot is None else "0"
    source, page_where, page_args = builder.page_source(query, snapshot=snapshot)
    page_sql = f"SELECT r.rk, {ceiling} AS c FROM {source} WHERE {page_where} ORDER BY {order} LIMIT ? OFFSET ?"
    page_args = page_args + order_args + [query.count + 1, query.offset]
    loaded = None
    with fixed() if fixed is not None and builder.one_patient else nullcontext(conn) as page_conn:
        if bodies:
            rows = page_conn.execute(
                f"SELECT p.rk, p.c, r.type, r.id, r.version, r.updated, h.body, r.seq, r.pat FROM "
                f"(SELECT s.rk, s.c, row_number() OVER () AS n FROM ({page_sql}) s) p JOIN res r ON r.rk = p.rk "
                f"JOIN hist h ON h.seq = r.seq ORDER BY p.n", page_args).fetchall()
            loaded = [Stored(t, i, v, u, False, b, sq, patient=pt)
                      for _k, _c, t, i, v, u, b, sq, pt in rows[:query.count]]
        else:
            rows = page_conn.execute(page_sql, page_args).fetchall()
    if snapshot is None:
        snapshot = rows[0][1] if rows else conn.execute(_MAX_KEY).fetchone()[0]
    has_more = len(rows) > query.count
    keys = [row[0] for row in rows[:query.count]]
    if query.total in ("accurate", "estimate"):
        total = conn.execute(f"SELECT COUNT(*) FROM res r WHERE {where}", args).fetchone()[0]
    elif not has_more:
        total = query.offset + len(keys) if (keys or query.offset == 0) else None
    return Page(keys, total, has_more, snapshot, loaded)


_MAX_KEY_EXPR = "(SELECT COALESCE(MAX(rk), 0) FROM res)"
_MAX_KEY = f"SELECT {_MAX_KEY_EXPR}"
# a deleted resource of several patients: the body of its last version, which says whose it was
_BEFORE_DELETION = ("(SELECT p.body FROM hist p WHERE r.pat = '*' AND p.rk = r.rk AND p.version = r.version - 1)")


def _referring(type: str, id: str, params: list) -> tuple[str, list] | None:
    """A SELECT of the keys (``rk``, with repeats) of the current resources that refer to
    ``type/id`` through one of ``params`` ((resource type, search parameter) pairs: its
    compartment's members), or None when ``params`` name none. The parameters' ids are looked
    up in the statement, not with pid_of: most have no rows yet, and another process may add them."""
    keys = sorted({param_key(resource_type, param) for resource_type, param in params})
    if not keys:
        return None
    return ("SELECT x.rk FROM ix_ref x WHERE x.tid = ? AND x.ttype = ? AND x.pid IN "
            f"(SELECT pid FROM sp WHERE url IN ({','.join('?' * len(keys))}))", [id, type, *keys])


def _load(conn: Any, keys: list) -> list[Stored]:
    found = _load_keyed(conn, keys)
    return [found[k] for k in keys if k in found]


def _load_keyed(conn: Any, keys: list | None, subquery: tuple[str, list] | None = None) -> dict[int, Stored]:
    """key -> the current resource, for ``keys`` or for the keys a ``subquery`` (sql, args) selects."""
    found: dict[int, Stored] = {}
    if subquery is not None:
        parts = [(f"r.rk IN ({subquery[0]})", list(subquery[1]))]
    else:
        parts = [_among(conn, "r.rk", chunk) for chunk in _chunks(conn, keys, 500)]
    for among, args in parts:
        rows = conn.execute(
            f"SELECT r.rk, r.type, r.id, r.version, r.updated, r.deleted, h.body, r.seq, r.pat FROM res r "
            f"JOIN hist h ON h.seq = r.seq WHERE {among}", args)
        for rk, t, i, v, u, d, b, s, p in rows:
            found[rk] = Stored(t, i, v, u, bool(d), b, s, patient=p)
    return found


def _includes(conn: Any, pid_of, keys: list, includes: list) -> list:
    """Keys of resources that ``_include``/``_revinclude`` add to a page (iterating where asked)."""
    seen = set(keys)
    added: list = []
    frontier = list(keys)
    first = True
    for _round in range(5):
        new: list = []
        for inc in includes:
            if not first and not inc.iterate:
                continue
            new.extend(_include_once(conn, pid_of, frontier, inc))
        fresh = [k for k in dict.fromkeys(new) if k not in seen]
        if not fresh:
            break
        seen.update(fresh)
        added.extend(fresh)
        frontier = fresh
        first = False
        if not any(inc.iterate for inc in includes):
            break
    return added


def _include_once(conn: Any, pid_of, keys: list, inc: q.Include) -> list:
    out: list = []
    pid = pid_of(inc.source_type, inc.param) if inc.param is not None else None
    if inc.param is not None and pid is None:
        return out
    for chunk in _chunks(conn, keys, 500):
        if not inc.reverse:
            among, args = _among(conn, "x.rk", chunk)
            sql = (f"SELECT t.rk FROM ix_ref x JOIN res s ON s.rk = x.rk JOIN res t ON t.type = x.ttype "
                   f"AND t.id = x.tid WHERE {among} AND t.deleted = 0")
        else:
            among, args = _among(conn, "t.rk", chunk)
            sql = (f"SELECT s.rk FROM res t JOIN ix_ref x ON x.tid = t.id AND x.ttype = t.type "
                   f"JOIN res s ON s.rk = x.rk WHERE {among} AND s.deleted = 0")
        if inc.source_type is not None:       # None: "_include=*", references of any type
            sql += " AND s.type = ?"
            args.append(inc.source_type)
        if pid is not None:
            sql += " AND x.pid = ?"
            args.append(pid)
        if inc.target_type is not None:
            sql += " AND t.type = ?"
            args.append(inc.target_type)
        out.extend(row[0] for row in conn.execute(sql, args))
    return out
