"""The citizen portal over real HTTP, on SQLite and PostgreSQL: what each person sees, each
form's round trip checked in the FHIR data (read with a system token), bad input back at the
field with nothing saved, CSRF, representation and the access log."""
from __future__ import annotations

import re

import httpx
import pytest

from enjournal.access import facts as af
from tests.web.doors.conftest import PERSONS, browser, csrf_of, log_in, patient_id, power_of_attorney, system_read


def main(page: httpx.Response) -> str:
    return page.text.split('id="main"', 1)[1].split("</main>", 1)[0]


def consents(srv, patient: str, kind: str) -> list[dict]:
    bundle = system_read(srv, "/Consent", patient=f"Patient/{patient}", category=f"{af.ACCESS_CONTROL}|{kind}")
    return [e["resource"] for e in bundle.get("entry") or []]


def contacts(srv, patient: str) -> list[str]:
    bundle = system_read(srv, "/RelatedPerson", patient=f"Patient/{patient}")
    return [n.get("text", "") for e in bundle.get("entry") or [] for n in e["resource"].get("name") or []]


@pytest.fixture
def else_(srv):
    with browser(srv) as c:
        home = log_in(c, "else")
        c.token = csrf_of(home)
        yield c


def act_for(c: httpx.Client, name: str) -> httpx.Response:
    page = c.get("/innbygger/representasjon")
    found = re.search(r'value="([^"]+)"[^>]*>\s*<label class="ds-label" for="[^"]+">' + re.escape(name), page.text)
    assert found, f"{name} is not offered"
    r = c.post("/innbygger/representasjon", data={"csrf_token": csrf_of(page), "patient": found.group(1)})
    assert r.status_code == 303
    return c.get("/innbygger/")


# -- every page, as the citizen ------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/kjernejournal", "/kritisk-informasjon", "/egne-registreringer",
                                  "/donorkort", "/personvern", "/logg-over-bruk", "/representasjon"])
def test_every_page_answers_in_bokmal(srv, else_, path):
    page = else_.get("/innbygger" + path)
    assert page.status_code == 200
    assert '<html lang="nb"' in page.text and 'class="ds-skip-link" href="#main"' in page.text
    assert "Logg ut" in page.text and "<h1" in main(page)


def test_english_is_selectable(srv, else_):
    r = else_.post("/innbygger/sprak", data={"csrf_token": else_.token, "lang": "en", "next": "/innbygger/donorkort"})
    assert r.status_code == 303 and r.headers["location"] == "/innbygger/donorkort"
    page = else_.get("/innbygger/donorkort")
    assert '<html lang="en"' in page.text and "Donor card" in page.text and "Log out" in page.text
    else_.post("/innbygger/sprak", data={"csrf_token": else_.token, "lang": "nb", "next": "/innbygger/"})
    assert "Logg ut" in else_.get("/innbygger/").text


# -- forms that write FHIR ---------------------------------------------------------------------

def test_a_contact_round_trip(srv, else_):
    me = patient_id(srv, "else")
    r = else_.post("/innbygger/egne-registreringer/kontakt",
                   data={"csrf_token": else_.token, "name": "Kari Hølland", "relationship": "datter",
                         "phone": "+47 912 34 567"})
    assert r.status_code == 303
    page = else_.get(r.headers["location"])
    assert "Kontaktpersonen er lagret." in page.text and "Kari Hølland (datter)" in page.text
    assert "Kari Hølland" in contacts(srv, me)


def test_a_bad_phone_comes_back_at_the_field_and_nothing_is_saved(srv, else_):
    me = patient_id(srv, "else")
    before = contacts(srv, me)
    r = else_.post("/innbygger/egne-registreringer/kontakt",
                   data={"csrf_token": else_.token, "name": "Per Hølland", "relationship": "sønn", "phone": "12"})
    assert r.status_code == 400
    assert 'id="f-phone" name="phone" type="tel" value="12"' in r.text and 'aria-invalid="true"' in r.text
    assert 'href="#f-phone"' in r.text and 'id="f-phone-error"' in r.text
    assert "minst 8 sifre" in r.text
    assert contacts(srv, me) == before


