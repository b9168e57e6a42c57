"""The Norwegian demo population: pure Bundles first, then loaded into a real SQLite store."""
from __future__ import annotations

import json
import pathlib
from datetime import date

import pytest

from enjournal.fhir import norway
from enjournal.fhir.references import iter_references
from enjournal.fhir.validation import validate_resource
from enjournal.services import demo_data
from enjournal.services.demo import (KOMMUNENUMMER, MUNICIPALITY_CODE, REFERENCE_DATE, age_on, demo_bundles,
                                     load_demo, org_number)

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "demo.md"


@pytest.fixture(scope="module")
def bundles() -> list[dict]:
    return demo_bundles(2026, 100)


def resources(bundles: list[dict], kind: str | None = None) -> list[dict]:
    return [e["resource"] for b in bundles for e in b["entry"]
            if kind is None or e["resource"]["resourceType"] == kind]


def fnr(resource: dict) -> str:
    return next(i["value"] for i in resource["identifier"] if i["system"] == norway.FNR)


def names(patient: dict) -> str:
    n = patient["name"][0]
    return " ".join(n["given"] + [n["family"]])


# -- pure ---------------------------------------------------------------------------------

def test_same_seed_gives_identical_bundles():
    first = json.dumps(demo_bundles(7, 40), sort_keys=True)
    assert json.dumps(demo_bundles(7, 40), sort_keys=True) == first
    assert json.dumps(demo_bundles(8, 40), sort_keys=True) != first


def test_a_larger_population_begins_with_the_same_households():
    small, large = demo_bundles(2026, 20), demo_bundles(2026, 60)
    # the last small household may be cut short; all before it are the same
    assert small[:-1] == large[:len(small) - 1]


@pytest.mark.parametrize("people", [0, 1, 4, 30, 101])
def test_exactly_the_number_of_people_asked_for(people):
    bundles = demo_bundles(3, people)
    assert len(resources(bundles, "Patient")) == people
    assert bundles[0] == demo_bundles(99, 0)[0], "care providers are the same for every seed"


def test_bundles_are_transactions_with_urn_uuid_full_urls(bundles):
    for b in bundles:
        assert b["resourceType"] == "Bundle" and b["type"] == "transaction"
        for e in b["entry"]:
            assert e["fullUrl"].startswith("urn:uuid:")
            method, url = e["request"]["method"], e["request"]["url"]
            if b is bundles[0]:
                assert (method, url) == ("PUT", f"{e['resource']['resourceType']}/{e['resource']['id']}")
            else:
                assert (method, url) == ("POST", e["resource"]["resourceType"])
    full_urls = [e["fullUrl"] for b in bundles for e in b["entry"]]
    assert len(set(full_urls)) == len(full_urls)


def test_every_resource_passes_the_servers_validation(bundles):
    for resource in resources(demo_bundles(11, 60)) + resources(bundles):
        issues = validate_resource(resource, allow_synthetic=True, strict=True)
        assert issues == [], (resource["resourceType"], issues)


def test_references_point_into_the_bundle_or_at_the_care_providers(bundles):
    providers = {f"{r['resourceType']}/{r['id']}" for r in resources(bundles[:1])}
    for ref in (ref for r in resources(bundles[:1]) for _, ref in iter_references(r)):
        assert ref["reference"] in providers
    for b in bundles[1:]:
        own = {e["fullUrl"] for e in b["entry"]}
        for r in (e["resource"] for e in b["entry"]):
            for path, ref in iter_references(r):
                assert ref["reference"] in own or ref["reference"] in providers, (r["resourceType"], path, ref)


