"""Index values extracted from resources, per search parameter type
(https://hl7.org/fhir/R4/search.html#ptypes), on official examples and hand-written resources."""
from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from decimal import Decimal

import pytest

from enjournal.fhir import jsonio
from enjournal.fhir.index_values import (DATE_MAX, DATE_MIN, Composite, DateRange, IdentifierOfType, Number,
                                         Quantity, Reference, String, Token, Uri)
from enjournal.fhir.searchparams import Registry

R = Registry.default()
INF = float("inf")
DEFINITIONS = {"SearchParameter", "StructureDefinition", "ValueSet", "CodeSystem", "ConceptMap",
               "OperationDefinition", "CapabilityStatement", "CompartmentDefinition", "NamingSystem",
               "ImplementationGuide", "StructureMap", "GraphDefinition", "MessageDefinition",
               "TerminologyCapabilities"}


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def values(resource: dict, code: str) -> list:
    return [v for c, v in R.extract(resource) if c == code]


def example(examples_dir, name: str) -> dict:
    return json.loads((examples_dir / f"{name}.json").read_text("utf-8"))


# ---- official examples ----------------------------------------------------------------

def test_observation_example(examples_dir):
    obs = example(examples_dir, "Observation-example")
    assert Token("http://loinc.org", "29463-7", "body weight") in values(obs, "code")
    assert values(obs, "subject") == [Reference("Patient", "example")]
    assert values(obs, "patient") == [Reference("Patient", "example")]
    assert values(obs, "date") == [DateRange(ms("2016-03-28T00:00:00Z"), ms("2016-03-29T00:00:00Z") - 1)]
    assert values(obs, "value-quantity") == [Quantity(185.0, 185.0, 185.0, "http://unitsofmeasure.org", "[lb_av]", "lbs")]
    assert values(obs, "_id") == [Token(None, "example")]
    assert values(obs, "status") == [Token(None, "final")]


def test_glucose_observation_with_open_period(examples_dir):
    obs = example(examples_dir, "Observation-f001")
    assert values(obs, "code") == [Token("http://loinc.org", "15074-8", "glucose [moles/volume] in blood")]
    assert values(obs, "date") == [DateRange(ms("2013-04-02T08:30:10Z"), DATE_MAX)]     # +01:00, ongoing
    assert values(obs, "identifier") == [Token("http://www.bmc.nl/zorgportal/identifiers/observations", "6323")]
    assert values(obs, "performer") == [Reference("Practitioner", "f005")]
    [cvq] = values(obs, "code-value-quantity")
    assert cvq == Composite(((Token("http://loinc.org", "15074-8", "glucose [moles/volume] in blood"),),
                             (Quantity(6.3, 6.3, 6.3, "http://unitsofmeasure.org", "mmol/L", "mmol/l"),)))


def test_blood_pressure_components(examples_dir):
    obs = example(examples_dir, "Observation-blood-pressure")
    pairs = values(obs, "component-code-value-quantity")
    assert len(pairs) == 2
    systolic = next(p for p in pairs if Token("http://loinc.org", "8480-6", "systolic blood pressure") in p.parts[0])
    assert systolic.parts[1] == (Quantity(107.0, 107.0, 107.0, "http://unitsofmeasure.org", "mm[Hg]", "mmHg"),)
    assert Token("http://loinc.org", "8462-4", "diastolic blood pressure") in values(obs, "component-code")
    # combo-code-value-quantity covers the Observation itself and each component
    assert len(values(obs, "combo-code-value-quantity")) == 2
    assert values(obs, "code-value-quantity") == []          # no Observation.valueQuantity


def test_every_example_extracts(examples_dir, capsys):
    """extract() runs on every resource in the official package without raising."""
    counts, values_per_kind, failures = Counter(), Counter(), []
    for path in sorted(examples_dir.glob("*.json")):
        resource = json.loads(path.read_text("utf-8"))
        if not isinstance(resource, dict) or resource.get("resourceType") not in R.resource_types():
            continue
        kind = "definitional" if resource["resourceType"] in DEFINITIONS else "other"
        try:
            values_per_kind[kind] += len(R.extract(resource))
            counts[kind] += 1
        except Exception as e:                  # collect them all, then fail with the list
            failures.append(f"{path.name}: {e!r}")
    with capsys.disabled():
        print(f"\nextracted: {counts['other']} non-definition examples ({values_per_kind['other']} values), "
              f"{counts['definitional']} definitional ({values_per_kind['definitional']} values)")
    assert not failures, failures[:10]
    assert counts["other"] > 700 and counts["definitional"] > 4000


