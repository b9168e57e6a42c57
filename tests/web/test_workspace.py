"""The clinician workspace (/helsepersonell/) over real HTTP: a real server with the demo
population, the real login (the built-in provider's authorization code flow, as a browser
follows it), real forms with their CSRF tokens. What the pages show is checked against what
the FHIR API holds afterwards (read with a system token)."""
from __future__ import annotations

import re
from datetime import date
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from enjournal.fhir import norway
from tests.conftest import demo_server

WS = "/helsepersonell"
JAKOB = "19861286366"          # 14, peanut allergy, GP demo-gp-1 (the `gp` persona)
ELSE = "18854005231"           # 86, home care (the `nurse` persona is her care manager)
FNR = norway.FNR
CRITICAL = "https://enjournal.no/fhir/CodeSystem/critical-information"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = demo_server(tmp_path_factory, "ws", people=12)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(srv):
    with httpx.Client(base_url=srv.base, timeout=60, headers={"Accept": "application/fhir+json", **srv.auth}) as c:
        yield c


class Clinician:
    """A browser-like client logged in at the workspace as one persona."""

    def __init__(self, srv, persona: str):
        self.c = httpx.Client(base_url=srv.base, timeout=60, follow_redirects=True)
        r = self.c.get(f"{WS}/")
        assert "/oidc/authorize" in str(r.url)
        params = dict(parse_qsl(urlsplit(str(r.url)).query))
        r = self.c.post("/oidc/authorize", data={**params, "persona": persona})
        assert r.status_code == 200 and str(r.url).endswith(f"{WS}/"), r.url
        self.last = r

    @property
    def token(self) -> str:
        return re.search(r'name="csrf_token" value="([^"]+)"', self.last.text).group(1)

    def get(self, path: str, **kw) -> httpx.Response:
        self.last = self.c.get(WS + path, **kw)
        return self.last

    def post(self, path: str, data: dict, csrf: bool = True) -> httpx.Response:
        token = self.token if csrf else None
        self.last = self.c.post(WS + path, data={**data, **({"csrf_token": token} if token else {})})
        return self.last

    def open_patient(self, number: str, purpose: str = "TREAT", **extra) -> httpx.Response:
        self.get("/")
        r = self.post("/finn", {"number": number})
        assert str(r.url).endswith("/formal"), r.text
        return self.post("/formal", {"purpose": purpose, **extra})

    def close(self):
        self.c.close()


def field_error(html: str, name: str) -> str:
    """The validation message shown at field ``name`` ("" when none)."""
    m = re.search(rf'id="f-{re.escape(name)}-error"[^>]*>([^<]*)<', html)
    return m.group(1).strip() if m else ""


def patient_id(api, number: str) -> str:
    bundle = api.get("/Patient", params={"identifier": f"{FNR}|{number}"}).json()
    return bundle["entry"][0]["resource"]["id"]


def new_patient(api, given: str, birth: date, individual: int) -> tuple[str, str]:
    """A fresh patient (GP demo-gp-1) that only this test touches: (id, fødselsnummer)."""
    number = norway.make_synthetic_fnr(birth, individual, "female")
    r = api.post("/Patient", json={
        "resourceType": "Patient", "identifier": [{"system": FNR, "value": number}],
        "name": [{"family": "Testesen", "given": [given]}], "birthDate": birth.isoformat(), "gender": "female",
        "generalPractitioner": [{"reference": "Practitioner/demo-gp-1", "display": "Astrid Bråten"}]})
    assert r.status_code == 201, r.text
    return r.json()["id"], number


def count(api, type_: str, pid: str) -> int:
    return api.get(f"/{type_}", params={"patient": pid, "_summary": "count"}).json()["total"]


# -- finding the patient -------------------------------------------------------------------

