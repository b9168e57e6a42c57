"""The tamper-evident audit log: one FHIR AuditEvent per request, in a hash chain.

``build_event`` turns a request's ``AccessContext`` (``context.py``) into an R4 AuditEvent
(https://hl7.org/fhir/R4/auditevent.html) once the response status is known; ``event_rows``
cuts it into one row per patient concerned (each citizen's access log sees only what
concerns them). ``AuditLog`` appends reads and denials in batches from a background thread
and a write's record inside the write's own transaction (``record_in``). The store chains
the rows (``hash = sha256(prev || seq || body)``, ``store.audit_hash``) and keeps the head
in the ``audit.head`` setting; ``verify`` walks the chain and says where it was tampered
with. See docs/audit.md.
"""
from __future__ import annotations

import atexit
import base64
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from .. import errors
from ..fhir import dates, jsonio
from ..store import AUDIT_HEAD, GENESIS, AuditRow, NewAuditRow, audit_hash, parse_head
from .context import AccessContext, Touched
from .principal import CITIZEN, PERSONNEL, PURPOSES, SYSTEM

log = logging.getLogger("enjournal.audit")

HPR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.4"
ORG_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.101"
HPR_CATEGORY_SYSTEM = "urn:oid:2.16.578.1.12.4.1.1.9060"
FLAG_SYSTEM = "https://enjournal.no/fhir/CodeSystem/audit-flag"
EXT_BASIS = "https://enjournal.no/fhir/StructureDefinition/access-basis"
EXT_OMITTED = "https://enjournal.no/fhir/StructureDefinition/audit-entities-omitted"
EXT_PATIENTS = "https://enjournal.no/fhir/StructureDefinition/audit-patient-count"
MAX_ENTITIES = 200

# Codings go without display: the codes are standard, a reader's UI names them in its own
# language, and every byte is written ~10,000 times a second on a busy server.
_EVENT_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"}
_INTERACTION = "http://hl7.org/fhir/restful-interaction"
_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_APPLICATION = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110150"}   # Application
_SOURCE = {"observer": {"display": "enjournal"}}
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_PERSON = {"system": _ENTITY_TYPE, "code": "1"}
_OBJECT = {"system": _ENTITY_TYPE, "code": "2"}                 # System Object
_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_PATIENT_ROLE = {"system": _ROLE, "code": "1"}
_RESOURCE_ROLE = {"system": _ROLE, "code": "4"}                 # Domain Resource
_QUERY_ROLE = {"system": _ROLE, "code": "24"}
_LIFECYCLE = "http://terminology.hl7.org/CodeSystem/dicom-audit-lifecycle"
# C origination/creation, R access/use, U amendment, D logical deletion, E access/use
_LIFECYCLES = {a: {"system": _LIFECYCLE, "code": c} for a, c in
               (("C", "1"), ("R", "6"), ("U", "3"), ("D", "14"), ("E", "6"))}
_REVIEW_META = {"tag": [{"system": FLAG_SYSTEM, "code": "review-required"}]}

_ACTION_OF_INTERACTION = {"create": "C", "update": "U", "patch": "U", "delete": "D", "operation": "E",
                          "transaction": "E", "batch": "E"}
_ACTION_OF_METHOD = {"POST": "C", "PUT": "U", "PATCH": "U", "DELETE": "D"}
_WRITES = frozenset("CUD")
_INSTANCE = frozenset({"read", "vread", "update", "patch", "delete", "history-instance"})

# Any 11-digit run could be a fødselsnummer or D-number: never written to the log.
_PERSON_NUMBER = re.compile(r"(?<![0-9])[0-9]{11}(?![0-9])")


def mask(text: str) -> str:
    """``text`` with every 11-digit run (a possible fødselsnummer or D-number) replaced by
    eleven asterisks, so no person number reaches the log, not even base64-encoded."""
    return _PERSON_NUMBER.sub("*" * 11, text) if text else text


# -- the AuditEvent ----------------------------------------------------------------------

def build_event(ctx: AccessContext, recorded_ms: int, base: str = "") -> dict:
    """The AuditEvent of the whole request ``ctx`` recorded at ``recorded_ms`` (epoch ms):
    every touched resource and every patient concerned, at most ``MAX_ENTITIES`` entities.
    ``base``: prefix for entity references (empty: relative ``Type/id/_history/v``)."""
    return EventBuilder(base).event(ctx, recorded_ms)


