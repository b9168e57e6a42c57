"""Custom SearchParameter resources: searchable at once, existing data reindexed,
invalid definitions rejected, removal takes effect, and a restart keeps them."""
from __future__ import annotations

import httpx

from tests.conftest import start_server

BIRTHPLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"


def birthplace_param(status="active"):
    return {"resourceType": "SearchParameter", "url": "http://enjournal.no/fhir/SearchParameter/birthplace-city",
            "name": "birthplace-city", "status": status, "code": "birthplace-city", "base": ["Patient"],
            "type": "string", "description": "City of birth",
            "expression": f"(Patient.extension('{BIRTHPLACE}').value as Address).city"}


def born_in(city):
    return {"resourceType": "Patient", "extension": [{"url": BIRTHPLACE, "valueAddress": {"city": city}}]}


def test_custom_parameter_lifecycle(tmp_path):
    srv = start_server(tmp_path)
    try:
        c = httpx.Client(base_url=srv.base, headers=srv.auth)
        before = c.post("/Patient", json=born_in("Tromsø")).json()["id"]
        assert c.get("/Patient", params={"birthplace-city": "Tromsø"}).status_code == 400  # unknown yet
        sp = c.post("/SearchParameter", json=birthplace_param())
        assert sp.status_code == 201, sp.text
        after = c.post("/Patient", json=born_in("Bodø")).json()["id"]
        ids = lambda city: [e["resource"]["id"] for e in c.get("/Patient", params={"birthplace-city": city}).json().get("entry", [])]
        assert ids("tromsø") == [before]        # reindexed: the resource stored earlier is found
        assert ids("Bodø") == [after]
        bad = dict(birthplace_param(), url="http://x/bad", code="bad", expression="Patient.name.where(")
        resp = c.post("/SearchParameter", json=bad)
        assert resp.status_code == 400 and "SearchParameter.expression" in str(resp.json())
        srv.stop()
        srv = start_server(tmp_path)            # same database: definitions survive a restart
        c = httpx.Client(base_url=srv.base, headers=srv.auth)
        assert ids("Tromsø") == [before]
        sp_id = sp.json()["id"]
        assert c.put(f"/SearchParameter/{sp_id}", json=dict(birthplace_param("retired"), id=sp_id)).status_code == 200
        assert c.get("/Patient", params={"birthplace-city": "Tromsø"}).status_code == 400
    finally:
        srv.stop()


def test_stale_index_is_rebuilt_on_start(tmp_path):
    """A database indexed under other definitions (an upgrade) is reindexed when the server starts."""
    import sqlite3
    srv = start_server(tmp_path)
    try:
        c = httpx.Client(base_url=srv.base, headers=srv.auth)
        pid = c.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Haugen"}]}).json()["id"]
    finally:
        srv.stop()
    db = sqlite3.connect(tmp_path / "enjournal.db")
    db.execute("DELETE FROM ix_str")                       # index rows lost or made by older code
    db.execute("UPDATE setting SET value = 'older-definitions' WHERE name = 'registry-fingerprint'")
    db.commit()
    db.close()
    srv = start_server(tmp_path)
    try:
        found = httpx.get(f"{srv.base}/Patient", params={"family": "haugen"}, headers=srv.auth).json()
        assert [e["resource"]["id"] for e in found["entry"]] == [pid]
    finally:
        srv.stop()
