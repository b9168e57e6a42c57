"""The audit log: AuditEvent content (valid R4, no fødselsnummer), the hash chain under
concurrent batched appends, detection of each kind of tampering (``verify`` and the CLI),
emergency-access grants, and a write's record sharing the write's transaction."""
from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from enjournal import errors
from enjournal.access.audit import (ANCHOR, BROKEN, DELETED, EDITED, HEAD, MAX_ENTITIES, REORDERED, AuditLog,
                                    build_event, event_rows, verify)
from enjournal.access.context import AccessContext, Touched
from enjournal.access.policy import Decision
from enjournal.access.principal import Attestation, Principal, Subject
from enjournal.fhir.searchparams import Registry
from enjournal.fhir.validation import validate_resource
from enjournal.store import GENESIS, audit_hash, open_repository

REGISTRY = Registry.default()
NOW = 1_790_000_000_123
FNR = "02013299997"
OTHER_FNR = "15076500565"


class Clock:
    def __init__(self):
        self.now = NOW

    def __call__(self):
        self.now += 1
        return self.now


@pytest.fixture
def repo(tmp_path):
    r = open_repository(f"sqlite:///{tmp_path}/audit.db", REGISTRY, clock=Clock())
    yield r
    r.close()


def doctor(**kw) -> Principal:
    values = dict(kind="personnel", subject="sub-1", issuer="https://helseid", name="Kari Lege", pid=OTHER_FNR,
                  hpr="9144900", hpr_category="LE", org="974589095", org_name="Testsykehuset HF",
                  client_id="epj-client", token_id="jti-1")
    values.update(kw)
    return Principal(**values)


def citizen(**kw) -> Principal:
    values = dict(kind="citizen", subject="pairwise-sub", issuer="https://idporten", name="Ola Nordmann",
                  pid=FNR, client_id="helsenorge")
    values.update(kw)
    return Principal(**values)


def context(principal: Principal | None, attestation: Attestation = Attestation(), patient: str | None = None,
            **kw) -> AccessContext:
    subject = Subject(principal, attestation, patient) if principal is not None else None
    values = dict(method="GET", path="/Observation/o1", interaction="read", client_address="10.1.2.3", status=200)
    values.update(kw)
    return AccessContext(subject, **values)


def read_ctx(n: int = 0) -> AccessContext:
    ctx = context(doctor(), Attestation("TREAT", "Patient/p1"), "p1")
    ctx.touched.append(Touched("Observation", f"o{n}", 1, "p1", "R"))
    ctx.basis = Decision(True, "care relationship attested", "TREAT", 200)
    return ctx


def body_of(event: dict) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode()


def assert_valid(event: dict) -> None:
    issues = validate_resource(event)
    assert not issues, [(i.diagnostics, i.expression) for i in issues]


# -- the AuditEvent --------------------------------------------------------------------------

def test_read_by_health_personnel():
    event = build_event(read_ctx(), NOW)
    assert_valid(event)
    assert event["type"]["code"] == "rest"
    assert event["subtype"] == [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}]
    assert event["action"] == "R" and event["outcome"] == "0"
    assert event["recorded"] == "2026-09-21T14:13:20.123Z"
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
    person, org = event["agent"]
    assert person["who"]["identifier"] == {"system": "urn:oid:2.16.578.1.12.4.1.4.4", "value": "9144900"}
    assert person["who"]["display"] == "Kari Lege"
    assert person["role"][0]["coding"][0] == {"system": "urn:oid:2.16.578.1.12.4.1.1.9060", "code": "LE"}
    assert person["requestor"] is True and person["altId"] == "epj-client"
    assert person["network"] == {"address": "10.1.2.3", "type": "2"}
    assert org["who"]["identifier"] == {"system": "urn:oid:2.16.578.1.12.4.1.4.101", "value": "974589095"}
    assert org["requestor"] is False
    assert event["source"]["observer"]["display"] == "enjournal"
    patient, resource = event["entity"]
    assert patient["what"]["reference"] == "Patient/p1"
    assert patient["type"]["code"] == "1" and patient["role"]["code"] == "1"
    assert resource["what"]["reference"] == "Observation/o0/_history/1"
    assert OTHER_FNR.encode() not in body_of(event)     # the clinician's own number neither


