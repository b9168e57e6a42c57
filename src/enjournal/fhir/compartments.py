"""Compartment membership from the R4 CompartmentDefinitions (Patient, Encounter,
RelatedPerson, Practitioner, Device).

A resource is in, say, Patient/123's compartment when one of the listed search parameters
of its type refers to Patient/123; ``{def}`` means the compartment's own resource (Patient/123
itself). See https://hl7.org/fhir/R4/compartmentdefinition.html.
"""
from __future__ import annotations

import functools
import json
from importlib import resources

COMPARTMENTS = ("Patient", "Encounter", "RelatedPerson", "Practitioner", "Device")
SELF = "{def}"


@functools.cache
def _definition(compartment: str) -> dict[str, tuple[str, ...]]:
    """Resource type -> parameter codes, for the types that can be in the compartment."""
    if compartment not in COMPARTMENTS:
        return {}                  # e.g. Organization: no compartment, so nothing is in it
    name = f"compartment-{compartment[0].lower()}{compartment[1:]}.json"
    data = json.loads((resources.files("enjournal.fhir") / "data" / name).read_text("utf-8"))
    return {r["code"]: tuple(r["param"]) for r in data["resource"] if r.get("param")}


def compartment_params(compartment: str, resource_type: str) -> tuple[str, ...]:
    """The search parameter codes that place a ``resource_type`` in ``compartment``, as the
    CompartmentDefinition lists them (``("{def}",)`` for Encounter in the Encounter compartment;
    Patient lists ``link``). Empty when it can never be in it or there is no such compartment."""
    return _definition(compartment).get(resource_type, ())


def compartment_types(compartment: str) -> tuple[str, ...]:
    """Resource types that can be in ``compartment``, in definition order."""
    return tuple(_definition(compartment))
