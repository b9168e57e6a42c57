"""``/innbygger/logg-over-bruk`` (Logg over bruk): who has used the record — name,
organisation, basis (care relationship, consent, emergency access), when, what — from the
audit log, as ``GET /Patient/{id}/$access-log`` serves it (web/audit_api.py): the guard
decides whether the session may read the patient's log (the citizen, a parent of a child
under 12, an attorney), the patient's own use of the portal is left out, and emergency
accesses are marked. Health personnel and people acting for the patient are shown; the
platform's own systems (imports, exports) are not.
"""
from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ...access.context import current
from ...fhir import norway
from ..doors import Door, Session
from ..doors.i18n import N_
from .display import when_ms
from .representation import patient_of

PAGE = 50
ACTIONS = {"R": N_("lest"), "C": N_("registrert"), "U": N_("endret"), "D": N_("slettet"), "E": N_("søkt/hentet")}
BASIS = {"TREAT": N_("Behandlingsrelasjon"), "ETREAT": N_("Akuttilgang (øyeblikkelig hjelp)"), "COC": N_("Koordinering"),
         "BTG": N_("Akuttilgang (nødrett)"), "parent": N_("Forelder"), "attorney": N_("Fullmakt")}
CATEGORY = {"LE": N_("lege"), "SP": N_("sykepleier"), "FA1": N_("farmasøyt"), "FA2": N_("reseptar"), "JO": N_("jordmor"),
            "HP": N_("helsefagarbeider")}


def entry(body: bytes, emergency: bool, recorded: int, org_names: dict) -> dict | None:
    """One line of the log from an AuditEvent, or None for the platform's own systems."""
    event = orjson.loads(body)
    agents = event.get("agent") or []
    if not agents:
        return None
    who = agents[0].get("who") or {}
    roles = agents[0].get("role") or []
    role_code = next((c.get("code") for r in roles for c in r.get("coding") or []), None)
    role_text = next((r.get("text") for r in roles if r.get("text")), None)
    hpr = (who.get("identifier") or {}).get("value")
    if hpr is None and role_text not in ("parent", "attorney"):
        return None
    org = None
    if len(agents) > 1:
        org_who = agents[1].get("who") or {}
        number = (org_who.get("identifier") or {}).get("value")
        org = org_who.get("display") or org_names.get(number) or number
    purpose = next((c.get("code") for p in event.get("purposeOfEvent") or [] for c in p.get("coding") or []), None)
    basis = purpose or role_text
    consent = "consent" in str(event.get("outcomeDesc") or "").lower()
    types = sorted({(e.get("what") or {}).get("reference", "").split("/")[0] for e in event.get("entity") or []
                    if (e.get("what") or {}).get("reference")} - {"Patient", ""})
    return {"who": who.get("display") or "", "category": CATEGORY.get(role_code or "", role_code),
            "org": org, "basis": BASIS.get(basis or "", basis or ""), "consent": consent,
            "emergency": emergency, "when": when_ms(recorded), "action": ACTIONS.get(event.get("action", ""), ""),
            "types": types, "refused": event.get("outcome") not in ("0", None)}


def register(door: Door) -> None:
    platform = door.platform

    def log_of(patient: str, offset: int) -> tuple[list[dict], bool] | None:
        ctx = current()
        decision = platform.guard.decision(ctx, "read", "AuditEvent", patient)
        if not decision.allow:
            return None
        platform.audit.flush()          # the log includes what happened a moment ago
        own = f"Patient/{patient}"
        org_names: dict[str, Any] = {}
        rows, scan, skipped = [], 0, 0
        while len(rows) <= PAGE:
            batch = platform.store.audit_for_patient(patient, PAGE * 2, scan)
            for row in batch:
                event_agent = (orjson.loads(row.body).get("agent") or [{}])[0].get("who") or {}
                if event_agent.get("reference") == own:
                    continue
                line = entry(row.body, row.emergency, row.recorded, org_names)
                if line is None:
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                rows.append(line)
            scan += len(batch)
            if len(batch) < PAGE * 2:
                break
        for line in rows:      # organisation names from the register (shared data)
            number = line["org"]
            if number and number.isdigit() and number not in org_names:
                found = platform.resources.search("Organization", [("identifier", f"{norway.ENH}|{number}"),
                                                                   ("_count", "1")])
                org_names[number] = orjson.loads(found.matches[0].body).get("name") if found.matches else number
            if number in org_names:
                line["org"] = org_names[number]
        return rows[:PAGE], len(rows) > PAGE

    @door.page("/logg-over-bruk")
    async def access_log(request: Request, session: Session) -> Response:
        patient = patient_of(session)
        if patient is None:
            return door.render(request, session, "portal/no-record.html", status=404)
        try:
            offset = max(0, int(request.query_params.get("fra", "0")))
        except ValueError:
            offset = 0
        found = await door.call(log_of, patient, offset)
        if found is None:
            return door.render(request, session, "portal/access-log.html", status=403, closed=True, rows=[],
                               more=False, offset=0, page=PAGE)
        rows, more = found
        return door.render(request, session, "portal/access-log.html", closed=False, rows=rows, more=more,
                           offset=offset, page=PAGE)
