"""SQLite schema, created and upgraded by numbered migrations (``PRAGMA user_version``).

Layout (learned from Blaze and HAPI, see docs/decisions/0001-storage-layout.md):

- ``res``: one row per resource, the current version's pointer (``seq``) and a small
  integer key ``rk`` that every index row uses.
- ``hist``: every version ever written, in commit order. Its ``seq`` is the change feed.
- ``ix_*``: one table per search-parameter type, keyed by the parameter id ``pid`` and the
  value, so most predicates are one indexed range or equality.
"""
from __future__ import annotations

import sqlite3

from .. import migration_statements as statements

# A migration is a script of statements separated by ";", or a tuple of statements (for those
# that hold a ";" themselves, such as triggers).
MIGRATIONS: tuple[str | tuple[str, ...], ...] = (
    # 1: resources, history (= change feed), search indexes, feed cursors
    """
    CREATE TABLE res (
        rk INTEGER PRIMARY KEY,
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        updated INTEGER NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX res_type_id ON res(type, id);
    CREATE TABLE hist (
        seq INTEGER PRIMARY KEY,
        rk INTEGER NOT NULL,
        version INTEGER NOT NULL,
        updated INTEGER NOT NULL,
        method TEXT NOT NULL,
        tx INTEGER NOT NULL,
        body BLOB
    );
    CREATE UNIQUE INDEX hist_rk_version ON hist(rk, version);
    CREATE INDEX hist_updated ON hist(updated);
    CREATE TABLE sp (pid INTEGER PRIMARY KEY, url TEXT NOT NULL UNIQUE);
    CREATE TABLE ix_str (pid INTEGER NOT NULL, norm TEXT NOT NULL, exact TEXT NOT NULL, rk INTEGER NOT NULL);
    CREATE INDEX ix_str_v ON ix_str(pid, norm);
    CREATE INDEX ix_str_rk ON ix_str(rk);
    CREATE TABLE ix_tok (pid INTEGER NOT NULL, sys TEXT, code TEXT, text TEXT, rk INTEGER NOT NULL);
    CREATE INDEX ix_tok_v ON ix_tok(pid, code, sys);
    CREATE INDEX ix_tok_rk ON ix_tok(rk);
    CREATE TABLE ix_oft (pid INTEGER NOT NULL, tsys TEXT, tcode TEXT NOT NULL, value TEXT NOT NULL, rk INTEGER NOT NULL);
    CREATE INDEX ix_oft_v ON ix_oft(pid, value, tcode);
    CREATE INDEX ix_oft_rk ON ix_oft(rk);
    CREATE TABLE ix_date (pid INTEGER NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL, rk INTEGER NOT NULL);
    CREATE INDEX ix_date_v ON ix_date(pid, lo, hi);
    CREATE INDEX ix_date_rk ON ix_date(rk);
    CREATE TABLE ix_num (pid INTEGER NOT NULL, v REAL NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL,
                         sys TEXT, code TEXT, unit TEXT, rk INTEGER NOT NULL);
    CREATE INDEX ix_num_v ON ix_num(pid, v);
    CREATE INDEX ix_num_rk ON ix_num(rk);
    CREATE TABLE ix_ref (pid INTEGER NOT NULL, ttype TEXT, tid TEXT, url TEXT, rk INTEGER NOT NULL);
    CREATE INDEX ix_ref_v ON ix_ref(tid, ttype, pid);
    CREATE INDEX ix_ref_url ON ix_ref(url) WHERE url IS NOT NULL;
    CREATE INDEX ix_ref_rk ON ix_ref(rk);
    CREATE TABLE ix_uri (pid INTEGER NOT NULL, uri TEXT NOT NULL, rk INTEGER NOT NULL);
    CREATE INDEX ix_uri_v ON ix_uri(pid, uri);
    CREATE INDEX ix_uri_rk ON ix_uri(rk);
    CREATE TABLE ix_comp (pid INTEGER NOT NULL, a_sys TEXT, a_code TEXT, b_sys TEXT, b_code TEXT,
                          b_lo REAL, b_hi REAL, rk INTEGER NOT NULL);
    CREATE INDEX ix_comp_v ON ix_comp(pid, a_code);
    CREATE INDEX ix_comp_rk ON ix_comp(rk);
    CREATE TABLE cursor (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
    CREATE TABLE setting (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: covering value indexes (the key is in the index, no table read per match), a date
    #    index by upper bound (ge/gt and descending sorts), (rk, pid) for per-candidate probes
    """
    DROP INDEX ix_str_v; CREATE INDEX ix_str_v ON ix_str(pid, norm, rk);
    DROP INDEX ix_str_rk; CREATE INDEX ix_str_rk ON ix_str(rk, pid);
    DROP INDEX ix_tok_v; CREATE INDEX ix_tok_v ON ix_tok(pid, code, sys, rk);
    DROP INDEX ix_tok_rk; CREATE INDEX ix_tok_rk ON ix_tok(rk, pid);
    DROP INDEX ix_oft_v; CREATE INDEX ix_oft_v ON ix_oft(pid, value, tcode, rk);
    DROP INDEX ix_date_v; CREATE INDEX ix_date_v ON ix_date(pid, lo, hi, rk);
    CREATE INDEX ix_date_hi ON ix_date(pid, hi, rk);
    DROP INDEX ix_date_rk; CREATE INDEX ix_date_rk ON ix_date(rk, pid, lo, hi);
    DROP INDEX ix_num_v; CREATE INDEX ix_num_v ON ix_num(pid, v, rk);
    DROP INDEX ix_num_rk; CREATE INDEX ix_num_rk ON ix_num(rk, pid);
    DROP INDEX ix_ref_v; CREATE INDEX ix_ref_v ON ix_ref(tid, ttype, pid, rk);
    DROP INDEX ix_ref_rk; CREATE INDEX ix_ref_rk ON ix_ref(rk, pid);
    DROP INDEX ix_uri_v; CREATE INDEX ix_uri_v ON ix_uri(pid, uri, rk);
    DROP INDEX ix_comp_v; CREATE INDEX ix_comp_v ON ix_comp(pid, a_code, rk);
    """,
    # 3: token rows carry the patient the resource belongs to (cp: the one Patient it refers
    #    to, '*' for several), so "this patient's resources with this code" is one seek
    """
    ALTER TABLE ix_tok ADD COLUMN cp TEXT;
    CREATE INDEX ix_tok_cp ON ix_tok(pid, cp, code, sys, rk) WHERE cp IS NOT NULL;
    DROP INDEX ix_tok_rk; CREATE INDEX ix_tok_rk ON ix_tok(rk, pid, code, sys);
    """,
    # 4: a resource's outgoing references without a table read ($everything, _include)
    """
    DROP INDEX ix_ref_rk; CREATE INDEX ix_ref_rk ON ix_ref(rk, pid, ttype, tid);
    """,
    # 5: a third, range-valued component for composites (MolecularSequence coordinates:
    #    token $ start $ end)
    """
    ALTER TABLE ix_comp ADD COLUMN c_lo REAL;
    ALTER TABLE ix_comp ADD COLUMN c_hi REAL;
    """,
    # 6: access control and audit. ``res.pat`` is the patient a resource belongs to (its own
    #    id for a Patient, '*' for several, NULL for none), so the access policy needs no
    #    extraction per read; ``audit`` is the hash-chained AuditEvent log (access/audit.py);
    #    ``access_grant`` holds emergency access in force (access/guard.py)
    """
    ALTER TABLE res ADD COLUMN pat TEXT;
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        recorded INTEGER NOT NULL,
        patient TEXT,
        emergency INTEGER NOT NULL DEFAULT 0,
        body BLOB NOT NULL,
        prev BLOB NOT NULL,
        hash BLOB NOT NULL
    );
    CREATE INDEX audit_patient ON audit(patient, seq) WHERE patient IS NOT NULL;
    CREATE INDEX audit_emergency ON audit(seq) WHERE emergency = 1;
    CREATE TABLE access_grant (
        patient TEXT NOT NULL,
        hpr TEXT NOT NULL,
        until INTEGER NOT NULL,
        reason TEXT NOT NULL,
        created INTEGER NOT NULL
    );
    CREATE INDEX access_grant_patient ON access_grant(patient, until);
    """,
    # 7: background jobs (bulk export, services/export.py): state as JSON
    """
    CREATE TABLE job (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        owner TEXT NOT NULL,
        status TEXT NOT NULL,
        created BIGINT NOT NULL,
        updated BIGINT NOT NULL,
        state TEXT NOT NULL
    );
    """,
    # 8: the audit log is append-only in the database itself: rows of ``audit`` are never
    #    changed or removed, and no AuditEvent enters the resource store (the log is the only
    #    AuditEvent there is). AuditEvents already in the resource store were never the
    #    server's (a client wrote them, or an import did): they go. References to another
    #    server (absolute URLs) name no local resource: their index rows keep only the URL,
    #    so no compartment or _include counts them as local.
    (
        *(f"DELETE FROM {table} WHERE rk IN (SELECT rk FROM res WHERE type = 'AuditEvent')"
          for table in ("ix_str", "ix_tok", "ix_oft", "ix_date", "ix_num", "ix_ref", "ix_uri", "ix_comp", "hist")),
        "DELETE FROM res WHERE type = 'AuditEvent'",
        "UPDATE ix_ref SET ttype = NULL, tid = NULL WHERE url IS NOT NULL AND tid IS NOT NULL",
        "CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit "
        "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: its rows are never changed'); END",
        "CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit "
        "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: its rows are never deleted'); END",
        "CREATE TRIGGER res_no_audit_event BEFORE INSERT ON res WHEN NEW.type = 'AuditEvent' "
        "BEGIN SELECT RAISE(ABORT, 'AuditEvents are kept in the audit log only'); END",
        "CREATE TRIGGER res_no_audit_event_type BEFORE UPDATE OF type ON res WHEN NEW.type = 'AuditEvent' "
        "BEGIN SELECT RAISE(ABORT, 'AuditEvents are kept in the audit log only'); END",
    ),
)

# Part of the stored registry fingerprint: a change in how index rows are keyed makes every
# existing database reindex once on start (2: parameter ids per resource type; 3: patient on
# token rows; 4: three-component composites; 5: the patient of each resource in res.pat).
INDEX_FORMAT = 5



def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this database has not seen; returns the schema version now."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, script in enumerate(MIGRATIONS, start=1):
        if number <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)
