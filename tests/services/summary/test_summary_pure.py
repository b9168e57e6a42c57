"""The pure parts of the summary care record: entries, verification mapping, validation with
the form field as expression, own entries, the donor card, the document builder, and the
content rules of access control (who may write which category; own entries give no rights)."""
from __future__ import annotations

from datetime import date

import pytest

from enjournal import errors
from enjournal.access import facts, policy
from enjournal.access.principal import Principal, Subject
from enjournal.services.summary import codes, critical, document, donor_card, own_entries

NOW = "2026-12-03T10:00:00Z"
ME = {"reference": "Practitioner/demo-gp-1", "display": "Kari Lege"}


def person(kind: str, category: str | None = None) -> Subject:
    return Subject(Principal(kind=kind, subject="x", issuer="i", hpr="1" if kind == "personnel" else None,
                             hpr_category=category))


def test_categories_are_the_national_ones_with_roles():
    assert [c.code for c in codes.CATEGORIES] == ["drug-reaction", "allergy", "anaesthesia", "critical-condition",
                                                  "treatment-implant", "changed-routine", "infection"]
    for c in codes.CATEGORIES:
        assert c.display and c.display_en and c.resource_type in ("AllergyIntolerance", "Flag")
        assert "LE" in c.roles
        assert ("SP" in c.roles) == (c.code == "treatment-implant")
    cs = codes.critical_code_system()
    assert cs["count"] == 7 and cs["concept"][4]["designation"][0]["value"] == "Ongoing treatments and implants"


@pytest.mark.parametrize("given,fhir,level", [
    ("mistenkt", "unconfirmed", "mistenkt"), ("suspected", "unconfirmed", "mistenkt"),
    ("sannsynlig", "unconfirmed", "sannsynlig"), ("presumed", "unconfirmed", "sannsynlig"),
    ("bekreftet", "confirmed", "bekreftet"), ("confirmed", "confirmed", "bekreftet"),
    ("avkreftet", "refuted", "avkreftet")])
def test_norwegian_verification_maps_to_r4_with_the_level_kept(given, fhir, level):
    r = critical.new_entry("p1", "drug-reaction", "Penicillin", None, given, None, ME, NOW, {})
    assert r["verificationStatus"]["coding"][0]["code"] == fhir
    assert {"url": codes.VERIFICATION_EXT, "valueCode": level} in r["extension"]
    assert r["category"] == ["medication"] and r["recorder"] == ME and r["recordedDate"] == NOW
    assert critical.view(r)["verification"] == level


@pytest.mark.parametrize("args,field", [
    (("nope", "x"), "category"), (("allergy", "  "), "text"), (("allergy", "x", None, "kanskje"), "verification"),
    (("infection", "x", None, "mistenkt"), "verification"), (("allergy", "x", "not a concept"), "code"),
    (("allergy", "x" * 1001), "text")])
def test_bad_input_names_the_field(args, field):
    args = args + (None,) * (4 - len(args))
    with pytest.raises(errors.Invalid) as exc:
        critical.new_entry("p1", args[0], args[1], args[2], args[3], None, ME, NOW, {})
    assert exc.value.issues[0].expression == (field,)


def test_confirm_change_and_entered_in_error():
    flag = critical.new_entry("p1", "infection", "MRSA", None, None, None, ME, NOW, {})
    later = critical.confirm(flag, {"display": "Ola"}, "2026-12-04T10:00:00Z")
    assert critical.view(later)["last_confirmed"] == {"when": "2026-12-04T10:00:00Z", "by": "Ola"}
    assert critical.view(critical.change(later, {"text": "MRSA, sanert"}, NOW))["text"] == "MRSA, sanert"
    with pytest.raises(errors.Invalid):
        critical.entered_in_error(flag, "-", ME, NOW)
    wrong = critical.entered_in_error(flag, "feil pasient", ME, NOW)
    assert wrong["status"] == "entered-in-error" and not critical.is_current(wrong)
    with pytest.raises(errors.Conflict):
        critical.change(wrong, {"text": "y"}, NOW)
    allergy = critical.new_entry("p1", "allergy", "Veps", None, "bekreftet", None, ME, NOW, {})
    gone = critical.entered_in_error(allergy, "feil pasient", ME, NOW)
    assert "clinicalStatus" not in gone and gone["verificationStatus"]["coding"][0]["code"] == "entered-in-error"


def test_critical_first():
    high = critical.new_entry("p", "allergy", "Peanøtt", None, None, None, ME, NOW, {"criticality": "high"})
    low = critical.new_entry("p", "allergy", "Pollen", None, None, None, ME, NOW, {"criticality": "low"})
    flag = critical.new_entry("p", "changed-routine", "Ikke HLR", None, None, None, ME, NOW, {})
    assert [critical.view(r)["text"] for r in sorted([low, flag, high], key=critical.sort_key)] == \
        ["Peanøtt", "Ikke HLR", "Pollen"]


