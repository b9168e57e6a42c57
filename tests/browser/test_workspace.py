"""The clinician workspace (/helsepersonell/) in a real browser (Playwright + Debian's
chromium, fixtures in tests/browser/conftest.py): the GP, a nurse and a hospital doctor
without a care relationship each see what the rules allow; forms round-trip into FHIR data
(checked with a system token); bad input comes back at the field; axe-core on every page;
one round trip with JavaScript off. With ``ENJOURNAL_SCREENSHOTS=DIR`` the pages are also
saved as ``DIR/workspace-*.png`` (docs/workspace.md uses them from docs/img)."""
from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path

import httpx
import pytest

from enjournal.fhir import norway

WS = "/helsepersonell"
JAKOB = "19861286366"          # 14, peanut allergy; GP: the `gp` persona
ELSE = "18854005231"           # 86, home care; the `nurse` persona is her care manager
FNR = norway.FNR
CRITICAL = "https://enjournal.no/fhir/CodeSystem/critical-information"
SHOTS = os.environ.get("ENJOURNAL_SCREENSHOTS")


def shot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"workspace-{name}.png"), full_page=True)


def api(live_server) -> httpx.Client:
    return httpx.Client(base_url=live_server.url, timeout=60, headers={
        "Accept": "application/fhir+json", "Authorization": f"Bearer {live_server.system_token()}"})


def new_patient(live_server, given: str, birth: date, individual: int) -> tuple[str, str]:
    """A patient only this test touches (GP: the `gp` persona): (id, fødselsnummer)."""
    number = norway.make_synthetic_fnr(birth, individual, "male")
    with api(live_server) as c:
        r = c.post("/Patient", json={
            "resourceType": "Patient", "identifier": [{"system": FNR, "value": number}],
            "name": [{"family": "Nettleser", "given": [given]}], "birthDate": birth.isoformat(), "gender": "male",
            "generalPractitioner": [{"reference": "Practitioner/demo-gp-1", "display": "Astrid Bråten"}]})
        assert r.status_code == 201, r.text
        return r.json()["id"], number


def find(page, number: str) -> None:
    page.get_by_label("Fødselsnummer eller D-nummer").fill(number)
    page.get_by_role("button", name="Søk", exact=True).click()
    page.wait_for_url(re.compile(r".*/helsepersonell/formal$"))


def state_purpose(page, purpose: str = "TREAT", reason: str = "") -> None:
    page.locator(f"input[name=purpose][value={purpose}]").check()
    if reason:
        page.get_by_label("Begrunnelse").fill(reason)
    page.get_by_role("button", name="Fortsett").click()


def open_patient(page, live_server, number: str, purpose: str = "TREAT", reason: str = "") -> None:
    page.goto(f"{live_server.url}{WS}/")
    find(page, number)
    state_purpose(page, purpose, reason)


def test_the_gp_sees_jakobs_summary_with_treat(page, live_server, login, axe_check):
    login(page, WS, "gp")
    page.goto(f"{live_server.url}{WS}/")
    axe_check(page, "workspace: find a patient")
    shot(page, "find")
    find(page, JAKOB)
    axe_check(page, "workspace: purpose of use")
    shot(page, "purpose")
    state_purpose(page, "TREAT")
    page.wait_for_url(re.compile(r".*/helsepersonell/pasient$"))
    main = page.locator("main")
    assert "Peanøtter" in main.inner_text()
    banner = page.locator(".ws-banner")
    assert "Jakob Økland" in banner.inner_text() and "198612 *****" in banner.inner_text()
    assert JAKOB not in page.content()
    assert page.get_by_test_id("critical-marker").is_visible()
    # critical information is the first section
    first = page.locator("[data-testid^=section-]").first
    assert "Peanøtter" in first.inner_text()
    axe_check(page, "workspace: summary")
    shot(page, "summary")
    page.get_by_role("button", name="Vis fødselsnummer").click()
    assert JAKOB in page.get_by_test_id("patient-number").inner_text()
    page.get_by_role("link", name="Kritisk informasjon").first.click()
    page.wait_for_url(re.compile(r".*/pasient/kritisk$"))
    assert "Peanøtter" in page.locator("main").inner_text()
    axe_check(page, "workspace: critical information (doctor)")


