"""The test run's private PostgreSQL cluster (tests/pgcluster.py) and the per-test databases
that tests/conftest.py makes in it."""
from __future__ import annotations

import psycopg

from tests.conftest import new_pg_database, pg_admin_url


def test_the_cluster_answers():
    admin = pg_admin_url()
    assert admin, "no test cluster: run `make test` or `python -m tests.pgcluster start`"
    with psycopg.connect(admin, connect_timeout=5) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()[0]
        assert int(version) >= 150000
        # the cluster is the test run's own: unix socket only
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == ""


def test_a_new_database_is_empty_utf8_and_c_collated(pg_url):
    with psycopg.connect(pg_url, connect_timeout=5) as conn:
        name, encoding, collate, ctype = conn.execute(
            "SELECT datname, pg_encoding_to_char(encoding), datcollate, datctype"
            " FROM pg_database WHERE datname = current_database()").fetchone()
        assert pg_url.split("?")[0].endswith("/" + name)
        assert (encoding, collate, ctype) == ("UTF8", "C", "C")
        tables = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')").fetchone()[0]
        assert tables == 0
        assert conn.execute("SELECT 'Ærø ✓'").fetchone()[0] == "Ærø ✓"


def test_two_calls_give_two_databases():
    first, second = new_pg_database("twice"), new_pg_database("twice")
    assert first != second
    with psycopg.connect(first, autocommit=True) as conn:
        conn.execute("CREATE TABLE only_here (x int)")
    with psycopg.connect(second) as conn:
        assert conn.execute("SELECT to_regclass('only_here')").fetchone()[0] is None
        names = {first.split("?")[0].rsplit("/", 1)[1], second.split("?")[0].rsplit("/", 1)[1]}
        assert all(len(n) <= 63 and n == n.lower() for n in names)


def test_long_prefixes_keep_names_unique_and_short():
    long = "A-Very-Long-Prefix-" * 5
    first, second = new_pg_database(long), new_pg_database(long)
    assert first != second
    for url in (first, second):
        with psycopg.connect(url) as conn:
            assert len(conn.execute("SELECT current_database()").fetchone()[0]) <= 63
