"""Validation on write: FHIR R4 structure (fhirkit), impossible dates, ids, Norwegian
identifiers, strict and lenient modes, and the official R4 examples."""
from __future__ import annotations

import tarfile
from decimal import Decimal

import orjson
import pytest

from enjournal import errors
from enjournal.fhir import norway
from enjournal.fhir.validation import (DATE_ELEMENTS, RESOURCE_TYPES, blocking,
                                       fhirkit_structure, validate_resource)
from tests.conftest import EXAMPLES_TGZ

OBS = {"resourceType": "Observation", "id": "hr-1", "status": "final",
       "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
       "subject": {"reference": "Patient/p1"},
       "effectiveDateTime": "2026-11-01T08:30:00+01:00",
       "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org",
                         "code": "/min"}}


def found(resource: dict, **kw) -> list[tuple[str, str, str, str]]:
    """The issues as (expression, code, severity, diagnostics) for compact assertions."""
    return [(",".join(i.expression), i.code, i.severity, i.diagnostics)
            for i in validate_resource(resource, **kw)]


def test_valid_resources_have_no_issues():
    assert validate_resource(OBS) == []
    assert validate_resource({"resourceType": "Patient"}) == []
    assert validate_resource({"resourceType": "Patient", "id": "a-B.9", "birthDate": "2024-02-29",
                              "gender": "female", "active": True}) == []


def test_issues_are_error_vocabulary_issues():
    issues = validate_resource({"resourceType": "Patient", "foo": 1})
    assert issues == [errors.Issue("unknown element", ("Patient.foo",), "structure", "error")]


