"""The citizen portal /innbygger/ in a real browser (Debian's chromium through Playwright):
each persona sees what the rules allow, forms round-trip into FHIR data, bad input comes back
at the field with nothing saved, axe-core finds no serious or critical violation on any page,
a form works with JavaScript off, and an expired session goes to the login and back.

``ENJOURNAL_SCREENSHOTS=1`` also writes the screenshots of docs/portal.md (docs/img/portal-*.png).
"""
from __future__ import annotations

import os
from pathlib import Path

from tests.web.doors.conftest import power_of_attorney

FNR = {"else": "18854005231", "silje": "25848531440", "hakon": "02828307595", "jakob": "19861286366",
       "maja": "10880984069", "sara": "19841856050"}
PAGES = ["/", "/kjernejournal", "/kritisk-informasjon", "/egne-registreringer", "/donorkort", "/personvern",
         "/logg-over-bruk", "/representasjon"]
IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def shot(page, name: str) -> None:
    if os.environ.get("ENJOURNAL_SCREENSHOTS"):
        IMG.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMG / f"portal-{name}.png"), full_page=True)


def related_names(live_server, patient: str) -> list[str]:
    bundle = live_server.fhir("/RelatedPerson", patient=f"Patient/{patient}")
    return [n.get("text", "") for e in bundle.get("entry") or [] for n in e["resource"].get("name") or []]


def act_for(page, name: str) -> None:
    page.goto(page.url.split("/innbygger")[0] + "/innbygger/representasjon")
    page.get_by_label(name, exact=False).check()
    page.get_by_role("button", name="Bytt").click()
    page.wait_for_load_state("load")


def test_every_page_for_the_citizen_passes_axe(page, live_server, login, axe_check):
    login(page, "/innbygger", "else")
    assert page.get_by_role("heading", level=1).inner_text() == "Hei, Else Hølland"
    shot(page, "overview")
    for path in PAGES:
        page.goto(f"{live_server.url}/innbygger{path}")
        assert page.locator("html").get_attribute("lang") == "nb"
        assert page.get_by_role("main").count() == 1 and page.get_by_role("navigation").count() >= 1
        axe_check(page, f"the portal page {path}")
        if path in ("/kjernejournal", "/personvern", "/logg-over-bruk"):
            shot(page, path.strip("/"))


def test_the_skip_link_and_keyboard_reach_the_main_content(page, live_server, login):
    login(page, "/innbygger", "else")
    page.keyboard.press("Tab")
    focused = page.evaluate("() => document.activeElement.textContent.trim()")
    assert focused == "Hopp til hovedinnhold"
    page.keyboard.press("Enter")
    assert page.url.endswith("#main")


def test_a_contact_round_trip_and_bad_input_at_the_field(page, live_server, login, axe_check):
    me = live_server.patient_id(FNR["else"])
    login(page, "/innbygger", "else", path="/egne-registreringer")
    before = related_names(live_server, me)
    form = page.locator("form[action$='/egne-registreringer/kontakt']")
    form.get_by_label("Navn").fill("Per Hølland")
    form.get_by_label("Relasjon til deg").fill("sønn")
    form.get_by_label("Telefonnummer").fill("12")
    form.get_by_role("button", name="Lagre kontaktperson").click()
    page.wait_for_load_state("load")
    summary = page.locator(".ds-error-summary")
    assert summary.is_visible() and "minst 8 sifre" in summary.inner_text()
    assert page.locator("#f-phone").get_attribute("aria-invalid") == "true"
    assert page.locator("#f-phone-error").is_visible()
    assert page.locator("#f-name").input_value() == "Per Hølland", "what was typed is kept"
    axe_check(page, "the own-entries page with an error")
    shot(page, "form-error")
    assert related_names(live_server, me) == before, "nothing saved"
    summary.get_by_role("link").first.click()
    assert page.evaluate("() => document.activeElement.id") == "f-phone"
    page.locator("#f-phone").fill("+47 913 45 678")
    page.get_by_role("button", name="Lagre kontaktperson").click()
    page.wait_for_load_state("load")
    assert page.get_by_text("Kontaktpersonen er lagret.").is_visible()
    assert "Per Hølland" in related_names(live_server, me)


