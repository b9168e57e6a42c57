"""The purpose of use the clinician states once per patient (the trust framework's
attestation, docs/access.md): TREAT, ETREAT, COC or BTG, a reason for emergency access and
whether the patient consented.

``check_purpose`` turns the submitted form into the attestation the door machinery sends
with every request for the patient (``session.data["attestation"]``), or field errors. The
reason rule is the policy's own (``access.policy.reason_problem``), so the form refuses
exactly what the guard would.
"""
from __future__ import annotations

from ...access.policy import reason_problem
from ...access.principal import BTG, COC, EMERGENCY, ETREAT, PURPOSES, TREAT
from .lookup import N_

PURPOSE_FIELD, REASON_FIELD, CONSENT_FIELD = "purpose", "reason", "consent"
MAX_REASON = 500

# (code, label msgid, hint msgid), in the order shown
CHOICES = (
    (TREAT, N_("Behandling (TREAT)"), N_("Planlagt helsehjelp til en pasient du behandler")),
    (ETREAT, N_("Akutt behandling (ETREAT)"), N_("Øyeblikkelig hjelp: oppgi begrunnelse")),
    (COC, N_("Koordinering (COC)"), N_("Koordinering av helsehjelp, ikke direkte behandling")),
    (BTG, N_("Akuttilgang (BTG)"), N_("Nødtilgang uten behandlingsrelasjon: oppgi begrunnelse. Tilgangen blir "
                                           "kontrollert, og pasienten får beskjed")),
)


def check_purpose(form: dict, patient: str) -> tuple[dict | None, dict[str, str]]:
    """(attestation, {}) or (None, {field: msgid}). ``patient`` is ``Patient/<id>`` or the
    person number the clinician looked up."""
    purpose = str(form.get(PURPOSE_FIELD) or "").strip().upper()
    reason = " ".join(str(form.get(REASON_FIELD) or "").split())
    consent = str(form.get(CONSENT_FIELD) or "") in ("on", "true", "1", "yes")
    errors: dict[str, str] = {}
    if purpose not in PURPOSES:
        errors[PURPOSE_FIELD] = N_("Velg formål med oppslaget")
    elif purpose in EMERGENCY and reason_problem(reason):
        errors[REASON_FIELD] = N_("Akuttilgang krever en begrunnelse med ord (minst fire bokstaver)")
    if len(reason) > MAX_REASON:
        errors[REASON_FIELD] = N_("Begrunnelsen er for lang (høyst 500 tegn)")
    if errors:
        return None, errors
    return {"patient": patient, "purpose": purpose, "reason": reason or None, "consent": consent}, {}


def opened(attestation: dict, form: dict) -> tuple[dict | None, dict[str, str]]:
    """The attestation after the clinician opens locked sections: ``how`` = ``consent``
    (the patient consented) or ``emergency`` (ETREAT with a reason, unless the purpose is
    already an emergency one)."""
    how = str(form.get("how") or "")
    if how == "consent":
        return {**attestation, "consent": True}, {}
    if how == "emergency":
        if attestation.get("purpose") in EMERGENCY:
            return dict(attestation), {}
        reason = " ".join(str(form.get(REASON_FIELD) or "").split())
        if reason_problem(reason):
            return None, {REASON_FIELD: N_("Akuttilgang krever en begrunnelse med ord (minst fire bokstaver)")}
        return {**attestation, "purpose": ETREAT, "reason": reason[:MAX_REASON]}, {}
    return None, {"how": N_("Velg hvordan de låste delene skal åpnes")}
