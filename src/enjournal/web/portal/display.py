"""FHIR data in words for the portal's pages: names and dates.
Pure functions over resource dicts (no I/O)."""
from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

OSLO = ZoneInfo("Europe/Oslo")


def person_name(resource: dict) -> str:
    """"Given Family" of a Patient, RelatedPerson or Practitioner (the official name first)."""
    names = resource.get("name")
    if isinstance(names, dict):
        names = [names]
    if not isinstance(names, list) or not names:
        return ""
    chosen = next((n for n in names if isinstance(n, dict) and n.get("use") == "official"), names[0])
    if not isinstance(chosen, dict):
        return ""
    if chosen.get("text"):
        return str(chosen["text"])
    return " ".join([*map(str, chosen.get("given") or []), str(chosen.get("family") or "")]).strip()


def when(value: Any) -> str:
    """A FHIR date or dateTime as Norwegians write it: 31.10.2026 or 31.10.2026 kl. 14:05."""
    if not isinstance(value, str) or len(value) < 4:
        return ""
    if len(value) == 4:
        return value
    if len(value) == 7:
        return f"{value[5:7]}.{value[:4]}"
    if len(value) == 10:
        return f"{value[8:10]}.{value[5:7]}.{value[:4]}"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value[:10]
    if moment.tzinfo is not None:
        moment = moment.astimezone(OSLO)
    return moment.strftime("%d.%m.%Y kl. %H:%M")


def when_ms(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, OSLO).strftime("%d.%m.%Y kl. %H:%M")