def test_the_donor_card_works_with_javascript_off(js_disabled_page, live_server, login, axe_check):
    page = js_disabled_page
    me = live_server.patient_id(FNR["maja"])
    login(page, "/innbygger", "maja", path="/donorkort")
    page.get_by_label("Ja, jeg vil donere organene mine etter min død").check()
    page.locator("#f-w1_name").fill("Silje Økland")
    page.locator("#f-w1_phone").fill("+47 987 65 432")
    page.locator("#f-w1_birth_date").fill("25.04.1985")
    page.get_by_role("button", name="Lagre donorkort").click()
    page.wait_for_load_state("load")
    assert page.get_by_text("Du har sagt ja til organdonasjon.").is_visible()
    axe_check(page, "the donor card page (JavaScript off)")
    shot(page, "donor-card")
    cards = [e["resource"] for e in live_server.fhir("/Consent", patient=f"Patient/{me}").get("entry") or []
             if e["resource"].get("scope", {}).get("text") == "Organdonasjon" and e["resource"]["status"] == "active"]
    assert len(cards) == 1 and cards[0]["provision"]["type"] == "permit"


def test_a_parent_sees_sara_but_not_jakobs_summary(page, live_server, login, axe_check):
    login(page, "/innbygger", "silje", path="/representasjon")
    assert page.get_by_label("Maja Eide Økland", exact=False).count() == 0
    axe_check(page, "the representation page")
    shot(page, "representation")
    act_for(page, "Sara Økland")
    banner = page.get_by_role("region", name="Representasjon")
    assert "Du ser journalen til Sara Økland" in banner.inner_text()
    page.goto(f"{live_server.url}/innbygger/kjernejournal")
    assert page.get_by_role("heading", level=2).count() > 3
    axe_check(page, "Sara's summary as her parent")
    act_for(page, "Jakob Økland")
    page.goto(f"{live_server.url}/innbygger/kjernejournal")
    assert page.get_by_text("Foreldre ser ikke kjernejournalen til barn mellom 12 og 15 år.").is_visible()
    axe_check(page, "Jakob's closed summary")
    shot(page, "parent-limited")


def test_a_holder_of_a_power_of_attorney_sees_majas_record(page, live_server, login, axe_check):
    maja = live_server.patient_id(FNR["maja"])
    with power_of_attorney(live_server.url, live_server.headers("system"), maja, FNR["hakon"], "view"):
        login(page, "/innbygger", "hakon")
        act_for(page, "Maja Eide Økland")
        seen_with_attorney(page, live_server, axe_check)


def seen_with_attorney(page, live_server, axe_check) -> None:
    assert "med fullmakt" in page.get_by_role("region", name="Representasjon").inner_text()
    page.goto(f"{live_server.url}/innbygger/kjernejournal")
    assert page.get_by_role("heading", level=1).inner_text() == "Kjernejournal"
    assert "Kjernejournalen kan ikke vises." not in page.content()
    page.goto(f"{live_server.url}/innbygger/logg-over-bruk")
    axe_check(page, "Maja's access log, seen with a power of attorney")


def test_privacy_settings_refuse_a_bad_hpr_number(page, live_server, login, axe_check):
    login(page, "/innbygger", "else", path="/personvern")
    page.get_by_label("HPR-nummer").fill("12")
    page.get_by_role("button", name="Sperr", exact=True).click()
    page.wait_for_load_state("load")
    assert page.locator("#f-hpr-error").is_visible()
    axe_check(page, "the privacy page with an error")


def test_english_is_selectable(page, live_server, login, axe_check):
    login(page, "/innbygger", "else")
    page.get_by_role("button", name="English").click()
    page.wait_for_load_state("load")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_role("heading", level=1).inner_text() == "Hello, Else Hølland"
    axe_check(page, "the overview in English")
    page.get_by_role("button", name="Norsk (bokmål)").click()
    page.wait_for_load_state("load")
    assert page.locator("html").get_attribute("lang") == "nb"


def test_an_expired_session_goes_to_the_login_and_back(page, live_server, login):
    login(page, "/innbygger", "else")
    sessions = live_server.platform.doors[0].sessions
    real = sessions.clock
    sessions.clock = lambda: real() + sessions.idle_ms / 1000 + 60
    try:
        page.goto(f"{live_server.url}/innbygger/logg-over-bruk")
        assert "/oidc/authorize" in page.url
    finally:
        sessions.clock = real
    page.locator("[name=persona][value=else]").click()
    page.wait_for_url(f"{live_server.url}/innbygger/logg-over-bruk")
    assert page.get_by_role("heading", level=1).inner_text() == "Logg over bruk"


def test_the_overview_fits_a_phone(phone_page, live_server, login, axe_check):
    login(phone_page, "/innbygger", "silje")
    width = phone_page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the overview is {width} px wide on a 390 px screen"
    axe_check(phone_page, "the overview on a phone")
    shot(phone_page, "phone")


def test_logout(page, live_server, login):
    login(page, "/innbygger", "else")
    page.get_by_role("button", name="Logg ut").click()
    page.wait_for_load_state("load")
    assert page.get_by_role("heading", level=1).inner_text() == "Du er logget ut"
    page.goto(f"{live_server.url}/innbygger/")
    assert "/oidc/authorize" in page.url