def test_fodselsnummer_are_valid_synthetic_unique_and_match_the_patient(bundles):
    patients = resources(demo_bundles(5, 300), "Patient") + resources(bundles, "Patient")
    for p in patients:
        value = fnr(p)
        assert norway.check_person_number(value, allow_synthetic=True) is None
        assert norway.check_person_number(value, allow_synthetic=False) is not None
        assert norway.kind(value) == "synthetic-fnr"
        assert int(value[2:4]) > 80
        assert norway.birth_date(value) == date.fromisoformat(p["birthDate"])
        assert norway.sex(value) == p["gender"]
        assert date.fromisoformat(p["birthDate"]) < REFERENCE_DATE
    for population in (demo_bundles(5, 300), bundles):
        values = [fnr(p) for p in resources(population, "Patient")]
        assert len(values) == len(set(values))


def test_organisations_have_valid_numbers_and_her_ids(bundles):
    orgs = resources(bundles, "Organization")
    assert len(orgs) == len(demo_data.ORGANISATIONS) >= 10
    numbers = set()
    for org in orgs:
        ids = {i["system"]: i["value"] for i in org["identifier"]}
        assert norway.check_org_number(ids[norway.ENH]) is None
        assert norway.check_identifier(norway.HER, ids[norway.HER]) is None
        numbers.add(ids[norway.ENH])
    assert len(numbers) == len(orgs)
    kinds = {o["type"][0]["text"] for o in orgs}
    assert {"Legekontor", "Sykehus", "Sykehjem", "Hjemmetjeneste", "Apotek"} <= kinds
    assert "Oslo universitetssykehus HF" in {o["name"] for o in orgs}


def test_org_number_check_digit():
    for n in range(500):
        value = org_number(n)
        digits = [int(c) for c in value]
        assert len(value) == 9
        assert sum(a * b for a, b in zip(digits, (3, 2, 7, 6, 5, 4, 3, 2, 1))) % 11 == 0


def test_practitioners_have_hpr_numbers_and_roles(bundles):
    practitioners = resources(bundles, "Practitioner")
    categories = set()
    for p in practitioners:
        hpr = next(i["value"] for i in p["identifier"] if i["system"] == norway.HPR)
        assert norway.check_hpr(hpr) is None and 7 <= len(hpr) <= 9
        categories.add(p["qualification"][0]["code"]["coding"][0]["code"])
    assert categories == {"LE", "SP", "FA1"}
    roles = resources(bundles, "PractitionerRole")
    assert {r["practitioner"]["reference"] for r in roles} == {f"Practitioner/{p['id']}" for p in practitioners}
    assert {r["code"][0]["coding"][0]["code"] for r in roles} == {"doctor", "nurse", "pharmacist"}


def test_every_patient_has_a_gp_at_the_office_in_their_municipality(bundles):
    staff = {s.id: s for s in demo_data.STAFF}
    for p in resources(bundles, "Patient"):
        gp = p["generalPractitioner"][0]["reference"].split("/")
        assert gp[0] == "Practitioner" and staff[gp[1]].role_text == "Fastlege"
        office = next(o for o in demo_data.ORGANISATIONS if o.key == staff[gp[1]].org)
        assert office.municipality == municipality_of(p["address"][0])


def municipality_of(address: dict) -> str:
    (ext,) = address["_district"]["extension"]
    assert ext["url"] == MUNICIPALITY_CODE and ext["valueCoding"]["system"] == KOMMUNENUMMER
    return ext["valueCoding"]["code"]


def test_addresses_are_consistent_with_the_municipality(bundles):
    for p in resources(bundles, "Patient") + resources(bundles, "Organization"):
        address = p["address"][0]
        number = municipality_of(address)
        assert len(number) == 4 and number.isdigit()
        if number in demo_data.MUNICIPALITY:
            m = demo_data.MUNICIPALITY[number]
            assert address["district"] == m.name
            places = {(code, city) for _street, code, city in m.streets}
            org_places = {(o.postal_code, o.city) for o in demo_data.ORGANISATIONS if o.municipality == number}
            assert (address["postalCode"], address["city"]) in places | org_places
    cities = {municipality_of(p["address"][0]) for p in resources(bundles, "Patient")}
    assert {"0301", "4601", "5001"} <= cities


