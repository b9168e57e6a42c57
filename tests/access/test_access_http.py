"""Access control end to end: real HTTP against a real server with the demo population, real
tokens from the built-in provider (docs/access.md, docs/audit.md).

Every rule of docs/access.md is exercised the way a client meets it: the status code, the
OperationOutcome, what a search returns and counts, and what the audit log shows afterwards.
The module shares one server (demo population, 30 people); tests that change a patient's
access facts (Consents, shielding, Practitioner qualifications) undo their change in a
``finally`` and use patients no other section depends on.

Patients (demo seed 2026): A = Silje Økland and B = Else Hølland live in different
households; Sara (8), Jakob (14) and Maja (17) are Silje's children.
"""
from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import hmac
import json
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from fhirclient import client as smart_client
from fhirclient.models.observation import Observation as FcObservation
from fhirpy import SyncFHIRClient
from joserfc import jwt
from joserfc.jwk import ECKey

from enjournal.access.context import system_context, use
from enjournal.services.demo import load_demo
from tests.conftest import demo_server, patient_ids, start_server

ENJOURNAL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "enjournal"
FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
HPR = "urn:oid:2.16.578.1.12.4.1.4.4"
CONTROL = "https://enjournal.no/fhir/CodeSystem/access-control"
SECTION = "https://enjournal.no/fhir/CodeSystem/record-section"
PROXY_SCOPE = "https://enjournal.no/fhir/CodeSystem/proxy-scope"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
FHIR_JSON = "application/fhir+json"

GP_HPR = "9144101"      # persona gp: Astrid Bråten, demo-gp-1
PEOPLE = {              # fødselsnummer of the demo people the tests use (docs/demo.md, seed 2026)
    "silje": "25848531440", "hakon": "02828307595", "sara": "19841856050", "jakob": "19861286366",
    "maja": "10880984069", "else": "18854005231", "olav": "01923404518",
    "terje": "28885942506", "marius": "30909412966", "aashild": "09858418639",
    "eirik": "22908129761", "hege": "04917514602", "espen": "15876919556",
}
CITIZEN_WRITES = "patient/*.rs patient/Consent.cu patient/Communication.c patient/Observation.c"


# == the server ====================================================================================

@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = demo_server(tmp_path_factory, "access-http")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(srv):
    """A client with no credentials: every test says who it is per request."""
    with httpx.Client(base_url=srv.base, timeout=30, headers={"Accept": FHIR_JSON}) as client:
        yield client


@pytest.fixture(scope="module")
def ids(srv):
    """Patient ids by person, looked up by fødselsnummer with the system token."""
    return patient_ids(srv, PEOPLE)


@pytest.fixture(scope="module")
def A(ids):
    return ids["silje"]


@pytest.fixture(scope="module")
def B(ids):
    return ids["else"]


# == helpers =======================================================================================

def gp(srv, patient: str, purpose: str = "TREAT", persona: str = "gp", **more) -> dict:
    """Headers of a health person attesting ``patient`` (an id or a fødselsnummer)."""
    bound = patient if patient.isdigit() and len(patient) == 11 else f"Patient/{patient}"
    return srv.headers(persona, purpose=purpose, patient=bound, **more)


def citizen(srv, persona: str, acting_for: str | None = None, scope: str | None = None) -> dict:
    """Headers of a citizen, optionally acting for someone (X-Patient = their fødselsnummer)."""
    token = srv.token(persona, scope=scope) if scope else srv.token(persona)
    out = {"Authorization": f"Bearer {token}"}
    if acting_for:
        out["X-Patient"] = acting_for
    return out


def entries(bundle: dict) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", [])]


def ids_of(bundle: dict, type_: str | None = None) -> set[str]:
    return {f"{r['resourceType']}/{r['id']}" for r in entries(bundle) if type_ in (None, r["resourceType"])}


def diagnostics(response: httpx.Response) -> str:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return " ".join(i.get("diagnostics", "") for i in body["issue"])


def total(http, srv, path: str, params: dict, headers: dict | None = None) -> int:
    r = http.get(path, params={**params, "_summary": "count"}, headers=headers or srv.auth)
    assert r.status_code == 200, r.text
    return r.json()["total"]


def first_id(http, srv, type_: str, patient: str, **params) -> str:
    r = http.get(f"/{type_}", params={"patient": f"Patient/{patient}", "_count": 1, **params}, headers=srv.auth)
    assert r.status_code == 200 and r.json().get("entry"), (type_, patient, r.text)
    return r.json()["entry"][0]["resource"]["id"]


def create(http, headers: dict, resource: dict) -> httpx.Response:
    return http.post(f"/{resource['resourceType']}", json=resource,
                     headers={**headers, "Content-Type": FHIR_JSON})


def consent(patient: str, kind: str, provision: dict | None = None) -> dict:
    """A citizen control as docs/access.md shapes it (valid R4: scope, category, policyRule)."""
    resource = {
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": CONTROL, "code": kind}]}],
        "patient": {"reference": f"Patient/{patient}"},
        "dateTime": "2026-11-01T10:00:00+01:00",
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                   "code": "OPTOUT" if kind != "power-of-attorney" else "OPTIN"}]},
    }
    if provision:
        resource["provision"] = provision
    return resource


def actor(system: str, value: str) -> dict:
    return {"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                 "code": "PRCP"}]},
            "reference": {"identifier": {"system": system, "value": value}}}


def attorney(giver: str, receiver_fnr: str, *scopes: str) -> dict:
    return consent(giver, "power-of-attorney", {
        "type": "permit", "period": {"start": "2026-01-01", "end": "2027-12-31"},
        "actor": [actor(FNR, receiver_fnr)],
        "action": [{"coding": [{"system": PROXY_SCOPE, "code": s}]} for s in scopes]})


@contextlib.contextmanager
def written(http, srv, resource: dict, headers: dict | None = None):
    """``resource`` created (by the system unless ``headers`` say who), deleted by the system
    afterwards; yields its id."""
    r = create(http, headers or srv.auth, resource)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    try:
        yield rid
    finally:
        d = http.delete(f"/{resource['resourceType']}/{rid}", headers=srv.auth)
        assert d.status_code in (200, 204), d.text


def observation(patient: str, value: float = 72, code: str = "8867-4") -> dict:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{patient}"},
            "effectiveDateTime": "2026-11-20T10:00:00+01:00",
            "valueQuantity": {"value": value, "unit": "/min", "system": "http://unitsofmeasure.org",
                              "code": "/min"}}


def medication_request(patient: str) -> dict:
    return {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc", "code": "A10BA02"}],
                                          "text": "Metformin 500 mg"},
            "subject": {"reference": f"Patient/{patient}"}}


def immunization(patient: str) -> dict:
    return {"resourceType": "Immunization", "status": "completed",
            "vaccineCode": {"coding": [{"system": "http://www.whocc.no/atc", "code": "J07BB02"}],
                            "text": "Influensavaksine"},
            "patient": {"reference": f"Patient/{patient}"}, "occurrenceDateTime": "2026-11-20"}


def audit_rows(srv, at_least: int = 0) -> list:
    """Every audit row, once at least ``at_least`` are written: a request's record is queued
    just after its response has gone, so the newest may still be on its way."""
    deadline = time.monotonic() + 5
    while True:
        srv.platform.audit.flush()
        rows = srv.platform.store.audit_rows(0, 1_000_000)
        if len(rows) >= at_least or time.monotonic() > deadline:
            return rows
        time.sleep(0.01)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# == 1. authentication =============================================================================

def assert_401(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_no_token_is_401_with_a_challenge(http, A):
    for path in ("/Patient", f"/Patient/{A}", "/Observation?code=8867-4", "/?_type=Patient", "/AuditEvent"):
        assert_401(http.get(path))
    assert_401(http.post("/Observation", json=observation(A), headers={"Content-Type": FHIR_JSON}))


def test_garbage_and_non_bearer_tokens_are_401(http):
    for value in ("Bearer not-a-jwt", "Bearer a.b.c", "Basic dXNlcjpwYXNz", "Bearer"):
        r = http.get("/Patient", headers={"Authorization": value})
        assert_401(r)
    assert 'error="invalid_token"' in http.get("/Patient", headers={"Authorization": "Bearer a.b.c"}) \
        .headers["WWW-Authenticate"]


def test_token_signed_by_another_key_is_401(srv, http):
    claims = claims_of(srv.token("gp"))
    stranger = ECKey.generate_key("P-256", parameters={"use": "sig", "alg": "ES256"}, private=True, auto_kid=True)
    own_kid = srv.platform.provider.signing_key().kid
    for kid in (stranger.kid, own_kid):     # an unknown key, and a forged one claiming the provider's kid
        token = jwt.encode({"alg": "ES256", "kid": kid, "typ": "at+jwt"}, claims, stranger)
        r = http.get("/Practitioner/demo-gp-1", headers={"Authorization": f"Bearer {token}"})
        assert_401(r)
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]


