"""What the clinician's summary page shows, from the ``$summary`` document Bundle.

Pure functions: the Bundle (``platform.summary.summary(patient_id)``, IPS-shaped: a
Composition first, its sections referring to the other entries) in, plain view objects out.
Critical information comes first; a section the patient restricted is ``locked`` (the
Composition says so with ``emptyReason``/its text instead of entries, docs/summary.md), and
the page shows it with a padlock and the form that opens it. Labels are gettext msgids
(``N_``); values are the data's own words.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from ...access.facts import person_number
from ...access.policy import age_on, critical_categories
from ...services.summary import codes
from ...services.summary.document import is_locked
from .lookup import N_

# IPS section codes (LOINC) that hold critical information: allergies and alerts.
CRITICAL_SECTIONS = ("104605-1", "48765-2", "75310-3")
_TAGS = re.compile(r"<[^>]+>")
# FHIR codes shown as words (msgids): criticality, verification and clinical status
VALUE_WORDS = {
    "high": N_("Høy"), "low": N_("Lav"), "unable-to-assess": N_("Kan ikke vurderes"),
    "confirmed": N_("Bekreftet"), "unconfirmed": N_("Ikke bekreftet"), "presumed": N_("Sannsynlig"),
    "refuted": N_("Avkreftet"), "entered-in-error": N_("Feilregistrert"), "active": N_("Aktiv"),
    "inactive": N_("Inaktiv"), "resolved": N_("Løst"), "completed": N_("Avsluttet"),
    "intended": N_("Planlagt"), "stopped": N_("Stoppet"), "on-hold": N_("På pause"),
}


def fact(label: str, value: Any) -> tuple[str, str, bool]:
    """(label msgid, value, whether the value is a msgid too)."""
    text = str(value)
    return (label, VALUE_WORDS[text], True) if text in VALUE_WORDS else (label, text, False)


@dataclass
class Item:
    """One entry of a section: a title and labelled facts (``fact``: label msgid, value,
    whether the value is a msgid)."""
    type: str
    id: str
    title: str
    facts: list[tuple[str, str, bool]] = field(default_factory=list)
    status: str = ""            # e.g. "confirmed", "unconfirmed", "entered-in-error"
    critical: bool = False


@dataclass
class Section:
    title: str
    code: str
    items: list[Item] = field(default_factory=list)
    locked: bool = False
    note: str = ""              # the Composition's own words for an empty or locked section
    critical: bool = False


@dataclass
class Banner:
    """The patient banner: who the page is about."""
    id: str
    name: str
    birth_date: str
    age: int | None
    number: str | None
    gender: str = ""
    gp: str = ""
    shielded: bool = False
    critical: int | None = None     # current critical-information entries (None: not known)


def banner(patient: dict, today: date, gp: str = "") -> Banner:
    """The banner of a Patient resource (as the clinician may read it)."""
    born = _date(patient.get("birthDate"))
    gps = [r.get("display") or r.get("reference") or "" for r in _list(patient.get("generalPractitioner"))]
    labels = {c.get("code") for c in _list((patient.get("meta") or {}).get("security"))}
    return Banner(id=str(patient.get("id") or ""), name=human_name(patient.get("name")),
                  birth_date=norwegian_date(patient.get("birthDate")),
                  age=age_on(born, today) if born else None, number=person_number(patient.get("identifier")),
                  gender=str(patient.get("gender") or ""), gp=gp or ", ".join(g for g in gps if g),
                  shielded=bool(labels & {"R", "V", "REDACTED"}))


def sections(bundle: dict) -> list[Section]:
    """The Composition's sections with their entries, critical information first."""
    entries = [e for e in _list(bundle.get("entry")) if isinstance(e.get("resource"), dict)]
    if not entries or entries[0]["resource"].get("resourceType") != "Composition":
        return []
    by_ref: dict[str, dict] = {}
    for entry in entries[1:]:
        resource = entry["resource"]
        if entry.get("fullUrl"):
            by_ref[entry["fullUrl"]] = resource
        if resource.get("id"):
            by_ref[f"{resource.get('resourceType')}/{resource['id']}"] = resource
    out = [_section(s, by_ref) for s in _flatten(_list(entries[0]["resource"].get("section")))]
    return sorted(out, key=lambda s: not s.critical)


