"""``/innbygger/``: the overview, the citizen's start page."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..doors import Door, Session
from ..doors.i18n import N_
from .representation import patient_of

# (path, title msgid, text msgid)
CARDS = [
    ("/kjernejournal", N_("Kjernejournal"), N_("Sammendraget helsepersonell ser når du trenger hjelp.")),
    ("/kritisk-informasjon", N_("Kritisk informasjon"), N_("Alvorlige allergier, implantater og annet som er viktig å vite.")),
    ("/egne-registreringer", N_("Egne registreringer"), N_("Pårørende, sykdommer med egne ord, behov og tolk.")),
    ("/donorkort", N_("Donorkort"), N_("Ta stilling til organdonasjon.")),
    ("/personvern", N_("Personverninnstillinger"), N_("Sperr helsepersonell, skjerm opplysninger eller reserver deg.")),
    ("/logg-over-bruk", N_("Logg over bruk"), N_("Se hvem som har sett i journalen din.")),
    ("/representasjon", N_("Representasjon"), N_("Bruk Helsenorge på vegne av barn eller noen som har gitt deg fullmakt.")),
]


def register(door: Door) -> None:
    @door.page("/")
    async def overview(request: Request, session: Session) -> Response:
        return door.render(request, session, "portal/overview.html", cards=CARDS, patient=patient_of(session))
