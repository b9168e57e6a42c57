"""``/innbygger/kjernejournal`` (my summary care record: the same ``$summary`` document as
the API gives, as a page) and ``/innbygger/kritisk-informasjon``."""
from __future__ import annotations

import html
import re

from starlette.requests import Request
from starlette.responses import Response

from ... import errors
from ...services.summary.document import is_locked
from ..doors import Door, Session
from .representation import patient_of

_ITEM = re.compile(r"<(li|p)>(.*?)</\1>", re.S)
_TAG = re.compile(r"<[^>]+>")


def sections_of(bundle: dict, lang: str) -> list[dict]:
    """The document's sections for the page: title, LOINC code, lines of text, locked."""
    entries = bundle.get("entry") or []
    composition = entries[0]["resource"] if entries else {}
    out = []
    for section in composition.get("section") or []:
        coding = ((section.get("code") or {}).get("coding") or [{}])[0]
        title = section.get("title") if lang == "nb" else (coding.get("display") or section.get("title"))
        div = (section.get("text") or {}).get("div", "")
        lines = [html.unescape(_TAG.sub("", m.group(2))).strip() for m in _ITEM.finditer(div)]
        locked = is_locked(section)
        empty = (section.get("emptyReason") or {}).get("coding", [{}])[0].get("code")
        out.append({"title": title, "code": coding.get("code"), "lines": [x for x in lines if x],
                    "locked": locked, "empty": empty == "nilknown"})
    return out


def register(door: Door) -> None:
    platform = door.platform

    @door.page("/kjernejournal")
    async def summary(request: Request, session: Session) -> Response:
        patient = patient_of(session)
        if patient is None:
            return door.render(request, session, "portal/no-record.html", status=404)
        try:
            bundle = await door.call(platform.summary.summary, patient)
        except errors.Forbidden as exc:
            return door.render(request, session, "portal/summary.html", status=403, closed=exc.message,
                               sections=[])
        return door.render(request, session, "portal/summary.html", sections=sections_of(bundle, session.lang),
                           closed=None, composed=(bundle.get("timestamp") or ""))

    @door.page("/kritisk-informasjon")
    async def critical(request: Request, session: Session) -> Response:
        patient = patient_of(session)
        if patient is None:
            return door.render(request, session, "portal/no-record.html", status=404)
        try:
            entries = await door.call(platform.summary.critical_information, patient)
        except errors.Forbidden as exc:
            return door.render(request, session, "portal/critical.html", status=403, closed=exc.message, entries=[])
        return door.render(request, session, "portal/critical.html", entries=entries, closed=None)
