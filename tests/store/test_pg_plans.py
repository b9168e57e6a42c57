"""How PostgreSQL plans the platform's statements (docs/postgresql.md, "Plans").

Two measured traps: a search run as a prepared statement got PostgreSQL's generic plan after
five runs and became 10-40x slower for patients with many resources (the plan cannot see
the patient's values); and a read by id planned afresh at every run spent ~130 us of server
CPU per GET on planning. So searches are planned for their values at every run (on
connections of their own, still prepared: parsing a search costs ~0.35 ms), and lookups by
key keep one generic plan, as does one patient's page whose plan the SQL fixes. Each
session's ``pg_prepared_statements`` shows which.
"""
from __future__ import annotations

import pytest

from enjournal.fhir import query as fq
from enjournal.fhir.searchparams import Registry
from enjournal.store import open_repository
from tests.conftest import new_pg_database

REGISTRY = Registry.default()


@pytest.fixture()
def repo():
    # one connection, so the session inspected below is the one that ran the statements
    r = open_repository(new_pg_database("plans"), REGISTRY, pool_min=1, pool_max=1)
    yield r
    r.close()


def _observation(i: int, patient: str, code: str) -> dict:
    return {"resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{patient}"},
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "effectiveDateTime": f"2024-01-{1 + i % 28:02d}"}


def _prepared(pool) -> list[tuple[str, int, int]]:
    with pool.connection() as conn:
        return conn.execute("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements").fetchall()


def _is_search(statement: str) -> bool:
    return "ix_tok" in statement or "ORDER BY" in statement


def test_searches_are_planned_for_their_values_and_reads_keep_one_plan(repo):
    with repo.unit() as u:
        for p in ("many", "few"):
            u.put("Patient", p, {"resourceType": "Patient", "name": [{"family": p}]}, "PUT")
        for i in range(120):
            u.put("Observation", f"m{i}", _observation(i, "many", "8867-4" if i % 2 else "8310-5"), "PUT")
        u.put("Observation", "f0", _observation(0, "few", "8867-4"), "PUT")
    found = {}
    for _ in range(12):
        for p in ("many", "few"):
            query = fq.parse("Observation", [("patient", p), ("code", "http://loinc.org|8867-4"),
                                             ("_sort", "-date")], REGISTRY)
            found[p] = len(repo.search(query).keys)
        assert repo.read("Observation", "m1") is not None
        with repo.unit() as u:          # a conditional create's search, inside a transaction
            query = fq.parse("Observation", [("patient", "many"), ("code", "http://loinc.org|8867-4")], REGISTRY)
            assert len(u.search(query).keys) == 20
    assert found == {"many": 20, "few": 1}          # the page size, and the one match

    searches = [(s, g, c) for s, g, c in _prepared(repo.valued_pool) if _is_search(s)]
    assert searches, "the searches were not prepared"
    assert all(g == 0 and c >= 10 for _s, g, c in searches), f"a search got a generic plan: {searches}"

    statements = _prepared(repo.pool)
    in_units = [s for s, _g, _c in statements if _is_search(s)]
    assert in_units == [], f"a search in a unit was prepared (it may get a generic plan): {in_units}"
    reads = [(g, c) for s, g, c in statements if s.startswith("SELECT r.version, r.updated, r.deleted, h.body")]
    assert len(reads) == 1, statements
    generic, custom = reads[0]
    assert generic >= 5 and custom <= 6, f"the read by id was planned at each run: {generic} generic, {custom} custom"


