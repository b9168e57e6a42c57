"""``/innbygger/egne-registreringer`` (next of kin and contacts, illnesses in one's own
words, sight or hearing needs, interpreter) and ``/innbygger/donorkort`` (the organ donor
card): forms that write FHIR through ``platform.summary`` (services/summary).

Each form posts to its own path; bad input comes back as the page with status 400 and the
error at the field (the service's ``errors.Invalid`` names the field in ``expression``;
the page words it in the user's language), nothing saved; success redirects (303) to the
page with a note of what was saved.
"""
from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ... import errors
from ..doors import Door, FormErrors, Session
from ..doors.i18n import N_
from .representation import patient_of

# what a field's error says, whatever the service's English words were
MESSAGES = {
    "name": N_("Skriv navnet."),
    "relationship": N_("Skriv hvilken relasjon personen har til deg, for eksempel datter."),
    "phone": N_("Skriv et telefonnummer med minst 8 sifre, for eksempel +47 912 34 567."),
    "text": N_("Skriv en kort beskrivelse (høyst 500 tegn)."),
    "needs_text": N_("Skriv høyst 500 tegn."),
    "language": N_("Skriv hvilket språk du trenger tolk på."),
    "consent": N_("Velg om du vil være organdonor."),
    "witnesses": N_("Oppgi én eller to personer over 18 år som kjenner ønsket ditt."),
    "w1_name": N_("Skriv navnet på personen som kjenner ønsket ditt."),
    "w1_phone": N_("Skriv et telefonnummer med minst 8 sifre, for eksempel +47 912 34 567."),
    "w1_birth_date": N_("Skriv fødselsdatoen som dd.mm.åååå. Personen må være minst 18 år."),
    "w2_name": N_("Skriv navnet på den andre personen, eller la alle feltene for person 2 stå tomme."),
    "w2_phone": N_("Skriv et telefonnummer med minst 8 sifre, for eksempel +47 912 34 567."),
    "w2_birth_date": N_("Skriv fødselsdatoen som dd.mm.åååå. Personen må være minst 18 år."),
}
WITNESS_FIELDS = {f"witnesses[{i}].{part}": f"w{i + 1}_{part}" for i in (0, 1)
                  for part in ("name", "phone", "birth_date")}
WITNESS_FIELDS.update({"witnesses": "w1_name", "witnesses[0]": "w1_name", "witnesses[1]": "w2_name"})
SAVED = {"kontakt": N_("Kontaktpersonen er lagret."), "kontakt-slettet": N_("Kontaktpersonen er fjernet."),
         "sykdom": N_("Sykdommen er lagret."), "sykdom-slettet": N_("Sykdommen er fjernet."),
         "behov": N_("Behovene dine er lagret."), "tolk": N_("Tolkebehovet er lagret."),
         "donorkort": N_("Donorkortet er lagret."), "donorkort-trukket": N_("Donorkortet er trukket tilbake.")}


def worded(exc: errors.FhirError, session: Session, door: Door, known: tuple, fields: dict | None = None) -> FormErrors:
    """The service's error at the fields, in the user's language where the page knows the field."""
    _ = door.gettext(session)
    raw = FormErrors.from_error(exc, known, fields)
    out = FormErrors()
    for field, message in raw.items():
        out.add(None if field == "_general" else field,
                _(MESSAGES[field]) if field in MESSAGES and exc.status == 400 else message)
    return out


