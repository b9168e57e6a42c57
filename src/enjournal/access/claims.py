"""Verified token claims -> ``Principal`` (docs/access-tokens.md).

Three kinds of caller, told apart by their claims:

- health personnel (HelseID): ``helseid://claims/hpr/hpr_number`` is present;
- a citizen (ID-porten): ``pid`` is present and no HPR number;
- a system (client credentials, HelseID or another issuer): neither.

The token may also carry what the caller attests (the trust framework, tillitsrammeverket):
a SMART launch ``patient``, or an RFC 9396 ``authorization_details`` entry of type
``nhn:tillitsrammeverk:parameters`` with purpose of use, its reason and the patient. The
claims come from a trusted issuer, but their shapes are still checked: a claim of the wrong
type is an ``errors.Unauthorized`` naming it, never a Python exception.
"""
from __future__ import annotations

import math
from typing import Any

from ..fhir import norway
from . import scopes as scope_parser
from .principal import CITIZEN, PERSONNEL, SYSTEM, Principal
from .tokens import invalid_token

# HelseID claim names (https://utviklerportal.nhn.no/informasjonstjenester/helseid)
HELSEID_PID = "helseid://claims/identity/pid"
HELSEID_HPR = "helseid://claims/hpr/hpr_number"
HELSEID_SECURITY_LEVEL = "helseid://claims/identity/security_level"
HELSEID_ORG_PARENT = "helseid://claims/client/claims/orgnr_parent"
HELSEID_ORG_CHILD = "helseid://claims/client/claims/orgnr_child"
TRUST_FRAMEWORK_TYPE = "nhn:tillitsrammeverk:parameters"


def principal_from_claims(claims: dict, issuer: str | None = None) -> Principal:
    """The caller described by verified ``claims`` from ``issuer`` (default: the ``iss``
    claim). ``errors.Unauthorized`` when a claim has the wrong type or shape, or a system
    token names no client."""
    if not isinstance(claims, dict):
        raise invalid_token("token claims must be a JSON object")
    issuer = issuer if issuer is not None else _text(claims, "iss") or ""
    client_id = _text(claims, "client_id") or _text(claims, "azp") or ""
    hpr, pid_helseid, pid_citizen = _text(claims, HELSEID_HPR), _text(claims, HELSEID_PID), _text(claims, "pid")
    if hpr is not None:
        kind, pid = PERSONNEL, pid_helseid
        problem = norway.check_hpr(hpr)
        if problem:
            raise invalid_token(f"token claim {HELSEID_HPR} is not an HPR number: {problem}")
    elif pid_citizen is not None:
        kind, pid = CITIZEN, pid_citizen
    else:
        kind, pid = SYSTEM, None
        client_id = client_id or _text(claims, "sub") or ""
        if not client_id:
            raise invalid_token("token names no person (pid, HPR number) and no client (client_id, azp or sub)")
    if pid is not None:
        _digits(pid, 11, HELSEID_PID if kind == PERSONNEL else "pid", "a fødselsnummer or D-number")
    subject = _text(claims, "sub") or client_id
    if not subject:
        raise invalid_token("token has no subject (sub) and no client (client_id, azp)")
    scope = _scope(claims.get("scope"))
    org_parent = _org(claims, HELSEID_ORG_PARENT)
    org = (_org(claims, HELSEID_ORG_CHILD) or org_parent) if kind == PERSONNEL else org_parent
    purpose, reason, tf_patient = _trust_framework(claims)
    return Principal(
        kind=kind, subject=subject, issuer=issuer, name=_name(claims), pid=pid,
        hpr=hpr, org=org, org_parent=org_parent, client_id=client_id,
        scopes=scope_parser.parse(scope), scope=scope, assurance=_assurance(claims, kind),
        expires=_expires(claims.get("exp")), claims_patient=_text(claims, "patient") or tf_patient,
        claims_purpose=purpose, claims_reason=reason, token_id=_text(claims, "jti") or "")