def event_rows(ctx: AccessContext, recorded_ms: int, base: str = "") -> list[NewAuditRow]:
    """The audit rows of ``ctx`` (``EventBuilder.rows``)."""
    return EventBuilder(base).rows(ctx, recorded_ms)


class EventBuilder:
    """Builds AuditEvents, as dicts (``event``) or as stored rows (``rows``).

    ``rows`` is the hot path (every request): everything but the time and the entities
    depends on who asks, from where, with what purpose and outcome, which repeats from
    request to request, so that part is kept serialised per combination and the row is
    joined from it, the time and the entities. Safe to share between threads."""

    CACHE_SIZE = 4096

    def __init__(self, base: str = ""):
        self.prefix = _prefix(base)
        self._heads: dict[tuple, tuple[Any, bytes]] = {}

    def event(self, ctx: AccessContext, recorded_ms: int) -> dict:
        """The AuditEvent of the whole request, all patients in it (``build_event``); the
        caller owns the dict (nothing in it is shared)."""
        event = _head(ctx, *_parts(ctx))
        event["recorded"] = dates.to_instant(recorded_ms)
        event = _with_entities(event, _entities(ctx, ctx.patients, None, event["action"], self.prefix))
        return jsonio.loads(jsonio.dumps(event))

    def rows(self, ctx: AccessContext, recorded_ms: int) -> list[NewAuditRow]:
        """One row per patient concerned: the AuditEvent with that patient and the resources
        of that patient, of no patient or of several (so each citizen's access log shows
        only their part); a single row without patient when no patient is concerned."""
        patients = ctx.patients
        emergency = bool(ctx.emergency)
        if len(patients) > 1:
            return [(recorded_ms, patient, emergency, jsonio.dumps(self._part_event(ctx, recorded_ms, patient,
                                                                                    len(patients))))
                    for patient in patients]
        parts = _parts(ctx)
        entities = _entities(ctx, patients, None, parts[0], self.prefix)
        if len(entities) > MAX_ENTITIES:
            body = jsonio.dumps(self.event(ctx, recorded_ms))
        else:       # the same JSON as ``event`` gives, joined from the remembered head
            recorded = b',"recorded":"' + dates.to_instant(recorded_ms).encode() + b'"'
            tail = b',"entity":' + jsonio.dumps(entities) + b"}" if entities else b"}"
            body = self._head_bytes(ctx, parts) + recorded + tail
        return [(recorded_ms, patients[0] if patients else None, emergency, body)]

    def _part_event(self, ctx: AccessContext, recorded_ms: int, patient: str, count: int) -> dict:
        event = _head(ctx, *_parts(ctx))
        event["recorded"] = dates.to_instant(recorded_ms)
        event["extension"] = event.get("extension", []) + [{"url": EXT_PATIENTS, "valueInteger": count}]
        return _with_entities(event, _entities(ctx, [patient], patient, event["action"], self.prefix))

    def _head_bytes(self, ctx: AccessContext, parts: tuple) -> bytes:
        """``_head`` serialised without its closing brace, remembered per combination."""
        subject = ctx.subject
        principal = subject.principal if subject is not None else None
        basis = ctx.basis
        key = (id(principal), parts, ctx.interaction, ctx.client_address, bool(ctx.emergency),
               basis.basis if basis is not None else None, basis.reason if basis is not None else None,
               subject.attestation.patient if subject is not None else None,
               subject.patient_id if principal is not None and principal.kind == CITIZEN else None)
        hit = self._heads.get(key)
        if hit is not None and hit[0] is principal:
            return hit[1]
        head = jsonio.dumps(_head(ctx, *parts))[:-1]
        if len(self._heads) >= self.CACHE_SIZE:
            self._heads.clear()
        self._heads[key] = (principal, head)
        return head


def _parts(ctx: AccessContext) -> tuple[str, str, str, str | None]:
    """(action, outcome, outcome description, purpose of use) of the request."""
    outcome, description = _outcome(ctx)
    return _action(ctx), outcome, description, _purpose(ctx)


