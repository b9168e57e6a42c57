"""The summary care record over real HTTP on both backends (docs/summary.md): the published
CodeSystem, critical information by category and role on every write path, confirm / change /
entered-in-error with history, ``$summary`` with restricted sections, blocks, opt-out, the
12–15 rule, emergency access (Communication + access log), and own entries that never give
access rights. The demo population (seed 2026) and the built-in provider's personas."""
from __future__ import annotations

import httpx
import pytest
from fhirpy import SyncFHIRClient

from enjournal.services.personas import demo_personas
from enjournal.services.summary import codes
from tests.conftest import BACKENDS, demo_server, patient_ids

FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
HPR = "urn:oid:2.16.578.1.12.4.1.4.4"
FHIR_JSON = "application/fhir+json"
ACCESS = "https://enjournal.no/fhir/CodeSystem/access-control"
SECTION = "https://enjournal.no/fhir/CodeSystem/record-section"
PEOPLE = {"silje": "25848531440", "hakon": "02828307595", "sara": "19841856050", "jakob": "19861286366",
          "maja": "10880984069", "else": "18854005231", "olav": "01923404518"}
CITIZEN_SCOPE = ("patient/*.rs patient/Consent.cud patient/Communication.c patient/Observation.cud "
                 "patient/RelatedPerson.cud patient/Condition.cud patient/Flag.c patient/AllergyIntolerance.c")


@pytest.fixture(scope="module", params=BACKENDS)
def srv(request, tmp_path_factory):
    server = demo_server(tmp_path_factory, "summary", request.param)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(srv):
    with httpx.Client(base_url=srv.base, timeout=60, headers={"Accept": FHIR_JSON}) as client:
        yield client


@pytest.fixture(scope="module")
def ids(srv):
    return patient_ids(srv, PEOPLE)


# -- helpers --------------------------------------------------------------------------------

def staff(srv, persona: str, patient: str, purpose: str = "TREAT", **more) -> dict:
    return srv.headers(persona, purpose=purpose, patient=f"Patient/{patient}", **more)


def citizen(srv, persona: str, acting_for: str | None = None) -> dict:
    out = {"Authorization": f"Bearer {srv.token(persona, scope=CITIZEN_SCOPE)}"}
    if acting_for:
        out["X-Patient"] = acting_for
    return out


def post(http, path: str, body: dict, headers: dict) -> httpx.Response:
    return http.post(path, json=body, headers={**headers, "Content-Type": FHIR_JSON})


def put(http, path: str, body: dict, headers: dict) -> httpx.Response:
    return http.put(path, json=body, headers={**headers, "Content-Type": FHIR_JSON})


def diagnostics(r: httpx.Response) -> str:
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"][0]["diagnostics"]


def entry(category: str, patient: str, text: str = "testoppføring") -> dict:
    """A critical-information entry as an EPJ would send it (plain FHIR)."""
    cat = codes.BY_CODE[category]
    coding = {"system": codes.CRITICAL_INFORMATION, "code": category}
    ext = [{"url": codes.CATEGORY_EXT, "valueCoding": coding}]
    if cat.resource_type == "AllergyIntolerance":
        return {"resourceType": "AllergyIntolerance", "extension": ext,
                "clinicalStatus": {"coding": [{"system": codes.CLINICAL_SYSTEM, "code": "active"}]},
                "verificationStatus": {"coding": [{"system": codes.VERIFICATION_SYSTEM, "code": "confirmed"}]},
                "code": {"text": text}, "patient": {"reference": f"Patient/{patient}"},
                **({"category": ["medication"]} if category == "drug-reaction" else {})}
    return {"resourceType": "Flag", "status": "active", "category": [{"coding": [coding]}],
            "code": {"text": text}, "subject": {"reference": f"Patient/{patient}"}}


def summary(http, patient: str, headers: dict) -> httpx.Response:
    return http.get(f"/Patient/{patient}/$summary", headers=headers)


def sections(bundle: dict) -> dict:
    comp = bundle["entry"][0]["resource"]
    assert comp["resourceType"] == "Composition"
    return {s["code"]["coding"][0]["code"]: s for s in comp["section"]}


def listed(bundle: dict, code: str) -> list[str]:
    return [e["reference"] for e in sections(bundle)[code].get("entry", [])]


def consent(patient: str, kind: str, **provision) -> dict:
    return {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": ACCESS, "code": kind}]}],
            "patient": {"reference": f"Patient/{patient}"}, "provision": provision}


