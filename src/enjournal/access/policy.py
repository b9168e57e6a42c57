"""The access policy: one pure function, ``decide()``, over plain data.

It answers whether a subject (principal + attestation, ``principal.py``) may perform an
action on data of one patient (``PatientFacts``, loaded from FHIR Consent, RelatedPerson and
Patient resources by ``facts.py``) at a given time. No I/O: the guard (``guard.py``) gathers
the facts, calls ``decide`` and carries out the decision. The rules are in docs/access.md;
they follow the national trust framework (purpose of use), kjernejournal's citizen controls
and Helsenorge's proxy rules.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from . import scopes as sc
from .principal import BTG, CITIZEN, COC, EMERGENCY, PERSONNEL, PURPOSES, SYSTEM, Subject

OSLO = ZoneInfo("Europe/Oslo")

# Sections of the record a citizen can restrict or hide (by resource type).
SUMMARY, PRESCRIPTIONS, DOCUMENTS, LAB, RECORD = "summary", "prescriptions", "documents", "lab", "record"
SECTIONS = (SUMMARY, PRESCRIPTIONS, DOCUMENTS, LAB, RECORD)
_SECTION_OF = {
    "AllergyIntolerance": SUMMARY, "Flag": SUMMARY,
    "MedicationRequest": PRESCRIPTIONS, "MedicationDispense": PRESCRIPTIONS,
    "MedicationStatement": PRESCRIPTIONS, "MedicationAdministration": PRESCRIPTIONS,
    "DocumentReference": DOCUMENTS, "Composition": DOCUMENTS, "DocumentManifest": DOCUMENTS,
    "DiagnosticReport": LAB, "Specimen": LAB,
}

# helsepersonellkategori (urn:oid:2.16.578.1.12.4.1.1.9060) that may write a type; types not
# listed may be written by any authorised health personnel with a known category.
DOCTOR, NURSE, MIDWIFE = "LE", "SP", "JO"
PHARMACISTS = frozenset({"FA1", "FA2"})
WRITE_ROLES: dict[str, frozenset[str]] = {
    "MedicationRequest": frozenset({DOCTOR}),          # only doctors prescribe
    "MedicationStatement": frozenset({DOCTOR}),        # ... and keep the medication list
    "List": frozenset({DOCTOR}),                       # ... and submit it
    "AllergyIntolerance": frozenset({DOCTOR}),         # critical information: any doctor
    "Flag": frozenset({DOCTOR, NURSE}),                # nurses: only ongoing treatments and implants
    "Condition": frozenset({DOCTOR}),
    "Device": frozenset({DOCTOR, NURSE}),              # implants: nurses too
    "DeviceUseStatement": frozenset({DOCTOR, NURSE}),
    "Procedure": frozenset({DOCTOR, NURSE}),           # ongoing treatments
    "MedicationDispense": PHARMACISTS,
    "Immunization": frozenset({DOCTOR, NURSE, MIDWIFE}),
}
# What coordination of care (COC, not direct care) may write.
COORDINATION_TYPES = frozenset({"Communication", "CommunicationRequest", "Task", "CarePlan", "CareTeam",
                                "EpisodeOfCare", "Appointment", "ServiceRequest"})
# What a citizen may write in their own record (or one they act for with "use services").
# RelatedPerson and Condition only as own entries (``content_problem``): tagged OWN_ENTRY.
CITIZEN_WRITES = frozenset({"Consent", "Communication", "Observation", "QuestionnaireResponse",
                            "RelatedPerson", "Condition"})

# The summary care record's critical information (docs/summary.md): the category of an entry is
# a coding of CRITICAL_INFORMATION in Flag/Condition.category, or in the extension
# CRITICAL_CATEGORY_EXT (AllergyIntolerance.category is a plain code). Who may register what:
CRITICAL_INFORMATION = "https://enjournal.no/fhir/CodeSystem/critical-information"
CRITICAL_CATEGORY_EXT = "https://enjournal.no/fhir/StructureDefinition/critical-information-category"
TREATMENT_IMPLANT = "treatment-implant"
CRITICAL_ROLES: dict[str, frozenset[str]] = {
    "drug-reaction": frozenset({DOCTOR}), "allergy": frozenset({DOCTOR}), "anaesthesia": frozenset({DOCTOR}),
    "critical-condition": frozenset({DOCTOR}), TREATMENT_IMPLANT: frozenset({DOCTOR, NURSE}),
    "changed-routine": frozenset({DOCTOR}), "infection": frozenset({DOCTOR}),
}
CRITICAL_TYPES = frozenset({"AllergyIntolerance", "Flag", "Condition"})
# The citizen's own entries carry this tag (meta.tag); they never create access rights.
OWN_ENTRY = "https://enjournal.no/fhir/CodeSystem/own-entry"
OWN_ENTRY_TYPES = frozenset({"RelatedPerson", "Condition"})

# Logins strong enough for health data: ID-porten "high" (and its older names), HelseID level 4.
HIGH_ASSURANCE = frozenset({"idporten-loa-high", "Level4", "high", "4"})

READS = frozenset({"read", "vread", "history-instance", "search", "history-type", "operation"})

PARENT_FULL_UNTIL = 12      # parents act fully for children under 12
PARENT_LIMITED_UNTIL = 16   # ... with limits from 12 to 15, not at all from 16
ATTORNEY_GIVER_MIN = 16
ATTORNEY_RECEIVER_MIN = 18
VIEW, USE = "view", "use"   # power-of-attorney scopes


@dataclass(frozen=True)
class Action:
    interaction: str        # read | vread | search | history-instance | create | update | patch | delete | ...
    type: str               # the resource type
    patient_data: bool = True  # the type belongs in the Patient compartment

    @property
    def writes(self) -> bool:
        return self.interaction not in READS


@dataclass(frozen=True)
class Proxy:
    """Someone who may act for the patient: a parent (RelatedPerson with parental
    responsibility) or the receiver of a power of attorney (Consent)."""
    pid: str                        # the representative's fødselsnummer / D-number
    kind: str                       # "parent" | "attorney"
    responsibility: bool = False    # parents: has parental responsibility
    same_address: bool = False      # parents: registered at the patient's address
    scopes: frozenset[str] = frozenset({VIEW})   # attorneys: view and/or use
    start: date | None = None
    end: date | None = None
    birth_date: date | None = None  # the representative's


@dataclass(frozen=True)
class Grant:
    """Emergency access in force for one health person and patient, until ``until`` (epoch ms)."""
    hpr: str
    until: int
    reason: str = ""


@dataclass(frozen=True)
class PatientFacts:
    """What the policy needs to know about the patient whose data is asked for."""
    id: str
    pid: str | None = None
    birth_date: date | None = None
    shielded: bool = False
    summary_opt_out: bool = False
    blocked_hpr: frozenset[str] = frozenset()
    prescription_blocked_hpr: frozenset[str] = frozenset()
    restricted_sections: frozenset[str] = frozenset()      # SECTIONS, or "all"
    prescriptions_hidden_from_parents: bool = False
    proxies: tuple[Proxy, ...] = ()
    grants: tuple[Grant, ...] = ()


@dataclass(frozen=True)
class Decision:
    allow: bool
    reason: str                     # why (allowed: the basis in words; denied: what is missing)
    basis: str = ""                 # TREAT | ETREAT | COC | BTG | own-record | parent | attorney | system | shared
    status: int = 403               # for denials: 403, or 404 where saying more would leak existence
    emergency: bool = False         # emergency access: flag for review, show to the citizen
    start_grant: bool = False       # open a new emergency grant (the guard records it)
    redact: tuple[str, ...] = field(default=())   # elements to remove before the data leaves


def allow(reason: str, basis: str, **kw) -> Decision:
    return Decision(True, reason, basis, 200, **kw)


def deny(reason: str, status: int = 403) -> Decision:
    return Decision(False, reason, "", status)


MIN_REASON_LETTERS = 4      # an emergency access reason must say something: "fall", not "-"


def reason_problem(reason: str | None) -> str:
    """Why ``reason`` is not a stated reason for emergency access ("" when it is): it must
    hold at least ``MIN_REASON_LETTERS`` letters (any script), not only punctuation, digits
    or spaces."""
    if not reason or not reason.strip():
        return "none was given"
    if sum(1 for ch in reason if ch.isalpha()) < MIN_REASON_LETTERS:
        return (f"'{reason.strip()[:40]}' is not a reason: say why in words (at least {MIN_REASON_LETTERS} "
                "letters)")
    return ""


def section_of(type: str) -> str:
    return _SECTION_OF.get(type, RECORD)


def age_on(birth: date, day: date) -> int:
    """Full years on ``day``: the birthday itself counts (born 2014-05-03 is 12 on 2026-05-03)."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def decide(subject: Subject, action: Action, target: PatientFacts | None, now: datetime) -> Decision:
    """May ``subject`` do ``action`` on data of ``target`` (None: data of no patient) at ``now``?"""
    who = subject.principal
    letter = sc.LETTER.get(action.interaction, "r")
    contexts = {SYSTEM: ("system",), PERSONNEL: ("user", "patient"), CITIZEN: ("patient", "user")}[who.kind]
    if not sc.allows(who.scopes, action.type, letter, contexts):
        return deny(f"the token's scopes do not grant '{letter}' on {action.type}")
    if who.kind == SYSTEM:
        return allow("system access", SYSTEM)
    if action.type == "Patient" and action.writes:
        return deny("Patient demographics come from the population register: only systems write Patient")
    if target is None:
        if action.patient_data:
            return deny(f"this {action.type} belongs to no patient; only systems may use it", 404)
        if action.writes:
            return deny(f"{action.type} is shared data; only systems may change it")
        return allow("shared data", "shared")
    if who.assurance not in HIGH_ASSURANCE:
        return deny("patient data needs a login with high assurance (ID-porten level high, HelseID security "
                    f"level 4); this token has '{who.assurance or 'none'}'")
    if who.kind == PERSONNEL:
        return _personnel(subject, action, target, now)
    return _citizen(subject, action, target, now)