def _head(ctx: AccessContext, action: str, outcome: str, description: str, purpose: str | None) -> dict:
    """Everything of the event except its time and entities."""
    event: dict[str, Any] = {"resourceType": "AuditEvent", "type": _EVENT_TYPE}
    if ctx.emergency:
        event["meta"] = _REVIEW_META
    basis = ctx.basis
    if basis is not None and basis.basis and basis.basis not in PURPOSES:    # else purposeOfEvent says it
        event["extension"] = [{"url": EXT_BASIS, "extension": [
            {"url": "basis", "valueCode": basis.basis},
            {"url": "reason", "valueString": mask(basis.reason) or basis.basis}]}]
    if ctx.interaction:
        event["subtype"] = [{"system": _INTERACTION, "code": ctx.interaction}]
    event["action"] = action
    event["outcome"] = outcome
    if description:
        event["outcomeDesc"] = description
    if purpose is not None:
        event["purposeOfEvent"] = [{"coding": [{"system": _ACT_REASON, "code": purpose}]}]
    event["agent"] = _agents(ctx)
    event["source"] = _SOURCE
    return event


def _action(ctx: AccessContext) -> str:
    """C R U D E: what the request did (one kind of write, else execute), else by interaction."""
    by_interaction = _ACTION_OF_INTERACTION.get(ctx.interaction)
    if by_interaction == "E":
        return "E"
    writes = {t.action for t in ctx.touched if t.action in _WRITES}
    if len(writes) == 1:
        return writes.pop()
    if writes:
        return "E"
    if by_interaction is not None:
        return by_interaction
    if ctx.interaction or ctx.method in ("GET", "HEAD", ""):
        return "R"
    return _ACTION_OF_METHOD.get(ctx.method, "E")


def _outcome(ctx: AccessContext) -> tuple[str, str]:
    """(outcome code, description): 8 server error, 4 refused or failed, 0 success."""
    status = ctx.status
    denied = ctx.denied
    if status >= 500:
        return "8", f"server error (HTTP {status})"
    if status >= 400:
        if denied is not None:
            return "4", mask(f"access denied: {denied.reason}")
        if ctx.subject is None:
            return "4", f"not authenticated (HTTP {status})"
        return "4", f"request failed (HTTP {status})"
    if denied is not None:
        return "0", mask(f"some data was withheld: {denied.reason}")
    if ctx.emergency:
        return "0", _emergency_reason(ctx)
    return "0", ""


def _purpose(ctx: AccessContext) -> str | None:
    if ctx.subject is None:
        return None
    purpose = ctx.subject.attestation.purpose or ctx.subject.principal.claims_purpose
    return purpose if purpose in PURPOSES else None


def _emergency_reason(ctx: AccessContext) -> str:
    reason = ctx.subject.attestation.reason if ctx.subject is not None else None
    return mask(f"emergency access: {reason or 'no reason given'}")


def _agents(ctx: AccessContext) -> list[dict]:
    """agent[0] the requestor (person or system), agent[1] its organisation when known."""
    agent: dict[str, Any] = {}
    subject = ctx.subject
    if subject is None:
        agent["who"] = {"display": "unauthenticated caller"}
    else:
        who = subject.principal
        if who.kind == PERSONNEL:
            agent["who"] = _person_ref(who.hpr, who.name or "health personnel")
            if who.hpr_category:
                agent["role"] = [{"coding": [{"system": HPR_CATEGORY_SYSTEM, "code": who.hpr_category}]}]
        elif who.kind == CITIZEN:
            agent["who"] = _citizen_ref(ctx)
            if ctx.basis is not None and ctx.basis.basis in ("parent", "attorney"):
                agent["role"] = [{"text": ctx.basis.basis}]
        else:
            agent["type"] = {"coding": [_APPLICATION]}
            agent["who"] = {"display": who.name or who.client_id or who.subject or SYSTEM}
        if who.client_id:
            agent["altId"] = who.client_id
        if who.token_id:
            agent["policy"] = [who.token_id if ":" in who.token_id else f"urn:jti:{who.token_id}"]
    agent["requestor"] = True
    if ctx.client_address:
        agent["network"] = {"address": ctx.client_address, "type": "2"}
    agents = [agent]
    if subject is not None and subject.principal.org:
        org = {"identifier": {"system": ORG_SYSTEM, "value": subject.principal.org}}
        if subject.principal.org_name:
            org["display"] = subject.principal.org_name
        agents.append({"who": org, "requestor": False})
    return agents