@pytest.fixture
def control(srv, http):
    """Write a citizen control (Consent) for the test and remove it afterwards."""
    made = []

    def make(patient: str, kind: str, **provision) -> str:
        r = post(http, "/Consent", consent(patient, kind, **provision), srv.auth)
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
        return r.json()["id"]

    yield make
    for cid in made:
        assert http.delete(f"/Consent/{cid}", headers=srv.auth).status_code in (200, 204)


# -- the CodeSystem ---------------------------------------------------------------------------

def test_the_critical_information_code_system_is_published_to_everyone(srv, http, ids):
    for headers in (srv.auth, citizen(srv, "else"), staff(srv, "nurse", ids["else"])):
        r = http.get("/CodeSystem/critical-information", headers=headers)
        assert r.status_code == 200, r.text
        cs = r.json()
        assert cs["url"] == "https://enjournal.no/fhir/CodeSystem/critical-information"
        assert [c["code"] for c in cs["concept"]] == [c.code for c in codes.CATEGORIES]
        assert all(c["designation"][0]["language"] == "en" for c in cs["concept"])
        assert cs["concept"][0]["display"] == "Legemiddelreaksjon"
    # seeding again changes nothing (idempotent)
    before = http.get("/CodeSystem/critical-information", headers=srv.auth).json()["meta"]["versionId"]
    srv.platform.summary.seed()
    after = http.get("/CodeSystem/critical-information", headers=srv.auth).json()["meta"]["versionId"]
    assert before == after
    assert http.get("/CodeSystem/critical-information").status_code == 401


# -- who may register what ------------------------------------------------------------------------

@pytest.mark.parametrize("category", [c.code for c in codes.CATEGORIES])
def test_doctors_register_every_category_nurses_only_treatments_and_implants(srv, http, ids, category):
    else_ = ids["else"]
    body = entry(category, else_)
    path = f"/{body['resourceType']}"
    r = post(http, path, body, staff(srv, "gp", else_))
    assert r.status_code == 201, r.text
    r = post(http, path, body, staff(srv, "nurse", else_))
    if category == "treatment-implant":
        assert r.status_code == 201, r.text
    else:
        assert r.status_code == 403, r.text
        assert "critical information" in diagnostics(r) and "LE" in diagnostics(r), diagnostics(r)
    # citizens, pharmacists: nothing
    r = post(http, path, body, citizen(srv, "else"))
    assert r.status_code == 403 and "citizens may not write" in diagnostics(r), r.text
    r = post(http, path, body, staff(srv, "pharmacist", else_))
    assert r.status_code == 403, r.text


def test_the_rule_holds_in_transactions_updates_and_for_untagged_flags(srv, http, ids):
    else_ = ids["else"]
    nurse = staff(srv, "nurse", else_)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": entry("treatment-implant", else_, "pacemaker"), "request": {"method": "POST", "url": "Flag"}},
        {"resource": entry("infection", else_, "MRSA"), "request": {"method": "POST", "url": "Flag"}}]}
    before = http.get("/Flag", params={"patient": f"Patient/{else_}", "_summary": "count"}, headers=srv.auth).json()["total"]
    r = post(http, "/", bundle, nurse)
    assert r.status_code == 403 and "'infection'" in diagnostics(r), r.text
    after = http.get("/Flag", params={"patient": f"Patient/{else_}", "_summary": "count"}, headers=srv.auth).json()["total"]
    assert after == before          # nothing half saved
    # a nurse's Flag without a category, and turning an implant entry into another category
    plain = {"resourceType": "Flag", "status": "active", "code": {"text": "x"}, "subject": {"reference": f"Patient/{else_}"}}
    r = post(http, "/Flag", plain, nurse)
    assert r.status_code == 403 and "treatment-implant" in diagnostics(r)
    made = post(http, "/Flag", entry("treatment-implant", else_, "dialyse"), nurse).json()
    changed = dict(made, category=entry("infection", else_)["category"])
    r = put(http, f"/Flag/{made['id']}", changed, nurse)
    assert r.status_code == 403, r.text
    # a doctor's drug reaction cannot be changed by the nurse either (the old content counts)
    drug = post(http, "/AllergyIntolerance", entry("drug-reaction", else_, "penicillin"), staff(srv, "gp", else_)).json()
    r = put(http, f"/AllergyIntolerance/{drug['id']}", dict(drug, criticality="high"), nurse)
    assert r.status_code == 403
    # the service path ($confirm) follows the same rule
    r = http.post(f"/AllergyIntolerance/{drug['id']}/$confirm", headers=nurse)
    assert r.status_code == 403, r.text
    r = http.post(f"/Flag/{made['id']}/$confirm", headers=nurse)
    assert r.status_code == 200, r.text