def test_names_are_norwegian_with_ae_oe_aa(bundles):
    all_names = " ".join(names(p) for p in resources(bundles, "Patient"))
    assert {"æ", "ø", "å"} & set(all_names.lower())
    for seed in range(5):
        first = " ".join(names(p) for p in resources(demo_bundles(seed, 5), "Patient"))
        assert set("æøå") & set(first.lower()), "the first household always shows the letters"


def test_the_persona_family(bundles):
    family = [e["resource"] for e in bundles[1]["entry"]]
    patients = [r for r in family if r["resourceType"] == "Patient"]
    ages = sorted(age_on(date.fromisoformat(p["birthDate"])) for p in patients)
    assert ages[:3] == [8, 14, 17] and len(patients) == 5
    assert all(p["address"] == patients[0]["address"] for p in patients)
    related = [r for r in family if r["resourceType"] == "RelatedPerson"]
    assert len(related) == 6                      # two parents for each of three children
    parents = {fnr(p) for p in patients if age_on(date.fromisoformat(p["birthDate"])) >= 18}
    for r in related:
        assert fnr(r) in parents
        assert r["address"] == patients[0]["address"]
        codes = {c["code"] for cc in r["relationship"] for c in cc["coding"]}
        assert codes & {"MTH", "FTH"} and "felles" in codes
    links = [link["other"]["reference"] for p in patients for link in p.get("link", [])]
    assert sorted(links) == sorted(e["fullUrl"] for e in bundles[1]["entry"]
                                   if e["resource"]["resourceType"] == "RelatedPerson")


def test_the_persona_in_home_care_and_the_nursing_home_resident(bundles):
    for index, org, text in ((2, "Hjemmetjenesten bydel Grünerløkka", "Hjemmesykepleie"),
                             (3, "Sofienberg sykehjem", "Langtidsopphold i sykehjem")):
        found = [e["resource"] for e in bundles[index]["entry"]]
        (patient,) = [r for r in found if r["resourceType"] == "Patient"]
        assert age_on(date.fromisoformat(patient["birthDate"])) >= 80
        (episode,) = [r for r in found if r["resourceType"] == "EpisodeOfCare"]
        assert episode["managingOrganization"]["display"] == org and episode["type"][0]["text"] == text
        assert patient["contact"][0]["telecom"]
        vitals = [r for r in found if r["resourceType"] == "Observation"]
        assert len({v["effectiveDateTime"] for v in vitals}) >= 3


def test_clinical_data_uses_the_expected_code_systems(bundles):
    everything = resources(bundles)
    systems = {c["system"] for r in everything if r["resourceType"] == "Condition" for c in r["code"]["coding"]}
    assert systems == {"urn:oid:2.16.578.1.12.4.1.1.7170", "http://snomed.info/sct"}
    loinc = {c["code"] for r in everything if r["resourceType"] == "Observation" for c in r["code"]["coding"]}
    assert {"8867-4", "9279-1", "85354-9", "8310-5", "59408-5"} <= loinc
    for r in everything:
        if r["resourceType"] == "Observation":
            quantities = [r["valueQuantity"]] if "valueQuantity" in r else [c["valueQuantity"] for c in r["component"]]
            assert all(q["system"] == "http://unitsofmeasure.org" and q["code"] for q in quantities)
        if r["resourceType"] in ("MedicationRequest", "MedicationStatement"):
            assert r["medicationCodeableConcept"]["coding"][0]["system"] == "http://www.whocc.no/atc"
        if r["resourceType"] == "Immunization":
            assert r["vaccineCode"]["coding"][0]["code"].startswith("J07") and r["lotNumber"]
    kinds = {r["resourceType"] for r in everything}
    assert {"AllergyIntolerance", "MedicationRequest", "MedicationStatement", "Immunization", "Condition"} <= kinds