def test_decimals_as_the_server_parses_them_index_like_floats(examples_dir):
    """``jsonio.loads`` keeps decimal precision with ``Decimal`` (``72.50``, ``1e3``); every
    example must index exactly as if it had been read with floats."""
    with_decimals, differ = 0, []
    for path in sorted(examples_dir.glob("*.json")):
        raw = path.read_bytes()
        exact = jsonio.loads(raw)
        if not isinstance(exact, dict) or exact.get("resourceType") not in R.resource_types():
            continue
        if not any(type(n) is Decimal for n in _numbers(exact)):
            continue
        with_decimals += 1
        if sorted(map(repr, R.extract(exact))) != sorted(map(repr, R.extract(json.loads(raw)))):
            differ.append(path.name)
    assert with_decimals > 50 and not differ, differ[:10]


# ---- strings --------------------------------------------------------------------------

PATIENT = {
    "resourceType": "Patient", "id": "p1",
    "identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": "02013299997",
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NNNOR"}],
                             "text": "Fødselsnummer"}}],
    "name": [{"use": "official", "text": "Åse Kari Ødegård", "family": "Ødegård", "given": ["Åse", "Kari"],
              "prefix": ["Fru"]}],
    "telecom": [{"system": "phone", "value": "+47 22 33 44 55"}, {"system": "email", "value": "ase@example.no"}],
    "gender": "female", "birthDate": "1932-01-02", "deceasedBoolean": False,
    "address": [{"line": ["Storgata 1", "Leilighet 3"], "city": "Tromsø", "district": "Troms",
                 "postalCode": "9008", "country": "NO"}],
    "generalPractitioner": [{"reference": "http://fhir.example.no/fhir/Practitioner/gp1"},
                            {"identifier": {"system": "urn:oid:2.16.578.1.12.4.1.4.4", "value": "9144889"}}],
    "managingOrganization": {"reference": "Organization/org1/_history/2"},
}


def test_human_name_parts_with_norwegian_letters():
    names = values(PATIENT, "name")
    assert String("ødegård", "Ødegård") in names
    assert String("åse", "Åse") in names and String("kari", "Kari") in names
    assert String("fru", "Fru") in names and String("åse kari ødegård", "Åse Kari Ødegård") in names
    assert values(PATIENT, "family") == [String("ødegård", "Ødegård")]
    assert values(PATIENT, "given") == [String("åse", "Åse"), String("kari", "Kari")]


def test_address_parts():
    address = values(PATIENT, "address")
    for part in ("Storgata 1", "Leilighet 3", "Tromsø", "Troms", "9008", "NO"):
        assert String(part.casefold(), part) in address
    assert values(PATIENT, "address-city") == [String("tromsø", "Tromsø")]
    assert values(PATIENT, "address-postalcode") == [String("9008", "9008")]


# ---- tokens ---------------------------------------------------------------------------

def test_identifier_with_type_gives_of_type_values():
    ids = values(PATIENT, "identifier")
    assert Token("urn:oid:2.16.578.1.12.4.1.4.1", "02013299997", "fødselsnummer") in ids
    assert IdentifierOfType("http://terminology.hl7.org/CodeSystem/v2-0203", "NNNOR", "02013299997") in ids


def test_contact_points_codes_and_booleans():
    assert values(PATIENT, "phone") == [Token(None, "+47 22 33 44 55")]
    assert values(PATIENT, "email") == [Token(None, "ase@example.no")]
    assert set(values(PATIENT, "telecom")) == {Token(None, "+47 22 33 44 55"), Token(None, "ase@example.no")}
    assert values(PATIENT, "gender") == [Token(None, "female")]
    assert values(PATIENT, "deceased") == [Token(None, "false")]
    assert values({**PATIENT, "deceasedBoolean": None, "deceasedDateTime": "2020"}, "deceased") == [Token(None, "true")]
    assert values({"resourceType": "Patient", "active": True}, "active") == [Token(None, "true")]


def test_codeable_concept_with_text_only():
    cond = {"resourceType": "Condition", "code": {"text": "Hjertesvikt"}}
    assert values(cond, "code") == [Token(None, None, "hjertesvikt")]
    cond = {"resourceType": "Condition", "code": {"text": "Hjertesvikt", "coding": [{"system": "http://snomed.info/sct",
                                                                                    "code": "84114007", "display": "Heart failure"}]}}
    # :text matches the CodeableConcept's text or the coding's display, so the token keeps both
    assert values(cond, "code") == [Token("http://snomed.info/sct", "84114007", "hjertesvikt heart failure")]


