"""The citizen's own entries (egne registreringer), pure functions.

- next of kin and other contacts: RelatedPerson;
- illnesses in the citizen's own words: Condition with ``asserter`` = the Patient;
- sight or hearing needs, and interpreter need with language: Observation (one of each).

Every one carries the tag ``OWN_ENTRY`` (meta.tag), which is what lets a citizen write these
types at all (``access.policy.content_problem``) and what makes the access facts ignore them: a
contact the citizen enters is never a parent or a proxy (``access.facts``).
"""
from __future__ import annotations

import re
from typing import Any

from ... import errors
from ...access.policy import OWN_ENTRY, is_own_entry
from . import codes
from .critical import clean_text

_PHONE = re.compile(r"^\+?[0-9 ]{8,16}$")


def tag(code: str) -> dict:
    return {"tag": [codes.own_coding(code)]}


def kind_of(resource: dict) -> str | None:
    """The own-entry kind of ``resource`` (contact, illness, needs, interpreter, donor-card)."""
    if not is_own_entry(resource):
        return None
    for t in resource["meta"]["tag"]:
        if t.get("system") == OWN_ENTRY:
            return t.get("code")
    return None


def phone_number(value: Any, field: str = "phone", required: bool = True) -> str | None:
    value = clean_text(value, field, required=required, limit=20)
    if value is None:
        return None
    if not _PHONE.match(value) or sum(ch.isdigit() for ch in value) < 8:
        raise errors.Invalid(f"'{value}' is not a phone number (at least 8 digits, e.g. +47 912 34 567)", field)
    return value


def contact(patient_id: str, name: Any, relationship: Any, phone: Any, note: Any = None,
            next_of_kin: bool = True) -> dict:
    name = clean_text(name, "name", limit=200)
    relationship = clean_text(relationship, "relationship", limit=100)
    phone = phone_number(phone)
    resource = {
        "resourceType": "RelatedPerson", "meta": tag("contact"), "active": True,
        "patient": {"reference": f"Patient/{patient_id}"},
        "relationship": [{"text": relationship}],
        "name": [{"text": name}],
        "telecom": [{"system": "phone", "value": phone}],
    }
    if next_of_kin:
        resource["relationship"].append({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131",
                                                     "code": "N", "display": "Next-of-Kin"}]})
    note = clean_text(note, "note", required=False, limit=500)
    if note:
        resource["extension"] = [{"url": f"{codes.SD}/own-entry-note", "valueString": note}]
    return resource


def name_text(name: dict) -> str:
    """A HumanName as one line: its text, else given names and family name."""
    return name.get("text") or " ".join(name.get("given", []) + [name.get("family", "")]).strip()


def contact_view(resource: dict) -> dict:
    rel = [r.get("text") for r in resource.get("relationship", []) if r.get("text")]
    phones = [t.get("value") for t in resource.get("telecom", []) if t.get("system") == "phone"]
    return {"id": resource.get("id"), "name": name_text((resource.get("name") or [{}])[0]),
            "relationship": rel[0] if rel else None, "phone": phones[0] if phones else None,
            "own_entry": is_own_entry(resource),
            "note": next((e.get("valueString") for e in resource.get("extension", [])
                          if e.get("url") == f"{codes.SD}/own-entry-note"), None)}


def illness(patient_id: str, text: Any, now: str) -> dict:
    text = clean_text(text, "text", limit=500)
    return {
        "resourceType": "Condition", "meta": tag("illness"),
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "active"}]},
        "category": [{"coding": [codes.own_coding("illness")]}],
        "code": {"text": text}, "subject": {"reference": f"Patient/{patient_id}"},
        "asserter": {"reference": f"Patient/{patient_id}"}, "recordedDate": now,
    }


def illness_view(resource: dict) -> dict:
    return {"id": resource.get("id"), "text": (resource.get("code") or {}).get("text"),
            "recorded": resource.get("recordedDate")}


def needs(patient_id: str, sight: Any, hearing: Any, text: Any, now: str) -> dict:
    for field, value in (("sight", sight), ("hearing", hearing)):
        if not isinstance(value, bool):
            raise errors.Invalid(f"{field} must be true or false", field)
    text = clean_text(text, "text", required=False, limit=500)
    resource = {
        "resourceType": "Observation", "meta": tag("needs"), "status": "final",
        "code": {"coding": [codes.own_coding("needs")], "text": codes.OWN_CODES["needs"][0]},
        "subject": {"reference": f"Patient/{patient_id}"}, "effectiveDateTime": now,
        "component": [{"code": {"coding": [codes.own_coding("sight")]}, "valueBoolean": sight},
                      {"code": {"coding": [codes.own_coding("hearing")]}, "valueBoolean": hearing}],
    }
    if text:
        resource["valueString"] = text
    return resource


def needs_view(resource: dict) -> dict:
    parts = _components(resource)
    return {"id": resource.get("id"), "sight": bool(parts.get("sight")), "hearing": bool(parts.get("hearing")),
            "text": resource.get("valueString")}


def interpreter(patient_id: str, needed: Any, language: Any, now: str) -> dict:
    if not isinstance(needed, bool):
        raise errors.Invalid("needed must be true or false", "needed")
    language = clean_text(language, "language", required=needed, limit=80)
    resource = {
        "resourceType": "Observation", "meta": tag("interpreter"), "status": "final",
        "code": {"coding": [codes.own_coding("interpreter")], "text": codes.OWN_CODES["interpreter"][0]},
        "subject": {"reference": f"Patient/{patient_id}"}, "effectiveDateTime": now,
        "valueBoolean": needed,
    }
    if needed and language:
        resource["component"] = [{"code": {"coding": [codes.own_coding("language")]}, "valueString": language}]
    return resource


def interpreter_view(resource: dict) -> dict:
    parts = _components(resource)
    return {"id": resource.get("id"), "needed": bool(resource.get("valueBoolean")), "language": parts.get("language")}


def _components(resource: dict) -> dict:
    out = {}
    for comp in resource.get("component", []):
        for coding in (comp.get("code") or {}).get("coding", []):
            if coding.get("system") == OWN_ENTRY:
                out[coding.get("code")] = comp.get("valueBoolean", comp.get("valueString"))
    return out