def _flatten(raw: list[dict]) -> list[dict]:
    out = []
    for section in raw:
        out.append(section)
        out.extend(_flatten(_list(section.get("section"))))
    return out


def _section(raw: dict, by_ref: dict) -> Section:
    code = next((c.get("code") for c in _list((raw.get("code") or {}).get("coding")) if c.get("code")), "")
    text = plain((raw.get("text") or {}).get("div", "")) if isinstance(raw.get("text"), dict) else ""
    locked = is_locked(raw)
    items = []
    for ref in _list(raw.get("entry")):
        resource = by_ref.get(str(ref.get("reference") or ""))
        if resource is not None:
            items.append(describe(resource))
    critical = code in CRITICAL_SECTIONS or any(i.critical for i in items)
    return Section(title=str(raw.get("title") or code), code=code, items=items, locked=locked,
                   note=text if not items else "", critical=critical)


def describe(resource: dict) -> Item:
    """A resource as one line of the summary: its title and the facts a clinician scans for."""
    rtype = str(resource.get("resourceType"))
    facts: list[tuple[str, str, bool]] = []
    status = ""
    critical = False

    def add(label: str, value: Any) -> None:
        if value:
            facts.append(fact(label, value))

    if rtype == "AllergyIntolerance":
        title = concept_text(resource.get("code"))
        status = code_of(resource.get("verificationStatus"))
        critical = True
        add(N_("Kritikalitet"), resource.get("criticality"))
        add(N_("Reaksjon"), ", ".join(concept_text(m) for r in _list(resource.get("reaction"))
                                       for m in _list(r.get("manifestation"))))
        add(N_("Verifisering"), status)
    elif rtype == "Flag":
        title = concept_text(resource.get("code"))
        status = str(resource.get("status") or "")
        critical = True
        add(N_("Siden"), norwegian_date((resource.get("period") or {}).get("start")))
    elif rtype == "Condition":
        title = concept_text(resource.get("code"))
        status = code_of(resource.get("verificationStatus")) or code_of(resource.get("clinicalStatus"))
        add(N_("Status"), code_of(resource.get("clinicalStatus")))
        add(N_("Debut"), norwegian_date(resource.get("onsetDateTime")))
    elif rtype.startswith("Medication"):
        title = (concept_text(resource.get("medicationCodeableConcept"))
                 or (resource.get("medicationReference") or {}).get("display", ""))
        add(N_("Dosering"), "; ".join(str(d.get("text")) for d in _list(resource.get("dosage") or
                                                                      resource.get("dosageInstruction"))
                                    if d.get("text")))
        add(N_("Status"), resource.get("status"))
        add(N_("Dato"), norwegian_date(resource.get("whenHandedOver") or resource.get("authoredOn")
                                       or (resource.get("effectivePeriod") or {}).get("start")
                                       or resource.get("effectiveDateTime") or resource.get("dateAsserted")))
    elif rtype == "Encounter":
        title = (concept_text((resource.get("type") or [None])[0]) or concept_text(resource.get("serviceType"))
                 or (resource.get("class") or {}).get("display", "") or N_("Kontakt"))
        add(N_("Virksomhet"), (resource.get("serviceProvider") or {}).get("display"))
        add(N_("Periode"), period_text(resource.get("period")))
    elif rtype == "Immunization":
        title = concept_text(resource.get("vaccineCode"))
        add(N_("Dato"), norwegian_date(resource.get("occurrenceDateTime")))
    elif rtype == "Observation":
        title = concept_text(resource.get("code"))
        add(N_("Verdi"), value_text(resource))
        add(N_("Dato"), norwegian_date(resource.get("effectiveDateTime") or resource.get("issued")))
    elif rtype == "DiagnosticReport":
        title = concept_text(resource.get("code"))
        add(N_("Konklusjon"), resource.get("conclusion"))
        add(N_("Dato"), norwegian_date(resource.get("effectiveDateTime") or resource.get("issued")))
    elif rtype == "DocumentReference":
        title = resource.get("description") or concept_text(resource.get("type"))
        add(N_("Forfatter"), ", ".join(a.get("display", "") for a in _list(resource.get("author"))))
        add(N_("Dato"), norwegian_date(resource.get("date")))
    elif rtype == "RelatedPerson":
        title = human_name(resource.get("name"))
        add(N_("Relasjon"), ", ".join(concept_text(r) for r in _list(resource.get("relationship"))))
        add(N_("Telefon"), ", ".join(str(t.get("value")) for t in _list(resource.get("telecom"))
                                   if t.get("system") == "phone"))
    elif rtype in ("Practitioner", "Organization"):
        title = human_name(resource.get("name")) if rtype == "Practitioner" else str(resource.get("name") or "")
        add(N_("Telefon"), ", ".join(str(t.get("value")) for t in _list(resource.get("telecom"))
                                   if t.get("system") == "phone"))
    elif rtype == "PractitionerRole":
        title = (resource.get("practitioner") or {}).get("display", "") or concept_text((resource.get("code") or [None])[0])
        add(N_("Virksomhet"), (resource.get("organization") or {}).get("display"))
    elif rtype in ("Procedure", "DeviceUseStatement", "Device"):
        title = (concept_text(resource.get("code")) or concept_text(resource.get("type"))
                 or ", ".join(str(n.get("name")) for n in _list(resource.get("deviceName")))
                 or (resource.get("device") or {}).get("display", ""))
        add(N_("Dato"), norwegian_date(resource.get("performedDateTime") or
                                       (resource.get("performedPeriod") or {}).get("start")))
    elif rtype == "Consent":
        title = ", ".join(concept_text(c) for c in _list(resource.get("category"))) or concept_text(resource.get("scope"))
        add(N_("Status"), resource.get("status"))
        add(N_("Dato"), norwegian_date(resource.get("dateTime")))
    else:
        narrative = resource.get("text")
        title = concept_text(resource.get("code")) or (plain(narrative.get("div")) if isinstance(narrative, dict)
                                                       else "")
    if rtype in ("AllergyIntolerance", "Flag", "Condition"):
        for code in critical_categories(resource)[:1]:
            if code in codes.BY_CODE:
                facts.insert(0, (N_("Kategori"), codes.BY_CODE[code].display, False))
        for ext in _list(resource.get("extension")):
            if ext.get("url") == codes.VERIFICATION_EXT and ext.get("valueCode") in codes.VERIFICATION_DISPLAY:
                facts[:] = [f for f in facts if f[0] != N_("Verifisering")]
                add(N_("Verifisering"), codes.VERIFICATION_DISPLAY[ext["valueCode"]])
    for note in _list(resource.get("note")):
        add(N_("Merknad"), note.get("text"))
    recorder = resource.get("recorder") or resource.get("author") or resource.get("asserter")
    if isinstance(recorder, dict):
        add(N_("Registrert av"), recorder.get("display"))
    add(N_("Registrert"), norwegian_date(resource.get("recordedDate") or resource.get("date")
                                         if rtype in ("AllergyIntolerance", "Flag", "Condition") else None))
    confirmed = last_confirmed(resource)
    if confirmed:
        add(N_("Sist bekreftet"), confirmed)
    return Item(type=rtype, id=str(resource.get("id") or ""), title=str(title or rtype), facts=facts,
                status=status, critical=critical)