def _person_ref(hpr: str | None, name: str) -> dict:
    ref: dict[str, Any] = {"display": name}
    if hpr:
        ref["identifier"] = {"system": HPR_SYSTEM, "value": hpr}
    return ref


def _citizen_ref(ctx: AccessContext) -> dict:
    """The citizen: their own Patient when the request is about their own record, else a
    display name only. Never the fødselsnummer."""
    subject = ctx.subject
    name = subject.principal.name or "citizen"
    # bound to their own record unless they named someone in X-Patient (acting for them)
    named = subject.attestation.patient
    own = named in (None, subject.principal.pid) and (ctx.basis is None or ctx.basis.basis == "own-record")
    if own and subject.patient_id:
        return {"reference": f"Patient/{subject.patient_id}", "display": name}
    return {"display": name}


# -- entities -------------------------------------------------------------------------------

def _with_entities(event: dict, entities: list[dict]) -> dict:
    """``event`` with ``entities``, at most MAX_ENTITIES, counting what was left out."""
    if len(entities) > MAX_ENTITIES:
        omitted = len(entities) - MAX_ENTITIES
        entities = entities[:MAX_ENTITIES]
        event["extension"] = event.get("extension", []) + [{"url": EXT_OMITTED, "valueInteger": omitted}]
    if entities:
        event["entity"] = entities
    return event


def _entities(ctx: AccessContext, patients: list[str], only: str | None, action: str, prefix: str) -> list[dict]:
    """One entity per patient, then one per distinct touched resource or query (with
    ``only``: those of that patient, of no patient or of several); when nothing was
    touched, one for what was asked for."""
    bound = ctx.subject.patient_id if ctx.subject is not None else None
    out = [_patient_entity(ctx, p, p == bound, prefix) for p in patients]
    seen: set = set()
    for t in ctx.touched:
        if only is not None and t.patient not in (only, None, "*"):
            continue
        key = (t.type, t.id, t.version, t.action, t.query)
        if key in seen:
            continue
        seen.add(key)
        if len(out) >= MAX_ENTITIES:
            out.append(None)        # only counted: entities past the cap are never written
            continue
        out.append(_query_entity(t, prefix) if t.query is not None else _resource_entity(t, action, prefix))
    if not seen:
        request = _request_entity(ctx)
        if request is not None:
            out.append(request)
    return out


def _patient_entity(ctx: AccessContext, patient: str, bound: bool, prefix: str) -> dict:
    entity: dict[str, Any] = {"what": {"reference": f"{prefix}Patient/{patient}"}, "type": _PERSON,
                              "role": _PATIENT_ROLE}
    if ctx.emergency and bound:
        entity["detail"] = [{"type": "emergency-reason", "valueString": _emergency_reason(ctx)}]
    return entity


def _resource_entity(t: Touched, action: str, prefix: str) -> dict:
    reference = f"{prefix}{t.type}/{t.id}/_history/{t.version}" if t.version else f"{prefix}{t.type}/{t.id}"
    entity = {"what": {"reference": reference}, "type": _OBJECT, "role": _RESOURCE_ROLE}
    if t.action != action:           # what happened to this one, where the event's action does not say
        entity["lifecycle"] = _LIFECYCLES.get(t.action, _LIFECYCLES["R"])
    return entity


def _query_entity(t: Touched, prefix: str) -> dict:
    entity: dict[str, Any] = {"type": _OBJECT, "role": _QUERY_ROLE}
    if t.query == "_history":
        target = f"{t.type}/{t.id}" if t.id else t.type
        if t.id:
            entity["what"] = {"reference": f"{prefix}{t.type}/{t.id}"}
        entity["description"] = f"history of {target}"
    elif t.query.startswith("$"):      # an operation over a whole type, e.g. a bulk export
        operation, _, detail = t.query.partition(" ")
        entity["description"] = f"{operation} of {t.type}" + (f" ({detail})" if detail else "")
    else:
        entity["description"] = f"search {t.type if t.type != '*' else 'all types'}"
    entity["query"] = _b64(mask(t.query or ""))
    return entity


