"""The organ donor card (donorkort) as a FHIR Consent, pure functions.

A Consent of the patient with category own-entry ``donor-card`` (never an access-control
category, so it gives no one access), ``provision.type`` permit (consent "ja") or deny
("nei"), and one or two people over 18 who know the wish as ``donor-witness`` extensions
(name, phone, birthDate): deliberately not ``provision.actor``, which access control reads
for powers of attorney. Withdrawal makes the Consent ``inactive`` with the date withdrawn.
"""
from __future__ import annotations

from datetime import date
from typing import Any

from ... import errors
from ...access.policy import age_on
from . import codes
from .critical import clean_text
from .own_entries import phone_number, tag

CONSENTS = {"ja": "permit", "nei": "deny"}
MIN_WITNESS_AGE = 18


def donor_card(patient_id: str, consent: Any, witnesses: Any, now: str, today: date) -> dict:
    if consent not in CONSENTS:
        raise errors.Invalid("consent must be 'ja' (yes to organ donation) or 'nei'", "consent")
    if not isinstance(witnesses, list) or not 1 <= len(witnesses) <= 2:
        raise errors.Invalid("name one or two people over 18 who know your wish", "witnesses")
    extensions = []
    for i, w in enumerate(witnesses):
        where = f"witnesses[{i}]"
        if not isinstance(w, dict):
            raise errors.Invalid("each person who knows the wish needs name, phone and birth date", where)
        name = clean_text(w.get("name"), f"{where}.name", limit=200)
        phone = phone_number(w.get("phone"), f"{where}.phone")
        born = w.get("birth_date")
        try:
            born = born if isinstance(born, date) else date.fromisoformat(str(born or ""))
        except ValueError:
            raise errors.Invalid(f"'{born}' is not a date (YYYY-MM-DD)", f"{where}.birth_date") from None
        if born > today or age_on(born, today) < MIN_WITNESS_AGE:
            raise errors.Invalid(f"the people who know the wish must be at least {MIN_WITNESS_AGE}",
                                 f"{where}.birth_date")
        extensions.append({"url": codes.DONOR_WITNESS_EXT, "extension": [
            {"url": "name", "valueString": name}, {"url": "phone", "valueString": phone},
            {"url": "birthDate", "valueDate": born.isoformat()}]})
    return {
        "resourceType": "Consent", "meta": tag("donor-card"), "extension": extensions, "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "treatment"}],
                  "text": "Organdonasjon"},
        "category": [{"coding": [codes.own_coding("donor-card")], "text": "Donorkort"}],
        "patient": {"reference": f"Patient/{patient_id}"}, "dateTime": now,
        "policyRule": {"text": "Transplantasjonslova (lov om donasjon og transplantasjon av organ, celler og vev)"},
        "provision": {"type": CONSENTS[consent]},
    }


def withdraw(resource: dict, now: str) -> dict:
    out = dict(resource)
    out["status"] = "inactive"
    out["extension"] = [e for e in resource.get("extension", []) if e.get("url") != codes.WITHDRAWN_EXT] + [
        {"url": codes.WITHDRAWN_EXT, "valueDateTime": now}]
    return out


def view(resource: dict) -> dict:
    witnesses = []
    withdrawn = None
    for ext in resource.get("extension", []):
        if ext.get("url") == codes.DONOR_WITNESS_EXT:
            parts = {e["url"]: e.get("valueString", e.get("valueDate")) for e in ext.get("extension", [])}
            witnesses.append({"name": parts.get("name"), "phone": parts.get("phone"),
                              "birth_date": parts.get("birthDate")})
        elif ext.get("url") == codes.WITHDRAWN_EXT:
            withdrawn = ext.get("valueDateTime")
    kind = (resource.get("provision") or {}).get("type")
    return {"id": resource.get("id"), "consent": "ja" if kind == "permit" else "nei",
            "active": resource.get("status") == "active", "date": resource.get("dateTime"),
            "witnesses": witnesses, "withdrawn": withdrawn}
