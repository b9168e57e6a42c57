"""The guarded repository: the one door services use to reach patient data.

It implements the Repository protocol (``store/__init__.py``) over the real store and, for
every read, search, history and write, asks ``policy.decide`` on behalf of the current
request's subject (``context.current()``), then carries out the decision:

- reads of data the subject may not see answer as if it did not exist (404, no leak of
  existence) unless the subject is bound to that patient and only a rule stands in the way
  (403 with the rule);
- searches are rewritten so that every hop (the searched type, chains, ``_has``) stays
  inside the bound patient's compartment; included resources are filtered;
- writes are checked for the resource's patient before and after the change;
- everything touched is noted in the request's ``AccessContext`` for the audit record, and a
  write's audit record is appended in the write's own transaction.
"""
from __future__ import annotations

import contextlib
import dataclasses
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from .. import errors
from ..fhir import jsonio, norway
from ..fhir import query as fq
from ..fhir.compartments import compartment_params, compartment_types
from ..fhir.index_values import Reference
from ..store import Page, Stored
from . import scopes as sc
from .context import AccessContext, Touched, current
from .facts import FactsLoader
from .policy import CRITICAL_TYPES, OSLO, OWN_ENTRY_TYPES, Action, Decision, content_problem, decide, grant_until
from .principal import CITIZEN, SYSTEM

PATIENT_TYPES = frozenset(compartment_types("Patient")) | {"Patient"}
# types kept outside the resource store (the audit log, access/audit.py): no client writes them
LOG_TYPES = frozenset({"AuditEvent"})
ACCESS_TYPES = frozenset({"Patient", "Consent", "RelatedPerson"})   # writes change access facts
CONTENT_TYPES = CRITICAL_TYPES | OWN_ENTRY_TYPES      # writes judged by content too (policy.content_problem)
COMMUNICATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/communication-category"
EMERGENCY_NOTICE = "https://enjournal.no/fhir/CodeSystem/notification"
_CURRENT = object()         # Guard.check: judge by the current version's patient
MAX_VERSIONS = 10_000      # a resource's newest versions judged for a caller other than a system
_ACTION_LETTER = {"create": "C", "update": "U", "patch": "U", "delete": "D"}
_ADDRESS_PARAMS = ("address", "address-city", "address-country", "address-postalcode", "address-state",
                   "address-use")