def test_forms_without_or_with_a_forged_csrf_token_do_nothing(srv, else_):
    me = patient_id(srv, "else")
    before = contacts(srv, me)
    data = {"name": "Forged Person", "relationship": "nabo", "phone": "+47 912 34 567"}
    assert else_.post("/innbygger/egne-registreringer/kontakt", data=data).status_code == 400
    forged = else_.post("/innbygger/egne-registreringer/kontakt", data={**data, "csrf_token": "x" * 43})
    assert forged.status_code == 400 and "Ingenting ble lagret" in forged.text
    with browser(srv) as other:                 # a valid token, but of another session
        token = csrf_of(log_in(other, "maja"))
    assert else_.post("/innbygger/egne-registreringer/kontakt",
                      data={**data, "csrf_token": token}).status_code == 400
    assert contacts(srv, me) == before


def test_the_donor_card_round_trip_and_withdrawal(srv, else_):
    me = patient_id(srv, "else")
    bad = else_.post("/innbygger/donorkort", data={"csrf_token": else_.token, "consent": "ja", "w1_name": "Kari",
                                                  "w1_phone": "+47 912 34 567", "w1_birth_date": "01.01.2015"})
    assert bad.status_code == 400 and 'id="f-w1_birth_date-error"' in bad.text and "minst 18 år" in bad.text
    r = else_.post("/innbygger/donorkort", data={"csrf_token": else_.token, "consent": "ja", "w1_name": "Kari Hølland",
                                                "w1_phone": "+47 912 34 567", "w1_birth_date": "09.04.1966"})
    assert r.status_code == 303
    assert "Du har sagt ja til organdonasjon." in else_.get("/innbygger/donorkort").text
    cards = [e["resource"] for e in system_read(srv, "/Consent", patient=f"Patient/{me}").get("entry") or []
             if e["resource"].get("scope", {}).get("text") == "Organdonasjon"]
    assert [c["status"] for c in cards] == ["active"] and cards[0]["provision"]["type"] == "permit"
    r = else_.post("/innbygger/donorkort/trekk-tilbake", data={"csrf_token": else_.token})
    assert r.status_code == 303
    assert "Donorkortet er trukket tilbake." in else_.get(r.headers["location"]).text
    card = system_read(srv, f"/Consent/{cards[0]['id']}")
    assert card["status"] != "active"


# -- privacy settings -------------------------------------------------------------------------

def test_blocking_a_gp_by_hpr_is_enforced_and_can_be_withdrawn(srv, else_):
    me = patient_id(srv, "else")
    gp = srv.headers("gp", purpose="TREAT", patient=f"Patient/{me}")
    assert httpx.get(f"{srv.base}/Patient/{me}", headers=gp).status_code == 200
    bad = else_.post("/innbygger/personvern/sperr", data={"csrf_token": else_.token, "hpr": "12"})
    assert bad.status_code == 400 and 'id="f-hpr-error"' in bad.text
    unknown = else_.post("/innbygger/personvern/sperr", data={"csrf_token": else_.token, "hpr": "99999999"})
    assert unknown.status_code == 400 and "Fant ikke helsepersonell" in unknown.text
    assert not consents(srv, me, af.BLOCK_PERSONNEL)
    r = else_.post("/innbygger/personvern/sperr", data={"csrf_token": else_.token, "hpr": "9144101"})
    assert r.status_code == 303
    (block,) = consents(srv, me, af.BLOCK_PERSONNEL)
    assert block["status"] == "active"
    assert block["provision"]["actor"][0]["reference"]["identifier"]["value"] == "9144101"
    assert "Astrid Bråten" in else_.get("/innbygger/personvern").text
    assert httpx.get(f"{srv.base}/Patient/{me}", headers=gp).status_code in (403, 404)
    r = else_.post("/innbygger/personvern/trekk-tilbake", data={"csrf_token": else_.token, "id": block["id"]})
    assert r.status_code == 303
    assert system_read(srv, f"/Consent/{block['id']}")["status"] == "inactive"
    assert httpx.get(f"{srv.base}/Patient/{me}", headers=gp).status_code == 200


def test_restricting_a_section_needs_a_choice(srv, else_):
    me = patient_id(srv, "else")
    bad = else_.post("/innbygger/personvern/skjerm", data={"csrf_token": else_.token})
    assert bad.status_code == 400 and 'href="#f-section"' in bad.text
    r = else_.post("/innbygger/personvern/skjerm", data={"csrf_token": else_.token, "section": ["lab", "documents"]})
    assert r.status_code == 303
    (restriction,) = [c for c in consents(srv, me, af.RESTRICT_SECTION) if c["status"] == "active"]
    assert {c["code"] for x in restriction["provision"]["code"] for c in x["coding"]} == {"lab", "documents"}
    else_.post("/innbygger/personvern/trekk-tilbake", data={"csrf_token": else_.token, "id": restriction["id"]})


