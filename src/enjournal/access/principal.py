"""Who is asking, and on what attested basis.

A ``Principal`` is built from a verified token (``tokens.py`` + ``claims.py``); an
``Attestation`` is what the caller states per request in the national trust framework
(tillitsrammeverk): purpose of use, the patient, a reason for emergency access and whether
the patient's consent was declared. It comes from token claims or request headers
(docs/access.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Trust-framework purpose of use (https://www.nhn.no/tillitsrammeverk).
TREAT = "TREAT"        # planned care of the patient
ETREAT = "ETREAT"      # emergency treatment
COC = "COC"            # coordination of care, not direct care
BTG = "BTG"            # break the glass: override, needs a reason, reviewed
PURPOSES = (TREAT, ETREAT, COC, BTG)
EMERGENCY = (ETREAT, BTG)

PERSONNEL, CITIZEN, SYSTEM = "personnel", "citizen", "system"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: health personnel, a citizen, or a system."""
    kind: str                       # PERSONNEL | CITIZEN | SYSTEM
    subject: str                    # the token's ``sub``
    issuer: str
    name: str = ""
    pid: str | None = None          # fødselsnummer / D-number of the person behind the token
    hpr: str | None = None          # HPR number (health personnel)
    hpr_category: str | None = None  # helsepersonellkategori: LE, SP, FA1, ... (resolved from data)
    org: str | None = None          # organisation number acted for (child unit if given, else parent)
    org_parent: str | None = None
    org_name: str = ""
    client_id: str = ""
    scopes: tuple = ()              # scopes.ResourceScope, parsed from the token's ``scope``
    scope: str = ""                 # the token's scope string as given
    assurance: str = ""             # ID-porten acr / HelseID security level
    expires: int = 0                # epoch seconds
    claims_patient: str | None = None    # SMART launch context or trust-framework patient claim
    claims_purpose: str | None = None    # purpose of use from the token
    claims_reason: str | None = None     # emergency reason from the token
    token_id: str = ""              # jti, for the audit record


@dataclass(frozen=True)
class Attestation:
    """What the caller attests for this request (trust framework), all optional."""
    purpose: str | None = None
    patient: str | None = None      # "Patient/<id>" or a fødselsnummer / D-number as given
    reason: str | None = None       # required for ETREAT and BTG
    consent_declared: bool = False  # the patient consented (needed for restricted sections)

    @property
    def emergency(self) -> bool:
        return self.purpose in EMERGENCY


@dataclass
class Subject:
    """The principal with its attestation as one request sees it; ``patient_id`` is the
    resolved Patient id the request is bound to (None: not bound to a patient)."""
    principal: Principal
    attestation: Attestation = field(default_factory=Attestation)
    patient_id: str | None = None