def test_pages_need_a_login_and_come_back_after_it(srv):
    c = httpx.Client(base_url=srv.base, timeout=60)
    r = c.get(f"{WS}/pasient/kritisk")
    assert r.status_code == 303 and "/helsepersonell/logg-inn" in r.headers["location"]
    assert "kritisk" in r.headers["location"]


def test_an_invalid_fodselsnummer_comes_back_at_the_field(srv):
    gp = Clinician(srv, "gp")
    gp.get("/")
    r = gp.post("/finn", {"number": "19861286367"})      # last check digit wrong
    assert r.status_code == 400
    assert "gyldig fødselsnummer" in field_error(r.text, "number")
    assert 'href="#f-number"' in r.text and 'aria-invalid="true"' in r.text
    assert 'value="19861286367"' in r.text               # what was typed stays
    # nothing was chosen: the patient pages send the clinician back to the search
    assert str(gp.get("/pasient").url).endswith(f"{WS}/")


def test_a_name_search_is_what_the_api_gives_personnel(srv):
    gp = Clinician(srv, "gp")
    gp.get("/")
    r = gp.post("/finn", {"name": "Jakob Økland", "birthdate": "xx"})
    assert r.status_code == 400 and field_error(r.text, "birthdate")
    r = gp.post("/finn", {"name": "Jakob Økland", "birthdate": "19.06.2012"})
    api_answer = httpx.get(f"{srv.base}/Patient", params={"name": "Jakob Økland", "birthdate": "2012-06-19"},
                           headers=srv.headers("gp", purpose="TREAT"))
    # health personnel search only inside an attested patient: the page says so, as the API does
    assert api_answer.status_code == 403
    assert r.status_code == 403 and "fødselsnummer" in field_error(r.text, "name")


def test_a_form_without_its_csrf_token_does_nothing(srv):
    gp = Clinician(srv, "gp")
    gp.get("/")
    r = gp.post("/finn", {"number": JAKOB}, csrf=False)
    assert r.status_code == 400
    assert str(gp.get("/formal").url).endswith(f"{WS}/")       # no lookup was stored


# -- the purpose of use --------------------------------------------------------------------

def test_emergency_purposes_need_a_reason_at_the_field(srv):
    gp = Clinician(srv, "gp")
    gp.get("/")
    gp.post("/finn", {"number": JAKOB})
    r = gp.post("/formal", {})
    assert r.status_code == 400 and field_error(r.text, "purpose")
    for reason in ("", "-", "12345"):
        r = gp.post("/formal", {"purpose": "BTG", "reason": reason})
        assert r.status_code == 400 and "minst fire bokstaver" in field_error(r.text, "reason"), reason
    assert str(gp.get("/pasient").url).endswith("/formal")     # still asks for the purpose


def test_the_gp_sees_jakobs_summary_with_critical_information_first(srv):
    gp = Clinician(srv, "gp")
    r = gp.open_patient(JAKOB)
    assert r.status_code == 200 and str(r.url).endswith("/pasient")
    html = r.text
    assert "Jakob Økland" in html and "Peanøtter" in html
    # the critical information (allergies) is the first section on the page
    sections = re.findall(r'data-testid="section-([^"]+)"', html)
    assert sections and sections[0] in ("48765-2", "104605-1", "75310-3"), sections
    assert html.index("Peanøtter") < html.index(f'data-testid="section-{sections[1]}"')
    # the banner: fødselsnummer masked, then shown on request; the GP; the marker
    assert "198612 *****" in html and JAKOB not in html
    assert "Astrid Bråten" in html and 'data-testid="critical-marker"' in html
    assert JAKOB in gp.get("/pasient", params={"vis": "fnr"}).text


def test_switching_patient_asks_for_the_purpose_again(srv):
    gp = Clinician(srv, "gp")
    gp.open_patient(JAKOB)
    r = gp.post("/bytt", {})
    assert str(r.url).endswith(f"{WS}/")
    assert str(gp.get("/pasient").url).endswith(f"{WS}/")
    gp.post("/finn", {"number": ELSE})
    assert str(gp.get("/pasient").url).endswith("/formal")


