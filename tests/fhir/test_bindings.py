"""Required bindings (fhir/bindings.py): codes outside their R4 value set, where they are
reported and what the message says; and what passes."""
from __future__ import annotations

import pytest

from enjournal.fhir import bindings
from enjournal.fhir.validation import blocking, validate_resource

OBSERVATION_STATUS = "http://hl7.org/fhir/ValueSet/observation-status"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
SNOMED = "http://snomed.info/sct"

GOOD_OBSERVATION = {
    "resourceType": "Observation", "status": "final",
    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                              "code": "vital-signs"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": "Puls"},
    "subject": {"reference": "Patient/1", "identifier": {"use": "official", "value": "1"}},
    "effectiveDateTime": "2024-03-01T10:00:00+01:00",
    "valueQuantity": {"value": 72, "comparator": "<", "unit": "/min", "system": "http://unitsofmeasure.org",
                      "code": "/min"},
    "component": [{"code": {"text": "x"}, "valueQuantity": {"value": 1, "comparator": ">="}}],
    "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Puls 72</div>"},
}


def where(resource: dict) -> list[str]:
    return [i.expression[0] for i in bindings.check(resource)]


def test_a_bad_status_is_reported_with_the_value_set_and_some_of_its_codes():
    [issue] = bindings.check({**GOOD_OBSERVATION, "status": "bogus"})
    assert issue.expression == ("Observation.status",)
    assert (issue.code, issue.severity) == ("code-invalid", "error")
    # eight codes: the first four in the code system's order, then "..."
    assert issue.diagnostics == (f"'bogus' is not in the required value set {OBSERVATION_STATUS} "
                                 "(registered, preliminary, final, amended, ...)")


def test_a_small_value_set_is_listed_whole():
    [issue] = bindings.check({"resourceType": "Patient", "gender": "mann"})
    assert issue.expression == ("Patient.gender",)
    assert issue.diagnostics == ("'mann' is not in the required value set "
                                 "http://hl7.org/fhir/ValueSet/administrative-gender (male, female, other, unknown)")


def test_every_bound_code_of_a_good_resource_passes():
    assert bindings.check(GOOD_OBSERVATION) == []
    assert bindings.check({"resourceType": "Patient", "gender": "female", "active": True,
                           "telecom": [{"system": "phone", "use": "mobile", "value": "+47 99999999"}],
                           "name": [{"use": "official", "family": "Nordmann"}],
                           "address": [{"use": "home", "type": "physical"}],
                           "contact": [{"gender": "male", "telecom": [{"system": "email"}]}]}) == []