class Guard:
    """Policy enforcement shared by the guarded repository and its units."""

    def __init__(self, store: Any, facts: FactsLoader, audit: Any = None,
                 clock: Callable[[], datetime] | None = None, emergency_minutes: int = 240):
        self.store = store
        self.facts = facts
        self.audit = audit
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.emergency_minutes = emergency_minutes

    @property
    def registry(self) -> Any:
        return self.store.registry      # replaced when custom SearchParameters change

    # -- the request --------------------------------------------------------------------

    def ctx(self) -> AccessContext:
        ctx = current()
        if ctx is None or ctx.subject is None:
            raise errors.Unauthorized("authentication required: send a bearer token",
                                      headers={"WWW-Authenticate": 'Bearer realm="enjournal"'})
        return ctx

    @staticmethod
    def is_system(ctx: AccessContext) -> bool:
        return ctx.subject.principal.kind == SYSTEM

    def system_scope(self, ctx: AccessContext, interaction: str, type: str | None, hide: bool = False) -> bool:
        """A system's scopes must grant the interaction on ``type`` (None: every type);
        raises Forbidden when not (or returns False with ``hide``)."""
        letter = sc.LETTER.get(interaction, "r")
        if sc.allows(ctx.subject.principal.scopes, type or "*", letter, ("system",)):
            return True
        if hide:
            return False
        decision = Decision(False, f"the token's scopes do not grant '{letter}' on {type or 'every type'}")
        if ctx.denied is None:
            ctx.denied = decision
        raise self.refuse(decision)

    def export_types(self, requested: tuple | None, all_types: tuple, level: str, job: str) -> tuple:
        """The resource types a bulk export (https://hl7.org/fhir/uv/bulkdata/export.html) may
        contain for the current subject: only systems export, and only the types their
        scopes let them read; a type asked for by name and not granted is a 403. The export
        (``level``: system, patient or group; ``job``: its id) is recorded in the request's
        audit record, one entity per type."""
        ctx = self.ctx()
        if not self.is_system(ctx):
            decision = Decision(False, "bulk export is for system clients (client credentials with "
                                       "system/ scopes); use search or $everything for one patient")
            if ctx.denied is None:
                ctx.denied = decision
            raise self.refuse(decision)
        if requested is not None:
            for type_ in requested:
                self.system_scope(ctx, "read", type_)
            granted = tuple(requested)
        else:
            granted = tuple(t for t in all_types if self.system_scope(ctx, "read", t, hide=True))
            if not granted:
                self.system_scope(ctx, "read", None)
        for type_ in granted:
            ctx.touched.append(Touched(type_, None, None, None, "R", query=f"$export level={level} job={job}"))
        return granted

    def export_recorder(self, level: str, job: str) -> "ExportRecorder":
        """What records the reads of the export ``job`` that the current request started
        (``ExportRecorder``), for the client of this request."""
        kick = self.ctx()
        return ExportRecorder(self, kick, f"$export level={level} job={job}")

    def decision(self, ctx: AccessContext, interaction: str, type: str, patient: str | None,
                 note: bool = True) -> Decision:
        """``decide`` for one action on data of ``patient`` (None: of no patient). ``note``:
        record a denial in the request's audit record (not for lookups that only ask, such
        as a write's reference checks)."""
        # one request asks the same question for every resource of a search: decide once per
        # (interaction, type, patient) and request (the facts are read once per request too)
        memo = getattr(ctx, "_decisions", None)
        if memo is None:
            memo = ctx._decisions = {}
        key = (interaction, type, patient)
        cached = memo.get(key)
        if cached is None:
            cached = memo[key] = self._decide(ctx, interaction, type, patient)
        decision, facts = cached
        if decision.allow:
            if decision.emergency:
                ctx.emergency = True
            if decision.start_grant and facts is not None:
                self._open_grant(ctx, facts.id)
            if patient is not None and (ctx.basis is None or decision.emergency):
                ctx.basis = decision
        elif note and ctx.denied is None:
            ctx.denied = decision
        return decision

    def _decide(self, ctx: AccessContext, interaction: str, type: str,
                patient: str | None) -> tuple[Decision, Any]:
        facts = None
        if patient is not None:
            generation = getattr(ctx, "_generation", None)
            if generation is None:
                generation = ctx._generation = self.facts.generation()    # once per request
            facts = self.facts.facts(patient, generation)
            if facts is None and not self.is_system(ctx):
                return Decision(False, "not found", status=404), None
        action = Action(interaction, type, type in PATIENT_TYPES)
        return decide(ctx.subject, action, facts, self.clock()), facts

    def _open_grant(self, ctx: AccessContext, patient: str) -> None:
        """Record emergency access for this health person and patient (once per request)."""
        if getattr(ctx, "_granted", False):
            return
        ctx._granted = True
        who, att = ctx.subject.principal, ctx.subject.attestation
        now = self.clock()
        writing = getattr(ctx, "_unit", None)
        # inside a write the grant joins its transaction (a second one would wait for the lock
        # this request holds): it stands or falls with the write
        with self.store.unit() if writing is None else contextlib.nullcontext(writing) as unit:
            unit.add_grant(patient, who.hpr, grant_until(now, self.emergency_minutes), att.reason or "",
                           int(now.timestamp() * 1000))
            bump_generation(unit)
            # the citizen is told, once per grant, by the platform (docs/summary.md#emergency-access)
            notice = emergency_notice(patient, who, att.purpose or "", att.reason or "", now,
                                      who.org_name or self._organisation_name(who.org))
            unit.put("Communication", self.store.new_id(), notice, "POST", None, self.registry.extract(notice))

    def _organisation_name(self, number: str | None) -> str:
        """The name of the Organization with this organisation number in the platform's data."""
        if not number:
            return ""
        try:
            query = fq.parse("Organization", [("identifier", f"{norway.ENH}|{number}")],
                             self.store.registry, default_count=1, max_count=1)
            found = self.store.load(self.store.search(query).keys)
            return str(jsonio.loads(found[0].body).get("name") or "") if found else ""
        except errors.FhirError:
            return ""

    @staticmethod
    def refuse(decision: Decision) -> errors.FhirError:
        if decision.status == 404:
            return errors.NotFound("not found")
        return errors.Forbidden(f"access denied: {decision.reason}")

    # -- resources going out ----------------------------------------------------------------

    def check(self, ctx: AccessContext, stored: Stored | None, interaction: str, hide_only: bool = False,
              patient: Any = _CURRENT) -> Stored | None:
        """``stored`` as the subject may see it: None when hidden; raises Forbidden when a
        rule of the subject's own patient forbids it (unless ``hide_only``). ``patient``:
        whose data this version is, when it is not the current version's patient (history)."""
        if stored is None:
            return None
        if self.is_system(ctx):
            if not self.system_scope(ctx, interaction, stored.type, hide=hide_only):
                return None
            self._touch(ctx, stored, "R")
            return stored
        owner = stored.patient if patient is _CURRENT else patient
        if patient is _CURRENT:
            patient = self.patient_for(ctx, stored)
        decision = self.decision(ctx, interaction, stored.type, patient)
        if not decision.allow:
            if decision.status == 404 or hide_only:
                return None
            raise self.refuse(decision)
        ctx.touched.append(Touched(stored.type, stored.id, stored.version, owner, "R"))
        return redact(stored, decision.redact)

    def patient_for(self, ctx: AccessContext, stored: Stored) -> str | None:
        """The patient whose data ``stored`` is, for this subject: for a resource of several
        patients, the subject's own patient when it is one of them."""
        if stored.patient != "*":
            return stored.patient
        return _pick(ctx, self.patients_in(stored.type, jsonio.loads(stored.body)) if stored.body else set())

    def patients_in(self, rtype: str, resource: dict) -> set[str]:
        if rtype == "Patient":
            return {resource.get("id")}
        return {v.id for _c, v in self.registry.extract(resource)
                if type(v) is Reference and v.type == "Patient" and v.url is None and v.id}

    @staticmethod
    def _touch(ctx: AccessContext, stored: Stored, action: str) -> None:
        ctx.touched.append(Touched(stored.type, stored.id, stored.version, stored.patient, action))

    # -- searches -------------------------------------------------------------------------

    def scope(self, ctx: AccessContext, query: fq.SearchQuery) -> fq.SearchQuery:
        """``query`` limited to what the subject may search: the bound patient's compartment
        in every hop. Raises Forbidden when the search cannot be limited."""
        text = "&".join(f"{k}={v}" for k, v in query.echo)
        ctx.touched.append(Touched(query.resource_type or "*", None, None, ctx.subject.patient_id, "R", text or "(all)"))
        if self.is_system(ctx):
            for type_ in (query.types or (query.resource_type,)):
                self.system_scope(ctx, "search", type_)
            return query
        if query.resource_type is None:
            raise errors.Forbidden("a search across all resource types needs system access: search one type")
        patient = ctx.subject.patient_id
        if query.resource_type in PATIENT_TYPES:
            if patient is None:
                raise errors.Forbidden(self._unbound(ctx))
            decision = self.decision(ctx, "search", query.resource_type, patient)
            if not decision.allow:
                if decision.status != 404:
                    raise self.refuse(decision)
                # a patient that does not exist, or one the subject may not know of: nothing
                return dataclasses.replace(query, clauses=list(query.clauses) + [fq.IdIn(())])
            facts = self.facts.facts(patient, getattr(ctx, "_generation", None))
            if facts is not None and facts.shielded and _uses_address(query.clauses):
                raise errors.Forbidden("access denied: the patient's address is protected and cannot be searched")
        else:
            decision = self.decision(ctx, "search", query.resource_type, None)
            if not decision.allow:
                raise self.refuse(decision)
        clauses = [self._limit(ctx, c, query.resource_type, patient) for c in query.clauses]
        if query.resource_type in PATIENT_TYPES and not _pins_patient(clauses, query.resource_type, patient):
            clauses.append(compartment_clause(self.registry, query.resource_type, patient))
        return dataclasses.replace(query, clauses=clauses)

    def _unbound(self, ctx: AccessContext) -> str:
        if ctx.subject.principal.kind == CITIZEN:
            return "access denied: no patient record is linked to your identity or the person you act for"
        return ("access denied: health personnel must attest the patient (X-Patient header or patient claim) "
                "and the purpose of use (X-Purpose-Of-Use) to reach patient data")

    def _limit(self, ctx: AccessContext, clause: Any, type: str | None, patient: str | None) -> Any:
        """Every hop into patient data (chains, ``_has``) gets the compartment restriction."""
        if isinstance(clause, fq.Chain):
            inner = self._limit(ctx, clause.inner, clause.target_type, patient)
            if clause.target_type in PATIENT_TYPES:
                inner = fq.AllOf((inner, self._hop(ctx, clause.target_type, patient)))
            return dataclasses.replace(clause, inner=inner)
        if isinstance(clause, fq.Has):
            inner = self._limit(ctx, clause.inner, clause.source_type, patient)
            if clause.source_type in PATIENT_TYPES:
                inner = fq.AllOf((inner, self._hop(ctx, clause.source_type, patient)))
            return dataclasses.replace(clause, inner=inner)
        if isinstance(clause, (fq.AnyOf, fq.AllOf)):
            return dataclasses.replace(clause, clauses=tuple(self._limit(ctx, c, type, patient)
                                                             for c in clause.clauses))
        return clause

    def _hop(self, ctx: AccessContext, type: str, patient: str | None) -> Any:
        if patient is None:
            raise errors.Forbidden(self._unbound(ctx))
        decision = self.decision(ctx, "search", type, patient)
        if not decision.allow:
            if decision.status != 404:
                raise self.refuse(decision)
            return fq.IdIn(())
        return compartment_clause(self.registry, type, patient)

    # -- writes ----------------------------------------------------------------------------

    def check_write(self, ctx: AccessContext, unit: Any, type: str, id: str | None, resource: dict | None,
                    values: list | None, method: str | None = None) -> str:
        """Raise unless the subject may write ``type/id`` (``resource`` None: delete; ``id``
        None: a conditional write that matched nothing, checked for the type alone); returns
        the interaction (create, update or delete).

        For anyone but a system, what the subject may not know of answers as if it did not
        exist, whichever way it is asked: a write to an id that is unknown, or that holds
        another patient's resource (in any version), is a 404 alike, and the checks that do
        not depend on the target (scopes, login, role, attested patient) come first. Clients
        other than systems cannot choose ids: only ids the server gave out in this request
        (``fresh_id``, ``new_id``) can be created."""
        if type in LOG_TYPES:
            raise self.log_refused(ctx, type)
        if self.is_system(ctx):
            if method is not None or id is None:
                # no lookup of the current version: a system's scopes decide by the method alone
                interaction = "delete" if resource is None else ("create" if method == "POST" else "update")
                self.system_scope(ctx, interaction, type)
                return interaction
            old = unit.read(type, id)
            exists = old is not None and not old.deleted
            interaction = "delete" if resource is None else ("update" if exists else "create")
            self.system_scope(ctx, interaction, type)
            return interaction
        issued = id is not None and id in ctx.issued
        interaction = "delete" if resource is None else ("create" if issued or id is None else "update")
        # what does not depend on the target: as if writing for the subject's own patient
        self._writable(ctx, interaction, type)
        old = None
        if id is not None and not issued:
            old = unit.read(type, id)
            if old is None:
                raise self.unknown(type, id)
            for patient in self.patients_of_version(old):
                decision = self.decision(ctx, interaction, type, patient)
                if not decision.allow:
                    if decision.status == 404:
                        raise self.unknown(type, id)
                    raise self.refuse(decision)
        if type in CONTENT_TYPES:
            # the rules that depend on what is written (critical information, own entries)
            before = jsonio.loads(old.body) if old is not None and old.body else None
            problem = content_problem(ctx.subject, type, resource, before)
            if problem:
                decision = Decision(False, problem)
                if ctx.denied is None:
                    ctx.denied = decision
                raise self.refuse(decision)
        if resource is not None:
            if type == "Patient":
                patients = {id}
            else:
                patients = {v.id for _c, v in values
                            if isinstance(v, Reference) and v.type == "Patient" and v.url is None and v.id} or {None}
            for patient in patients:
                decision = self.decision(ctx, interaction, type, patient)
                if not decision.allow:
                    if decision.status == 404:
                        raise errors.Forbidden(f"access denied: you may not write {type} for that patient")
                    raise self.refuse(decision)
        return interaction

    def _writable(self, ctx: AccessContext, interaction: str, type: str) -> None:
        """The checks of a write that do not depend on its target, made as if for the
        subject's own patient (or for data of no patient where the type is shared)."""
        patient = ctx.subject.patient_id
        if patient is None and type in PATIENT_TYPES:
            if ctx.denied is None:
                ctx.denied = Decision(False, "no patient bound to the request")
            raise errors.Forbidden(self._unbound(ctx))
        decision = self.decision(ctx, interaction, type, patient)
        if not decision.allow and decision.status != 404:
            raise self.refuse(decision)

    @staticmethod
    def unknown(type: str, id: str) -> errors.FhirError:
        """The answer to a write of what the subject may not know of (or that is not there)."""
        return errors.NotFound(f"{type}/{id} is not known (to create a resource, POST it: only systems "
                               "choose the ids of new resources)", f"{type}.id")

    def log_refused(self, ctx: AccessContext, type: str, where: str | None = None) -> errors.FhirError:
        decision = Decision(False, f"{type} is the audit log's, written by the server only")
        if ctx.denied is None:
            ctx.denied = decision
        return errors.MethodNotAllowed(f"the audit log is append-only: {type}s are written by the server, "
                                       "never by a client, on any path", where or type)

    def patients_of_version(self, stored: Stored) -> set:
        """The patients whose data the current version ``stored`` is (a deletion keeps its
        resource's patient; a resource of several patients is each one's, by its body)."""
        if stored.patient != "*":
            return {stored.patient}
        body = self.version_body(stored)
        return self.patients_in(stored.type, jsonio.loads(body)) if body else {None}

    def version_body(self, stored: Stored) -> bytes | None:
        """The body that says whose one version is: its own, or for a deletion the one of
        the version before it."""
        if stored.body is not None or stored.version <= 1:
            return stored.body
        before = self.store.vread(stored.type, stored.id, stored.version - 1)
        return before.body if before is not None else None

    def version_patient(self, ctx: AccessContext, stored: Stored, body: bytes | None) -> str | None:
        """The patient one version of a resource belongs to, judged by ``body`` (that
        version's own, or for a deletion the version before it; ``version_body``), not by the
        current version: a resource moved from one patient to another has versions of both."""
        if stored.type == "Patient":
            return stored.id
        if body is None:
            return stored.patient if stored.patient != "*" else None
        return _pick(ctx, self.patients_in(stored.type, jsonio.loads(body)))

    def visible(self, ctx: AccessContext, stored: Stored | None) -> bool:
        """Whether the subject may know of ``stored`` (a current version), without noting
        anything in the audit record: for lookups such as a write's reference checks."""
        if stored is None or stored.deleted:
            return False
        if self.is_system(ctx):
            return True
        decision = self.decision(ctx, "read", stored.type, self.patient_for(ctx, stored), note=False)
        return decision.allow


