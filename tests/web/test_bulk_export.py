"""Bulk Data $export (https://hl7.org/fhir/uv/bulkdata/STU2/export.html) over real HTTP, on
SQLite and PostgreSQL: kick-off, polling, the manifest, the NDJSON files, _type, _since,
Patient and Group level, cancellation, limits, bad input, access control and the audit log.
The export is driven with httpx as a bulk client would; fhirpy writes and reads the data."""
from __future__ import annotations

import base64
import re
import threading
import time

import httpx
import orjson
import pytest
from fhirpy import SyncFHIRClient

from enjournal.services import export as export_service
from enjournal.services.export import ExportJobs, ExportRequest

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
# one client for the module: a new httpx client per request costs more than the request
http = httpx.Client(timeout=30)
pytestmark = pytest.mark.filterwarnings("ignore:perform_resources:DeprecationWarning")


def _obs(pid: str, code: str, *patients: str) -> dict:
    body = {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{pid}"}}
    if patients:
        body["performer"] = [{"reference": f"Patient/{p}"} for p in patients]
    return body


@pytest.fixture(scope="module")
def data(server):
    """Three patients with three Observations each; bx-shared of c and a, bx-ab of b and a
    (resources of several patients); an Organization; a deleted Organization; and a Group
    holding patients a and b and the Organization (written with fhirpy)."""
    with httpx.Client(base_url=server.base, headers={"Content-Type": "application/fhir+json", **server.auth}) as c:
        for pid in ("bx-a", "bx-b", "bx-c"):
            assert c.put(f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid,
                                                  "name": [{"family": pid}]}).status_code in (200, 201)
            for i in range(3):
                assert c.post("/Observation", json=_obs(pid, f"100{i}-0")).status_code == 201
        for oid, body in (("bx-shared", _obs("bx-c", "2000-0", "bx-a")), ("bx-ab", _obs("bx-b", "2001-0", "bx-a"))):
            assert c.put(f"/Observation/{oid}", json={**body, "id": oid}).status_code in (200, 201)
        for org in ("bx-org", "bx-gone"):
            assert c.put(f"/Organization/{org}", json={"resourceType": "Organization", "id": org,
                                                       "name": "Legekontoret"}).status_code in (200, 201)
        assert c.delete("/Organization/bx-gone").status_code == 204
    fhir = fhirpy(server)
    fhir.resource("Group", id="bx-group", type="person", actual=True, member=[
        {"entity": {"reference": "Patient/bx-a"}}, {"entity": {"reference": "Patient/bx-b"}},
        {"entity": {"reference": "Organization/bx-org"}}]).save()
    fhir.resource("Group", id="bx-orgs", type="device", actual=True, member=[
        {"entity": {"reference": "Organization/bx-org"}}]).save()
    return server


def fhirpy(server) -> SyncFHIRClient:
    return SyncFHIRClient(server.base, authorization=server.auth["Authorization"],
                          extra_headers={"Accept": "application/fhir+json"})


def kick_off(server, path: str, headers: dict | None = None, **params) -> httpx.Response:
    return http.get(f"{server.base}{path}", params=params, headers={**ASYNC, **server.auth, **(headers or {})})


def wait(server, location: str, headers: dict | None = None, timeout: float = 60) -> dict:
    headers = headers or server.auth
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = http.get(location, headers=headers)
        if r.status_code == 200:
            assert r.headers["content-type"].startswith("application/json") and r.headers["Expires"]
            return r.json()
        assert r.status_code == 202, r.text
        assert r.headers["X-Progress"].startswith("exported ") and int(r.headers["Retry-After"]) > 0
        time.sleep(0.02)
    raise AssertionError("export did not finish")


def download(server, manifest: dict, headers: dict | None = None) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for item in manifest["output"]:
        r = http.get(item["url"], headers=headers or server.auth)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+ndjson")
        assert r.content.endswith(b"\n") and b"\n\n" not in r.content
        lines = [orjson.loads(line) for line in r.content.splitlines()]
        assert len(lines) == item["count"]
        assert all(res["resourceType"] == item["type"] for res in lines)
        out.setdefault(item["type"], []).extend(lines)
    return out


def export(server, path: str = "/$export", **params) -> tuple[dict, dict[str, list[dict]]]:
    r = kick_off(server, path, **params)
    assert r.status_code == 202, r.text
    assert re.fullmatch(rf"{re.escape(server.base)}/\$export-status/[0-9a-f]{{32}}", r.headers["Content-Location"])
    manifest = wait(server, r.headers["Content-Location"])
    return manifest, download(server, manifest)


def ids(resources: list[dict]) -> set[str]:
    return {r["id"] for r in resources}


def outcome(r: httpx.Response) -> dict:
    assert r.headers["content-type"].startswith("application/fhir+json"), r.headers
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]


@pytest.fixture
def gate(data):
    """Hold every export job before its next batch until the test lets go."""
    jobs = data.platform.exports
    event = threading.Event()
    jobs.before_batch = lambda job: event.wait(10)
    yield event
    event.set()
    jobs.before_batch = None


