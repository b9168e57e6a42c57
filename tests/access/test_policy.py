"""The access policy as a pure function: every rule, without HTTP or a database."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from enjournal.access import scopes
from enjournal.access.facts import facts_from
from enjournal.access.policy import Action, Grant, PatientFacts, Proxy, age_on, decide
from enjournal.access.principal import Attestation, Principal, Subject

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
TODAY = date(2026, 11, 22)
FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
HPR = "urn:oid:2.16.578.1.12.4.1.4.4"
CONTROL = "https://enjournal.no/fhir/CodeSystem/access-control"


def doctor(hpr: str = "9144101", category: str | None = "LE", scope: str = "user/*.cruds") -> Principal:
    return Principal("personnel", "gp", "https://idp", name="Astrid", hpr=hpr, hpr_category=category,
                     scopes=scopes.parse(scope), scope=scope, assurance="4")


def citizen(pid: str, scope: str = "patient/*.rs patient/Consent.cu patient/Observation.c patient/Communication.c") -> Principal:
    return Principal("citizen", pid, "https://idp", pid=pid, scopes=scopes.parse(scope), scope=scope,
                     assurance="idporten-loa-high")


def system(scope: str = "system/*.cruds") -> Principal:
    return Principal("system", "registry", "https://idp", client_id="registry", scopes=scopes.parse(scope))


def subject(who: Principal, patient: str | None = "p1", **att) -> Subject:
    return Subject(who, Attestation(**att), patient)


def facts(**kw) -> PatientFacts:
    kw.setdefault("id", "p1")
    kw.setdefault("pid", "02013299997")
    kw.setdefault("birth_date", date(1980, 1, 1))
    return PatientFacts(**kw)


def read(type_: str = "Observation") -> Action:
    return Action("read", type_)


def write(type_: str, interaction: str = "create") -> Action:
    return Action(interaction, type_)


# -- health personnel --------------------------------------------------------------------------

def test_treating_doctor_reads_the_attested_patient():
    d = decide(subject(doctor(), purpose="TREAT"), read(), facts(), NOW)
    assert d.allow and d.basis == "TREAT" and not d.emergency


def test_personnel_need_an_attested_patient_and_a_purpose():
    assert not decide(subject(doctor(), None, purpose="TREAT"), read(), facts(), NOW).allow
    d = decide(subject(doctor()), read(), facts(), NOW)
    assert not d.allow and "purpose of use" in d.reason
    d = decide(subject(doctor(), purpose="CURIOUS"), read(), facts(), NOW)
    assert not d.allow and "CURIOUS" in d.reason


def test_another_patient_is_not_found_rather_than_forbidden():
    d = decide(subject(doctor(), "p2", purpose="TREAT"), read(), facts(), NOW)
    assert not d.allow and d.status == 404


def test_a_blocked_health_person_is_refused_even_in_an_emergency():
    blocked = facts(blocked_hpr=frozenset({"9144101"}))
    for purpose in ("TREAT", "ETREAT", "BTG", "COC"):
        d = decide(subject(doctor(), purpose=purpose, reason="unconscious"), read(), blocked, NOW)
        assert not d.allow and d.status == 403 and "blocked" in d.reason
    assert decide(subject(doctor("9144999"), purpose="TREAT"), read(), blocked, NOW).allow


def test_summary_opt_out_and_prescription_block():
    opted = facts(summary_opt_out=True)
    assert not decide(subject(doctor(), purpose="TREAT"), read("AllergyIntolerance"), opted, NOW).allow
    assert decide(subject(doctor(), purpose="TREAT"), read("Observation"), opted, NOW).allow
    rx = facts(prescription_blocked_hpr=frozenset({"9144101"}))
    d = decide(subject(doctor(), purpose="TREAT"), Action("search", "MedicationRequest"), rx, NOW)
    assert not d.allow and "prescriptions" in d.reason
    assert decide(subject(doctor(), purpose="TREAT"), read("Condition"), rx, NOW).allow


def test_restricted_section_needs_declared_consent_or_emergency():
    restricted = facts(restricted_sections=frozenset({"summary"}))
    assert not decide(subject(doctor(), purpose="TREAT"), read("Flag"), restricted, NOW).allow
    assert decide(subject(doctor(), purpose="TREAT", consent_declared=True), read("Flag"), restricted, NOW).allow
    assert decide(subject(doctor(), purpose="TREAT"), read("Observation"), restricted, NOW).allow
    everything = facts(restricted_sections=frozenset({"all"}))
    assert not decide(subject(doctor(), purpose="TREAT"), read("Observation"), everything, NOW).allow
    d = decide(subject(doctor(), purpose="ETREAT", reason="cardiac arrest"), read("Observation"), everything, NOW)
    assert d.allow and d.emergency and d.start_grant


def test_emergency_needs_a_reason_and_is_time_limited():
    d = decide(subject(doctor(), purpose="BTG"), read(), facts(), NOW)
    assert not d.allow and "reason" in d.reason
    d = decide(subject(doctor(), purpose="BTG", reason="unconscious, no relatives"), read(), facts(), NOW)
    assert d.allow and d.emergency and d.start_grant and d.basis == "BTG"
    until = int((NOW + timedelta(hours=4)).timestamp() * 1000)
    granted = facts(grants=(Grant("9144101", until, "unconscious"),))
    d = decide(subject(doctor(), purpose="BTG"), read(), granted, NOW)            # within the grant
    assert d.allow and d.emergency and not d.start_grant
    later = NOW + timedelta(hours=4, seconds=1)                                     # after it
    d = decide(subject(doctor(), purpose="BTG"), read(), granted, later)
    assert not d.allow and "expired" in d.reason
    assert decide(subject(doctor(), purpose="BTG", reason="still unconscious"), read(), granted, later).start_grant
    # another health person's grant is not mine
    assert not decide(subject(doctor("9144777"), purpose="BTG"), read(), granted, NOW).allow


@pytest.mark.parametrize("type_,category,allowed", [
    ("MedicationRequest", "LE", True), ("MedicationRequest", "SP", False), ("MedicationRequest", "FA1", False),
    ("List", "LE", True), ("List", "SP", False),
    ("AllergyIntolerance", "LE", True), ("AllergyIntolerance", "SP", False),
    ("Device", "SP", True), ("Device", "LE", True), ("Device", "FA1", False),
    ("MedicationDispense", "FA1", True), ("MedicationDispense", "LE", False),
    ("Observation", "SP", True), ("Observation", None, False),
])
def test_what_each_category_may_write(type_, category, allowed):
    d = decide(subject(doctor(category=category), purpose="TREAT"), write(type_), facts(), NOW)
    assert d.allow is allowed, d.reason


def test_coordination_of_care_writes_only_coordination():
    assert decide(subject(doctor(), purpose="COC"), read("Observation"), facts(), NOW).allow
    assert not decide(subject(doctor(), purpose="COC"), write("Observation"), facts(), NOW).allow
    assert decide(subject(doctor(), purpose="COC"), write("Communication"), facts(), NOW).allow


def test_shielded_address_is_redacted_for_personnel():
    d = decide(subject(doctor(), purpose="TREAT"), read("Patient"), facts(shielded=True), NOW)
    assert d.allow and d.redact == ("address",)
    own = decide(subject(citizen("02013299997")), read("Patient"), facts(shielded=True), NOW)
    assert own.allow and own.redact == ()


def test_patient_data_needs_a_high_assurance_login():
    import dataclasses
    weak = dataclasses.replace(citizen("02013299997"), assurance="idporten-loa-substantial")
    d = decide(subject(weak), read(), facts(), NOW)
    assert not d.allow and "high assurance" in d.reason
    weak_gp = dataclasses.replace(doctor(), assurance="3")
    assert not decide(subject(weak_gp, purpose="TREAT"), read(), facts(), NOW).allow
    assert decide(subject(weak_gp), Action("read", "Organization", patient_data=False), None, NOW).allow


def test_scopes_limit_everyone():
    readonly = doctor(scope="user/*.rs")
    assert decide(subject(readonly, purpose="TREAT"), read(), facts(), NOW).allow
    d = decide(subject(readonly, purpose="TREAT"), write("Observation"), facts(), NOW)
    assert not d.allow and "scopes" in d.reason
    only_obs = doctor(scope="user/Observation.rs")
    assert not decide(subject(only_obs, purpose="TREAT"), read("Condition"), facts(), NOW).allow
    assert not decide(subject(system("system/*.rs")), write("Observation"), None, NOW).allow
    assert decide(subject(system()), write("Observation"), facts(), NOW).allow


def test_patient_demographics_and_shared_data_are_written_by_systems_only():
    assert not decide(subject(doctor(), purpose="TREAT"), write("Patient", "update"), facts(), NOW).allow
    shared = Action("create", "Organization", patient_data=False)
    assert not decide(subject(doctor(), purpose="TREAT"), shared, None, NOW).allow
    assert decide(subject(doctor()), Action("read", "Organization", patient_data=False), None, NOW).allow
    ownerless = decide(subject(doctor(), purpose="TREAT"), Action("read", "Observation"), None, NOW)
    assert not ownerless.allow and ownerless.status == 404


# -- citizens and proxies ------------------------------------------------------------------------

def test_citizen_reads_own_record_and_writes_only_some_types():
    me = citizen("02013299997")
    assert decide(subject(me), read("MedicationRequest"), facts(), NOW).allow
    assert decide(subject(me), write("Consent"), facts(), NOW).allow
    d = decide(subject(me), write("MedicationRequest"), facts(), NOW)
    assert not d.allow
    stranger = citizen("15076500565")
    d = decide(subject(stranger), read(), facts(), NOW)
    assert not d.allow and d.status == 404


def child(birth: date, **kw) -> PatientFacts:
    parent = Proxy("30108299920", "parent", responsibility=kw.pop("responsibility", True),
                   same_address=kw.pop("same_address", True))
    return facts(id="c1", pid="19841856050", birth_date=birth, proxies=(parent,), **kw)


def born_years_ago(years: int, days: int = 0) -> date:
    """The birth date of someone who turns ``years`` ``days`` days from TODAY (negative: ago)."""
    return date(TODAY.year - years, TODAY.month, TODAY.day) + timedelta(days=days)


PARENT = citizen("30108299920")


@pytest.mark.parametrize("years,days,summary,record", [
    (12, 1, True, True),      # 11, turns 12 tomorrow: full access
    (12, 0, False, True),     # 12 today: limited (no summary record)
    (16, 1, False, True),     # 15, turns 16 tomorrow: still limited
    (16, 0, False, False),    # 16 today: nothing
    (5, 0, True, True),
    (17, 0, False, False),
])
def test_parent_access_on_both_sides_of_each_birthday(years, days, summary, record):
    kid = child(born_years_ago(years, days))
    assert decide(subject(PARENT, "c1"), read("AllergyIntolerance"), kid, NOW).allow is summary
    assert decide(subject(PARENT, "c1"), read("Observation"), kid, NOW).allow is record


def test_parents_need_responsibility_and_the_same_address():
    birth = born_years_ago(8)
    assert decide(subject(PARENT, "c1"), read(), child(birth), NOW).allow
    assert not decide(subject(PARENT, "c1"), read(), child(birth, responsibility=False), NOW).allow
    d = decide(subject(PARENT, "c1"), read(), child(birth, same_address=False), NOW)
    assert not d.allow and "address" in d.reason


def test_a_young_person_can_hide_prescriptions_from_parents():
    teen = child(born_years_ago(14), prescriptions_hidden_from_parents=True)
    assert not decide(subject(PARENT, "c1"), read("MedicationRequest"), teen, NOW).allow
    assert decide(subject(PARENT, "c1"), read("Observation"), teen, NOW).allow
    young = child(born_years_ago(9), prescriptions_hidden_from_parents=True)
    assert decide(subject(PARENT, "c1"), read("MedicationRequest"), young, NOW).allow
    assert not decide(subject(PARENT, "c1"), write("Consent"), teen, NOW).allow


def attorney_facts(giver_birth: date, receiver_birth: date, scopes_=frozenset({"view"}), **kw) -> PatientFacts:
    proxy = Proxy("15076500565", "attorney", scopes=scopes_, birth_date=receiver_birth, **kw)
    return facts(id="g1", pid="02013299997", birth_date=giver_birth, proxies=(proxy,))


@pytest.mark.parametrize("giver_years,giver_days,receiver_years,receiver_days,allowed", [
    (16, 0, 30, 0, True), (16, 1, 30, 0, False),         # giver 16 today / 15 until tomorrow
    (40, 0, 18, 0, True), (40, 0, 18, 1, False),         # receiver 18 today / 17 until tomorrow
])
def test_power_of_attorney_age_limits(giver_years, giver_days, receiver_years, receiver_days, allowed):
    f = attorney_facts(born_years_ago(giver_years, giver_days), born_years_ago(receiver_years, receiver_days))
    assert decide(subject(citizen("15076500565"), "g1"), read(), f, NOW).allow is allowed


def test_power_of_attorney_scopes_period_and_no_further_powers():
    holder = citizen("15076500565")
    view = attorney_facts(date(1950, 1, 1), date(1980, 1, 1))
    assert decide(subject(holder, "g1"), read(), view, NOW).allow
    assert not decide(subject(holder, "g1"), write("Communication"), view, NOW).allow
    use = attorney_facts(date(1950, 1, 1), date(1980, 1, 1), frozenset({"view", "use"}))
    assert decide(subject(holder, "g1"), write("Communication"), use, NOW).allow
    assert not decide(subject(holder, "g1"), write("Consent"), use, NOW).allow          # no further powers
    assert not decide(subject(holder, "g1"), write("MedicationRequest"), use, NOW).allow  # not more than the giver
    ended = attorney_facts(date(1950, 1, 1), date(1980, 1, 1), end=date(2026, 11, 21))
    assert not decide(subject(holder, "g1"), read(), ended, NOW).allow


def test_age_counts_the_birthday_itself():
    assert age_on(date(2014, 5, 3), date(2026, 5, 2)) == 11
    assert age_on(date(2014, 5, 3), date(2026, 5, 3)) == 12
    assert age_on(date(2012, 2, 29), date(2026, 2, 28)) == 13
    assert age_on(date(2012, 2, 29), date(2026, 3, 1)) == 14


# -- facts from FHIR data ------------------------------------------------------------------------

def consent(kind: str, **provision) -> dict:
    return {"resourceType": "Consent", "status": "active",
            "category": [{"coding": [{"system": CONTROL, "code": kind}]}],
            "patient": {"reference": "Patient/p1"}, "provision": provision}


def test_facts_from_consents_and_related_persons():
    address = {"line": ["Søndre gate 111"], "postalCode": "0550", "city": "Oslo"}
    patient = {"resourceType": "Patient", "id": "p1", "birthDate": "2018-04-19",
               "identifier": [{"system": FNR, "value": "19841856050"}], "address": [address],
               "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                      "code": "R"}]}}
    hpr = {"reference": {"identifier": {"system": HPR, "value": "9144101"}}}
    consents = [
        consent("block-personnel", type="deny", actor=[hpr]),
        consent("block-prescriptions", type="deny", actor=[
            {"reference": {"identifier": {"system": HPR, "value": "9144202"}}}]),
        consent("restrict-section", type="deny", code=[{"coding": [
            {"system": "https://enjournal.no/fhir/CodeSystem/record-section", "code": "lab"}]}]),
        consent("summary-opt-out"),
        dict(consent("hide-prescriptions-from-parents"), status="inactive"),
        consent("power-of-attorney", type="permit", period={"start": "2026-01-01"},
                action=[{"coding": [{"system": "https://enjournal.no/fhir/CodeSystem/proxy-scope", "code": "use"}]}],
                actor=[{"reference": {"identifier": {"system": FNR, "value": "15076500565"}}}]),
    ]
    mother = {"resourceType": "RelatedPerson", "patient": {"reference": "Patient/p1"},
              "identifier": [{"system": FNR, "value": "25848531440"}], "address": [dict(address, city="OSLO")],
              "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                            "code": "MTH"}]},
                               {"coding": [{"system": "http://hl7.no/fhir/CodeSystem/no-basis-parental-responsibility",
                                            "code": "felles"}]}]}
    elsewhere = dict(mother, identifier=[{"system": FNR, "value": "02828307595"}],
                     address=[{"line": ["Annen vei 1"], "postalCode": "5003"}])
    neighbour = dict(mother, identifier=[{"system": FNR, "value": "30108299920"}], relationship=[{"text": "venn"}])
    f = facts_from(patient, consents, [mother, elsewhere, neighbour])
    assert f.pid == "19841856050" and f.birth_date == date(2018, 4, 19) and f.shielded
    assert f.blocked_hpr == {"9144101"} and f.prescription_blocked_hpr == {"9144202"}
    assert f.restricted_sections == {"lab"} and f.summary_opt_out and not f.prescriptions_hidden_from_parents
    by_pid = {p.pid: p for p in f.proxies}
    assert set(by_pid) == {"25848531440", "02828307595", "15076500565"}
    assert by_pid["25848531440"].responsibility and by_pid["25848531440"].same_address
    assert not by_pid["02828307595"].same_address
    attorney = by_pid["15076500565"]
    assert attorney.kind == "attorney" and attorney.scopes == {"use"} and attorney.start == date(2026, 1, 1)
    assert attorney.birth_date == date(1965, 7, 15)        # from the fødselsnummer


def test_facts_survive_malformed_data():
    patient = {"resourceType": "Patient", "id": "p1", "birthDate": 12, "address": "nowhere", "identifier": "x"}
    junk = [{"status": "active", "category": "x", "provision": []}, "not a dict",
            {"status": "active", "category": [{"coding": [{"system": CONTROL, "code": "block-personnel"}]}],
             "provision": {"actor": [{"reference": "Practitioner/1"}]}}]
    f = facts_from(patient, junk, [{"patient": 1}, {"identifier": [{"system": FNR, "value": 5}]}])
    assert f.birth_date is None and f.blocked_hpr == frozenset() and f.proxies == ()


def test_scope_parsing():
    assert scopes.parse("patient/*.rs user/Observation.cruds system/*.read launch/patient openid") == (
        scopes.ResourceScope("patient", "*", "rs"), scopes.ResourceScope("user", "Observation", "cruds"),
        scopes.ResourceScope("system", "*", "rs"))
    for bad in ("patient/*.sr", "patient/*.rr", "patient/*.x", "patient/Observation.rs?category=lab", "foo/*.rs"):
        assert scopes.parse(bad) == (), bad
