"""Patient + code searches use the token rows' patient column; results must equal the
general plan's, also for resources that refer to several patients or reach the patient
through another reference."""
from __future__ import annotations


def _obs(subject, code, performer=None, day=1):
    o = {"resourceType": "Observation", "status": "final",
         "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
         "subject": {"reference": subject}, "effectiveDateTime": f"2026-01-{day:02d}"}
    if performer:
        o["performer"] = [{"reference": performer}]
    return o


def _ids(client, **params):
    body = client.get("/Observation", params=params).json()
    return sorted(e["resource"]["id"] for e in body.get("entry", []))


def test_patient_and_code(client):
    a = client.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    b = client.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    mine = [client.post("/Observation", json=_obs(f"Patient/{a}", "8867-4", day=d)).json()["id"] for d in (1, 2)]
    other_code = client.post("/Observation", json=_obs(f"Patient/{a}", "9279-1")).json()["id"]
    theirs = client.post("/Observation", json=_obs(f"Patient/{b}", "8867-4")).json()["id"]
    # refers to both patients: its token rows are marked '*', and it belongs to both searches
    both = client.post("/Observation", json=_obs(f"Patient/{b}", "8867-4", performer=f"Patient/{a}")).json()["id"]
    assert _ids(client, subject=f"Patient/{a}", code="http://loinc.org|8867-4") == sorted(mine)
    assert _ids(client, subject=f"Patient/{b}", code="8867-4") == sorted([theirs, both])
    assert _ids(client, performer=f"Patient/{a}", code="8867-4") == [both]
    assert _ids(client, patient=a, code="http://loinc.org|8867-4,http://loinc.org|9279-1") == sorted(mine + [other_code])
    newest = client.get("/Observation", params={"subject": f"Patient/{a}", "code": "8867-4", "_sort": "-date"}).json()
    assert [e["resource"]["id"] for e in newest["entry"]] == [mine[1], mine[0]]
    # moving an Observation to another patient moves it between the searches
    moved = dict(_obs(f"Patient/{b}", "8867-4"), id=mine[0])
    assert client.put(f"/Observation/{mine[0]}", json=moved).status_code == 200
    assert _ids(client, subject=f"Patient/{a}", code="8867-4") == [mine[1]]
    assert mine[0] in _ids(client, subject=f"Patient/{b}", code="8867-4")
