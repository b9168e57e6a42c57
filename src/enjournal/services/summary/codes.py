"""The code systems the summary care record publishes, and the rules of its categories.

``CATEGORIES`` are the national critical-information categories (kjernejournal), in the order
a clinician reads them; ``roles`` says which helsepersonellkategori may register each (the
rule itself lives in ``access.policy.CRITICAL_ROLES``, enforced by the guard on every path).
The CodeSystem resources are seeded into every database at start (``code_systems``).
"""
from __future__ import annotations

from dataclasses import dataclass

from ...access.policy import (CRITICAL_CATEGORY_EXT, CRITICAL_INFORMATION, CRITICAL_ROLES, OWN_ENTRY,
                              TREATMENT_IMPLANT)

BASE = "https://enjournal.no/fhir"
SD = f"{BASE}/StructureDefinition"
CATEGORY_EXT = CRITICAL_CATEGORY_EXT
LAST_CONFIRMED_EXT = f"{SD}/last-confirmed"              # complex: date (dateTime), by (Reference)
VERIFICATION_EXT = f"{SD}/verification-level"            # valueCode: mistenkt | sannsynlig | ...
ERROR_REASON_EXT = f"{SD}/entered-in-error-reason"       # valueString
DONOR_WITNESS_EXT = f"{SD}/donor-witness"                # complex: name, phone, birthDate
WITHDRAWN_EXT = f"{SD}/withdrawn"                        # valueDateTime
SUMMARY_SECTION = f"{BASE}/CodeSystem/summary-section"
VERIFICATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
CLINICAL_SYSTEM = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
LOINC = "http://loinc.org"


@dataclass(frozen=True)
class Category:
    code: str
    display: str            # bokmål
    display_en: str
    resource_type: str      # AllergyIntolerance | Flag
    roles: frozenset[str]   # helsepersonellkategori that may register it
    definition: str = ""


def _category(code: str, display: str, display_en: str, resource_type: str, definition: str) -> Category:
    return Category(code, display, display_en, resource_type, CRITICAL_ROLES[code], definition)


CATEGORIES: tuple[Category, ...] = (
    _category("drug-reaction", "Legemiddelreaksjon", "Drug reaction", "AllergyIntolerance",
              "Overfølsomhet for legemidler (allergi eller annen alvorlig reaksjon)"),
    _category("allergy", "Annen allergi", "Other allergy (hypersensitivity)", "AllergyIntolerance",
              "Overfølsomhet for annet enn legemidler, f.eks. mat, insektstikk eller lateks"),
    _category("anaesthesia", "Komplikasjoner ved anestesi", "Anaesthesia complications", "Flag",
              "Tidligere alvorlige komplikasjoner ved narkose eller bedøvelse"),
    _category("critical-condition", "Kritisk medisinsk tilstand", "Critical medical condition", "Flag",
              "Tilstand som kan føre til feil behandling om den ikke er kjent"),
    _category(TREATMENT_IMPLANT, "Pågående behandling og implantater", "Ongoing treatments and implants", "Flag",
              "Behandling eller implantat som må være kjent, f.eks. pacemaker eller dialyse"),
    _category("changed-routine", "Endrede behandlingsrutiner", "Changed treatment routines", "Flag",
              "F.eks. begrensning av livsforlengende behandling"),
    _category("infection", "Smitte", "Infection", "Flag",
              "Smittsom sykdom som krever tiltak ved behandling"),
)
BY_CODE = {c.code: c for c in CATEGORIES}
ORDER = {c.code: i for i, c in enumerate(CATEGORIES)}

# Norwegian verification levels and the R4 verificationStatus each maps to (docs/summary.md).
# R4 has no "presumed": a probable entry is ``unconfirmed`` with the level "sannsynlig".
VERIFICATION = {
    "mistenkt": "unconfirmed", "sannsynlig": "unconfirmed", "bekreftet": "confirmed",
    "avkreftet": "refuted", "slettet": "entered-in-error",
}
VERIFICATION_DISPLAY = {"mistenkt": "Mistenkt", "sannsynlig": "Sannsynlig", "bekreftet": "Bekreftet",
                        "avkreftet": "Avkreftet", "slettet": "Slettet (feilregistrert)"}
VERIFICATION_ALIASES = {"suspected": "mistenkt", "unconfirmed": "mistenkt", "probable": "sannsynlig",
                        "presumed": "sannsynlig", "confirmed": "bekreftet", "refuted": "avkreftet"}

# The citizen's own entries (meta.tag, Observation codes, Consent category)
OWN_CODES = {
    "contact": ("Pårørende eller kontaktperson", "Next of kin or contact"),
    "illness": ("Sykdom med egne ord", "Illness in the citizen's own words"),
    "needs": ("Behov knyttet til syn eller hørsel", "Sight or hearing needs"),
    "sight": ("Synsbehov", "Sight needs"),
    "hearing": ("Hørselsbehov", "Hearing needs"),
    "interpreter": ("Behov for tolk", "Interpreter need"),
    "language": ("Språk", "Language"),
    "donor-card": ("Donorkort", "Organ donor card"),
}


def own_coding(code: str) -> dict:
    return {"system": OWN_ENTRY, "code": code, "display": OWN_CODES[code][0]}


def category_coding(code: str) -> dict:
    return {"system": CRITICAL_INFORMATION, "code": code, "display": BY_CODE[code].display}


def critical_code_system() -> dict:
    """The CodeSystem resource ``CodeSystem/critical-information``."""
    return {
        "resourceType": "CodeSystem", "id": "critical-information", "url": CRITICAL_INFORMATION,
        "version": "1.0.0", "name": "CriticalInformation", "title": "Kritisk informasjon i kjernejournal",
        "status": "active", "experimental": False, "date": "2026-12-03", "publisher": "enjournal",
        "description": "Kategorier for kritisk informasjon i kjernejournal (the national summary care record's "
                       "critical-information categories), with who may register each (property 'roles').",
        "language": "nb", "caseSensitive": True, "content": "complete", "count": len(CATEGORIES),
        "property": [
            {"code": "resource-type", "type": "code", "description": "The FHIR resource type an entry is"},
            {"code": "roles", "type": "string",
             "description": "helsepersonellkategori (urn:oid:2.16.578.1.12.4.1.1.9060) that may register it"},
        ],
        "concept": [{
            "code": c.code, "display": c.display, "definition": c.definition,
            "designation": [{"language": "en", "value": c.display_en}],
            "property": [{"code": "resource-type", "valueCode": c.resource_type},
                         {"code": "roles", "valueString": " ".join(sorted(c.roles))}],
        } for c in CATEGORIES],
    }


def own_entry_code_system() -> dict:
    """The CodeSystem resource ``CodeSystem/own-entry``: kinds of the citizen's own entries."""
    return {
        "resourceType": "CodeSystem", "id": "own-entry", "url": OWN_ENTRY, "version": "1.0.0",
        "name": "OwnEntry", "title": "Egne registreringer i kjernejournal", "status": "active",
        "experimental": False, "date": "2026-12-03", "publisher": "enjournal", "language": "nb",
        "description": "What a citizen enters in their own summary care record; resources tagged with this "
                       "system (meta.tag) are the citizen's own entries and never give access rights.",
        "caseSensitive": True, "content": "complete", "count": len(OWN_CODES),
        "concept": [{"code": code, "display": nb, "designation": [{"language": "en", "value": en}]}
                    for code, (nb, en) in OWN_CODES.items()],
    }


def code_systems() -> tuple[dict, ...]:
    return critical_code_system(), own_entry_code_system()


TREATMENT_IMPLANT_CODE = TREATMENT_IMPLANT