# What fhirkit reports, as the client will see it.
@pytest.mark.parametrize("resource, expected", [
    ({"resourceType": "Patient", "name": [{"family": "x", "bar": 2}]},
     [("Patient.name[0].bar", "structure", "error", "unknown element")]),
    ({"resourceType": "Patient", "active": "yes"},
     [("Patient.active", "structure", "error", "expected true or false, found a string")]),
    ({"resourceType": "Patient", "name": {"family": "x"}},
     [("Patient.name", "structure", "error", "expected an array, found an object")]),
    ({"resourceType": "Patient", "birthDate": "31.12.1999"},
     [("Patient.birthDate", "value", "error", '"31.12.1999" is not a valid date')]),
    ({"resourceType": "Patient", "meta": {"lastUpdated": "2020-01-01T00:00:00"}},
     [("Patient.meta.lastUpdated", "value", "error", '"2020-01-01T00:00:00" is not a valid instant')]),
    ({"resourceType": "Patient", "id": 5},
     [("Patient.id", "structure", "error", "expected a string, found a number")]),
    ({"resourceType": "Patient", "id": ""},
     [("Patient.id", "value", "error", "an empty string is not allowed")]),
    ({"resourceType": "Observation"},
     [("Observation.status", "required", "error", "required element missing"),
      ("Observation.code", "required", "error", "required element missing")]),
    ({"resourceType": "Patient", "active": None},
     [("Patient.active", "structure", "error", "null is not allowed; leave the element out")]),
    ({"resourceType": "Patient", "name": [{"extension": []}]},
     [("Patient.name[0].extension", "structure", "error",
       "an empty array is not allowed; leave the element out")]),
    ({"resourceType": "Patient", "gender": " male"},
     [("Patient.gender", "value", "error", '" male" is not a valid code')]),
    ({"resourceType": "Patient", "identifier": [{"system": "a b", "value": "x"}]},
     [("Patient.identifier[0].system", "value", "error", '"a b" is not a valid uri')]),
    ({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueInteger": 1.5},
     [("Observation.valueInteger", "value", "error", "1.5 is not a FHIR integer")]),
    ({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueInteger": 2**40},
     [("Observation.valueInteger", "value", "error",
       "1099511627776 is outside the 32-bit range of a FHIR integer")]),
    ({**OBS, "valueString": "x"},
     [("Observation.value[x]", "structure", "error",
       "only one type may be given, found valueQuantity, valueString"),
      ("Observation.valueString", "structure", "error", "unknown element")]),
])
def test_structure_problems(resource, expected):
    assert found(resource) == expected


def test_primitive_extensions():
    birth_time = {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                  "valueDateTime": "1974-12-25T14:35:45-05:00"}
    assert validate_resource({"resourceType": "Patient", "birthDate": "1974-12-25",
                              "_birthDate": {"extension": [birth_time]}}) == []
    # An extension standing in for a value in an array of primitives (null in its place).
    assert validate_resource({"resourceType": "Patient", "name": [{
        "given": ["Kari", None],
        "_given": [None, {"extension": [{"url": "http://x", "valueString": "y"}]}]}]}) == []
    assert found({"resourceType": "Patient", "name": [{"given": ["Kari", None]}]}) == [
        ("Patient.name[0].given[1]", "structure", "error", "null with no extension in its place")]
    assert found({"resourceType": "Patient", "_birthDate": {"extension": [{"valueDateTime": "x"}]}}) == [
        ("Patient._birthDate.extension[0].valueDateTime", "value", "error", '"x" is not a valid dateTime'),
        ("Patient._birthDate.extension[0].url", "required", "error", "required element missing")]


def test_contained_resources_are_validated_with_their_path():
    ok = {"resourceType": "Patient",
          "contained": [{"resourceType": "Organization", "id": "o1", "name": "Legekontoret"}],
          "managingOrganization": {"reference": "#o1"}}
    assert validate_resource(ok) == []
    bad = {"resourceType": "Patient", "contained": [
        {"resourceType": "Observation", "id": "o 1", "foo": 1},
        {"resourceType": "Bogus", "id": "b"}]}
    assert found(bad) == [
        ("Patient.contained[0].status", "required", "error", "required element missing"),
        ("Patient.contained[0].code", "required", "error", "required element missing"),
        ("Patient.contained[0].foo", "structure", "error", "unknown element"),
        ("Patient.contained[1]", "structure", "error",
         "Bogus is not a FHIR R4 resource type this build knows"),
        ("Patient.contained[0].id", "value", "error",
         "id 'o 1' is not a valid FHIR id: 1 to 64 letters, digits, '-' or '.'")]


@pytest.mark.parametrize("rid", ["a_b", "a b", "x" * 65, "æøå", "a/b", "Patient/1"])
def test_bad_ids(rid):
    assert found({"resourceType": "Patient", "id": rid}) == [
        ("Patient.id", "value", "error", f"id {rid!r} is not a valid FHIR id: 1 to 64 letters, digits, '-' or '.'")]


@pytest.mark.parametrize("rid", ["a", "x" * 64, "A-b.9", "123", "550e8400-e29b-41d4-a716-446655440000"])
def test_good_ids(rid):
    assert validate_resource({"resourceType": "Patient", "id": rid}) == []


def test_ids_of_resources_inside_bundles_and_parameters():
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "id": "ok"}},
        {"resource": {"resourceType": "Patient", "id": "not ok"}}]}
    assert [i.expression for i in validate_resource(bundle)] == [("Bundle.entry[1].resource.id",)]
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "p", "resource": {"resourceType": "Patient", "id": "bad_id"}}]}
    assert [i.expression for i in validate_resource(params)] == [("Parameters.parameter[0].resource.id",)]


@pytest.mark.parametrize("resource_type, expected", [
    (None, ("a resource needs a resourceType", "required")),
    ("", ("a resource needs a resourceType", "required")),
    (5, ("a resource needs a resourceType", "required")),
    ("Bogus", ("'Bogus' is not a FHIR R4 resource type", "not-supported")),
    ("patient", ("'patient' is not a FHIR R4 resource type", "not-supported")),
])
def test_resource_type(resource_type, expected):
    resource = {"id": "x"} if resource_type is None else {"resourceType": resource_type}
    issues = validate_resource(resource)
    assert [(i.diagnostics, i.code) for i in issues] == [expected]
    assert issues[0].expression == ("resourceType",)


def test_not_an_object():
    assert found([{"resourceType": "Patient"}]) == [("", "structure", "error", "a resource must be a JSON object")]  # type: ignore[arg-type]
    assert len(RESOURCE_TYPES) == 146 and "Patient" in RESOURCE_TYPES