def test_an_unknown_fodselsnummer_is_not_found(srv):
    gp = Clinician(srv, "gp")
    unknown = norway.make_synthetic_fnr(date(1950, 5, 5), 100, "male")
    r = gp.open_patient(unknown)
    assert r.status_code == 404 and "Fant ingen pasient" in r.text


# -- emergency access -----------------------------------------------------------------------

def test_a_doctor_uses_emergency_access_and_the_citizen_sees_it(srv, api):
    doctor = Clinician(srv, "doctor")
    doctor.get("/")
    doctor.post("/finn", {"number": JAKOB})
    r = doctor.get("/akuttilgang")
    assert r.status_code == 200 and "Akuttilgang" in r.text
    r = doctor.post("/akuttilgang", {"reason": "-"})
    assert r.status_code == 400 and field_error(r.text, "reason")
    r = doctor.post("/akuttilgang", {"reason": "bevisstløs ved ankomst akuttmottak"})
    assert r.status_code == 200 and "Peanøtter" in r.text and 'data-testid="purpose">BTG' in r.text
    srv.platform.audit.flush()
    jakob = patient_id(api, JAKOB)
    log = httpx.get(f"{srv.base}/Patient/{jakob}/$access-log", headers=srv.headers("jakob")).json()
    emergency = [e["resource"] for e in log.get("entry", [])
                 if any(t.get("code") == "review-required" for t in e["resource"].get("meta", {}).get("tag", []))]
    assert emergency, "the emergency access is in Jakob's access log"
    assert any("bevisstløs" in str(e) for e in emergency)


# -- critical information -----------------------------------------------------------------

def test_register_confirm_and_retract_critical_information(srv, api):
    pid, number = new_patient(api, "Kari", date(1961, 3, 4), 100)
    gp = Clinician(srv, "gp")
    gp.open_patient(number)
    r = gp.get("/pasient/kritisk")
    assert r.status_code == 200
    options = re.findall(r'<option value="([^"]+)"', r.text)
    assert "drug-reaction" in options and "treatment-implant" in options
    before = count(api, "AllergyIntolerance", pid)
    r = gp.post("/pasient/kritisk", {"category": "drug-reaction", "text": "  ", "verification": "bekreftet"})
    assert r.status_code == 400 and field_error(r.text, "text")
    assert count(api, "AllergyIntolerance", pid) == before           # nothing half saved
    r = gp.post("/pasient/kritisk", {"category": "drug-reaction", "text": "Penicillin: anafylaksi",
                                      "verification": "bekreftet"})
    assert r.status_code == 200 and "Kritisk informasjon er registrert." in r.text
    assert "Penicillin: anafylaksi" in r.text
    found = api.get("/AllergyIntolerance", params={"patient": pid}).json()["entry"]
    assert len(found) == before + 1
    entry = found[-1]["resource"]
    assert "Penicillin" in str(entry.get("code")) and CRITICAL in str(entry)
    assert entry["recorder"]["reference"] == "Practitioner/demo-gp-1"
    # confirm: the entry gets a new version that says when and by whom
    r = gp.post("/pasient/kritisk/bekreft", {"type": "AllergyIntolerance", "id": entry["id"]})
    assert r.status_code == 200 and "Opplysningen er bekreftet." in r.text
    confirmed = api.get(f"/AllergyIntolerance/{entry['id']}").json()
    assert int(confirmed["meta"]["versionId"]) == int(entry["meta"]["versionId"]) + 1
    assert "last-confirmed" in str(confirmed.get("extension"))
    # entered in error needs a reason, at the entry's own field
    r = gp.post("/pasient/kritisk/feilregistrert", {"type": "AllergyIntolerance", "id": entry["id"], "reason": ""})
    assert r.status_code == 400 and field_error(r.text, f"reason-{entry['id']}")
    r = gp.post("/pasient/kritisk/feilregistrert", {"type": "AllergyIntolerance", "id": entry["id"],
                                                     "reason": "registrert på feil pasient"})
    assert r.status_code == 200 and "Opplysningen er markert som feilregistrert." in r.text
    retracted = api.get(f"/AllergyIntolerance/{entry['id']}").json()
    assert retracted["verificationStatus"]["coding"][0]["code"] == "entered-in-error"


