"""The summary care record's FHIR operations (docs/summary.md):

- ``GET|POST /Patient/{id}/$summary`` and ``/Patient/$summary?identifier=system|value``: the
  IPS-shaped document Bundle (``SummaryService.summary``);
- ``POST /AllergyIntolerance/{id}/$confirm``, ``POST /Flag/{id}/$confirm``: mark critical
  information as confirmed now by the caller;
- ``POST /AllergyIntolerance/{id}/$entered-in-error``, ``POST /Flag/{id}/$entered-in-error``
  with a Parameters ``reason``: mark it entered in error (the entry keeps its history).

Registering and changing entries is plain FHIR (POST/PUT of AllergyIntolerance and Flag); the
rules of who may write which category are the guard's, on every path.
"""
from __future__ import annotations

from typing import Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import errors
from .responses import check_accept, json_response, read_json, wants_pretty

_PARAM_VALUES = ("valueString", "valueCode", "valueUri", "valueIdentifier")


class SummaryApi:
    def __init__(self, summary: Any, base: Callable[[Request], str], max_body_bytes: int):
        self.summary = summary
        self.base = base
        self.max_body_bytes = max_body_bytes

    def routes(self) -> list[Route]:
        return [
            Route("/Patient/$summary", self.summary_by_identifier, methods=["GET", "POST"]),
            Route("/Patient/{id}/$summary", self.summary_one, methods=["GET", "POST"]),
            Route("/{type}/{id}/$confirm", self.confirm, methods=["POST"]),
            Route("/{type}/{id}/$entered-in-error", self.entered_in_error, methods=["POST"]),
        ]

    async def _params(self, request: Request) -> dict[str, str]:
        """Query parameters, and for POST the Parameters body's values (strings)."""
        params = {k: v for k, v in request.query_params.multi_items() if k not in ("_format", "_pretty")}
        if request.method == "POST":
            body = await read_json(request, self.max_body_bytes) if await _has_body(request) else None
            if body is not None:
                if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
                    raise errors.Invalid("the body must be a Parameters resource", "Parameters")
                for i, p in enumerate(body.get("parameter") or []):
                    if not isinstance(p, dict) or not isinstance(p.get("name"), str):
                        raise errors.Invalid("each parameter needs a name", f"Parameters.parameter[{i}]")
                    value = next((p[k] for k in _PARAM_VALUES if k in p), None)
                    if isinstance(value, dict):     # an Identifier
                        value = f"{value.get('system', '')}|{value.get('value', '')}"
                    if not isinstance(value, str):
                        raise errors.Invalid(f"parameter '{p['name']}' needs a string value",
                                             f"Parameters.parameter[{i}]")
                    params[p["name"]] = value
        return params

    def _bundle(self, request: Request, patient_id: str) -> bytes:
        return self.summary.summary_json(patient_id, self.base(request))

    async def summary_one(self, request: Request) -> Response:
        check_accept(request)
        params = await self._params(request)
        _only(params, ())
        bundle = await run_in_threadpool(self._bundle, request, request.path_params["id"])
        return json_response(bundle, pretty=wants_pretty(request))

    async def summary_by_identifier(self, request: Request) -> Response:
        check_accept(request)
        params = await self._params(request)
        _only(params, ("identifier",))
        identifier = params.get("identifier")
        if not identifier or "|" not in identifier:
            raise errors.Invalid("give the patient as identifier=system|value, e.g. "
                                 "urn:oid:2.16.578.1.12.4.1.4.1|<fødselsnummer>", "identifier")

        def run() -> bytes:
            found = self.summary.resources.search("Patient", [("identifier", identifier), ("_count", "2")])
            if len(found.matches) != 1:
                if found.matches:
                    raise errors.Invalid(f"identifier {identifier} matches more than one patient", "identifier")
                raise errors.NotFound(f"no patient with identifier {identifier} is known", "identifier")
            return self._bundle(request, found.matches[0].id)

        return json_response(await run_in_threadpool(run), pretty=wants_pretty(request))

    async def confirm(self, request: Request) -> Response:
        type_, id_ = request.path_params["type"], request.path_params["id"]
        params = await self._params(request)
        _only(params, ())
        resource = await run_in_threadpool(self.summary.confirm, _critical_type(type_), id_)
        return json_response(resource, pretty=wants_pretty(request))

    async def entered_in_error(self, request: Request) -> Response:
        type_, id_ = request.path_params["type"], request.path_params["id"]
        params = await self._params(request)
        _only(params, ("reason",))
        if not params.get("reason"):
            raise errors.Invalid("say why the entry is wrong: parameter 'reason'", "reason")
        resource = await run_in_threadpool(self.summary.entered_in_error, _critical_type(type_), id_,
                                           params["reason"])
        return json_response(resource, pretty=wants_pretty(request))


def _critical_type(type_: str) -> str:
    if type_ not in ("AllergyIntolerance", "Flag"):
        raise errors.NotFound(f"{type_} has no such operation: $confirm and $entered-in-error are for "
                              "AllergyIntolerance and Flag", "url")
    return type_


def _only(params: dict, allowed: tuple) -> None:
    for name in params:
        if name not in allowed:
            raise errors.Invalid(f"unknown parameter '{name}'" + (f" (known: {', '.join(allowed)})" if allowed else ""),
                                 name)


async def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return request.headers.get("transfer-encoding") is not None