def test_expired_token_is_401(srv, http):
    past = copy.copy(srv.platform.provider)
    past.clock = lambda: time.time() - 7200             # issued two hours ago, valid for one minute
    token = past.issue("gp", lifetime=60)
    r = http.get("/Practitioner/demo-gp-1", headers={"Authorization": f"Bearer {token}"})
    assert_401(r)
    assert "expired" in diagnostics(r)


def test_token_for_another_audience_is_401(srv, http):
    claims = claims_of(srv.token("system"))
    claims["aud"] = "https://fhir.elsewhere.example"
    key = srv.platform.provider.signing_key()
    token = jwt.encode({"alg": "ES256", "kid": key.kid, "typ": "at+jwt"}, claims, key)
    r = http.get("/Practitioner/demo-gp-1", headers={"Authorization": f"Bearer {token}"})
    assert_401(r)
    assert "audience" in diagnostics(r)


def test_unsigned_and_hmac_forged_tokens_are_401(srv, http):
    claims = claims_of(srv.token("system"))
    body = b64(json.dumps(claims).encode())
    none = f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{body}."
    assert_401(http.get("/Practitioner/demo-gp-1", headers={"Authorization": f"Bearer {none}"}))
    # HS256 "signed" with the provider's public key (the classic algorithm confusion)
    public = json.dumps(srv.platform.provider.jwks()["keys"][0]).encode()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    mac = b64(hmac.new(public, f"{head}.{body}".encode(), hashlib.sha256).digest())
    assert_401(http.get("/Practitioner/demo-gp-1", headers={"Authorization": f"Bearer {head}.{body}.{mac}"}))


def test_public_endpoints_need_no_token(http):
    assert http.get("/metadata").status_code == 200
    assert http.get("/metadata").json()["resourceType"] == "CapabilityStatement"
    assert http.get("/", headers={"Accept": "text/html"}).status_code == 200
    smart = http.get("/.well-known/smart-configuration")
    assert smart.status_code == 200 and smart.json()["token_endpoint"].endswith("/oidc/token")
    assert http.get("/.well-known/openid-configuration").status_code == 200
    assert http.get("/oidc/jwks").json()["keys"]


def test_a_valid_token_is_accepted(srv, http):
    r = http.get("/Practitioner/demo-gp-1", headers=srv.auth)
    assert r.status_code == 200 and r.json()["id"] == "demo-gp-1"


# == 2. health personnel ===========================================================================

def test_gp_reads_the_attested_patient_by_id_and_by_fodselsnummer(srv, http, A):
    expected = total(http, srv, "/Observation", {"subject": f"Patient/{A}"})
    assert expected > 0
    for bound in (A, PEOPLE["silje"]):
        r = http.get("/Observation", params={"_count": 100}, headers=gp(srv, bound))
        assert r.status_code == 200, r.text
        found = entries(r.json())
        assert len(found) == expected
        assert {o["subject"]["reference"] for o in found} == {f"Patient/{A}"}
        one = http.get(f"/Observation/{found[0]['id']}", headers=gp(srv, bound))
        assert one.status_code == 200 and one.json()["subject"]["reference"] == f"Patient/{A}"


def test_gp_without_attestation_is_refused(srv, http, A):
    obs = first_id(http, srv, "Observation", A)
    bare = srv.headers("gp")
    r = http.get("/Observation", headers=bare)
    assert r.status_code == 403 and "X-Patient" in diagnostics(r)
    assert http.get(f"/Observation/{obs}", headers=bare).status_code == 403
    # a patient but no purpose of use
    r = http.get(f"/Observation/{obs}", headers=srv.headers("gp", patient=f"Patient/{A}"))
    assert r.status_code == 403 and "purpose" in diagnostics(r)
    r = http.get(f"/Observation/{obs}", headers=gp(srv, A, purpose="CURIOUS"))
    assert r.status_code == 403 and "CURIOUS" in diagnostics(r)


def test_another_patients_resource_is_not_found_like_an_unknown_id(srv, http, A, B):
    obs = first_id(http, srv, "Observation", A)
    other = http.get(f"/Observation/{obs}", headers=gp(srv, B))
    unknown = http.get("/Observation/no-such-observation", headers=gp(srv, B))
    assert other.status_code == unknown.status_code == 404
    # nothing tells "exists, but not yours" from "does not exist"
    assert other.json() == json.loads(unknown.text.replace("no-such-observation", obs))


def test_unknown_patient_binds_to_nobody(srv, http, A):
    obs = first_id(http, srv, "Observation", A)
    nobody = "15076500565"          # a valid fødselsnummer that no demo Patient has
    r = http.get(f"/Observation/{obs}", headers=gp(srv, nobody))
    assert r.status_code == 404
    s = http.get("/Observation", headers=gp(srv, nobody))
    assert s.status_code == 200, s.text         # docs/access.md: "searches are empty"
    assert entries(s.json()) == []


def test_coordination_of_care_reads_but_writes_only_coordination(srv, http, A):
    coc = gp(srv, A, purpose="COC")
    assert http.get("/Observation", headers=coc).status_code == 200
    r = create(http, coc, observation(A))
    assert r.status_code == 403 and "COC" in diagnostics(r)
    comm = {"resourceType": "Communication", "status": "completed", "subject": {"reference": f"Patient/{A}"},
            "payload": [{"contentString": "Innkalling til kontroll"}]}
    r = create(http, coc, comm)
    assert r.status_code == 201, r.text


def test_nurse_registers_a_device_but_does_not_prescribe(srv, http, A):
    nurse = gp(srv, A, persona="nurse")
    r = create(http, nurse, medication_request(A))
    assert r.status_code == 403, r.text
    assert "SP" in diagnostics(r) and "MedicationRequest" in diagnostics(r)
    device = {"resourceType": "Device", "status": "active", "patient": {"reference": f"Patient/{A}"},
              "type": {"text": "Insulinpumpe"}}
    r = create(http, nurse, device)
    assert r.status_code == 201, r.text
    assert http.get(f"/Device/{r.json()['id']}", headers=srv.auth).json()["patient"]["reference"] == f"Patient/{A}"
    # nurses vaccinate; critical information is for doctors
    assert create(http, nurse, immunization(A)).status_code == 201
    allergy = {"resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{A}"},
               "code": {"text": "Penicillin"}}
    assert create(http, nurse, allergy).status_code == 403


def test_pharmacist_dispenses_but_does_not_prescribe(srv, http, A):
    pharmacist = gp(srv, A, persona="pharmacist")
    dispense = {"resourceType": "MedicationDispense", "status": "completed",
                "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc", "code": "A10BA02"}]},
                "subject": {"reference": f"Patient/{A}"}, "quantity": {"value": 100}}
    r = create(http, pharmacist, dispense)
    assert r.status_code == 201, r.text
    r = create(http, pharmacist, medication_request(A))
    assert r.status_code == 403 and "FA1" in diagnostics(r)
    assert create(http, pharmacist, immunization(A)).status_code == 403
    # other clinical types: any category
    assert create(http, pharmacist, observation(A, 70)).status_code == 201
    # the doctor may prescribe
    assert create(http, gp(srv, A), medication_request(A)).status_code == 201


def test_personnel_cannot_write_patient(srv, http, A):
    patient = http.get(f"/Patient/{A}", headers=srv.auth).json()
    patient["telecom"] = [{"system": "phone", "value": "+4799999999"}]
    for persona in ("gp", "doctor", "nurse"):
        r = http.put(f"/Patient/{A}", json=patient, headers={**gp(srv, A, persona=persona),
                                                            "Content-Type": FHIR_JSON})
        assert r.status_code == 403 and "population register" in diagnostics(r)
    assert http.get(f"/Patient/{A}", headers=srv.auth).json()["meta"]["versionId"] == patient["meta"]["versionId"]