def test_who_may_write_which_category():
    drug = critical.new_entry("p", "drug-reaction", "x", None, None, None, ME, NOW, {})
    implant = critical.new_entry("p", "treatment-implant", "pacemaker", None, None, None, ME, NOW, {})
    assert policy.content_problem(person("personnel", "LE"), "AllergyIntolerance", drug, None) == ""
    assert policy.content_problem(person("personnel", "SP"), "Flag", implant, None) == ""
    assert "treatment-implant" in policy.content_problem(person("personnel", "SP"), "AllergyIntolerance", drug, None)
    plain = {"resourceType": "Flag", "status": "active", "code": {"text": "x"}}
    assert policy.content_problem(person("personnel", "SP"), "Flag", plain, None)
    # changing a doctor's entry into an implant entry is judged by the old content too
    assert policy.content_problem(person("personnel", "SP"), "Flag", implant,
                                  critical.new_entry("p", "infection", "x", None, None, None, ME, NOW, {}))
    assert "citizens may not write critical information" in policy.content_problem(
        person("citizen"), "Flag", implant, None)


def test_own_entries_are_tagged_and_never_proxies():
    contact = own_entries.contact("child", "Kari Nordmann", "mor", "+47 912 34 567")
    assert policy.is_own_entry(contact)
    assert policy.content_problem(person("citizen"), "RelatedPerson", contact, None) == ""
    untagged = dict(contact, meta={})
    assert "own entries" in policy.content_problem(person("citizen"), "RelatedPerson", untagged, None)
    assert "own entries" in policy.content_problem(person("citizen"), "RelatedPerson", contact, untagged)
    # with every mark of a parent, an own entry still gives no parental access
    home = [{"line": ["Gate 1"], "postalCode": "0550"}]
    parentlike = dict(contact, identifier=[{"system": facts.norway.FNR, "value": "25848531440"}], address=home,
                      relationship=[{"coding": [{"system": facts.ROLE_CODE, "code": "MTH"}]},
                                    {"coding": [{"system": facts.PARENTAL_RESPONSIBILITY, "code": "felles"}]}])
    patient = {"resourceType": "Patient", "id": "child", "birthDate": "2020-01-01", "address": home}
    assert facts.facts_from(patient, [], [parentlike]).proxies == ()
    assert len(facts.facts_from(patient, [], [dict(parentlike, meta={})]).proxies) == 1


@pytest.mark.parametrize("call,field", [
    (lambda: own_entries.contact("p", "", "mor", "91234567"), "name"),
    (lambda: own_entries.contact("p", "Kari", "", "91234567"), "relationship"),
    (lambda: own_entries.contact("p", "Kari", "mor", "12"), "phone"),
    (lambda: own_entries.illness("p", " ", NOW), "text"),
    (lambda: own_entries.needs("p", "ja", False, None, NOW), "sight"),
    (lambda: own_entries.interpreter("p", True, "", NOW), "language"),
    (lambda: donor_card.donor_card("p", "kanskje", [], NOW, date(2026, 12, 3)), "consent"),
    (lambda: donor_card.donor_card("p", "ja", [], NOW, date(2026, 12, 3)), "witnesses"),
    (lambda: donor_card.donor_card("p", "ja", [{"name": "Per", "phone": "91234567", "birth_date": "2010-01-01"}],
                                   NOW, date(2026, 12, 3)), "witnesses[0].birth_date"),
    (lambda: donor_card.donor_card("p", "ja", [{"name": "Per", "phone": "91234567", "birth_date": "1990-01-01"},
                                               {"name": "", "phone": "91234567", "birth_date": "1990-01-01"}],
                                   NOW, date(2026, 12, 3)), "witnesses[1].name"),
])
def test_own_entry_input_errors_name_the_field(call, field):
    with pytest.raises(errors.Invalid) as exc:
        call()
    assert exc.value.issues[0].expression == (field,)


def test_donor_card_gives_no_access_and_can_be_withdrawn():
    card = donor_card.donor_card("p", "ja", [{"name": "Per", "phone": "91234567", "birth_date": "1990-01-01"}],
                                 NOW, date(2026, 12, 3))
    assert "actor" not in card["provision"] and card["provision"]["type"] == "permit"
    patient = {"resourceType": "Patient", "id": "p", "birthDate": "1980-01-01"}
    assert facts.facts_from(patient, [card], []) == facts.facts_from(patient, [], [])
    out = donor_card.withdraw(card, NOW)
    view = donor_card.view(out)
    assert not view["active"] and view["withdrawn"] == NOW and view["witnesses"][0]["name"] == "Per"


def test_the_document_builder_locks_and_lists():
    flag = dict(critical.new_entry("p", "infection", "MRSA", None, None, None, ME, NOW, {}), id="f1")
    sections = [document.Section(s.key) for s in document.SECTIONS]
    sections[1].entries = [flag]
    sections[0].locked = "restricted"
    bundle = document.build("p", {"resourceType": "Patient", "id": "p"}, sections, NOW, "http://x", "b", "c")
    assert bundle["type"] == "document" and bundle["entry"][0]["resource"]["resourceType"] == "Composition"
    comp = bundle["entry"][0]["resource"]
    assert comp["section"][0]["emptyReason"]["coding"][0]["code"] == "withheld"
    assert comp["section"][1]["entry"] == [{"reference": "Flag/f1"}]
    assert [e["fullUrl"] for e in bundle["entry"]] == ["http://x/Composition/c", "http://x/Patient/p", "http://x/Flag/f1"]
    assert "MRSA" in comp["section"][1]["text"]["div"]
