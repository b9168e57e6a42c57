"""Compartment membership from the R4 CompartmentDefinitions
(https://hl7.org/fhir/R4/compartmentdefinition.html)."""
from __future__ import annotations

import json

import pytest

from enjournal.fhir.compartments import COMPARTMENTS, compartment_params, compartment_types
from enjournal.fhir.index_values import Reference
from enjournal.fhir.searchparams import Registry

R = Registry.default()


def test_patient_compartment():
    assert compartment_params("Patient", "Observation") == ("subject", "performer")
    assert compartment_params("Patient", "AllergyIntolerance") == ("patient", "recorder", "asserter")
    assert compartment_params("Patient", "Patient") == ("link",)          # as the definition lists it
    assert compartment_params("Patient", "Organization") == ()
    types = compartment_types("Patient")
    assert len(types) == 66
    assert {"Observation", "Condition", "MedicationRequest", "Immunization", "Consent"} <= set(types)
    assert "Organization" not in types and "ValueSet" not in types


def test_def_means_the_compartment_resource_itself():
    assert compartment_params("Encounter", "Encounter") == ("{def}",)
    assert compartment_params("Practitioner", "Practitioner") == ("{def}",)


def test_unknown_compartment_is_empty():
    assert compartment_params("Organization", "Patient") == ()
    assert compartment_types("Organization") == ()


@pytest.mark.parametrize("compartment", COMPARTMENTS)
def test_every_listed_parameter_is_a_reference_parameter_of_its_type(compartment):
    for rt in compartment_types(compartment):
        for code in compartment_params(compartment, rt):
            if code == "{def}":
                continue
            param = R.get(rt, code)
            assert param is not None and param.type == "reference", (compartment, rt, code)


def test_observation_joins_the_patient_compartment_through_its_subject(examples_dir):
    obs = json.loads((examples_dir / "Observation-f001.json").read_text("utf-8"))
    codes = set(compartment_params("Patient", "Observation"))
    refs = {v for c, v in R.extract(obs) if c in codes and isinstance(v, Reference) and v.type == "Patient"}
    assert refs == {Reference("Patient", "f001")}
