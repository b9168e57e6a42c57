"""The store's part of Bulk Data export (``export_batch``, ``job_*``), run against every
backend like the Repository contract (tests/store/test_repository_contract.py)."""
from __future__ import annotations

import pytest

from enjournal.fhir.searchparams import Registry
from enjournal.store import open_repository
from tests.conftest import BACKENDS, new_pg_database

REGISTRY = Registry.default()
T0 = 1_700_000_000_000


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        self.now += 1000
        return self.now


@pytest.fixture(params=BACKENDS)
def repo(request, tmp_path):
    if request.param == "postgres":
        r = open_repository(new_pg_database("export"), REGISTRY, clock=Clock(), pool_min=1, pool_max=4)
    else:
        r = open_repository(f"sqlite:///{tmp_path}/export.db", REGISTRY, clock=Clock())
    yield r
    r.close()


def obs(subject: str, *performers: str) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": f"Patient/{subject}"},
            **({"performer": [{"reference": f"Patient/{p}"} for p in performers]} if performers else {})}


@pytest.fixture
def stored(repo):
    """Patients a, b, c; o-a, o-b, o-c of each; o-ca of c and a (pat '*'); an Organization;
    a deleted Observation of a. Written one unit each, so each has its own time."""
    items = [("Patient", "a", {"resourceType": "Patient"}), ("Patient", "b", {"resourceType": "Patient"}),
             ("Patient", "c", {"resourceType": "Patient"}), ("Observation", "o-a", obs("a")),
             ("Observation", "o-b", obs("b")), ("Observation", "o-c", obs("c")),
             ("Observation", "o-ca", obs("c", "a")), ("Organization", "org", {"resourceType": "Organization"}),
             ("Observation", "gone", obs("a"))]
    times = {}
    for type_, id_, body in items:
        with repo.unit() as u:
            times[id_] = u.put(type_, id_, body, "PUT").updated
    with repo.unit() as u:
        u.put("Observation", "gone", None, "DELETE")
    return times


def ids(rows) -> list[str]:
    return [row[2].split(b'"id":"', 1)[1].split(b'"', 1)[0].decode() for row in rows]


def all_rows(repo, limit=2, **kwargs) -> list:
    out, after = [], 0
    while True:
        rows = repo.export_batch(after, limit, **kwargs)
        if not rows:
            return out
        assert len(rows) <= limit
        out += rows
        after = rows[-1][0]


def test_batches_are_current_resources_in_key_order(repo, stored):
    rows = all_rows(repo)
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    assert ids(rows) == ["a", "b", "c", "o-a", "o-b", "o-c", "o-ca", "org"]        # "gone" is deleted
    assert rows[0][1] == "Patient" and bytes(rows[0][2]) == repo.read("Patient", "a").body
    # id, version and the patient whose data it is ('*': of several), for the audit log
    assert [(r[3], r[4], r[5]) for r in rows] == [
        ("a", 1, "a"), ("b", 1, "b"), ("c", 1, "c"), ("o-a", 1, "a"), ("o-b", 1, "b"), ("o-c", 1, "c"),
        ("o-ca", 1, "*"), ("org", 1, None)]


def test_types_and_times(repo, stored):
    assert ids(all_rows(repo, types=("Organization", "Patient"))) == ["a", "b", "c", "org"]
    assert ids(all_rows(repo, since=stored["o-c"])) == ["o-c", "o-ca", "org"]
    assert ids(all_rows(repo, until=stored["b"])) == ["a", "b"]
    assert ids(all_rows(repo, types=("Observation",), since=stored["o-b"], until=stored["o-c"])) == ["o-b", "o-c"]


def test_compartments_and_patients(repo, stored):
    assert ids(all_rows(repo, compartments=True)) == ["a", "b", "c", "o-a", "o-b", "o-c", "o-ca"]
    # a resource of several patients is in when it refers to one of them
    assert ids(all_rows(repo, patients=("a",), compartments=True)) == ["a", "o-a", "o-ca"]
    assert ids(all_rows(repo, patients=("b",), compartments=True)) == ["b", "o-b"]
    assert ids(all_rows(repo, patients=("a", "c"), types=("Observation",), compartments=True)) == \
        ["o-a", "o-c", "o-ca"]
    assert all_rows(repo, patients=("nobody",), compartments=True) == []


def test_jobs(repo):
    assert repo.job_get("j1") is None
    repo.job_put("j1", "export", "iss|client", "running", '{"exported": 0}', T0)
    repo.job_put("j1", "export", "iss|client", "running", '{"exported": 5}', T0 + 10)
    assert repo.job_get("j1") == ("export", "iss|client", "running", T0, T0 + 10, '{"exported": 5}')
    repo.job_put("j1", "export", "iss|client", "cancelled", '{"exported": 5}', T0 + 20)
    # a cancelled job stays cancelled: a worker still running it cannot bring it back
    repo.job_put("j1", "export", "iss|client", "complete", '{"exported": 9}', T0 + 30)
    assert repo.job_get("j1")[2:5] == ("cancelled", T0, T0 + 20)
    repo.job_delete("j1")
    assert repo.job_get("j1") is None
