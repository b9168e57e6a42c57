"""Critical information entries (kritisk informasjon) as FHIR resources, pure functions.

Hypersensitivities (drug reaction, other allergy) are AllergyIntolerance; the other
categories are Flag. Each carries its category (``codes.CATEGORIES``), who registered it and
when (AllergyIntolerance.recorder/recordedDate, Flag.author/period.start) and when it was
last confirmed and by whom (extension ``last-confirmed``). The Norwegian verification level is
the extension ``verification-level`` beside the R4 verificationStatus it maps to
(``codes.VERIFICATION``). Who may write which category is the guard's rule
(``access.policy.content_problem``), not checked here.
"""
from __future__ import annotations

import copy
from typing import Any

from ... import errors
from ...access.policy import critical_categories
from . import codes

_CRITICALITY = ("low", "high", "unable-to-assess")
MAX_TEXT = 1000


def verification_level(value: str | None) -> str:
    """The Norwegian level (mistenkt, sannsynlig, bekreftet, avkreftet) for ``value`` (also
    accepted: the English and R4 names); raises Invalid(expression="verification")."""
    key = (value or "bekreftet").strip().lower()
    key = codes.VERIFICATION_ALIASES.get(key, key)
    if key not in codes.VERIFICATION or key == "slettet":
        raise errors.Invalid(f"'{value}' is not a verification level: mistenkt, sannsynlig, bekreftet or "
                             "avkreftet (to delete, mark the entry entered-in-error)", "verification")
    return key


def clean_text(value: Any, field: str, required: bool = True, limit: int = MAX_TEXT) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise errors.Invalid(f"{field} is required", field)
        return None
    if not isinstance(value, str):
        raise errors.Invalid(f"{field} must be text", field)
    value = " ".join(value.split()) if "\n" not in value else value.strip()
    if len(value) > limit:
        raise errors.Invalid(f"{field} is longer than {limit} characters", field)
    return value


def confirmed_ext(when: str, by: dict) -> dict:
    return {"url": codes.LAST_CONFIRMED_EXT, "extension": [{"url": "date", "valueDateTime": when},
                                                           {"url": "by", "valueReference": by}]}


def _set_ext(resource: dict, ext: dict) -> None:
    others = [e for e in resource.get("extension", []) if e.get("url") != ext["url"]]
    resource["extension"] = others + [ext]


def _verification(resource: dict, level: str) -> None:
    resource["verificationStatus"] = {
        "coding": [{"system": codes.VERIFICATION_SYSTEM, "code": codes.VERIFICATION[level]}],
        "text": codes.VERIFICATION_DISPLAY[level]}
    _set_ext(resource, {"url": codes.VERIFICATION_EXT, "valueCode": level})


