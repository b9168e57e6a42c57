"""``/innbygger/personvern`` (Personverninnstillinger): the citizen's controls over who sees
the record, stored as the Consents the access control enforces (``access/facts.py``,
docs/access.md "Citizen controls as FHIR data"): block named health personnel by HPR number,
restrict sections (clinicians must then declare consent or emergency), opt out of the
summary care record; each can be withdrawn (the Consent becomes ``inactive``).

Writes go through ``platform.resources`` under the session's context, so the policy decides
who may change them (the citizen; not a parent of a 12–15-year-old, not an attorney).
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ... import errors
from ...access import facts as af
from ...access.policy import SECTIONS
from ...fhir import norway
from ..doors import Door, FormErrors, Session
from ..doors.i18n import N_
from .display import person_name
from .representation import patient_of

KINDS = (af.BLOCK_PERSONNEL, af.RESTRICT_SECTION, af.SUMMARY_OPT_OUT)
SECTION_LABELS = {"summary": N_("Kjernejournal (kritisk informasjon og sammendrag)"),
                  "prescriptions": N_("Resepter og legemidler"), "documents": N_("Journaldokumenter"),
                  "lab": N_("Prøvesvar"), "record": N_("Øvrige journalopplysninger")}
KIND_LABELS = {af.BLOCK_PERSONNEL: N_("Sperret helsepersonell"), af.RESTRICT_SECTION: N_("Skjermede opplysninger"),
               af.SUMMARY_OPT_OUT: N_("Reservert mot kjernejournal")}
_HPR = re.compile(r"^\d{4,9}$")
SAVED = {"sperret": N_("Helsepersonellet er sperret."), "skjermet": N_("Opplysningene er skjermet."),
         "reservert": N_("Du er reservert mot kjernejournal."), "trukket": N_("Innstillingen er trukket tilbake.")}


def consent(patient: str, kind: str, provision: dict | None = None) -> dict:
    """A citizen control as docs/access.md shapes it."""
    resource = {
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": af.ACCESS_CONTROL, "code": kind}]}],
        "patient": {"reference": f"Patient/{patient}"},
        "dateTime": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]},
    }
    if provision:
        resource["provision"] = provision
    return resource


def kind_of(resource: dict) -> str | None:
    for concept in resource.get("category") or []:
        for coding in concept.get("coding") or []:
            if coding.get("system") == af.ACCESS_CONTROL and coding.get("code") in KINDS:
                return coding["code"]
    return None


def view(resource: dict) -> dict:
    """One control for the page: id, kind, what it covers, when."""
    provision = resource.get("provision") or {}
    hprs = [((a.get("reference") or {}).get("identifier") or {}).get("value") for a in provision.get("actor") or []]
    names = [(a.get("reference") or {}).get("display") for a in provision.get("actor") or []]
    sections = [c.get("code") for concept in provision.get("code") or [] for c in concept.get("coding") or []]
    return {"id": resource.get("id"), "kind": kind_of(resource), "hpr": [h for h in hprs if h],
            "names": [n for n in names if n], "sections": sections or ["all"], "date": resource.get("dateTime")}


def register(door: Door) -> None:
    platform = door.platform

    def controls(patient: str) -> list[dict]:
        result = platform.resources.search("Consent", [("patient", f"Patient/{patient}"), ("status", "active"),
                                                       ("_count", "100")])
        found = [orjson.loads(s.body) for s in result.matches]
        return [view(c) for c in found if kind_of(c)]

    async def page(request: Request, session: Session, status: int = 200, form_name: str | None = None,
                   errors_: FormErrors | None = None, values: dict | None = None) -> Response:
        patient = patient_of(session)
        if patient is None:
            return door.render(request, session, "portal/no-record.html", status=404)
        try:
            found = await door.call(controls, patient)
        except errors.Forbidden as exc:
            return door.render(request, session, "portal/privacy.html", status=403, closed=exc.message, found=[],
                               errors=FormErrors(), values={}, form_name=None, saved=None,
                               sections=SECTION_LABELS, kinds=KIND_LABELS)
        saved = SAVED.get(request.query_params.get("lagret", ""))
        return door.render(request, session, "portal/privacy.html", status=status, found=found, closed=None,
                           errors=errors_ or FormErrors(), values=values or {}, form_name=form_name, saved=saved,
                           sections=SECTION_LABELS, kinds=KIND_LABELS,
                           opted_out=any(c["kind"] == af.SUMMARY_OPT_OUT for c in found))

    async def create(request: Request, session: Session, form: dict, form_name: str, resource: dict,
                     saved: str) -> Response:
        try:
            await door.call(platform.resources.create, "Consent", resource)
        except errors.FhirError as exc:
            if exc.status >= 500 or exc.status == 401:
                raise
            _ = door.gettext(session)
            message = (_("Du kan ikke endre personverninnstillingene for denne personen.")
                       if exc.status == 403 else exc.message)
            return await page(request, session, exc.status, form_name, FormErrors().add(None, message), form)
        return RedirectResponse(f"{door.prefix}/personvern?lagret={saved}", status_code=303)

    @door.page("/personvern")
    async def show(request: Request, session: Session) -> Response:
        return await page(request, session)

    @door.page("/personvern/sperr", methods=("POST",))
    async def block(request: Request, session: Session) -> Response:
        form = await door.form(request, session)
        _ = door.gettext(session)
        patient = patient_of(session)
        hpr = "".join(str(form.get("hpr") or "").split())
        if not _HPR.match(hpr):
            return await page(request, session, 400, "sperr", FormErrors().add(
                "hpr", _("Skriv HPR-nummeret med 4 til 9 sifre, for eksempel 9144101.")), form)
        found = await door.call(platform.resources.search, "Practitioner",
                                [("identifier", f"{norway.HPR}|{hpr}"), ("_count", "2")])
        if not found.matches:
            return await page(request, session, 400, "sperr", FormErrors().add(
                "hpr", _("Fant ikke helsepersonell med HPR-nummer %(hpr)s.", hpr=hpr)), form)
        name = person_name(orjson.loads(found.matches[0].body))
        provision = {"type": "deny", "actor": [{
            "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                 "code": "PRCP"}]},
            "reference": {"identifier": {"system": norway.HPR, "value": hpr}, "display": name}}]}
        return await create(request, session, form, "sperr", consent(patient, af.BLOCK_PERSONNEL, provision),
                            "sperret")

    @door.page("/personvern/skjerm", methods=("POST",))
    async def restrict(request: Request, session: Session) -> Response:
        form = await door.form(request, session)
        _ = door.gettext(session)
        chosen = form.get("section") or []
        chosen = [chosen] if isinstance(chosen, str) else chosen
        chosen = [c for c in chosen if c in SECTIONS]
        if not chosen:
            return await page(request, session, 400, "skjerm", FormErrors().add(
                "section", _("Velg minst én type opplysninger du vil skjerme.")), form)
        provision = {"type": "deny", "code": [{"coding": [{"system": af.RECORD_SECTION, "code": c}]} for c in chosen]}
        return await create(request, session, form, "skjerm",
                            consent(patient_of(session), af.RESTRICT_SECTION, provision), "skjermet")

    @door.page("/personvern/reserver", methods=("POST",))
    async def opt_out(request: Request, session: Session) -> Response:
        form = await door.form(request, session)
        _ = door.gettext(session)
        if form.get("confirm") != "ja":
            return await page(request, session, 400, "reserver", FormErrors().add(
                "confirm", _("Kryss av for at du vil reservere deg mot kjernejournal.")), form)
        return await create(request, session, form, "reserver", consent(patient_of(session), af.SUMMARY_OPT_OUT),
                            "reservert")

    @door.page("/personvern/trekk-tilbake", methods=("POST",))
    async def withdraw(request: Request, session: Session) -> Response:
        form = await door.form(request, session)
        consent_id = str(form.get("id") or "")

        def change() -> None:
            stored = platform.resources.read("Consent", consent_id)
            resource = orjson.loads(stored.body)
            if not kind_of(resource) or (resource.get("patient") or {}).get("reference") != \
                    f"Patient/{patient_of(session)}":
                raise errors.NotFound(f"Consent/{consent_id} is not known", "id")
            resource["status"] = "inactive"
            platform.resources.update("Consent", consent_id, resource, if_match=stored.version)
        try:
            await door.call(change)
        except errors.FhirError as exc:
            if exc.status >= 500 or exc.status == 401:
                raise
            _ = door.gettext(session)
            message = (_("Du kan ikke endre personverninnstillingene for denne personen.")
                       if exc.status == 403 else _("Innstillingen finnes ikke lenger."))
            return await page(request, session, exc.status, "aktive", FormErrors().add(None, message), {})
        return RedirectResponse(f"{door.prefix}/personvern?lagret=trukket", status_code=303)
