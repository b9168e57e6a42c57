"""A demo-population server on each backend, for the security class tests (issue 12):
test_audit_integrity.py, test_versions.py, test_existence.py, test_totals.py.

Patients (demo seed 2026): A = Silje Økland and B = Else Hølland live in different
households; Sara (8), Jakob (14) and Maja (17) are Silje's children.
"""
from __future__ import annotations

import httpx
import pytest

from tests.conftest import BACKENDS, demo_server, patient_ids

FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
FHIR_JSON = "application/fhir+json"
PEOPLE = {"silje": "25848531440", "sara": "19841856050", "jakob": "19861286366", "maja": "10880984069",
          "else": "18854005231"}
# a citizen who may write what citizens write in their own record and their children's
CITIZEN_WRITES = "patient/*.rs patient/Consent.cu patient/Communication.c patient/Observation.cud"


@pytest.fixture(scope="module", params=BACKENDS)
def demo(request, tmp_path_factory):
    server = demo_server(tmp_path_factory, "demo", request.param)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def web(demo):
    """A keep-alive client with no credentials: every request says who asks."""
    with httpx.Client(base_url=demo.base, timeout=60, headers={"Accept": FHIR_JSON}) as client:
        yield client


@pytest.fixture(scope="module")
def people(demo):
    """Patient ids of the demo people, by first name."""
    return patient_ids(demo, PEOPLE)


def as_gp(demo, patient_id: str, purpose: str = "TREAT", **more) -> dict:
    return demo.headers("gp", purpose=purpose, patient=f"Patient/{patient_id}", **more)


def as_citizen(demo, persona: str, acting_for: str | None = None, scope: str | None = CITIZEN_WRITES) -> dict:
    out = {"Authorization": f"Bearer {demo.token(persona, scope=scope)}"}
    if acting_for:
        out["X-Patient"] = acting_for
    return out


def with_json(headers: dict) -> dict:
    return {**headers, "Content-Type": FHIR_JSON}


def outcome(response: httpx.Response) -> dict:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"][0]


def observation(patient_id: str, text: str = "home measurement", **more) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": {"text": text},
            "subject": {"reference": f"Patient/{patient_id}"}, **more}


def first(web, demo, type_: str, patient_id: str) -> dict:
    r = web.get(f"/{type_}", params={"patient": f"Patient/{patient_id}", "_count": 1}, headers=demo.auth)
    assert r.status_code == 200 and r.json().get("entry"), r.text
    return r.json()["entry"][0]["resource"]