def _request_entity(ctx: AccessContext) -> dict | None:
    """What was asked for when nothing was touched (a refusal, a failure, a 401)."""
    parts = [p for p in ctx.path.split("/") if p]
    if not parts and not ctx.query:
        return None
    entity: dict[str, Any] = {"type": _OBJECT, "role": _RESOURCE_ROLE,
                              "description": mask(f"requested: {ctx.method} /{'/'.join(parts)}")}
    if ctx.interaction in _INSTANCE and len(parts) >= 2:
        entity["what"] = {"reference": mask("/".join(parts[:4] if ctx.interaction == "vread" else parts[:2]))}
    if ctx.query:
        entity["role"] = _QUERY_ROLE
        entity["query"] = _b64(mask(ctx.query))
    return entity


def _prefix(base: str) -> str:
    return base.rstrip("/") + "/" if base else ""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def _fallback_rows(ctx: AccessContext, recorded_ms: int, exc: Exception) -> list[NewAuditRow]:
    """A minimal record when the full one could not be built: the request is never unlogged."""
    event = {"resourceType": "AuditEvent", "type": _EVENT_TYPE, "recorded": dates.to_instant(recorded_ms),
             "outcome": "8" if ctx.status >= 500 else ("4" if ctx.status >= 400 else "0"),
             "outcomeDesc": mask(f"audit record incomplete ({type(exc).__name__}): {ctx.method} {ctx.path}"),
             "agent": [{"who": {"display": "unknown"}, "requestor": True}], "source": _SOURCE}
    try:
        patient = next(iter(ctx.patients), None)
    except Exception:
        patient = None
    return [(recorded_ms, patient, bool(ctx.emergency), jsonio.dumps(event))]


# -- writing ------------------------------------------------------------------------------