def new_entry(patient_id: str, category: str, text: Any, code: dict | None, verification: str | None,
              note: Any, recorder: dict, now: str, extra: dict) -> dict:
    """The resource for a new entry; raises Invalid with the form field as expression."""
    cat = codes.BY_CODE.get(category) if isinstance(category, str) else None
    if cat is None:
        raise errors.Invalid(f"'{category}' is not a category of critical information: "
                             + ", ".join(c.code for c in codes.CATEGORIES), "category")
    text = clean_text(text, "text")
    note = clean_text(note, "note", required=False)
    if code is not None and not (isinstance(code, dict) and isinstance(code.get("coding", []), list)):
        raise errors.Invalid("code must be a CodeableConcept", "code")
    concept = copy.deepcopy(code) if code else {}
    concept["text"] = text
    common = {"extension": [{"url": codes.CATEGORY_EXT, "valueCoding": codes.category_coding(cat.code)},
                            confirmed_ext(now, recorder)]}
    if cat.resource_type == "AllergyIntolerance":
        level = verification_level(verification)
        resource = {"resourceType": "AllergyIntolerance", **common,
                    "clinicalStatus": {"coding": [{"system": codes.CLINICAL_SYSTEM, "code": "active"}]},
                    "type": "allergy" if extra.get("type") != "intolerance" else "intolerance",
                    "code": concept, "patient": {"reference": f"Patient/{patient_id}"},
                    "recordedDate": now, "recorder": recorder}
        _verification(resource, level)
        if cat.code == "drug-reaction":
            resource["category"] = ["medication"]
        elif extra.get("allergy_category") in ("food", "environment", "biologic"):
            resource["category"] = [extra["allergy_category"]]
        criticality = extra.get("criticality")
        if criticality not in (None, ""):
            if criticality not in _CRITICALITY:
                raise errors.Invalid(f"'{criticality}' is not a criticality: {', '.join(_CRITICALITY)}",
                                     "criticality")
            resource["criticality"] = criticality
        reaction = clean_text(extra.get("reaction"), "reaction", required=False)
        if reaction:
            resource["reaction"] = [{"manifestation": [{"text": reaction}]}]
        if note:
            resource["note"] = [{"text": note, "time": now}]
        return resource
    if verification not in (None, "", "bekreftet", "confirmed"):
        raise errors.Invalid("only hypersensitivities (AllergyIntolerance) have a verification level",
                             "verification")
    resource = {"resourceType": "Flag", **common, "status": "active",
                "category": [{"coding": [codes.category_coding(cat.code)], "text": cat.display}],
                "code": concept, "subject": {"reference": f"Patient/{patient_id}"},
                "period": {"start": now}, "author": recorder}
    if note:
        # Flag has no note: the text of the entry says it all, the note follows it
        resource["code"]["text"] = f"{text} — {note}"
    return resource


def category_of(resource: dict) -> str | None:
    found = [c for c in critical_categories(resource) if c in codes.BY_CODE]
    return found[0] if found else None


def is_current(resource: dict) -> bool:
    """Whether the entry counts as current critical information (not deleted, not refuted,
    still active)."""
    if resource.get("resourceType") == "AllergyIntolerance":
        status = _code(resource.get("verificationStatus"))
        clinical = _code(resource.get("clinicalStatus"))
        return status not in ("entered-in-error", "refuted") and clinical in (None, "active")
    return resource.get("status") == "active"


def confirm(resource: dict, by: dict, now: str) -> dict:
    """``resource`` confirmed as still correct at ``now`` by ``by``."""
    if not is_current(resource) and _code(resource.get("verificationStatus")) != "refuted":
        raise errors.Conflict("an entry marked entered-in-error or inactive cannot be confirmed", "status")
    out = copy.deepcopy(resource)
    _set_ext(out, confirmed_ext(now, by))
    return out


def entered_in_error(resource: dict, reason: Any, by: dict, now: str) -> dict:
    reason = clean_text(reason, "reason", limit=500)
    if sum(ch.isalpha() for ch in reason) < 4:
        raise errors.Invalid("say why the entry is wrong, in words", "reason")
    out = copy.deepcopy(resource)
    if out.get("resourceType") == "AllergyIntolerance":
        out.pop("clinicalStatus", None)       # ait-2: no clinicalStatus on entered-in-error
        out["verificationStatus"] = {"coding": [{"system": codes.VERIFICATION_SYSTEM, "code": "entered-in-error"}],
                                     "text": codes.VERIFICATION_DISPLAY["slettet"]}
        _set_ext(out, {"url": codes.VERIFICATION_EXT, "valueCode": "slettet"})
    else:
        out["status"] = "entered-in-error"
    _set_ext(out, {"url": codes.ERROR_REASON_EXT, "valueString": reason})
    return out


