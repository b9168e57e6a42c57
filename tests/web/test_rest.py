"""The RESTful interactions over real HTTP: read, vread, create, update, patch, delete,
history, conditional interactions, versioning headers, Prefer, and bad input."""
from __future__ import annotations

import concurrent.futures

import httpx
import pytest

FNR = "urn:oid:2.16.578.1.12.4.1.4.1"


def patient(family="Nordmann", given="Kari", **extra):
    return {"resourceType": "Patient", "name": [{"family": family, "given": [given]}], **extra}


def outcome_of(resp: httpx.Response) -> dict:
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body


def test_create_read_and_version_headers(client):
    resp = client.post("/Patient", json=patient())
    assert resp.status_code == 201
    created = resp.json()
    assert created["meta"]["versionId"] == "1"
    assert resp.headers["etag"] == 'W/"1"'
    assert resp.headers["location"].endswith(f"/Patient/{created['id']}/_history/1")
    assert "last-modified" in resp.headers
    got = client.get(f"/Patient/{created['id']}")
    assert got.status_code == 200
    assert got.json()["name"][0]["family"] == "Nordmann"
    assert got.headers["content-type"].startswith("application/fhir+json")


def test_update_makes_new_version_and_vread_returns_old(client):
    pid = client.post("/Patient", json=patient()).json()["id"]
    resp = client.put(f"/Patient/{pid}", json=patient(given="Ola", id=pid))
    assert resp.status_code == 200
    assert resp.json()["meta"]["versionId"] == "2"
    assert client.get(f"/Patient/{pid}/_history/1").json()["name"][0]["given"] == ["Kari"]
    assert client.get(f"/Patient/{pid}/_history/2").json()["name"][0]["given"] == ["Ola"]
    assert client.get(f"/Patient/{pid}/_history/3").status_code == 404


def test_update_without_change_keeps_version(client):
    pid = client.post("/Patient", json=patient()).json()["id"]
    resp = client.put(f"/Patient/{pid}", json=patient(id=pid))
    assert resp.json()["meta"]["versionId"] == "1"


def test_create_on_update_with_client_id(client):
    resp = client.put("/Patient/kari-1", json=patient(id="kari-1"))
    assert resp.status_code == 201
    assert client.get("/Patient/kari-1").status_code == 200


def test_if_match(client):
    pid = client.post("/Patient", json=patient()).json()["id"]
    bad = client.put(f"/Patient/{pid}", json=patient(given="X", id=pid), headers={"If-Match": 'W/"7"'})
    assert bad.status_code == 412
    assert outcome_of(bad)
    good = client.put(f"/Patient/{pid}", json=patient(given="X", id=pid), headers={"If-Match": 'W/"1"'})
    assert good.status_code == 200