def test_references_take_the_base():
    event = build_event(read_ctx(), NOW, base="https://fhir.example.no/r4/")
    assert event["entity"][1]["what"]["reference"] == "https://fhir.example.no/r4/Observation/o0/_history/1"


def test_a_citizen_is_their_patient_and_no_fodselsnummer_is_written():
    ctx = context(citizen(), Attestation(patient=FNR), "p7", path=f"/Patient/{FNR}/Observation",
                  query=f"subject:Patient.identifier=urn:oid:2.16.578.1.12.4.1.4.1%7C{FNR}",
                  interaction="search-type")
    ctx.touched.append(Touched("Observation", None, None, "p7", "R",
                               f"subject:Patient.identifier=urn:oid:2.16.578.1.12.4.1.4.1|{FNR}"))
    ctx.touched.append(Touched("Observation", "o1", 3, "p7", "R"))
    ctx.basis = Decision(True, f"own record {FNR}", "own-record", 200)
    event = build_event(ctx, NOW)
    assert_valid(event)
    assert event["agent"][0]["who"] == {"reference": "Patient/p7", "display": "Ola Nordmann"}
    query = [e for e in event["entity"] if "query" in e][0]
    assert "***********" in base64.b64decode(query["query"]).decode()
    for _recorded, _patient, _emergency, body in event_rows(ctx, NOW):
        for text in (body, json.dumps(json.loads(body)).encode()):
            assert FNR.encode() not in text
            assert base64.b64encode(FNR.encode()) not in text
        decoded = b"".join(base64.b64decode(e["query"]) for e in json.loads(body)["entity"] if "query" in e)
        assert FNR.encode() not in decoded


def test_a_failed_citizen_request_leaks_no_fodselsnummer_either():
    ctx = context(citizen(), Attestation(patient=FNR), None, path=f"/Patient/{FNR}", status=404,
                  query=f"x={FNR}")
    ctx.denied = Decision(False, "not found", status=404)
    rows = event_rows(ctx, NOW)
    assert len(rows) == 1 and FNR.encode() not in rows[0][3]
    event = json.loads(rows[0][3])
    assert_valid(event)
    assert event["agent"][0]["who"] == {"display": "Ola Nordmann"}      # acting for someone: no reference
    assert event["entity"][0]["what"]["reference"] == "Patient/***********"


def test_a_parent_is_shown_by_name_and_role():
    ctx = context(citizen(), Attestation(patient="Patient/child"), "child")
    ctx.touched.append(Touched("Observation", "o1", 1, "child", "R"))
    ctx.basis = Decision(True, "parent of a child under 12", "parent", 200)
    event = build_event(ctx, NOW)
    assert_valid(event)
    assert event["agent"][0]["who"] == {"display": "Ola Nordmann"}
    assert event["agent"][0]["role"] == [{"text": "parent"}]
    assert event["entity"][0]["what"]["reference"] == "Patient/child"
    assert event["extension"] == [{"url": "https://enjournal.no/fhir/StructureDefinition/access-basis",
                                   "extension": [{"url": "basis", "valueCode": "parent"},
                                                 {"url": "reason", "valueString": "parent of a child under 12"}]}]


@pytest.mark.parametrize("status, denied, outcome, text", [
    (403, Decision(False, "the patient has blocked this health person from the record"), "4",
     "access denied: the patient has blocked this health person from the record"),
    (404, Decision(False, "not found", status=404), "4", "access denied: not found"),
    (400, None, "4", "request failed (HTTP 400)"),
    (500, None, "8", "server error (HTTP 500)"),
])
def test_outcomes(status, denied, outcome, text):
    ctx = context(doctor(), Attestation("TREAT", "Patient/p1"), "p1", status=status)
    ctx.denied = denied
    event = build_event(ctx, NOW)
    assert_valid(event)
    assert (event["outcome"], event["outcomeDesc"]) == (outcome, text)
    # nothing was touched: the event still says what was asked for and whose data
    assert [e["what"]["reference"] for e in event["entity"]] == ["Patient/p1", "Observation/o1"]