def text(form: dict, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def norwegian_date(value: str) -> str:
    """dd.mm.åååå (or ISO) as ISO, unchanged when it is neither (the service refuses it)."""
    parts = value.replace("/", ".").replace("-", ".").split(".")
    if len(parts) == 3 and len(parts[0]) <= 2 and len(parts[2]) == 4 and all(p.isdigit() for p in parts):
        return f"{parts[2]}-{int(parts[1]):02d}-{int(parts[0]):02d}"
    return value


def register(door: Door) -> None:
    platform = door.platform

    async def page(request: Request, session: Session, status: int = 200, form_name: str | None = None,
                   errors_: FormErrors | None = None, values: dict | None = None) -> Response:
        patient = patient_of(session)
        if patient is None:
            return door.render(request, session, "portal/no-record.html", status=404)
        entries = await door.call(platform.summary.own_entries, patient)
        saved = SAVED.get(request.query_params.get("lagret", ""))
        return door.render(request, session, "portal/own-entries.html", status=status, entries=entries,
                           form_name=form_name, errors=errors_ or FormErrors(), values=values or {}, saved=saved)

    async def write(request: Request, session: Session, form_name: str, known: tuple, saved: str,
                    action: Any, fields: dict | None = None) -> Response:
        form = await door.form(request, session)
        patient = patient_of(session)
        if patient is None:
            return door.render(request, session, "portal/no-record.html", status=404)
        try:
            await door.call(action, patient, form)
        except errors.FhirError as exc:
            if exc.status >= 500 or exc.status in (401,):
                raise
            return await page(request, session, 400 if exc.status == 400 else exc.status, form_name,
                              worded(exc, session, door, known, fields), form)
        return RedirectResponse(f"{door.prefix}/egne-registreringer?lagret={saved}#{form_name}", status_code=303)

    @door.page("/egne-registreringer")
    async def show(request: Request, session: Session) -> Response:
        return await page(request, session)

    @door.page("/egne-registreringer/kontakt", methods=("POST",))
    async def contact(request: Request, session: Session) -> Response:
        return await write(request, session, "kontakt", ("name", "relationship", "phone"), "kontakt",
                           lambda p, f: platform.summary.save_contact(p, text(f, "name"), text(f, "relationship"),
                                                                      text(f, "phone")))

    @door.page("/egne-registreringer/kontakt/slett", methods=("POST",))
    async def remove_contact(request: Request, session: Session) -> Response:
        return await write(request, session, "kontakter", (), "kontakt-slettet",
                           lambda p, f: platform.summary.remove_contact(p, text(f, "id")))

    @door.page("/egne-registreringer/sykdom", methods=("POST",))
    async def illness(request: Request, session: Session) -> Response:
        return await write(request, session, "sykdom", ("text",), "sykdom",
                           lambda p, f: platform.summary.save_illness(p, text(f, "text")))

    @door.page("/egne-registreringer/sykdom/slett", methods=("POST",))
    async def remove_illness(request: Request, session: Session) -> Response:
        return await write(request, session, "sykdommer", (), "sykdom-slettet",
                           lambda p, f: platform.summary.remove_illness(p, text(f, "id")))

    @door.page("/egne-registreringer/behov", methods=("POST",))
    async def needs(request: Request, session: Session) -> Response:
        return await write(request, session, "behov", ("needs_text",), "behov",
                           lambda p, f: platform.summary.save_needs(p, "sight" in f, "hearing" in f,
                                                                    text(f, "needs_text") or None),
                           {"text": "needs_text"})

    @door.page("/egne-registreringer/tolk", methods=("POST",))
    async def interpreter(request: Request, session: Session) -> Response:
        return await write(request, session, "tolk", ("language",), "tolk",
                           lambda p, f: platform.summary.save_interpreter(p, text(f, "needed") == "ja",
                                                                          text(f, "language") or None))

    # -- the donor card -------------------------------------------------------------------

    async def card_page(request: Request, session: Session, status: int = 200,
                        errors_: FormErrors | None = None, values: dict | None = None) -> Response:
        patient = patient_of(session)
        if patient is None:
            return door.render(request, session, "portal/no-record.html", status=404)
        entries = await door.call(platform.summary.own_entries, patient)
        card = entries.get("donor_card")
        if values is None and card and card.get("active"):
            values = {"consent": card["consent"]}
            for i, w in enumerate(card.get("witnesses") or [], start=1):
                values.update({f"w{i}_name": w.get("name"), f"w{i}_phone": w.get("phone"),
                               f"w{i}_birth_date": _from_iso(w.get("birth_date"))})
        saved = SAVED.get(request.query_params.get("lagret", ""))
        return door.render(request, session, "portal/donor-card.html", status=status, card=card,
                           errors=errors_ or FormErrors(), values=values or {}, saved=saved)

    @door.page("/donorkort")
    async def donor_card(request: Request, session: Session) -> Response:
        return await card_page(request, session)

    @door.page("/donorkort", methods=("POST",))
    async def save_card(request: Request, session: Session) -> Response:
        form = await door.form(request, session)
        patient = patient_of(session)
        if patient is None:
            return door.render(request, session, "portal/no-record.html", status=404)
        witnesses = []
        for i in (1, 2):
            person = {"name": text(form, f"w{i}_name"), "phone": text(form, f"w{i}_phone"),
                      "birth_date": norwegian_date(text(form, f"w{i}_birth_date"))}
            if i == 1 or any(person.values()):
                witnesses.append(person)
        known = tuple(WITNESS_FIELDS.values()) + ("consent",)
        try:
            await door.call(platform.summary.save_donor_card, patient, text(form, "consent"), witnesses)
        except errors.FhirError as exc:
            if exc.status >= 500:
                raise
            return await card_page(request, session, 400 if exc.status == 400 else exc.status,
                                   worded(exc, session, door, known, WITNESS_FIELDS), form)
        return RedirectResponse(f"{door.prefix}/donorkort?lagret=donorkort", status_code=303)

    @door.page("/donorkort/trekk-tilbake", methods=("POST",))
    async def withdraw_card(request: Request, session: Session) -> Response:
        await door.form(request, session)
        patient = patient_of(session)
        if patient is None:
            return door.render(request, session, "portal/no-record.html", status=404)
        try:
            await door.call(platform.summary.withdraw_donor_card, patient)
        except errors.NotFound:
            pass        # nothing to withdraw: the page shows there is no card
        return RedirectResponse(f"{door.prefix}/donorkort?lagret=donorkort-trukket", status_code=303)


def _from_iso(value: Any) -> str:
    if isinstance(value, str) and len(value) == 10 and value[4] == "-":
        return f"{value[8:10]}.{value[5:7]}.{value[:4]}"
    return value or ""