def test_one_patients_page_keeps_one_generic_plan_other_searches_are_planned_each_time(repo):
    """A page read from one patient's rows of the driving index, every other clause a fenced
    probe, has the same plan whatever the values: it keeps a generic plan (planning such a
    search cost ~1 ms, a third of it). A search by code alone does not: its plan depends on
    how common the code is."""
    with repo.unit() as u:
        for p in ("many", "few"):
            u.put("Patient", p, {"resourceType": "Patient", "name": [{"family": p}]}, "PUT")
        for i in range(120):
            u.put("Observation", f"m{i}", _observation(i, "many", "8867-4" if i % 2 else "8310-5"), "PUT")
        u.put("Observation", "f0", _observation(0, "few", "8867-4"), "PUT")
    found = {}
    for _ in range(12):
        for p in ("many", "few"):
            query = fq.parse("Observation", [("subject", f"Patient/{p}"), ("code", "http://loinc.org|8867-4"),
                                             ("_sort", "-date"), ("_count", "25")], REGISTRY)
            page = repo.search(query)
            found[p] = [s.id for s in repo.load(page.keys)]
        query = fq.parse("Observation", [("code", "http://loinc.org|8867-4"), ("_sort", "-date")], REGISTRY)
        assert len(repo.search(query).keys) == 20
    # newest first, then in the order stored
    newest = sorted((i for i in range(120) if i % 2), key=lambda i: (-(i % 28), i))
    assert found == {"many": [f"m{i}" for i in newest[:25]], "few": ["f0"]}
    one_patient = [(g, c) for s, g, c in _prepared(repo.pool) if "cp = $" in s]
    assert one_patient and one_patient[0][0] >= 5, f"one patient's page was planned at each run: {one_patient}"
    by_code = [(g, c) for s, g, c in _prepared(repo.valued_pool) if "ix_tok" in s and "cp = $" not in s]
    assert by_code and all(g == 0 for g, _c in by_code), by_code


def test_a_read_prepares_its_statement_again_on_a_connection_that_lost_it(repo):
    with repo.unit() as u:
        u.put("Patient", "p1", {"resourceType": "Patient", "name": [{"family": "One"}]}, "PUT")
        u.put("Patient", "gone", {"resourceType": "Patient"}, "PUT")
    with repo.unit() as u:
        u.put("Patient", "gone", None, "DELETE")
    first = repo.read("Patient", "p1")
    with repo.pool.connection() as conn:
        conn.execute("DEALLOCATE ALL")          # as after a connection pooler's reset
    again = repo.read("Patient", "p1")
    assert again == first and b'"family":"One"' in again.body
    gone = repo.read("Patient", "gone")
    assert (gone.deleted, gone.body, gone.version) == (True, None, 2)
    assert repo.read("Patient", "nobody") is None
    assert repo.read("Patient", "p1\x00") is None       # libpq would cut the value at the NUL


def test_a_read_after_the_server_dropped_the_connection_gets_a_new_one(repo):
    import psycopg
    with repo.unit() as u:
        u.put("Patient", "p1", {"resourceType": "Patient"}, "PUT")
    with repo.pool.connection() as conn:
        pid = conn.info.backend_pid
    with psycopg.connect(repo.url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    outcomes = []
    for _ in range(3):
        try:
            outcomes.append(repo.read("Patient", "p1").version)
        except psycopg.OperationalError:
            outcomes.append("lost")
    # the broken connection fails at most the one read that finds it broken, then is replaced
    assert outcomes[-2:] == [1, 1] and outcomes.count("lost") <= 1, outcomes


def test_a_patients_compartment_is_planned_for_the_patient_and_never_jit_compiled(repo):
    """After five runs a prepared compartment query fell back to a generic plan 3x slower for a
    patient with 3,000 resources; and a misestimated one was JIT-compiled for 40-50 ms."""
    from enjournal.fhir.compartments import compartment_params, compartment_types
    params = [(t, REGISTRY.get(t, code)) for t in compartment_types("Patient")
              for code in compartment_params("Patient", t) if REGISTRY.get(t, code) is not None]
    with repo.unit() as u:
        u.put("Patient", "many", {"resourceType": "Patient"}, "PUT")
        for i in range(30):
            u.put("Observation", f"m{i}", _observation(i, "many", "8867-4"), "PUT")
    for _ in range(8):
        members, referenced = repo.compartment("Patient", "many", params)
        assert len(members) == 30 and referenced == []
    runs = [(g, c) for s, g, c in _prepared(repo.valued_pool) if "WITH m AS MATERIALIZED" in s]
    assert runs and runs[0][0] == 0 and runs[0][1] >= 6, runs       # past the fifth run, still custom
    for pool in (repo.pool, repo.valued_pool):
        with pool.connection() as conn:
            assert conn.execute("SHOW jit").fetchone()[0] == "off"