def emergency_notice(patient: str, who: Any, purpose: str, reason: str, now: datetime, org_name: str = "") -> dict:
    """The Communication that tells a citizen about an emergency access to their record:
    who (name, HPR number), which organisation, when and why, in bokmål."""
    local = now.astimezone(OSLO)
    org = org_name or who.org_name or (f"organisasjonsnummer {who.org}" if who.org else "ukjent virksomhet")
    basis = {"BTG": "bryte glasset", "ETREAT": "akutt helsehjelp"}.get(purpose, purpose)
    text = (f"{who.name or 'Helsepersonell'} (HPR-nummer {who.hpr}) ved {org} åpnet kjernejournalen din "
            f"{local:%d.%m.%Y kl. %H:%M} med akuttilgang ({basis}). Begrunnelse: {reason.strip()}. "
            "Tilgangen er logget og blir kontrollert. Du ser den i Logg over bruk.")
    sender: dict = {"display": who.name or "Helsepersonell"}
    if who.hpr:
        sender["identifier"] = {"system": norway.HPR, "value": who.hpr}
    return {
        "resourceType": "Communication", "status": "completed",
        "category": [{"coding": [{"system": COMMUNICATION_CATEGORY, "code": "notification"},
                                 {"system": EMERGENCY_NOTICE, "code": "emergency-access",
                                  "display": "Akuttilgang til kjernejournal"}]}],
        "subject": {"reference": f"Patient/{patient}"},
        "recipient": [{"reference": f"Patient/{patient}"}],
        "sender": sender,
        "sent": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "reasonCode": [{"text": reason.strip()[:500]}],
        "payload": [{"contentString": text}],
    }