def test_system_export_has_every_resource_as_stored(data):
    manifest, files = export(data)
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    assert manifest["request"] == f"{data.base}/$export"
    assert manifest["transactionTime"].endswith("Z")
    assert {"bx-a", "bx-b", "bx-c"} <= ids(files["Patient"])
    assert ids(files["Organization"]) >= {"bx-org"} and "bx-gone" not in ids(files["Organization"])
    # every type's count is what a search counts, every line is what a read returns
    for type_, resources in files.items():
        counted = http.get(f"{data.base}/{type_}", params={"_summary": "count"}, headers=data.auth).json()
        assert len(resources) == len(ids(resources)) == counted["total"], type_
    for resource in [r for rs in files.values() for r in rs]:
        read = http.get(f"{data.base}/{resource['resourceType']}/{resource['id']}", headers=data.auth)
        assert read.json() == resource
    assert fhirpy(data).reference("Group", "bx-group").to_resource().serialize() in files["Group"]


def test_type_and_since(data):
    _, files = export(data, _type="Patient,Organization")
    assert set(files) == {"Patient", "Organization"}
    _, files = export(data, _type="Patient")
    assert set(files) == {"Patient"}
    later = http.get(f"{data.base}/Organization/bx-org", headers=data.auth).json()["meta"]["lastUpdated"]
    _, files = export(data, _type="Organization,Group", _since=later)
    assert ids(files.get("Organization", [])) == {"bx-org"}
    _, files = export(data, _since="2999-01-01T00:00:00Z")
    assert files == {}
    # a time zone's '+' left unencoded arrives as a space, and is taken as '+'
    r = http.get(f"{data.base}/$export?_type=Patient&_since=2000-01-01T00:00:00+01:00", headers={**ASYNC, **data.auth})
    assert r.status_code == 202, r.text
    assert ids(download(data, wait(data, r.headers["Content-Location"]))["Patient"]) >= {"bx-a", "bx-b", "bx-c"}
    # _type repeated is as if comma-separated (the IG allows both)
    r = http.get(f"{data.base}/$export?_type=Patient&_type=Organization", headers={**ASYNC, **data.auth})
    assert set(download(data, wait(data, r.headers["Content-Location"]))) == {"Patient", "Organization"}


def deletions(server, manifest: dict) -> set[str]:
    """The resources the manifest's ``deleted`` files list, as Type/id."""
    out = set()
    for item in manifest["deleted"]:
        assert item["type"] == "Bundle"
        r = http.get(item["url"], headers=server.auth)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+ndjson")
        lines = [orjson.loads(line) for line in r.content.splitlines()]
        assert len(lines) == item["count"]
        for bundle in lines:
            assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
            for entry in bundle["entry"]:
                assert entry["request"]["method"] == "DELETE" and "resource" not in entry
                out.add(entry["request"]["url"])
    return out


def test_with_since_the_manifest_lists_what_was_deleted_since(data):
    headers = {"Content-Type": "application/fhir+json", **data.auth}
    since = None
    for oid, body in (("bx-del-a", _obs("bx-a", "3000-0")), ("bx-del-c", _obs("bx-c", "3000-0")),
                      ("bx-del-ca", _obs("bx-c", "3000-0", "bx-a"))):
        r = http.put(f"{data.base}/Observation/{oid}", json={**body, "id": oid}, headers=headers)
        assert r.status_code == 201
        since = since or r.json()["meta"]["lastUpdated"]
    assert http.put(f"{data.base}/Organization/bx-del-org", json={"resourceType": "Organization", "id": "bx-del-org"},
                    headers=headers).status_code == 201
    for path in ("Observation/bx-del-a", "Observation/bx-del-c", "Observation/bx-del-ca", "Organization/bx-del-org"):
        assert http.delete(f"{data.base}/{path}", headers=data.auth).status_code == 204
    manifest, files = export(data, _since=since)
    # deleted since then: listed, never exported; bx-gone was deleted before and is not listed
    assert deletions(data, manifest) == {"Observation/bx-del-a", "Observation/bx-del-c", "Observation/bx-del-ca",
                                   "Organization/bx-del-org"}
    assert not {"bx-del-a", "bx-del-c", "bx-del-ca", "bx-del-org"} & ids(sum(files.values(), []))
    # a patient's data only: no Organization; a Group's members' only (bx-del-ca, of c and a,
    # lost its references with its deletion: it is listed for its subject c alone)
    r = kick_off(data, "/Patient/$export", _since=since)
    assert deletions(data, wait(data, r.headers["Content-Location"])) == {
        "Observation/bx-del-a", "Observation/bx-del-c", "Observation/bx-del-ca"}
    # each citizen's access log says what of theirs the job listed as deleted: bx-del-ca (of c
    # and a, told by its version before the deletion) in both
    job = r.headers["Content-Location"].rsplit("/", 1)[1]
    data.platform.audit.flush()
    for patient in ("bx-a", "bx-c"):
        rows = data.platform.store.audit_search(patient=patient, count=50)
        found = [x["description"] for row in rows for x in orjson.loads(row.body)["entity"]
                 if job in (x.get("description") or "")]
        assert found == [f"$export of Observation (level=patient job={job} deleted=2)"], (patient, found)
    r = kick_off(data, "/Group/bx-group/$export", _since=since)
    assert deletions(data, wait(data, r.headers["Content-Location"])) == {"Observation/bx-del-a"}
    # _type applies; a filtered type's deletions are not listed (nothing left to match the filter)
    r = kick_off(data, "/$export", _since=since, _type="Organization")
    assert deletions(data, wait(data, r.headers["Content-Location"])) == {"Organization/bx-del-org"}
    r = kick_off(data, "/$export", _since=since, _typeFilter="Observation?code=3000-0")
    assert deletions(data, wait(data, r.headers["Content-Location"])) == {"Organization/bx-del-org"}
    # without _since there is no "deleted"
    manifest, _ = export(data, _type="Organization")
    assert "deleted" not in manifest


