"""The workspace's pure parts: the find-a-patient and purpose forms, and the summary view
(web/workspace/lookup.py, purpose.py, summary_view.py)."""
from __future__ import annotations

from datetime import date

import pytest

from enjournal.services.summary.document import LOCKED_EXT
from enjournal.web.workspace import lookup, purpose, summary_view as sv


@pytest.mark.parametrize("typed", ["02013299997", "020132 99997", "020132-99997", "70019950032"])
def test_valid_person_numbers_are_accepted_as_typed(typed):
    found, problems = lookup.check_lookup({"number": typed})
    assert problems == {} and found.number == typed.replace(" ", "").replace("-", "")


@pytest.mark.parametrize("typed", ["02013299990", "0201329999", "abcdefghijk", "02014399997"])
def test_invalid_person_numbers_are_an_error_at_the_field(typed):
    found, problems = lookup.check_lookup({"number": typed})
    assert found is None and set(problems) == {"number"}


def test_a_name_search_needs_a_name_and_a_whole_birth_date():
    assert set(lookup.check_lookup({})[1]) == {"number"}
    assert set(lookup.check_lookup({"name": "K", "birthdate": "31.02.1990"})[1]) == {"name", "birthdate"}
    found, problems = lookup.check_lookup({"name": "  Kari  Nordmann ", "birthdate": "2.1.1932"})
    assert problems == {} and found.name == "Kari Nordmann" and found.birth_date == date(1932, 1, 2)
    assert lookup.check_lookup({"name": "Kari", "birthdate": "01.01.2999"})[1] == {
        "birthdate": "Fødselsdatoen er fram i tid"}


def test_synthetic_numbers_only_where_allowed():
    assert lookup.check_lookup({"number": "17859012663"})[0].number == "17859012663"
    found, problems = lookup.check_lookup({"number": "17859012663"}, allow_synthetic=False)
    assert found is None and set(problems) == {"number"}


def test_masked_shows_only_the_birth_date_part():
    assert lookup.masked("02013299997") == "020132 *****"


@pytest.mark.parametrize("form,field", [
    ({}, "purpose"), ({"purpose": "LOOK"}, "purpose"), ({"purpose": "BTG"}, "reason"),
    ({"purpose": "ETREAT", "reason": "..."}, "reason"), ({"purpose": "BTG", "reason": "12345"}, "reason"),
    ({"purpose": "TREAT", "reason": "x" * 501}, "reason"),
])
def test_purpose_errors_are_at_their_field(form, field):
    checked, problems = purpose.check_purpose(form, "Patient/1")
    assert checked is None and set(problems) == {field}


def test_the_attestation_the_door_sends():
    checked, _ = purpose.check_purpose({"purpose": "btg", "reason": " fall  i trapp ", "consent": "on"}, "Patient/1")
    assert checked == {"patient": "Patient/1", "purpose": "BTG", "reason": "fall i trapp", "consent": True}
    checked, _ = purpose.check_purpose({"purpose": "TREAT"}, "02013299997")
    assert checked == {"patient": "02013299997", "purpose": "TREAT", "reason": None, "consent": False}


def test_opening_locked_sections():
    treat = {"patient": "Patient/1", "purpose": "TREAT", "reason": None, "consent": False}
    assert purpose.opened(treat, {"how": "consent"})[0]["consent"] is True
    assert set(purpose.opened(treat, {"how": "emergency", "reason": "-"})[1]) == {"reason"}
    opened = purpose.opened(treat, {"how": "emergency", "reason": "akutt brystsmerte"})[0]
    assert opened["purpose"] == "ETREAT" and opened["reason"] == "akutt brystsmerte"
    assert set(purpose.opened(treat, {})[1]) == {"how"}


def _bundle(*sections, resources=()):
    composition = {"resourceType": "Composition", "section": list(sections)}
    entries = [{"fullUrl": "urn:uuid:c", "resource": composition}]
    entries += [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources]
    return {"resourceType": "Bundle", "type": "document", "entry": entries}


def test_sections_put_critical_information_first_and_show_locks():
    allergy = {"resourceType": "AllergyIntolerance", "id": "a1", "code": {"text": "Peanøtter"}, "criticality": "high",
               "verificationStatus": {"coding": [{"code": "confirmed"}]}}
    vaccine = {"resourceType": "Immunization", "id": "i1", "vaccineCode": {"coding": [{"display": "Priorix"}]},
               "occurrenceDateTime": "2013-09-19"}
    bundle = _bundle(
        {"title": "Vaksiner", "code": {"coding": [{"code": "11369-6"}]}, "entry": [{"reference": "urn:uuid:i1"}]},
        {"title": "Legemidler", "code": {"coding": [{"code": "10160-0"}]},
         "emptyReason": {"coding": [{"code": "withheld"}]}, "text": {"div": "<div>locked: declare consent</div>"},
         "extension": [{"url": LOCKED_EXT, "valueString": "the patient has restricted the section"}]},
        {"title": "Allergier", "code": {"coding": [{"code": "48765-2"}]}, "entry": [{"reference": "urn:uuid:a1"}]},
        resources=[allergy, vaccine])
    shown = sv.sections(bundle)
    assert [s.title for s in shown] == ["Allergier", "Vaksiner", "Legemidler"]
    assert shown[0].critical and shown[0].items[0].title == "Peanøtter"
    assert ("Kritikalitet", "Høy", True) in shown[0].items[0].facts
    assert shown[1].items[0].facts == [("Dato", "19.09.2013", False)]
    assert shown[2].locked and not shown[2].items


def test_a_section_is_locked_by_its_marker_not_by_its_words():
    flag = {"resourceType": "Flag", "id": "f1", "code": {"text": "Restricted diet"}, "status": "active"}
    bundle = _bundle({"title": "Kritisk informasjon", "code": {"coding": [{"code": "104605-1"}]},
                      "text": {"div": "<div><ul><li>Restricted diet: locked ward</li></ul></div>"},
                      "entry": [{"reference": "urn:uuid:f1"}]}, resources=[flag])
    shown = sv.sections(bundle)
    assert not shown[0].locked and shown[0].items[0].title == "Restricted diet"


def test_the_banner():
    patient = {"resourceType": "Patient", "id": "p", "name": [{"given": ["Jakob"], "family": "Økland"}],
               "birthDate": "2012-06-19", "identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.4.1",
                                                          "value": "19861286366"}],
               "generalPractitioner": [{"reference": "Practitioner/demo-gp-1", "display": "Astrid Bråten"}]}
    banner = sv.banner(patient, date(2026, 6, 18))
    assert (banner.name, banner.age, banner.number, banner.gp) == ("Jakob Økland", 13, "19861286366", "Astrid Bråten")
    assert sv.banner(patient, date(2026, 6, 19)).age == 14
    assert banner.birth_date == "19.06.2012"