def _pick(ctx: AccessContext, patients: set) -> str | None:
    """Of the patients a resource is about, the one the subject's request is bound to when it
    is among them, else the first (so one decision stands for the resource)."""
    bound = ctx.subject.patient_id
    if bound in patients:
        return bound
    return min(patients) if patients else None


def compartment_clause(registry: Any, type: str, patient: str) -> Any:
    """``type`` resources in Patient/``patient``'s compartment."""
    if type == "Patient":
        return fq.IdIn((patient,))
    clauses = []
    for code in compartment_params("Patient", type):
        param = registry.get(type, code)
        if param is not None and param.type == "reference":
            clauses.append(fq.Leaf(type, param, None, (fq.RefQ("Patient", patient),)))
    return fq.AnyOf(tuple(clauses)) if clauses else fq.IdIn(())


def _pins_patient(clauses: list, type: str, patient: str) -> bool:
    """Whether a top-level clause already keeps the search in ``patient``'s compartment
    (``Observation?subject=Patient/X``), so the guard need not add the same restriction."""
    codes = compartment_params("Patient", type)
    for clause in clauses:
        if (isinstance(clause, fq.Leaf) and not clause.negate and clause.modifier in (None, "Patient")
                and clause.param.type == "reference" and clause.param.code in codes
                and len(clause.values) == 1 and (clause.values[0] == fq.RefQ("Patient", patient) or (
                    clause.values[0] == fq.RefQ(None, patient) and tuple(clause.param.targets) == ("Patient",)))):
            return True
    return False