def change(resource: dict, fields: dict, now: str) -> dict:
    """``resource`` with the changed fields: text, verification, note, code, criticality, reaction."""
    allowed = {"text", "verification", "note", "code", "criticality", "reaction"}
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise errors.Invalid(f"'{unknown[0]}' cannot be changed (fields: {', '.join(sorted(allowed))})", unknown[0])
    if not is_current(resource):
        raise errors.Conflict("an entry marked entered-in-error or inactive cannot be changed", "status")
    out = copy.deepcopy(resource)
    allergy = out.get("resourceType") == "AllergyIntolerance"
    if "code" in fields and fields["code"] is not None:
        if not isinstance(fields["code"], dict):
            raise errors.Invalid("code must be a CodeableConcept", "code")
        out["code"] = {**copy.deepcopy(fields["code"]), "text": out.get("code", {}).get("text")}
    if "text" in fields:
        out.setdefault("code", {})["text"] = clean_text(fields["text"], "text")
    if "verification" in fields:
        if not allergy:
            raise errors.Invalid("only hypersensitivities (AllergyIntolerance) have a verification level",
                                 "verification")
        _verification(out, verification_level(fields["verification"]))
    if "note" in fields:
        note = clean_text(fields["note"], "note", required=False)
        if allergy:
            out["note"] = [{"text": note, "time": now}] if note else []
            if not out["note"]:
                del out["note"]
    if allergy and "criticality" in fields:
        if fields["criticality"] in (None, ""):
            out.pop("criticality", None)
        elif fields["criticality"] not in _CRITICALITY:
            raise errors.Invalid(f"'{fields['criticality']}' is not a criticality", "criticality")
        else:
            out["criticality"] = fields["criticality"]
    if allergy and "reaction" in fields:
        reaction = clean_text(fields["reaction"], "reaction", required=False)
        if reaction:
            out["reaction"] = [{"manifestation": [{"text": reaction}]}]
        else:
            out.pop("reaction", None)
    return out


def view(resource: dict) -> dict:
    """A flat dict for pages: id, type, version, category (code, display), text, verification
    (level and display), status, recorded (when, by), last_confirmed (when, by), criticality,
    critical (high criticality or not a hypersensitivity)."""
    cat = category_of(resource)
    allergy = resource.get("resourceType") == "AllergyIntolerance"
    confirmed = {}
    level = None
    reason = None
    for ext in resource.get("extension", []):
        if ext.get("url") == codes.LAST_CONFIRMED_EXT:
            parts = {e.get("url"): e for e in ext.get("extension", [])}
            confirmed = {"when": parts.get("date", {}).get("valueDateTime"),
                         "by": (parts.get("by", {}).get("valueReference") or {}).get("display")}
        elif ext.get("url") == codes.VERIFICATION_EXT:
            level = ext.get("valueCode")
        elif ext.get("url") == codes.ERROR_REASON_EXT:
            reason = ext.get("valueString")
    recorder = resource.get("recorder" if allergy else "author") or {}
    return {
        "id": resource.get("id"), "resource_type": resource.get("resourceType"),
        "version": (resource.get("meta") or {}).get("versionId"),
        "category": cat, "category_display": codes.BY_CODE[cat].display if cat else None,
        "text": (resource.get("code") or {}).get("text"),
        "verification": level, "verification_display": codes.VERIFICATION_DISPLAY.get(level or "", None),
        "status": _code(resource.get("verificationStatus")) if allergy else resource.get("status"),
        "criticality": resource.get("criticality"),
        "critical": (not allergy) or resource.get("criticality") == "high",
        "recorded": {"when": resource.get("recordedDate") if allergy else (resource.get("period") or {}).get("start"),
                     "by": recorder.get("display")},
        "last_confirmed": confirmed, "entered_in_error_reason": reason,
        "note": "; ".join(n.get("text", "") for n in resource.get("note", [])) if allergy else None,
        "resource": resource,
    }


def sort_key(resource: dict) -> tuple:
    """Critical first: high criticality and non-hypersensitivity entries, then by category."""
    return view_sort_key(view(resource))


def view_sort_key(v: dict) -> tuple:
    """``sort_key`` for an entry already made into a ``view``."""
    return (0 if v["critical"] else 1, codes.ORDER.get(v["category"] or "", 99), v["text"] or "")


def _code(concept: Any) -> str | None:
    if isinstance(concept, dict):
        for coding in concept.get("coding") or ():
            if isinstance(coding, dict) and coding.get("code"):
                return coding["code"]
    return None