def test_opting_out_closes_the_summary_to_clinicians(srv, else_):
    me = patient_id(srv, "else")
    assert else_.post("/innbygger/personvern/reserver", data={"csrf_token": else_.token}).status_code == 400
    assert else_.post("/innbygger/personvern/reserver",
                      data={"csrf_token": else_.token, "confirm": "ja"}).status_code == 303
    (opt_out,) = [c for c in consents(srv, me, af.SUMMARY_OPT_OUT) if c["status"] == "active"]
    gp = srv.headers("gp", purpose="TREAT", patient=f"Patient/{me}")
    assert httpx.get(f"{srv.base}/AllergyIntolerance", params={"patient": me}, headers=gp).status_code == 403
    else_.post("/innbygger/personvern/trekk-tilbake", data={"csrf_token": else_.token, "id": opt_out["id"]})
    assert httpx.get(f"{srv.base}/AllergyIntolerance", params={"patient": me}, headers=gp).status_code == 200


# -- the access log -------------------------------------------------------------------------

def test_the_access_log_shows_the_gp_and_marks_emergency_access(srv, else_):
    me = patient_id(srv, "else")
    gp = srv.headers("gp", purpose="TREAT", patient=f"Patient/{me}")
    assert httpx.get(f"{srv.base}/Patient/{me}", headers=gp).status_code == 200
    doctor = srv.headers("doctor", purpose="BTG", patient=f"Patient/{me}", reason="unconscious in the emergency room")
    assert httpx.get(f"{srv.base}/Condition", params={"patient": me}, headers=doctor).status_code == 200
    log = main(else_.get("/innbygger/logg-over-bruk"))
    assert "Astrid Bråten" in log and "Behandlingsrelasjon" in log
    assert "Hanne Ødegård" in log and "Akuttilgang (nødrett)" in log and 'data-color="danger">Akuttilgang' in log
    assert "Else Hølland" not in log, "her own use of the portal is not listed"


# -- representation -------------------------------------------------------------------------

def test_a_parent_acts_for_children_under_16_with_the_limits(srv):
    with browser(srv) as c:
        log_in(c, "silje")
        offered = main(c.get("/innbygger/representasjon"))
        assert "Sara Økland" in offered and "Jakob Økland" in offered and "Maja Eide Økland" not in offered
        overview = act_for(c, "Sara Økland")
        assert "Du ser journalen til Sara Økland" in overview.text
        assert c.get("/innbygger/kjernejournal").status_code == 200
        jakob = act_for(c, "Jakob Økland")
        assert "begrenset innsyn" in jakob.text
        closed = c.get("/innbygger/kjernejournal")
        assert closed.status_code == 403 and "Foreldre ser ikke kjernejournalen til barn mellom 12 og 15 år." in closed.text
        page = c.get("/innbygger/representasjon")
        back = c.post("/innbygger/representasjon", data={"csrf_token": csrf_of(page), "patient": "self"})
        assert back.status_code == 303 and "Du ser journalen til" not in c.get("/innbygger/").text


def test_a_holder_of_a_view_only_power_of_attorney_sees_but_cannot_write(srv):
    maja = patient_id(srv, "maja")
    with power_of_attorney(srv.base, srv.auth, maja, PERSONS["hakon"], "view"), browser(srv) as c:
        log_in(c, "hakon")
        overview = act_for(c, "Maja Eide Økland")
        assert "Du ser journalen til Maja Eide Økland" in overview.text and "med fullmakt" in overview.text
        assert c.get("/innbygger/kjernejournal").status_code == 200
        before = contacts(srv, maja)
        r = c.post("/innbygger/egne-registreringer/kontakt",
                   data={"csrf_token": csrf_of(overview), "name": "Ola", "relationship": "venn", "phone": "+47 912 34 567"})
        assert r.status_code == 403
        assert contacts(srv, maja) == before
    with browser(srv) as c:           # withdrawn: no longer offered
        log_in(c, "hakon")
        assert "Maja Eide Økland" not in main(c.get("/innbygger/representasjon"))


def test_someone_not_offered_cannot_be_chosen(srv):
    olav = patient_id(srv, "olav")
    with browser(srv) as c:
        page = log_in(c, "silje")
        r = c.post("/innbygger/representasjon", data={"csrf_token": csrf_of(page), "patient": olav})
        assert r.status_code == 400 and "Du kan ikke representere denne personen." in r.text
        assert "Du ser journalen til" not in c.get("/innbygger/").text


def test_a_citizen_with_nobody_to_represent(srv, else_):
    assert "Du kan ikke representere noen andre." in else_.get("/innbygger/representasjon").text