def test_patient_level_has_only_compartment_resources(data):
    _, files = export(data, "/Patient/$export")
    # a Group is in its members' compartment (Group.member); an Organization in none
    assert "Organization" not in files
    assert {"bx-a", "bx-b", "bx-c"} <= ids(files["Patient"])
    assert {"bx-shared", "bx-ab"} <= ids(files["Observation"])
    r = kick_off(data, "/Patient/$export", _type="Organization")
    assert r.status_code == 400 and "compartment" in outcome(r)["diagnostics"]


def test_group_level_has_only_the_members_data(data):
    _, files = export(data, "/Group/bx-group/$export")
    assert ids(files["Patient"]) == {"bx-a", "bx-b"}
    # bx-shared is of bx-c and bx-a: a's data, so it is in; c's own Observations are not
    assert "bx-shared" in ids(files["Observation"]) and "bx-ab" in ids(files["Observation"])
    assert [o["id"] for o in files["Observation"] if o["subject"]["reference"] == "Patient/bx-c"] == ["bx-shared"]
    assert len(files["Observation"]) == 3 + 3 + 2
    assert "Organization" not in files
    _, files = export(data, "/Group/bx-group/$export", _type="Patient")
    assert set(files) == {"Patient"}
    # a Group without Patient members exports nothing; an unknown Group is 404
    manifest, files = export(data, "/Group/bx-orgs/$export")
    assert manifest["output"] == [] and files == {}
    r = kick_off(data, "/Group/no-such-group/$export")
    assert r.status_code == 404 and outcome(r)["code"] == "not-found"


def test_a_large_group_goes_in_passes_and_each_resource_once(data, monkeypatch):
    monkeypatch.setattr(export_service, "PATIENT_CHUNK", 1)      # one member per pass
    _, files = export(data, "/Group/bx-group/$export")
    observations = [o["id"] for o in files["Observation"]]
    assert sorted(observations) == sorted(set(observations)) and len(observations) == 8


def patients_param(*refs: str) -> dict:
    return {"resourceType": "Parameters", "parameter": [{"name": "patient", "valueReference": {"reference": ref}}
                                                        for ref in refs]}


def test_the_patient_parameter_limits_a_patient_or_group_export_to_those_patients(data):
    r = http.post(f"{data.base}/Group/bx-group/$export", json=patients_param("Patient/bx-b"),
                  headers={**ASYNC, **data.auth})
    assert r.status_code == 202, r.text
    files = download(data, wait(data, r.headers["Content-Location"]))
    assert ids(files["Patient"]) == {"bx-b"}
    assert len(files["Observation"]) == 3 + 1 and "bx-ab" in ids(files["Observation"])      # bx-ab: of b and a
    r = http.post(f"{data.base}/Patient/$export", json=patients_param("Patient/bx-c", "Patient/bx-b"),
                  headers={**ASYNC, **data.auth})
    assert r.status_code == 202, r.text
    files = download(data, wait(data, r.headers["Content-Location"]))
    assert ids(files["Patient"]) == {"bx-b", "bx-c"} and len(files["Observation"]) == 3 + 3 + 2
    # in the query too, comma-separated
    _, files = export(data, "/Patient/$export", patient="Patient/bx-c", _type="Patient")
    assert set(files) == {"Patient"} and ids(files["Patient"]) == {"bx-c"}
    # not a member of the Group, not known, not a Patient reference, not at system level: 400
    for path, refs, says in (("/Group/bx-group/$export", ["Patient/bx-c"], "not a member of Group/bx-group"),
                             ("/Patient/$export", ["Patient/bx-a", "Patient/nobody"], "Patient/nobody is not known"),
                             ("/Patient/$export", ["Observation/bx-ab"], "not a reference Patient/<id>"),
                             ("/Patient/$export", ["Patient/x' OR 1=1--"], "not a reference"),
                             ("/Patient/$export", ["Patient/bx-a/_history/1"], "not a reference"),
                             ("/$export", ["Patient/bx-a"], "Patient- and Group-level")):
        r = http.post(f"{data.base}{path}", json=patients_param(*refs), headers={**ASYNC, **data.auth})
        assert r.status_code == 400 and says in outcome(r)["diagnostics"], (path, r.text)
        assert outcome(r)["expression"] == ["patient"]
    body = {"resourceType": "Parameters", "parameter": [{"name": "patient", "valueReference": {"display": "x"}}]}
    r = http.post(f"{data.base}/Patient/$export", json=body, headers={**ASYNC, **data.auth})
    assert r.status_code == 400 and outcome(r)["expression"] == ["patient"]