@pytest.mark.parametrize("element, value, diagnostics", [
    ("birthDate", "1999-02-29", "'1999-02-29' is not a valid date: February 1999 has 28 days"),
    ("birthDate", "2100-02-29", "'2100-02-29' is not a valid date: February 2100 has 28 days"),
    ("birthDate", "1999-04-31", "'1999-04-31' is not a valid date: April 1999 has 30 days"),
    ("deceasedDateTime", "2021-02-30T10:00:00+01:00",
     "'2021-02-30T10:00:00+01:00' is not a valid date: February 2021 has 28 days"),
    ("birthDate", "0000-01-01", "'0000-01-01' is not a valid date: there is no year 0000"),
    ("birthDate", "0000", "'0000' is not a valid date: there is no year 0000"),
])
def test_dates_that_do_not_exist(element, value, diagnostics):
    # fhirkit checks the format only (day 01–31); a date that does not exist would break
    # date indexing later, so it is caught here.
    assert found({"resourceType": "Patient", element: value}) == [
        (f"Patient.{element}", "value", "error", diagnostics)]


def test_dates_that_exist_and_dates_elsewhere():
    assert validate_resource({"resourceType": "Patient", "birthDate": "2000-02-29"}) == []
    assert validate_resource({"resourceType": "Patient", "birthDate": "2024-02"}) == []
    assert validate_resource({**OBS, "issued": "2024-12-31T23:59:59.999Z",
                              "effectiveDateTime": "2024-11-30"}) == []
    # Found at any depth, in datatypes, lists (Timing.event) and extensions.
    request = {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
               "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": {"text": "Paracet"},
               "dosageInstruction": [{"timing": {"event": ["2021-02-28", "2021-02-29"]}}],
               "dispenseRequest": {"validityPeriod": {"start": "2021-06-31"}},
               "extension": [{"url": "http://x", "valueDate": "2023-02-29"}]}
    assert [(i.expression[0], i.diagnostics[:12]) for i in validate_resource(request)] == [
        ("MedicationRequest.dosageInstruction[0].timing.event[1]", "'2021-02-29'"),
        ("MedicationRequest.dispenseRequest.validityPeriod.start", "'2021-06-31'"),
        ("MedicationRequest.extension[0].valueDate", "'2023-02-29'")]
    # A date-looking string in an element that is not a date is left alone.
    assert validate_resource({"resourceType": "Patient", "identifier": [{"value": "2021-02-30"}],
                              "name": [{"text": "1999-02-30"}]}) == []
    assert "value" not in DATE_ELEMENTS and "birthDate" in DATE_ELEMENTS


def fnr_patient(value: str, system: str = norway.FNR) -> dict:
    return {"resourceType": "Patient", "identifier": [
        {"system": "http://example.org/mrn", "value": "123"},
        {"system": system, "value": value}]}


def test_norwegian_identifiers():
    assert validate_resource(fnr_patient("15076500565")) == []
    assert found(fnr_patient("15076500566")) == [
        ("Patient.identifier[1].value", "value", "error", "not a valid fødselsnummer: check digit 2 is wrong")]
    assert found(fnr_patient("70019950032")) == [
        ("Patient.identifier[1].value", "value", "error",
         f"not a valid fødselsnummer: this is a D-number; use system {norway.DNR}")]
    assert validate_resource(fnr_patient("70019950032", norway.DNR)) == []
    assert found(fnr_patient("974760674", norway.ENH)) == [
        ("Patient.identifier[1].value", "value", "error", "not a valid organisation number: check digit is wrong")]


def test_synthetic_numbers_follow_the_setting():
    synthetic = fnr_patient("10915596784")
    assert validate_resource(synthetic) == []
    assert validate_resource(synthetic, allow_synthetic=True) == []
    assert found(synthetic, allow_synthetic=False) == [
        ("Patient.identifier[1].value", "value", "error",
         "not a valid fødselsnummer: a synthetic test number (month + 80) is not accepted here")]


