"""Bulk Data $export (https://hl7.org/fhir/uv/bulkdata/STU2/export.html) over real HTTP, on
SQLite and PostgreSQL: kick-off, polling, the manifest, the NDJSON files, _type, _since,
Patient and Group level, cancellation, limits, bad input, and access control."""
from __future__ import annotations

import threading
import time

import httpx
import orjson
import pytest

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


def _obs(pid: str, code: str, *patients: str) -> dict:
    body = {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{pid}"}}
    if patients:
        body["performer"] = [{"reference": f"Patient/{p}"} for p in patients]
    return body


@pytest.fixture(scope="module")
def data(server):
    """Three patients, their Observations, one Observation of two patients, an Organization
    and a Group holding patients a and b."""
    with httpx.Client(base_url=server.base, headers={"Content-Type": "application/fhir+json", **server.auth}) as c:
        for pid in ("bx-a", "bx-b", "bx-c"):
            assert c.put(f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid,
                                                  "name": [{"family": pid}]}).status_code in (200, 201)
            for i in range(3):
                assert c.post("/Observation", json=_obs(pid, f"100{i}-0")).status_code == 201
        assert c.put("/Observation/bx-shared", json={**_obs("bx-c", "2000-0", "bx-a"), "id": "bx-shared"}
                     ).status_code in (200, 201)
        assert c.put("/Organization/bx-org", json={"resourceType": "Organization", "id": "bx-org",
                                                   "name": "Legekontoret"}).status_code in (200, 201)
        assert c.put("/Group/bx-group", json={
            "resourceType": "Group", "id": "bx-group", "type": "person", "actual": True,
            "member": [{"entity": {"reference": "Patient/bx-a"}}, {"entity": {"reference": "Patient/bx-b"}},
                       {"entity": {"reference": "Organization/bx-org"}}]}).status_code in (200, 201)
    return server


def kick_off(server, path: str, headers: dict | None = None, **params) -> httpx.Response:
    return httpx.get(f"{server.base}{path}", params=params, headers={**ASYNC, **server.auth, **(headers or {})})


def wait(server, location: str, headers: dict | None = None, timeout: float = 60) -> dict:
    headers = headers or server.auth
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = httpx.get(location, headers=headers)
        if r.status_code == 200:
            return r.json()
        assert r.status_code == 202, r.text
        assert r.headers["X-Progress"].startswith("exported ")
        time.sleep(0.05)
    raise AssertionError("export did not finish")


def download(server, manifest: dict, headers: dict | None = None) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for item in manifest["output"]:
        r = httpx.get(item["url"], headers=headers or server.auth)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+ndjson")
        lines = [orjson.loads(line) for line in r.content.splitlines() if line]
        assert len(lines) == item["count"]
        assert all(res["resourceType"] == item["type"] for res in lines)
        out.setdefault(item["type"], []).extend(lines)
    return out


def export(server, path: str = "/$export", **params) -> tuple[dict, dict[str, list[dict]]]:
    r = kick_off(server, path, **params)
    assert r.status_code == 202, r.text
    manifest = wait(server, r.headers["Content-Location"])
    return manifest, download(server, manifest)


def ids(resources: list[dict]) -> set[str]:
    return {r["id"] for r in resources}


def test_system_export_has_every_resource_as_stored(data):
    manifest, files = export(data)
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    assert manifest["request"].endswith("/$export")
    assert {"bx-a", "bx-b", "bx-c"} <= ids(files["Patient"])
    assert {"bx-org"} <= ids(files["Organization"])
    # each line is the resource exactly as a read returns it
    for resource in files["Observation"][:5] + files["Patient"]:
        read = httpx.get(f"{data.base}/{resource['resourceType']}/{resource['id']}", headers=data.auth).json()
        assert read == resource
    counts = httpx.get(f"{data.base}/Observation", params={"_summary": "count"}, headers=data.auth).json()
    assert len(files["Observation"]) == counts["total"]


def test_type_and_since(data):
    _, files = export(data, _type="Patient,Organization")
    assert set(files) == {"Patient", "Organization"}
    later = httpx.get(f"{data.base}/Organization/bx-org", headers=data.auth).json()["meta"]["lastUpdated"]
    _, files = export(data, _type="Organization,Group", _since=later)
    assert ids(files.get("Organization", [])) == {"bx-org"}
    _, files = export(data, _since="2999-01-01T00:00:00Z")
    assert files == {}


def test_patient_level_has_only_compartment_resources(data):
    _, files = export(data, "/Patient/$export")
    # a Group is in its members' compartment (Group.member); an Organization in none
    assert "Organization" not in files
    assert {"bx-a", "bx-b", "bx-c"} <= ids(files["Patient"])
    assert "bx-shared" in ids(files["Observation"])


def test_group_level_has_only_the_members_data(data):
    _, files = export(data, "/Group/bx-group/$export")
    assert ids(files["Patient"]) == {"bx-a", "bx-b"}
    subjects = {o["subject"]["reference"] for o in files["Observation"]}
    assert subjects <= {"Patient/bx-a", "Patient/bx-b", "Patient/bx-c"}
    # bx-shared is of bx-c and bx-a: a's data, so it is in; c's own Observations are not
    assert "bx-shared" in ids(files["Observation"])
    assert len([o for o in files["Observation"] if o["subject"]["reference"] == "Patient/bx-c"]) == 1
    assert "Organization" not in files
    assert kick_off(data, "/Group/no-such-group/$export").status_code == 404