def test_personnel_of_unknown_category_read_but_do_not_write(srv, http, A):
    url = "/Practitioner/demo-nurse-4"          # persona hospital-nurse
    original = http.get(url, headers=srv.auth).json()
    bare = {k: v for k, v in original.items() if k not in ("qualification", "meta")}
    assert http.put(url, json=bare, headers={**srv.auth, "Content-Type": FHIR_JSON}).status_code == 200
    try:
        nurse = gp(srv, A, persona="hospital-nurse")
        assert http.get("/Observation", headers=nurse).status_code == 200
        r = create(http, nurse, observation(A))
        assert r.status_code == 403 and "category" in diagnostics(r)
    finally:
        original.pop("meta")
        assert http.put(url, json=original, headers={**srv.auth, "Content-Type": FHIR_JSON}).status_code == 200


def test_shared_data_is_read_by_all_and_written_by_systems(srv, http, A):
    for headers in (gp(srv, A), citizen(srv, "silje")):
        assert http.get("/Practitioner/demo-gp-1", headers=headers).status_code == 200
        assert http.get("/Organization", headers=headers).json()["total"] >= 13
    org = {"resourceType": "Organization", "name": "Uautorisert legekontor"}
    assert create(http, gp(srv, A), org).status_code == 403
    assert create(http, citizen(srv, "silje", scope="patient/*.cruds"), org).status_code == 403
    assert create(http, srv.auth, org).status_code == 201


def test_patient_data_of_no_patient_is_for_systems_only(srv, http, A):
    orphan = observation(A)
    del orphan["subject"]
    with written(http, srv, orphan) as oid:
        assert http.get(f"/Observation/{oid}", headers=srv.auth).status_code == 200
        assert http.get(f"/Observation/{oid}", headers=gp(srv, A)).status_code == 404
        assert http.get(f"/Observation/{oid}", headers=citizen(srv, "silje")).status_code == 404
        assert f"Observation/{oid}" not in ids_of(http.get("/Observation", params={"_count": 500},
                                                           headers=gp(srv, A)).json())


def test_scopes_limit_what_a_token_reaches(srv, http, A):
    narrow = {"Authorization": f"Bearer {srv.token('gp', scope='openid user/Observation.rs')}",
              "X-Purpose-Of-Use": "TREAT", "X-Patient": f"Patient/{A}"}
    assert http.get("/Observation", headers=narrow).status_code == 200
    r = http.get("/Condition", headers=narrow)
    assert r.status_code == 403 and "scope" in diagnostics(r)
    assert create(http, narrow, observation(A)).status_code == 403
    # a v2 scope with a query grants nothing
    query = {**narrow, "Authorization": f"Bearer {srv.token('gp', scope='user/Observation.rs?category=laboratory')}"}
    assert http.get("/Observation", headers=query).status_code == 403
    # a citizen's default token (patient/*.rs) reads but does not write
    r = create(http, citizen(srv, "silje"), observation(A))
    assert r.status_code == 403 and "scope" in diagnostics(r)


def test_scopes_limit_system_tokens_too(srv, http, A):
    """docs/access.md: "SMART scopes limit every kind further: ... system/*.rs"."""
    ro = {"Authorization": f"Bearer {srv.token('system', scope='system/*.rs')}"}
    assert http.get(f"/Patient/{A}", headers=ro).status_code == 200
    r = create(http, ro, observation(A))
    assert r.status_code == 403, r.text
    only_obs = {"Authorization": f"Bearer {srv.token('system', scope='system/Observation.rs')}"}
    assert http.get("/Observation", params={"_count": 1}, headers=only_obs).status_code == 200
    assert http.get(f"/Patient/{A}", headers=only_obs).status_code == 403
    assert http.get("/Condition", headers=only_obs).status_code == 403