def _uses_address(clauses: Any) -> bool:
    for clause in clauses:
        if isinstance(clause, (fq.Leaf, fq.Missing)) and clause.param.code in _ADDRESS_PARAMS:
            return True
        if isinstance(clause, (fq.AnyOf, fq.AllOf)) and _uses_address(clause.clauses):
            return True
        if isinstance(clause, (fq.Chain, fq.Has)) and _uses_address((clause.inner,)):
            return True
    return False


def redact(stored: Stored, elements: tuple) -> Stored:
    """``stored`` without the protected elements (a shielded person's address)."""
    if not elements or stored.body is None or stored.type not in ("Patient", "RelatedPerson", "Person"):
        return stored
    resource = jsonio.loads(stored.body)
    changed = False
    for element in elements:
        if element in resource:
            del resource[element]
            changed = True
        for contact in resource.get("contact", []) if isinstance(resource.get("contact"), list) else []:
            if isinstance(contact, dict) and element in contact:
                del contact[element]
                changed = True
    if not changed:
        return stored
    meta = resource.setdefault("meta", {})
    labels = meta.setdefault("security", [])
    labels.append({"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED",
                   "display": "redacted"})
    return dataclasses.replace(stored, body=jsonio.dumps(resource))


def bump_generation(unit: Any) -> None:
    """Tell every process that access facts changed (their caches reload)."""
    unit.set_setting(FactsLoader.GENERATION, uuid.uuid4().hex)


