"""The audit log is written by the server alone (issue 12): no client writes an AuditEvent on
any path, every read of AuditEvent comes from the log itself, and the database refuses
changes to the log on both backends.
"""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import psycopg
import pytest

from enjournal.fhir.searchparams import Registry
from enjournal.store import open_repository
from tests.access.conftest import as_citizen, as_gp, observation, outcome, with_json
from tests.conftest import new_pg_database

FORGED = {"resourceType": "AuditEvent", "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                                                 "code": "rest"},
          "recorded": "2026-01-01T00:00:00Z", "agent": [{"who": {"display": "nobody"}, "requestor": True}],
          "source": {"observer": {"display": "forger"}}}


def forged(patient_id: str, id_: str | None = None) -> dict:
    body = {**FORGED, "entity": [{"what": {"reference": f"Patient/{patient_id}"}}]}
    return {**body, "id": id_} if id_ else body


def writers(demo, people) -> dict:
    return {"system": demo.auth, "gp": as_gp(demo, people["silje"]), "citizen": as_citizen(demo, "silje")}


def audit_count(web, demo) -> int:
    r = web.get("/AuditEvent", params={"_count": 500}, headers=demo.auth)
    assert r.status_code == 200, r.text
    return len(r.json().get("entry", []))


@pytest.mark.parametrize("who", ["system", "gp", "citizen"])
def test_no_direct_or_conditional_write_of_an_auditevent(demo, web, people, who):
    headers = with_json(writers(demo, people)[who])
    A = people["silje"]
    writes = [
        ("POST", "/AuditEvent", forged(A)),
        ("PUT", "/AuditEvent/3", forged(A, "3")),
        ("PUT", "/AuditEvent/forged-id", forged(A, "forged-id")),
        ("PUT", "/AuditEvent?entity=Patient/" + A, forged(A)),
        ("PATCH", "/AuditEvent/3", [{"op": "replace", "path": "/outcome", "value": "0"}]),
        ("PATCH", "/AuditEvent?_id=3", [{"op": "replace", "path": "/outcome", "value": "0"}]),
        ("DELETE", "/AuditEvent/1", None),
        ("DELETE", "/AuditEvent?_id=1", None),
    ]
    for method, url, body in writes:
        extra = {"Content-Type": "application/json-patch+json"} if method == "PATCH" else {}
        r = web.request(method, url, json=body, headers={**headers, **extra})
        assert r.status_code == 405, (method, url, r.status_code, r.text)
        assert "append-only" in outcome(r)["diagnostics"]
    r = web.post("/AuditEvent", json=forged(A), headers={**headers, "If-None-Exist": "_id=1"})
    assert r.status_code == 405


@pytest.mark.parametrize("who", ["system", "gp", "citizen"])
def test_a_transaction_with_an_auditevent_is_refused_whole(demo, web, people, who):
    headers = with_json(writers(demo, people)[who])
    A = people["silje"]
    before = audit_count(web, demo)
    mine = observation(A, f"kept out by the refused AuditEvent ({who})")
    for entry in ({"request": {"method": "PUT", "url": "AuditEvent/3"}, "resource": forged(A, "3")},
                  {"request": {"method": "POST", "url": "AuditEvent"}, "resource": forged(A)},
                  {"request": {"method": "DELETE", "url": "AuditEvent/1"}},
                  {"request": {"method": "DELETE", "url": "AuditEvent?_id=1"}},
                  {"request": {"method": "PATCH", "url": "AuditEvent/1"},
                   "resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                                "data": "W3sib3AiOiJyZW1vdmUiLCJwYXRoIjoiL291dGNvbWUifV0="}}):
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "POST", "url": "Observation"}, "resource": mine}, entry]}
        r = web.post("/", json=bundle, headers=headers)
        assert r.status_code == 405, (entry["request"], r.text)
        assert outcome(r)["expression"][0] == "Bundle.entry[1]", r.text
    found = web.get("/Observation", params={"code:text": mine["code"]["text"], "subject": f"Patient/{A}"},
                    headers=demo.auth).json()
    assert not found.get("entry"), "the transaction was not rolled back"
    assert audit_count(web, demo) >= before       # nothing was removed from the log