def test_an_unauthenticated_request_is_recorded():
    event = build_event(context(None, status=401, path="/Patient", query="name=x", interaction="search-type"), NOW)
    assert_valid(event)
    assert event["outcome"] == "4" and event["outcomeDesc"] == "not authenticated (HTTP 401)"
    assert event["agent"][0]["who"] == {"display": "unauthenticated caller"}
    assert base64.b64decode(event["entity"][0]["query"]) == b"name=x"


def test_emergency_access_is_flagged_for_review_with_its_reason():
    ctx = context(doctor(), Attestation("BTG", "Patient/p1", "unconscious, no relatives reachable"), "p1")
    ctx.touched.append(Touched("AllergyIntolerance", "a1", 1, "p1", "R"))
    ctx.emergency = True
    ctx.basis = Decision(True, "break the glass", "BTG", 200, emergency=True)
    rows = event_rows(ctx, NOW)
    assert rows[0][1:3] == ("p1", True)
    event = json.loads(rows[0][3])
    assert_valid(event)
    assert event["meta"]["tag"][0]["system"] == "https://enjournal.no/fhir/CodeSystem/audit-flag"
    assert event["meta"]["tag"][0]["code"] == "review-required"
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "BTG"
    assert event["entity"][0]["detail"] == [{"type": "emergency-reason",
                                             "valueString": "emergency access: unconscious, no relatives reachable"}]
    assert "extension" not in event          # the basis is the purpose of use: said once


@pytest.mark.parametrize("method, interaction, letters, action", [
    ("POST", "create", "C", "C"), ("PUT", "update", "U", "U"), ("PATCH", "patch", "U", "U"),
    ("DELETE", "delete", "D", "D"), ("POST", "transaction", "CU", "E"), ("GET", "search-type", "", "R"),
    ("POST", "search-type", "", "R"), ("POST", "operation", "", "E"), ("DELETE", "delete", "", "D"),
])
def test_actions(method, interaction, letters, action):
    ctx = context(doctor(), Attestation("TREAT", "Patient/p1"), "p1", method=method, interaction=interaction)
    for n, letter in enumerate(letters):
        ctx.touched.append(Touched("Observation", f"o{n}", 1, "p1", letter))
    event = build_event(ctx, NOW)
    assert event["action"] == action
    assert_valid(event)


def test_a_search_records_its_query_in_base64_and_every_resource():
    ctx = context(doctor(), Attestation("TREAT", "Patient/p1"), "p1", method="GET", path="/Observation",
                  query="code=1234-5&_count=2", interaction="search-type")
    ctx.touched.append(Touched("Observation", None, None, "p1", "R", "code=1234-5&_count=2"))
    ctx.touched += [Touched("Observation", f"o{n}", 2, "p1", "R") for n in range(2)]
    event = build_event(ctx, NOW)
    assert_valid(event)
    query = event["entity"][1]
    assert query["role"]["code"] == "24" and "name" not in query          # sev-1: query or name
    assert base64.b64decode(query["query"]) == b"code=1234-5&_count=2"
    assert [e["what"]["reference"] for e in event["entity"][2:]] == ["Observation/o0/_history/2",
                                                                     "Observation/o1/_history/2"]


def test_entities_are_capped_and_the_rest_counted():
    ctx = context(doctor(), Attestation("TREAT", "Patient/p1"), "p1", interaction="search-type")
    ctx.touched += [Touched("Observation", f"o{n}", 1, "p1", "R") for n in range(500)]
    event = build_event(ctx, NOW)
    assert_valid(event)
    assert len(event["entity"]) == MAX_ENTITIES
    omitted = [e for e in event["extension"] if e["url"].endswith("audit-entities-omitted")]
    assert omitted == [{"url": "https://enjournal.no/fhir/StructureDefinition/audit-entities-omitted",
                        "valueInteger": 501 - MAX_ENTITIES}]


