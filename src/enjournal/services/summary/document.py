"""The ``$summary`` document: a FHIR document Bundle shaped like the International Patient
Summary (https://hl7.org/fhir/uv/ips/), built by a pure function from the resources the caller
may see (``build``). The I/O (what to read, under whose access) is ``service.py``'s.

Sections carry IPS section LOINC codes where IPS has one, and codes of enjournal's
``summary-section`` system where it has none (documents, contacts, GP, own entries). A
section the caller may not open (a restricted section without declared consent or emergency)
has ``emptyReason`` withheld and says so in its text; it lists nothing.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field

from . import codes

LOINC = codes.LOINC
EMPTY_REASON = "http://terminology.hl7.org/CodeSystem/list-empty-reason"
LOCKED_TEXT = "Låst: erklær pasientens samtykke eller akuttilgang for å se denne delen"
LOCKED_TEXT_EN = "locked: declare consent or emergency"


@dataclass(frozen=True)
class SectionSpec:
    key: str
    title: str                  # bokmål
    system: str
    code: str
    display: str


SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("allergies", "Overfølsomhet (allergier og legemiddelreaksjoner)", LOINC, "48765-2",
                "Allergies and adverse reactions Document"),
    SectionSpec("alerts", "Kritisk informasjon", LOINC, "104605-1", "Alert"),
    SectionSpec("advance-directives", "Endrede behandlingsrutiner", LOINC, "42348-3", "Advance directives"),
    SectionSpec("devices", "Pågående behandling og implantater", LOINC, "46264-8", "History of medical device use"),
    SectionSpec("problems", "Aktuelle tilstander", LOINC, "11450-4", "Problem list - Reported"),
    SectionSpec("medications", "Legemidler i bruk", LOINC, "10160-0", "History of Medication use Narrative"),
    SectionSpec("encounters", "Sykehus- og spesialistkontakter", LOINC, "46240-8",
                "History of Hospitalizations+Outpatient visits Narrative"),
    SectionSpec("immunizations", "Vaksiner", LOINC, "11369-6", "History of Immunization Narrative"),
    SectionSpec("results", "Prøvesvar", LOINC, "30954-2", "Relevant diagnostic tests/laboratory data Narrative"),
    SectionSpec("procedures", "Prosedyrer", LOINC, "47519-4", "History of Procedures Document"),
    SectionSpec("documents", "Journaldokumenter", codes.SUMMARY_SECTION, "documents", "Shared documents"),
    SectionSpec("contacts", "Pårørende og kontaktpersoner", codes.SUMMARY_SECTION, "contacts",
                "Next of kin and contacts"),
    SectionSpec("gp", "Fastlege", codes.SUMMARY_SECTION, "gp", "General practitioner"),
    SectionSpec("own-entries", "Egne registreringer", codes.SUMMARY_SECTION, "own-entries",
                "The citizen's own entries"),
)
SECTION_BY_KEY = {s.key: s for s in SECTIONS}


@dataclass
class Section:
    """What the caller may see of one section: ``entries`` (resources with id), ``more``
    whether the caller may see more such entries than listed (the section shows only the
    newest), ``locked`` the rule that keeps it closed (None: open)."""
    key: str
    entries: list = field(default_factory=list)
    more: bool = False
    locked: str | None = None
    lines: list = field(default_factory=list)      # narrative lines for entries without a resource


LOCKED_EXT = f"{codes.SD}/section-locked"


def is_locked(section: dict) -> bool:
    """Whether a section of a document ``build`` made is locked (its marker, not its words:
    an entry's narrative may well say "restricted")."""
    return any(isinstance(x, dict) and x.get("url") == LOCKED_EXT for x in section.get("extension") or ())


def build(patient_id: str, patient: dict | None, sections: list[Section], now: str, base: str,
          bundle_id: str, composition_id: str) -> dict:
    """The document Bundle: the Composition first, then the Patient (when readable), then
    every resource a section lists, each once."""
    comp_sections = []
    entries: dict[str, dict] = {}
    for section in sections:
        spec = SECTION_BY_KEY[section.key]
        out = {"title": spec.title,
               "code": {"coding": [{"system": spec.system, "code": spec.code, "display": spec.display}]}}
        if section.locked is not None:
            out["text"] = _div(f"<p>{LOCKED_TEXT} ({LOCKED_TEXT_EN}).</p>")
            out["emptyReason"] = {"coding": [{"system": EMPTY_REASON, "code": "withheld",
                                              "display": "Information Withheld"}], "text": LOCKED_TEXT}
            out["extension"] = [{"url": LOCKED_EXT, "valueString": section.locked}]
            comp_sections.append(out)
            continue
        refs = []
        items = []
        for resource in section.entries:
            ref = f"{resource['resourceType']}/{resource['id']}"
            refs.append({"reference": ref})
            entries.setdefault(ref, resource)
            items.append(html.escape(describe(resource)))
        items += [html.escape(line) for line in section.lines]
        if not items:
            out["text"] = _div("<p>Ingen registrerte opplysninger.</p>")
            out["emptyReason"] = {"coding": [{"system": EMPTY_REASON, "code": "nilknown", "display": "Nil Known"}]}
        else:
            head = f"<p>Viser de {len(section.entries)} nyeste; flere finnes.</p>" if section.more else ""
            out["text"] = _div(head + "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
            if refs:
                out["entry"] = refs
        comp_sections.append(out)
    composition = {
        "resourceType": "Composition", "id": composition_id,
        "meta": {"profile": ["http://hl7.org/fhir/uv/ips/StructureDefinition/Composition-uv-ips"]},
        "language": "nb",
        "status": "final",
        "type": {"coding": [{"system": LOINC, "code": "60591-5", "display": "Patient summary Document"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "date": now,
        "author": [{"display": "enjournal kjernejournal"}],
        "title": "Kjernejournal – pasientsammendrag",
        "confidentiality": "N",
        "section": comp_sections,
    }
    bundle_entries = [{"fullUrl": f"{base}/Composition/{composition_id}", "resource": composition}]
    if patient is not None:
        bundle_entries.append({"fullUrl": f"{base}/Patient/{patient_id}", "resource": patient})
    for ref, resource in entries.items():
        if ref != f"Patient/{patient_id}":
            bundle_entries.append({"fullUrl": f"{base}/{ref}", "resource": resource})
    return {"resourceType": "Bundle", "id": bundle_id, "language": "nb",
            "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{bundle_id}"},
            "type": "document", "timestamp": now, "entry": bundle_entries}


def _div(inner: str) -> dict:
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{inner}</div>'}


def describe(resource: dict) -> str:
    """One line of narrative for a resource (its text or display, and its date)."""
    rt = resource.get("resourceType")
    text = _concept_text(resource.get("code") or resource.get("vaccineCode") or resource.get("medicationCodeableConcept")
                         or resource.get("type") or {})
    if rt in ("MedicationRequest", "MedicationStatement", "MedicationDispense") and not text:
        text = (resource.get("medicationReference") or {}).get("display", "")
    if rt == "Encounter":
        types = resource.get("type") or []
        text = _concept_text(types[0]) if types else ""
        org = (resource.get("serviceProvider") or {}).get("display", "")
        period = resource.get("period") or {}
        return " – ".join(x for x in (text or "Kontakt", org, _span(period)) if x)
    if rt == "DocumentReference":
        text = resource.get("description") or _concept_text(resource.get("type") or {})
        return " – ".join(x for x in (text or "Dokument", (resource.get("date") or "")[:10]) if x)
    if rt == "Practitioner":
        name = (resource.get("name") or [{}])[0]
        return name.get("text") or " ".join(name.get("given", []) + [name.get("family", "")]).strip()
    if rt == "RelatedPerson":
        name = (resource.get("name") or [{}])[0]
        rel = next((r.get("text") for r in resource.get("relationship", []) if r.get("text")), "")
        shown = name.get("text") or " ".join(name.get("given", []) + [name.get("family", "")]).strip()
        return " – ".join(x for x in (shown, rel) if x)
    if rt == "Observation" and "valueQuantity" in resource:
        q = resource["valueQuantity"]
        text = f"{text}: {q.get('value')} {q.get('unit', '')}".strip()
    when = (resource.get("effectiveDateTime") or resource.get("occurrenceDateTime") or resource.get("recordedDate")
            or resource.get("authoredOn") or resource.get("whenHandedOver") or resource.get("dateAsserted")
            or (resource.get("period") or {}).get("start") or resource.get("onsetDateTime") or "")
    return " – ".join(x for x in (text or rt, when[:10]) if x)


def _span(period: dict) -> str:
    start, end = (period.get("start") or "")[:10], (period.get("end") or "")[:10]
    return f"{start}–{end}" if end and end != start else start


def _concept_text(concept: dict) -> str:
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return concept["text"]
    for coding in concept.get("coding") or ():
        if coding.get("display"):
            return coding["display"]
    return ""