def _personnel(subject: Subject, action: Action, target: PatientFacts, now: datetime) -> Decision:
    who, att = subject.principal, subject.attestation
    if subject.patient_id is None:
        return deny("health personnel must attest the patient (X-Patient header or patient claim) "
                    "and the purpose of use for patient data")
    if target.id != subject.patient_id:
        return deny("not found", 404)
    if att.purpose not in PURPOSES:
        return deny("state the purpose of use: TREAT, ETREAT, COC or BTG (X-Purpose-Of-Use)"
                    if att.purpose is None else f"'{att.purpose}' is not a purpose of use (TREAT, ETREAT, COC, BTG)")
    if who.hpr is None:
        return deny("health personnel need an HPR number in the token")
    if who.hpr in target.blocked_hpr:
        return deny("the patient has blocked this health person from the record")
    section = section_of(action.type)
    if section == SUMMARY and target.summary_opt_out:
        return deny("the patient has opted out of the summary care record")
    if section == PRESCRIPTIONS and who.hpr in target.prescription_blocked_hpr:
        return deny("the patient has blocked this health person from seeing prescriptions")
    emergency = att.purpose in EMERGENCY
    start_grant = False
    if emergency:
        active = any(g.hpr == who.hpr and g.until > _ms(now) for g in target.grants)
        if not active:
            problem = reason_problem(att.reason)
            if problem:
                return deny(f"{att.purpose} needs a stated reason (X-Access-Reason): {problem}"
                            + ("; the earlier emergency access has expired" if any(
                                g.hpr == who.hpr for g in target.grants) else ""))
            start_grant = True
    restricted = section in target.restricted_sections or "all" in target.restricted_sections
    if restricted and not (emergency or att.consent_declared):
        return deny(f"the patient has restricted the {section} section: declare the patient's consent "
                    "(X-Consent-Declared: true) or emergency access (ETREAT or BTG with a reason)")
    if action.writes:
        if att.purpose == COC and action.type not in COORDINATION_TYPES:
            return deny(f"coordination of care (COC) may not write {action.type}")
        roles = WRITE_ROLES.get(action.type)
        if who.hpr_category is None:
            return deny("the HPR category of this health person is not known, so nothing may be written")
        if roles is not None and who.hpr_category not in roles:
            if action.type in CRITICAL_TYPES:
                return deny(f"critical information ({action.type}) is registered by doctors (LE); "
                            f"health personnel of category {who.hpr_category} may not write it"
                            + ("; nurses (SP) register only ongoing treatments and implants (Flag)"
                               if who.hpr_category == NURSE else ""))
            return deny(f"health personnel of category {who.hpr_category} may not write {action.type} "
                        f"(allowed: {', '.join(sorted(roles))})")
    redact = ("address",) if target.shielded else ()
    basis = att.purpose or ""
    reason = {BTG: "break the glass", "ETREAT": "emergency treatment"}.get(basis, "care relationship attested")
    return allow(reason, basis, emergency=emergency, start_grant=start_grant, redact=redact)