def test_if_none_match_and_if_modified_since(client):
    resp = client.post("/Patient", json=patient())
    pid = resp.json()["id"]
    assert client.get(f"/Patient/{pid}", headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert client.get(f"/Patient/{pid}", headers={"If-None-Match": 'W/"0"'}).status_code == 200
    lm = resp.headers["last-modified"]
    assert client.get(f"/Patient/{pid}", headers={"If-Modified-Since": lm}).status_code == 304
    assert client.get(f"/Patient/{pid}",
                      headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 200


def test_prefer_return(client):
    minimal = client.post("/Patient", json=patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b""
    assert minimal.headers["location"]
    oo = client.post("/Patient", json=patient(), headers={"Prefer": "return=OperationOutcome"})
    assert oo.json()["resourceType"] == "OperationOutcome"


def test_delete_then_read_is_gone_and_history_kept(client):
    pid = client.post("/Patient", json=patient()).json()["id"]
    assert client.delete(f"/Patient/{pid}").status_code == 204
    gone = client.get(f"/Patient/{pid}")
    assert gone.status_code == 410
    assert outcome_of(gone)
    hist = client.get(f"/Patient/{pid}/_history").json()
    assert hist["type"] == "history"
    assert [e["request"]["method"] for e in hist["entry"]] == ["DELETE", "POST"]
    assert client.get(f"/Patient/{pid}/_history/1").status_code == 200
    # deleting again is fine
    assert client.delete(f"/Patient/{pid}").status_code == 204


def test_json_patch(client):
    pid = client.post("/Patient", json=patient()).json()["id"]
    ops = [{"op": "replace", "path": "/name/0/family", "value": "Ås"}, {"op": "add", "path": "/gender",
                                                                       "value": "female"}]
    resp = client.patch(f"/Patient/{pid}", json=ops, headers={"Content-Type": "application/json-patch+json"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"][0]["family"] == "Ås" and resp.json()["meta"]["versionId"] == "2"
    failing = client.patch(f"/Patient/{pid}", json=[{"op": "test", "path": "/gender", "value": "male"}],
                           headers={"Content-Type": "application/json-patch+json"})
    assert failing.status_code == 422
    bad = client.patch(f"/Patient/{pid}", json=[{"op": "replace", "path": "/gender", "value": 5}],
                       headers={"Content-Type": "application/json-patch+json"})
    assert bad.status_code == 400  # the patched resource is not valid
    assert client.get(f"/Patient/{pid}").json()["gender"] == "female"
    history = client.get(f"/Patient/{pid}/_history").json()
    assert [(e["request"]["method"], e["request"]["url"]) for e in history["entry"]] == \
        [("PATCH", f"Patient/{pid}"), ("POST", "Patient")]


def test_history_levels_and_since(client):
    pid = client.post("/Observation", json={"resourceType": "Observation", "status": "final",
                                            "code": {"text": "x"}}).json()["id"]
    type_hist = client.get("/Observation/_history").json()
    assert any(e["resource"]["id"] == pid for e in type_hist["entry"])
    system = client.get("/_history", params={"_count": 2}).json()
    assert len(system["entry"]) == 2 and any(link["relation"] == "next" for link in system["link"])
    future = client.get("/_history", params={"_since": "2999-01-01"}).json()
    assert future["total"] == 0
    assert client.get("/_history", params={"_since": "yesterday"}).status_code == 400


def test_conditional_create(client):
    ident = {"system": "urn:test", "value": "cond-1"}
    first = client.post("/Patient", json=patient(identifier=[ident]), headers={"If-None-Exist": "identifier=urn:test|cond-1"})
    assert first.status_code == 201
    second = client.post("/Patient", json=patient(identifier=[ident]), headers={"If-None-Exist": "identifier=urn:test|cond-1"})
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]


def test_conditional_create_race_makes_one(client):
    ident = {"system": "urn:test", "value": "race-1"}

    def create(_):
        return client.post("/Patient", json=patient(identifier=[ident]),
                           headers={"If-None-Exist": "identifier=urn:test|race-1"}).json()["id"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(create, range(16)))
    assert len(ids) == 1
    assert client.get("/Patient", params={"identifier": "urn:test|race-1", "_total": "accurate"}).json()["total"] == 1


def test_conditional_update_and_delete(client):
    body = patient(identifier=[{"system": "urn:test", "value": "cu-1"}])
    created = client.put("/Patient?identifier=urn:test|cu-1", json=body)
    assert created.status_code == 201
    updated = client.put("/Patient?identifier=urn:test|cu-1", json=dict(body, gender="male"))
    assert updated.status_code == 200 and updated.json()["id"] == created.json()["id"]
    assert client.delete("/Patient?identifier=urn:test|cu-1").status_code == 204
    assert client.get(f"/Patient/{created.json()['id']}").status_code == 410


def test_bad_input_is_4xx_operation_outcome(client):
    cases = [
        client.post("/Patient", content=b"{not json", headers={"Content-Type": "application/fhir+json"}),
        client.post("/Patient", json={"resourceType": "Observation", "status": "final", "code": {"text": "x"}}),
        client.post("/Patient", json=[1, 2]),
        client.put("/Patient/abc", json=patient(id="xyz")),
        client.post("/Patient", json=patient(unknownElement=True)),
        client.post("/Patient", json=patient(birthDate="1990-13-45")),
        client.post("/Patient", content=b"<Patient/>", headers={"Content-Type": "application/fhir+xml"}),
        client.get("/Patient", params={"birthdate": "not-a-date"}),
        client.get("/Patient", params={"nonsense": "1"}),
        client.get("/NotAType/1"),
        client.get("/Patient/x", headers={"Accept": "application/fhir+xml"}),
    ]
    for resp in cases:
        assert 400 <= resp.status_code < 500, (resp.request.url, resp.status_code, resp.text)
        assert outcome_of(resp)["issue"][0]["diagnostics"]


def test_invalid_fodselsnummer_names_the_field(client):
    resp = client.post("/Patient", json=patient(identifier=[{"system": FNR, "value": "02013299990"}]))
    assert resp.status_code == 400
    issue = outcome_of(resp)["issue"][0]
    assert "identifier[0]" in issue["expression"][0]
    ok = client.post("/Patient", json=patient(identifier=[{"system": FNR, "value": "02013299997"}]))
    assert ok.status_code == 201


def test_oversize_body_is_413(tmp_path):
    from tests.conftest import start_server
    srv = start_server(tmp_path, max_body_bytes=1000)
    try:
        resp = httpx.post(f"{srv.base}/Patient", headers=srv.auth, json=patient(text={"status": "generated",
                                                                      "div": "<div>" + "x" * 5000 + "</div>"}))
        assert resp.status_code == 413
        assert outcome_of(resp)
    finally:
        srv.stop()


def test_unresolvable_reference_is_rejected(client):
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "subject": {"reference": "Patient/does-not-exist"}}
    resp = client.post("/Observation", json=obs)
    assert resp.status_code == 422
    assert outcome_of(resp)["issue"][0]["expression"] == ["Observation.subject"]


def test_metadata_and_landing(client):
    cap = client.get("/metadata").json()
    assert cap["resourceType"] == "CapabilityStatement" and cap["fhirVersion"] == "4.0.1"
    types = {r["type"] for r in cap["rest"][0]["resource"]}
    assert {"Patient", "Observation", "MedicationRequest"} <= types
    html = client.get("/", headers={"Accept": "text/html"})
    assert "enjournal" in html.text and "/metadata" in html.text


@pytest.mark.parametrize("path", ["/Patient/$validate"])
def test_validate_operation(client, path):
    good = client.post(path, json=patient())
    assert good.status_code == 200 and good.json()["issue"][0]["severity"] == "information"
    bad = client.post(path, json=patient(birthDate="yesterday"))
    assert bad.json()["issue"][0]["severity"] == "error"


def test_system_search_by_post(client):
    pid = client.post("/Patient", json=patient(family="Postsøk")).json()["id"]
    found = client.post("/_search", data={"_type": "Patient", "_id": pid}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [pid]
    cap = client.get("/metadata").json()
    patient_cap = next(r for r in cap["rest"][0]["resource"] if r["type"] == "Patient")
    assert patient_cap["conditionalRead"] == "full-support"


def test_plain_read_and_conditional_read_agree(client):
    """The fast path for plain GET /Type/id and the full route give the same answer."""
    pid = client.post("/Patient", json=patient(family="Fast")).json()["id"]
    plain = client.get(f"/Patient/{pid}")
    full = client.get(f"/Patient/{pid}", params={"_format": "json"})
    assert plain.content == full.content
    for name in ("etag", "last-modified", "content-type"):
        assert plain.headers[name] == full.headers[name]
    assert client.get("/Patient/no-such-id").status_code == 404
    assert client.get(f"/Patient/{pid}", headers={"Accept": "application/fhir+xml"}).status_code == 406


def test_history_at_returns_the_version_current_then(client):
    import time
    from datetime import datetime, timezone
    pid = client.post("/Patient", json=patient(given="First")).json()["id"]
    time.sleep(1.1)
    moment = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    time.sleep(1.1)
    client.put(f"/Patient/{pid}", json=patient(given="Second", id=pid))
    at = client.get(f"/Patient/{pid}/_history", params={"_at": moment}).json()
    assert [e["resource"]["name"][0]["given"] for e in at["entry"]] == [["First"]]
    now = client.get(f"/Patient/{pid}/_history", params={"_since": moment}).json()
    assert [e["resource"]["name"][0]["given"] for e in now["entry"]] == [["Second"]]
