"""The search parameter registry: official R4 definitions, custom SearchParameters, coverage
of the compiled fast path (https://hl7.org/fhir/R4/search.html)."""
from __future__ import annotations

import pytest

from enjournal import errors
from enjournal.fhir.index_values import Reference, String, Token
from enjournal.fhir.searchparams import Registry, SearchParam

R = Registry.default()
MUNICIPALITY = "http://hl7.no/fhir/StructureDefinition/no-basis-municipalitycode"


def custom(**fields) -> dict:
    sp = {"resourceType": "SearchParameter", "url": "http://enjournal.no/fhir/SearchParameter/test",
          "name": "test", "status": "active", "code": "test", "base": ["Patient"], "type": "token",
          "expression": "Patient.gender"}
    sp.update(fields)
    return {k: v for k, v in sp.items() if v is not None}


def test_official_definitions_are_all_loaded():
    assert len(R.params()) == 1375
    assert len(R.resource_types()) == 146 and "Patient" in R.resource_types()
    assert R.default() is R          # one shared instance


def test_type_specific_and_shared_parameters():
    subject = R.get("Observation", "subject")
    assert subject.type == "reference" and "Patient" in subject.targets
    assert R.get("Observation", "code").url == "http://hl7.org/fhir/SearchParameter/clinical-code"
    assert R.get("Patient", "_id").base == ("Resource",)
    assert R.get("Patient", "_lastUpdated").expression == "Resource.meta.lastUpdated"
    assert R.get("Patient", "_text").base == ("DomainResource",)
    assert R.get("Bundle", "_text") is None           # Bundle is not a DomainResource
    assert R.get("Resource", "_tag").type == "token"
    assert R.get("Patient", "no-such-param") is None


def test_for_type_merges_resource_level_parameters():
    params = R.for_type("Observation")
    assert {"code", "subject", "patient", "code-value-quantity", "_id", "_lastUpdated", "_tag",
            "_profile", "_security", "_source", "_text", "_content"} <= set(params)
    assert "_text" not in R.for_type("Bundle")
    params["code"] = None                           # a fresh dict: the registry is not changed
    assert R.for_type("Observation")["code"] is not None


def test_composite_components_resolve_by_url():
    composites = [p for p in R.params() if p.type == "composite"]
    assert len(composites) == 46
    for p in composites:
        assert all(R.by_url(url) is not None for url, _ in p.components), p.url
    cvq = R.get("Observation", "code-value-quantity")
    assert [R.by_url(u).type for u, _ in cvq.components] == ["token", "quantity"]


def test_fast_path_coverage(capsys):
    """How many of the 1,375 definitions compile to plain path walkers, vs. fhirpathpy."""
    report = R.compile_report()
    total = report["fast"] + report["fallback"] + report["not_indexed"]
    assert total == 1375
    indexed = report["fast"] + report["fallback"]
    with capsys.disabled():
        print(f"\nsearch parameters: {report['fast']} fast path, {report['fallback']} fhirpathpy "
              f"fallback, {report['not_indexed']} not indexed (special/no expression); "
              f"{100 * report['fast'] / indexed:.1f}% of indexed parameters compiled")
        for url, branches in report["fallback_params"].items():
            print(f"  fallback: {url}: {branches}")
    assert report["fast"] / indexed > 0.95
    assert report["not_indexed"] == 4           # _text, _content, _query, near


def test_fingerprint_is_stable_and_changes_with_definitions():
    assert R.fingerprint == Registry.default().fingerprint
    assert R.with_custom(custom()).fingerprint != R.fingerprint


def test_custom_parameter_is_added_without_changing_the_original():
    sp = custom(code="municipality", type="token",
                expression=f"Patient.address.extension('{MUNICIPALITY}').value")
    r2 = R.with_custom(sp)
    assert r2.get("Patient", "municipality").expression.startswith("Patient.address")
    assert r2.by_url(sp["url"]).code == "municipality"
    assert R.get("Patient", "municipality") is None
    patient = {"resourceType": "Patient", "id": "p1", "address": [{"city": "Tromsø", "extension": [
        {"url": MUNICIPALITY, "valueCoding": {"system": "urn:oid:2.16.578.1.12.4.1.1.3402", "code": "5401"}}]}]}
    assert ("municipality", Token("urn:oid:2.16.578.1.12.4.1.1.3402", "5401", None)) in r2.extract(patient)
    assert not any(code == "municipality" for code, _ in R.extract(patient))