def critical_categories(resource: dict | None) -> list[str]:
    """The critical-information category codes of ``resource`` (its category codings and the
    category extension)."""
    if not isinstance(resource, dict):
        return []
    out = []
    for ext in resource.get("extension") or ():
        if isinstance(ext, dict) and ext.get("url") == CRITICAL_CATEGORY_EXT:
            coding = ext.get("valueCoding")
            if isinstance(coding, dict) and coding.get("system") == CRITICAL_INFORMATION:
                out.append(coding.get("code"))
    categories = resource.get("category")
    for concept in categories if isinstance(categories, list) else ():
        for coding in (concept.get("coding") or ()) if isinstance(concept, dict) else ():
            if isinstance(coding, dict) and coding.get("system") == CRITICAL_INFORMATION:
                out.append(coding.get("code"))
    return out


def is_own_entry(resource: dict | None) -> bool:
    """Whether ``resource`` carries the own-entry tag (written as the citizen's own entry)."""
    meta = resource.get("meta") if isinstance(resource, dict) else None
    tags = meta.get("tag") if isinstance(meta, dict) else None
    return any(isinstance(t, dict) and t.get("system") == OWN_ENTRY for t in tags or ())


def content_problem(subject: Subject, type: str, resource: dict | None, old: dict | None) -> str:
    """Why ``subject`` may not write this content of ``type`` ("" when it may): the rules that
    depend on what is written, beside ``decide``. ``resource`` is the new content (None: a
    delete), ``old`` the current one (None: a create).

    - Health personnel: each critical-information category has the roles that may register it
      (``CRITICAL_ROLES``): any doctor every category, nurses only ongoing treatments and
      implants; a nurse's Flag must carry that category.
    - Citizens (and proxies): RelatedPerson and Condition only as own entries (``OWN_ENTRY``
      tag on the old and the new content), and never with a critical-information category.
    """
    who = subject.principal
    if who.kind == PERSONNEL and type in CRITICAL_TYPES:
        for content in (old, resource):
            codes = critical_categories(content)
            for code in codes:
                roles = CRITICAL_ROLES.get(code)
                if roles is None:
                    return f"'{code}' is not a critical-information category ({CRITICAL_INFORMATION})"
                if who.hpr_category not in roles:
                    return (f"critical information of category '{code}' is registered by "
                            f"{' or '.join(sorted(roles))} only; nurses (SP) register only ongoing "
                            f"treatments and implants ('{TREATMENT_IMPLANT}')")
            if who.hpr_category == NURSE and type == "Flag" and content is not None and not codes:
                return (f"nurses (SP) register only critical information of category '{TREATMENT_IMPLANT}' "
                        f"(ongoing treatments and implants): give it as Flag.category ({CRITICAL_INFORMATION})")
    if who.kind == CITIZEN:
        if type in CRITICAL_TYPES and (critical_categories(resource) or critical_categories(old)):
            return "citizens may not write critical information: it is registered by health personnel"
        if type in OWN_ENTRY_TYPES:
            for content in (old, resource):
                if content is not None and not is_own_entry(content):
                    return (f"citizens may not write {type} except as their own entries (meta.tag "
                            f"{OWN_ENTRY}); registered relatives and diagnoses are not theirs to change")
    return ""


