"""Authentication and the per-request access context, as ASGI middleware.

For every HTTP request that is not public (the landing page, ``/metadata``, the discovery
documents and the built-in provider's endpoints), it verifies the bearer token, builds the
``Subject`` (principal + the trust-framework attestation from token claims or headers, with
the patient resolved to a Patient id), makes an ``AccessContext`` current while the
application runs, and hands the context to the audit log when the response has been sent.
A request without a valid token is answered 401 here, and recorded too.

Attestation headers (docs/access.md): ``X-Purpose-Of-Use`` (TREAT, ETREAT, COC, BTG),
``X-Patient`` (``Patient/<id>`` or a fødselsnummer / D-number), ``X-Access-Reason`` (needed
for ETREAT and BTG) and ``X-Consent-Declared: true``.
"""
from __future__ import annotations

import dataclasses
import re
import threading
import time
from typing import Any, Callable

from .. import errors
from ..access.context import AccessContext, use
from ..access.principal import CITIZEN, PERSONNEL, Attestation, Principal, Subject
from .responses import error_response

_PUBLIC_PREFIXES = ("/.well-known/", "/oidc/", "/static/")
_PUBLIC = {"/metadata", "/favicon.ico"}
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_NUMBER = re.compile(r"^\d{11}$")
UNKNOWN_PATIENT = ""     # an id no resource can have: a binding to a patient that does not exist


def is_public(method: str, path: str, query: bytes) -> bool:
    if path in _PUBLIC or path.startswith(_PUBLIC_PREFIXES):
        return True
    return path == "/" and method in ("GET", "HEAD") and not query


