"""The clinician workspace's pages at ``/helsepersonell/`` (docs/workspace.md).

Every page is a ``Door`` page (``web/doors``): it runs only for a logged-in health person,
under the access context of their own token and the attestation kept in
``session.data["attestation"]``, so each read and write below goes through the guarded
repository (``platform.resources``, ``platform.summary``) and is checked and audited exactly
as the same FHIR request would be. The pages never decide access themselves: what the guard
refuses is shown as the guard's refusal.

The flow: find a patient (fødselsnummer/D-number, or name and birth date) → state the
purpose of use once for that patient (TREAT, ETREAT, COC, BTG with a reason; consent) →
the patient's summary (banner, critical information first, locked sections with a padlock)
→ critical information (register, confirm, mark as entered in error). Choosing another
patient asks for the purpose again. Session keys: ``lookup`` (the patient being looked up,
before the purpose is stated), ``search`` (a pending name search), ``attestation``.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ... import errors
from ...access.context import current
from ...access.policy import OSLO
from ...access.principal import BTG, EMERGENCY, PERSONNEL
from ...fhir import jsonio
from ..doors.forms import FormErrors
from . import lookup as lk
from . import purpose as pu
from . import summary_view as sv
from .lookup import N_

PREFIX = "/helsepersonell"
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_TYPES = ("AllergyIntolerance", "Flag", "Condition")
CRITICAL_FIELDS = ("category", "text", "verification", "note")


VERIFICATIONS = (("bekreftet", N_("Bekreftet")), ("sannsynlig", N_("Sannsynlig")), ("mistenkt", N_("Mistenkt")))
MESSAGES = {"registrert": N_("Kritisk informasjon er registrert."), "bekreftet": N_("Opplysningen er bekreftet."),
            "feilregistrert": N_("Opplysningen er markert som feilregistrert.")}


NAV = (("/", N_("Finn pasient")), ("/pasient", N_("Oversikt")), ("/pasient/kritisk", N_("Kritisk informasjon")))


def workspace_door(platform: Any, settings: Any, **door_options: Any) -> Any:
    """The clinician workspace as a ``Door`` with its pages registered."""
    from ..doors.door import Door
    door = Door(platform, settings, PREFIX, PERSONNEL, N_("Kjernejournal for helsepersonell"),
                nav=NAV, **door_options)
    Workspace(door, platform)
    return door


class Workspace:
    """The pages; ``door`` is the ``Door`` they are registered on."""

    def __init__(self, door: Any, platform: Any):
        self.door = door
        self.platform = platform
        page = door.page
        page("/")(self.home)
        page("/finn", ("POST",))(self.find)
        page("/sok")(self.search)
        page("/velg", ("POST",))(self.choose)
        page("/formal", ("GET", "POST"))(self.purpose)
        page("/akuttilgang", ("GET", "POST"))(self.emergency)
        page("/bytt", ("POST",))(self.switch)
        page("/pasient")(self.summary)
        page("/pasient/apne", ("POST",))(self.open_sections)
        page("/pasient/kritisk", ("GET", "POST"))(self.critical)
        page("/pasient/kritisk/bekreft", ("POST",))(self.confirm)
        page("/pasient/kritisk/feilregistrert", ("POST",))(self.entered_in_error)

    # -- helpers ---------------------------------------------------------------------------

    def go(self, path: str) -> Response:
        return RedirectResponse(PREFIX + path, status_code=303)

    def translated(self, session: Any, problems: dict[str, str]) -> FormErrors:
        _ = self.door.gettext(session)
        out = FormErrors()
        for name, msgid in problems.items():
            out.add(name, _(msgid))
        return out

    @staticmethod
    def bound_patient() -> str | None:
        """The Patient id the request's attestation resolved to ("" = nobody with that
        number, None = no attestation)."""
        ctx = current()
        return ctx.subject.patient_id if ctx is not None and ctx.subject is not None else None

    @staticmethod
    def hpr_category() -> str | None:
        ctx = current()
        return ctx.subject.principal.hpr_category if ctx is not None and ctx.subject is not None else None

    async def save(self, session: Any) -> None:
        await self.door.call(session.save)

    async def patient(self, request: Request, session: Any) -> tuple[dict | None, Response | None]:
        """The current patient's Patient resource as the clinician may read it, or the page
        that says why not (no patient chosen, purpose not stated, not found, refused)."""
        attestation = session.attestation
        if attestation is None:
            return None, self.go("/formal" if session.data.get("lookup") else "/")
        pid = self.bound_patient()
        if not pid:
            return None, self.render(request, session, "workspace/not-found.html", 404)
        try:
            stored = await self.door.call(self.platform.resources.read, "Patient", pid)
        except errors.NotFound:
            return None, self.render(request, session, "workspace/not-found.html", 404)
        except errors.Forbidden as exc:
            return None, self.render(request, session, "workspace/refused.html", 403, reason=exc.message,
                                     attestation=attestation)
        if attestation.get("patient") != f"Patient/{pid}":
            # looked up by number: keep the resolved id (the same patient, one lookup less)
            session.data["attestation"] = {**attestation, "patient": f"Patient/{pid}"}
            await self.save(session)
        return jsonio.loads(stored.body), None

    def render(self, request: Request, session: Any, template: str, status: int = 200, **context: Any) -> Response:
        context.setdefault("attestation", session.attestation)
        context.setdefault("purposes", pu.CHOICES)
        context.setdefault("words", sv.VALUE_WORDS)
        return self.door.render(request, session, template, status, **context)

    @staticmethod
    def banner(patient: dict, critical: int | None = None) -> sv.Banner:
        info = sv.banner(patient, datetime.now(OSLO).date())
        info.critical = critical
        return info

    # -- find a patient --------------------------------------------------------------------

    async def home(self, request: Request, session: Any) -> Response:
        return self.render(request, session, "workspace/find.html", values={}, errors=FormErrors())

    async def find(self, request: Request, session: Any) -> Response:
        form = await self.door.form(request, session)
        found, problems = lk.check_lookup(form, getattr(self.platform.settings, "allow_synthetic_ids", True))
        if found is None:
            return self.render(request, session, "workspace/find.html", 400, values=form,
                               errors=self.translated(session, problems))
        for key in ("attestation", "lookup", "search"):
            session.data.pop(key, None)
        if found.by_number:
            session.data["lookup"] = {"patient": found.number, "label": lk.masked(found.number)}
            await self.save(session)
            return self.go("/formal")
        session.data["search"] = {"name": found.name, "birthdate": found.birth_date.isoformat()}
        await self.save(session)
        return self.go("/sok")

    async def search(self, request: Request, session: Any) -> Response:
        """A name and birth-date search, as the clinician's own FHIR search would answer it."""
        wanted = session.data.get("search")
        if not isinstance(wanted, dict):
            return self.go("/")
        values = {"name": wanted["name"], "birthdate": sv.norwegian_date(wanted["birthdate"])}
        params = [("name", wanted["name"]), ("birthdate", wanted["birthdate"]), ("_count", "20")]
        try:
            result = await self.door.call(self.platform.resources.search, "Patient", params)
        except errors.Forbidden:
            # health personnel reach patient data only for an attested patient (docs/access.md):
            # the API refuses this search, and so does the page
            _ = self.door.gettext(session)
            problems = FormErrors().add("name", _(
                "Du kan ikke søke på navn uten å oppgi hvilken pasient oppslaget gjelder "
                "(tillitsrammeverket). Søk med fødselsnummer eller D-nummer."))
            return self.render(request, session, "workspace/find.html", 403, values=values, errors=problems)
        today = datetime.now(OSLO).date()
        people = [sv.banner(jsonio.loads(s.body), today) for s in result.matches if s.type == "Patient"]
        return self.render(request, session, "workspace/results.html", values=values, people=people)

    async def choose(self, request: Request, session: Any) -> Response:
        form = await self.door.form(request, session)
        chosen = str(form.get("patient") or "")
        if not _ID.match(chosen):
            return self.go("/")
        session.data.pop("attestation", None)
        session.data["lookup"] = {"patient": f"Patient/{chosen}", "label": str(form.get("label") or "")[:200]}
        await self.save(session)
        return self.go("/formal")

    async def switch(self, request: Request, session: Any) -> Response:
        await self.door.form(request, session)
        for key in ("attestation", "lookup", "search"):
            session.data.pop(key, None)
        await self.save(session)
        return self.go("/")

    # -- the purpose of use ----------------------------------------------------------------

    async def purpose(self, request: Request, session: Any) -> Response:
        return await self._purpose(request, session, emergency=False)

    async def emergency(self, request: Request, session: Any) -> Response:
        return await self._purpose(request, session, emergency=True)

    async def _purpose(self, request: Request, session: Any, emergency: bool) -> Response:
        pending = session.data.get("lookup")
        attestation = session.attestation
        if isinstance(pending, dict):
            patient, label = pending.get("patient"), pending.get("label", "")
        elif attestation is not None:
            patient, label = attestation.get("patient"), ""
        else:
            return self.go("/")
        template = "workspace/emergency.html" if emergency else "workspace/purpose.html"
        if request.method == "GET":
            values = {"purpose": BTG} if emergency else {}
            return self.render(request, session, template, values=values, errors=FormErrors(), label=label)
        form = await self.door.form(request, session)
        if emergency and str(form.get("purpose") or "").upper() not in EMERGENCY:
            form = {**form, "purpose": BTG}
        checked, problems = pu.check_purpose(form, str(patient))
        if checked is None:
            return self.render(request, session, template, 400, values=form, label=label,
                               errors=self.translated(session, problems))
        session.data["attestation"] = checked
        session.data.pop("lookup", None)
        await self.save(session)
        return self.go("/pasient")

    # -- the summary -----------------------------------------------------------------------

    async def summary(self, request: Request, session: Any, problems: FormErrors | None = None,
                      status: int = 200) -> Response:
        bundle = patient = None
        attestation, pid = session.attestation, self.bound_patient()
        if attestation is not None and pid and attestation.get("patient") == f"Patient/{pid}":
            # the usual case: the document holds the Patient the banner needs (no second read);
            # whatever goes wrong takes the careful path below, which explains it
            try:
                bundle = await self.door.call(self.platform.summary.summary, pid)
            except errors.FhirError:
                bundle = None
            patient = _patient_in(bundle, pid) if bundle is not None else None
        if patient is None:
            patient, stop = await self.patient(request, session)
            if stop is not None:
                return stop
            pid = str(patient.get("id"))   # the same patient: a Bundle already fetched is kept
        try:
            if bundle is None:
                bundle = await self.door.call(self.platform.summary.summary, pid)
        except errors.FhirError as exc:
            if exc.status >= 500:
                raise
            info = self.banner(patient)
            return self.render(request, session, "workspace/summary.html", exc.status, banner=info, sections=[],
                               refusal=exc.message, show_number=False, errors=problems or FormErrors())
        sections = sv.sections(bundle)
        critical = sum(len(s.items) for s in sections if s.critical)
        info = self.banner(patient, critical)
        return self.render(request, session, "workspace/summary.html", status, banner=info, sections=sections,
                           refusal=None, show_number=request.query_params.get("vis") == "fnr",
                           locked=any(s.locked for s in sections), errors=problems or FormErrors())

    async def open_sections(self, request: Request, session: Any) -> Response:
        """Open the locked sections: declare the patient's consent or emergency access (the
        attestation changes; every following request carries it and is logged with it)."""
        form = await self.door.form(request, session)
        attestation = session.attestation
        if attestation is None:
            return self.go("/")
        changed, problems = pu.opened(attestation, form)
        if changed is None:
            return await self.summary(request, session, self.translated(session, problems), 400)
        session.data["attestation"] = changed
        await self.save(session)
        return self.go("/pasient")

    # -- critical information --------------------------------------------------------------

    def categories(self) -> list:
        from ...services.summary.codes import CATEGORIES
        role = self.hpr_category()
        return [c for c in CATEGORIES if role in c.roles]

    async def critical(self, request: Request, session: Any, problems: FormErrors | None = None,
                       values: dict | None = None, status: int = 200) -> Response:
        patient, stop = await self.patient(request, session)
        if stop is not None:
            return stop
        pid = str(patient.get("id"))
        if request.method == "POST" and problems is None:
            form = await self.door.form(request, session)
            problems, status = await self._register(session, pid, form)
            if not problems:
                return self.go("/pasient/kritisk?melding=registrert")
            values = form
        try:
            entries = await self.door.call(self.platform.summary.critical_information, pid)
        except errors.FhirError as exc:
            if exc.status >= 500:
                raise
            entries, refusal = [], exc.message
        else:
            refusal = None
        items = [sv.critical_item(e, session.lang) for e in entries]
        info = self.banner(patient, len(items))
        message = MESSAGES.get(request.query_params.get("melding", ""))
        return self.render(request, session, "workspace/critical.html", status, banner=info, items=items,
                           refusal=refusal, categories=self.categories(), verifications=VERIFICATIONS,
                           values=values or {}, errors=problems or FormErrors(), message=message,
                           show_number=False)

    async def _register(self, session: Any, pid: str, form: dict) -> tuple[FormErrors, int]:
        _ = self.door.gettext(session)
        category = str(form.get("category") or "")
        text = " ".join(str(form.get("text") or "").split())
        note = str(form.get("note") or "").strip() or None
        verification = str(form.get("verification") or "bekreftet")
        problems = FormErrors()
        if not category:
            problems.add("category", _("Velg kategori"))
        if not text:
            problems.add("text", _("Beskriv den kritiske informasjonen"))
        if problems:
            return problems, 400
        try:
            await self.door.call(self.platform.summary.register_critical, pid, category, text,
                                 verification=verification, note=note)
        except errors.Forbidden as exc:
            return FormErrors().add("category", exc.message), 403
        except errors.FhirError as exc:
            if exc.status >= 500:
                raise
            return self.door.errors_from(exc, CRITICAL_FIELDS), exc.status
        return FormErrors(), 200

    async def _entry_action(self, request: Request, session: Any, action: str) -> Response:
        form = await self.door.form(request, session)
        rtype, rid = str(form.get("type") or ""), str(form.get("id") or "")
        patient, stop = await self.patient(request, session)
        if stop is not None:
            return stop
        _ = self.door.gettext(session)
        if rtype not in _TYPES or not _ID.match(rid):
            return await self.critical(request, session, FormErrors().add(None, _("Ukjent opplysning")), {}, 400)
        field = f"reason-{rid}"
        try:
            if action == "bekreftet":
                await self.door.call(self.platform.summary.confirm, rtype, rid)
            else:
                reason = " ".join(str(form.get("reason") or "").split())
                if not reason:
                    problems = FormErrors().add(field, _("Skriv hvorfor opplysningen er feilregistrert"))
                    return await self.critical(request, session, problems, {}, 400)
                await self.door.call(self.platform.summary.entered_in_error, rtype, rid, reason)
        except errors.FhirError as exc:
            if exc.status >= 500:
                raise
            problems = self.door.errors_from(exc, ("reason",), {"reason": field})
            if "reason" in problems:
                problems[field] = problems.pop("reason")
            return await self.critical(request, session, problems, {}, exc.status)
        return self.go(f"/pasient/kritisk?melding={action}")

    async def confirm(self, request: Request, session: Any) -> Response:
        return await self._entry_action(request, session, "bekreftet")

    async def entered_in_error(self, request: Request, session: Any) -> Response:
        return await self._entry_action(request, session, "feilregistrert")


def _patient_in(bundle: dict, pid: str) -> dict | None:
    """The Patient ``pid`` among the document's entries (None: not there)."""
    for entry in bundle.get("entry") or ():
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "Patient" and resource.get("id") == pid:
            return resource
    return None


__all__ = ["Workspace", "workspace_door"]
