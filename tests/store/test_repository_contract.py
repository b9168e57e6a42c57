"""The Repository contract, run against every backend (SQLite and PostgreSQL). Each test
states one promise services rely on."""
from __future__ import annotations

import threading

import pytest

from enjournal import errors
from enjournal.fhir import query as fq
from enjournal.fhir.searchparams import Registry
from enjournal.store import open_repository
from tests.conftest import BACKENDS, new_pg_database

REGISTRY = Registry.default()


class Clock:
    def __init__(self):
        self.now = 1_700_000_000_000

    def __call__(self):
        self.now += 1000
        return self.now


@pytest.fixture(params=BACKENDS)
def repo(request, tmp_path):
    ids = iter(f"id{i}" for i in range(1_000_000))
    url = new_pg_database("contract") if request.param == "postgres" else f"sqlite:///{tmp_path}/contract.db"
    r = open_repository(url, REGISTRY, clock=Clock(), new_id=lambda: next(ids))
    yield r
    r.close()


def patient(family):
    return {"resourceType": "Patient", "name": [{"family": family}]}


def search(repo, type_, **params):
    query = fq.parse(type_, list(params.items()), REGISTRY)
    return [s.id for s in repo.load(repo.search(query).keys)]


def test_put_sets_meta_and_versions(repo):
    with repo.unit() as u:
        first = u.put("Patient", "a", patient("A"), "POST")
    with repo.unit() as u:
        second = u.put("Patient", "a", patient("B"), "PUT")
    assert (first.version, second.version) == (1, 2)
    assert b'"versionId":"2"' in repo.read("Patient", "a").body
    assert b'"family":"A"' in repo.vread("Patient", "a", 1).body
    assert repo.vread("Patient", "a", 3) is None


def test_expected_version_conflict(repo):
    with repo.unit() as u:
        u.put("Patient", "a", patient("A"), "POST")
    with pytest.raises(errors.PreconditionFailed):
        with repo.unit() as u:
            u.put("Patient", "a", patient("B"), "PUT", expected_version=5)
    assert repo.read("Patient", "a").version == 1


def test_rollback_leaves_nothing(repo):
    with pytest.raises(RuntimeError):
        with repo.unit() as u:
            u.put("Patient", "a", patient("Rollback"), "POST")
            raise RuntimeError("boom")
    assert repo.read("Patient", "a") is None
    assert search(repo, "Patient", family="Rollback") == []
    assert repo.feed(0, 10) == []


def test_delete_keeps_history_and_leaves_search(repo):
    with repo.unit() as u:
        u.put("Patient", "a", patient("Gone"), "POST")
    with repo.unit() as u:
        u.put("Patient", "a", None, "DELETE")
    stored = repo.read("Patient", "a")
    assert stored.deleted and stored.version == 2
    assert search(repo, "Patient", family="Gone") == []
    entries, total = repo.history("Patient", "a", None, None, 10, 0)
    assert total == 2 and [e.version for e in entries] == [2, 1] and entries[0].deleted


def test_reads_in_unit_see_own_writes_and_search_finds_them(repo):
    with repo.unit() as u:
        u.put("Patient", "a", patient("Inside"), "POST")
        page = u.search(fq.parse("Patient", [("family", "Inside")], REGISTRY))
        assert len(page.keys) == 1
        assert u.exists("Patient", "a")


def test_unit_reads_its_own_buffered_writes(repo):
    with repo.unit() as u:
        u.put("Patient", "a", patient("First"), "POST")
        assert b'"family":"First"' in u.read("Patient", "a").body
        u.put("Patient", "a", patient("Second"), "PUT")
        u.put("Patient", "b", patient("Other"), "PUT")
        assert u.read("Patient", "a").version == 2
        assert u.read("Patient", "nobody") is None
    assert b'"family":"Second"' in repo.read("Patient", "a").body
    assert search(repo, "Patient", family="Other") == ["b"]


def test_feed_is_commit_order_with_transaction_ids(repo):
    with repo.unit() as u:
        u.put("Patient", "a", patient("A"), "POST")
        u.put("Patient", "b", patient("B"), "POST")
    with repo.unit() as u:
        u.put("Patient", "a", None, "DELETE")
    feed = repo.feed(0, 10)
    assert [(e.id, e.method) for e in feed] == [("a", "POST"), ("b", "POST"), ("a", "DELETE")]
    assert feed[0].tx == feed[1].tx != feed[2].tx
    assert repo.feed(feed[1].seq, 10) == feed[2:]


def test_cursor_moves_only_with_commit(repo):
    with repo.unit() as u:
        u.set_cursor("c", 5)
    with pytest.raises(RuntimeError):
        with repo.unit() as u:
            u.set_cursor("c", 9)
            raise RuntimeError
    assert repo.cursor("c") == 5


def test_snapshot_keeps_pages_stable(repo):
    with repo.unit() as u:
        for i in range(5):
            u.put("Patient", f"p{i}", patient("Same"), "POST")
    query = fq.parse("Patient", [("family", "Same"), ("_count", "2")], REGISTRY)
    first = repo.search(query)
    with repo.unit() as u:
        u.put("Patient", "late", patient("Same"), "POST")
    query.offset, query.snapshot = 2, first.snapshot
    second = repo.search(query)
    query.offset = 4
    third = repo.search(query)
    ids = [s.id for s in repo.load(first.keys + second.keys + third.keys)]
    assert ids == [f"p{i}" for i in range(5)]


def test_concurrent_units_serialise(repo):
    with repo.unit() as u:
        u.put("Patient", "counter", {"resourceType": "Patient", "multipleBirthInteger": 0}, "POST")

    def bump():
        for _ in range(20):
            with repo.unit() as u:
                import orjson
                body = orjson.loads(u.read("Patient", "counter").body)
                body["multipleBirthInteger"] += 1
                u.put("Patient", "counter", body, "PUT")

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b'"multipleBirthInteger":80' in repo.read("Patient", "counter").body
    assert repo.read("Patient", "counter").version == 81