@pytest.mark.parametrize("who", ["system", "gp", "citizen"])
def test_a_batch_refuses_each_auditevent_entry_and_runs_the_rest(demo, web, people, who):
    A = people["silje"]
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "PUT", "url": "AuditEvent/3"}, "resource": forged(A, "3")},
        {"request": {"method": "POST", "url": "AuditEvent"}, "resource": forged(A)},
        {"request": {"method": "DELETE", "url": "AuditEvent/1"}},
        {"request": {"method": "DELETE", "url": "AuditEvent?_id=1"}},
        {"request": {"method": "POST", "url": "Observation"}, "resource": observation(A, f"batch {who}")},
    ]}
    r = web.post("/", json=bundle, headers=with_json(writers(demo, people)[who]))
    assert r.status_code == 200, r.text
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses[:4] == ["405"] * 4, statuses
    assert statuses[4].startswith("201"), statuses


def test_reads_of_auditevent_come_from_the_log(demo, web, people):
    A = people["silje"]
    # a GP reads A's record, which the log records (the read of interest)
    assert web.get(f"/Patient/{A}", headers=as_gp(demo, A)).status_code == 200
    rows = web.get(f"/Patient/{A}/AuditEvent", params={"_count": 1}, headers=demo.auth)
    assert rows.status_code == 200, rows.text
    newest = rows.json()["entry"][0]["resource"]
    seq = newest["id"]
    plain = web.get(f"/AuditEvent/{seq}", headers=demo.auth)            # the plain-read fast path
    assert plain.status_code == 200 and plain.json() == newest
    assert web.get(f"/AuditEvent/{seq}", params={"_format": "json"}, headers=demo.auth).json() == newest
    assert web.get(f"/AuditEvent/{seq}/_history/1", headers=demo.auth).json() == newest
    history = web.get(f"/AuditEvent/{seq}/_history", headers=demo.auth).json()
    assert history["total"] == 1 and history["entry"][0]["resource"] == newest
    assert web.get(f"/AuditEvent/{seq}/_history/2", headers=demo.auth).status_code == 404
    batch = web.post("/", json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"AuditEvent/{seq}"}}]}, headers=with_json(demo.auth)).json()
    assert batch["entry"][0]["resource"] == newest
    # the log is the system's (privacy officers'); others are refused
    assert web.get(f"/AuditEvent/{seq}", headers=as_gp(demo, A)).status_code == 403
    assert web.get(f"/Patient/{A}/AuditEvent", headers=as_citizen(demo, "silje")).status_code == 403


def test_forged_auditevents_never_reach_a_patients_record(demo, web, people):
    A = people["silje"]
    for _ in range(2):
        web.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "PUT", "url": "AuditEvent/3"}, "resource": forged(A, "3")}]},
            headers=with_json(as_gp(demo, A)))
    everything = web.get(f"/Patient/{A}/$everything", params={"_count": 1000}, headers=demo.auth).json()
    assert not [e for e in everything.get("entry", []) if e["resource"]["resourceType"] == "AuditEvent"]
    for entry in web.get(f"/Patient/{A}/AuditEvent", params={"_count": 500}, headers=demo.auth).json()["entry"]:
        assert entry["resource"]["source"]["observer"]["display"] == "enjournal"
    assert "forger" not in web.get("/AuditEvent/3", headers=demo.auth).text


# -- the database itself refuses changes to the log ------------------------------------------

REGISTRY = Registry.default()


def _sqlite_repo(tmp_path):
    return open_repository(f"sqlite:///{tmp_path}/log.db", REGISTRY), f"{tmp_path}/log.db"