def test_attestation_in_the_token_works_like_headers(srv, http, A):
    token = srv.token("gp", patient=f"Patient/{A}", purpose="TREAT")
    r = http.get("/Observation", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and entries(r.json())
    token = srv.token("gp", patient=PEOPLE["silje"], purpose="TREAT")
    assert http.get("/Observation", headers={"Authorization": f"Bearer {token}"}).status_code == 200


# == 3. no leaks across patients: GP bound to A, B in another household ============================

@pytest.fixture(scope="module")
def bound_to_A(srv, A):
    return gp(srv, A)


@pytest.fixture(scope="module")
def b_obs(http, srv, B):
    return first_id(http, srv, "Observation", B)


@pytest.fixture(scope="module")
def a_panel(http, srv, A, b_obs):
    """An Observation of A whose hasMember (wrongly) names one of B's: a hop to B's data."""
    panel = observation(A, 60)
    panel["hasMember"] = [{"reference": f"Observation/{b_obs}"}]
    r = create(http, srv.auth, panel)
    assert r.status_code == 201
    return r.json()["id"]


@pytest.fixture(scope="module")
def provenances(http, srv, A, B, a_panel, b_obs):
    """A Provenance for A's panel and one for B's Observation: (A's, B's) ids."""
    made = []
    for target, patient in ((a_panel, A), (b_obs, B)):
        prov = {"resourceType": "Provenance", "target": [{"reference": f"Observation/{target}"}],
                "recorded": "2026-11-20T10:05:00+01:00",
                "agent": [{"who": {"reference": "Practitioner/demo-gp-1"}}],
                "entity": [{"role": "source", "what": {"reference": f"Patient/{patient}"}}]}
        r = create(http, srv.auth, prov)
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
    return tuple(made)


def assert_nothing_of(bundle_text: str, B: str) -> None:
    assert f"Patient/{B}" not in bundle_text
    assert B not in bundle_text


@pytest.mark.parametrize("type_", ["Observation", "Condition", "MedicationRequest", "Immunization", "Patient"])
def test_search_totals_count_only_the_bound_patient(srv, http, bound_to_A, A, type_):
    param = {"_id": A} if type_ == "Patient" else {"patient": f"Patient/{A}"}
    expected = total(http, srv, f"/{type_}", param)
    r = http.get(f"/{type_}", params={"_total": "accurate", "_count": 500}, headers=bound_to_A)
    assert r.status_code == 200, r.text
    assert r.json()["total"] == expected == len(entries(r.json()))
    assert total(http, srv, f"/{type_}", {}, bound_to_A) == expected
    r0 = http.get(f"/{type_}", params={"_count": 0}, headers=bound_to_A)
    assert r0.status_code == 200 and r0.json()["total"] == expected and not r0.json().get("entry")


def test_search_naming_the_other_patient_finds_nothing(srv, http, bound_to_A, B):
    for params in ({"subject": f"Patient/{B}"}, {"patient": B}, {"_id": B}):
        path = "/Patient" if "_id" in params else "/Observation"
        r = http.get(path, params={**params, "_total": "accurate"}, headers=bound_to_A)
        assert r.status_code == 200 and r.json()["total"] == 0 and not r.json().get("entry")


def test_include_brings_nothing_of_another_patient(srv, http, bound_to_A, A, B, b_obs, a_panel):
    r = http.get("/Observation", params={"_include": ["Observation:subject", "Observation:performer"],
                                         "_count": 500}, headers=bound_to_A)
    assert r.status_code == 200
    assert ids_of(r.json(), "Patient") == {f"Patient/{A}"}
    assert_nothing_of(r.text, B)
    r = http.get("/Observation", params={"_id": a_panel, "_include": "Observation:has-member"}, headers=bound_to_A)
    assert r.status_code == 200
    assert ids_of(r.json()) == {f"Observation/{a_panel}"}


def test_include_iterate_brings_nothing_of_another_patient(srv, http, bound_to_A, ids, A, B, b_obs, a_panel):
    r = http.get("/Observation", params={"_id": a_panel, "_include": "Observation:has-member",
                                         "_include:iterate": "Observation:subject"}, headers=bound_to_A)
    assert r.status_code == 200
    assert ids_of(r.json()) == {f"Observation/{a_panel}", f"Patient/{A}"}     # B's member nor B
    assert_nothing_of(r.text, B)
    # Silje's Patient.link names the RelatedPersons of her children, which are the children's data
    r = http.get("/Patient", params={"_include": "Patient:link", "_include:iterate": "RelatedPerson:patient"},
                 headers=bound_to_A)
    assert r.status_code == 200
    assert ids_of(r.json()) == {f"Patient/{A}"}
    for child in ("sara", "jakob", "maja"):
        assert ids[child] not in r.text


def test_revinclude_brings_only_the_bound_patients_data(srv, http, bound_to_A, A, B, provenances):
    expected = total(http, srv, "/Observation", {"subject": f"Patient/{A}"})
    r = http.get("/Patient", params={"_revinclude": ["Observation:subject", "Provenance:patient",
                                                     "RelatedPerson:patient"], "_count": 500},
                 headers=bound_to_A)
    assert r.status_code == 200
    got = entries(r.json())
    assert [p["id"] for p in got if p["resourceType"] == "Patient"] == [A]
    assert len([o for o in got if o["resourceType"] == "Observation"]) == expected
    assert_nothing_of(r.text, B)
    # Provenance of the Observations: A's, never B's
    r = http.get("/Observation", params={"_revinclude": "Provenance:target", "_count": 500}, headers=bound_to_A)
    assert r.status_code == 200
    assert ids_of(r.json(), "Provenance") == {f"Provenance/{provenances[0]}"}
    assert provenances[1] not in r.text
    # a practitioner's reverse includes reach every patient's Observations: only A's come back
    for practitioner in ("demo-gp-1", "demo-nurse-1"):
        assert total(http, srv, "/Observation", {"performer": f"Practitioner/{practitioner}",
                                                 "subject": f"Patient/{B}"}) > 0
        r = http.get("/Practitioner", params={"_id": practitioner, "_revinclude": "Observation:performer",
                                              "_count": 500}, headers=bound_to_A)
        assert r.status_code == 200
        subjects = {o["subject"]["reference"] for o in entries(r.json()) if o["resourceType"] == "Observation"}
        assert subjects == ({f"Patient/{A}"} if practitioner == "demo-gp-1" else set())
        assert_nothing_of(r.text, B)


def test_chains_do_not_reach_another_patient(srv, http, bound_to_A, A, B):
    for params in ({"subject:Patient.name": "Hølland"}, {"subject.identifier": f"{FNR}|{PEOPLE['else']}"},
                   {"subject.identifier": PEOPLE["else"]}, {"patient.family": "Hølland"}):
        r = http.get("/Observation", params={**params, "_total": "accurate"}, headers=bound_to_A)
        assert r.status_code == 200, (params, r.text)
        assert r.json()["total"] == 0 and not r.json().get("entry"), params
    # the same chain to A's own name works
    mine = http.get("/Observation", params={"subject:Patient.name": "Økland", "_total": "accurate"},
                    headers=bound_to_A)
    assert mine.json()["total"] == total(http, srv, "/Observation", {"subject": f"Patient/{A}"})


def test_reverse_chains_return_only_the_bound_patient(srv, http, bound_to_A, A, B):
    # B has pulse readings too, and more of them
    for code in ("8867-4", "85354-9", "9279-1", "59408-5"):
        assert total(http, srv, "/Patient", {"_has:Observation:subject:code": code, "_id": B}) == 1
        r = http.get("/Patient", params={"_has:Observation:subject:code": code, "_total": "accurate"},
                     headers=bound_to_A)
        assert r.status_code == 200
        mine = total(http, srv, "/Patient", {"_has:Observation:subject:code": code, "_id": A})
        assert {p["id"] for p in entries(r.json())} == ({A} if mine else set())
        assert_nothing_of(r.text, B)
    # a reverse chain from shared data reaches only the bound patient's data
    query = {"_has:Observation:performer:subject": f"Patient/{B}"}
    assert total(http, srv, "/Practitioner", query) > 0
    r = http.get("/Practitioner", params=query, headers=bound_to_A)
    assert r.status_code == 200 and not r.json().get("entry")


def test_compartment_search_of_another_patient_is_not_found(srv, http, bound_to_A, A, B):
    assert http.get(f"/Patient/{B}/Observation", headers=bound_to_A).status_code == 404
    assert http.get(f"/Patient/{B}", headers=bound_to_A).status_code == 404
    r = http.get(f"/Patient/{A}/Observation", params={"_total": "accurate"}, headers=bound_to_A)
    assert r.status_code == 200
    assert r.json()["total"] == total(http, srv, "/Observation", {"subject": f"Patient/{A}"})


def test_everything_of_another_patient_is_refused(srv, http, bound_to_A, B):
    r = http.get(f"/Patient/{B}/$everything", headers=bound_to_A)
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome" and "entry" not in r.json()
    # answered exactly as for a patient that does not exist
    unknown = http.get("/Patient/no-such-patient/$everything", headers=bound_to_A)
    assert (r.status_code, r.json()) == (unknown.status_code,
                                         json.loads(unknown.text.replace("no-such-patient", B)))


def test_everything_of_the_bound_patient_holds_nothing_of_another(srv, http, bound_to_A, A, B, b_obs, a_panel,
                                                                  provenances):
    r = http.get(f"/Patient/{A}/$everything", params={"_count": 1000}, headers=bound_to_A)
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert f"Patient/{A}" in ids_of(bundle) and f"Observation/{a_panel}" in ids_of(bundle)
    assert f"Observation/{b_obs}" not in ids_of(bundle)        # the panel's member is B's
    assert provenances[1] not in r.text
    assert_nothing_of(r.text, B)
    for resource in entries(bundle):
        for field in ("subject", "patient"):
            ref = resource.get(field)
            if isinstance(ref, dict) and "reference" in ref:
                assert ref["reference"] == f"Patient/{A}", resource


def test_history_across_resources_needs_system_access(srv, http, bound_to_A):
    for path in ("/_history", "/Observation/_history", "/Patient/_history"):
        r = http.get(path, headers=bound_to_A)
        assert r.status_code == 403, (path, r.text)
        assert "system" in diagnostics(r)
    assert http.get("/Observation/_history", headers=srv.auth).status_code == 200


def test_history_and_vread_of_another_patients_resource_are_not_found(srv, http, bound_to_A, A, b_obs):
    assert http.get(f"/Observation/{b_obs}/_history", headers=bound_to_A).status_code == 404
    assert http.get(f"/Observation/{b_obs}/_history/1", headers=bound_to_A).status_code == 404
    mine = first_id(http, srv, "Observation", A)
    assert http.get(f"/Observation/{mine}/_history", headers=bound_to_A).status_code == 200
    assert http.get(f"/Observation/{mine}/_history/1", headers=bound_to_A).status_code == 200


def test_search_without_a_type_needs_system_access(srv, http, bound_to_A):
    for params in ({"_type": "Observation"}, {"_type": "Observation,Condition"}, {"_id": "x"}):
        r = http.get("/", params=params, headers=bound_to_A)
        assert r.status_code == 403, r.text
    r = http.post("/_search", data={"_type": "Observation"}, headers=bound_to_A)
    assert r.status_code == 403


def test_conditional_create_does_not_return_another_patients_resource(srv, http, bound_to_A, A, b_obs):
    r = http.post("/Observation", json=observation(A, 55),
                  headers={**bound_to_A, "Content-Type": FHIR_JSON, "If-None-Exist": f"_id={b_obs}",
                           "Prefer": "return=representation"})
    assert r.status_code == 201, r.text            # no match in A's record: a new one is made
    assert r.json()["id"] != b_obs and r.json()["subject"]["reference"] == f"Patient/{A}"
    assert b_obs not in r.text and b_obs not in r.headers.get("Location", "")


def test_count_only_searches_do_not_count_another_patient(srv, http, bound_to_A, A, B):
    expected = total(http, srv, "/Observation", {"subject": f"Patient/{A}"})
    everyone = total(http, srv, "/Observation", {})
    assert everyone > expected
    for params in ({"_summary": "count"}, {"_count": "0"}, {"_summary": "count", "code": "8867-4"}):
        r = http.get("/Observation", params=params, headers=bound_to_A)
        assert r.status_code == 200
        want = expected if "code" not in params else total(
            http, srv, "/Observation", {"subject": f"Patient/{A}", "code": "8867-4"})
        assert r.json()["total"] == want


def test_post_search_is_the_same_as_get(srv, http, bound_to_A, A, B):
    form = {"_count": "500", "_total": "accurate"}
    get = http.get("/Observation", params=form, headers=bound_to_A)
    post = http.post("/Observation/_search", data=form, headers=bound_to_A)
    assert get.status_code == post.status_code == 200
    assert get.json()["total"] == post.json()["total"]
    assert ids_of(get.json()) == ids_of(post.json())
    post = http.post("/Observation/_search", data={"subject": f"Patient/{B}"}, headers=bound_to_A)
    assert post.status_code == 200 and not post.json().get("entry")
    post = http.post("/Observation/_search", data={"subject:Patient.name": "Hølland"}, headers=bound_to_A)
    assert post.status_code == 200 and not post.json().get("entry")


def test_writes_cannot_reach_another_patient(srv, http, bound_to_A, A, B, b_obs):
    before = http.get(f"/Observation/{b_obs}", headers=srv.auth).json()
    for_b = observation(B)
    assert create(http, bound_to_A, for_b).status_code == 403
    mixed = observation(A)
    mixed["performer"] = [{"reference": f"Patient/{B}"}]
    assert create(http, bound_to_A, mixed).status_code == 403
    # moving A's Observation to B, or writing over B's
    mine = http.get(f"/Observation/{first_id(http, srv, 'Observation', A)}", headers=bound_to_A).json()
    moved = {**mine, "subject": {"reference": f"Patient/{B}"}}
    r = http.put(f"/Observation/{mine['id']}", json=moved, headers={**bound_to_A, "Content-Type": FHIR_JSON})
    assert r.status_code == 403
    over = {**mine, "id": b_obs}
    r = http.put(f"/Observation/{b_obs}", json=over, headers={**bound_to_A, "Content-Type": FHIR_JSON})
    assert r.status_code == 404          # as if it were not there (tests/access/test_oracles.py)
    patch = [{"op": "replace", "path": "/status", "value": "entered-in-error"}]
    r = http.patch(f"/Observation/{b_obs}", json=patch,
                   headers={**bound_to_A, "Content-Type": "application/json-patch+json"})
    assert r.status_code == 404
    http.delete(f"/Observation/{b_obs}", headers=bound_to_A)
    http.delete("/Observation", params={"_id": b_obs}, headers=bound_to_A)
    assert http.get(f"/Observation/{b_obs}", headers=srv.auth).json() == before


def test_batch_entries_are_guarded_like_requests(srv, http, bound_to_A, A, B, b_obs):
    mine = first_id(http, srv, "Observation", A)
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Observation/{b_obs}"}},
        {"request": {"method": "GET", "url": f"Observation?subject=Patient/{B}"}},
        {"request": {"method": "GET", "url": "Observation?subject:Patient.name=Hølland"}},
        {"request": {"method": "GET", "url": f"Observation/{mine}"}},
    ]}
    r = http.post("/", json=batch, headers={**bound_to_A, "Content-Type": FHIR_JSON})
    assert r.status_code == 200, r.text
    answers = r.json()["entry"]
    assert answers[0]["response"]["status"].startswith("404")
    assert answers[1]["resource"]["total"] == 0 and answers[2]["resource"]["total"] == 0
    assert answers[3]["response"]["status"].startswith("200") and answers[3]["resource"]["id"] == mine
    assert_nothing_of(r.text, B)


