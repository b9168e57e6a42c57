"""Representation ("på vegne av"): whom a citizen may act for, and switching to them.

The candidates are the people whose record names the citizen: as a parent
(``RelatedPerson`` with the citizen's fødselsnummer) or as the receiver of a power of
attorney (an active ``power-of-attorney`` Consent with the citizen as actor). Finding them
is the platform's own lookup, as the access facts are (``access/facts.py``); whether the
citizen may act for one is decided by the access policy itself: each candidate's Patient is
read through the guarded repository bound to that candidate (checked and audited), and
only those the policy lets the citizen see are offered. The choice is kept in the session
(``data["attestation"]["patient"]``): every later page sends it as ``X-Patient``, and the
policy decides each read and write as parent or attorney.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ... import errors
from ...access import facts as af
from ...access.context import AccessContext, current, use
from ...access.policy import PARENT_FULL_UNTIL, Action, age_on, decide
from ...access.principal import Attestation, Subject
from ...fhir import jsonio, norway
from ...fhir import query as fq
from ..doors import Door, FormErrors, Session
from .display import person_name


@dataclasses.dataclass(frozen=True)
class Represented:
    patient: str            # Patient id
    name: str
    birth_date: str
    basis: str              # "parent" | "attorney"
    limited: bool           # a parent of a 12-15-year-old: no summary record, fewer services
    can_write: bool         # may use services (write) in the record


def acting_for(session: Session) -> dict | None:
    """The person the citizen acts for now (``{"patient", "name", "basis", "limited",
    "can_write"}``), None when they act for themselves."""
    value = session.data.get("acting_for")
    return value if isinstance(value, dict) else None


def patient_of(session: Session) -> str | None:
    """The Patient id whose record the pages show: the one acted for, else the citizen's own."""
    acting = acting_for(session)
    return acting["patient"] if acting else (session.user.patient if session.user else None)


def _search(store: Any, type: str, params: list) -> list[dict]:
    query = fq.parse(type, params, store.registry, default_count=100, max_count=100)
    return [jsonio.loads(s.body) for s in store.load(store.search(query).keys)]


def candidate_ids(store: Any, pid: str) -> list[str]:
    """Ids of Patients whose parent or attorney the person with ``pid`` is named as."""
    out: dict[str, None] = {}
    system = norway.DNR if "dnr" in (norway.kind(pid) or "") else norway.FNR
    for related in _search(store, "RelatedPerson", [("identifier", f"{system}|{pid}")]):
        ref = (related.get("patient") or {}).get("reference", "")
        if ref.startswith("Patient/"):
            out.setdefault(ref[len("Patient/"):])
    for consent in _search(store, "Consent", [("actor:identifier", f"{system}|{pid}"), ("status", "active"),
                                              ("category", f"{af.ACCESS_CONTROL}|{af.POWER_OF_ATTORNEY}")]):
        ref = (consent.get("patient") or {}).get("reference", "")
        if ref.startswith("Patient/"):
            out.setdefault(ref[len("Patient/"):])
    return list(out)


def represented(platform: Any, session: Session) -> list[Represented]:
    """The people the logged-in citizen may act for, each checked by the policy and read
    through the guarded repository as that representation (audited)."""
    request_ctx = current()
    if request_ctx is None or request_ctx.subject is None or session.user is None or not session.user.pid:
        return []
    principal = request_ctx.subject.principal
    own = session.user.patient
    now = datetime.now(timezone.utc)
    out = []
    for patient_id in candidate_ids(platform.store, session.user.pid):
        if patient_id == own:
            continue
        facts = platform.facts.facts(patient_id)
        if facts is None:
            continue
        subject = Subject(principal, Attestation(patient=f"Patient/{patient_id}"), patient_id)
        if not decide(subject, Action("read", "Patient"), facts, now).allow:
            continue
        ctx = AccessContext(subject, "GET", f"/Patient/{patient_id}", "", "read", request_ctx.client_address,
                            base=request_ctx.base)
        try:
            with use(ctx):
                stored = platform.resources.read("Patient", patient_id)
        except errors.FhirError:
            continue
        finally:
            ctx.status = 200
            platform.audit.record(ctx)
        patient = jsonio.loads(stored.body)
        write = decide(subject, Action("create", "Observation"), facts, now)
        summary = decide(subject, Action("read", "AllergyIntolerance"), facts, now)
        basis = write.basis or summary.basis or ("attorney" if any(
            p.kind == "attorney" and p.pid == session.user.pid for p in facts.proxies) else "parent")
        out.append(Represented(patient_id, person_name(patient), patient.get("birthDate", ""), basis,
                               limited=basis == "parent" and not summary.allow, can_write=write.allow))
    return out


def register(door: Door) -> None:
    platform = door.platform

    @door.page("/representasjon")
    async def choose(request: Request, session: Session) -> Response:
        people = await door.call(represented, platform, session)
        return door.render(request, session, "portal/representation.html", people=people,
                           errors=FormErrors(), under=PARENT_FULL_UNTIL)

    @door.page("/representasjon", methods=("POST",))
    async def switch(request: Request, session: Session) -> Response:
        form = await door.form(request, session)
        wanted = form.get("patient") if isinstance(form.get("patient"), str) else ""
        if wanted in ("", "self"):
            session.data.pop("attestation", None)
            session.data.pop("acting_for", None)
            await door.call(session.save)
            return RedirectResponse(door.url("home"), status_code=303)
        people = await door.call(represented, platform, session)
        chosen = next((p for p in people if p.patient == wanted), None)
        if chosen is None:
            _ = door.gettext(session)
            errors_ = FormErrors().add("patient", _("Du kan ikke representere denne personen."))
            return door.render(request, session, "portal/representation.html", status=400, people=people,
                               errors=errors_, under=PARENT_FULL_UNTIL)
        session.data["attestation"] = {"patient": f"Patient/{chosen.patient}"}
        session.data["acting_for"] = dataclasses.asdict(chosen)
        await door.call(session.save)
        return RedirectResponse(door.url("home"), status_code=303)


def age_of(birth_date: str) -> int | None:
    try:
        return age_on(datetime.fromisoformat(birth_date[:10]).date(), datetime.now(timezone.utc).date())
    except ValueError:
        return None