# -- one claim each -------------------------------------------------------------------------------

def _text(claims: dict, name: str) -> str | None:
    """Claim ``name`` as a string; None when absent or empty."""
    return _as_text(claims.get(name), name)


def _as_text(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid_token(f"token claim {where} must be a string, not {type(value).__name__}")
    return value or None


def _digits(value: str, length: int, where: str, what: str) -> None:
    if len(value) != length or not value.isascii() or not value.isdigit():
        raise invalid_token(f"token claim {where} is not {what} ({length} digits)")


def _org(claims: dict, name: str) -> str | None:
    value = _text(claims, name)
    if value is not None:
        _digits(value, 9, name, "an organisation number")
    return value


def _name(claims: dict) -> str:
    name = _text(claims, "name")
    if name:
        return name
    parts = (_text(claims, "given_name"), _text(claims, "middle_name"), _text(claims, "family_name"))
    return " ".join(p for p in parts if p)


def _assurance(claims: dict, kind: str) -> str:
    if kind == PERSONNEL:
        return _text(claims, HELSEID_SECURITY_LEVEL) or _text(claims, "acr") or ""
    if kind == CITIZEN:
        return _text(claims, "acr") or ""
    return ""


def _scope(value: Any) -> str:
    """The scope as one space-separated string; tokens give a string (RFC 8693 §4.2) or,
    from some issuers (HelseID), a JSON list."""
    if value is None:
        return ""
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return " ".join(item for item in value if item)
    raise invalid_token("token claim scope must be a string or a list of strings")


def _expires(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise invalid_token("token claim exp must be a number of seconds")
    return int(value)


# -- the trust framework's attestation ------------------------------------------------------------

def _trust_framework(claims: dict) -> tuple[str | None, str | None, str | None]:
    """(purpose of use, its reason, the patient's identifier value) attested in the token:
    the first ``authorization_details`` entry of the trust framework's type, else the plain
    claims ``purpose_of_use`` and ``emergency_reason``. Purpose codes are kept as given so the
    policy can refuse unknown ones with a message."""
    detail, where = _trust_detail(claims.get("authorization_details"))
    purpose, reason, patient = None, None, None
    if detail is not None:
        care = _object(detail.get("care_relationship"), f"{where}.care_relationship") or {}
        use = _object(care.get("purpose_of_use"), f"{where}.care_relationship.purpose_of_use") or {}
        purpose = _as_text(use.get("code"), f"{where}.care_relationship.purpose_of_use.code")
        details = _object(care.get("purpose_of_use_details"),
                          f"{where}.care_relationship.purpose_of_use_details") or {}
        reason = _as_text(details.get("text"), f"{where}.care_relationship.purpose_of_use_details.text")
        patient = _first_patient(detail.get("patients"), f"{where}.patients")
    purpose = purpose or _text(claims, "purpose_of_use")
    reason = reason or _text(claims, "emergency_reason")
    return purpose, reason, patient


def _trust_detail(value: Any) -> tuple[dict | None, str]:
    """The trust framework's entry in ``authorization_details`` (a list, or one object)."""
    if value is None:
        return None, ""
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list):
        raise invalid_token("token claim authorization_details must be a list or an object")
    for i, item in enumerate(items):
        where = f"authorization_details[{i}]"
        if not isinstance(item, dict):
            raise invalid_token(f"token claim {where} must be an object")
        if item.get("type") == TRUST_FRAMEWORK_TYPE:
            return item, where
    return None, ""


def _object(value: Any, where: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_token(f"token claim {where} must be an object")
    return value


def _first_patient(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise invalid_token(f"token claim {where} must be a list")
    if not value:
        return None
    patient = _object(value[0], f"{where}[0]") or {}
    identifier = _object(patient.get("identifier"), f"{where}[0].identifier") or {}
    return _as_text(identifier.get("value"), f"{where}[0].identifier.value")