# -- confirm, change, entered-in-error, history ----------------------------------------------------

def test_confirm_change_and_entered_in_error_keep_history(srv, http, ids):
    else_ = ids["else"]
    gp = staff(srv, "gp", else_)
    made = post(http, "/AllergyIntolerance", entry("drug-reaction", else_, "Penicillin: utslett"), gp).json()
    r = http.post(f"/AllergyIntolerance/{made['id']}/$confirm", headers=gp)
    assert r.status_code == 200, r.text
    confirmed = r.json()
    last = next(e for e in confirmed["extension"] if e["url"] == codes.LAST_CONFIRMED_EXT)
    parts = {p["url"]: p for p in last["extension"]}
    assert parts["by"]["valueReference"]["reference"].startswith("Practitioner/")
    assert confirmed["meta"]["versionId"] == "2"
    # change by plain PUT
    confirmed["code"]["text"] = "Penicillin: anafylaksi"
    confirmed["criticality"] = "high"
    r = put(http, f"/AllergyIntolerance/{made['id']}", confirmed, gp)
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "3"
    # entered-in-error needs a reason in words
    r = post(http, f"/AllergyIntolerance/{made['id']}/$entered-in-error", {"resourceType": "Parameters"}, gp)
    assert r.status_code == 400 and diagnostics(r)
    params = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "feil pasient"}]}
    r = post(http, f"/AllergyIntolerance/{made['id']}/$entered-in-error", params, gp)
    assert r.status_code == 200, r.text
    gone = r.json()
    assert gone["verificationStatus"]["coding"][0]["code"] == "entered-in-error" and "clinicalStatus" not in gone
    history = http.get(f"/AllergyIntolerance/{made['id']}/_history", headers=gp).json()
    assert history["total"] == 4
    # no longer in the summary
    bundle = summary(http, else_, gp).json()
    assert f"AllergyIntolerance/{made['id']}" not in listed(bundle, "48765-2")
    # a Flag too
    flag = post(http, "/Flag", entry("infection", else_, "MRSA-bærer"), gp).json()
    assert f"Flag/{flag['id']}" in listed(summary(http, else_, gp).json(), "104605-1")
    r = post(http, f"/Flag/{flag['id']}/$entered-in-error", params, gp)
    assert r.status_code == 200 and r.json()["status"] == "entered-in-error"
    assert f"Flag/{flag['id']}" not in listed(summary(http, else_, gp).json(), "104605-1")
    # operations on other types, and on unknown ids
    assert http.post(f"/Condition/{flag['id']}/$confirm", headers=gp).status_code == 404
    assert http.post("/Flag/nope/$confirm", headers=gp).status_code == 404


# -- $summary -------------------------------------------------------------------------------------

IPS = ("48765-2", "104605-1", "42348-3", "46264-8", "11450-4", "10160-0", "46240-8", "11369-6", "30954-2",
       "47519-4")


