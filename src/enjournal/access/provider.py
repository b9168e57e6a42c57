"""The built-in OpenID Connect provider for development, demos and tests (docs/identity-provider.md).

It signs tokens shaped like the national ones for made-up people (``services/personas.py``):
HelseID access tokens for health personnel, ID-porten tokens for citizens, and HelseID client
credentials tokens for systems, so the access layer can be exercised end to end without the
real identity providers. It is never for production: anyone who reaches it can log in as
anyone it knows.

The signing key is an EC P-256 key (ES256) made on first use and kept in the database
``setting`` table (``idp.signing_key``), so every process on the same database (the server's
workers, ``enjournal token``) signs with the same key and a restart keeps it.
"""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from .. import errors
from ..fhir import norway
from .claims import (HELSEID_HPR, HELSEID_ORG_CHILD, HELSEID_ORG_PARENT, HELSEID_PID, HELSEID_SECURITY_LEVEL,
                     TRUST_FRAMEWORK_TYPE)
from .context import system_context, use
from .principal import CITIZEN, PERSONNEL, PURPOSES, SYSTEM

KEY_SETTING = "idp.signing_key"
SECRET_SETTING = "idp.client_secret"
ALGORITHM = "ES256"

# HelseID claim names (https://utviklerportal.nhn.no/informasjonstjenester/helseid): the ones
# verification reads come from claims.py, so the provider writes exactly what is read
HELSEID_ASSURANCE_LEVEL = "helseid://claims/identity/assurance_level"
# The trust framework's structured attestation (tillitsrammeverk, RFC 9396 authorization details)
PURPOSE_OF_USE_SYSTEM = "urn:oid:2.16.840.1.113883.1.11.20448"
IDPORTEN_LOA_HIGH = "idporten-loa-high"

DEFAULT_SCOPE = {
    PERSONNEL: "openid fhirUser user/*.cruds",
    CITIZEN: "openid fhirUser launch/patient patient/*.rs",
    SYSTEM: "system/*.cruds",
}
DEFAULT_CLIENT = {PERSONNEL: "enjournal-ehr", CITIZEN: "enjournal-portal", SYSTEM: "enjournal-system"}


@dataclass(frozen=True)
class Client:
    """A client registered with the built-in provider: the web front doors. Its redirect
    URI must end at ``redirect_path`` (any host: the server may run on any port), and its
    login page offers only personas of ``kind``."""
    client_id: str
    kind: str
    redirect_path: str
    name: str


DOOR_CLIENTS = {c.client_id: c for c in (
    Client("enjournal-portal", CITIZEN, "/innbygger/callback", "Helsenorge – innbyggerportalen (/innbygger/)"),
    Client("enjournal-workspace", PERSONNEL, "/helsepersonell/callback",
           "Arbeidsflate for helsepersonell (/helsepersonell/)"),
)}
# Scopes without a resource context that every kind of user may ask for in the browser flow
_IDENTITY_SCOPES = ("openid", "fhirUser", "profile", "launch/patient", "offline_access", "online_access")
_CONTEXTS_FOR = {PERSONNEL: ("patient", "user"), CITIZEN: ("patient",), SYSTEM: ("system",)}

SCOPES_SUPPORTED = [
    "openid", "fhirUser", "profile", "launch/patient", "offline_access",
    "patient/*.rs", "patient/*.cruds", "user/*.rs", "user/*.cruds", "system/*.rs", "system/*.cruds",
]
SMART_CAPABILITIES = [
    "launch-standalone", "client-public", "client-confidential-symmetric", "permission-v2",
    "context-standalone-patient", "sso-openid-connect", "permission-patient", "permission-user",
]


def default_base(settings: Any) -> str:
    """The server's public base URL, which is also the provider's issuer and the tokens'
    audience: ``base_url`` if set, else ``http://host:port``."""
    try:
        from .tokens import default_base as shared   # the verifier's own rule, when present
    except ImportError:
        return (settings.base_url or f"http://{settings.host}:{settings.port}").rstrip("/")
    return shared(settings)