def test_a_nurse_may_register_only_ongoing_treatments_and_implants(page, live_server, login, axe_check):
    login(page, WS, "nurse")
    open_patient(page, live_server, ELSE)
    page.goto(f"{live_server.url}{WS}/pasient/kritisk")
    values = page.locator("select[name=category] option").evaluate_all("els => els.map(e => e.value)")
    assert values == ["treatment-implant"]
    axe_check(page, "workspace: critical information (nurse)")
    # register on a patient of this test only, and find it in the FHIR data
    pid, number = new_patient(live_server, "Sykepleiertest", date(1950, 2, 3), 100)
    open_patient(page, live_server, number)
    page.goto(f"{live_server.url}{WS}/pasient/kritisk")
    page.get_by_label("Beskrivelse").fill("Insulinpumpe")
    page.get_by_role("button", name="Registrer", exact=True).click()
    page.wait_for_url(re.compile(r".*melding=registrert"))
    assert "Insulinpumpe" in page.locator("main").inner_text()
    with api(live_server) as c:
        flags = [e["resource"] for e in c.get("/Flag", params={"patient": pid}).json().get("entry", [])]
    assert [f for f in flags if "Insulinpumpe" in str(f.get("code")) and "treatment-implant" in str(f)]


def test_a_doctor_without_care_relationship_uses_emergency_access(page, live_server, login, axe_check):
    login(page, WS, "doctor")
    page.goto(f"{live_server.url}{WS}/")
    find(page, JAKOB)
    page.goto(f"{live_server.url}{WS}/akuttilgang")
    axe_check(page, "workspace: emergency access")
    page.get_by_role("button", name="Åpne med akuttilgang").click()       # no reason
    assert "minst fire bokstaver" in page.locator("#f-reason-error").inner_text()
    axe_check(page, "workspace: emergency access, no reason")
    page.get_by_label("Begrunnelse").fill("bevisstløs ved ankomst akuttmottak")
    page.get_by_role("button", name="Åpne med akuttilgang").click()
    page.wait_for_url(re.compile(r".*/pasient$"))
    assert "Peanøtter" in page.locator("main").inner_text()
    shot(page, "emergency-summary")
    live_server.platform.audit.flush()
    with api(live_server) as c:
        jakob = c.get("/Patient", params={"identifier": f"{FNR}|{JAKOB}"}).json()["entry"][0]["resource"]["id"]
        log = c.get(f"/Patient/{jakob}/$access-log").json()
    emergency = [e["resource"] for e in log.get("entry", [])
                 if any(t.get("code") == "review-required" for t in e["resource"].get("meta", {}).get("tag", []))]
    assert emergency and any("bevisstløs" in str(e) for e in emergency)


def test_register_and_confirm_critical_information(page, live_server, login, axe_check):
    pid, number = new_patient(live_server, "Registrering", date(1958, 9, 10), 120)
    login(page, WS, "gp")
    open_patient(page, live_server, number)
    page.goto(f"{live_server.url}{WS}/pasient/kritisk")
    page.get_by_label("Kategori").select_option("drug-reaction")
    page.get_by_role("button", name="Registrer", exact=True).click()          # no text
    assert page.locator("#f-text-error").is_visible()
    assert page.locator(".ds-error-summary a[href='#f-text']").is_visible()
    axe_check(page, "workspace: critical information with an error")
    shot(page, "critical-error")
    with api(live_server) as c:
        assert c.get("/AllergyIntolerance", params={"patient": pid}).json().get("total", 0) == 0
    page.get_by_label("Kategori").select_option("drug-reaction")
    page.get_by_label("Beskrivelse").fill("Penicillin: anafylaksi")
    page.get_by_role("button", name="Registrer", exact=True).click()
    page.wait_for_url(re.compile(r".*melding=registrert"))
    with api(live_server) as c:
        entries = c.get("/AllergyIntolerance", params={"patient": pid}).json()["entry"]
    assert len(entries) == 1
    entry = entries[0]["resource"]
    assert entry["recorder"]["reference"] == "Practitioner/demo-gp-1" and CRITICAL in str(entry)
    page.get_by_role("button", name="Bekreft «Penicillin: anafylaksi»").click()
    page.wait_for_url(re.compile(r".*melding=bekreftet"))
    shot(page, "critical")
    with api(live_server) as c:
        confirmed = c.get(f"/AllergyIntolerance/{entry['id']}").json()
    assert confirmed["meta"]["versionId"] != entry["meta"]["versionId"]
    assert "last-confirmed" in str(confirmed.get("extension"))
    axe_check(page, "workspace: critical information confirmed")