def test_dates_are_not_after_the_reference_date(bundles):
    limit = REFERENCE_DATE.isoformat()
    for r in resources(bundles):
        for key in ("birthDate", "onsetDateTime", "abatementDateTime", "recordedDate", "authoredOn",
                    "effectiveDateTime", "occurrenceDateTime", "recorded", "dateAsserted"):
            if key in r:
                assert r[key][:10] <= limit, (r["resourceType"], key, r[key])


def test_the_docs_name_the_personas_of_the_default_seed(bundles):
    text = DOCS.read_text(encoding="utf-8")
    for index in (1, 2, 3):
        for p in (e["resource"] for e in bundles[index]["entry"] if e["resource"]["resourceType"] == "Patient"):
            assert fnr(p) in text and names(p) in text
    for staff in ("demo-gp-1", "demo-nurse-1", "demo-pharmacist-1"):
        assert staff in text


# -- loaded into a real store ---------------------------------------------------------------

@pytest.fixture
def platform(tmp_path):
    from enjournal.access.context import system_context, use
    from enjournal.app import Platform
    from enjournal.settings import Settings
    platform = Platform(Settings(database=f"sqlite:///{tmp_path}/t.db"))
    with use(system_context("tests")):        # the platform's own work, as `enjournal demo` does it
        yield platform
    platform.close()


def search(platform, kind: str, params: list[tuple[str, str]]) -> list[dict]:
    result = platform.resources.search(kind, params + [("_count", "1000")])
    return [json.loads(s.body) for s in result.matches]


def test_load_demo_end_to_end(platform):
    summary = load_demo(platform.resources, seed=2026, people=30)
    assert summary.startswith("loaded 30 people in ") and "13 organisations, 21 practitioners" in summary
    expected = demo_bundles(2026, 30)

    patients = search(platform, "Patient", [])
    assert len(patients) == 30
    for p in patients:
        value = fnr(p)
        assert norway.check_person_number(value, allow_synthetic=True) is None
        (found,) = search(platform, "Patient", [("identifier", f"{norway.FNR}|{value}")])
        assert found["id"] == p["id"]
        gp_type, gp_id = p["generalPractitioner"][0]["reference"].split("/")
        assert platform.resources.read(gp_type, gp_id).id == gp_id
    assert {fnr(p) for p in patients} == {fnr(p) for p in resources(expected, "Patient")}
    assert set("æøå") & set(" ".join(names(p) for p in patients).lower())

    for org in search(platform, "Organization", []):
        number = next(i["value"] for i in org["identifier"] if i["system"] == norway.ENH)
        assert norway.check_org_number(number) is None
        (found,) = search(platform, "Organization", [("identifier", f"{norway.ENH}|{number}")])
        assert found["id"] == org["id"]

    gp1 = search(platform, "Patient", [("general-practitioner", "Practitioner/demo-gp-1")])
    assert len(gp1) >= 6                          # the persona family and the home-care persona
    child = next(p for p in gp1 if age_on(date.fromisoformat(p["birthDate"])) == 8)
    parents = search(platform, "RelatedPerson", [("patient", f"Patient/{child['id']}")])
    assert len(parents) == 2
    pulses = search(platform, "Observation", [("code", "http://loinc.org|8867-4")])
    assert len(pulses) == sum(1 for r in resources(expected, "Observation")
                              if r["code"]["coding"][0]["code"] == "8867-4")
    for kind in ("Condition", "Immunization", "MedicationRequest", "EpisodeOfCare", "PractitionerRole"):
        assert len(search(platform, kind, [])) == len(resources(expected, kind))


def test_cli_demo_if_empty(tmp_path, capsys):
    from enjournal.cli import main
    database = f"sqlite:///{tmp_path}/cli.db"
    assert main(["demo", "--database", database, "--people", "4", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("loaded 4 people in ")
    assert main(["demo", "--database", database, "--if-empty"]) == 0
    assert "already has data" in capsys.readouterr().out
