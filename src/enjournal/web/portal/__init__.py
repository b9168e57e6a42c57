"""The citizen portal at ``/innbygger/`` (Helsenorge-like): a ``web.doors.Door`` for
citizens, with its pages in the modules of this package (docs/portal.md).

Every page shows the record of ``representation.patient_of(session)``: the citizen's own,
or that of the person they act for (a child, the giver of a power of attorney), and reads
and writes only through the platform's services under the session's access context.
"""
from __future__ import annotations

from typing import Any

from ...access.principal import CITIZEN
from ..doors import Door
from ..doors.i18n import N_
from . import access_log, overview, own_entries, privacy, record, representation
from .display import when

PREFIX = "/innbygger"
# the header menu: (path, label msgid), in Helsenorge's words
NAV = [
    ("/", N_("Oversikt")),
    ("/kjernejournal", N_("Kjernejournal")),
    ("/kritisk-informasjon", N_("Kritisk informasjon")),
    ("/egne-registreringer", N_("Egne registreringer")),
    ("/donorkort", N_("Donorkort")),
    ("/personvern", N_("Personverninnstillinger")),
    ("/logg-over-bruk", N_("Logg over bruk")),
    ("/representasjon", N_("Representasjon")),
]


def portal_door(platform: Any, settings: Any) -> Door:
    """The portal's door with every page registered."""
    door = Door(platform, settings, PREFIX, CITIZEN, "Helsenorge", nav=NAV)
    door.env.globals["fmt"] = when
    for module in (overview, record, own_entries, privacy, access_log, representation):
        module.register(door)
    return door