def test_bad_input_comes_back_at_the_field(page, live_server, login, axe_check):
    login(page, WS, "gp")
    page.goto(f"{live_server.url}{WS}/")
    page.get_by_label("Fødselsnummer eller D-nummer").fill("19861286367")
    page.get_by_role("button", name="Søk", exact=True).click()
    assert "gyldig fødselsnummer" in page.locator("#f-number-error").inner_text()
    assert page.get_by_label("Fødselsnummer eller D-nummer").input_value() == "19861286367"
    axe_check(page, "workspace: invalid fødselsnummer")
    find(page, JAKOB)
    page.locator("input[name=purpose][value=BTG]").check()
    page.get_by_role("button", name="Fortsett").click()
    assert "minst fire bokstaver" in page.locator("#f-reason-error").inner_text()
    axe_check(page, "workspace: BTG without a reason")


def test_the_workspace_works_with_javascript_off(js_disabled_page, live_server, login, axe_check):
    page = js_disabled_page
    login(page, WS, "gp")
    open_patient(page, live_server, JAKOB, "TREAT")
    page.wait_for_url(re.compile(r".*/helsepersonell/pasient$"))
    assert "Peanøtter" in page.locator("main").inner_text()
    page.get_by_role("button", name="Vis fødselsnummer").click()
    assert JAKOB in page.get_by_test_id("patient-number").inner_text()
    page.get_by_role("button", name="Bytt pasient").click()
    page.wait_for_url(re.compile(r".*/helsepersonell/$"))


def test_english_is_selectable(page, live_server, login, axe_check):
    login(page, WS, "gp")
    page.goto(f"{live_server.url}{WS}/")
    page.get_by_role("button", name="English").click()
    page.wait_for_load_state()
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_role("heading", name="Find a patient").is_visible()
    axe_check(page, "workspace: find a patient (English)")


def test_locked_sections_show_a_padlock_and_open_with_consent(page, live_server, login, axe_check):
    pid, number = new_patient(live_server, "Skjerming", date(1966, 4, 5), 140)
    with api(live_server) as c:
        r = c.post("/AllergyIntolerance", json={
            "resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{pid}"},
            "code": {"text": "Lateks"}, "criticality": "high"})
        assert r.status_code == 201, r.text
        r = c.post("/Consent", json={
            "resourceType": "Consent", "status": "active", "patient": {"reference": f"Patient/{pid}"},
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "https://enjournal.no/fhir/CodeSystem/access-control",
                                      "code": "restrict-section"}]}],
            "provision": {"code": [{"coding": [{"system": "https://enjournal.no/fhir/CodeSystem/record-section",
                                                "code": "summary"}]}]}})
        assert r.status_code == 201, r.text
    login(page, WS, "gp")
    open_patient(page, live_server, number)
    page.wait_for_url(re.compile(r".*/pasient$"))
    assert page.locator(".ws-padlock").first.is_visible() and "Lateks" not in page.locator("main").inner_text()
    axe_check(page, "workspace: summary with locked sections")
    shot(page, "locked")
    page.get_by_role("button", name="Åpne låste deler").click()               # nothing chosen
    assert page.locator("#f-how-error").is_visible()
    page.get_by_label("Pasienten har samtykket").check()
    page.get_by_role("button", name="Åpne låste deler").click()
    page.wait_for_url(re.compile(r".*/pasient$"))
    assert "Lateks" in page.locator("main").inner_text()
    assert "samtykke erklært" in page.get_by_test_id("purpose").inner_text()
    axe_check(page, "workspace: summary opened with consent")


def test_an_unknown_patient_is_not_found(page, live_server, login, axe_check):
    login(page, WS, "gp")
    open_patient(page, live_server, norway.make_synthetic_fnr(date(1940, 7, 7), 200, "female"))
    assert page.get_by_role("heading", name="Fant ingen pasient").is_visible()
    axe_check(page, "workspace: patient not found")


def test_the_summary_fits_a_phone(phone_page, live_server, login, axe_check):
    page = phone_page
    login(page, WS, "gp")
    open_patient(page, live_server, JAKOB)
    page.wait_for_url(re.compile(r".*/pasient$"))
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    axe_check(page, "workspace: summary on a phone")