def codes(observations: list[dict]) -> list[str]:
    return sorted(o["code"]["coding"][0]["code"] for o in observations)


def test_type_filter_keeps_of_a_type_what_matches_one_of_its_queries(data):
    _, files = export(data, "/$export", _typeFilter="Observation?code=http://loinc.org|1000-0")
    assert codes(files["Observation"]) == ["1000-0"] * 3
    assert {"bx-a", "bx-b", "bx-c"} <= ids(files["Patient"]) and "bx-org" in ids(files["Organization"])
    # two queries of a type are ORed; a comma inside a query is an OR of values
    _, files = export(data, "/$export", _type="Observation",
                      _typeFilter="Observation?code=1000-0,Observation?code=2000-0,2001-0")
    assert codes(files["Observation"]) == ["1000-0"] * 3 + ["2000-0", "2001-0"]
    # the parameter repeated, with a chain, within a Group's data, with _type
    r = http.get(f"{data.base}/Group/bx-group/$export", headers={**ASYNC, **data.auth}, params=[
        ("_type", "Patient,Observation"), ("_typeFilter", "Observation?patient.family=bx-b"),
        ("_typeFilter", "Patient?family=bx-a")])
    assert r.status_code == 202, r.text
    files = download(data, wait(data, r.headers["Content-Location"]))
    assert ids(files["Patient"]) == {"bx-a"}
    assert len(files["Observation"]) == 4 and "bx-ab" in ids(files["Observation"])   # b's own and bx-ab
    # as a POST parameter, with an AND of two parameters; a value that matches nothing
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "_typeFilter", "valueString": "Observation?subject=Patient/bx-c&code=1001-0,1002-0"}]}
    r = http.post(f"{data.base}/Patient/$export", json=body, headers={**ASYNC, **data.auth})
    assert r.status_code == 202, r.text
    files = download(data, wait(data, r.headers["Content-Location"]))
    assert codes(files["Observation"]) == ["1001-0", "1002-0"] and "Patient" in files
    _, files = export(data, "/$export", _type="Observation", _typeFilter="Observation?code=x' OR '1'='1")
    assert files == {}


def test_type_filter_is_checked_as_a_search_by_the_clients_scopes(data):
    token = {"Authorization": f"Bearer {data.token('system', scope='system/Observation.r')}"}   # no search
    r = kick_off(data, "/$export", headers=token, _type="Observation")
    assert r.status_code == 202, r.text
    r = kick_off(data, "/$export", headers=token, _typeFilter="Observation?code=1000-0")
    assert r.status_code == 403, r.text
    token = {"Authorization": f"Bearer {data.token('system', scope='system/Observation.rs')}"}
    r = kick_off(data, "/$export", headers=token, _typeFilter="Patient?family=bx-a")
    assert r.status_code == 403 and outcome(r)["expression"] == ["_typeFilter"]


def test_post_kick_off_with_parameters(data):
    body = {"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "Organization"},
                                                         {"name": "_outputFormat", "valueString": "ndjson"}]}
    r = http.post(f"{data.base}/$export", json=body, headers={**ASYNC, **data.auth})
    assert r.status_code == 202, r.text
    manifest = wait(data, r.headers["Content-Location"])
    assert manifest["request"] == f"{data.base}/$export"
    assert set(download(data, manifest)) == {"Organization"}
    r = http.post(f"{data.base}/$export", json={"resourceType": "Patient"}, headers={**ASYNC, **data.auth})
    assert r.status_code == 400 and "Parameters" in outcome(r)["diagnostics"]


