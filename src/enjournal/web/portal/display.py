"""FHIR data in words for the portal's pages: names, dates and one line per resource.
Pure functions over resource dicts (no I/O)."""
from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

OSLO = ZoneInfo("Europe/Oslo")


def person_name(resource: dict) -> str:
    """"Given Family" of a Patient, RelatedPerson or Practitioner (the official name first)."""
    names = resource.get("name")
    if isinstance(names, dict):
        names = [names]
    if not isinstance(names, list) or not names:
        return ""
    chosen = next((n for n in names if isinstance(n, dict) and n.get("use") == "official"), names[0])
    if not isinstance(chosen, dict):
        return ""
    if chosen.get("text"):
        return str(chosen["text"])
    return " ".join([*map(str, chosen.get("given") or []), str(chosen.get("family") or "")]).strip()


def concept_text(concept: Any) -> str:
    """The words of a CodeableConcept: its text, else the first coding's display or code."""
    if isinstance(concept, list):
        return ", ".join(t for t in (concept_text(c) for c in concept) if t)
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and (coding.get("display") or coding.get("code")):
            return str(coding.get("display") or coding.get("code"))
    return ""


def when(value: Any) -> str:
    """A FHIR date or dateTime as Norwegians write it: 31.10.2026 or 31.10.2026 kl. 14:05."""
    if not isinstance(value, str) or len(value) < 4:
        return ""
    if len(value) == 4:
        return value
    if len(value) == 7:
        return f"{value[5:7]}.{value[:4]}"
    if len(value) == 10:
        return f"{value[8:10]}.{value[5:7]}.{value[:4]}"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value[:10]
    if moment.tzinfo is not None:
        moment = moment.astimezone(OSLO)
    return moment.strftime("%d.%m.%Y kl. %H:%M")


def when_ms(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, OSLO).strftime("%d.%m.%Y kl. %H:%M")


_DATE_KEYS = ("effectiveDateTime", "occurrenceDateTime", "recordedDate", "onsetDateTime", "authoredOn",
              "issued", "date", "dateAsserted", "created", "recorded")


def describe(resource: dict) -> tuple[str, str]:
    """(what, when) of one resource, in words, for a list on a page."""
    kind = resource.get("resourceType", "")
    what = ""
    if kind == "Observation":
        what = concept_text(resource.get("code"))
        quantity = resource.get("valueQuantity")
        if isinstance(quantity, dict) and "value" in quantity:
            what += f": {quantity['value']} {quantity.get('unit') or ''}".rstrip()
        elif resource.get("valueString"):
            what += f": {resource['valueString']}"
    elif kind in ("MedicationStatement", "MedicationRequest", "MedicationDispense"):
        what = concept_text(resource.get("medicationCodeableConcept")) or \
            str((resource.get("medicationReference") or {}).get("display") or "")
        dosage = resource.get("dosage") or resource.get("dosageInstruction") or []
        if dosage and isinstance(dosage[0], dict) and dosage[0].get("text"):
            what += f" – {dosage[0]['text']}"
    elif kind == "Immunization":
        what = concept_text(resource.get("vaccineCode"))
    elif kind == "Encounter":
        what = concept_text(resource.get("type")) or concept_text(resource.get("class")) or "Kontakt"
        provider = (resource.get("serviceProvider") or {}).get("display")
        if provider:
            what += f", {provider}"
    elif kind in ("DocumentReference", "Composition"):
        what = resource.get("description") or resource.get("title") or concept_text(resource.get("type"))
    elif kind in ("RelatedPerson", "Practitioner", "Patient"):
        what = person_name(resource)
    elif kind == "Flag":
        what = concept_text(resource.get("code"))
    else:
        what = concept_text(resource.get("code")) or concept_text(resource.get("type")) or \
            str(resource.get("description") or resource.get("title") or kind)
    moment = next((resource[k] for k in _DATE_KEYS if isinstance(resource.get(k), str)), None)
    if moment is None and isinstance(resource.get("period"), dict):
        moment = resource["period"].get("start")
    if moment is None and isinstance(resource.get("performedPeriod"), dict):
        moment = resource["performedPeriod"].get("start")
    return what or kind, when(moment)