def test_one_row_per_patient_each_with_only_that_patients_part():
    system = Principal(kind="system", subject="registry", issuer="enjournal", name="SYSVAK export",
                       client_id="sysvak")
    ctx = context(system, interaction="search-type", path="/Immunization", query="date=ge2026")
    ctx.touched.append(Touched("Immunization", None, None, None, "R", "date=ge2026"))
    ctx.touched += [Touched("Immunization", "i1", 1, "p1", "R"), Touched("Immunization", "i2", 1, "p2", "R"),
                    Touched("Medication", "m1", 1, None, "R")]
    rows = event_rows(ctx, NOW)
    assert [r[1] for r in rows] == ["p1", "p2"]
    first = json.loads(rows[0][3])
    assert_valid(first)
    refs = [e.get("what", {}).get("reference") for e in first["entity"]]
    assert refs == ["Patient/p1", None, "Immunization/i1/_history/1", "Medication/m1/_history/1"]
    assert b"p2" not in rows[0][3]
    assert {"url": "https://enjournal.no/fhir/StructureDefinition/audit-patient-count", "valueInteger": 2} \
        in first["extension"]
    assert first["agent"][0]["type"]["coding"][0]["code"] == "110150"
    assert len(build_event(ctx, NOW)["entity"]) == 6       # the whole request: both patients


def test_a_request_about_no_patient_is_one_row_without_patient():
    system = Principal(kind="system", subject="s", issuer="enjournal", client_id="admin")
    ctx = context(system, interaction="read", path="/Medication/m1")
    ctx.touched.append(Touched("Medication", "m1", 4, None, "R"))
    assert [(r[1], r[2]) for r in event_rows(ctx, NOW)] == [(None, False)]


def varied_contexts() -> list[AccessContext]:
    """Requests that differ in one thing each, from the same two principals."""
    gp, me = doctor(), citizen()
    out = []
    for status, denied, emergency in ((200, None, False), (403, Decision(False, "blocked"), False),
                                      (200, None, True), (500, None, False), (200, Decision(False, "hidden"), False)):
        ctx = context(gp, Attestation("ETREAT" if emergency else "TREAT", "Patient/p1", "akutt"), "p1",
                      status=status)
        ctx.denied, ctx.emergency = denied, emergency
        ctx.touched.append(Touched("Observation", "o1", 1, "p1", "R"))
        out.append(ctx)
    for patient in ("p1", "p2"):
        ctx = context(me, patient=patient, client_address="192.168.0.9")
        ctx.basis = Decision(True, "own record", "own-record", 200)
        ctx.touched.append(Touched("Observation", "o1", 1, patient, "R"))
        out.append(ctx)
    ctx = context(gp, Attestation("TREAT", "Patient/p1"), "p1", method="POST", interaction="transaction")
    ctx.touched += [Touched("Observation", "o1", 1, "p1", "C"), Touched("Observation", "o2", 3, "p1", "U")]
    out.append(ctx)
    out.append(context(None, status=401))
    return out


def test_stored_rows_are_the_events_and_remembered_parts_never_leak_between_requests():
    from enjournal.access.audit import EventBuilder
    builder = EventBuilder()
    contexts = varied_contexts()
    for _round in range(2):                 # the second round is served from the builder's memory
        for ctx in contexts:
            rows = builder.rows(ctx, NOW)
            assert len(rows) == 1
            assert json.loads(rows[0][3]) == build_event(ctx, NOW)
    bodies = {builder.rows(ctx, NOW)[0][3] for ctx in contexts}
    assert len(bodies) == len(contexts)


# -- the chain -------------------------------------------------------------------------------