def enabled(mode: str, database: str) -> bool:
    """Whether the built-in provider runs for setting ``builtin_idp`` = ``mode``: ``on``,
    ``off``, or ``auto`` (on with SQLite, off with any other database)."""
    value = (mode or "").strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    if value == "auto":
        return database.startswith("sqlite:")
    raise errors.Invalid(f"builtin_idp must be auto, on or off, not {mode!r}", "builtin_idp")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def pairwise_subject(pid: str) -> str:
    """A stable, opaque ``sub`` for a person, as HelseID and ID-porten give (not the pid)."""
    return _b64(hashlib.sha256(f"enjournal-idp:{pid}".encode()).digest())


def _patient_identifier(value: str) -> dict:
    """The trust framework's patient identifier for a fødselsnummer/D-number or a Patient id."""
    kind = norway.kind(value) if value.isdigit() and len(value) == 11 else None
    if kind is None:
        return {"value": value}
    system = norway.DNR if "dnr" in kind else norway.FNR
    return {"system": system, "value": value}


def _patient_id(value: str | None) -> str | None:
    """The Patient id in ``value`` ("Patient/123" or "123"); None for a person number."""
    if not value:
        return None
    if value.isdigit() and len(value) == 11 and norway.kind(value) is not None:
        return None
    return value.removeprefix("Patient/")