@pytest.mark.parametrize("params, where", [
    ({"_type": "Observation,Nonsense"}, "_type"),
    ({"_type": ""}, "_type"),
    ({"_since": "yesterday"}, "_since"),
    ({"_since": "2026-01-01"}, "_since"),
    ({"_since": "2026-01-01T10:00Z"}, "_since"),
    ({"_since": "2026-01-01T10:00:00"}, "_since"),
    ({"_since": "2026-13-01T10:00:00Z"}, "_since"),
    ({"_outputFormat": "text/csv"}, "_outputFormat"),
    ({"_typeFilter": "Observation?nonsense=1"}, "_typeFilter"),
    ({"_typeFilter": "Observation?code=1&_sort=date"}, "_typeFilter"),
    ({"_typeFilter": "Observation?_count=5"}, "_typeFilter"),
    ({"_typeFilter": "Observation?_include=Observation:subject"}, "_typeFilter"),
    ({"_typeFilter": "Observation"}, "_typeFilter"),
    ({"_typeFilter": "Nonsense?code=1"}, "_typeFilter"),
    ({"_typeFilter": "Observation?date=yesterday"}, "_typeFilter"),
    ({"_typeFilter": "Observation?code=1", "_type": "Patient"}, "_typeFilter"),
    ({"_typeFilter": ",".join(["Observation?code=1"] * 101)}, "_typeFilter"),
    ({"_typeFilter": "Observation?code=" + ",".join(["1234-5"] * 4000)}, "_typeFilter"),
    ({"_elements": "id"}, "_elements"),
    ({"includeAssociatedData": "LatestProvenanceResources"}, "includeAssociatedData"),
    ({"patient": "Patient/bx-a"}, "patient"),
    ({"frobnicate": "1"}, "frobnicate"),
])
def test_bad_parameters_are_400_naming_the_parameter(data, params, where):
    r = kick_off(data, "/$export", **params)
    assert r.status_code == 400, r.text
    issue = outcome(r)
    assert where in issue["diagnostics"] and where in issue.get("expression", [""])[0]


def test_lenient_drops_unknown_parameters(data):
    r = kick_off(data, "/$export", headers={"Prefer": "respond-async, handling=lenient"}, frobnicate="1",
                 _type="Organization")
    assert r.status_code == 202, r.text
    assert set(download(data, wait(data, r.headers["Content-Location"]))) == {"Organization"}


def test_kick_off_needs_prefer_respond_async_and_json(data):
    r = http.get(f"{data.base}/$export", headers=data.auth)
    assert r.status_code == 400 and "respond-async" in outcome(r)["diagnostics"]
    r = http.get(f"{data.base}/$export", headers={**data.auth, "Prefer": "respond-sync"})
    assert r.status_code == 400
    r = http.get(f"{data.base}/$export", headers={**data.auth, "Prefer": "respond-async", "Accept": "text/csv"})
    assert r.status_code == 406 and outcome(r)["expression"] == ["Accept"]
    r = http.get(f"{data.base}/$export", params={"_type": "Organization"},
                  headers={**data.auth, "Prefer": "respond-async"})            # no Accept: fine
    assert r.status_code == 202
    wait(data, r.headers["Content-Location"])
    r = http.post(f"{data.base}/$export", content=b"{not json", headers={**ASYNC, **data.auth})
    assert r.status_code == 400


def test_only_systems_export_and_only_what_their_scopes_read(data):
    for persona, attestation in (("gp", {"purpose": "TREAT", "patient": "Patient/bx-a"}), ("silje", {})):
        r = kick_off(data, "/$export", headers=data.headers(persona, **attestation))
        assert r.status_code == 403 and "system" in outcome(r)["diagnostics"]
        r = kick_off(data, "/Group/bx-group/$export", headers=data.headers(persona, **attestation))
        assert r.status_code == 403
    r = http.get(f"{data.base}/$export", headers={**ASYNC})
    assert r.status_code == 401
    narrow = {"Authorization": f"Bearer {data.token('system', scope='system/Observation.rs')}"}
    r = kick_off(data, "/$export", headers=narrow)
    assert r.status_code == 202
    manifest = wait(data, r.headers["Content-Location"], narrow)
    assert {o["type"] for o in manifest["output"]} == {"Observation"}
    r = kick_off(data, "/$export", headers=narrow, _type="Patient")
    assert r.status_code == 403 and "Patient" in outcome(r)["diagnostics"]
    nothing = {"Authorization": f"Bearer {data.token('system', scope='system/Observation.c')}"}
    assert kick_off(data, "/$export", headers=nothing).status_code == 403


def test_another_client_sees_nothing_and_files_need_a_token(data):
    r = kick_off(data, "/$export", _type="Organization")
    location = r.headers["Content-Location"]
    manifest = wait(data, location)
    url = manifest["output"][0]["url"]
    other = {"Authorization": f"Bearer {data.platform.provider.issue('system', client_id='another-client')}"}
    assert http.get(location, headers=other).status_code == 404
    assert http.get(url, headers=other).status_code == 404
    assert http.get(url).status_code == 401
    assert http.delete(location, headers=other).status_code == 404
    gp = data.headers("gp", purpose="TREAT", patient="Patient/bx-a")
    assert http.get(url, headers=gp).status_code == 404
    assert http.get(f"{data.base}/$export-status/{'0' * 32}", headers=data.auth).status_code == 404
    assert http.get(f"{data.base}/$export-status/../../etc", headers=data.auth).status_code == 404
    assert http.get(location.replace("status", "file") + "/..%2F..%2Fenjournal.db",
                     headers=data.auth).status_code == 404
    assert http.get(location.replace("status", "file") + "/Patient-1.ndjson", headers=data.auth).status_code == 404
    assert http.get(url, headers=data.auth).status_code == 200


