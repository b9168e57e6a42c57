"""A patient's access facts, read from FHIR data so that citizen controls and proxies are
data, not code (docs/access.md):

- ``Patient``: birth date, fødselsnummer, address; a shielded address (strengt fortrolig /
  fortrolig adresse) is the security label ``v3-Confidentiality`` R or V on ``Patient.meta``.
- ``Consent`` (status active, category from ``ACCESS_CONTROL``): blocks of named health
  personnel, blocks from prescriptions, restricted sections, opting out of the summary care
  record, prescriptions hidden from parents, and powers of attorney.
- ``RelatedPerson``: parents, with parental responsibility (no-basis
  *parental-responsibility*) and their address.

``facts_from`` is pure; ``FactsLoader`` reads the resources from the store and caches the
result until any Patient, Consent or RelatedPerson is written (``access.generation``).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import date
from typing import Any

from ..fhir import jsonio, norway
from ..fhir import query as fq
from .policy import SECTIONS, USE, VIEW, Grant, PatientFacts, Proxy, is_own_entry

ACCESS_CONTROL = "https://enjournal.no/fhir/CodeSystem/access-control"
RECORD_SECTION = "https://enjournal.no/fhir/CodeSystem/record-section"
PROXY_SCOPE = "https://enjournal.no/fhir/CodeSystem/proxy-scope"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
FAMILY_RELATION = "http://hl7.no/fhir/CodeSystem/no-basis-family-relation"
PARENTAL_RESPONSIBILITY = "http://hl7.no/fhir/CodeSystem/no-basis-parental-responsibility"

# Consent categories (ACCESS_CONTROL codes)
BLOCK_PERSONNEL = "block-personnel"
BLOCK_PRESCRIPTIONS = "block-prescriptions"
RESTRICT_SECTION = "restrict-section"
SUMMARY_OPT_OUT = "summary-opt-out"
HIDE_PRESCRIPTIONS_FROM_PARENTS = "hide-prescriptions-from-parents"
POWER_OF_ATTORNEY = "power-of-attorney"
CONSENT_KINDS = (BLOCK_PERSONNEL, BLOCK_PRESCRIPTIONS, RESTRICT_SECTION, SUMMARY_OPT_OUT,
                 HIDE_PRESCRIPTIONS_FROM_PARENTS, POWER_OF_ATTORNEY)

_PARENT_ROLES = {"PRN", "MTH", "FTH", "NPRN", "NMTH", "NFTH", "STPPRN", "STPMTH", "STPFTH",
                 "ADOPTP", "ADOPTF", "ADOPTM", "GUARD"}
_PARENT_RELATIONS = {"mor", "far", "medmor"}
_NO_RESPONSIBILITY = {"ingen", "ukjent"}
_SHIELDED = {"R", "V"}
PERSON_SYSTEMS = (norway.FNR, norway.DNR)


def facts_from(patient: dict, consents: list[dict], related: list[dict],
               grants: list[tuple] = ()) -> PatientFacts:
    """The facts about ``patient`` (a Patient resource) from its Consents and RelatedPersons."""
    pid = person_number(patient.get("identifier"))
    blocked, rx_blocked, restricted = set(), set(), set()
    opt_out = hide_rx = False
    proxies: list[Proxy] = []
    for consent in consents:
        if not isinstance(consent, dict) or consent.get("status") != "active":
            continue
        provision = consent.get("provision") if isinstance(consent.get("provision"), dict) else {}
        for kind in _codes(consent.get("category"), ACCESS_CONTROL):
            if kind == BLOCK_PERSONNEL:
                blocked |= _actor_numbers(provision, (norway.HPR,))
            elif kind == BLOCK_PRESCRIPTIONS:
                rx_blocked |= _actor_numbers(provision, (norway.HPR,))
            elif kind == RESTRICT_SECTION:
                sections = set(_codes(provision.get("code"), RECORD_SECTION)) & (set(SECTIONS) | {"all"})
                restricted |= sections or {"all"}
            elif kind == SUMMARY_OPT_OUT:
                opt_out = True
            elif kind == HIDE_PRESCRIPTIONS_FROM_PARENTS:
                hide_rx = True
            elif kind == POWER_OF_ATTORNEY:
                proxies.extend(_attorneys(consent, provision))
    home = {_address_key(a) for a in _list(patient.get("address"))} - {None}
    for person in related:
        proxy = _parent(person, home)
        if proxy is not None:
            proxies.append(proxy)
    return PatientFacts(
        id=str(patient.get("id")), pid=pid, birth_date=_date(patient.get("birthDate")),
        shielded=any(c in _SHIELDED for c in _label_codes(patient, CONFIDENTIALITY)),
        summary_opt_out=opt_out, blocked_hpr=frozenset(blocked), prescription_blocked_hpr=frozenset(rx_blocked),
        restricted_sections=frozenset(restricted), prescriptions_hidden_from_parents=hide_rx,
        proxies=tuple(proxies), grants=tuple(Grant(h, u, r) for h, u, r in grants))


def person_number(identifiers: Any) -> str | None:
    """The fødselsnummer (or D-number) among ``identifiers``."""
    for system in PERSON_SYSTEMS:
        for ident in _list(identifiers):
            if ident.get("system") == system and isinstance(ident.get("value"), str):
                return ident["value"]
    return None


def _parent(person: dict, home: set) -> Proxy | None:
    if not isinstance(person, dict) or person.get("active") is False:
        return None
    if is_own_entry(person):        # a contact the citizen entered: never a proxy (docs/summary.md)
        return None
    pid = person_number(person.get("identifier"))
    if pid is None:
        return None
    relationships = _list(person.get("relationship"))
    roles = set(_codes(relationships, ROLE_CODE)) | set(_codes(relationships, FAMILY_RELATION))
    if not roles & (_PARENT_ROLES | _PARENT_RELATIONS):
        return None
    responsibility = [c for c in _codes(relationships, PARENTAL_RESPONSIBILITY) if c not in _NO_RESPONSIBILITY]
    addresses = {_address_key(a) for a in _list(person.get("address"))} - {None}
    period = person.get("period") if isinstance(person.get("period"), dict) else {}
    return Proxy(pid=pid, kind="parent", responsibility=bool(responsibility), same_address=bool(addresses & home),
                 start=_date(period.get("start")), end=_date(period.get("end")),
                 birth_date=_date(person.get("birthDate")) or norway.birth_date(pid))


def _attorneys(consent: dict, provision: dict) -> list[Proxy]:
    if provision.get("type", "permit") != "permit":
        return []
    scopes = frozenset(c for c in _codes(provision.get("action"), PROXY_SCOPE) if c in (VIEW, USE)) or frozenset({VIEW})
    period = provision.get("period") if isinstance(provision.get("period"), dict) else {}
    out = []
    for number in sorted(_actor_numbers(provision, PERSON_SYSTEMS)):
        out.append(Proxy(pid=number, kind="attorney", scopes=scopes, start=_date(period.get("start")),
                         end=_date(period.get("end")), birth_date=norway.birth_date(number)))
    return out


def _actor_numbers(provision: dict, systems: tuple) -> set[str]:
    out = set()
    for actor in _list(provision.get("actor")):
        ref = actor.get("reference") if isinstance(actor.get("reference"), dict) else {}
        ident = ref.get("identifier") if isinstance(ref.get("identifier"), dict) else {}
        if ident.get("system") in systems and isinstance(ident.get("value"), str):
            out.add(ident["value"])
    return out


def _codes(concepts: Any, system: str) -> list[str]:
    """Codes of ``system`` in a CodeableConcept or a list of them."""
    if isinstance(concepts, dict):
        concepts = [concepts]
    out = []
    for concept in _list(concepts):
        for coding in _list(concept.get("coding")):
            if coding.get("system") == system and isinstance(coding.get("code"), str):
                out.append(coding["code"])
    return out


def _label_codes(resource: dict, system: str) -> list[str]:
    meta = resource.get("meta") if isinstance(resource.get("meta"), dict) else {}
    return [c.get("code") for c in _list(meta.get("security")) if c.get("system") == system]


def _address_key(address: dict) -> tuple | None:
    lines = tuple(" ".join(str(x).lower().split()) for x in _list_any(address.get("line")))
    postal = str(address.get("postalCode") or "").replace(" ", "")
    if not lines or not postal:
        return None
    return lines, postal


def _list(value: Any) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _list_any(value: Any) -> list:
    return value if isinstance(value, list) else []


def _date(value: Any) -> date | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


class FactsLoader:
    """Reads and caches ``PatientFacts`` from the (unguarded) store: the guard's own lookups
    are the platform's, not the caller's, so they are neither checked nor audited."""

    GENERATION = "access.generation"

    def __init__(self, store: Any, size: int = 10_000):
        self.store = store
        self.size = size
        self._cache: OrderedDict[str, tuple[str, PatientFacts | None]] = OrderedDict()
        self._lock = threading.Lock()

    def generation(self) -> str:
        return self.store.get_setting(self.GENERATION) or "0"

    def facts(self, patient_id: str, generation: str | None = None) -> PatientFacts | None:
        """The facts of Patient ``patient_id``, None when there is no such (current) Patient."""
        generation = generation if generation is not None else self.generation()
        with self._lock:
            hit = self._cache.get(patient_id)
            if hit is not None and hit[0] == generation:
                self._cache.move_to_end(patient_id)
                return hit[1]
        facts = self._load(patient_id)
        with self._lock:
            self._cache[patient_id] = (generation, facts)
            if len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return facts

    def _load(self, patient_id: str) -> PatientFacts | None:
        stored = self.store.read("Patient", patient_id)
        if stored is None or stored.deleted:
            return None
        patient = jsonio.loads(stored.body)
        consents = self._search("Consent", [("patient", f"Patient/{patient_id}"), ("status", "active")])
        related = self._search("RelatedPerson", [("patient", f"Patient/{patient_id}")])
        grants = self.store.grants(patient_id) if hasattr(self.store, "grants") else []
        return facts_from(patient, consents, related, grants)

    def _search(self, type: str, params: list) -> list[dict]:
        query = fq.parse(type, params, self.store.registry, default_count=1000, max_count=1000)
        return [jsonio.loads(s.body) for s in self.store.load(self.store.search(query).keys)]

    def patient_by_number(self, number: str) -> str | None:
        """The id of the Patient with this fødselsnummer or D-number (None: none, or several)."""
        for system in PERSON_SYSTEMS:
            query = fq.parse("Patient", [("identifier", f"{system}|{number}")], self.store.registry,
                             default_count=2, max_count=2)
            keys = self.store.search(query).keys
            if len(keys) == 1:
                return self.store.load(keys)[0].id
        return None

    def hpr_category(self, hpr: str) -> str | None:
        """The helsepersonellkategori of the Practitioner with this HPR number, from its
        qualifications (the platform's copy of the HPR register)."""
        query = fq.parse("Practitioner", [("identifier", f"{norway.HPR}|{hpr}")], self.store.registry,
                         default_count=2, max_count=2)
        for stored in self.store.load(self.store.search(query).keys):
            for qualification in _list(jsonio.loads(stored.body).get("qualification")):
                codes = _codes(qualification.get("code"), "urn:oid:2.16.578.1.12.4.1.1.9060")
                if codes:
                    return codes[0]
        return None
