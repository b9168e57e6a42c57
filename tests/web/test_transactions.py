"""Batch and transaction Bundles over real HTTP: atomicity, processing order, urn:uuid and
conditional references, conditional entries, large bundles, and the change feed."""
from __future__ import annotations

import uuid

import pytest

from enjournal.services.feed import FeedConsumer


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def tx(*entries, kind="transaction"):
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post(resource, full_url=None, **request):
    entry = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"], **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def obs(subject_ref, code="8867-4", value=72):
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": subject_ref},
            "valueQuantity": {"value": value, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}}


def test_transaction_resolves_urn_uuid_and_returns_locations(client):
    p = urn()
    bundle = tx(post({"resourceType": "Patient", "name": [{"family": "Berg"}]}, p), post(obs(p), urn()))
    resp = client.post("/", json=bundle)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    patient_loc = out["entry"][0]["response"]["location"]
    obs_loc = out["entry"][1]["response"]["location"]
    stored_obs = client.get("/" + obs_loc.split("/_history")[0]).json()
    assert stored_obs["subject"]["reference"] == patient_loc.split("/_history")[0]


def test_forward_reference_within_transaction(client):
    p = urn()
    # the Observation comes first and refers to the Patient created later in the same Bundle
    bundle = tx(post(obs(p), urn()), post({"resourceType": "Patient", "name": [{"family": "Dahl"}]}, p))
    assert client.post("/", json=bundle).status_code == 200


def test_transaction_is_atomic(client):
    family = f"Atomic{uuid.uuid4().hex[:8]}"
    bad = tx(post({"resourceType": "Patient", "name": [{"family": family}]}, urn()),
             post({"resourceType": "Observation", "status": "not-a-status-x", "code": 5}, urn()))
    resp = client.post("/", json=bad)
    assert 400 <= resp.status_code < 500
    issue = resp.json()["issue"][0]
    assert any("Bundle.entry[1]" in e for e in issue.get("expression", [])), issue
    found = client.get("/Patient", params={"family": family}).json()
    assert found.get("total", 0) == 0 and not found.get("entry")


def test_unknown_urn_reference_fails_whole_transaction(client):
    resp = client.post("/", json=tx(post(obs(urn()), urn())))
    assert resp.status_code == 400


def test_processing_order_delete_before_create(client):
    pid = client.post("/Patient", json={"resourceType": "Patient", "gender": "male"}).json()["id"]
    bundle = tx(post({"resourceType": "Patient", "gender": "female"}, urn()),
                {"request": {"method": "DELETE", "url": f"Patient/{pid}"}},
                {"request": {"method": "GET", "url": f"Patient/{pid}"}})
    out = client.post("/", json=bundle).json()["entry"]
    assert out[1]["response"]["status"].startswith("204")
    assert out[2]["response"]["status"].startswith("410")   # GET runs last, after the delete


def test_conditional_create_and_conditional_reference_in_transaction(client):
    ident = f"urn:test|tx-{uuid.uuid4().hex[:8]}"
    system, value = ident.split("|")
    pat = {"resourceType": "Patient", "identifier": [{"system": system, "value": value}]}
    first = client.post("/", json=tx(post(pat, urn(), ifNoneExist=f"identifier={ident}"))).json()
    again = client.post("/", json=tx(post(pat, urn(), ifNoneExist=f"identifier={ident}"),
                                     post(obs(f"Patient?identifier={ident}"), urn()))).json()
    assert again["entry"][0]["response"]["status"] == "200 OK"
    assert again["entry"][0]["response"]["location"] == first["entry"][0]["response"]["location"]
    obs_loc = again["entry"][1]["response"]["location"].split("/_history")[0]
    pid = first["entry"][0]["response"]["location"].split("/")[1]
    assert client.get("/" + obs_loc).json()["subject"]["reference"] == f"Patient/{pid}"


def test_put_and_patch_entries(client):
    pid = f"tx-put-{uuid.uuid4().hex[:8]}"
    bundle = tx({"resource": {"resourceType": "Patient", "id": pid, "gender": "male"},
                 "request": {"method": "PUT", "url": f"Patient/{pid}"}})
    assert client.post("/", json=bundle).json()["entry"][0]["response"]["status"] == "201 Created"
    import base64
    import json
    patch = [{"op": "replace", "path": "/gender", "value": "female"}]
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(json.dumps(patch).encode()).decode()}
    out = client.post("/", json=tx({"resource": binary, "request": {"method": "PATCH", "url": f"Patient/{pid}"}}))
    assert out.status_code == 200, out.text
    assert client.get(f"/Patient/{pid}").json()["gender"] == "female"


def test_batch_entries_fail_independently(client):
    good = post({"resourceType": "Patient", "gender": "male"})
    bad = post({"resourceType": "Patient", "gender": 12})
    out = client.post("/", json=tx(good, bad, {"request": {"method": "GET", "url": "Patient/nope"}},
                                   kind="batch")).json()
    assert out["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses[0] == "201 Created"
    assert statuses[1].startswith("400") and out["entry"][1]["response"]["outcome"]["resourceType"] == \
        "OperationOutcome"
    assert statuses[2].startswith("404")


def test_bundle_shape_errors(client):
    assert client.post("/", json={"resourceType": "Bundle", "type": "collection"}).status_code == 400
    assert client.post("/", json={"resourceType": "Patient"}).status_code == 400
    resp = client.post("/", json=tx({"request": {"method": "FROB", "url": "Patient"}}))
    assert resp.status_code == 400 and "Bundle.entry[0].request.method" in resp.json()["issue"][0]["expression"]


def test_large_transaction(client):
    p = urn()
    entries = [post({"resourceType": "Patient", "name": [{"family": "Stor"}]}, p)]
    entries += [post(obs(p, value=i % 150), urn()) for i in range(3000)]
    resp = client.post("/", json=tx(*entries))
    assert resp.status_code == 200
    assert len(resp.json()["entry"]) == 3001
    pid = resp.json()["entry"][0]["response"]["location"].split("/")[1]
    total = client.get("/Observation", params={"subject": f"Patient/{pid}", "_total": "accurate",
                                                "_count": 0}).json()["total"]
    assert total == 3000


def test_change_feed_exactly_once_in_commit_order(server, client):
    repo = server.app.state.platform.repo
    seen: list = []

    def handler(unit, entries):
        seen.extend(entries)

    consumer = FeedConsumer(repo, f"test-{uuid.uuid4().hex[:6]}", handler, batch=50)
    while consumer.step():
        pass
    before = len(seen)
    pid = client.post("/Patient", json={"resourceType": "Patient", "gender": "male"}).json()["id"]
    client.put(f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "gender": "female"})
    client.delete(f"/Patient/{pid}")

    def crashing(unit, entries):
        raise RuntimeError("consumer crashed")

    crashy = FeedConsumer(repo, consumer.name, crashing)
    with pytest.raises(RuntimeError):
        crashy.step()           # its position must not move
    while consumer.step():
        pass
    new = seen[before:]
    mine = [(e.method, e.version) for e in new if e.id == pid]
    assert mine == [("POST", 1), ("PUT", 2), ("DELETE", 3)]
    seqs = [e.seq for e in seen]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    assert consumer.step() == 0