def test_cancel_stops_the_job_and_removes_its_files(data, gate):
    jobs = data.platform.exports
    r = kick_off(data, "/$export")
    location = r.headers["Content-Location"]
    job = location.rsplit("/", 1)[1]
    assert http.get(location, headers=data.auth).status_code == 202
    assert http.delete(location, headers=data.auth).status_code == 202
    gate.set()
    deadline = time.time() + 10
    while (jobs.directory / job).exists() or job in jobs._threads:
        assert time.time() < deadline, "the job did not stop"
        time.sleep(0.05)
    r = http.get(location, headers=data.auth)
    assert r.status_code == 404 and outcome(r)["code"] == "not-found"
    assert http.delete(location, headers=data.auth).status_code == 404


def test_delete_after_completion_removes_the_files(data):
    r = kick_off(data, "/$export", _type="Patient")
    location = r.headers["Content-Location"]
    manifest = wait(data, location)
    job = location.rsplit("/", 1)[1]
    assert (data.platform.exports.directory / job).is_dir()
    assert http.delete(location, headers=data.auth).status_code == 202
    assert not (data.platform.exports.directory / job).exists()
    assert http.get(location, headers=data.auth).status_code == 404
    assert http.get(manifest["output"][0]["url"], headers=data.auth).status_code == 404


def test_resources_changed_after_the_kick_off_are_left_out(data, gate):
    r = kick_off(data, "/$export", _type="Organization")
    location = r.headers["Content-Location"]
    time.sleep(0.01)
    created = http.put(f"{data.base}/Organization/bx-late", json={"resourceType": "Organization", "id": "bx-late"},
                        headers={"Content-Type": "application/fhir+json", **data.auth})
    assert created.status_code == 201
    gate.set()
    files = download(data, wait(data, location))
    assert "bx-late" not in ids(files["Organization"]) and "bx-org" in ids(files["Organization"])


def test_too_many_running_jobs_is_429(data, gate):
    jobs = data.platform.exports
    started = []
    for _ in range(jobs.max_jobs):
        r = kick_off(data, "/$export", _type="Organization")
        assert r.status_code == 202
        started.append(r.headers["Content-Location"])
    r = kick_off(data, "/$export", _type="Organization")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0 and outcome(r)["code"] == "throttled"
    gate.set()
    for location in started:
        wait(data, location)
    assert kick_off(data, "/$export", _type="Organization").status_code == 202


def test_a_failed_job_is_500_with_an_outcome(data):
    jobs = data.platform.exports

    def fail(job: str) -> None:
        raise OSError("disk full")
    jobs.before_batch = fail
    try:
        r = kick_off(data, "/$export", _type="Organization")
        location = r.headers["Content-Location"]
        deadline = time.time() + 10
        while (status := http.get(location, headers=data.auth)).status_code == 202:
            assert time.time() < deadline
            time.sleep(0.05)
    finally:
        jobs.before_batch = None
    assert status.status_code == 500 and "OSError" in outcome(status)["diagnostics"]
    assert not (jobs.directory / location.rsplit("/", 1)[1]).exists()


def test_split_into_parts_of_at_most_the_file_size(data):
    jobs = data.platform.exports
    before = jobs.file_resources
    jobs.file_resources = 4
    try:
        manifest, files = export(data, _type="Observation")
    finally:
        jobs.file_resources = before
    names = [o["url"].rsplit("/", 1)[1] for o in manifest["output"]]
    assert names == [f"Observation-{i}.ndjson" for i in range(1, len(names) + 1)] and len(names) >= 3
    assert all(o["count"] <= 4 for o in manifest["output"])
    assert len(ids(files["Observation"])) == sum(o["count"] for o in manifest["output"])


def audited(data, found, timeout: float = 5) -> list[dict]:
    """The newest audit events once ``found(events)`` holds (a request's record is queued
    just after its response has gone)."""
    deadline = time.time() + timeout
    while True:
        data.platform.audit.flush()
        events = [orjson.loads(row.body) for row in data.platform.store.audit_search(count=50)]
        if found(events) or time.time() > deadline:
            return events
        time.sleep(0.05)