def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class AuditLog:
    """Appends AuditEvents to ``repo``'s hash-chained audit table.

    ``record(ctx)`` (reads, denials, failures) only queues the context with its time; a
    background thread builds the events and appends them every ``flush_ms`` or as soon as
    ``batch`` are queued, in one transaction per batch. ``record_in(unit, ctx)`` (writes)
    appends inside the write's unit, so the write and its record commit together. A crash
    can lose what was queued since the last flush, never a write's record."""

    def __init__(self, repo: Any, clock: Callable[[], int] | None = None, flush_ms: int = 50,
                 batch: int = 500, base: str = "", max_queue: int = 100_000):
        if flush_ms <= 0 or batch <= 0 or max_queue < batch:
            raise errors.Invalid("the audit log needs flush_ms > 0, batch > 0 and max_queue >= batch")
        self.repo = repo
        self.clock = clock or getattr(repo, "clock", None) or _now_ms
        self.flush_ms = flush_ms
        self.batch = batch
        self.builder = EventBuilder(base)
        self.max_queue = max_queue
        self._queue: list[tuple[AccessContext, int]] = []
        self._lock = threading.Lock()            # guards _queue, _thread, _closed
        self._flush_lock = threading.Lock()      # one flush at a time: rows keep queue order
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def record(self, ctx: AccessContext) -> None:
        """Queue the audit record of a finished request (cheap: no I/O, no JSON here). After
        ``close``, or when ``max_queue`` records wait because the database cannot keep up,
        it writes at once instead (slowing the caller down rather than growing without
        bound); a failure to write is logged and the records stay queued."""
        item = (ctx, self.clock())
        with self._lock:
            self._queue.append(item)
            queued = len(self._queue)
            closed = self._closed
            start = self._thread is None and not closed
            if start:
                self._thread = threading.Thread(target=self._run, name="enjournal-audit", daemon=True)
        if start:
            atexit.register(self._close_at_exit)
            self._thread.start()
        if closed or queued >= self.max_queue:
            try:
                self.flush()
            except Exception:
                log.exception("audit records could not be written (%d queued)", self.pending())
        elif queued >= self.batch:
            self._wake.set()

    def record_in(self, unit: Any, ctx: AccessContext) -> None:
        """Append the record of the write request ``ctx`` inside ``unit`` (its transaction)."""
        unit.append_audit(self.rows(ctx, self.clock()))

    def rows(self, ctx: AccessContext, recorded_ms: int) -> list[NewAuditRow]:
        """``event_rows``, or a minimal record if building failed (logged)."""
        try:
            return self.builder.rows(ctx, recorded_ms)
        except Exception as exc:        # a bug here must not leave a request unlogged
            log.exception("could not build an audit record")
            return _fallback_rows(ctx, recorded_ms, exc)

    def flush(self) -> int:
        """Write everything queued now; returns the number of rows written. On failure the
        records go back to the front of the queue and the error is raised. Not to be called
        inside a unit of work (it appends in a transaction of its own)."""
        with self._flush_lock:
            with self._lock:
                items, self._queue = self._queue, []
            if not items:
                return 0
            rows: list[NewAuditRow] = []
            for ctx, recorded in items:
                rows.extend(self.rows(ctx, recorded))
            try:
                self.repo.append_audit(rows)
            except BaseException:
                with self._lock:
                    self._queue[:0] = items
                raise
            return len(rows)

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def close(self) -> None:
        """Stop the background thread and write what is queued; later records are written
        synchronously."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._wake.set()
            thread.join()
        atexit.unregister(self._close_at_exit)
        self.flush()

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except Exception:
            log.exception("audit records queued at exit could not be written")

    def _run(self) -> None:
        delay = self.flush_ms / 1000
        failures = 0
        while True:
            self._wake.wait(delay if not failures else min(5.0, delay * 2 ** failures))
            self._wake.clear()
            with self._lock:
                if self._closed:
                    return          # close() flushes what is left
            try:
                self.flush()
                failures = 0
            except Exception:
                failures += 1
                log.exception("audit records could not be written; retrying (%d queued)", self.pending())


# -- verification ---------------------------------------------------------------------------

_BEFORE_ALL = -(2 ** 63)
EDITED, DELETED, REORDERED, BROKEN, HEAD, ANCHOR = "edited", "deleted", "reordered", "broken", "head", "anchor"


@dataclass(frozen=True)
class Problem:
    """The first place the chain does not hold: ``seq`` and what was done (EDITED, DELETED,
    REORDERED, BROKEN, HEAD, ANCHOR), with a sentence for people."""
    seq: int
    what: str
    detail: str


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    rows: int                   # rows whose hash and link were checked
    head_seq: int               # the end of the verified chain
    head_hash: str              # its hash, hex ("" for an empty log)
    problem: Problem | None = None
    anchored: bool = False      # a published head was given and found in the chain

    def summary(self) -> str:
        head = f"head {self.head_seq}:{self.head_hash}" if self.head_hash else "empty log"
        if self.ok:
            anchor = ", includes the published head" if self.anchored else ""
            return f"audit log intact: {self.rows} rows checked, {head}{anchor}"
        p = self.problem
        return (f"audit log TAMPERED at seq {p.seq}: {p.what}: {p.detail} "
                f"({self.rows} rows verified before it; {head})")


def verify(repo: Any, head: str | None = None, batch: int = 5000) -> VerifyReport:
    """Walk the whole audit chain of ``repo`` and compare its end with the recorded head
    (``audit.head``) and, if given, with ``head``, a head published earlier ("<hex>" or
    "<seq>:<hex>"), which must be a row of the chain. Raises Invalid for a malformed
    ``head``. Reading runs beside live appends: rows committed meanwhile are checked too."""
    anchor = _anchor(head)
    walk = _Walk(anchor)
    problem = walk.run(repo, None, batch)
    if problem is None:
        problem = _check_head(repo, walk, batch)
    if problem is None and anchor is not None and not walk.anchored:
        problem = Problem(anchor[0] or walk.seq, ANCHOR, "the published head is not in the chain: the log was "
                          "rewritten, or the head belongs to another database")
    if problem is not None and problem.what == EDITED:
        problem = _diagnose(repo, repo.audit_get(problem.seq), problem, batch)
    return VerifyReport(problem is None, walk.rows, walk.seq, walk.hash.hex() if walk.seq else "", problem,
                        walk.anchored)


def _anchor(head: str | None) -> tuple[int | None, bytes] | None:
    if head is None:
        return None
    seq_text, _, digest = head.strip().rpartition(":")
    try:
        value = bytes.fromhex(digest)
        seq = int(seq_text) if seq_text else None
    except ValueError:
        value, seq = b"", None
    if len(value) != 32:
        raise errors.Invalid(f"a published audit head is 64 hex digits, optionally after '<seq>:', not {head!r}",
                             "head")
    return seq, value


class _Walk:
    """The chain checked so far: its last seq and hash."""

    def __init__(self, anchor: tuple[int | None, bytes] | None):
        self.anchor = anchor
        self.anchored = False
        self.seq = 0
        self.hash = GENESIS
        self.rows = 0

    def run(self, repo: Any, upto: int | None, batch: int) -> Problem | None:
        """Check the rows after ``self.seq`` (up to ``upto``); the first problem, or None."""
        while True:
            # the first read starts below 1, so a row slipped in before the first is seen
            rows = repo.audit_rows(self.seq if self.rows else _BEFORE_ALL, batch)
            for row in rows:
                if upto is not None and row.seq > upto:
                    return None
                problem = self.check(row)
                if problem is not None:
                    return problem
            if len(rows) < batch:
                return None

    def check(self, row: AuditRow) -> Problem | None:
        expected = self.seq + 1
        if row.seq > expected:
            missing = f"row {expected} is" if row.seq == expected + 1 else f"rows {expected}..{row.seq - 1} are"
            return Problem(expected, DELETED, f"{missing} missing")
        if row.seq < expected:
            return Problem(row.seq, BROKEN, f"row {row.seq} is out of sequence (a forged row)")
        if audit_hash(row.prev, row.seq, row.body) != row.hash:
            return Problem(row.seq, EDITED, "the row does not match its hash")
        if row.prev != self.hash:
            return Problem(row.seq, BROKEN, f"the row does not link to row {self.seq}'s hash "
                                            "(a row was replaced or inserted)")
        self.seq, self.hash = row.seq, row.hash
        self.rows += 1
        if self.anchor is not None and row.hash == self.anchor[1] and self.anchor[0] in (None, row.seq):
            self.anchored = True
        return None


def _check_head(repo: Any, walk: _Walk, batch: int) -> Problem | None:
    """Compare the walked chain's end with the recorded head. The head is read after the
    rows and only grows, so a row beyond it was not written by enjournal."""
    head = parse_head(repo.get_setting(AUDIT_HEAD))
    if head is None:
        if walk.seq == 0:
            return None
        return Problem(walk.seq, HEAD, f"the recorded head (setting {AUDIT_HEAD}) is missing")
    head_seq, head_hash = head
    if walk.seq > head_seq:
        return Problem(head_seq + 1, HEAD, f"rows {head_seq + 1}..{walk.seq} lie beyond the recorded head "
                                           f"(seq {head_seq}): rows were added outside enjournal")
    if walk.seq < head_seq:
        problem = walk.run(repo, head_seq, batch)      # rows committed while we were walking
        if problem is not None:
            return problem
        if walk.seq < head_seq:
            return Problem(walk.seq + 1, DELETED, f"the newest rows {walk.seq + 1}..{head_seq} were deleted "
                                                  f"(the recorded head is seq {head_seq})")
    if walk.hash != head_hash:
        return Problem(head_seq, HEAD, "the newest row's hash differs from the recorded head")
    return None


def _diagnose(repo: Any, row: AuditRow | None, problem: Problem, batch: int) -> Problem:
    """Tell apart, for a row that does not match its hash: a moved row or a body that
    belongs to another row (REORDERED), an edited hash, or an edited body."""
    if row is None:
        return problem
    moved_to = 1 if row.prev == GENESIS else None
    after = 0
    while True:
        rows = repo.audit_rows(after, batch)
        for other in rows:
            if other.hash == row.prev:
                moved_to = other.seq + 1
            if other.seq != row.seq and audit_hash(other.prev, other.seq, row.body) == other.hash:
                return Problem(row.seq, REORDERED, f"the body stored at seq {row.seq} belongs to seq {other.seq} "
                                                   "(rows were swapped)")
        if len(rows) < batch:
            break
        after = rows[-1].seq
    if moved_to is not None and moved_to != row.seq and audit_hash(row.prev, moved_to, row.body) == row.hash:
        return Problem(row.seq, REORDERED, f"the row stored at seq {row.seq} belongs at seq {moved_to} "
                                           "(rows were moved)")
    following = repo.audit_get(row.seq + 1)
    if following is not None and following.prev == audit_hash(row.prev, row.seq, row.body):
        return Problem(row.seq, EDITED, "the row's hash was changed (its body still links to the next row)")
    return Problem(row.seq, EDITED, "the row's body (or its link) was changed after it was written")