def critical_item(view: dict, lang: str = "nb") -> Item:
    """An entry of ``platform.summary.critical_information`` (its view dict) as one item."""
    resource = view.get("resource") if isinstance(view.get("resource"), dict) else {}
    facts: list[tuple[str, str, bool]] = []

    def add(label: str, value: Any) -> None:
        if value:
            facts.append(fact(label, value))

    category = codes.BY_CODE.get(view.get("category") or "")
    add(N_("Kategori"), (category.display if lang == "nb" else category.display_en) if category else "")
    add(N_("Verifisering"), view.get("verification_display"))
    add(N_("Kritikalitet"), view.get("criticality"))
    add(N_("Reaksjon"), ", ".join(concept_text(m) for r in _list(resource.get("reaction"))
                                  for m in _list(r.get("manifestation"))))
    recorded = view.get("recorded") or {}
    add(N_("Registrert"), " ".join(p for p in (norwegian_date(recorded.get("when")),
                                               f"({recorded['by']})" if recorded.get("by") else "") if p))
    confirmed = view.get("last_confirmed") or {}
    add(N_("Sist bekreftet"), " ".join(p for p in (norwegian_date(confirmed.get("when")),
                                                   f"({confirmed['by']})" if confirmed.get("by") else "") if p))
    add(N_("Merknad"), view.get("note"))
    return Item(type=str(view.get("resource_type") or resource.get("resourceType") or ""), id=str(view.get("id") or ""),
                title=str(view.get("text") or concept_text(resource.get("code")) or ""), facts=facts,
                status=str(view.get("status") or ""), critical=bool(view.get("critical")))