def test_kick_off_and_downloads_are_audited(data):
    r = kick_off(data, "/$export", _type="Organization,Patient")
    location = r.headers["Content-Location"]
    job = location.rsplit("/", 1)[1]
    url = wait(data, location)["output"][0]["url"]
    assert http.get(url, headers=data.auth).status_code == 200
    path = url.split(data.base, 1)[1]

    def kick_of(events):        # the job's reads are recorded too, with "resources=<count>"
        return [e for e in events if any(x.get("description", "").endswith(f"job={job})")
                                         and "$export of" in x["description"] for x in e.get("entity", []))]

    def fetched_in(events):
        return [e for e in events if any(x.get("description") == f"requested: GET {path}"
                                         for x in e.get("entity", []))]
    events = audited(data, lambda es: kick_of(es) and fetched_in(es))
    kick = kick_of(events)
    assert len(kick) == 1
    entities = {x["description"] for x in kick[0]["entity"]}
    assert entities == {f"$export of {t} (level=system job={job})" for t in ("Organization", "Patient")}
    assert base64.b64decode(kick[0]["entity"][0]["query"]).decode().startswith("$export")
    assert kick[0]["subtype"][0]["code"] == "operation" and kick[0]["outcome"] == "0"
    assert kick[0]["agent"][0]["altId"]
    fetched = fetched_in(events)
    assert fetched and fetched[0]["outcome"] == "0"
    # a refused kick-off is recorded as refused
    kick_off(data, "/$export", headers=data.headers("gp", purpose="TREAT", patient="Patient/bx-a"))
    events = audited(data, lambda es: "bulk export" in es[0].get("outcomeDesc", ""))
    assert events[0]["outcome"] == "4" and "bulk export is for system clients" in events[0]["outcomeDesc"]


def test_each_citizens_access_log_lists_the_export_that_read_their_data(data, monkeypatch):
    monkeypatch.setattr(export_service, "BATCH", 4)             # several batches
    r = kick_off(data, "/Group/bx-group/$export", _type="Patient,Observation")
    job = r.headers["Content-Location"].rsplit("/", 1)[1]
    files = download(data, wait(data, r.headers["Content-Location"]))
    assert len(files["Patient"]) == 2 and len(files["Observation"]) == 8

    def export_events(patient):
        data.platform.audit.flush()
        rows = data.platform.store.audit_search(patient=patient, count=100)
        return [orjson.loads(row.body) for row in rows
                if any(job in (x.get("description") or "") for x in orjson.loads(row.body)["entity"])]

    # the job's rows are queued before its manifest is out (export_events flushes the queue)
    counted: dict[str, dict[str, int]] = {}
    for patient in ("bx-a", "bx-b", "bx-c"):
        for event in export_events(patient):
            assert event["subtype"][0]["code"] == "operation" and event["outcome"] == "0"
            assert event["agent"][0]["altId"]                        # the client that started it
            assert [x["what"]["reference"] for x in event["entity"] if "what" in x] == [f"Patient/{patient}"]
            for x in event["entity"][1:]:
                found = re.fullmatch(rf"\$export of (\w+) \(level=group job={job} resources=(\d+)\)", x["description"])
                assert found, x["description"]
                by_type = counted.setdefault(patient, {})
                by_type[found[1]] = by_type.get(found[1], 0) + int(found[2])
    # what of each patient's data the files hold: bx-ab (of b and a) in both records, and
    # bx-shared (of c and a) in c's too, though c is not a member
    assert counted == {"bx-a": {"Patient": 1, "Observation": 3 + 2}, "bx-b": {"Patient": 1, "Observation": 3 + 1},
                       "bx-c": {"Observation": 1}}
    # a patient's counts are kept while the next batch holds their data too: b's four (one
    # batch) and bx-ab (the next one) are one row; a's data has c's between, so two
    assert [len(export_events(p)) for p in ("bx-a", "bx-b", "bx-c")] == [2, 1, 1]


def test_capability_statement_lists_the_export_operations(data):
    cap = http.get(f"{data.base}/metadata").json()
    bulk = "http://hl7.org/fhir/uv/bulkdata"
    assert f"{bulk}/CapabilityStatement/bulk-data|2.0.0" in cap["instantiates"]
    rest = cap["rest"][0]
    assert f"{bulk}/OperationDefinition/export|2.0.0" in {o["definition"] for o in rest["operation"]}
    by_type = {r["type"]: r for r in rest["resource"]}
    assert by_type["Patient"]["operation"][0]["definition"] == f"{bulk}/OperationDefinition/patient-export|2.0.0"
    assert by_type["Group"]["operation"][0]["definition"] == f"{bulk}/OperationDefinition/group-export|2.0.0"
    r = http.post(f"{data.base}/CapabilityStatement/$validate", json=cap,
                   headers={"Content-Type": "application/fhir+json", **data.auth})
    assert r.status_code == 200, r.text


# -- the job runner in-process: stopping, expiry ---------------------------------------------

def _request(level: str = "system") -> ExportRequest:
    return ExportRequest(level, None, ("Organization",), None, "http://test/$export")


def _wait_status(jobs: ExportJobs, job: str, owner: str, timeout: float = 10) -> str:
    deadline = time.time() + timeout
    while (status := jobs.status(job, owner)[0]) == "running":
        assert time.time() < deadline
        time.sleep(0.02)
    return status


