"""The PostgreSQL schema keeps the rules a distributed PostgreSQL (Citus) needs to spread it by
patient without change (docs/scaling.md): every table is either distributed or a reference
table, every unique key of a distributed table includes its distribution column, the
patient-scoped tables share one key type (co-location), and every row of a patient's data
carries that patient's key."""
from __future__ import annotations

import psycopg
import pytest

from enjournal.fhir.searchparams import Registry
from enjournal.store import open_repository
from enjournal.store.postgres.schema import DISTRIBUTED, REFERENCE, citus_statements, patient_key
from enjournal.store.sql.rows import INDEX_TABLES
from tests.conftest import new_pg_database

REGISTRY = Registry.default()


@pytest.fixture(scope="module")
def db():
    url = new_pg_database("citus")
    repo = open_repository(url, REGISTRY)
    with psycopg.connect(url, autocommit=True) as conn:
        yield repo, conn
    repo.close()


def _tables(conn) -> set[str]:
    return {r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").fetchall()}


def _unique_keys(conn, table: str) -> list[tuple[str, list[str]]]:
    """(index name, columns) of every unique index, primary keys included."""
    rows = conn.execute(
        "SELECT i.relname, array_agg(a.attname ORDER BY k.ord) FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
        "CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord) "
        "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum "
        "WHERE t.relname = %s AND x.indisunique GROUP BY i.relname", (table,)).fetchall()
    return [(name, list(cols)) for name, cols in rows]


def test_every_table_is_distributed_or_reference(db):
    _repo, conn = db
    tables = _tables(conn)
    unplaced = tables - set(DISTRIBUTED) - set(REFERENCE)
    assert not unplaced, f"tables with no place in a distributed database: {sorted(unplaced)}"
    assert not (set(DISTRIBUTED) & set(REFERENCE))
    assert set(DISTRIBUTED) | set(REFERENCE) <= tables


def test_unique_keys_include_the_distribution_column(db):
    _repo, conn = db
    for table, column in DISTRIBUTED.items():
        keys = _unique_keys(conn, table)
        for name, columns in keys:
            assert column in columns, f"{table}: unique index {name} {columns} lacks the distribution column {column}"


def test_distribution_columns_are_not_null_and_patient_tables_colocate(db):
    _repo, conn = db
    for table, column in DISTRIBUTED.items():
        row = conn.execute("SELECT data_type, is_nullable FROM information_schema.columns "
                           "WHERE table_name = %s AND column_name = %s", (table, column)).fetchone()
        assert row is not None, f"{table} has no column {column}"
        assert row[1] == "NO", f"{table}.{column} may be NULL"
        if column == "pk":
            assert row[0] == "bigint", f"{table}.pk is {row[0]}: co-located tables need one type"


def test_every_table_with_resource_rows_is_keyed_by_patient(db):
    """A table holding rows of a resource (column rk) must be distributed by the patient key,
    or a patient's search would join across machines."""
    _repo, conn = db
    with_rk = {r[0] for r in conn.execute(
        "SELECT table_name FROM information_schema.columns WHERE column_name = 'rk' "
        "AND table_schema = current_schema()").fetchall()}
    assert set(INDEX_TABLES) | {"res", "hist"} <= with_rk
    for table in with_rk - {"ident"}:
        assert DISTRIBUTED.get(table) == "pk", f"{table} holds resource rows but is not distributed by pk"


def test_no_foreign_keys_from_reference_to_distributed_tables(db):
    _repo, conn = db
    rows = conn.execute(
        "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c "
        "WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace").fetchall()
    for source, target in rows:
        assert not (source in REFERENCE and target in DISTRIBUTED), f"{source} -> {target}"
        if source in DISTRIBUTED and target in DISTRIBUTED:
            assert DISTRIBUTED[source] == DISTRIBUTED[target] == "pk"


def test_citus_statements_place_every_table(db):
    _repo, conn = db
    text = "\n".join(citus_statements())
    for table in _tables(conn):
        assert f"'{table}'" in text
    # the first distributed table is the one the others co-locate with
    assert citus_statements()[len(REFERENCE)].startswith("SELECT create_distributed_table('res', 'pk')")


def test_rows_carry_their_patients_key_and_move_with_it(db):
    repo, conn = db
    subject = {"reference": "Patient/citus-a"}
    with repo.unit() as u:
        u.put("Patient", "citus-a", {"resourceType": "Patient", "name": [{"family": "A"}]}, "PUT")
        u.put("Patient", "citus-b", {"resourceType": "Patient", "name": [{"family": "B"}]}, "PUT")
        u.put("Observation", "citus-o", {"resourceType": "Observation", "status": "final",
                                         "code": {"text": "x", "coding": [{"system": "s", "code": "c"}]},
                                         "subject": subject}, "PUT")
        u.put("Organization", "citus-org", {"resourceType": "Organization", "name": "Shared"}, "PUT")

    def keys_of(type_, id_):
        rk = conn.execute("SELECT rk FROM res WHERE type = %s AND id = %s", (type_, id_)).fetchone()[0]
        found = set()
        for table in ("res", "hist") + INDEX_TABLES:
            found |= {r[0] for r in conn.execute(f"SELECT DISTINCT pk FROM {table} WHERE rk = %s", (rk,))}
        found |= {r[0] for r in conn.execute("SELECT pk FROM ident WHERE type = %s AND id = %s", (type_, id_))}
        return found

    assert keys_of("Patient", "citus-a") == {patient_key("citus-a")}
    assert keys_of("Observation", "citus-o") == {patient_key("citus-a")}
    assert keys_of("Organization", "citus-org") == {0}
    assert patient_key("citus-a") != patient_key("citus-b") and patient_key(None) == 0

    with repo.unit() as u:
        u.put("Observation", "citus-o", {"resourceType": "Observation", "status": "final",
                                         "code": {"coding": [{"system": "s", "code": "c"}]},
                                         "subject": {"reference": "Patient/citus-b"}}, "PUT")
    rk = conn.execute("SELECT rk FROM res WHERE id = 'citus-o'").fetchone()[0]
    assert conn.execute("SELECT pk, pat FROM res WHERE rk = %s", (rk,)).fetchone() == (patient_key("citus-b"), "citus-b")
    for table in INDEX_TABLES:
        assert {r[0] for r in conn.execute(f"SELECT pk FROM {table} WHERE rk = %s", (rk,))} <= {patient_key("citus-b")}
    # the first version stays where it was written; the new one is with the new patient
    assert [r[0] for r in conn.execute("SELECT pk FROM hist WHERE rk = %s ORDER BY version", (rk,))] == \
        [patient_key("citus-a"), patient_key("citus-b")]
    assert conn.execute("SELECT pk FROM ident WHERE id = 'citus-o'").fetchone()[0] == patient_key("citus-b")