def last_confirmed(resource: dict) -> str:
    """The ``last-confirmed`` extension's date (and who), when the entry carries one."""
    for ext in _list(resource.get("extension")):
        if "confirm" not in str(ext.get("url", "")):
            continue
        when = ext.get("valueDateTime") or ext.get("valueDate")
        who = ""
        for inner in _list(ext.get("extension")):
            when = when or inner.get("valueDateTime") or inner.get("valueDate")
            ref = inner.get("valueReference")
            if isinstance(ref, dict):
                who = ref.get("display") or ref.get("reference") or ""
        text = norwegian_date(when)
        return f"{text} ({who})" if who and text else text
    return ""


# -- small readers -------------------------------------------------------------------------

def concept_text(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    for coding in _list(concept.get("coding")):
        if coding.get("display") or coding.get("code"):
            return str(coding.get("display") or coding.get("code"))
    return ""


def code_of(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    return next((str(c.get("code")) for c in _list(concept.get("coding")) if c.get("code")), "")


def human_name(names: Any) -> str:
    for name in _list(names):
        if name.get("text"):
            return str(name["text"])
        given = " ".join(str(g) for g in name.get("given") or [])
        return " ".join(p for p in (given, str(name.get("family") or "")) if p)
    return ""


def value_text(observation: dict) -> str:
    quantity = observation.get("valueQuantity")
    if isinstance(quantity, dict) and quantity.get("value") is not None:
        return f"{quantity['value']} {quantity.get('unit') or quantity.get('code') or ''}".strip()
    if observation.get("valueString"):
        return str(observation["valueString"])
    if observation.get("valueCodeableConcept"):
        return concept_text(observation["valueCodeableConcept"])
    parts = []
    for component in _list(observation.get("component")):
        value = value_text(component)
        if value:
            parts.append(value)
    return " / ".join(parts)


def period_text(period: Any) -> str:
    if not isinstance(period, dict):
        return ""
    start, end = norwegian_date(period.get("start")), norwegian_date(period.get("end"))
    return f"{start}–{end}" if end and end != start else start


def norwegian_date(value: Any) -> str:
    """``2026-11-01...`` as ``01.11.2026`` (a year or year-month as given)."""
    if not isinstance(value, str) or len(value) < 4:
        return ""
    parts = value[:10].split("-")
    return ".".join(reversed(parts))


def plain(div: Any) -> str:
    return " ".join(_TAGS.sub(" ", str(div or "")).split())


def _date(value: Any) -> date | None:
    try:
        return date.fromisoformat(value[:10]) if isinstance(value, str) and len(value) >= 10 else None
    except ValueError:
        return None


def _list(value: Any) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