# == 4. citizen controls as data ===================================================================

def test_blocked_health_person_is_refused_even_in_an_emergency(srv, http, ids):
    terje = ids["terje"]
    obs = first_id(http, srv, "Observation", terje)
    block = consent(terje, "block-personnel", {"type": "deny", "actor": [actor(HPR, GP_HPR)]})
    assert http.get(f"/Observation/{obs}", headers=gp(srv, terje)).status_code == 200
    with written(http, srv, block):
        for purpose, reason in (("TREAT", None), ("BTG", "bevisstlos pasient"), ("ETREAT", "akutt")):
            extra = {"reason": reason} if reason else {}
            r = http.get(f"/Observation/{obs}", headers=gp(srv, terje, purpose=purpose, **extra))
            assert r.status_code == 403 and "blocked" in diagnostics(r), purpose
            assert http.get("/Observation", headers=gp(srv, terje, purpose=purpose, **extra)).status_code == 403
        # another GP at the same office is not blocked
        assert http.get(f"/Observation/{obs}", headers=gp(srv, terje, persona="gp2")).status_code == 200
    assert http.get(f"/Observation/{obs}", headers=gp(srv, terje)).status_code == 200


def test_summary_opt_out_hides_the_summary_care_record(srv, http, ids):
    jakob = ids["jakob"]          # 14, peanut allergy; he writes the opt-out himself
    allergy = first_id(http, srv, "AllergyIntolerance", jakob)
    assert http.get(f"/AllergyIntolerance/{allergy}", headers=gp(srv, jakob)).status_code == 200
    with written(http, srv, consent(jakob, "summary-opt-out"), headers=citizen(srv, "jakob", scope=CITIZEN_WRITES)):
        r = http.get("/AllergyIntolerance", headers=gp(srv, jakob))
        assert r.status_code == 403 and "summary" in diagnostics(r)
        assert http.get(f"/AllergyIntolerance/{allergy}", headers=gp(srv, jakob)).status_code == 403
        assert http.get("/Flag", headers=gp(srv, jakob)).status_code == 403
        assert http.get("/Observation", headers=gp(srv, jakob)).status_code == 200
        assert http.get("/MedicationRequest", headers=gp(srv, jakob)).status_code == 200
        # a _revinclude, a reverse chain or $everything does not give the summary away either
        r = http.get("/Patient", params={"_revinclude": "AllergyIntolerance:patient"}, headers=gp(srv, jakob))
        assert r.status_code == 200 and ids_of(r.json()) == {f"Patient/{jakob}"}
        assert allergy not in r.text
        r = http.get("/Patient", params={"_has:AllergyIntolerance:patient:code": "762952008"},
                     headers=gp(srv, jakob))
        assert r.status_code == 403 and jakob not in r.text
        r = http.get(f"/Patient/{jakob}/$everything", headers=gp(srv, jakob))
        assert r.status_code == 200 and "AllergyIntolerance" not in {e["resourceType"] for e in entries(r.json())}
        # his own view is unaffected
        r = http.get("/AllergyIntolerance", headers=citizen(srv, "jakob"))
        assert r.status_code == 200 and ids_of(r.json()) == {f"AllergyIntolerance/{allergy}"}
    assert http.get(f"/AllergyIntolerance/{allergy}", headers=gp(srv, jakob)).status_code == 200


def test_blocked_from_prescriptions(srv, http, ids):
    marius = ids["marius"]
    with written(http, srv, consent(marius, "block-prescriptions", {"type": "deny",
                                                                   "actor": [actor(HPR, GP_HPR)]})):
        for type_ in ("MedicationRequest", "MedicationStatement", "MedicationDispense"):
            r = http.get(f"/{type_}", headers=gp(srv, marius))
            assert r.status_code == 403 and "prescriptions" in diagnostics(r), type_
        assert http.get("/Condition", headers=gp(srv, marius)).status_code == 200
        assert http.get("/MedicationRequest", headers=gp(srv, marius, persona="gp2")).status_code == 200
        # $everything leaves the prescriptions out instead of handing them over
        r = http.get(f"/Patient/{marius}/$everything", headers=gp(srv, marius))
        assert r.status_code == 200
        kinds = {e["resourceType"] for e in entries(r.json())}
        assert "Condition" in kinds and not kinds & {"MedicationRequest", "MedicationStatement"}
    assert http.get("/MedicationRequest", headers=gp(srv, marius)).status_code == 200


@pytest.mark.parametrize("section", ["lab", None])
def test_restricted_section_needs_declared_consent_or_emergency(srv, http, ids, section):
    patient = ids["aashild"] if section == "lab" else ids["eirik"]
    provision = {"type": "deny", "code": [{"coding": [{"system": SECTION, "code": section}]}]} if section else None
    type_ = "DiagnosticReport" if section else "Observation"
    with written(http, srv, consent(patient, "restrict-section", provision)):
        r = http.get(f"/{type_}", headers=gp(srv, patient))
        assert r.status_code == 403 and "X-Consent-Declared" in diagnostics(r)
        assert http.get(f"/{type_}", headers=gp(srv, patient, consent="true")).status_code == 200
        assert http.get(f"/{type_}", headers=gp(srv, patient, consent="false")).status_code == 403
        r = http.get(f"/{type_}", headers=gp(srv, patient, persona="gp2", purpose="ETREAT",
                                              reason="akutt innlagt, bevisstlos"))
        assert r.status_code == 200
        if section == "lab":            # other sections are not restricted
            assert http.get("/Observation", headers=gp(srv, patient)).status_code == 200
    assert http.get(f"/{type_}", headers=gp(srv, patient)).status_code == 200


def test_inactivating_a_consent_restores_access_at_once(srv, http, ids):
    hege = ids["hege"]
    block = consent(hege, "block-personnel", {"type": "deny", "actor": [actor(HPR, GP_HPR)]})
    with written(http, srv, block) as cid:
        assert http.get("/Observation", headers=gp(srv, hege)).status_code == 403
        current = http.get(f"/Consent/{cid}", headers=srv.auth).json()
        current["status"] = "inactive"
        r = http.put(f"/Consent/{cid}", json=current, headers={**srv.auth, "Content-Type": FHIR_JSON})
        assert r.status_code == 200
        assert http.get("/Observation", headers=gp(srv, hege)).status_code == 200
        current["status"] = "active"
        current.pop("meta")
        assert http.put(f"/Consent/{cid}", json=current, headers={**srv.auth, "Content-Type": FHIR_JSON}) \
            .status_code == 200
        assert http.get("/Observation", headers=gp(srv, hege)).status_code == 403
    # deleted (by ``written``): access is back on the very next request
    assert http.get("/Observation", headers=gp(srv, hege)).status_code == 200