def test_batched_appends_from_many_threads_form_one_chain(repo):
    log = AuditLog(repo, flush_ms=5, batch=50)
    threads = [threading.Thread(target=lambda k=k: [log.record(read_ctx(k * 1000 + n)) for n in range(250)])
               for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    report = verify(repo)
    assert report.ok and report.rows == 2000, report.summary()
    assert report.head_hash == repo.get_setting("audit.head").split(":")[1]
    rows = repo.audit_rows(0, 10_000)
    assert [r.seq for r in rows] == list(range(1, 2001))
    assert rows[0].prev == GENESIS and rows[1].prev == rows[0].hash
    assert rows[0].hash == audit_hash(GENESIS, 1, rows[0].body)
    assert len({json.loads(r.body)["entity"][1]["what"]["reference"] for r in rows}) == 2000


APPENDER = """
import sys
from enjournal.fhir.searchparams import Registry
from enjournal.store import open_repository
repo = open_repository(sys.argv[1], Registry.default())
for n in range(100):
    repo.append_audit([(n, "p1", False, b'{"n": %d, "who": "%s"}' % (n, sys.argv[2].encode()))] * 3)
repo.close()
"""


def test_processes_appending_at_once_keep_one_chain(repo, tmp_path):
    url = f"sqlite:///{tmp_path}/audit.db"
    workers = [subprocess.Popen([sys.executable, "-c", APPENDER, url, name]) for name in ("a", "b", "c")]
    fill(repo, 50)                      # and this process too
    assert [w.wait(timeout=120) for w in workers] == [0, 0, 0]
    report = verify(repo)
    assert report.ok and report.rows == 3 * 300 + 50, report.summary()


def test_the_background_thread_flushes_by_itself(repo):
    log = AuditLog(repo, flush_ms=10)
    log.record(read_ctx())
    deadline = time.time() + 5
    while not repo.audit_rows(0, 10) and time.time() < deadline:
        time.sleep(0.01)
    assert len(repo.audit_rows(0, 10)) == 1
    log.close()


def test_flush_writes_synchronously_and_close_keeps_later_records(repo):
    log = AuditLog(repo, flush_ms=60_000)
    log.record(read_ctx(1))
    log.record(read_ctx(2))
    assert log.flush() == 2
    assert len(repo.audit_rows(0, 10)) == 2
    log.close()
    log.record(read_ctx(3))            # after close: written at once
    assert len(repo.audit_rows(0, 10)) == 3 and verify(repo).ok


def test_a_record_that_cannot_be_built_is_still_written(repo):
    log = AuditLog(repo)
    ctx = read_ctx()
    ctx.touched.append("not a Touched")          # a bug elsewhere must not leave the request unlogged
    log.record(ctx)
    log.close()
    event = json.loads(repo.audit_rows(0, 10)[0].body)
    assert_valid(event)
    assert event["outcomeDesc"].startswith("audit record incomplete (AttributeError)")


def test_bad_settings_are_refused(repo):
    with pytest.raises(errors.Invalid):
        AuditLog(repo, flush_ms=0)


def test_a_write_and_its_record_commit_together(repo):
    log = AuditLog(repo)
    ctx = context(doctor(), Attestation("TREAT", "Patient/p1"), "p1", method="POST", interaction="create",
                  status=0)
    with repo.unit() as unit:
        stored = unit.put("Observation", "o9", {"resourceType": "Observation", "status": "final",
                                                "code": {"text": "x"}}, "POST")
        ctx.touched.append(Touched("Observation", "o9", stored.version, "p1", "C"))
        log.record_in(unit, ctx)
    rows = repo.audit_rows(0, 10)
    assert len(rows) == 1 and json.loads(rows[0].body)["action"] == "C"
    with pytest.raises(RuntimeError):
        with repo.unit() as unit:
            unit.put("Observation", "o10", {"resourceType": "Observation", "status": "final",
                                            "code": {"text": "y"}}, "POST")
            log.record_in(unit, ctx)
            raise RuntimeError("the write fails after its record was appended")
    assert len(repo.audit_rows(0, 10)) == 1 and repo.read("Observation", "o10") is None
    log.record(read_ctx())
    log.close()
    assert verify(repo).ok and verify(repo).rows == 2


def test_reading_the_log(repo):
    log = AuditLog(repo)
    log.record(read_ctx(1))
    other = context(doctor(hpr="1234567", name="Per Sykepleier"), Attestation("ETREAT", "Patient/p2", "akutt"),
                    "p2")
    other.emergency = True
    log.record(other)
    log.record(context(citizen(), patient="p1"))
    log.flush()
    mine = repo.audit_for_patient("p1", 10, 0)
    assert [r.seq for r in mine] == [3, 1]                  # newest first
    assert repo.audit_for_patient("p1", 1, 1)[0].seq == 1
    assert repo.audit_for_patient("p1", 10, 0, since=NOW + 3) == repo.audit_for_patient("p1", 10)[:1]
    assert [r.seq for r in repo.audit_search(agent="1234567")] == [2]
    assert [r.seq for r in repo.audit_search(agent="974589095")] == [2, 1]      # the organisation
    assert [r.seq for r in repo.audit_search(agent="Patient/p1")] == [3]        # the citizen
    assert [r.seq for r in repo.audit_search(emergency=True)] == [2]
    assert [r.seq for r in repo.audit_search(patient="p2", emergency=False)] == []
    assert repo.audit_get(2).emergency is True and repo.audit_get(2).patient == "p2"
    assert repo.audit_get(99) is None
    log.close()


def test_grants(repo):
    assert repo.grants("p1") == []
    with repo.unit() as unit:
        unit.add_grant("p1", "9144900", NOW + 60_000, "unconscious", NOW)
        unit.add_grant("p1", "1234567", NOW - 1, "expired", NOW - 100_000)
        unit.add_grant("p2", "9144900", NOW + 1, "other patient", NOW)
    assert repo.grants("p1") == [("1234567", NOW - 1, "expired"), ("9144900", NOW + 60_000, "unconscious")]
    with pytest.raises(errors.Invalid):
        with repo.unit() as unit:
            unit.add_grant("p1", "", NOW, "no hpr", NOW)


# -- tampering -------------------------------------------------------------------------------

def fill(repo, n: int = 10) -> None:
    log = AuditLog(repo)
    for k in range(n):
        log.record(read_ctx(k))
    log.close()


def run_cli(path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enjournal.cli", "audit", "verify", "--database",
                           f"sqlite:///{path}", *extra], capture_output=True, text=True, timeout=60)