def test_sqlite_refuses_edits_and_deletes_of_audit_rows_and_auditevent_resources(tmp_path):
    repo, path = _sqlite_repo(tmp_path)
    repo.append_audit([(1, None, False, b'{"resourceType":"AuditEvent"}')] * 3)
    with repo.unit() as unit:
        unit.put("Patient", "p1", {"resourceType": "Patient"}, "PUT")
    repo.close()
    db = sqlite3.connect(path, isolation_level=None)
    for statement in ("UPDATE audit SET body = x'7b7d' WHERE seq = 2", "DELETE FROM audit WHERE seq = 3",
                      "DELETE FROM audit", "INSERT INTO res (rk, type, id, version, seq, updated) "
                                           "VALUES (99, 'AuditEvent', 'x', 1, 99, 0)",
                      "UPDATE res SET type = 'AuditEvent'"):
        with pytest.raises(sqlite3.DatabaseError, match="audit log"):
            db.execute(statement)
    assert db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 3
    db.close()


def test_postgresql_refuses_edits_deletes_and_truncate_of_audit_rows():
    url = new_pg_database("appendonly")
    repo = open_repository(url, REGISTRY)
    repo.append_audit([(1, None, False, b'{"resourceType":"AuditEvent"}')] * 3)
    repo.close()
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in ("UPDATE audit SET body = '\\x7b7d' WHERE seq = 2", "DELETE FROM audit WHERE seq = 3",
                          "TRUNCATE audit", "INSERT INTO res (pk, rk, type, id, version, seq, updated) "
                                            "VALUES (0, 99, 'AuditEvent', 'x', 1, 99, 0)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="audit log"):
                conn.execute(statement)
        assert conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 3


def test_the_upgrade_removes_auditevents_that_clients_wrote_into_the_resource_store(tmp_path):
    """A database of an earlier version, where a client had written an AuditEvent through a
    Bundle: after the upgrade the forgery is gone and the real log is untouched."""
    repo, path = _sqlite_repo(tmp_path)
    with repo.unit() as unit:
        unit.put("Patient", "p1", {"resourceType": "Patient"}, "PUT")
    repo.append_audit([(1, "p1", False, b'{"resourceType":"AuditEvent","outcome":"0"}')])
    repo.close()
    db = sqlite3.connect(path, isolation_level=None)
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        db.execute(f"DROP TRIGGER {name}")          # the database as version 7 had it
    db.execute("PRAGMA user_version = 7")
    rk = db.execute("SELECT MAX(rk) FROM res").fetchone()[0] + 1
    db.execute("INSERT INTO res (rk, type, id, version, seq, updated, deleted, pat) "
               "VALUES (?, 'AuditEvent', '3', 1, 1000, 0, 0, 'p1')", (rk,))
    db.execute("INSERT INTO hist (seq, rk, version, updated, method, tx, body) VALUES (1000, ?, 1, 0, 'PUT', 1000, ?)",
               (rk, json.dumps(forged("p1", "3")).encode()))
    db.close()
    repo = open_repository(f"sqlite:///{path}", REGISTRY)       # migrates
    assert repo.read("AuditEvent", "3") is None
    assert repo.read("Patient", "p1") is not None
    assert [r.seq for r in repo.audit_rows(0, 10)] == [1]
    repo.close()
    verify = subprocess.run([sys.executable, "-m", "enjournal.cli", "audit", "verify", "--database",
                             f"sqlite:///{path}"], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_import_refuses_auditevents_and_stores_nothing_of_their_file(tmp_path):
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "id": "imp-1"}},
        {"resource": forged("imp-1", "imp-forged")}]}
    ndjson = tmp_path / "in"
    ndjson.mkdir()
    (ndjson / "bundle.json").write_text(json.dumps(bundle))
    (ndjson / "AuditEvent.ndjson").write_text(json.dumps(forged("imp-1", "imp-forged-2")) + "\n")
    database = f"sqlite:///{tmp_path}/import.db"
    result = subprocess.run([sys.executable, "-m", "enjournal.cli", "import", "--database", database, str(ndjson)],
                            capture_output=True, text=True, timeout=120)
    assert "append-only" in result.stdout + result.stderr, result.stdout + result.stderr
    repo = open_repository(database, REGISTRY)
    try:
        assert repo.read("AuditEvent", "imp-forged") is None and repo.read("AuditEvent", "imp-forged-2") is None
        assert repo.read("Patient", "imp-1") is None          # its file is one transaction: all or nothing
    finally:
        repo.close()
