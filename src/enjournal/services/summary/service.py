"""SummaryService: the summary care record (kjernejournal) for pages and the FHIR API.

Available as ``platform.summary``. Every method runs under the current AccessContext (the
page or API handler has set it) and reads/writes only through the guarded repository, so
every access is checked and audited. Errors are ``enjournal.errors`` exceptions
(Invalid with ``expression`` = the form field name, Forbidden naming the rule, NotFound, ...).

Public names (pages code against these):

- ``enjournal.services.summary.codes.CATEGORIES``: ordered tuple of Category objects with
  ``.code``, ``.display`` (nb), ``.display_en``, ``.resource_type`` ("AllergyIntolerance" or
  "Flag"), ``.roles`` (frozenset of helsepersonellkategori codes that may register it: LE all,
  SP only "implants-treatments").
- ``summary(patient_id) -> dict``: the ``$summary`` document Bundle (IPS-shaped; see
  ``document.SECTIONS``; a locked section has ``emptyReason`` withheld). ``summary_json`` gives
  the same as bytes with every resource exactly as stored (the API's answer).
- ``critical_information(patient_id) -> list[dict]``: current entries, critical first, as
  ``critical.view`` dicts (id, resource_type, category, category_display, text, verification,
  status, criticality, critical, recorded {when, by}, last_confirmed {when, by}, resource).
  Raises Forbidden when the summary section is locked for the caller (restricted, opted out).
- ``register_critical(patient_id, category, text, code=None, verification="confirmed",
  note=None, **extra) -> dict``; verification is one of "mistenkt", "sannsynlig",
  "bekreftet", "avkreftet" (or the FHIR codes unconfirmed/presumed/confirmed/refuted).
- ``confirm(resource_type, id) -> dict``; ``entered_in_error(resource_type, id, reason) -> dict``;
  ``change(resource_type, id, **fields) -> dict`` (fields: text, verification, note).
- ``own_entries(patient_id) -> dict`` with keys contacts (list of RelatedPerson-derived dicts),
  illnesses (list), needs (dict sight/hearing/text or None), interpreter (dict needed/language
  or None), donor_card (dict or None).
- ``save_contact(patient_id, name, relationship, phone, contact_id=None, note=None)`` (phone:
  at least 8 digits), ``remove_contact(patient_id, id)``,
  ``save_illness(patient_id, text, illness_id=None)``, ``remove_illness(patient_id, id)``,
  ``save_needs(patient_id, sight: bool, hearing: bool, text=None)``,
  ``save_interpreter(patient_id, needed: bool, language=None)`` (language required when needed),
  ``save_donor_card(patient_id, consent: "ja"|"nei", witnesses: list of 1-2 dict(name, phone,
  birth_date "YYYY-MM-DD", each at least 18))``, ``withdraw_donor_card(patient_id)``.
  Invalid expressions: the argument name, or ``witnesses[0].birth_date`` and the like.
"""
from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable

import orjson

from ... import errors
from ...access.context import current, system_context, use
from ...access.policy import OSLO, OWN_ENTRY, is_own_entry
from ...fhir import jsonio, norway
from . import codes, critical, document, donor_card, own_entries
from .critical import _code
from .document import Section

BLOCKED = "blocked this health person from the record"
CRITICAL_TYPES = ("AllergyIntolerance", "Flag")
RECENT = 20         # newest procedures
REPORTS = 10        # newest lab reports (DiagnosticReport), each with its results
MANY = 50           # newest encounters, documents
ALL = 500           # a patient's allergies, flags, conditions, medicines, vaccinations