# ---- references -----------------------------------------------------------------------

def test_reference_forms():
    assert values(PATIENT, "general-practitioner") == [
        Reference("Practitioner", "gp1", url="http://fhir.example.no/fhir/Practitioner/gp1"),
        Token("urn:oid:2.16.578.1.12.4.1.4.4", "9144889", None)]            # for :identifier
    assert values(PATIENT, "organization") == [Reference("Organization", "org1", version="2")]
    obs = {"resourceType": "Observation", "subject": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"},
           "performer": [{"reference": "#contained-1"}], "hasMember": [{"reference": "Observation/a b"}]}
    assert values(obs, "subject") == [Reference(None, None, url="urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a")]
    assert values(obs, "performer") == [] and values(obs, "has-member") == []


def test_canonical_reference_and_uri():
    q = {"resourceType": "Questionnaire", "url": "http://fhir.example.no/Questionnaire/phq9",
         "item": [{"linkId": "1", "answerValueSet": "http://hl7.org/fhir/ValueSet/yesnodontknow|4.0.1"}]}
    assert values(q, "url") == [Uri("http://fhir.example.no/Questionnaire/phq9")]
    pd = {"resourceType": "PlanDefinition", "action": [{"definitionCanonical": "http://hl7.org/fhir/ValueSet/x|4.0"}]}
    assert values(pd, "definition") == [Reference(None, None, url="http://hl7.org/fhir/ValueSet/x", version="4.0")]


def test_patient_parameter_only_takes_patient_references():
    group_subject = {"resourceType": "Observation", "subject": {"reference": "Group/g1"}}
    assert values(group_subject, "subject") == [Reference("Group", "g1")]
    assert values(group_subject, "patient") == []
    abs_subject = {"resourceType": "Observation", "subject": {"reference": "https://x.no/fhir/Patient/p9"}}
    assert values(abs_subject, "patient") == [Reference("Patient", "p9", url="https://x.no/fhir/Patient/p9")]
    appointment = {"resourceType": "Appointment", "participant": [
        {"actor": {"reference": "Patient/p1"}}, {"actor": {"reference": "Practitioner/d1"}}]}
    assert values(appointment, "patient") == [Reference("Patient", "p1")]
    assert values(appointment, "practitioner") == [Reference("Practitioner", "d1")]
    assert len(values(appointment, "actor")) == 2


# ---- dates ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, lo, hi", [
    ("1970", "1970-01-01T00:00:00Z", "1971-01-01T00:00:00Z"),
    ("1970-02", "1970-02-01T00:00:00Z", "1970-03-01T00:00:00Z"),
    ("1932-01-02", "1932-01-02T00:00:00Z", "1932-01-03T00:00:00Z"),
])
def test_date_precision(text, lo, hi):
    assert values({"resourceType": "Patient", "birthDate": text}, "birthdate") == [DateRange(ms(lo), ms(hi) - 1)]


@pytest.mark.parametrize("text, lo, hi", [
    ("2020-10-30T09:10:50+02:00", ms("2020-10-30T07:10:50Z"), ms("2020-10-30T07:10:50Z") + 999),
    ("2020-10-30T09:10:50.25Z", ms("2020-10-30T09:10:50Z") + 250, ms("2020-10-30T09:10:50Z") + 259),
    ("2020-10-30T09:10:50.123456-01:00", ms("2020-10-30T10:10:50Z") + 123, ms("2020-10-30T10:10:50Z") + 123),
    ("2020-10-30T09:10", ms("2020-10-30T09:10:00Z"), ms("2020-10-30T09:11:00Z") - 1),
])
def test_datetime_precision_and_zone(text, lo, hi):
    assert values({"resourceType": "Observation", "effectiveDateTime": text}, "date") == [DateRange(lo, hi)]