def test_a_nurse_registers_only_ongoing_treatments_and_implants(srv, api):
    pid, number = new_patient(api, "Berit", date(1944, 8, 9), 120)
    nurse = Clinician(srv, "nurse")
    nurse.open_patient(number)
    r = nurse.get("/pasient/kritisk")
    options = re.findall(r'<option value="([^"]+)"', r.text.split('name="category"')[1].split("</select>")[0])
    assert options == ["treatment-implant"]
    flags, allergies = count(api, "Flag", pid), count(api, "AllergyIntolerance", pid)
    # a forged form with a category the nurse may not register: the rule, at the field, no 500
    r = nurse.post("/pasient/kritisk", {"category": "drug-reaction", "text": "Penicillin", "verification": "bekreftet"})
    assert r.status_code == 403 and field_error(r.text, "category")
    assert (count(api, "Flag", pid), count(api, "AllergyIntolerance", pid)) == (flags, allergies)
    r = nurse.post("/pasient/kritisk", {"category": "treatment-implant", "text": "Pacemaker (2019)",
                                         "verification": "bekreftet"})
    assert r.status_code == 200 and "Pacemaker (2019)" in r.text
    assert count(api, "Flag", pid) == flags + 1


# -- locked sections -------------------------------------------------------------------------

def test_locked_sections_open_only_with_consent_or_emergency(srv, api):
    pid, number = new_patient(api, "Liv", date(1970, 1, 20), 140)
    r = api.post("/AllergyIntolerance", json={
        "resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{pid}"},
        "code": {"text": "Latekshansker"}, "criticality": "high",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                                       "code": "active"}]}})
    assert r.status_code == 201, r.text
    r = api.post("/Consent", json={
        "resourceType": "Consent", "status": "active", "patient": {"reference": f"Patient/{pid}"},
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "https://enjournal.no/fhir/CodeSystem/access-control",
                                  "code": "restrict-section"}]}],
        "provision": {"code": [{"coding": [{"system": "https://enjournal.no/fhir/CodeSystem/record-section",
                                            "code": "summary"}]}]}})
    assert r.status_code == 201, r.text
    gp = Clinician(srv, "gp")
    html = gp.open_patient(number).text
    assert "Latekshansker" not in html and "Låst" in html and "ws-padlock" in html
    r = gp.post("/pasient/apne", {"how": "emergency", "reason": ""})
    assert r.status_code == 400 and field_error(r.text, "reason") and "Latekshansker" not in r.text
    r = gp.post("/pasient/apne", {"how": "consent"})
    assert r.status_code == 200 and "Latekshansker" in r.text and "samtykke erklært" in r.text


def test_an_opted_out_patient_has_no_summary_and_the_page_says_so(srv, api):
    pid, number = new_patient(api, "Reidun", date(1980, 11, 12), 160)
    r = api.post("/Consent", json={
        "resourceType": "Consent", "status": "active", "patient": {"reference": f"Patient/{pid}"},
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "https://enjournal.no/fhir/CodeSystem/access-control",
                                  "code": "summary-opt-out"}]}]})
    assert r.status_code == 201, r.text
    gp = Clinician(srv, "gp")
    r = gp.open_patient(number)
    assert r.status_code == 403 and 'data-testid="refusal"' in r.text and "opted out" in r.text
    assert "Reidun Testesen" in r.text            # the banner: who the refusal is about
    assert 'data-testid="section-' not in r.text