def drop_guards(db):
    """What someone with write access to the database file can do first: drop the triggers
    that refuse changes to the audit log (test_the_database_refuses_changes_to_the_log)."""
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit'"
                              ).fetchall():
        db.execute(f"DROP TRIGGER {name}")


def edit_body(db):
    body = db.execute("SELECT body FROM audit WHERE seq = 4").fetchone()[0]
    db.execute("UPDATE audit SET body = ? WHERE seq = 4", (body.replace(b"o3", b"o8"),))


def edit_hash(db):
    digest = bytearray(db.execute("SELECT hash FROM audit WHERE seq = 4").fetchone()[0])
    digest[0] ^= 1
    db.execute("UPDATE audit SET hash = ? WHERE seq = 4", (bytes(digest),))


def swap_bodies(db):
    a = db.execute("SELECT body FROM audit WHERE seq = 3").fetchone()[0]
    b = db.execute("SELECT body FROM audit WHERE seq = 6").fetchone()[0]
    db.execute("UPDATE audit SET body = ? WHERE seq = 3", (b,))
    db.execute("UPDATE audit SET body = ? WHERE seq = 6", (a,))


def swap_rows(db):
    db.execute("UPDATE audit SET seq = -3 WHERE seq = 3")
    db.execute("UPDATE audit SET seq = 3 WHERE seq = 6")
    db.execute("UPDATE audit SET seq = 6 WHERE seq = -3")


def forge_row(db):
    """A well-formed row after the last, hashed correctly, without touching the head."""
    seq, digest = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    body = db.execute("SELECT body FROM audit WHERE seq = 1").fetchone()[0]
    db.execute("INSERT INTO audit VALUES (?, ?, ?, 0, ?, ?, ?)",
               (seq + 1, NOW, "p1", body, digest, audit_hash(digest, seq + 1, body)))


def forge_middle(db):
    """Replace row 5 with another, well hashed but not linked."""
    body = db.execute("SELECT body FROM audit WHERE seq = 1").fetchone()[0]
    db.execute("UPDATE audit SET body = ?, prev = ?, hash = ? WHERE seq = 5",
               (body, GENESIS, audit_hash(GENESIS, 5, body)))


TAMPERING = [
    ("edit a body byte", edit_body, 4, EDITED),
    ("change a hash", edit_hash, 4, EDITED),
    ("delete a middle row", lambda db: db.execute("DELETE FROM audit WHERE seq = 5"), 5, DELETED),
    ("delete the newest row", lambda db: db.execute("DELETE FROM audit WHERE seq = 10"), 10, DELETED),
    ("delete the newest rows", lambda db: db.execute("DELETE FROM audit WHERE seq > 7"), 8, DELETED),
    ("swap two rows' bodies", swap_bodies, 3, REORDERED),
    ("swap two whole rows", swap_rows, 3, REORDERED),
    ("insert a forged row", forge_row, 11, HEAD),
    ("replace a row by a forged one", forge_middle, 5, BROKEN),
    ("insert a row before the first", lambda db: db.execute(
        "INSERT INTO audit SELECT 0, recorded, patient, emergency, body, prev, hash FROM audit WHERE seq = 1"),
     0, BROKEN),
    ("rewrite the head", lambda db: db.execute("UPDATE setting SET value = '10:' || hex(randomblob(32)) "
                                               "WHERE name = 'audit.head'"), 10, HEAD),
    ("delete the head", lambda db: db.execute("DELETE FROM setting WHERE name = 'audit.head'"), 10, HEAD),
]