def test_summary_is_an_ips_shaped_document_that_equals_the_resources(srv, http, ids):
    else_ = ids["else"]
    gp = staff(srv, "gp", else_)
    fhirpy = SyncFHIRClient(srv.base, authorization=gp["Authorization"],
                            extra_headers={"Accept": FHIR_JSON, "X-Purpose-Of-Use": "TREAT",
                                           "X-Patient": f"Patient/{else_}"})
    bundle = fhirpy.execute(f"Patient/{else_}/$summary", method="get")
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "document"
    assert bundle["entry"][0]["resource"]["resourceType"] == "Composition"
    found = sections(bundle)
    for code in IPS + ("documents", "contacts", "gp", "own-entries"):
        assert code in found, code
    # medicines in use: the active statements and requests as the resources say
    active = set()
    for type_ in ("MedicationStatement", "MedicationRequest"):
        r = http.get(f"/{type_}", params={"patient": f"Patient/{else_}", "status": "active", "_count": 500},
                     headers=srv.auth)
        active |= {f"{type_}/{e['resource']['id']}" for e in r.json().get("entry", [])}
    assert active and set(listed(bundle, "10160-0")) >= active
    vaccines = http.get("/Immunization", params={"patient": f"Patient/{else_}", "_count": 500}, headers=srv.auth).json()
    assert set(listed(bundle, "11369-6")) == {f"Immunization/{e['resource']['id']}" for e in vaccines.get("entry", [])}
    # the GP from the GP list
    patient = http.get(f"/Patient/{else_}", headers=srv.auth).json()
    assert listed(bundle, "gp") == [patient["generalPractitioner"][0]["reference"]]
    # every section entry is in the Bundle, and nothing of another patient is
    full = {e["fullUrl"].split("/", 3)[-1] for e in bundle["entry"]}
    for s in found.values():
        for ref in s.get("entry", []):
            assert ref["reference"] in full
    for e in bundle["entry"][1:]:
        resource = e["resource"]
        for key in ("patient", "subject"):
            if key in resource:
                assert resource[key]["reference"] == f"Patient/{else_}", resource
    # by identifier, and POST
    r = http.get("/Patient/$summary", params={"identifier": f"{FNR}|{PEOPLE['else']}"}, headers=gp)
    assert r.status_code == 200 and sections(r.json()).keys() == found.keys()
    assert http.post(f"/Patient/{else_}/$summary", headers=gp).status_code == 200
    assert http.get(f"/Patient/{else_}/$summary", params={"bogus": "1"}, headers=gp).status_code == 400


def test_restricted_sections_are_locked_until_consent_or_emergency(srv, http, ids, control):
    else_ = ids["else"]
    post(http, "/AllergyIntolerance", entry("allergy", else_, "Veps"), staff(srv, "gp", else_))
    control(else_, "restrict-section", code=[{"coding": [{"system": SECTION, "code": "summary"}]}])
    bundle = summary(http, else_, staff(srv, "gp", else_)).json()
    locked = sections(bundle)["48765-2"]
    assert locked["emptyReason"]["coding"][0]["code"] == "withheld"
    assert "locked: declare consent or emergency" in locked["text"]["div"]
    assert not any(e["resource"]["resourceType"] in ("AllergyIntolerance", "Flag") for e in bundle["entry"])
    assert "entry" not in sections(bundle)["104605-1"]
    # other sections stay open
    assert sections(bundle)["10160-0"].get("entry")
    opened = summary(http, else_, staff(srv, "gp", else_, consent="true")).json()
    assert listed(opened, "48765-2")


def test_blocked_personnel_get_the_answer_for_an_unknown_patient(srv, http, ids, control):
    else_ = ids["else"]
    gp_hpr = next(p for p in demo_personas() if p.key == "gp").hpr
    control(else_, "block-personnel", actor=[{
        "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
        "reference": {"identifier": {"system": HPR, "value": gp_hpr}}}])
    blocked = summary(http, else_, staff(srv, "gp", else_))
    unknown = summary(http, "no-such-patient", staff(srv, "gp", "no-such-patient"))
    assert blocked.status_code == unknown.status_code == 404
    assert diagnostics(blocked).replace(else_, "X") == diagnostics(unknown).replace("no-such-patient", "X")
    # even in an emergency
    assert summary(http, else_, staff(srv, "gp", else_, "BTG", reason="pasienten er bevisstlos")).status_code == 404
    # another patient's summary for someone attesting a different patient: the same
    assert summary(http, else_, staff(srv, "doctor", ids["olav"])).status_code == 404


def test_an_opted_out_citizen_has_no_summary_for_personnel(srv, http, ids, control):
    else_ = ids["else"]
    control(else_, "summary-opt-out")
    r = summary(http, else_, staff(srv, "gp", else_))
    assert r.status_code == 403 and "opted out" in diagnostics(r)
    # the citizen herself still sees her record
    assert summary(http, else_, citizen(srv, "else")).status_code == 200


def test_parents_and_children(srv, http, ids):
    r = summary(http, ids["jakob"], citizen(srv, "silje", PEOPLE["jakob"]))
    assert r.status_code == 403 and "summary care record" in diagnostics(r)
    assert summary(http, ids["jakob"], citizen(srv, "jakob")).status_code == 200
    assert summary(http, ids["sara"], citizen(srv, "silje", PEOPLE["sara"])).status_code == 200
    # a citizen asking for someone they do not act for: unknown
    assert summary(http, ids["olav"], citizen(srv, "else", PEOPLE["olav"])).status_code == 404