def test_periods_timing_and_non_dates():
    enc = {"resourceType": "Encounter", "period": {"end": "2021-05-01"}}
    assert values(enc, "date") == [DateRange(DATE_MIN, ms("2021-05-02T00:00:00Z") - 1)]
    assert values({"resourceType": "Encounter", "period": {}}, "date") == []
    plan = {"resourceType": "CarePlan", "activity": [
        {"detail": {"scheduledTiming": {"event": ["2021-01-01", "2021-02-01"],
                                        "repeat": {"boundsPeriod": {"start": "2021-01-01"}}}}},
        {"detail": {"scheduledString": "every morning"}}]}
    assert values(plan, "activity-date") == [
        DateRange(ms("2021-01-01T00:00:00Z"), ms("2021-01-02T00:00:00Z") - 1),
        DateRange(ms("2021-02-01T00:00:00Z"), ms("2021-02-02T00:00:00Z") - 1),
        DateRange(ms("2021-01-01T00:00:00Z"), DATE_MAX)]
    assert values({"resourceType": "Condition", "onsetAge": {"value": 40, "unit": "a"}}, "onset-date") == []
    assert values({"resourceType": "Condition", "onsetString": "childhood"}, "onset-date") == []
    assert values({"resourceType": "Condition", "onsetDateTime": "not a date"}, "onset-date") == []


# ---- numbers and quantities -----------------------------------------------------------

def test_numbers_and_ranges():
    risk = {"resourceType": "RiskAssessment", "prediction": [
        {"probabilityDecimal": 0.25}, {"probabilityRange": {"low": {"value": 10}, "high": {"value": 20}}},
        {"probabilityRange": {"high": {"value": 5}}}]}
    assert values(risk, "probability") == [Number(0.25, 0.25, 0.25), Number(10.0, 10.0, 20.0), Number(5.0, -INF, 5.0)]


def test_quantity_money_and_range():
    item = {"resourceType": "ChargeItem", "priceOverride": {"value": 40, "currency": "NOK"}}
    assert values(item, "price-override") == [Quantity(40.0, 40.0, 40.0, "urn:iso:std:iso:4217", "NOK", None)]
    ad = {"resourceType": "ActivityDefinition", "useContext": [{
        "code": {"system": "http://terminology.hl7.org/CodeSystem/usage-context-type", "code": "age"},
        "valueRange": {"low": {"value": 18, "system": "http://unitsofmeasure.org", "code": "a"}}}]}
    assert values(ad, "context-quantity") == [Quantity(18.0, 18.0, INF, "http://unitsofmeasure.org", "a", None)]
    [pair] = values(ad, "context-type-quantity")
    assert pair.parts == ((Token("http://terminology.hl7.org/CodeSystem/usage-context-type", "age"),),
                          (Quantity(18.0, 18.0, INF, "http://unitsofmeasure.org", "a", None),))
    assert values({"resourceType": "Observation", "valueSampledData": {"data": "1 2"}}, "value-quantity") == []


DECIMAL_BODIES = [
    # (resource JSON as sent, parameter, index values): numbers a float would change are Decimals
    (b'{"resourceType":"Observation","code":{"text":"x"},"valueQuantity":{"value":72.50,"unit":"kg"}}',
     "value-quantity", [Quantity(72.5, 72.5, 72.5, None, None, "kg")]),
    (b'{"resourceType":"Observation","code":{"text":"x"},"valueQuantity":{"value":72.50,"unit":"kg"}}',
     "combo-value-quantity", [Quantity(72.5, 72.5, 72.5, None, None, "kg")]),
    (b'{"resourceType":"RiskAssessment","prediction":[{"probabilityDecimal":0.10}]}',
     "probability", [Number(0.1, 0.1, 0.1)]),
    (b'{"resourceType":"RiskAssessment","prediction":[{"probabilityRange":{"low":{"value":1e1},"high":{"value":2.50}}}]}',
     "probability", [Number(10.0, 10.0, 2.5)]),
    (b'{"resourceType":"ChargeItem","priceOverride":{"value":40.00,"currency":"NOK"},"factorOverride":0.80}',
     "price-override", [Quantity(40.0, 40.0, 40.0, "urn:iso:std:iso:4217", "NOK", None)]),
    (b'{"resourceType":"ChargeItem","priceOverride":{"value":40.00,"currency":"NOK"},"factorOverride":0.80}',
     "factor-override", [Number(0.8, 0.8, 0.8)]),
    (b'{"resourceType":"Condition","onsetAge":{"value":1.50,"unit":"a"}}', "onset-date", []),
    (b'{"resourceType":"ActivityDefinition","useContext":[{"code":{"code":"age"},'
     b'"valueRange":{"high":{"value":65.0,"unit":"a"}}}]}',
     "context-quantity", [Quantity(65.0, -INF, 65.0, None, None, "a")]),
]


def test_a_decimal_beyond_a_float_is_indexed_as_infinite():
    """The JSON reader refuses such numbers (test_json_numbers_beyond_the_limits_are_refused);
    a resource built in code may still hold one, and extraction copes."""
    resource = {"resourceType": "Observation", "code": {"text": "x"}, "valueQuantity": {"value": Decimal("1E400")}}
    assert values(resource, "value-quantity") == [Quantity(INF, INF, INF, None, None, None)]