def test_identifiers_anywhere():
    practitioner_role = {
        "resourceType": "PractitionerRole",
        "practitioner": {"identifier": {"system": norway.HPR, "value": "0123"}},
        "organization": {"identifier": {"system": norway.ENH, "value": "974760673"}},
        "contained": [{"resourceType": "Practitioner", "id": "p",
                       "identifier": [{"system": norway.HPR, "value": "9144900"},
                                      {"system": norway.FNR, "value": "02013299996"}]}]}
    assert [(i.expression[0], i.diagnostics) for i in validate_resource(practitioner_role)] == [
        ("PractitionerRole.practitioner.identifier.value", "not a valid HPR number: starts with 0"),
        ("PractitionerRole.contained[0].identifier[1].value",
         "not a valid fødselsnummer: check digit 2 is wrong")]
    document = {"resourceType": "DocumentReference", "status": "current",
                "content": [{"attachment": {"contentType": "text/plain"}}],
                "masterIdentifier": {"system": norway.RESH, "value": "x1"},
                "subject": {"identifier": {"system": norway.DNR, "value": "70019950032"}}}
    assert [(i.expression[0], i.diagnostics) for i in validate_resource(document)] == [
        ("DocumentReference.masterIdentifier.value", "not a valid RESH id: not a number")]


def test_identifier_without_value_or_with_wrong_types_is_left_to_structure():
    assert validate_resource({"resourceType": "Patient", "identifier": [{"system": norway.FNR}]}) == []
    assert found({"resourceType": "Patient", "identifier": [{"system": norway.FNR, "value": 15076500565}]}) == [
        ("Patient.identifier[0].value", "structure", "error", "expected a string, found a number")]


def test_lenient_mode_keeps_only_what_makes_the_resource_unusable():
    resource = {"resourceType": "Observation", "id": "x", "foo": 1, "gender": "x",
                "code": {"text": "pulse"}, "valueString": "", "subject": {"reference": "Patient/1"},
                "identifier": [{"system": norway.FNR, "value": "15076500566"}],
                "effectiveDateTime": "2021-02-29", "focus": {"reference": 5},
                "category": [], "note": [{"text": "a"}, None]}
    strict = {(i.expression[0], i.severity) for i in validate_resource(resource)}
    lenient = {(i.expression[0], i.severity) for i in validate_resource(resource, strict=False)}
    assert {s for _, s in strict} == {"error"}
    assert {e for e, _ in strict} == {e for e, _ in lenient}       # nothing dropped
    assert lenient == {
        ("Observation.foo", "warning"),                  # unknown element
        ("Observation.gender", "warning"),
        ("Observation.status", "warning"),               # required element missing
        ("Observation.valueString", "warning"),          # empty string
        ("Observation.category", "warning"),             # empty array
        ("Observation.focus", "error"),                  # wrong JSON type: not an array
        ("Observation.note[1]", "error"),                # null in an array
        ("Observation.effectiveDateTime", "error"),      # a date that does not exist
        ("Observation.identifier[0].value", "error"),    # Norwegian identifier
    }
    assert {i.expression[0] for i in blocking(validate_resource(resource, strict=False))} == {
        "Observation.focus", "Observation.note[1]", "Observation.effectiveDateTime",
        "Observation.identifier[0].value"}
    # Format errors on dates stay errors; on codes and uris they become warnings (a code of
    # a required binding that is not in its value set stays an error: test_bindings.py).
    assert found({"resourceType": "Patient", "birthDate": "1.1.2000", "gender": " male",
                  "identifier": [{"system": "a b"}]}, strict=False) == [
        ("Patient.identifier[0].system", "value", "warning", '"a b" is not a valid uri'),
        ("Patient.gender", "value", "warning", '" male" is not a valid code'),
        ("Patient.birthDate", "value", "error", '"1.1.2000" is not a valid date')]


def test_values_orjson_cannot_write_fall_back_to_the_dict():
    assert validate_resource({**OBS, "valueQuantity": {"value": Decimal("72.50")}}) == []
    assert validate_resource({**OBS, "valueQuantity": {"value": 2**70}}) == []


def test_nesting_too_deep_is_an_issue_not_a_crash():
    depth = 500
    text = ('{"resourceType":"Questionnaire","status":"draft","item":['
            + '{"linkId":"x","type":"group","item":[' * depth + '{"linkId":"x","type":"group"}'
            + "]}" * depth + "]}")
    issues = validate_resource(orjson.loads(text))     # the web layer parses with orjson
    assert [(i.code, i.severity) for i in issues] == [("structure", "error")]
    assert "nested too deeply" in issues[0].diagnostics