@contextlib.contextmanager
def shielded(http, srv, patient: str):
    original = http.get(f"/Patient/{patient}", headers=srv.auth).json()
    labelled = copy.deepcopy(original)
    labelled["meta"] = {"security": [{"system": CONFIDENTIALITY, "code": "R", "display": "restricted"}]}
    for contact in labelled.get("contact", []):       # the next of kin's address goes too
        contact["address"] = {"line": ["Hemmelig vei 1"], "postalCode": "0150", "city": "Oslo"}
    r = http.put(f"/Patient/{patient}", json=labelled, headers={**srv.auth, "Content-Type": FHIR_JSON})
    assert r.status_code == 200, r.text
    try:
        yield original
    finally:
        original.pop("meta")
        r = http.put(f"/Patient/{patient}", json=original, headers={**srv.auth, "Content-Type": FHIR_JSON})
        assert r.status_code == 200
        assert "security" not in http.get(f"/Patient/{patient}", headers=srv.auth).json()["meta"]


def test_shielded_address_is_removed_for_personnel(srv, http, ids):
    olav = ids["olav"]
    with shielded(http, srv, olav) as original:
        city = original["address"][0]["city"]
        personnel = gp(srv, olav, persona="gp2")
        r = http.get(f"/Patient/{olav}", headers=personnel)
        assert r.status_code == 200
        seen = r.json()
        line = original["address"][0]["line"][0]
        assert "address" not in seen and line not in r.text and "Hemmelig vei" not in r.text
        assert all("address" not in c for c in seen.get("contact", []))
        assert "REDACTED" in {s["code"] for s in seen["meta"]["security"]}
        assert seen["name"] == original["name"]
        # in a search and in $everything too
        r = http.get("/Patient", headers=personnel)
        assert "address" not in entries(r.json())[0] and line not in r.text
        r = http.get(f"/Patient/{olav}/$everything", headers=personnel)
        assert r.status_code == 200
        patients = [p for p in entries(r.json()) if p["resourceType"] == "Patient"]
        assert len(patients) == 1 and "address" not in patients[0] and "Hemmelig vei" not in r.text
        # nor in the history of the Patient resource
        r = http.get(f"/Patient/{olav}/_history", headers=personnel)
        assert r.status_code == 200 and line not in r.text and "Hemmelig vei" not in r.text
        # no search by address for him
        for params in ({"address-city": city}, {"address": city}, {"address-postalcode": "0558"}):
            r = http.get("/Patient", params=params, headers=personnel)
            assert r.status_code == 403 and "address" in diagnostics(r)
        # the citizen himself sees his address
        r = http.get(f"/Patient/{olav}", headers=citizen(srv, "olav"))
        assert r.status_code == 200 and r.json()["address"] == original["address"]
        assert "Hemmelig vei" in r.text and "REDACTED" not in r.text
    assert "address" in http.get(f"/Patient/{olav}", headers=gp(srv, olav, persona="gp2")).json()


# == 5. emergency access ===========================================================================