def interaction_of(method: str, path: str) -> str:
    """The FHIR restful interaction (http://hl7.org/fhir/restful-interaction) of a request."""
    parts = [p for p in path.split("/") if p]
    if any(p.startswith("$") for p in parts):
        return "operation"
    if not parts:
        return {"POST": "transaction"}.get(method, "search-system")
    if parts[-1] == "_history":
        return {1: "history-system", 2: "history-type", 3: "history-instance"}.get(len(parts), "history-instance")
    if len(parts) >= 3 and parts[-2] == "_history":
        return "vread"
    if parts[-1] == "_search":
        return "search-type" if len(parts) == 2 else "search-system"
    if len(parts) == 1:
        return {"GET": "search-type", "HEAD": "search-type", "POST": "create", "PUT": "update",
                "PATCH": "patch", "DELETE": "delete"}.get(method, "operation")
    if len(parts) == 2:
        return {"GET": "read", "HEAD": "read", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete"}.get(method, "operation")
    return "search-type"       # compartment search: Patient/1/Observation


class Authenticate:
    """ASGI middleware: token -> principal -> subject -> access context -> audit."""

    def __init__(self, app: Any, verifier: Any, to_principal: Callable[[dict], Principal], facts: Any,
                 audit: Any, cache_seconds: float = 60.0):
        self.app = app
        self.state = getattr(app, "state", None)
        self.verifier = verifier
        self.to_principal = to_principal
        self.facts = facts
        self.audit = audit
        self.cache_seconds = cache_seconds
        self._principals: dict[str, tuple[float, Principal]] = {}
        self._patients: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        # a web front door's page without a logged-in session (web/doors/layer.py marks it):
        # the door answers with its login, and no patient data is reached
        if scope["type"] != "http" or scope.get("enjournal.door_public") or \
                is_public(scope["method"], scope["path"], scope["query_string"]):
            await self.app(scope, receive, send)
            return
        ctx = AccessContext(None, scope["method"], scope["path"], scope["query_string"].decode("latin-1"),
                            interaction_of(scope["method"], scope["path"]),
                            (scope.get("client") or ("", 0))[0], base=base_of(scope))
        status = [0]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            try:
                ctx.subject = self.subject(_headers(scope))
            except errors.FhirError as exc:
                ctx.status = exc.status
                await error_response(exc)(scope, receive, send_status)
                return
            with use(ctx):
                await self.app(scope, receive, send_status)
        finally:
            ctx.status = status[0]
            if self.audit is not None and not (ctx.written and ctx.denied is None and status[0] < 400):
                self.audit.record(ctx)

    # -- who is asking -----------------------------------------------------------------------

    def subject(self, headers: dict[str, str]) -> Subject:
        principal = self.principal(headers.get("authorization"))
        attestation = _attestation(headers, principal)
        return Subject(principal, attestation, self.bound_patient(principal, attestation))

    def principal(self, authorization: str | None) -> Principal:
        if not authorization:
            raise errors.Unauthorized("authentication required: send 'Authorization: Bearer <token>'",
                                      headers={"WWW-Authenticate": 'Bearer realm="enjournal"'})
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise errors.Unauthorized("the Authorization header must be 'Bearer <token>'",
                                      headers={"WWW-Authenticate": 'Bearer realm="enjournal", error="invalid_request"'})
        claims = self.verifier.verify(token)       # checks expiry on every call (cached or not)
        now = time.monotonic()
        hit = self._principals.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        principal = self.to_principal(claims)
        if principal.kind == PERSONNEL and principal.hpr and principal.hpr_category is None:
            principal = dataclasses.replace(principal, hpr_category=self.facts.hpr_category(principal.hpr))
        with self._lock:
            if len(self._principals) > 10_000:
                self._principals.clear()
            self._principals[token] = (now + self.cache_seconds, principal)
        return principal

    def bound_patient(self, principal: Principal, attestation: Attestation) -> str | None:
        """The Patient id this request is about: the attested one, or a citizen's own."""
        given = attestation.patient
        if given is None and principal.kind == CITIZEN and principal.pid:
            given = principal.pid
        if given is None:
            return None
        if given.startswith("Patient/"):
            given = given[len("Patient/"):]
            return given if _ID.match(given) else UNKNOWN_PATIENT
        if _NUMBER.match(given):
            return self.patient_by_number(given)
        return given if _ID.match(given) else UNKNOWN_PATIENT

    def patient_by_number(self, number: str) -> str:
        now = time.monotonic()
        hit = self._patients.get(number)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = self.facts.patient_by_number(number)
        if found is None:
            return UNKNOWN_PATIENT          # not cached: the patient may be registered any moment
        with self._lock:
            if len(self._patients) > 100_000:
                self._patients.clear()
            self._patients[number] = (now + self.cache_seconds, found)
        return found


def base_of(scope: dict) -> str:
    """The base URL the request addressed (``http://host:port`` and any root path), from its
    Host header or, without one, the server's address."""
    host = ""
    for name, value in scope["headers"]:
        if name == b"host":
            host = value.decode("latin-1")
            break
    if not host and scope.get("server"):
        server_host, port = scope["server"][0], scope["server"][1]
        host = f"{server_host}:{port}" if port else server_host
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}" if host else ""


ACCESS_HEADERS = ("authorization", "x-purpose-of-use", "x-patient", "x-access-reason", "x-consent-declared")


def _headers(scope: dict) -> dict[str, str]:
    """The headers that say who asks and why. Each may come once: with two Authorization
    headers (or two X-Patient ...), which one a proxy or a client library honours differs,
    so the request is refused rather than one of them picked."""
    out: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1").lower()
        if key in ACCESS_HEADERS:
            if key in out:
                raise errors.Invalid(f"the request has more than one {name.decode('latin-1')} header: send one",
                                     name.decode("latin-1"))
            out[key] = value.decode("utf-8", "replace").strip()
    return out


def _attestation(headers: dict[str, str], principal: Principal) -> Attestation:
    purpose = headers.get("x-purpose-of-use") or principal.claims_purpose
    consent = headers.get("x-consent-declared", "").lower()
    if consent not in ("", "true", "false"):
        raise errors.Invalid("X-Consent-Declared must be true or false", "X-Consent-Declared")
    patient = headers.get("x-patient") or principal.claims_patient
    reason = headers.get("x-access-reason") or principal.claims_reason
    if reason is not None and len(reason) > 1000:
        raise errors.Invalid("X-Access-Reason is longer than 1000 characters", "X-Access-Reason")
    return Attestation(purpose=purpose.upper() if purpose else None, patient=patient or None,
                       reason=reason or None, consent_declared=consent == "true")