def test_custom_parameter_replaces_the_official_one_for_its_base_only():
    r2 = R.with_custom(custom(code="code", base=["Condition"], expression="Condition.category"))
    assert r2.get("Condition", "code").expression == "Condition.category"
    assert r2.get("Observation", "code").url == "http://hl7.org/fhir/SearchParameter/clinical-code"
    condition = {"resourceType": "Condition", "id": "c", "code": {"coding": [{"code": "x"}]},
                 "category": [{"coding": [{"system": "s", "code": "problem-list-item"}]}]}
    assert [v for c, v in r2.extract(condition) if c == "code"] == [Token("s", "problem-list-item")]


def test_updating_and_retiring_a_custom_parameter():
    r2 = R.with_custom(custom(expression="Patient.gender"))
    r3 = r2.with_custom(custom(expression="Patient.active"))
    assert r3.get("Patient", "test").expression == "Patient.active"
    r4 = r3.with_custom(custom(status="retired"))
    assert r4.get("Patient", "test") is None
    assert r4.fingerprint == R.fingerprint
    assert R.with_custom(custom(status="draft")).get("Patient", "test") is None


def test_custom_resource_level_parameter_applies_to_every_type():
    r2 = R.with_custom(custom(code="_versionid", base=["Resource"], expression="Resource.meta.versionId"))
    for rt in ("Patient", "Bundle", "Observation"):
        assert r2.get(rt, "_versionid") is not None
        assert ("_versionid", Token(None, "3")) in r2.extract({"resourceType": rt, "id": "a", "meta": {"versionId": "3"}})


@pytest.mark.parametrize("fields, where", [
    ({"type": "text"}, "SearchParameter.type"),
    ({"type": "special"}, "SearchParameter.type"),
    ({"code": "has space"}, "SearchParameter.code"),
    ({"code": None}, "SearchParameter.code"),
    ({"base": ["Patsient"]}, "SearchParameter.base"),
    ({"base": []}, "SearchParameter.base"),
    ({"status": "wild"}, "SearchParameter.status"),
    ({"url": None}, "SearchParameter.url"),
    ({"target": ["Nobody"], "type": "reference", "expression": "Patient.generalPractitioner"},
     "SearchParameter.target"),
    ({"expression": None}, "SearchParameter.expression"),
    ({"expression": "Patient.nmae"}, "SearchParameter.expression"),              # no such element
    ({"expression": "Patient.name.("}, "SearchParameter.expression"),            # not FHIRPath
    ({"expression": "Patient.name", "type": "date"}, "SearchParameter.expression"),  # never a date
    ({"type": "composite", "expression": "Patient",
      "component": [{"definition": "http://example.org/none", "expression": "gender"},
                    {"definition": "http://hl7.org/fhir/SearchParameter/Patient-birthdate", "expression": "birthDate"}]},
     "SearchParameter.component"),
    ({"resourceType": "Patient"}, "SearchParameter.resourceType"),
])
def test_invalid_custom_parameter_is_rejected_with_a_location(fields, where):
    with pytest.raises(errors.Invalid) as err:
        R.with_custom(custom(**fields))
    assert err.value.issues[0].expression == (where,)


def test_custom_parameter_using_the_fhirpath_fallback():
    """Outside the compiled subset (``first()``), the expression is still honoured."""
    r2 = R.with_custom(custom(code="first-given", type="string", expression="Patient.name.given.first()"))
    assert "first-given" in r2.extractor("Patient").fallbacks
    values = [v for c, v in r2.extract({"resourceType": "Patient", "name": [{"given": ["Ærlig", "Kari"]}]})
              if c == "first-given"]
    assert [v.exact for v in values] == ["Ærlig"]


def test_searchparam_from_resource_keeps_what_the_server_needs():
    p = SearchParam.from_resource(custom(type="reference", expression="Patient.generalPractitioner",
                                         target=["Practitioner"], modifier=["identifier"]))
    assert (p.targets, p.modifiers, p.base) == (("Practitioner",), ("identifier",), ("Patient",))