@pytest.mark.parametrize("text, problem", [
    (b'{"v":1E400}', "out of range"), (b'{"v":-1e309}', "out of range"), (b'{"v":1e-400}', "out of range"),
    (b'{"v":1' + b"0" * 32 + b'}', "33 digits"), (b'{"v":0.' + b"1" * 5000 + b'}', "5,001 digits"),
])
def test_json_numbers_beyond_the_limits_are_refused(text, problem):
    with pytest.raises(jsonio.NumberOutOfRange, match=problem):
        jsonio.loads(text)


def test_json_numbers_within_the_limits_keep_their_text():
    text = b'{"a":123456789012345678901234567890,"b":1.50,"d":-0.000001}'
    assert jsonio.dumps(jsonio.loads(text)) == text
    assert jsonio.loads(b'{"c":1e308}')["c"] == Decimal("1e308")


def test_a_lone_surrogate_is_not_json_text():
    with pytest.raises(jsonio.JSONDecodeError):
        jsonio.loads(b'{"a":"\\ud800","b":1.50}')
    assert jsonio.loads(b'{"a":"\\ud83d\\ude00","b":1.50}')["a"] == "\U0001F600"


@pytest.mark.parametrize("body, code, expected", DECIMAL_BODIES,
                         ids=[f"{code}-{i}" for i, (_, code, _) in enumerate(DECIMAL_BODIES)])
def test_decimal_values_are_indexed_as_floats(body, code, expected):
    resource = jsonio.loads(body)
    assert any(type(v) is Decimal for v in _numbers(resource)), "the case must hold a Decimal"
    found = values(resource, code)
    assert found == expected
    assert all(type(x) is float for v in found for x in v[:3])


def _numbers(x):
    if isinstance(x, dict):
        x = list(x.values())
    if isinstance(x, list):
        return [n for y in x for n in _numbers(y)]
    return [x]


def test_booleans_and_text_are_not_numbers():
    risk = {"resourceType": "RiskAssessment", "prediction": [
        {"probabilityDecimal": True}, {"probabilityDecimal": "0.5"}, {"probabilityRange": {"low": {"value": False}}}]}
    assert values(risk, "probability") == []
    obs = {"resourceType": "Observation", "valueQuantity": {"value": True, "unit": "kg"}}
    assert values(obs, "value-quantity") == []
    assert values({"resourceType": "Observation", "valueQuantity": {"value": float("nan")}}, "value-quantity") == []
    assert values({"resourceType": "Observation", "valueQuantity": {"value": 10 ** 400}}, "value-quantity") == [
        Quantity(INF, INF, INF, None, None, None)]


# ---- meta and the rest ----------------------------------------------------------------

def test_meta_parameters():
    res = {"resourceType": "Observation", "id": "o1", "meta": {
        "lastUpdated": "2024-05-01T10:00:00.123Z", "profile": ["http://hl7.no/fhir/StructureDefinition/no-basis-Observation"],
        "tag": [{"system": "urn:tags", "code": "t1"}], "security": [{"system": "urn:sec", "code": "R"}],
        "source": "http://epj.example.no"}}
    assert values(res, "_lastUpdated") == [DateRange(ms("2024-05-01T10:00:00Z") + 123, ms("2024-05-01T10:00:00Z") + 123)]
    assert values(res, "_profile") == [Uri("http://hl7.no/fhir/StructureDefinition/no-basis-Observation")]
    assert values(res, "_tag") == [Token("urn:tags", "t1")]
    assert values(res, "_security") == [Token("urn:sec", "R")]
    assert values(res, "_source") == [Uri("http://epj.example.no")]


def test_bundle_message_and_document():
    doc = {"resourceType": "Bundle", "type": "document",
           "entry": [{"resource": {"resourceType": "Composition", "id": "c1"}}]}
    assert values(doc, "composition") == [Reference("Composition", "c1")]
    assert values(doc, "message") == []


def test_unknown_resource_type_is_invalid():
    from enjournal import errors
    with pytest.raises(errors.Invalid):
        R.extract({"resourceType": "Patsient"})


def test_duplicate_values_are_indexed_once():
    obs = {"resourceType": "Observation", "code": {"coding": [{"system": "s", "code": "c"}, {"system": "s", "code": "c"}]}}
    assert values(obs, "code") == [Token("s", "c")]
