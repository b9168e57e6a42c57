"""Bulk Data export over HTTP (https://hl7.org/fhir/uv/bulkdata/STU2/export.html).

- Kick-off: ``GET``/``POST`` ``/$export``, ``/Patient/$export``, ``/Group/{id}/$export`` with
  ``Prefer: respond-async`` → 202 and ``Content-Location: <base>/$export-status/{job}``.
- Status: ``GET /$export-status/{job}`` → 202 with ``X-Progress`` while running, 200 with the
  manifest when complete; ``DELETE`` cancels (202) and removes the files.
- Files: ``GET /$export-file/{job}/{name}`` as ``application/fhir+ndjson``.

Only the client that started a job sees it (others get 404). docs/bulk-export.md.
"""
from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from .. import errors
from ..fhir import dates
from ..fhir.compartments import compartment_types
from ..fhir.outcome import operation_outcome
from ..fhir.references import parse_relative
from ..services.export import COMPLETE, FAILED, RUNNING, ExportJobs, parse_request
from .responses import check_accept, json_response, prefer_handling, read_json

NDJSON = "application/fhir+ndjson"
PATIENT_TYPES = frozenset(compartment_types("Patient")) | {"Patient"}


class BulkApi:
    def __init__(self, jobs: ExportJobs, repo: Any, guard: Any, registry: Any, base, max_body_bytes: int):
        self.jobs = jobs
        self.repo = repo            # the guarded repository (reads the Group)
        self.guard = guard
        self.types = frozenset(registry.resource_types())
        self.base = base
        self.max_body_bytes = max_body_bytes

    def routes(self) -> list[Route]:
        return [
            Route("/$export", self.kick_off, methods=["GET", "POST"]),
            Route("/Patient/$export", self.kick_off, methods=["GET", "POST"]),
            Route("/Group/{id}/$export", self.kick_off, methods=["GET", "POST"]),
            Route("/$export-status/{job}", self.status, methods=["GET", "DELETE"]),
            Route("/$export-file/{job}/{name}", self.file, methods=["GET"]),
        ]

    def _owner(self) -> str:
        principal = self.guard.ctx().subject.principal
        return f"{principal.issuer}|{principal.client_id or principal.subject}"

    async def kick_off(self, request: Request) -> Response:
        check_accept(request)
        prefer = [p.strip() for p in re.split(r"[,;]", (request.headers.get("prefer") or "").lower())]
        if "respond-async" not in prefer:
            raise errors.Invalid("$export is asynchronous: send the header 'Prefer: respond-async'", "Prefer")
        params: list[tuple[str, str | None]] = list(request.query_params.multi_items())
        if request.method == "POST":
            params += _parameters(await read_json(request, self.max_body_bytes))
        group = request.path_params.get("id")
        level = "group" if group is not None else "patient" if request.url.path.startswith("/Patient/") else "system"
        export = parse_request(params, level, group, str(request.url), self.types, prefer_handling(request),
                               PATIENT_TYPES, self.guard.registry)
        return await run_in_threadpool(self._start, export, level, group, request)

    def _start(self, export: Any, level: str, group: str | None, request: Request) -> Response:
        owner = self._owner()
        job = self.jobs.new_id()
        # the access module decides which types this client may export (403 for one asked
        # for by name and not granted) and records the export for the audit log
        types = self.guard.export_types(export.types, tuple(sorted(self.types)), level, job)
        ctx = self.guard.ctx()
        for type_, query in export.filters:
            if type_ not in types:
                raise errors.Forbidden(f"_typeFilter: your scopes do not read {type_}", "_typeFilter")
            self.guard.scope(ctx, query)        # checked as a search of the type (and recorded)
        patients = self._patients(export, group)
        self.jobs.start(job, export, owner, None if frozenset(types) >= self.types else types, patients,
                        self.guard.export_recorder(level, job))
        return Response(status_code=202, headers={"Content-Location": f"{self.base(request)}/$export-status/{job}"})

    def _patients(self, export: Any, group: str | None) -> tuple | None:
        """The patients whose data the export holds (None: all): the Group's members, or
        those the ``patient`` parameter names, which must be members of the Group or known
        (400 naming the first that is not)."""
        members = self._members(group) if group is not None else None
        if export.patients is None:
            return members
        if members is not None:
            among = set(members)
            outside = [p for p in export.patients if p not in among]
            if outside:
                raise errors.Invalid(f"patient: Patient/{outside[0]} is not a member of Group/{group}", "patient")
        else:
            unknown = [p for p in export.patients if self.repo.key_of("Patient", p) is None]
            if unknown:
                raise errors.Invalid(f"patient: Patient/{unknown[0]} is not known", "patient")
        return export.patients

    def _members(self, group: str) -> tuple:
        """The Patient ids of the Group's ``member.entity`` (other members are ignored)."""
        stored = self.repo.read("Group", group)
        if stored is None or stored.deleted:
            raise errors.NotFound(f"Group/{group} is not known", "url")
        body = orjson.loads(stored.body)
        out = []
        for member in body.get("member") or []:
            ref = (member.get("entity") or {}).get("reference") or ""
            target = parse_relative(ref)
            if target is not None and target[0] == "Patient":
                out.append(target[1])
        return tuple(dict.fromkeys(out))

    async def status(self, request: Request) -> Response:
        job = request.path_params["job"]
        owner = self._owner()
        if request.method == "DELETE":
            await run_in_threadpool(self.jobs.cancel, job, owner)     # removing files takes a while
            return Response(status_code=202)
        status, state, updated = self.jobs.status(job, owner)
        if status == RUNNING:
            return Response(status_code=202, headers={"X-Progress": f"exported {state['exported']} resources",
                                                      "Retry-After": "2"})
        if status == FAILED:
            # the job itself failed (the spec's error status), not this request
            err = errors.FhirError(state.get("error") or "the export failed; start a new export")
            return json_response(operation_outcome(err), status=500)
        assert status == COMPLETE, status
        base = self.base(request)
        manifest = {
            "transactionTime": dates.to_instant(state["transactionTime"]),
            "request": state["request"],
            "requiresAccessToken": True,
            "output": [{"type": o["type"], "url": f"{base}/$export-file/{job}/{o['name']}", "count": o["count"]}
                       for o in state["output"]],
            "error": [],
        }
        if state.get("since") is not None:     # resources deleted since then: Bundles of DELETE entries
            manifest["deleted"] = [{"type": o["type"], "url": f"{base}/$export-file/{job}/{o['name']}",
                                    "count": o["count"]} for o in state.get("deleted", [])]
        return Response(orjson.dumps(manifest), media_type="application/json",
                        headers={"Expires": dates.http_date(self.jobs.expires(updated))})

    async def file(self, request: Request) -> Response:
        path = self.jobs.file(request.path_params["job"], self._owner(), request.path_params["name"])
        return FileResponse(path, media_type=NDJSON)


def _parameters(resource: object) -> list[tuple[str, str | None]]:
    """A POST kick-off's Parameters resource as (name, value) pairs; the value is None when
    it is not a string (``parse_request`` then names the parameter)."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Parameters":
        raise errors.Invalid("a POST $export takes a Parameters resource", "resourceType")
    out: list[tuple[str, str | None]] = []
    for i, p in enumerate(resource.get("parameter") or []):
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise errors.Invalid("each parameter needs a name", f"Parameters.parameter[{i}].name")
        value = next((v for k, v in p.items() if k.startswith("value")), None)
        if p["name"] == "patient" and isinstance(value, dict):       # valueReference
            value = value.get("reference")
        out.append((p["name"], value if isinstance(value, str) else None))
    return out
