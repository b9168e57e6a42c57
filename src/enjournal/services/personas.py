"""The demo personas the built-in identity provider can log in as (docs/identity-provider.md).

They are the people of the demo population (``demo.py``, docs/demo.md, seed 2026): care
providers from ``demo_data.STAFF`` with their HPR numbers and the organisation numbers the
generator gives their organisations, the citizens of the first persona households by
fødselsnummer, and a system client. Health personnel need a fødselsnummer in HelseID
tokens; theirs are made-up synthetic numbers (month + 80) from the individual-number
series 900–999, which the demo never gives its citizens, so no persona is also a patient.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Callable

from ..access.principal import CITIZEN, PERSONNEL, SYSTEM
from ..access.provider import Provider, default_base
from ..fhir import norway
from .demo import ORG_IDS, STAFF_BY_ID, org_number


@dataclass(frozen=True)
class Persona:
    """Someone the built-in provider issues tokens for."""
    key: str                        # short lowercase name: ``enjournal token gp``
    label: str                      # what they are, for the login page
    kind: str                       # personnel | citizen | system
    name: str
    pid: str | None = None          # fødselsnummer
    hpr: str | None = None          # HPR number (personnel)
    org_parent: str | None = None   # organisation number of the legal entity (HelseID orgnr_parent)
    org_child: str | None = None    # organisation number of the unit (HelseID orgnr_child)
    practitioner: str | None = None  # Practitioner id (personnel)
    description: str = ""
    client_id: str = ""             # the client the token is issued to ("" = the kind's default)


def org_number_of(key: str) -> str:
    """The organisation number the demo generator gives organisation ``key`` (``Org.key``)."""
    index = int(ORG_IDS[key].removeprefix("demo-org-")) - 1
    return org_number(index)


# Personnel: (key, label, Practitioner id, birth date for the made-up fødselsnummer,
# legal entity (orgnr_parent), unit (orgnr_child or None), description)
_PERSONNEL = (
    ("gp", "GP (fastlege)", "demo-gp-1", date(1978, 3, 14), "gp-0301", None,
     "Grünerløkka legesenter; GP of the persona family and of Else Hølland"),
    ("gp2", "GP (fastlege)", "demo-gp-2", date(1969, 8, 30), "gp-0301", None,
     "Grünerløkka legesenter; GP of Olav Jensen"),
    ("nurse", "Home-care nurse", "demo-nurse-1", date(1985, 6, 2), "oslo-kommune", "hjemmetjeneste",
     "Hjemmetjenesten bydel Grünerløkka; care manager for Else Hølland"),
    ("nursing-home-nurse", "Nursing-home nurse", "demo-nurse-3", date(1988, 4, 19), "oslo-kommune", "sykehjem",
     "Sofienberg sykehjem; nurse of Olav Jensen"),
    ("pharmacist", "Pharmacist", "demo-pharmacist-1", date(1980, 9, 21), "apotek", None, "Løkka apotek"),
    ("doctor", "Hospital doctor (overlege)", "demo-doctor-1", date(1972, 11, 8), "ous", None,
     "Oslo universitetssykehus HF, medisinsk avdeling"),
    ("hospital-nurse", "Hospital nurse", "demo-nurse-4", date(1990, 1, 17), "ous", None,
     "Oslo universitetssykehus HF, medisinsk avdeling"),
)

# Citizens of the persona households (docs/demo.md, seed 2026): key, label, name, fnr, description
_CITIZENS = (
    ("silje", "Parent", "Silje Økland", "25848531440", "41; type 2 diabetes; mother of Sara, Jakob and Maja"),
    ("hakon", "Parent", "Håkon Kristian Eide", "02828307595", "43; hypothyroidism; father of Sara, Jakob and Maja"),
    ("sara", "Child under 12", "Sara Økland", "19841856050", "8; her parents act fully for her"),
    ("jakob", "Child 12–15", "Jakob Økland", "19861286366", "14; peanut allergy; parents' access is limited"),
    ("maja", "Youth 16+", "Maja Eide Økland", "10880984069", "17; controls her own record"),
    ("else", "Elderly in home care", "Else Hølland", "18854005231", "86; home care, six current medicines"),
    ("olav", "Nursing-home resident", "Olav Jensen", "01923404518", "91; dementia; Sofienberg sykehjem"),
)


def _staff_fnr(birth: date, gender: str) -> str:
    return norway.make_synthetic_fnr(birth, 900, gender)


def _personnel(key: str, label: str, practitioner: str, birth: date, parent: str, child: str | None,
               description: str) -> Persona:
    staff = STAFF_BY_ID[practitioner]
    return Persona(key=key, label=label, kind=PERSONNEL, name=f"{staff.given} {staff.family}",
                   pid=_staff_fnr(birth, staff.gender), hpr=staff.hpr, org_parent=org_number_of(parent),
                   org_child=org_number_of(child) if child else None, practitioner=practitioner,
                   description=f"{staff.role_text}, HPR {staff.hpr}; {description}")


def demo_personas() -> tuple[Persona, ...]:
    """Every persona, personnel first, then citizens, then the system client."""
    out = [_personnel(*row) for row in _PERSONNEL]
    out += [Persona(key=key, label=label, kind=CITIZEN, name=name, pid=fnr, description=description)
            for key, label, name, fnr, description in _CITIZENS]
    out.append(Persona(key="system", label="System", kind=SYSTEM, name="enjournal demo system",
                       org_parent=org_number_of("helse-sor-ost"), client_id="enjournal-system",
                       description="A trusted system client with full access (system/*.cruds)"))
    return tuple(out)


def demo_provider(settings: Any, repo: Any, clock: Callable[[], float] | None = None) -> Provider:
    """The built-in provider for a server with these settings: issuer and audience are the
    server's public base URL, the personas are the demo's."""
    base = default_base(settings)
    return Provider(repo, base, demo_personas(), audience=base, clock=clock)