class GuardedRepository:
    """The Repository protocol with every patient-data access checked and noted."""

    def __init__(self, store: Any, guard: Guard):
        self.store = store
        self.guard = guard
        self.index_format = store.index_format

    @property
    def registry(self) -> Any:
        return self.store.registry

    @registry.setter
    def registry(self, value: Any) -> None:
        self.store.registry = value

    def __getattr__(self, name: str) -> Any:
        # structural lookups that return no patient data (ids, keys, settings, feed positions)
        if name in _PASS_THROUGH:
            return getattr(self.store, name)
        raise AttributeError(name)

    def check_writable(self, type: str, where: str | None = None) -> None:
        """Raise unless some client could write ``type`` at all (the audit log's AuditEvents:
        no one, on any path): lets a write be refused before its body is even validated."""
        if type in LOG_TYPES:
            raise self.guard.log_refused(self.guard.ctx(), type, where)

    def new_id(self) -> str:
        """A new resource id, noted as given out by the server for this request."""
        fresh = self.store.new_id()
        self.guard.ctx().issued.add(fresh)
        return fresh

    def read(self, type: str, id: str) -> Stored | None:
        return self.guard.check(self.guard.ctx(), self.store.read(type, id), "read")

    def vread(self, type: str, id: str, version: int) -> Stored | None:
        ctx = self.guard.ctx()
        stored = self.store.vread(type, id, version)
        if stored is None or self.guard.is_system(ctx):
            return self.guard.check(ctx, stored, "vread")
        return self.guard.check(ctx, stored, "vread",
                                patient=self.guard.version_patient(ctx, stored, self.guard.version_body(stored)))

    def search(self, query: Any) -> Page:
        return self.store.search(self.guard.scope(self.guard.ctx(), query))

    def load(self, keys: list, ahead: Any = None) -> list[Stored]:
        ctx = self.guard.ctx()
        out = []
        for stored in self.store.load(keys, ahead):       # checked here, whoever read them
            seen = self.guard.check(ctx, stored, "search", hide_only=True)
            if seen is not None:
                out.append(seen)
        return out

    def includes(self, keys: list, includes: list) -> list:
        return self.visible_keys(self.store.includes(keys, includes))

    def visible_keys(self, keys: list) -> list:
        """``keys`` without those of resources the subject may not see (so totals do not leak)."""
        ctx = self.guard.ctx()
        if self.guard.is_system(ctx) or not keys:
            return keys
        owners = self.store.patients_of(keys)
        out = []
        allowed: dict[tuple, bool] = {}       # one decision per type and patient
        for key in keys:
            owner = owners.get(key)
            if owner is None:
                continue
            if owner[1] == "*":
                owner = (owner[0], ctx.subject.patient_id)     # decided again on load, with the body
            seen = allowed.get(owner)
            if seen is None:
                seen = allowed[owner] = self.guard.decision(ctx, "search", owner[0], owner[1]).allow
            if seen:
                out.append(key)
        return out

    def compartment(self, type: str, id: str, params: list) -> tuple[list, list]:
        self._compartment_allowed(type, id)
        members, referenced = self.store.compartment(type, id, params)
        return self.visible_keys(members), self.visible_keys(referenced)

    def members_ahead(self, type: str, id: str, params: list, count: int) -> Any:
        self._compartment_allowed(type, id)
        return self.store.members_ahead(type, id, params, count)

    def _compartment_allowed(self, type: str, id: str) -> None:
        ctx = self.guard.ctx()
        if not self.guard.is_system(ctx):
            decision = self.guard.decision(ctx, "search", type, id if type == "Patient" else None)
            if not decision.allow:
                raise self.guard.refuse(decision)

    def history(self, type: str | None, id: str | None, since: int | None, at: Any, count: int,
                offset: int) -> tuple[list[Stored], int]:
        """History as the subject may see it. Systems see it all (what their scopes grant);
        anyone else sees one resource's history, and of it only the versions that belonged
        to a patient they may see (each version judged by its own body), counted in the
        total; a resource none of whose versions they may see is unknown (404)."""
        ctx = self.guard.ctx()
        ctx.touched.append(Touched(type or "*", id, None, None, "R", "_history"))
        if self.guard.is_system(ctx):
            self.guard.system_scope(ctx, "history-instance" if id else "history-type", type)
            if id is not None and self.store.read(type, id) is None:
                raise errors.NotFound(f"{type}/{id} is not known", f"{type}.id")
            return self.store.history(type, id, since, at, count, offset)
        if id is None:
            raise errors.Forbidden("history across resources needs system access: ask for one resource's history")
        every, _ = self.store.history(type, id, None, None, MAX_VERSIONS, 0)      # newest first
        seen: dict[int, Stored] = {}
        body = None
        for entry in reversed(every):                      # oldest first: a deletion is its predecessor's
            body = entry.body if entry.body is not None else body
            shown = self.guard.check(ctx, entry, "history-instance", hide_only=True,
                                     patient=self.guard.version_patient(ctx, entry, body))
            if shown is not None:
                seen[entry.version] = shown
        if not seen:
            raise errors.NotFound(f"{type}/{id} is not known", f"{type}.id")
        if since is None and at is None:
            entries = [seen[e.version] for e in every if e.version in seen]
        else:
            chosen, _ = self.store.history(type, id, since, at, MAX_VERSIONS, 0)
            entries = [seen[e.version] for e in chosen if e.version in seen]
        return entries[offset:offset + count], len(entries)

    @contextlib.contextmanager
    def unit(self) -> Iterator["GuardedUnit"]:
        ctx = self.guard.ctx()
        start = len(ctx.touched)
        with self.store.unit() as inner:
            unit = GuardedUnit(self.guard, inner, ctx)
            outer, ctx._unit = getattr(ctx, "_unit", None), inner
            try:
                yield unit
            finally:
                ctx._unit = outer
            if unit.wrote and self.guard.audit is not None:
                # this unit's record holds what this unit touched; a context that spans many
                # units (an import, the demo loader) does not repeat earlier units' resources
                self.guard.audit.record_in(inner, dataclasses.replace(ctx, touched=ctx.touched[start:]))
                del ctx.touched[start:]
                ctx.written = True


