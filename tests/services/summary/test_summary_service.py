"""``SummaryService`` (``platform.summary``) as the web pages call it: under the request's
AccessContext, through the guarded repository, with a real server's tokens on both backends.
Own entries round-trip into FHIR, bad input names the field and saves nothing, and the rules
hold on the service path as on the API."""
from __future__ import annotations

import pytest

from enjournal import errors
from enjournal.access.context import AccessContext, system_context, use
from enjournal.web.auth import Authenticate
from tests.conftest import BACKENDS, demo_server, patient_ids

FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
PEOPLE = {"silje": "25848531440", "sara": "19841856050", "jakob": "19861286366", "else": "18854005231"}
SCOPE = ("patient/*.rs patient/Consent.cud patient/Observation.cud patient/RelatedPerson.cud "
         "patient/Condition.cud")


@pytest.fixture(scope="module", params=BACKENDS)
def srv(request, tmp_path_factory):
    server = demo_server(tmp_path_factory, "summary-service", request.param)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ids(srv):
    return patient_ids(srv, PEOPLE)


def as_(srv, persona: str, **attestation) -> AccessContext:
    """The access context a page handler would have for ``persona``'s request."""
    auth = srv.app
    while not isinstance(auth, Authenticate):
        auth = auth.app
    headers = {k.lower(): v for k, v in srv.headers(persona, **attestation).items()}
    if persona not in ("gp", "nurse", "doctor", "system"):
        headers["authorization"] = f"Bearer {srv.token(persona, scope=SCOPE)}"
    return AccessContext(auth.subject(headers), "POST", "/test", "", "operation", base=srv.base)


def stored(srv, type_: str, id_: str) -> dict:
    with use(system_context("tests")):
        return srv.platform.summary._read(type_, id_)


def test_own_entries_round_trip(srv, ids):
    s = srv.platform.summary
    else_ = ids["else"]
    with use(as_(srv, "else")):
        contact = s.save_contact(else_, "Per Hølland", "sønn", "+47 912 34 567")
        illness = s.save_illness(else_, "Vondt i hofta om morgenen")
        s.save_needs(else_, sight=True, hearing=False, text="Trenger stor skrift")
        s.save_interpreter(else_, needed=True, language="polsk")
        s.save_interpreter(else_, needed=True, language="ukrainsk")      # replaces, one entry
        card = s.save_donor_card(else_, "ja", [{"name": "Per Hølland", "phone": "91234567",
                                               "birth_date": "1965-04-02"}])
        mine = s.own_entries(else_)
    assert any(c["id"] == contact["id"] and c["relationship"] == "sønn" for c in mine["contacts"])
    assert [i["text"] for i in mine["illnesses"]] == ["Vondt i hofta om morgenen"]
    assert mine["needs"] == {"id": mine["needs"]["id"], "sight": True, "hearing": False, "text": "Trenger stor skrift"}
    assert mine["interpreter"]["language"] == "ukrainsk"
    assert mine["donor_card"]["consent"] == "ja" and mine["donor_card"]["active"]
    # in FHIR as the resources say
    assert stored(srv, "Condition", illness["id"])["asserter"] == {"reference": f"Patient/{else_}"}
    assert stored(srv, "Consent", card["id"])["provision"]["type"] == "permit"
    # the GP sees them in the summary's own-entries section
    with use(as_(srv, "gp", purpose="TREAT", patient=f"Patient/{else_}")):
        bundle = s.summary(else_)
    section = next(x for x in bundle["entry"][0]["resource"]["section"] if x["code"]["coding"][0]["code"] == "own-entries")
    refs = {e["reference"] for e in section["entry"]}
    assert f"Condition/{illness['id']}" in refs and f"Consent/{card['id']}" in refs
    contacts = next(x for x in bundle["entry"][0]["resource"]["section"] if x["code"]["coding"][0]["code"] == "contacts")
    assert f"RelatedPerson/{contact['id']}" in {e["reference"] for e in contacts["entry"]}
    # withdraw and remove
    with use(as_(srv, "else")):
        s.withdraw_donor_card(else_)
        s.remove_contact(else_, contact["id"])
        s.remove_illness(else_, illness["id"])
        mine = s.own_entries(else_)
        with pytest.raises(errors.NotFound):
            s.withdraw_donor_card(else_)
    assert not mine["donor_card"]["active"] and mine["donor_card"]["withdrawn"]
    assert all(c["id"] != contact["id"] for c in mine["contacts"]) and mine["illnesses"] == []