def test_structure_check_can_be_replaced():
    seen = []

    def stub(resource, strict):
        seen.append((resource, strict))
        return [errors.Issue("from the stub", ("Patient",), "structure", "error")]

    issues = validate_resource({"resourceType": "Patient", "id": "a b"}, strict=False, structure=stub)
    assert [i.diagnostics for i in issues] == [
        "from the stub", "id 'a b' is not a valid FHIR id: 1 to 64 letters, digits, '-' or '.'"]
    assert seen[0][1] is False
    # fhirkit_structure takes the resource as a dict or as JSON bytes, with the same result.
    as_dict = fhirkit_structure({"resourceType": "Patient", "foo": 1})
    as_bytes = fhirkit_structure(b'{"resourceType": "Patient", "foo": 1}')
    assert as_dict == as_bytes == [errors.Issue("unknown element", ("Patient.foo",), "structure")]
    assert fhirkit_structure(b'{"resourceType":')[0].diagnostics.startswith("not a FHIR resource")


# --- the official R4 examples --------------------------------------------------------

# Conformance and terminology resources: definitions, not data a server stores on write.
DEFINITIONS = {
    "CapabilityStatement", "StructureDefinition", "ImplementationGuide", "SearchParameter",
    "MessageDefinition", "OperationDefinition", "CompartmentDefinition", "StructureMap",
    "GraphDefinition", "ExampleScenario", "CodeSystem", "ValueSet", "ConceptMap",
    "NamingSystem", "TerminologyCapabilities",
}

# The examples fhirkit finds errors in, with what it finds. A change here means the
# validator (or fhirkit) changed: look at it before updating the list.
KNOWN_INVALID = {
    # Four CodeSystem codes in v2 tables end in a no-break space (mojibake "Â\u00a0"),
    # which fhirkit counts as whitespace at the end of a code.
    "Bundle-v2-valuesets.json": {("value", "Bundle.entry[814].resource.concept[74].code")},
    # Nested items without the required linkId.
    "Questionnaire-qs1.json": {("required", "Questionnaire.item[0].item[0].linkId")},
}
EXAMPLE_COUNT = 719


@pytest.fixture(scope="module")
def examples():
    """The non-definition examples of the official R4 package, read straight from the
    tarball (a few seconds; unpacking all 5,306 files to disk takes several times longer)."""
    if not EXAMPLES_TGZ.exists():
        pytest.skip(f"the official R4 examples package is not at {EXAMPLES_TGZ} (../shared/data)")
    loaded = []
    with tarfile.open(EXAMPLES_TGZ, "r:gz") as tar:
        for member in tar:
            name = member.name.rsplit("/", 1)[-1]
            # Files are named Type-id.json: skip definitions without decompressing them twice.
            if not member.isfile() or not name.endswith(".json") or name.split("-", 1)[0] in DEFINITIONS:
                continue
            resource = orjson.loads(tar.extractfile(member).read())
            if isinstance(resource, dict) and resource.get("resourceType") not in (None, *DEFINITIONS):
                loaded.append((name, resource))
    return sorted(loaded, key=lambda item: item[0])


def test_official_examples_are_valid_except_the_known_ones(examples):
    assert len(examples) == EXAMPLE_COUNT
    invalid = {}
    for name, resource in examples:
        issues = validate_resource(resource)
        if issues:
            invalid[name] = issues
    assert sorted(invalid) == sorted(KNOWN_INVALID)
    assert all(i.severity == "error" for issues in invalid.values() for i in issues)
    for name, expected in KNOWN_INVALID.items():
        assert expected <= {(i.code, i.expression[0]) for i in invalid[name]}, name
    assert len(invalid["Bundle-v2-valuesets.json"]) == 4
    assert len(invalid["Questionnaire-qs1.json"]) == 32


def test_official_examples_pass_lenient_validation(examples):
    # Lenient mode reports the same problems with some downgraded to warnings, so only
    # the examples strict mode rejects can be rejected: neither known problem makes a
    # resource unusable, so lenient mode stores all of them.
    for name, resource in examples:
        if name in KNOWN_INVALID:
            issues = validate_resource(resource, strict=False)
            assert issues and blocking(issues) == [], name