class Provider:
    """Issues signed tokens for a fixed set of personas (objects with ``key``, ``kind``,
    ``name``, ``pid``, ``hpr``, ``org_parent``, ``org_child``, ``practitioner`` and
    ``client_id``; see ``services/personas.Persona``)."""

    def __init__(self, repo: Any, issuer: str, personas: Iterable[Any], audience: str | None = None,
                 clock: Callable[[], float] | None = None, new_id: Callable[[], str] | None = None):
        self.repo = repo
        self.issuer = issuer.rstrip("/")
        self.audience = (audience or self.issuer).rstrip("/")
        self.personas = {p.key: p for p in personas}
        self.clients = dict(DOOR_CLIENTS)     # registered clients; any other client id is accepted too
        self.clock = clock or time.time
        self.new_id = new_id or (lambda: uuid.uuid4().hex)
        self._key: ECKey | None = None

    # -- keys ------------------------------------------------------------------------------

    def _stored(self, name: str, make: Callable[[], str]) -> str:
        """The value of database setting ``name``, made by ``make`` and stored on first use.
        Made under the write lock and re-read there, so concurrent processes agree."""
        value = self.repo.get_setting(name)
        if value is not None:
            return value
        with use(system_context("enjournal-idp")):
            with self.repo.unit() as unit:
                value = self.repo.get_setting(name)
                if value is None:
                    value = make()
                    unit.set_setting(name, value)
        return value

    def signing_key(self) -> ECKey:
        """The private signing key (created and stored on first use)."""
        if self._key is None:
            def make() -> str:
                key = ECKey.generate_key("P-256", parameters={"use": "sig", "alg": ALGORITHM},
                                         private=True, auto_kid=True)
                return json.dumps(key.as_dict(private=True))
            self._key = ECKey.import_key(json.loads(self._stored(KEY_SETTING, make)))
        return self._key

    def jwks(self) -> dict:
        """The JSON Web Key Set with the public key only (RFC 7517 §5)."""
        return {"keys": [self.signing_key().as_dict(private=False)]}

    def key_set(self) -> KeySet:
        """The public key as a joserfc ``KeySet``, for a token verifier."""
        return KeySet.import_key_set(self.jwks())

    def client_secret(self) -> str:
        """The one client secret of the client credentials grant, for any client id
        (created and stored as setting ``idp.client_secret`` on first use)."""
        return self._stored(SECRET_SETTING, lambda: secrets.token_urlsafe(24))

    def check_client_secret(self, secret: str) -> bool:
        return secrets.compare_digest(secret.encode(), self.client_secret().encode())

    # -- personas --------------------------------------------------------------------------

    def persona(self, key: str) -> Any:
        """The persona called ``key``; ``errors.NotFound`` naming the known ones otherwise."""
        persona = self.personas.get(key)
        if persona is None:
            raise errors.NotFound(f"unknown persona {key!r}: one of {', '.join(self.personas)}", "persona")
        return persona

    def grantable(self, persona: Any, requested: str | None) -> str:
        """The part of a ``requested`` scope string the persona's kind may hold (patient and
        user scopes for personnel, patient scopes for citizens, system scopes for systems);
        the kind's default when nothing is requested. ``errors.Invalid`` when no resource
        scope is left."""
        if not (requested or "").strip():
            return DEFAULT_SCOPE[persona.kind]
        contexts = _CONTEXTS_FOR[persona.kind]
        identity, resource = [], []
        for item in dict.fromkeys(requested.split()):
            if item in _IDENTITY_SCOPES:
                if persona.kind != SYSTEM:
                    identity.append(item)
            elif item.partition("/")[0] in contexts:
                resource.append(item)
        if not resource:
            raise errors.Invalid(f"no scope in {requested!r} can be granted to {persona.kind} "
                                 f"'{persona.key}' (allowed: {', '.join(c + '/...' for c in contexts)})",
                                 "scope")
        return " ".join(identity + resource)

    # -- tokens ----------------------------------------------------------------------------

    def issue(self, persona_key: str, scope: str | None = None, lifetime: int = 3600,
              patient: str | None = None, purpose: str | None = None, reason: str | None = None,
              *, client_id: str | None = None) -> str:
        """A signed access token (a JWT, ES256) for the persona, with claims like the national
        identity provider's for its kind. ``patient`` is a Patient id ("Patient/123" or
        "123") or a person number; ``purpose`` one of TREAT, ETREAT, COC, BTG."""
        persona = self.persona(persona_key)
        if purpose is not None and purpose not in PURPOSES:
            raise errors.Invalid(f"purpose must be one of {', '.join(PURPOSES)}, not {purpose!r}", "purpose")
        if lifetime <= 0:
            raise errors.Invalid(f"lifetime must be positive, not {lifetime}", "lifetime")
        claims = self._base_claims(persona, lifetime, client_id)
        claims["scope"] = DEFAULT_SCOPE[persona.kind] if scope is None else scope
        claims.update(_KIND_CLAIMS[persona.kind](persona))
        if persona.kind == PERSONNEL and (patient or purpose or reason):
            claims["authorization_details"] = [_attestation(patient, purpose, reason)]
        patient_id = _patient_id(patient)
        if patient_id is not None:
            claims["patient"] = patient_id
        elif patient and persona.kind == CITIZEN:
            raise errors.Invalid("a citizen's patient context is a Patient id, not a person number",
                                 "patient")
        return self._sign(claims, "at+jwt")

    def id_token(self, persona_key: str, client_id: str, nonce: str | None = None,
                 lifetime: int = 3600) -> str:
        """An OpenID Connect ID token for the persona, addressed to ``client_id``
        (https://openid.net/specs/openid-connect-core-1_0.html#IDToken)."""
        persona = self.persona(persona_key)
        now = int(self.clock())
        claims = {"iss": self.issuer, "sub": self.subject(persona), "aud": client_id, "iat": now,
                  "exp": now + lifetime, "auth_time": now, "name": persona.name}
        if nonce:
            claims["nonce"] = nonce
        if persona.practitioner:
            claims["fhirUser"] = f"{self.audience}/Practitioner/{persona.practitioner}"
        claims.update({k: v for k, v in _KIND_CLAIMS[persona.kind](persona).items() if k != "fhirUser"})
        return self._sign(claims, "JWT")

    def subject(self, persona: Any) -> str:
        if persona.kind == SYSTEM or not persona.pid:
            return persona.client_id or DEFAULT_CLIENT[persona.kind]
        return pairwise_subject(persona.pid)

    def _base_claims(self, persona: Any, lifetime: int, client_id: str | None) -> dict:
        now = int(self.clock())
        client = client_id or persona.client_id or DEFAULT_CLIENT[persona.kind]
        claims = {"iss": self.issuer, "aud": self.audience, "sub": self.subject(persona),
                  "iat": now, "nbf": now, "exp": now + lifetime, "jti": self.new_id(), "client_id": client}
        if persona.kind == SYSTEM:
            claims["sub"] = client
        return claims

    def _sign(self, claims: dict, typ: str) -> str:
        key = self.signing_key()
        return jwt.encode({"alg": ALGORITHM, "kid": key.kid, "typ": typ}, claims, key)

    # -- metadata --------------------------------------------------------------------------

    def discovery(self, base: str) -> dict:
        """The OpenID Provider metadata (OpenID Connect Discovery 1.0 §3); endpoints under
        ``base``, the URL clients reach this server at."""
        base = base.rstrip("/")
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{base}/oidc/authorize",
            "token_endpoint": f"{base}/oidc/token",
            "jwks_uri": f"{base}/oidc/jwks",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "client_credentials"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": SCOPES_SUPPORTED,
            "claims_supported": ["sub", "name", "fhirUser", "pid", "acr", HELSEID_PID, HELSEID_HPR,
                                 HELSEID_SECURITY_LEVEL, HELSEID_ORG_PARENT, HELSEID_ORG_CHILD],
            "acr_values_supported": [IDPORTEN_LOA_HIGH],
        }

    def smart_configuration(self, base: str) -> dict:
        """SMART App Launch v2 metadata
        (https://hl7.org/fhir/smart-app-launch/conformance.html#metadata)."""
        base = base.rstrip("/")
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{base}/oidc/jwks",
            "authorization_endpoint": f"{base}/oidc/authorize",
            "token_endpoint": f"{base}/oidc/token",
            "grant_types_supported": ["authorization_code", "client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": SCOPES_SUPPORTED,
            "capabilities": SMART_CAPABILITIES,
        }


