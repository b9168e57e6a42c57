"""Patient/$everything and compartment search over real HTTP."""
from __future__ import annotations

import uuid


def _load_patient(client, n_obs=30):
    p, org, prac = (f"urn:uuid:{uuid.uuid4()}" for _ in range(3))
    entries = [
        {"fullUrl": org, "resource": {"resourceType": "Organization", "name": "Legekontoret"},
         "request": {"method": "POST", "url": "Organization"}},
        {"fullUrl": prac, "resource": {"resourceType": "Practitioner", "name": [{"family": "Lege"}]},
         "request": {"method": "POST", "url": "Practitioner"}},
        {"fullUrl": p, "resource": {"resourceType": "Patient", "generalPractitioner": [{"reference": prac}],
                                    "managingOrganization": {"reference": org}},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {
            "resourceType": "Condition", "subject": {"reference": p}, "code": {"text": "Astma"}},
         "request": {"method": "POST", "url": "Condition"}},
    ]
    for i in range(n_obs):
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {
            "resourceType": "Observation", "status": "final", "code": {"text": "puls"},
            "subject": {"reference": p}, "performer": [{"reference": prac}],
            "effectiveDateTime": f"2026-01-{i % 28 + 1:02d}"}, "request": {"method": "POST", "url": "Observation"}})
    out = client.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}).json()
    return [e["response"]["location"].split("/_history")[0] for e in out["entry"]]


def test_everything_returns_patient_compartment_and_referenced(client):
    locs = _load_patient(client)
    org, prac, patient = locs[0], locs[1], locs[2]
    other = _load_patient(client, 3)           # another patient's data must not appear
    bundle = client.get(f"/{patient}/$everything").json()
    got = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}
    assert set(locs) == got
    assert not got & set(other[2:])
    assert bundle["entry"][0]["resource"]["resourceType"] == "Patient"
    assert org in got and prac in got          # referenced, not in the compartment


def test_everything_paging_type_and_since(client):
    locs = _load_patient(client, 25)
    patient = locs[2]
    seen, url = [], f"/{patient}/$everything?_count=10"
    while url:
        page = client.get(url).json()
        seen += [e["resource"]["id"] for e in page["entry"]]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert len(seen) == len(set(seen)) == len(locs)
    only = client.get(f"/{patient}/$everything", params={"_type": "Condition"}).json()
    assert [e["resource"]["resourceType"] for e in only["entry"]] == ["Condition"]
    future = client.get(f"/{patient}/$everything", params={"_since": "2999-01-01"}).json()
    assert not future.get("entry")
    assert client.get(f"/{patient}/$everything", params={"_type": "Nope"}).status_code == 404
    assert client.get("/Patient/nobody/$everything").status_code == 404


def test_compartment_search(client):
    locs = _load_patient(client, 5)
    patient = locs[2]
    obs = client.get(f"/{patient}/Observation", params={"_total": "accurate"}).json()
    assert obs["total"] == 5
    cond = client.get(f"/{patient}/Condition").json()
    assert len(cond["entry"]) == 1
    assert client.get(f"/{patient}/Organization").status_code == 400   # not in the Patient compartment
    # the compartment is part of the path, never a query parameter a client could add
    assert client.get("/Observation", params={"_compartment": f"{patient}|subject"}).status_code == 400