@pytest.mark.parametrize("name, tamper, seq, what", TAMPERING, ids=[t[0] for t in TAMPERING])
def test_tampering_is_detected(tmp_path, name, tamper, seq, what):
    path = tmp_path / "audit.db"
    repo = open_repository(f"sqlite:///{path}", REGISTRY, clock=Clock())
    fill(repo)
    assert verify(repo).ok
    db = sqlite3.connect(path, isolation_level=None)
    drop_guards(db)
    tamper(db)
    db.close()
    report = verify(repo)
    repo.close()
    assert not report.ok, name
    assert (report.problem.seq, report.problem.what) == (seq, what), report.summary()
    result = run_cli(path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"TAMPERED at seq {seq}: {what}" in result.stdout


def test_the_body_and_hash_edits_are_told_apart(tmp_path):
    path = tmp_path / "audit.db"
    repo = open_repository(f"sqlite:///{path}", REGISTRY, clock=Clock())
    fill(repo)
    db = sqlite3.connect(path, isolation_level=None)
    drop_guards(db)
    edit_hash(db)
    assert "hash was changed" in verify(repo).problem.detail
    edit_hash(db)       # back
    edit_body(db)
    assert "body" in verify(repo).problem.detail
    db.close()
    repo.close()


def test_the_cli_reports_an_intact_log_and_checks_a_published_head(tmp_path):
    path = tmp_path / "audit.db"
    repo = open_repository(f"sqlite:///{path}", REGISTRY, clock=Clock())
    fill(repo, 5)
    published = repo.get_setting("audit.head")
    fill(repo, 5)                       # the log grows after the head was published
    repo.close()
    result = run_cli(path, "--head", published)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("audit log intact: 10 rows checked, head 10:")
    assert run_cli(path, "--head", published.split(":")[1]).returncode == 0
    other = run_cli(path, "--head", "ab" * 32)
    assert other.returncode == 1 and f"{ANCHOR}:" in other.stdout
    assert run_cli(path, "--head", "not-a-hash").returncode == 2
    assert run_cli(tmp_path / "missing.db").returncode == 2


def test_a_rebuilt_chain_is_caught_by_the_published_head(tmp_path):
    """Someone who rewrites every row and the head defeats the stored chain, not an anchor."""
    path = tmp_path / "audit.db"
    repo = open_repository(f"sqlite:///{path}", REGISTRY, clock=Clock())
    fill(repo, 4)
    published = repo.get_setting("audit.head")
    db = sqlite3.connect(path, isolation_level=None)
    drop_guards(db)
    prev = GENESIS
    for seq, body in db.execute("SELECT seq, body FROM audit ORDER BY seq").fetchall():
        body = body.replace(b"Kari Lege", b"Someone Else")
        digest = audit_hash(prev, seq, body)
        db.execute("UPDATE audit SET body = ?, prev = ?, hash = ? WHERE seq = ?", (body, prev, digest, seq))
        prev = digest
    db.execute("UPDATE setting SET value = ? WHERE name = 'audit.head'", (f"4:{prev.hex()}",))
    db.close()
    assert verify(repo).ok
    report = verify(repo, published)
    repo.close()
    assert not report.ok and report.problem.what == ANCHOR


def test_an_empty_log_is_intact(repo):
    report = verify(repo)
    assert report.ok and report.rows == 0 and report.summary() == "audit log intact: 0 rows checked, empty log"


def test_appends_continue_after_a_forged_row(repo, tmp_path):
    fill(repo, 3)
    db = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    forge_row(db)
    db.close()
    fill(repo, 1)                       # the log keeps working; the forgery stays visible
    report = verify(repo)
    assert not report.ok and report.problem.seq == 5