def test_close_fails_running_jobs_and_removes_their_files(data, tmp_path):
    jobs = ExportJobs(data.platform.store, tmp_path / "exports")
    entered = threading.Event()
    jobs.before_batch = lambda job: (entered.set(), time.sleep(0.2))
    job = jobs.new_id()
    jobs.start(job, _request(), "test|closer", ("Organization",), None)
    assert entered.wait(5)
    jobs.close()
    status, state, _ = jobs.status(job, "test|closer")
    assert status == "failed" and "server stopped" in state["error"]
    assert not (tmp_path / "exports" / job).exists()
    with pytest.raises(Exception, match="stopping"):
        jobs.start(jobs.new_id(), _request(), "test|closer", ("Organization",), None)


def test_finished_jobs_expire_and_are_swept(data, tmp_path):
    now = [data.platform.store.clock()]
    jobs = ExportJobs(data.platform.store, tmp_path / "exports", keep_ms=60_000, clock=lambda: now[0])
    job = jobs.new_id()
    jobs.start(job, _request(), "test|sweeper", ("Organization",), None)
    assert _wait_status(jobs, job, "test|sweeper") == "complete"
    assert jobs.file(job, "test|sweeper", "Organization-1.ndjson").is_file()
    now[0] += 61_000
    with pytest.raises(Exception, match="expired"):
        jobs.status(job, "test|sweeper")
    jobs.sweep()
    assert not (tmp_path / "exports" / job).exists() and data.platform.store.job_get(job) is None
    jobs.close()


class _SlowTail:
    """An export's audit record whose last close (the worker's ``finally``, after the job is
    complete) takes a while: the worker is still alive when a client sees the job complete."""

    def __init__(self):
        self.closes = 0
        self.rows = 0

    def __call__(self, rows: list) -> None:
        self.rows += len(rows)

    def close(self) -> None:
        self.closes += 1
        if self.closes > 1:
            time.sleep(0.05)


def test_a_complete_job_is_swept_while_its_worker_is_still_finishing(data, tmp_path):
    """The race behind a flaky run: a job reads as complete while its worker thread is still
    listed as running, so a sweep after it expired left it in place. Every round here makes
    that window wide; each complete, expired job must be swept at once."""
    now = [data.platform.store.clock()]
    jobs = ExportJobs(data.platform.store, tmp_path / "exports", keep_ms=60_000, clock=lambda: now[0])
    started = []
    try:
        for _ in range(20):
            job = jobs.new_id()
            started.append(f"enjournal-export-{job[:8]}")
            tail = _SlowTail()
            jobs.start(job, _request(), "test|race", ("Organization",), None, record=tail)
            assert _wait_status(jobs, job, "test|race") == "complete"
            assert tail.rows >= 1
            now[0] += 61_000
            jobs.sweep()
            assert not (tmp_path / "exports" / job).exists(), "an expired, complete job was not swept"
            assert data.platform.store.job_get(job) is None
    finally:
        jobs.close()
    alive = [t.name for t in threading.enumerate() if t.name in started]
    assert not alive, f"close() returned before these workers ended: {alive}"


def test_a_job_whose_process_is_gone_is_failed(data, tmp_path):
    now = [data.platform.store.clock()]
    jobs = ExportJobs(data.platform.store, tmp_path / "exports", clock=lambda: now[0])
    job = jobs.new_id()
    (tmp_path / "exports" / job).mkdir(parents=True)
    data.platform.store.job_put(job, "export", "test|lost", "running", orjson.dumps(
        {"request": "x", "transactionTime": now[0], "types": None, "level": "system", "since": None,
         "exported": 10, "output": []}).decode(), now[0])
    assert jobs.status(job, "test|lost")[0] == "running"
    now[0] += export_service.STALE_MS + 1
    jobs.sweep()
    assert not (tmp_path / "exports" / job).exists()
    status, state, _ = jobs.status(job, "test|lost")
    assert status == "failed" and "ended" in state["error"]


def test_stopping_the_server_fails_its_running_jobs(tmp_path):
    """uvicorn's shutdown (the ASGI lifespan) stops the jobs: atexit handlers do not run
    when uvicorn re-raises SIGTERM."""
    import sqlite3
    from tests.conftest import start_server
    srv = start_server(tmp_path)
    try:
        entered = threading.Event()
        jobs = srv.platform.exports
        jobs.before_batch = lambda job: (entered.set(), jobs._closing.wait(5))     # until the server stops
        assert http.put(f"{srv.base}/Patient/p1", json={"resourceType": "Patient", "id": "p1"},
                        headers={"Content-Type": "application/fhir+json", **srv.auth}).status_code == 201
        r = kick_off(srv, "/$export")
        job = r.headers["Content-Location"].rsplit("/", 1)[1]
        assert entered.wait(5)
    finally:
        srv.stop()
    status, state = sqlite3.connect(tmp_path / "enjournal.db").execute(
        "SELECT status, state FROM job WHERE id = ?", (job,)).fetchone()
    assert status == "failed" and "server stopped" in orjson.loads(state)["error"]
    assert not (tmp_path / "exports" / job).exists()