def _citizen(subject: Subject, action: Action, target: PatientFacts, now: datetime) -> Decision:
    who = subject.principal
    today = now.astimezone(OSLO).date()
    if who.pid is not None and who.pid == target.pid:
        return _citizen_rights(action, "own record", "own-record", ())
    for proxy in target.proxies:
        if proxy.pid != who.pid or not _in_period(proxy, today):
            continue
        if proxy.kind == "parent":
            decision = _parent(action, target, proxy, today)
        elif proxy.kind == "attorney":
            decision = _attorney(action, target, proxy, today)
        else:
            continue
        if decision.allow or decision.status != 404:
            return decision
    return deny("not found", 404)


def _citizen_rights(action: Action, reason: str, basis: str, redact: tuple) -> Decision:
    if action.writes and action.type not in CITIZEN_WRITES:
        return deny(f"citizens may not write {action.type} (they may write "
                    f"{', '.join(sorted(CITIZEN_WRITES))})")
    return allow(reason, basis, redact=redact)


def _parent(action: Action, target: PatientFacts, proxy: Proxy, today: date) -> Decision:
    if target.birth_date is None:
        return deny("the child's birth date is not known, so parental access cannot be decided")
    if not proxy.responsibility:
        return deny("parents act for a child only with parental responsibility")
    if not proxy.same_address:
        return deny("parents act for a child only when registered at the child's address")
    age = age_on(target.birth_date, today)
    if age >= PARENT_LIMITED_UNTIL:
        return deny(f"from {PARENT_LIMITED_UNTIL} the young person controls their own record", 404)
    redact = ("address",) if target.shielded else ()
    if age < PARENT_FULL_UNTIL:
        return _citizen_rights(action, f"parent of a child under {PARENT_FULL_UNTIL}", "parent", redact)
    section = section_of(action.type)
    if section == SUMMARY:
        return deny(f"parents of a child aged {PARENT_FULL_UNTIL}-{PARENT_LIMITED_UNTIL - 1} "
                    "do not see the summary care record")
    if section == PRESCRIPTIONS and target.prescriptions_hidden_from_parents:
        return deny("the young person has hidden prescriptions from their parents")
    if action.type == "Consent" and action.writes:
        return deny(f"parents of a child aged {PARENT_FULL_UNTIL}-{PARENT_LIMITED_UNTIL - 1} "
                    "may not change the child's consents")
    return _citizen_rights(action, f"parent of a child aged {PARENT_FULL_UNTIL}-{PARENT_LIMITED_UNTIL - 1} "
                           "(limited)", "parent", redact)


def _attorney(action: Action, target: PatientFacts, proxy: Proxy, today: date) -> Decision:
    if target.birth_date is None or age_on(target.birth_date, today) < ATTORNEY_GIVER_MIN:
        return deny(f"a power of attorney holds only when its giver is at least {ATTORNEY_GIVER_MIN}")
    if proxy.birth_date is None or age_on(proxy.birth_date, today) < ATTORNEY_RECEIVER_MIN:
        return deny(f"a power of attorney holds only for a receiver of at least {ATTORNEY_RECEIVER_MIN}")
    if action.writes and USE not in proxy.scopes:
        return deny("this power of attorney lets you view data, not use services")
    if action.type == "Consent" and action.writes:
        return deny("a power of attorney cannot change the giver's consents or give further powers")
    redact = ("address",) if target.shielded else ()
    return _citizen_rights(action, "power of attorney", "attorney", redact)


def _in_period(proxy: Proxy, today: date) -> bool:
    return (proxy.start is None or proxy.start <= today) and (proxy.end is None or today <= proxy.end)


def _ms(now: datetime) -> int:
    return int(now.timestamp() * 1000)


def grant_until(now: datetime, minutes: int) -> int:
    return _ms(now + timedelta(minutes=minutes))