def test_post_kick_off_with_parameters(data):
    body = {"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "Organization"},
                                                         {"name": "_outputFormat", "valueString": "ndjson"}]}
    r = httpx.post(f"{data.base}/$export", json=body, headers={**ASYNC, **data.auth})
    assert r.status_code == 202, r.text
    files = download(data, wait(data, r.headers["Content-Location"]))
    assert set(files) == {"Organization"}


@pytest.mark.parametrize("params, where", [
    ({"_type": "Observation,Nonsense"}, "_type"),
    ({"_since": "yesterday"}, "_since"),
    ({"_since": "2026-01-01"}, "_since"),
    ({"_outputFormat": "text/csv"}, "_outputFormat"),
    ({"_typeFilter": "Observation?code=1"}, "_typeFilter"),
    ({"_elements": "id"}, "_elements"),
    ({"frobnicate": "1"}, "frobnicate"),
])
def test_bad_parameters_are_400_naming_the_parameter(data, params, where):
    r = kick_off(data, "/$export", **params)
    assert r.status_code == 400, r.text
    issue = r.json()["issue"][0]
    assert where in issue["diagnostics"] and where in issue.get("expression", [""])[0]


def test_kick_off_needs_prefer_respond_async_and_json(data):
    r = httpx.get(f"{data.base}/$export", headers=data.auth)
    assert r.status_code == 400 and "respond-async" in r.json()["issue"][0]["diagnostics"]
    r = httpx.get(f"{data.base}/$export", headers={**data.auth, "Prefer": "respond-async", "Accept": "text/csv"})
    assert r.status_code == 406
    r = httpx.post(f"{data.base}/$export", content=b"{not json", headers={**ASYNC, **data.auth})
    assert r.status_code == 400


def test_only_systems_export_and_only_what_their_scopes_read(data):
    gp = data.headers("gp", purpose="TREAT", patient="Patient/bx-a")
    r = kick_off(data, "/$export", headers=gp)
    assert r.status_code == 403 and "system" in r.json()["issue"][0]["diagnostics"]
    r = httpx.get(f"{data.base}/$export", headers={**ASYNC})
    assert r.status_code == 401
    narrow = {"Authorization": f"Bearer {data.token('system', scope='system/Observation.rs')}"}
    r = kick_off(data, "/$export", headers=narrow)
    assert r.status_code == 202
    manifest = wait(data, r.headers["Content-Location"], narrow)
    assert {o["type"] for o in manifest["output"]} == {"Observation"}
    assert kick_off(data, "/$export", headers=narrow, _type="Patient").status_code == 403


def test_another_client_sees_nothing_and_files_need_a_token(data):
    r = kick_off(data, "/$export", _type="Organization")
    location = r.headers["Content-Location"]
    manifest = wait(data, location)
    other = {"Authorization": f"Bearer {data.platform.provider.issue('system', client_id='another-client')}"}
    assert httpx.get(location, headers=other).status_code == 404
    assert httpx.get(manifest["output"][0]["url"], headers=other).status_code == 404
    assert httpx.get(manifest["output"][0]["url"]).status_code == 401
    assert httpx.delete(location, headers=other).status_code == 404
    assert httpx.get(f"{data.base}/$export-status/{'0' * 32}", headers=data.auth).status_code == 404
    assert httpx.get(f"{data.base}/$export-status/../../etc", headers=data.auth).status_code == 404
    assert httpx.get(location.replace("status", "file") + "/..%2F..%2Fenjournal.db",
                     headers=data.auth).status_code == 404


def test_cancel_stops_the_job_and_removes_its_files(data):
    jobs = data.platform.exports
    gate = threading.Event()
    jobs.before_batch = lambda job: gate.wait(10)
    try:
        r = kick_off(data, "/$export")
        location = r.headers["Content-Location"]
        job = location.rsplit("/", 1)[1]
        assert httpx.get(location, headers=data.auth).status_code == 202
        assert httpx.delete(location, headers=data.auth).status_code == 202
    finally:
        gate.set()
        jobs.before_batch = None
    deadline = time.time() + 10
    while (jobs.directory / job).exists() and time.time() < deadline:
        time.sleep(0.05)
    assert not (jobs.directory / job).exists()
    assert httpx.get(location, headers=data.auth).status_code == 404


def test_too_many_running_jobs_is_429(data):
    jobs = data.platform.exports
    gate = threading.Event()
    jobs.before_batch = lambda job: gate.wait(10)
    started = []
    try:
        for _ in range(jobs.max_jobs):
            r = kick_off(data, "/$export", _type="Organization")
            assert r.status_code == 202
            started.append(r.headers["Content-Location"])
        r = kick_off(data, "/$export", _type="Organization")
        assert r.status_code == 429 and r.headers.get("Retry-After")
    finally:
        gate.set()
        jobs.before_batch = None
    for location in started:
        wait(data, location)


def test_split_into_parts_of_at_most_the_file_size(data):
    jobs = data.platform.exports
    before = jobs.file_resources
    jobs.file_resources = 4
    try:
        manifest, files = export(data, _type="Observation")
    finally:
        jobs.file_resources = before
    assert len(manifest["output"]) >= 3 and all(o["count"] <= 4 for o in manifest["output"])
    assert len(ids(files["Observation"])) == sum(o["count"] for o in manifest["output"])


def test_kick_off_is_audited(data):
    kick_off(data, "/$export", _type="Organization")
    data.platform.audit.flush()
    rows = data.platform.store.audit_search(count=20)
    bodies = [orjson.loads(r.body) for r in rows]
    assert any("$export" in (e.get("query") or "") or any("$export" in str(x) for x in e.get("entity", []))
               for e in bodies)