@pytest.mark.parametrize("resource, expression", [
    # datatypes inside a resource: ContactPoint, HumanName, Identifier, Address
    ({"resourceType": "Patient", "telecom": [{"system": "telefon", "value": "1"}]}, "Patient.telecom[0].system"),
    ({"resourceType": "Patient", "telecom": [{"system": "phone"}, {"system": "phone", "use": "jobb"}]},
     "Patient.telecom[1].use"),
    ({"resourceType": "Patient", "name": [{"use": "kallenavn"}]}, "Patient.name[0].use"),
    ({"resourceType": "Patient", "identifier": [{"use": "offisiell"}]}, "Patient.identifier[0].use"),
    ({"resourceType": "Patient", "address": [{"type": "hjem"}]}, "Patient.address[0].type"),
    # a backbone element, and a datatype inside it
    ({"resourceType": "Patient", "contact": [{"gender": "mann"}]}, "Patient.contact[0].gender"),
    ({"resourceType": "Patient", "link": [{"other": {"reference": "Patient/2"}, "type": "samme"}]},
     "Patient.link[0].type"),
    # a choice element (value[x] as Quantity) and the Quantity in a component
    ({**GOOD_OBSERVATION, "valueQuantity": {"value": 5, "comparator": "=="}}, "Observation.valueQuantity.comparator"),
    ({**GOOD_OBSERVATION, "component": [{"code": {"text": "x"}, "valueQuantity": {"comparator": "~"}}]},
     "Observation.component[0].valueQuantity.comparator"),
    # an Identifier inside a Reference, and the Narrative every DomainResource has
    ({**GOOD_OBSERVATION, "subject": {"identifier": {"use": "vanlig"}}}, "Observation.subject.identifier.use"),
    ({**GOOD_OBSERVATION, "text": {"status": "laget", "div": "<div>x</div>"}}, "Observation.text.status"),
    # Timing.repeat inside Dosage inside MedicationRequest
    ({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
      "dosageInstruction": [{"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "dag"}}}]},
     "MedicationRequest.dosageInstruction[0].timing.repeat.periodUnit"),
    ({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
      "dosageInstruction": [{"timing": {"repeat": {"when": ["MORN", "FROKOST"]}}}]},
     "MedicationRequest.dosageInstruction[0].timing.repeat.when[1]"),
    # a contentReference: Questionnaire.item.item is Questionnaire.item again
    ({"resourceType": "Questionnaire", "status": "draft",
      "item": [{"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "tekst"}]}]},
     "Questionnaire.item[0].item[0].type"),
    # inside an extension's value, and inside the extension of a primitive (_status)
    ({**GOOD_OBSERVATION, "extension": [{"url": "http://example.org/x", "valueQuantity": {"comparator": "~"}}]},
     "Observation.extension[0].valueQuantity.comparator"),
    ({**GOOD_OBSERVATION, "_status": {"extension": [{"url": "http://example.org/x",
                                                     "valueContactPoint": {"system": "brevdue"}}]}},
     "Observation._status.extension[0].valueContactPoint.system"),
])
def test_a_bad_code_anywhere_is_reported_at_its_element(resource, expression):
    assert where(resource) == [expression]


def test_resources_inside_resources_are_checked_by_their_own_type():
    patient = {"resourceType": "Patient", "gender": "male",
               "contained": [{"resourceType": "Observation", "id": "o", "status": "ferdig", "code": {"text": "x"}}]}
    assert where(patient) == ["Patient.contained[0].status"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "gender": "male"},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {**GOOD_OBSERVATION, "status": "bogus"},
         "request": {"method": "PUT", "url": "Observation/1"}},
        {"resource": {"resourceType": "Patient", "gender": "kvinne"},
         "request": {"method": "SEND", "url": "Patient"}}]}
    assert where(bundle) == ["Bundle.entry[1].resource.status", "Bundle.entry[2].resource.gender",
                             "Bundle.entry[2].request.method"]
    assert where({**bundle, "type": "samling"}) == ["Bundle.type", *where(bundle)]
    parameters = {"resourceType": "Parameters", "parameter": [
        {"name": "p", "part": [{"name": "q", "resource": {"resourceType": "Patient", "gender": "x"}}]}]}
    assert where(parameters) == ["Parameters.parameter[0].part[0].resource.gender"]


def test_a_codeable_concept_needs_a_coding_from_the_value_set():
    def condition(status: dict) -> dict:
        return {"resourceType": "Condition", "subject": {"reference": "Patient/1"}, "clinicalStatus": status}

    # a code of the value set's own system, or one without a system that is in the set
    assert bindings.check(condition({"coding": [{"system": CLINICAL, "code": "active"}]})) == []
    assert bindings.check(condition({"coding": [{"code": "resolved"}]})) == []
    # another system beside it is fine
    assert bindings.check(condition({"coding": [{"system": SNOMED, "code": "55561003"},
                                                {"system": CLINICAL, "code": "active"}]})) == []
    # a wrong code of the set's system: reported at that code
    [issue] = bindings.check(condition({"coding": [{"system": SNOMED, "code": "55561003"},
                                                   {"system": CLINICAL, "code": "aktiv"}]}))
    assert issue.expression == ("Condition.clinicalStatus.coding[1].code",)
    assert issue.diagnostics.startswith("'aktiv' is not in the required value set "
                                        "http://hl7.org/fhir/ValueSet/condition-clinical (active, recurrence")
    # only other systems: the concept is not from the value set (required: it SHALL be)
    [issue] = bindings.check(condition({"coding": [{"system": SNOMED, "code": "55561003"}]}))
    assert issue.expression == ("Condition.clinicalStatus",)
    assert "no coding is from the required value set" in issue.diagnostics
    assert f"found {SNOMED}|55561003" in issue.diagnostics
    # words only are not a code from the value set either
    [issue] = bindings.check(condition({"text": "aktiv"}))
    assert issue.expression == ("Condition.clinicalStatus",)
    assert issue.diagnostics.startswith("no code: a coding from the required value set")


def test_what_the_binding_check_leaves_to_others():
    # wrong JSON types and surrounding whitespace are the structure check's issues
    assert bindings.check({"resourceType": "Patient", "gender": 5, "telecom": [{"system": ["phone"]}]}) == []
    assert bindings.check({"resourceType": "Patient", "gender": " male"}) == []
    assert where({"resourceType": "Patient", "gender": " mann"}) == ["Patient.gender"]
    # a primitive extension in place of the value
    assert bindings.check({**GOOD_OBSERVATION, "_status": {"extension": [
        {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]}}) == []
    # unknown elements and resource types are not walked
    assert bindings.check({"resourceType": "Patient", "gendre": "mann"}) == []
    assert bindings.check({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Pasient",
                                                                             "gender": "mann"}}]}) == []


def test_value_sets_that_cannot_be_enumerated_are_not_checked():
    checker = bindings.default()
    assert set(checker.skipped) == {
        "http://hl7.org/fhir/ValueSet/mimetypes", "http://hl7.org/fhir/ValueSet/ucum-units",
        "http://hl7.org/fhir/ValueSet/currencies", "http://loinc.org/vs/LL379-9"}
    assert bindings.check({"resourceType": "Binary", "contentType": "tekst/vanlig"}) == []
    assert bindings.check({"resourceType": "Invoice", "status": "issued",
                           "totalNet": {"value": 1, "currency": "KRONER"}}) == []
    # while listed codes of a system outside the package are checked (units-of-time: UCUM)
    assert checker.value_sets["http://hl7.org/fhir/ValueSet/units-of-time"].listed == (
        "s", "min", "h", "d", "wk", "mo", "a")


def test_value_sets_are_expanded_through_imports_and_several_systems():
    checker = bindings.default()
    # all-types = resource types + data types + abstract types, imported from their value sets
    all_types = checker.value_sets["http://hl7.org/fhir/ValueSet/all-types"]
    assert {"Patient", "HumanName", "DomainResource"} <= all_types.codes
    # event-timing: FHIR's own codes and v3 TimingEvent
    when = checker.value_sets["http://hl7.org/fhir/ValueSet/event-timing"]
    assert {"MORN", "AC", "PCM"} <= when.codes and len(when.systems) == 2
    assert where({"resourceType": "OperationDefinition", "name": "x", "status": "draft", "kind": "operation",
                  "code": "x", "system": False, "type": False, "instance": False,
                  "parameter": [{"name": "a", "use": "in", "min": 0, "max": "1", "type": "Pasient"}]}) == [
        "OperationDefinition.parameter[0].type"]


def test_the_write_path_refuses_a_bad_code_in_lenient_mode_too():
    for strict in (True, False):
        issues = validate_resource({"resourceType": "Patient", "gender": "mann"}, strict=strict)
        assert [(i.expression[0], i.code) for i in blocking(issues)] == [("Patient.gender", "code-invalid")]
    assert validate_resource(GOOD_OBSERVATION) == []


def test_nesting_too_deep_is_not_a_crash():
    item: dict = {"linkId": "x", "type": "tekst"}
    for _ in range(2000):
        item = {"linkId": "x", "type": "group", "item": [item]}
    questionnaire = {"resourceType": "Questionnaire", "status": "draft", "item": [item]}
    assert bindings.check(questionnaire) == []        # too deep to reach; fhirkit refuses it


def test_a_coding_element_is_checked_by_its_system():
    # No R4 base element of type Coding has a required binding; a table with one shows the rule.
    types = {"Thing": {"kind": ["Coding"], "value[x]": ["string", "Coding"]}, "Coding": {},
             "Extension": {"url": ["uri"]}}
    data = {"bindings": {"Thing": {"kind": [["Coding"], "http://example.org/vs"],
                                   "value[x]": [["string", "Coding"], "http://example.org/vs"]}},
            "valueSets": {"http://example.org/vs": [["http://example.org/a", ["x", "y"]],
                                                    ["http://example.org/b", ["z"]]]},
            "skipped": {}}
    checker = bindings.Bindings(types, data, frozenset({"Thing"}))

    def issues(thing: dict) -> list[tuple[str, str]]:
        return [(i.expression[0], i.diagnostics) for i in checker.check({"resourceType": "Thing", **thing})]

    assert issues({"kind": {"system": "http://example.org/b", "code": "z"}}) == []
    assert issues({"kind": {"code": "y"}}) == []                    # no system: any of the set's codes
    assert issues({"kind": {"system": "http://example.org/b", "code": "x"}}) == [
        ("Thing.kind.code", "'x' is not in the required value set http://example.org/vs (z)")]
    assert issues({"kind": {"system": "http://example.org/c", "code": "x"}}) == [
        ("Thing.kind", "http://example.org/c|x is not in the required value set http://example.org/vs: "
                       "its codes are from http://example.org/a, http://example.org/b (x, y, z)")]
    # a choice element checks each type by its own rule
    assert [e for e, _ in issues({"valueString": "q"})] == ["Thing.valueString"]
    assert [e for e, _ in issues({"valueCoding": {"system": "http://example.org/a", "code": "q"}})] == [
        "Thing.valueCoding.code"]