def _attestation(patient: str | None, purpose: str | None, reason: str | None) -> dict:
    """The trust framework's ``authorization_details`` entry for what the caller attests."""
    care: dict = {}
    if purpose:
        care["purpose_of_use"] = {"code": purpose, "system": PURPOSE_OF_USE_SYSTEM}
    if reason:
        care["purpose_of_use_details"] = {"text": reason}
    detail: dict = {"type": TRUST_FRAMEWORK_TYPE, "care_relationship": care}
    if patient:
        detail["patients"] = [{"identifier": _patient_identifier(_patient_id(patient) or patient)}]
    return detail


def _personnel_claims(p: Any) -> dict:
    claims = {"name": p.name, HELSEID_PID: p.pid, HELSEID_HPR: p.hpr, HELSEID_SECURITY_LEVEL: "4",
              HELSEID_ASSURANCE_LEVEL: "high", HELSEID_ORG_PARENT: p.org_parent}
    if p.org_child:
        claims[HELSEID_ORG_CHILD] = p.org_child
    if p.practitioner:
        claims["fhirUser"] = f"Practitioner/{p.practitioner}"
    return {k: v for k, v in claims.items() if v is not None}


def _citizen_claims(p: Any) -> dict:
    return {"name": p.name, "pid": p.pid, "acr": IDPORTEN_LOA_HIGH, "amr": ["TestID"]}


def _system_claims(p: Any) -> dict:
    claims = {"name": p.name, HELSEID_ORG_PARENT: p.org_parent}
    return {k: v for k, v in claims.items() if v is not None}


_KIND_CLAIMS: dict[str, Callable[[Any], dict]] = {
    PERSONNEL: _personnel_claims, CITIZEN: _citizen_claims, SYSTEM: _system_claims}