class SummaryService:
    """The summary care record over the guarded resource service (see the module docstring)."""

    def __init__(self, resources: Any, guard: Any, clock: Callable[[], datetime] | None = None):
        self.resources = resources
        self.guard = guard
        self.clock = clock or (lambda: guard.clock())

    # -- the code systems ----------------------------------------------------------------

    def seed(self) -> None:
        """Write the published CodeSystems where missing or different (a system write; safe
        to run in every process at start: a race with another process is harmless)."""
        with use(system_context("enjournal")):
            for cs in codes.code_systems():
                stored = self.guard.store.read("CodeSystem", cs["id"])
                if stored is not None and not stored.deleted:
                    have = jsonio.loads(stored.body)
                    have.pop("meta", None)
                    if have == cs:
                        continue
                try:
                    self.resources.update("CodeSystem", cs["id"], dict(cs))
                except (errors.Conflict, errors.PreconditionFailed):
                    pass

    # -- helpers ---------------------------------------------------------------------------

    def _now(self) -> str:
        return self.clock().astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")

    def _today(self) -> date:
        return self.clock().astimezone(OSLO).date()

    def _search(self, type: str, params: list, count: int = ALL, raw: dict | None = None) -> tuple[list[dict], bool]:
        """The resources the caller may see (``count`` at most) and whether there are more.
        ``raw``: collects each one's stored body by reference (for ``summary_json``)."""
        result = self.resources.search(type, params + [("_count", str(count))])
        found = []
        for stored in list(result.matches) + list(result.included):     # _include: checked each
            found.append(_loads(stored.body))
            if raw is not None:
                raw[f"{stored.type}/{stored.id}"] = stored.body
        return found, result.page.has_more

    def _read(self, type: str, id: str, raw: dict | None = None) -> dict:
        stored = self.resources.read(type, id)
        if raw is not None:
            raw[f"{stored.type}/{stored.id}"] = stored.body
        return _loads(stored.body)

    def _me(self) -> dict:
        """A reference to the person acting: the Practitioner with the token's HPR number,
        else the citizen's Patient, else a display."""
        ctx = current()
        who = ctx.subject.principal if ctx is not None and ctx.subject is not None else None
        if who is None:
            return {"display": "ukjent"}
        if who.hpr:
            found, _ = self._search("Practitioner", [("identifier", f"{norway.HPR}|{who.hpr}")], 1)
            if found:
                p = found[0]
                shown = own_entries.name_text((p.get("name") or [{}])[0])
                return {"reference": f"Practitioner/{p['id']}", "display": shown or who.name}
            return {"identifier": {"system": norway.HPR, "value": who.hpr}, "display": who.name or who.hpr}
        return {"display": who.name or "innbygger"}

    def _entry(self, resource_type: str, id: str) -> dict:
        if resource_type not in CRITICAL_TYPES:
            raise errors.Invalid(f"{resource_type} is not critical information (AllergyIntolerance or Flag)",
                                 "resource_type")
        return self._read(resource_type, id)

    def _write(self, resource: dict, id: str | None = None, version: str | None = None) -> dict:
        type_ = resource["resourceType"]
        if id is None:
            outcome = self.resources.create(type_, resource)
        else:
            resource["id"] = id
            outcome = self.resources.update(type_, id, resource, int(version) if version else None)
        return jsonio.loads(outcome.stored.body)

    # -- critical information --------------------------------------------------------------

    def critical_information(self, patient_id: str) -> list[dict]:
        """Current entries (not refuted, not entered-in-error, active), critical first, as
        ``critical.view`` dicts."""
        found = []
        for type_ in CRITICAL_TYPES:
            found += self._search(type_, [("patient", f"Patient/{patient_id}")])[0]
        views = [critical.view(r) for r in found if critical.is_current(r)]
        return sorted(views, key=critical.view_sort_key)

    def register_critical(self, patient_id: str, category: str, text: str, code: dict | None = None,
                          verification: str = "confirmed", note: str | None = None, **extra: Any) -> dict:
        """Register an entry; the guard decides whether this person may register ``category``
        (Forbidden naming the rule). Returns the stored resource."""
        resource = critical.new_entry(patient_id, category, text, code, verification, note, self._me(),
                                      self._now(), extra)
        return self._write(resource)

    def confirm(self, resource_type: str, id: str) -> dict:
        """Mark the entry as confirmed now by the person acting (a new version)."""
        old = self._entry(resource_type, id)
        return self._write(critical.confirm(old, self._me(), self._now()), id, old["meta"]["versionId"])

    def entered_in_error(self, resource_type: str, id: str, reason: str) -> dict:
        old = self._entry(resource_type, id)
        return self._write(critical.entered_in_error(old, reason, self._me(), self._now()), id,
                           old["meta"]["versionId"])

    def change(self, resource_type: str, id: str, **fields: Any) -> dict:
        old = self._entry(resource_type, id)
        return self._write(critical.change(old, fields, self._now()), id, old["meta"]["versionId"])

    # -- the citizen's own entries ---------------------------------------------------------

    def _own(self, patient_id: str, type_: str, *kinds: str, raw: dict | None = None) -> list[dict]:
        """The patient's ``type_`` resources tagged as own entries of one of ``kinds``."""
        tags = ",".join(f"{OWN_ENTRY}|{kind}" for kind in kinds)
        found, _ = self._search(type_, [("patient", f"Patient/{patient_id}"), ("_tag", tags)], raw=raw)
        return found

    def own_entries(self, patient_id: str) -> dict:
        """The citizen's own entries: contacts (own and registered), illnesses, needs,
        interpreter, donor_card (the active or last withdrawn one; None when never made)."""
        related, _ = self._search("RelatedPerson", [("patient", f"Patient/{patient_id}")])
        observations = self._own(patient_id, "Observation", "needs", "interpreter")
        needs = [o for o in observations if own_entries.kind_of(o) == "needs"]
        interpreter = [o for o in observations if own_entries.kind_of(o) == "interpreter"]
        cards = self._own(patient_id, "Consent", "donor-card")
        cards.sort(key=lambda c: (c.get("status") == "active", c.get("dateTime") or ""))
        return {
            "contacts": [own_entries.contact_view(r) for r in related if r.get("active") is not False],
            "illnesses": [own_entries.illness_view(r) for r in self._own(patient_id, "Condition", "illness")],
            "needs": own_entries.needs_view(needs[0]) if needs else None,
            "interpreter": own_entries.interpreter_view(interpreter[0]) if interpreter else None,
            "donor_card": donor_card.view(cards[-1]) if cards else None,
        }

    def save_contact(self, patient_id: str, name: str, relationship: str, phone: str,
                     contact_id: str | None = None, note: str | None = None) -> dict:
        resource = own_entries.contact(patient_id, name, relationship, phone, note)
        if contact_id is None:
            return self._write(resource)
        old = self._read("RelatedPerson", contact_id)
        return self._write(resource, contact_id, old["meta"]["versionId"])

    def remove_contact(self, patient_id: str, id: str) -> None:
        old = self._read("RelatedPerson", id)
        if (old.get("patient") or {}).get("reference") != f"Patient/{patient_id}":
            raise errors.NotFound(f"RelatedPerson/{id} is not known", "id")
        self.resources.delete("RelatedPerson", id)

    def save_illness(self, patient_id: str, text: str, illness_id: str | None = None) -> dict:
        resource = own_entries.illness(patient_id, text, self._now())
        if illness_id is None:
            return self._write(resource)
        old = self._read("Condition", illness_id)
        return self._write(resource, illness_id, old["meta"]["versionId"])

    def remove_illness(self, patient_id: str, id: str) -> None:
        old = self._read("Condition", id)
        if (old.get("subject") or {}).get("reference") != f"Patient/{patient_id}" or not is_own_entry(old):
            raise errors.NotFound(f"Condition/{id} is not known", "id")
        self.resources.delete("Condition", id)

    def _save_single(self, patient_id: str, kind: str, resource: dict) -> dict:
        existing = self._own(patient_id, resource["resourceType"], kind)
        if existing:
            return self._write(resource, existing[0]["id"], existing[0]["meta"]["versionId"])
        return self._write(resource)

    def save_needs(self, patient_id: str, sight: bool, hearing: bool, text: str | None = None) -> dict:
        return self._save_single(patient_id, "needs", own_entries.needs(patient_id, sight, hearing, text, self._now()))

    def save_interpreter(self, patient_id: str, needed: bool, language: str | None = None) -> dict:
        return self._save_single(patient_id, "interpreter",
                                 own_entries.interpreter(patient_id, needed, language, self._now()))

    def _active_cards(self, patient_id: str, raw: dict | None = None) -> list[dict]:
        return [c for c in self._own(patient_id, "Consent", "donor-card", raw=raw) if c.get("status") == "active"]

    def save_donor_card(self, patient_id: str, consent: str, witnesses: list[dict]) -> dict:
        """Make or replace the donor card (the active one gets a new version)."""
        resource = donor_card.donor_card(patient_id, consent, witnesses, self._now(), self._today())
        active = self._active_cards(patient_id)
        if active:
            return self._write(resource, active[0]["id"], active[0]["meta"]["versionId"])
        return self._write(resource)

    def withdraw_donor_card(self, patient_id: str) -> dict:
        active = self._active_cards(patient_id)
        if not active:
            raise errors.NotFound("there is no donor card to withdraw", "donor_card")
        card = active[0]
        return self._write(donor_card.withdraw(card, self._now()), card["id"], card["meta"]["versionId"])

    # -- $summary --------------------------------------------------------------------------

    def summary(self, patient_id: str, base: str | None = None) -> dict:
        """The ``$summary`` document Bundle for Patient ``patient_id`` as the caller may see it.

        Raises NotFound for an unknown patient and alike for health personnel the patient
        has blocked; Forbidden when the summary record is closed to the caller as a whole (the
        citizen opted out, a parent of a 12–15-year-old); sections the caller may not open are
        locked in the document, not left out silently. (Numbers in the resources are read as
        floats here: ``summary_json`` gives the stored resources byte for byte.)"""
        return self._document(patient_id, base, None)

    def summary_json(self, patient_id: str, base: str | None = None) -> bytes:
        """``summary`` as FHIR JSON, each resource exactly as stored (decimals keep their
        precision), without parsing and writing each one again."""
        raw: dict[str, bytes] = {}
        bundle = self._document(patient_id, base, raw)
        entries = bundle.pop("entry")
        parts = []
        for e in entries:
            resource = e["resource"]
            body = raw.get(f"{resource['resourceType']}/{resource.get('id')}")
            if body is None:
                parts.append(orjson.dumps(e))
            else:
                parts.append(b'{"fullUrl":' + orjson.dumps(e["fullUrl"]) + b',"resource":' + body + b"}")
        head = orjson.dumps(bundle)
        return head[:-1] + b',"entry":[' + b",".join(parts) + b"]}"

    def _document(self, patient_id: str, base: str | None, raw: dict | None) -> dict:
        ctx = self.guard.ctx()
        if base is None:
            base = ctx.base or ""
        unknown = errors.NotFound(f"Patient/{patient_id} is not known", "Patient.id")
        decision = self.guard.decision(ctx, "read", "AllergyIntolerance", patient_id)
        if not decision.allow:
            if decision.status == 404 or BLOCKED in decision.reason:
                raise unknown
            if "restricted" not in decision.reason:
                raise errors.Forbidden(f"access denied: {decision.reason}")
        try:
            patient = self._read("Patient", patient_id, raw)
        except errors.Forbidden as exc:
            if BLOCKED in exc.message:
                raise unknown from None
            patient = None
        except errors.Gone:
            raise unknown from None
        sections = self._sections(patient_id, patient, raw)
        return document.build(patient_id, patient, sections, self._now(), base, str(uuid.uuid4()), str(uuid.uuid4()))

    def _sections(self, patient_id: str, patient: dict | None, raw: dict | None) -> list[Section]:
        me = f"Patient/{patient_id}"
        out: dict[str, Section] = {}

        def gather(key: str, *searches: tuple) -> list[dict] | None:
            """Run the searches of one section; a rule that keeps one closed locks it."""
            section = out[key] = Section(key)
            found, more = [], False
            try:
                for type_, params, count in searches:
                    rows, cut = self._search(type_, [("patient", me)] + params, count, raw)
                    found += rows
                    more = more or cut
            except errors.Forbidden as exc:
                section.locked = exc.message
                return None
            section.more = more
            return found

        allergies = gather("allergies", ("AllergyIntolerance", [], ALL))
        if allergies is not None:
            shown = sorted((r for r in allergies if critical.is_current(r)), key=critical.sort_key)
            out["allergies"].entries = shown
        flags = gather("alerts", ("Flag", [], ALL))
        out["advance-directives"] = Section("advance-directives", locked=out["alerts"].locked)
        if flags is not None:
            active = sorted((f for f in flags if critical.is_current(f)), key=critical.sort_key)
            by_cat = {"alerts": [], "advance-directives": [], "devices": []}
            for f in active:
                cat = critical.category_of(f)
                by_cat["advance-directives" if cat == "changed-routine" else
                       "devices" if cat == codes.TREATMENT_IMPLANT_CODE else "alerts"].append(f)
            out["alerts"].entries = by_cat["alerts"]
            out["advance-directives"].entries = by_cat["advance-directives"]
            device_flags = by_cat["devices"]
        else:
            device_flags = []
        devices = gather("devices", ("DeviceUseStatement", [], ALL))
        if devices is not None:
            devices = [d for d in devices if d.get("status") == "active"]
            out["devices"].entries = device_flags + devices
        conditions = gather("problems", ("Condition", [("clinical-status", "active")], ALL))
        own_illnesses = []
        if conditions is not None:
            shown = [c for c in conditions if not is_own_entry(c) and _code(c.get("verificationStatus"))
                     not in ("entered-in-error", "refuted")]
            own_illnesses = [c for c in conditions if is_own_entry(c)]
            out["problems"].entries = shown
        since = (self._today() - timedelta(days=365)).isoformat()
        meds = gather("medications", ("MedicationStatement", [("status", "active")], ALL),
                      ("MedicationRequest", [("status", "active")], ALL),
                      ("MedicationDispense", [("whenhandedover", f"ge{since}")], ALL))
        if meds is not None:
            out["medications"].entries = meds
        encounters = gather("encounters", ("Encounter", [("_sort", "-date")], MANY))
        if encounters is not None:
            out["encounters"].entries = encounters
        vaccines = gather("immunizations", ("Immunization", [("_sort", "-date")], ALL))
        if vaccines is not None:
            out["immunizations"].entries = vaccines
        # the newest lab reports with their results (one search: sorting every lab
        # Observation of a long life would cost more than the rest of the document)
        results = gather("results", ("DiagnosticReport", [("_sort", "-date"),
                                                          ("_include", "DiagnosticReport:result")], REPORTS))
        if results is not None:
            out["results"].entries = results
        procedures = gather("procedures", ("Procedure", [("_sort", "-date")], RECENT))
        if procedures is not None:
            out["procedures"].entries = procedures
        docs = gather("documents", ("DocumentReference", [("status", "current"), ("_sort", "-date")], MANY))
        if docs is not None:
            out["documents"].entries = docs
        related = gather("contacts", ("RelatedPerson", [], ALL))
        if related is not None:
            section = out["contacts"]
            section.entries = [r for r in related if r.get("active") is not False]
            for contact in (patient or {}).get("contact", []) or []:
                section.lines.append(_contact_line(contact))
        out["gp"] = self._gp(patient, raw)
        own = Section("own-entries")
        try:
            own.entries = (own_illnesses + self._own(patient_id, "Observation", "needs", "interpreter", raw=raw)
                           + self._active_cards(patient_id, raw))
        except errors.Forbidden as exc:
            own.locked = exc.message
        out["own-entries"] = own
        return [out[s.key] for s in document.SECTIONS]

    def _gp(self, patient: dict | None, raw: dict | None = None) -> Section:
        """The GP (fastlege) from the GP list: Patient.generalPractitioner."""
        section = Section("gp")
        for ref in (patient or {}).get("generalPractitioner", []) or []:
            target = ref.get("reference") or ""
            type_, _, id_ = target.partition("/")
            if type_ in ("Practitioner", "PractitionerRole", "Organization") and id_:
                try:
                    section.entries.append(self._read(type_, id_, raw))
                    continue
                except (errors.NotFound, errors.Gone, errors.Forbidden):
                    pass
            if ref.get("display"):
                section.lines.append(ref["display"])
        return section


def _loads(body: bytes) -> dict:
    """A stored body, read fast: for sorting, filtering and narrative a float is enough."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:          # e.g. an integer beyond 64 bits
        return jsonio.loads(body)


def _contact_line(contact: dict) -> str:
    shown = own_entries.name_text(contact.get("name") or {})
    rel = ", ".join(r.get("text") or next((c.get("display", "") for c in r.get("coding", [])), "")
                    for r in contact.get("relationship", []))
    phone = next((t.get("value") for t in contact.get("telecom", []) if t.get("system") == "phone"), "")
    return " – ".join(x for x in (shown, rel, phone) if x)