@pytest.mark.parametrize("call,field", [
    (lambda s, p: s.save_contact(p, "", "sønn", "91234567"), "name"),
    (lambda s, p: s.save_contact(p, "Per", "sønn", "abc"), "phone"),
    (lambda s, p: s.save_illness(p, ""), "text"),
    (lambda s, p: s.save_interpreter(p, True, None), "language"),
    (lambda s, p: s.save_donor_card(p, "ja", [{"name": "Ung", "phone": "91234567", "birth_date": "2015-01-01"}]),
     "witnesses[0].birth_date"),
    (lambda s, p: s.save_donor_card(p, "ja", [{}, {}, {}]), "witnesses"),
])
def test_bad_input_names_the_field_and_saves_nothing(srv, ids, call, field):
    s = srv.platform.summary
    with use(as_(srv, "else")):
        before = s.own_entries(ids["else"])
        with pytest.raises(errors.Invalid) as exc:
            call(s, ids["else"])
        assert exc.value.issues[0].expression == (field,)
        assert s.own_entries(ids["else"]) == before


def test_critical_information_by_role_on_the_service_path(srv, ids):
    s = srv.platform.summary
    else_ = ids["else"]
    with use(as_(srv, "gp", purpose="TREAT", patient=f"Patient/{else_}")):
        drug = s.register_critical(else_, "drug-reaction", "Penicillin", verification="sannsynlig",
                                   criticality="high", reaction="Elveblest")
        routine = s.register_critical(else_, "changed-routine", "Ikke gjenoppliving (HLR minus)")
        assert drug["verificationStatus"]["coding"][0]["code"] == "unconfirmed"
        assert drug["recorder"]["reference"] == "Practitioner/demo-gp-1"
        listed = s.critical_information(else_)
        assert [e["id"] for e in listed][:2] == [drug["id"], routine["id"]] or \
            {drug["id"], routine["id"]} <= {e["id"] for e in listed}
        changed = s.change("AllergyIntolerance", drug["id"], verification="bekreftet")
        assert changed["verificationStatus"]["coding"][0]["code"] == "confirmed"
        with pytest.raises(errors.Invalid) as exc:
            s.register_critical(else_, "nope", "x")
        assert exc.value.issues[0].expression == ("category",)
    with use(as_(srv, "nurse", purpose="TREAT", patient=f"Patient/{else_}")):
        with pytest.raises(errors.Forbidden) as exc:
            s.register_critical(else_, "infection", "MRSA")
        assert "treatment-implant" in exc.value.message
        implant = s.register_critical(else_, "treatment-implant", "Pacemaker")
        assert implant["resourceType"] == "Flag"
        with pytest.raises(errors.Forbidden):
            s.confirm("AllergyIntolerance", drug["id"])
        with pytest.raises(errors.Forbidden):
            s.entered_in_error("Flag", routine["id"], "feil pasient")
    with use(as_(srv, "else")):
        with pytest.raises(errors.Forbidden):
            s.register_critical(else_, "allergy", "Pollen")
        # the citizen reads her own critical information
        assert {drug["id"], implant["id"]} <= {e["id"] for e in s.critical_information(else_)}


def test_a_parent_of_a_12_to_15_year_old_gets_no_summary_on_the_service_path(srv, ids):
    s = srv.platform.summary
    with use(as_(srv, "silje", patient=PEOPLE["jakob"])):
        with pytest.raises(errors.Forbidden):
            s.summary(ids["jakob"])
    with use(as_(srv, "silje", patient=PEOPLE["sara"])):
        assert s.summary(ids["sara"])["type"] == "document"