def test_emergency_access_needs_a_reason_then_holds_for_the_grant(srv, http, ids):
    espen = ids["espen"]
    obs = first_id(http, srv, "Observation", espen)
    r = http.get(f"/Observation/{obs}", headers=gp(srv, espen, persona="doctor", purpose="ETREAT"))
    assert r.status_code == 403 and "X-Access-Reason" in diagnostics(r)
    r = http.get(f"/Observation/{obs}", headers=gp(srv, espen, persona="doctor", purpose="BTG"))
    assert r.status_code == 403 and "X-Access-Reason" in diagnostics(r)
    before = len(audit_rows(srv))
    r = http.get(f"/Observation/{obs}", headers=gp(srv, espen, persona="doctor", purpose="ETREAT",
                                                   reason="innlagt med brystsmerter"))
    assert r.status_code == 200
    # within the grant no new reason is needed
    r = http.get("/Observation", headers=gp(srv, espen, persona="doctor", purpose="ETREAT"))
    assert r.status_code == 200 and entries(r.json())
    # the grant is the doctor's, not every health person's
    assert http.get("/Observation", headers=gp(srv, espen, persona="gp2", purpose="ETREAT")).status_code == 403
    # both emergency requests are flagged for review
    flagged = http.get("/AuditEvent", params={"patient": espen, "_tag": "review-required"}, headers=srv.auth)
    assert flagged.status_code == 200
    events = entries(flagged.json())
    assert len(events) >= 2
    newest = events[0]
    assert newest["meta"]["tag"][0]["code"] == "review-required"
    assert newest["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT"
    assert len(audit_rows(srv, before + 2)) >= before + 2


def test_emergency_access_shows_in_the_citizens_access_log(srv, http, ids):
    olav = ids["olav"]
    headers = gp(srv, olav, persona="doctor", purpose="BTG")
    headers["X-Access-Reason"] = "funnet bevisstløs".encode()        # UTF-8, as a Norwegian client sends it
    r = http.get("/Condition", headers=headers)
    assert r.status_code == 200
    log = http.get(f"/Patient/{olav}/$access-log", headers=citizen(srv, "olav"))
    assert log.status_code == 200
    event = entries(log.json())[0]
    assert event["meta"]["tag"][0]["code"] == "review-required"
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "BTG"
    assert "funnet bevisstløs" in event.get("outcomeDesc", "")
    assert event["agent"][0]["who"]["display"] == "Hanne Ødegård"
    assert event["agent"][0]["who"]["identifier"]["system"] == HPR


@pytest.fixture(scope="module")
def short_grants(tmp_path_factory):
    """A second server whose emergency grants end at once."""
    server = start_server(tmp_path_factory.mktemp("access-grants"), emergency_access_minutes=0)
    with use(system_context("tests")):
        load_demo(server.platform.resources, people=7)
    yield server
    server.stop()


def test_an_expired_emergency_grant_needs_a_new_reason(short_grants):
    s = short_grants
    with httpx.Client(base_url=s.base, timeout=30, headers={"Accept": FHIR_JSON}) as client:
        r = client.get("/Patient", params={"identifier": f"{FNR}|{PEOPLE['else']}"}, headers=s.auth)
        else_id = entries(r.json())[0]["id"]
        r = client.get("/Observation", headers=gp(s, else_id, persona="doctor", purpose="ETREAT", reason="fall"))
        assert r.status_code == 200
        r = client.get("/Observation", headers=gp(s, else_id, persona="doctor", purpose="ETREAT"))
        assert r.status_code == 403
        assert "X-Access-Reason" in diagnostics(r) and "expired" in diagnostics(r)
        # a new reason opens a new grant
        r = client.get("/Observation", headers=gp(s, else_id, persona="doctor", purpose="ETREAT", reason="nytt fall"))
        assert r.status_code == 200


# == 6. citizens and those who act for them ========================================================

def test_citizen_reads_her_whole_own_record(srv, http, A):
    me = citizen(srv, "silje")
    for type_ in ("Observation", "Condition", "MedicationRequest", "MedicationStatement"):
        expected = total(http, srv, f"/{type_}", {"patient": f"Patient/{A}"})
        r = http.get(f"/{type_}", params={"_total": "accurate", "_count": 500}, headers=me)
        assert r.status_code == 200 and r.json()["total"] == expected, type_
    r = http.get(f"/Patient/{A}", headers=me)
    assert r.status_code == 200 and r.json()["address"]
    assert http.get(f"/Patient/{A}/$everything", headers=me).status_code == 200


def test_citizen_writes_home_measurements_but_not_clinical_records(srv, http, A):
    me = citizen(srv, "silje", scope=CITIZEN_WRITES + " patient/Condition.c")
    assert create(http, me, observation(A, 66)).status_code == 201
    cond = {"resourceType": "Condition", "subject": {"reference": f"Patient/{A}"},
            "code": {"text": "Selvdiagnostisert"}}
    r = create(http, me, cond)
    assert r.status_code == 403 and "citizens may not write Condition" in diagnostics(r)
    patient = http.get(f"/Patient/{A}", headers=srv.auth).json()
    patient["telecom"] = [{"system": "phone", "value": "+4791111111"}]
    r = http.put(f"/Patient/{A}", json=patient, headers={**citizen(srv, "silje", scope="patient/*.cruds"),
                                                        "Content-Type": FHIR_JSON})
    assert r.status_code == 403 and "population register" in diagnostics(r)


def test_an_unchanged_put_by_someone_who_may_not_write_is_refused(srv, http, A):
    """Patient is written only by systems: a PUT of the same content is no exception."""
    patient = http.get(f"/Patient/{A}", headers=srv.auth).json()
    for headers in (citizen(srv, "silje", scope="patient/*.cruds"), gp(srv, A)):
        r = http.put(f"/Patient/{A}", json=patient, headers={**headers, "Content-Type": FHIR_JSON})
        assert r.status_code == 403, r.text


def test_parent_acts_fully_for_a_child_under_12(srv, http, ids):
    sara = ids["sara"]
    parent = citizen(srv, "silje", PEOPLE["sara"])
    for type_ in ("Observation", "Immunization", "AllergyIntolerance", "MedicationRequest", "Condition"):
        expected = total(http, srv, f"/{type_}", {"patient": f"Patient/{sara}"})
        r = http.get(f"/{type_}", params={"_total": "accurate"}, headers=parent)
        assert r.status_code == 200 and r.json()["total"] == expected, type_
    assert http.get(f"/Patient/{sara}", headers=parent).status_code == 200
    # the same with X-Patient as a Patient reference
    assert http.get("/Immunization", headers=citizen(srv, "hakon", f"Patient/{sara}")).status_code == 200


def test_parent_of_a_12_to_15_year_old_has_limited_access(srv, http, ids):
    jakob = ids["jakob"]
    for persona in ("silje", "hakon"):
        parent = citizen(srv, persona, PEOPLE["jakob"], scope=CITIZEN_WRITES)
        r = http.get("/Observation", params={"_total": "accurate"}, headers=parent)
        assert r.status_code == 200
        assert r.json()["total"] == total(http, srv, "/Observation", {"patient": f"Patient/{jakob}"})
        r = http.get("/AllergyIntolerance", headers=parent)
        assert r.status_code == 403 and "summary" in diagnostics(r)
        allergy = first_id(http, srv, "AllergyIntolerance", jakob)
        assert http.get(f"/AllergyIntolerance/{allergy}", headers=parent).status_code == 403
        everything = http.get(f"/Patient/{jakob}/$everything", headers=parent)
        assert everything.status_code == 200
        kinds = {e["resourceType"] for e in entries(everything.json())}
        assert "Observation" in kinds and "AllergyIntolerance" not in kinds and allergy not in everything.text
        assert http.get("/MedicationRequest", headers=parent).status_code == 200
        # parents do not change a 12-15-year-old's consents
        r = create(http, parent, consent(jakob, "summary-opt-out"))
        assert r.status_code == 403 and "consents" in diagnostics(r)


def test_young_person_hides_prescriptions_from_parents(srv, http, ids):
    jakob = ids["jakob"]
    parent = citizen(srv, "silje", PEOPLE["jakob"])
    assert http.get("/MedicationRequest", headers=parent).status_code == 200
    jakob_self = citizen(srv, "jakob", scope=CITIZEN_WRITES)
    r = create(http, jakob_self, consent(jakob, "hide-prescriptions-from-parents"))
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    try:
        for type_ in ("MedicationRequest", "MedicationStatement"):
            r = http.get(f"/{type_}", headers=parent)
            assert r.status_code == 403 and "hidden" in diagnostics(r), type_
        assert http.get("/Observation", headers=parent).status_code == 200
        assert http.get("/MedicationRequest", headers=citizen(srv, "jakob")).status_code == 200
        # the parent cannot undo it, and is not told it was undone
        r = http.delete(f"/Consent/{cid}", headers=citizen(srv, "silje", PEOPLE["jakob"], scope="patient/*.cruds"))
        assert http.get(f"/Consent/{cid}", headers=srv.auth).status_code == 200
        assert r.status_code in (403, 404), r.status_code
    finally:
        assert http.delete(f"/Consent/{cid}", headers=srv.auth).status_code in (200, 204)
    assert http.get("/MedicationRequest", headers=parent).status_code == 200


def test_parents_do_not_reach_a_16_year_old(srv, http, ids):
    maja = ids["maja"]
    obs = first_id(http, srv, "Observation", maja)
    for persona in ("silje", "hakon"):
        parent = citizen(srv, persona, PEOPLE["maja"])
        assert http.get(f"/Observation/{obs}", headers=parent).status_code == 404
        assert http.get(f"/Patient/{maja}", headers=parent).status_code == 404
        # reading her data while acting for oneself is not found either
        assert http.get(f"/Observation/{obs}", headers=citizen(srv, persona)).status_code == 404
        r = http.get("/Observation", params={"subject": f"Patient/{maja}"}, headers=citizen(srv, persona))
        assert r.status_code == 200 and not r.json().get("entry")
    # Maja herself reads it
    assert http.get(f"/Observation/{obs}", headers=citizen(srv, "maja")).status_code == 200


def test_power_of_attorney_to_view(srv, http, ids):
    else_id = ids["else"]
    obs = first_id(http, srv, "Observation", else_id)
    receiver = citizen(srv, "hakon", PEOPLE["else"], scope=CITIZEN_WRITES)
    assert http.get(f"/Observation/{obs}", headers=receiver).status_code == 404
    giver = citizen(srv, "else", scope=CITIZEN_WRITES)
    with written(http, srv, attorney(else_id, PEOPLE["hakon"], "view"), headers=giver):
        r = http.get("/Observation", params={"_total": "accurate"}, headers=receiver)
        assert r.status_code == 200
        assert r.json()["total"] == total(http, srv, "/Observation", {"patient": f"Patient/{else_id}"})
        assert http.get(f"/Observation/{obs}", headers=receiver).status_code == 200
        comm = {"resourceType": "Communication", "status": "completed",
                "subject": {"reference": f"Patient/{else_id}"}, "payload": [{"contentString": "Hei"}]}
        r = create(http, receiver, comm)
        assert r.status_code == 403 and "view" in diagnostics(r)
        # no further powers, no consents
        r = create(http, receiver, attorney(else_id, PEOPLE["silje"], "view"))
        assert r.status_code == 403
    assert http.get(f"/Observation/{obs}", headers=receiver).status_code == 404


def test_power_of_attorney_to_use_services(srv, http, ids):
    else_id = ids["else"]
    receiver = citizen(srv, "silje", PEOPLE["else"], scope=CITIZEN_WRITES)
    with written(http, srv, attorney(else_id, PEOPLE["silje"], "view", "use")):
        comm = {"resourceType": "Communication", "status": "completed",
                "subject": {"reference": f"Patient/{else_id}"},
                "payload": [{"contentString": "Mor trenger ny time"}]}
        r = create(http, receiver, comm)
        assert r.status_code == 201, r.text
        # never more than the giver has
        cond = {"resourceType": "Condition", "subject": {"reference": f"Patient/{else_id}"}, "code": {"text": "x"}}
        assert create(http, citizen(srv, "silje", PEOPLE["else"], scope="patient/*.cruds"), cond).status_code == 403
        assert create(http, receiver, consent(else_id, "summary-opt-out")).status_code == 403


def test_power_of_attorney_to_someone_under_18_does_not_hold(srv, http, ids):
    else_id = ids["else"]
    obs = first_id(http, srv, "Observation", else_id)
    with written(http, srv, attorney(else_id, PEOPLE["maja"], "view")):
        r = http.get(f"/Observation/{obs}", headers=citizen(srv, "maja", PEOPLE["else"]))
        assert r.status_code == 403 and "at least 18" in diagnostics(r)
        r = http.get("/Observation", headers=citizen(srv, "maja", PEOPLE["else"]))
        assert r.status_code == 403 and not r.json().get("entry")


def test_a_stranger_citizen_sees_nothing_of_another(srv, http, A):
    obs = first_id(http, srv, "Observation", A)
    stranger = citizen(srv, "olav")
    assert http.get(f"/Observation/{obs}", headers=stranger).status_code == 404
    assert http.get(f"/Patient/{A}", headers=stranger).status_code == 404
    r = http.get("/Observation", params={"subject": f"Patient/{A}", "_total": "accurate"}, headers=stranger)
    assert r.status_code == 200 and r.json()["total"] == 0
    r = http.get("/Observation", params={"subject:Patient.name": "Økland"}, headers=stranger)
    assert r.status_code == 200 and not r.json().get("entry")
    # naming her as the person acted for does not help, and answers as for a person who does not exist
    r = http.get(f"/Observation/{obs}", headers=citizen(srv, "olav", PEOPLE["silje"]))
    assert r.status_code == 404
    named = http.get("/Observation", headers=citizen(srv, "olav", PEOPLE["silje"]))
    nobody = http.get("/Observation", headers=citizen(srv, "olav", "15076500565"))
    assert named.status_code in (200, 403) and not named.json().get("entry")
    assert (named.status_code, named.json()) == (nobody.status_code, nobody.json())
    # nor may a citizen write into another's record
    r = create(http, citizen(srv, "olav", scope=CITIZEN_WRITES), consent(A, "summary-opt-out"))
    assert r.status_code == 403
    assert total(http, srv, "/Consent", {"patient": f"Patient/{A}"}) == 0


# == 7. the audit log ==============================================================================

def test_access_log_shows_who_read_my_record(srv, http, A):
    obs = first_id(http, srv, "Observation", A)
    me = citizen(srv, "silje")
    assert http.get(f"/Observation/{obs}", headers=gp(srv, A)).status_code == 200
    assert http.get("/Condition", headers=gp(srv, A)).status_code == 200
    r = http.get(f"/Observation/{obs}", headers=gp(srv, A, purpose="ETREAT"))     # no reason: denied
    assert r.status_code == 403
    assert http.get(f"/Observation/{obs}", headers=me).status_code == 200       # her own read
    log = http.get(f"/Patient/{A}/$access-log", params={"_count": 10}, headers=me)
    assert log.status_code == 200
    events = entries(log.json())
    assert len(events) >= 3
    recorded = [e["recorded"] for e in events]
    assert recorded == sorted(recorded, reverse=True)
    # her own reads are not listed
    assert all(e["agent"][0]["who"].get("reference") != f"Patient/{A}" for e in events)
    denied, condition, read = events[0], events[1], events[2]
    assert denied["outcome"] == "4" and "X-Access-Reason" in denied["outcomeDesc"]
    assert condition["outcome"] == "0"
    assert read["outcome"] == "0"
    assert read["agent"][0]["who"]["display"] == "Astrid Bråten"
    assert read["agent"][0]["who"]["identifier"] == {"system": HPR, "value": GP_HPR}
    assert read["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
    what = {e["what"].get("reference", "") for e in read["entity"]}
    assert f"Patient/{A}" in what
    assert any(w.startswith(f"Observation/{obs}") for w in what)
    assert PEOPLE["silje"] not in log.text          # never a fødselsnummer


def test_access_log_is_for_the_citizen_and_systems_not_personnel(srv, http, A, B):
    r = http.get(f"/Patient/{A}/$access-log", headers=gp(srv, A))
    assert r.status_code == 403
    assert http.get(f"/Patient/{A}/$access-log", headers=srv.auth).status_code == 200
    # another citizen's log is not found
    assert http.get(f"/Patient/{B}/$access-log", headers=citizen(srv, "silje")).status_code == 404
    # a parent of a child under 12 may read the child's log
    sara = http.get("/Patient", params={"identifier": f"{FNR}|{PEOPLE['sara']}"}, headers=srv.auth)
    sara_id = entries(sara.json())[0]["id"]
    assert http.get(f"/Patient/{sara_id}/$access-log", headers=citizen(srv, "silje", PEOPLE["sara"])) \
        .status_code == 200


def test_systems_search_the_audit_log(srv, http, A):
    assert http.get(f"/Observation?subject=Patient/{A}", headers=gp(srv, A)).status_code == 200
    r = http.get("/AuditEvent", params={"patient": A, "_count": 5}, headers=srv.auth)
    assert r.status_code == 200
    assert entries(r.json()) and all(e["resourceType"] == "AuditEvent" for e in entries(r.json()))
    r = http.get("/AuditEvent", params={"_tag": "review-required"}, headers=srv.auth)
    assert r.status_code == 200
    for event in entries(r.json()):
        assert event["meta"]["tag"][0]["code"] == "review-required"
    one = entries(http.get("/AuditEvent", params={"_count": 1}, headers=srv.auth).json())[0]
    assert http.get(f"/AuditEvent/{one['id']}", headers=srv.auth).json() == one
    # not for personnel or citizens
    assert http.get("/AuditEvent", params={"patient": A}, headers=gp(srv, A)).status_code == 403
    assert http.get("/AuditEvent", headers=citizen(srv, "silje")).status_code == 403


def test_audit_log_cannot_be_written(srv, http):
    event = {"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2026-11-01T10:00:00Z",
             "agent": [{"requestor": True}], "source": {"observer": {"display": "x"}}}
    r = http.post("/AuditEvent", json=event, headers={**srv.auth, "Content-Type": FHIR_JSON})
    assert r.status_code == 405
    one = entries(http.get("/AuditEvent", params={"_count": 1}, headers=srv.auth).json())[0]
    assert http.put(f"/AuditEvent/{one['id']}", json=one, headers={**srv.auth, "Content-Type": FHIR_JSON}) \
        .status_code == 405
    assert http.delete(f"/AuditEvent/{one['id']}", headers=srv.auth).status_code == 405


def test_every_access_leaves_an_audit_row(srv, http, A, B):
    obs = first_id(http, srv, "Observation", A)
    before = len(audit_rows(srv))
    assert http.get(f"/Observation/{obs}", headers=gp(srv, A)).status_code == 200          # a read
    assert http.get(f"/Observation/{obs}", headers=gp(srv, B)).status_code == 404          # hidden
    assert http.get("/Observation", headers=srv.headers("gp")).status_code == 403           # refused
    assert http.get("/Observation").status_code == 401                                      # no token
    assert http.get("/Observation", headers=citizen(srv, "silje")).status_code == 200       # a search
    rows = audit_rows(srv, before + 5)[before:]
    assert len(rows) >= 5
    bodies = [json.loads(r.body) for r in rows]
    assert [b["outcome"] for b in bodies[:5]] == ["0", "4", "4", "4", "0"]


def test_tampering_with_the_audit_database_is_detected(tmp_path):
    s = start_server(tmp_path)
    try:
        with httpx.Client(base_url=s.base, timeout=30, headers={"Accept": FHIR_JSON}) as client:
            for _ in range(3):
                assert client.get("/Practitioner", headers=s.auth).status_code == 200
            assert client.get("/Patient").status_code == 401
    finally:
        s.stop()
    database = f"sqlite:///{tmp_path}/enjournal.db"
    ok = subprocess.run([str(ENJOURNAL), "audit", "verify", "--database", database], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    with sqlite3.connect(tmp_path / "enjournal.db") as con:
        for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit'"
                                   ).fetchall():
            con.execute(f"DROP TRIGGER {name}")       # the database refuses edits until its guards go
        seq, body = con.execute("SELECT seq, body FROM audit ORDER BY seq LIMIT 1 OFFSET 1").fetchone()
        edited = bytes(body).replace(b'"outcome":"0"', b'"outcome":"4"') if b'"outcome":"0"' in bytes(body) \
            else bytes(body) + b" "
        con.execute("UPDATE audit SET body = ? WHERE seq = ?", (edited, seq))
    bad = subprocess.run([str(ENJOURNAL), "audit", "verify", "--database", database], capture_output=True, text=True)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "TAMPERED" in bad.stdout + bad.stderr


# == 8. FHIR client libraries with persona tokens ==================================================

def test_fhirpy_with_a_persona_token(srv, A, B):
    client = SyncFHIRClient(srv.base, authorization=f"Bearer {srv.token('gp')}",
                            extra_headers={"Accept": FHIR_JSON, "X-Purpose-Of-Use": "TREAT",
                                           "X-Patient": PEOPLE["silje"]})
    found = client.resources("Observation").search(code="8867-4").fetch_all()
    assert found and {o["subject"]["reference"] for o in found} == {f"Patient/{A}"}
    assert client.resources("Observation").search(subject=f"Patient/{B}").fetch_all() == []
    patient = client.reference("Patient", A).to_resource()
    assert patient["id"] == A


def test_fhirclient_with_a_persona_token(srv, A):
    smart = smart_client.FHIRClient(settings={"app_id": "enjournal-tests", "api_base": srv.base + "/"})
    smart.server.session.headers.update(citizen(srv, "silje"))
    found = list(FcObservation.where(struct={"code": "8867-4"}).perform_resources_iter(smart.server))
    assert found and {o.subject.reference for o in found} == {f"Patient/{A}"}
    obs = FcObservation.read(found[0].id, smart.server)
    assert obs.subject.reference == f"Patient/{A}"