_PASS_THROUGH = frozenset({
    "pid_of", "key_of", "filter_keys", "feed", "cursor", "bodies_of_type", "get_setting",
    "is_empty", "type_counts", "close", "patients_of", "grants",
})


class GuardedUnit:
    """A unit of work whose reads are filtered and whose writes are checked."""

    def __init__(self, guard: Guard, inner: Any, ctx: AccessContext):
        self.guard = guard
        self.inner = inner
        self.ctx = ctx
        self.wrote = False
        self.written: set[tuple[str, str]] = set()     # (type, id) this unit wrote

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)     # fresh_id, feed, cursors, settings, reindex, hooks

    def read(self, type: str, id: str) -> Stored | None:
        # what the subject may not know of is absent; a rule of their own patient is a 403.
        # A system's write scopes cover the reads its writes need.
        if self.guard.is_system(self.ctx):
            return self.inner.read(type, id)
        return self.guard.check(self.ctx, self.inner.read(type, id), "read")

    def permit(self, type: str, id: str | None, resource: dict | None) -> None:
        """Raise unless the subject may write ``type/id`` — for writes that turn out to
        change nothing (they make no new version, but must not answer 200 to anyone: an
        update that changes nothing, a delete of what is not there; ``id`` None: a
        conditional write that matched nothing)."""
        values = self.guard.registry.extract(resource) if resource is not None else None
        self.guard.check_write(self.ctx, self.inner, type, id, resource, values)

    def fresh_id(self) -> str:
        """A new resource id, noted as given out by the server for this request."""
        fresh = self.inner.fresh_id()
        self.ctx.issued.add(fresh)
        return fresh

    def exists(self, type: str, id: str) -> bool:
        """Whether ``type/id`` exists as far as the subject may know (a write's reference
        checks): another patient's resource does not, alike for every caller but systems."""
        if self.guard.is_system(self.ctx):
            return self.inner.exists(type, id)
        if (type, id) in self.written:              # written in this unit, by this subject
            return self.inner.exists(type, id)
        return self.guard.visible(self.ctx, self.inner.read(type, id))

    def search(self, query: Any) -> Page:
        return self.inner.search(self.guard.scope(self.ctx, query))

    def load(self, keys: list) -> list[Stored]:
        out = []
        for stored in self.inner.load(keys):
            seen = self.guard.check(self.ctx, stored, "search", hide_only=True)
            if seen is not None:
                out.append(seen)
        return out

    def put(self, type: str, id: str, resource: dict | None, method: str,
            expected_version: int | None = None, values: list | None = None) -> Stored:
        if resource is not None and values is None:
            values = self.guard.registry.extract(resource)
        interaction = self.guard.check_write(self.ctx, self.inner, type, id, resource, values, method)
        stored = self.inner.put(type, id, resource, method, expected_version, values)
        action = "C" if stored.version == 1 and resource is not None else _ACTION_LETTER[interaction]
        self.ctx.touched.append(Touched(type, id, stored.version, stored.patient, action))
        if type in ACCESS_TYPES:
            bump_generation(self.inner)
        self.wrote = True
        self.written.add((type, id))
        return stored


