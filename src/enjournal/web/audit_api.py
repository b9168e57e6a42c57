"""The audit log over HTTP: the citizen's access log and AuditEvent reads for privacy officers.

- ``GET /Patient/{id}/$access-log``: "who has looked at my record" — the AuditEvents about
  this patient made by anyone but the patient, newest first: who (name, HPR category,
  organisation), when, on what basis (purpose of use, emergency reason), what was read or
  changed (entities with versions), and the outcome. For the citizen, those who act for them
  with read rights, and systems.
- ``GET /AuditEvent`` (``patient``, ``agent``, ``date`` with ge/le/gt/lt, ``_tag=review-required``,
  ``_count``, ``_offset``) and ``GET /AuditEvent/{seq}``: systems only.

AuditEvents are written by the server only; the log is append-only, so writes to
``/AuditEvent`` answer 405. See docs/audit.md.
"""
from __future__ import annotations

from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import errors
from ..access.guard import Guard
from ..access.principal import PERSONNEL, SYSTEM
from ..fhir import dates
from ..fhir import query as fq
from .responses import check_accept, json_response, wants_pretty

REVIEW_TAG = "review-required"


class AuditApi:
    def __init__(self, store, guard: Guard, audit, base, max_count: int = 500):
        self.store = store
        self.guard = guard
        self.audit = audit
        self.base = base
        self.max_count = max_count

    def routes(self) -> list[Route]:
        # every read of AuditEvent is answered from the log: the resource store holds none
        return [
            Route("/Patient/{id}/$access-log", self.access_log, methods=["GET"]),
            Route("/Patient/{patient}/AuditEvent", self.search, methods=["GET"]),
            Route("/AuditEvent", self.search, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
            Route("/AuditEvent/_search", self.search, methods=["POST"]),
            Route("/AuditEvent/_history", self.type_history, methods=["GET", "HEAD"]),
            Route("/AuditEvent/{id}", self.read, methods=["GET", "HEAD", "PUT", "PATCH", "DELETE", "POST"]),
            Route("/AuditEvent/{id}/_history", self.history, methods=["GET", "HEAD"]),
            Route("/AuditEvent/{id}/_history/{vid}", self.read, methods=["GET", "HEAD"]),
        ]

    # -- the citizen's access log ------------------------------------------------------------

    async def access_log(self, request: Request) -> Response:
        check_accept(request)
        patient = request.path_params["id"]
        ctx = self.guard.ctx()
        if ctx.subject.principal.kind == PERSONNEL:
            raise errors.Forbidden("access denied: the access log is for the citizen, those who act for them, "
                                   "and systems")
        decision = self.guard.decision(ctx, "read", "AuditEvent", patient)
        if not decision.allow:
            raise self.guard.refuse(decision)
        count, offset, since = self._paging(request, ("_count", "_offset", "_since"))
        self.audit.flush()            # the log includes what happened a moment ago
        own = f"Patient/{patient}"
        rows, skipped, scan = [], 0, offset
        while len(rows) <= count:           # skip the patient's own use of the portal
            batch = self.store.audit_for_patient(patient, count + 1, scan, since=since)
            for row in batch:
                if _agent_is(row.body, own):
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                rows.append(row)
            scan += len(batch)
            if len(batch) < count + 1:
                break
        params = [(k, v) for k, v in request.query_params.multi_items() if k in ("_count", "_since")]
        return self._bundle(request, rows[:count], len(rows) > count, count, offset, params)

    # -- AuditEvent for systems -------------------------------------------------------------------

    async def search(self, request: Request) -> Response:
        self._writes_refused(request)
        check_accept(request)
        self._system_only()
        filters: dict = {}
        if "patient" in request.path_params:          # Patient/[id]/AuditEvent: the compartment
            filters["patient"] = request.path_params["patient"]
        for name, value in request.query_params.multi_items():
            if name == "patient":
                filters["patient"] = value.removeprefix("Patient/")
            elif name == "agent":
                filters["agent"] = value
            elif name == "date":
                prefix, lo, hi = _date_bound(value)
                if prefix in ("ge", "gt", "eq", "sa"):
                    filters["since"] = lo if prefix != "gt" else hi + 1
                if prefix in ("le", "lt", "eq", "eb"):
                    filters["until"] = hi if prefix != "lt" else lo - 1
            elif name == "_tag":
                if value.rpartition("|")[2] != REVIEW_TAG:
                    raise errors.Invalid(f"_tag on AuditEvent supports only '{REVIEW_TAG}'", "_tag")
                filters["emergency"] = True
            elif name not in ("_count", "_offset", "_format", "_pretty"):
                raise errors.Invalid(f"AuditEvent search supports patient, agent, date, _tag, _count and "
                                     f"_offset, not '{name}'", name)
        count, offset, _ = self._paging(request, ("_count", "_offset"))
        self.audit.flush()
        rows = self.store.audit_search(count=count + 1, offset=offset, **filters)
        params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("_offset",)]
        return self._bundle(request, rows[:count], len(rows) > count, count, offset, params)

    async def read(self, request: Request) -> Response:
        """``AuditEvent/[seq]``, and its one version ``AuditEvent/[seq]/_history/1``."""
        self._writes_refused(request)
        check_accept(request)
        self._system_only()
        row = self._row(request)
        vid = request.path_params.get("vid")
        if vid is not None and vid != "1":
            raise errors.NotFound(f"AuditEvent/{row.seq} has one version (1), not '{vid[:20]}'",
                                  "AuditEvent.meta.versionId")
        return json_response(_with_id(row), pretty=wants_pretty(request))

    async def history(self, request: Request) -> Response:
        """An AuditEvent's history: its one version (the log is never changed)."""
        check_accept(request)
        self._system_only()
        row = self._row(request)
        base = self.base(request)
        entry = (b'{"fullUrl":"' + f"{base}/AuditEvent/{row.seq}".encode() + b'","resource":' + _with_id(row)
                 + b',"request":{"method":"POST","url":"AuditEvent"},"response":{"status":"201 Created"}}')
        head = orjson.dumps({"resourceType": "Bundle", "type": "history", "total": 1,
                             "link": [{"relation": "self", "url": f"{base}{request.url.path}"}]})
        return json_response(head[:-1] + b',"entry":[' + entry + b"]}", pretty=wants_pretty(request))

    async def type_history(self, request: Request) -> Response:
        check_accept(request)
        self._system_only()
        raise errors.NotSupported("the audit log has no history of changes (its rows never change): search "
                                  "/AuditEvent by date instead", "url")

    def bundle_get(self, parts: list[str], query: str) -> dict:
        """A Bundle GET entry of AuditEvent (``AuditEvent/[seq]``, ``.../_history/1``), read
        from the log as a direct read is."""
        self._system_only()
        if len(parts) == 2 or len(parts) == 4 and parts[2] == "_history" and parts[3] == "1":
            return orjson.loads(_with_id(self._row_of(parts[1])))
        raise errors.NotSupported("inside a Bundle, AuditEvents are read by id; search them at /AuditEvent",
                                  "Bundle.entry.request.url")

    def _row(self, request: Request):
        return self._row_of(request.path_params["id"])

    def _row_of(self, seq: str):
        row = self.store.audit_get(int(seq)) if seq.isdigit() and len(seq) < 16 else None
        if row is None:
            raise errors.NotFound(f"AuditEvent/{seq[:64]} is not known", "AuditEvent.id")
        return row

    # -- helpers -------------------------------------------------------------------------------

    def _system_only(self) -> None:
        ctx = self.guard.ctx()
        if ctx.subject.principal.kind != SYSTEM:
            raise errors.Forbidden("access denied: the audit log is read by systems (privacy officers); "
                                   "citizens see their own in Patient/[id]/$access-log")
        if ctx.denied is None:
            decision = self.guard.decision(ctx, "search", "AuditEvent", None)
            if not decision.allow:
                raise self.guard.refuse(decision)

    def _writes_refused(self, request: Request) -> None:
        if request.method not in ("GET", "HEAD") and not request.url.path.endswith("_search"):
            ctx = self.guard.ctx()
            raise self.guard.log_refused(ctx, "AuditEvent")

    def _paging(self, request: Request, names: tuple) -> tuple[int, int, int | None]:
        q = request.query_params
        count = min(fq.count_number(q.get("_count", "50"), "_count"), self.max_count) if "_count" in names else 50
        offset = fq.count_number(q.get("_offset", "0"), "_offset")
        since = dates.parameter_range(q["_since"], "_since")[0] if "_since" in names and "_since" in q else None
        return max(count, 1), max(offset, 0), since

    def _bundle(self, request: Request, rows: list, more: bool, count: int, offset: int, params: list) -> Response:
        base = self.base(request)
        path = f"{base}{request.url.path}"
        links = [{"relation": "self", "url": f"{path}?{urlencode(params + [('_offset', offset)])}"}]
        if more:
            links.append({"relation": "next", "url": f"{path}?{urlencode(params + [('_offset', offset + count)])}"})
        if offset:
            links.append({"relation": "previous",
                          "url": f"{path}?{urlencode(params + [('_offset', max(0, offset - count))])}"})
        head = orjson.dumps({"resourceType": "Bundle", "type": "searchset", "link": links})
        entries = [b'{"fullUrl":"' + f"{base}/AuditEvent/{row.seq}".encode() + b'","resource":' + _with_id(row)
                   + b',"search":{"mode":"match"}}' for row in rows]
        body = head[:-1] + b',"entry":[' + b",".join(entries) + b"]}" if entries else head
        return json_response(body, pretty=wants_pretty(request))


def _with_id(row) -> bytes:
    """The stored AuditEvent with its log position as id (the stored bytes stay as chained)."""
    body = row.body
    return b'{"resourceType":"AuditEvent","id":"' + str(row.seq).encode() + b'",' + body[body.index(b",") + 1:] \
        if body.startswith(b'{"resourceType":"AuditEvent"') else body


def _agent_is(body: bytes, reference: str) -> bool:
    event = orjson.loads(body)
    agents = event.get("agent") or []
    return bool(agents) and (agents[0].get("who") or {}).get("reference") == reference


def _date_bound(value: str) -> tuple[str, int, int]:
    prefix = value[:2] if value[:2] in ("eq", "ge", "gt", "le", "lt", "sa", "eb") else "eq"
    text = value[2:] if prefix != "eq" or value.startswith("eq") else value
    lo, hi = dates.parameter_range(text, "date")
    return prefix, lo, hi