def test_emergency_access_notifies_the_citizen_once_per_grant(srv, http, ids):
    olav = ids["olav"]
    def notices() -> list:
        r = http.get("/Communication", params={"subject": f"Patient/{olav}", "category": "notification",
                                               "_count": 100}, headers=srv.auth)
        return r.json().get("entry", [])
    before = len(notices())
    r = summary(http, olav, staff(srv, "doctor", olav, "BTG"))
    assert r.status_code == 403 and "reason" in diagnostics(r)
    r = summary(http, olav, staff(srv, "doctor", olav, "BTG", reason="bevisstlos ved ankomst"))
    assert r.status_code == 200, r.text
    assert summary(http, olav, staff(srv, "doctor", olav, "BTG", reason="fortsatt bevisstlos")).status_code == 200
    after = notices()
    assert len(after) == before + 1
    note = max((e["resource"] for e in after), key=lambda c: c["sent"])
    text = note["payload"][0]["contentString"]
    assert note["recipient"][0]["reference"] == f"Patient/{olav}"
    assert "bevisstlos ved ankomst" in text and "akuttilgang" in text and "HPR" in text
    # the citizen reads the notice and sees the access in the access log, marked for review
    mine = http.get("/Communication", params={"category": "notification"}, headers=citizen(srv, "olav")).json()
    assert any(e["resource"]["id"] == note["id"] for e in mine.get("entry", []))
    srv.platform.audit.flush()
    log = http.get(f"/Patient/{olav}/$access-log", params={"_count": 50}, headers=citizen(srv, "olav")).json()
    flagged = [e["resource"] for e in log.get("entry", [])
               if any(t.get("code") == "review-required" for t in e["resource"].get("meta", {}).get("tag", []))]
    assert flagged, "the emergency access is in the citizen's access log, marked for review"


# -- the citizen's own entries ---------------------------------------------------------------------

def test_own_entries_cannot_create_access_rights(srv, http, ids):
    maja, olav = ids["maja"], ids["olav"]
    # Maja (17) enters Silje as a contact with every mark of a parent: still no access for Silje
    sneaky = {"resourceType": "RelatedPerson", "active": True,
              "meta": {"tag": [{"system": "https://enjournal.no/fhir/CodeSystem/own-entry", "code": "contact"}]},
              "identifier": [{"system": FNR, "value": PEOPLE["silje"]}],
              "patient": {"reference": f"Patient/{maja}"},
              "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "MTH"}]},
                               {"coding": [{"system": "http://hl7.no/fhir/CodeSystem/no-basis-parental-responsibility",
                                            "code": "felles"}]}],
              "address": http.get(f"/Patient/{maja}", headers=srv.auth).json().get("address", [])}
    r = post(http, "/RelatedPerson", sneaky, citizen(srv, "maja"))
    assert r.status_code == 201, r.text
    assert summary(http, maja, citizen(srv, "silje", PEOPLE["maja"])).status_code == 404
    # Olav cannot give Else rights over himself that way either; without the tag: refused
    untagged = dict(sneaky, meta={}, patient={"reference": f"Patient/{olav}"},
                    identifier=[{"system": FNR, "value": PEOPLE["else"]}])
    r = post(http, "/RelatedPerson", untagged, citizen(srv, "olav"))
    assert r.status_code == 403 and "own entries" in diagnostics(r)
    assert summary(http, olav, citizen(srv, "else", PEOPLE["olav"])).status_code == 404
    # a citizen cannot change a registered parent record (untagged) of their own
    parents = http.get("/RelatedPerson", params={"patient": f"Patient/{ids['sara']}"}, headers=srv.auth).json()
    registered = parents["entry"][0]["resource"]
    r = put(http, f"/RelatedPerson/{registered['id']}",
            dict(registered, meta={"tag": sneaky["meta"]["tag"]}), citizen(srv, "silje", PEOPLE["sara"]))
    assert r.status_code == 403
    # nor write critical information, as a Condition with a category either
    cond = {"resourceType": "Condition", "meta": sneaky["meta"], "subject": {"reference": f"Patient/{olav}"},
            "category": [{"coding": [{"system": "https://enjournal.no/fhir/CodeSystem/critical-information",
                                      "code": "critical-condition"}]}], "code": {"text": "x"}}
    r = post(http, "/Condition", cond, citizen(srv, "olav"))
    assert r.status_code == 403 and "critical information" in diagnostics(r)