def test_custom_parameter_on_bundle_entries_of_one_type():
    """``ofType``/``as`` on a resource inside a Bundle compiles to a resourceType filter."""
    for expression in ("Bundle.entry.resource.ofType(Composition).subject",
                       "(Bundle.entry.resource as Composition).subject"):
        r2 = R.with_custom(custom(code="composition-subject", base=["Bundle"], type="reference",
                                  expression=expression, target=["Patient"]))
        assert r2.extractor("Bundle").fallbacks == {}
        bundle = {"resourceType": "Bundle", "type": "document", "entry": [
            {"resource": {"resourceType": "Composition", "subject": {"reference": "Patient/p1"}}},
            {"resource": {"resourceType": "Observation", "subject": {"reference": "Patient/p2"}}}]}
        assert [v for c, v in r2.extract(bundle) if c == "composition-subject"] == [Reference("Patient", "p1")]


def test_fallback_understands_resolve_is():
    """fhirpathpy has no resolve(): ``where(resolve() is X)`` is rewritten to a reference test."""
    r2 = R.with_custom(custom(code="first-patient-performer", base=["Observation"], type="reference",
                              expression="Observation.performer.where(resolve() is Patient).first()"))
    assert "first-patient-performer" in r2.extractor("Observation").fallbacks
    obs = {"resourceType": "Observation", "performer": [{"reference": "Practitioner/d1"},
                                                        {"reference": "Patient/p1"}, {"reference": "Patient/p2"}]}
    assert [v for c, v in r2.extract(obs) if c == "first-patient-performer"] == [Reference("Patient", "p1")]


BIRTH_PLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"


@pytest.mark.parametrize("expression", [
    f"Patient.extension('{BIRTH_PLACE}').value.city",                 # value[x]: only Address has a city
    f"Patient.extension('{BIRTH_PLACE}').value.as(Address).city",
    f"(Patient.extension('{BIRTH_PLACE}').value as Address).city",
    f"Patient.extension('{BIRTH_PLACE}').value.where(city != '').city",     # fhirpathpy
    f"Patient.extension('{BIRTH_PLACE}').value.where(country='NO').city",
])
def test_custom_parameter_through_a_choice_element_narrows_to_the_types_with_that_child(expression):
    r2 = R.with_custom(custom(code="birthplace", type="string", expression=expression))
    if "!=" not in expression:
        assert r2.extractor("Patient").fallbacks == {}        # compiled: reads valueAddress.city
    patient = {"resourceType": "Patient", "extension": [
        {"url": BIRTH_PLACE, "valueAddress": {"city": "Bodø", "country": "NO"}},
        {"url": BIRTH_PLACE, "valueString": "Oslo"},
        {"url": "http://example.org/other", "valueAddress": {"city": "Narvik", "country": "NO"}}]}
    assert [v for c, v in r2.extract(patient) if c == "birthplace"] == [String("bodø", "Bodø")]


def test_choice_narrowing_keeps_every_type_with_the_child():
    """``Observation.value.code``: Quantity and its kin have a ``code``, so all of them are read."""
    r2 = R.with_custom(custom(code="value-unit", base=["Observation"], expression="Observation.value.code"))
    assert r2.extractor("Observation").fallbacks == {}
    obs = {"resourceType": "Observation", "valueQuantity": {"value": 1, "code": "mg"}}
    assert [v for c, v in r2.extract(obs) if c == "value-unit"] == [Token(None, "mg")]
    obs = {"resourceType": "Observation", "valueCodeableConcept": {"coding": [{"code": "x"}]}}
    assert [v for c, v in r2.extract(obs) if c == "value-unit"] == []


@pytest.mark.parametrize("expression", [
    f"Patient.extension('{BIRTH_PLACE}').value.citty",              # no type of value[x] has it
    f"Patient.extension('{BIRTH_PLACE}').value.city.town",          # Address.city is a string
    f"Patient.extension('{BIRTH_PLACE}').value.as(HumanName).city",
])
def test_choice_element_child_that_no_type_has_is_rejected(expression):
    with pytest.raises(errors.Invalid) as err:
        R.with_custom(custom(code="birthplace", type="string", expression=expression))
    assert err.value.issues[0].expression == ("SearchParameter.expression",)