class ExportRecorder:
    """The audit of a running export's reads. It is given each batch the job wrote, as
    (type, id, version, patient, body, deleted) rows (``deleted``: listed as deleted; the
    body, if any, is the version before), and records one audit row per patient whose data
    the job read (so each citizen's access log lists the export that read their data, as it
    lists a system search) and one for the resources of no patient. A row names the client
    that started the job, the job, and per resource type how many of the patient's
    resources were written or listed as deleted (``$export of Observation (level=system
    job=<id> resources=12)``, ``... deleted=1)``): the job and its transaction time say which
    versions those are, and listing each resource would make the audit log of a national
    export larger than the export. A patient's counts are kept while the next batch holds
    their data too, so data stored together gives one row per patient and job; ``close``
    records what is kept (the job calls it however it ends)."""

    def __init__(self, guard: Guard, kick: AccessContext, detail: str):
        self.guard = guard
        self.subject, self.address, self.path, self.query = kick.subject, kick.client_address, kick.path, kick.query
        self.detail = detail
        self.pending: dict[str | None, dict[tuple, int]] = {}

    def __call__(self, rows: list) -> None:
        counts: dict[str | None, dict[tuple, int]] = {}
        for type_, _id, _version, patient, body, deleted in rows:
            # a resource of several patients is in each one's record
            of = sorted(self.guard.patients_in(type_, jsonio.loads(body))) if patient == "*" and body else (patient,)
            for one in of:
                by_type = counts.setdefault(one, {})
                key = (type_, "deleted" if deleted else "resources")
                by_type[key] = by_type.get(key, 0) + 1
        for patient in [p for p in self.pending if p not in counts]:
            self._record(patient, self.pending.pop(patient))
        for patient, by_type in counts.items():
            kept = self.pending.setdefault(patient, {})
            for key, n in by_type.items():
                kept[key] = kept.get(key, 0) + n

    def close(self) -> None:
        for patient, by_type in self.pending.items():
            self._record(patient, by_type)
        self.pending.clear()

    def _record(self, patient: str | None, by_type: dict) -> None:
        if self.guard.audit is None:
            return
        touched = [Touched(t, None, None, patient, "R", query=f"{self.detail} {what}={n}")
                   for (t, what), n in by_type.items()]
        self.guard.audit.record(AccessContext(self.subject, method="GET", path=self.path, query=self.query,
                                              interaction="operation", client_address=self.address,
                                              touched=touched, status=200))
