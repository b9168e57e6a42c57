"""The FHIR RESTful API routes (https://hl7.org/fhir/R4/http.html).

Handlers translate HTTP to service calls and service results to HTTP; errors raised below
become an OperationOutcome with the right status in ``app.py``'s exception handler.
Writes run in a worker thread (they may wait for the database's write lock); reads run on
the event loop, where a SQLite lookup is cheaper than a thread hop.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import errors
from ..fhir import dates, jsonio
from ..fhir.compartments import compartment_params
from ..fhir.summary import apply_summary
from ..services.bundles import BundleService
from ..services.everything import everything
from ..services.resources import ResourceService, SearchResult
from .responses import (check_accept, json_response, prefer_handling, read_json, resource_headers,
                        resource_response, wants_pretty)


class FhirApi:
    def __init__(self, resources: ResourceService, settings: Any, capability: Any):
        self.resources = resources
        self.settings = settings
        self.capability = capability
        self.bundles = BundleService(resources, self._bundle_get)
        # type -> reader(path parts, query) for Bundle GET entries of types kept outside the
        # resource store (the audit log's AuditEvents, web/audit_api.py)
        self.log_readers: dict[str, Any] = {}

    def base(self, request: Request) -> str:
        if self.settings.base_url:
            return self.settings.base_url.rstrip("/")
        return str(request.base_url).rstrip("/")

    def routes(self) -> list[Route]:
        return [
            Route("/metadata", self.metadata, methods=["GET"]),
            Route("/_history", self.history_system, methods=["GET"]),
            Route("/_search", self.search_post, methods=["POST"]),
            Route("/$validate", self.validate_any, methods=["POST"]),
            Route("/{type}/$validate", self.validate, methods=["POST"]),
            Route("/{type}/{id}/$validate", self.validate, methods=["POST"]),
            Route("/Patient/$everything", self.everything_all, methods=["GET", "POST"]),
            Route("/Patient/{id}/$everything", self.everything_one, methods=["GET", "POST"]),
            Route("/{type}/_search", self.search_post, methods=["POST"]),
            Route("/{type}/_history", self.history_type, methods=["GET"]),
            Route("/{type}/{id}/_history", self.history_instance, methods=["GET"]),
            Route("/{type}/{id}/_history/{vid}", self.vread, methods=["GET"]),
            Route("/{type}/{id}/{compartment_type}", self.compartment, methods=["GET"]),
            Route("/{type}/{id}", self.instance, methods=["GET", "HEAD", "PUT", "PATCH", "DELETE"]),
            Route("/{type}", self.type_level, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
        ]

    # -- capability --------------------------------------------------------------------

    async def metadata(self, request: Request) -> Response:
        check_accept(request)
        return json_response(self.capability(self.base(request)), pretty=wants_pretty(request))

    # -- instance level ------------------------------------------------------------------

    async def instance(self, request: Request) -> Response:
        type_, id_ = request.path_params["type"], request.path_params["id"]
        method = request.method
        if method in ("GET", "HEAD"):
            check_accept(request)
            stored = self.resources.read(type_, id_)
            not_modified = _not_modified(request, stored)
            if not_modified is not None:
                return not_modified
            summary, elements = _summary_params(request)
            return resource_response(stored, pretty=wants_pretty(request), summary=summary, elements=elements)
        if method == "PUT":
            body = await read_json(request, self.settings.max_body_bytes)
            if_match = _if_match(request)
            outcome = await run_in_threadpool(self.resources.update, type_, id_, body, if_match)
            return self._write_response(request, outcome)
        if method == "PATCH":
            body = await read_json(request, self.settings.max_body_bytes)
            outcome = await run_in_threadpool(self.resources.patch, type_, id_, body, _if_match(request))
            return self._write_response(request, outcome)
        outcome = await run_in_threadpool(self.resources.delete, type_, id_, _if_match(request))
        return _deleted(outcome)

    async def vread(self, request: Request) -> Response:
        check_accept(request)
        p = request.path_params
        stored = self.resources.vread(p["type"], p["id"], p["vid"])
        return resource_response(stored, pretty=wants_pretty(request))

    def _write_response(self, request: Request, outcome: Any) -> Response:
        stored = outcome.stored
        location = f"{self.base(request)}/{stored.type}/{stored.id}/_history/{stored.version}"
        status = 201 if outcome.created else 200
        return resource_response(stored, status, location, request.headers.get("prefer"), wants_pretty(request))

    # -- type level ----------------------------------------------------------------------

    async def type_level(self, request: Request) -> Response:
        type_ = request.path_params["type"]
        method = request.method
        if method in ("GET", "HEAD"):
            check_accept(request)
            return self._search(request, type_, list(request.query_params.multi_items()))
        criteria = str(request.url.query)
        if method == "POST":
            body = await read_json(request, self.settings.max_body_bytes)
            outcome = await run_in_threadpool(self.resources.create, type_, body,
                                              request.headers.get("if-none-exist"))
            return self._write_response(request, outcome)
        if not criteria:
            raise errors.MethodNotAllowed(f"{method} on /{type_} needs search criteria (conditional {method})",
                                          "url")
        if method == "PUT":
            body = await read_json(request, self.settings.max_body_bytes)
            outcome = await run_in_threadpool(self.resources.conditional_update, type_, criteria, body,
                                              _if_match(request))
            return self._write_response(request, outcome)
        if method == "PATCH":
            body = await read_json(request, self.settings.max_body_bytes)

            def conditional_patch() -> Any:
                with self.resources.repo.unit() as unit:
                    found = self.resources.match(unit, type_, criteria, "criteria")
                    if len(found) != 1:
                        raise errors.PreconditionFailed(f"conditional patch '{criteria}' matches {len(found)} "
                                                        "resources (it must match one)", "criteria")
                    outcome = self.resources.patch_in(unit, type_, found[0].id, body, _if_match(request))
                    self.resources.check_references(unit, [outcome], self.resources.own_bases())
                return outcome
            return self._write_response(request, await run_in_threadpool(conditional_patch))
        outcomes = await run_in_threadpool(self.resources.conditional_delete, type_, criteria)
        return _deleted(outcomes[0] if outcomes else None)

    async def search_post(self, request: Request) -> Response:
        check_accept(request)
        form = await request.form()
        params = list(request.query_params.multi_items()) + [(k, str(v)) for k, v in form.multi_items()]
        return self._search(request, request.path_params.get("type"), params)

    async def compartment(self, request: Request) -> Response:
        """``Patient/123/Observation``: a search within a compartment."""
        check_accept(request)
        p = request.path_params
        comp, cid, target = p["type"], p["id"], p["compartment_type"]
        if target.startswith("$") or target == "_history":
            raise errors.NotFound(f"unknown operation or path '{target}'", "url")
        self.resources.check_type(comp)
        self.resources.check_type(target)
        codes = compartment_params(comp, target)
        if not codes:
            raise errors.Invalid(f"{target} is not part of the {comp} compartment", "url")
        self.resources.read(comp, cid)
        params = list(request.query_params.multi_items())
        if codes == ("{def}",):
            return self._search(request, target, params + [("_id", cid)])
        references = tuple(c for c in codes if c != "{def}")
        return self._search(request, target, params, compartment=(comp, cid, references))

    def _search(self, request: Request, type_: str | None, params: list, compartment: tuple | None = None) -> Response:
        result = self.resources.search(type_, params, lenient=prefer_handling(request), compartment=compartment)
        return json_response(self.search_bundle(request, result), pretty=wants_pretty(request))

    def search_bundle(self, request: Request, result: SearchResult) -> bytes:
        base = self.base(request)
        query = result.query
        page = result.page
        path = request.url.path
        links = [("self", _page_url(base, path, query, query.offset, page.snapshot))]
        if query.offset > 0 and query.count:
            links.append(("previous", _page_url(base, path, query, max(0, query.offset - query.count), page.snapshot)))
        if page.has_more:
            links.append(("next", _page_url(base, path, query, query.offset + query.count, page.snapshot)))
        head: dict = {"resourceType": "Bundle", "type": "searchset"}
        if page.total is not None:
            head["total"] = page.total
        head["link"] = [{"relation": r, "url": u} for r, u in links]
        entries = [_entry_bytes(base, s, "match", query) for s in result.matches]
        entries += [_entry_bytes(base, s, "include", query) for s in result.included]
        if query.warnings:
            from ..fhir.outcome import operation_outcome
            outcome = {"resourceType": "OperationOutcome", "issue": [
                dict(operation_outcome(w)["issue"][0], severity="warning") for w in query.warnings]}
            entries.append(b'{"resource":' + orjson.dumps(outcome) + b',"search":{"mode":"outcome"}}')
        head_bytes = orjson.dumps(head)
        return head_bytes[:-1] + b',"entry":[' + b",".join(entries) + b"]}" if entries else head_bytes

    # -- history ---------------------------------------------------------------------------

    async def history_system(self, request: Request) -> Response:
        return self._history(request, None, None)

    async def history_type(self, request: Request) -> Response:
        return self._history(request, request.path_params["type"], None)

    async def history_instance(self, request: Request) -> Response:
        return self._history(request, request.path_params["type"], request.path_params["id"])

    def _history(self, request: Request, type_: str | None, id_: str | None) -> Response:
        check_accept(request)
        params = list(request.query_params.multi_items())
        entries, total, count, offset = self.resources.history(type_, id_, params)
        base = self.base(request)
        path = request.url.path
        keep = [(k, v) for k, v in params if k not in ("_offset",)]
        links = [{"relation": "self", "url": f"{base}{path}" + (f"?{urlencode(params)}" if params else "")}]
        if offset + count < total:
            links.append({"relation": "next", "url": f"{base}{path}?{urlencode(keep + [('_offset', offset + count)])}"})
        if offset > 0:
            links.append({"relation": "previous",
                          "url": f"{base}{path}?{urlencode(keep + [('_offset', max(0, offset - count))])}"})
        out = []
        for s in entries:
            entry: dict = {"fullUrl": f"{base}/{s.type}/{s.id}"}
            url = s.type if s.method == "POST" else f"{s.type}/{s.id}"
            status = "204 No Content" if s.deleted else ("201 Created" if s.version == 1 else "200 OK")
            entry["request"] = {"method": s.method, "url": url}
            entry["response"] = {"status": status, "etag": f'W/"{s.version}"',
                                 "lastModified": dates.to_instant(s.updated)}
            raw = orjson.dumps(entry)
            if s.body is not None:
                raw = raw[:-1] + b',"resource":' + s.body + b"}"
            out.append(raw)
        head = orjson.dumps({"resourceType": "Bundle", "type": "history", "total": total, "link": links})
        body = head[:-1] + b',"entry":[' + b",".join(out) + b"]}" if out else head
        return json_response(body, pretty=wants_pretty(request))

    # -- batch / transaction ---------------------------------------------------------------

    async def transaction(self, request: Request) -> Response:
        bundle = await read_json(request, self.settings.max_body_bytes)
        result = await run_in_threadpool(self.bundles.process, bundle, self.settings.max_bundle_entries)
        return_rep = "return=representation" in (request.headers.get("prefer") or "")
        base = self.base(request)
        for entry in result["entry"]:
            stored = entry.pop("_stored", None)
            if stored is not None:
                entry["fullUrl"] = f"{base}/{stored.type}/{stored.id}"
                if return_rep and stored.body is not None:
                    entry["resource"] = orjson.Fragment(stored.body)
        return json_response(result, pretty=wants_pretty(request))

    def _bundle_get(self, url: str) -> dict:
        """GET entries of a batch/transaction: a read or a search, as a plain dict."""
        from urllib.parse import parse_qsl
        path, _, query = url.partition("?")
        parts = [p for p in path.split("/") if p]
        if parts and parts[0] in self.log_readers:
            return self.log_readers[parts[0]](parts, query)
        if len(parts) == 2:
            return jsonio.loads(self.resources.read(parts[0], parts[1]).body)
        if len(parts) == 4 and parts[2] == "_history":
            return jsonio.loads(self.resources.vread(parts[0], parts[1], parts[3]).body)
        if len(parts) == 1:
            result = self.resources.search(parts[0], parse_qsl(query, keep_blank_values=True))
            return {"resourceType": "Bundle", "type": "searchset", "total": result.page.total,
                    "entry": [{"resource": jsonio.loads(s.body), "search": {"mode": "match"}}
                              for s in result.matches]}
        raise errors.NotSupported(f"GET {url} is not supported inside a Bundle", "Bundle.entry.request.url")

    # -- operations --------------------------------------------------------------------------

    async def validate(self, request: Request) -> Response:
        type_ = request.path_params["type"]
        body = await read_json(request, self.settings.max_body_bytes)
        if isinstance(body, dict) and body.get("resourceType") == "Parameters":
            body = next((p.get("resource") for p in body.get("parameter", []) if p.get("name") == "resource"), None)
        from ..fhir.outcome import information, operation_outcome
        try:
            self.resources.prepare(type_, body, request.path_params.get("id"))
        except errors.FhirError as exc:
            return json_response(operation_outcome(exc), 200, pretty=wants_pretty(request))
        return json_response(information("the resource is valid", "informational"), 200,
                             pretty=wants_pretty(request))

    async def validate_any(self, request: Request) -> Response:
        raise errors.Invalid("use [type]/$validate", "url")

    async def everything_one(self, request: Request) -> Response:
        return await self._everything(request, request.path_params["id"])

    async def everything_all(self, request: Request) -> Response:
        return await self._everything(request, None)

    async def _everything(self, request: Request, patient_id: str | None) -> Response:
        check_accept(request)
        params = list(request.query_params.multi_items())
        if request.method == "POST":
            body = await read_json(request, self.settings.max_body_bytes)
            for p in (body or {}).get("parameter", []) if isinstance(body, dict) else []:
                for key in ("valueString", "valueInstant", "valueDateTime", "valueInteger", "valueCode"):
                    if key in p:
                        params.append((p.get("name", ""), str(p[key])))
        result = await run_in_threadpool(everything, self.resources, patient_id, params)
        return json_response(self.search_bundle(request, result), pretty=wants_pretty(request))


def _page_url(base: str, path: str, query: Any, offset: int, snapshot: int) -> str:
    pairs = [(k, v) for k, v in query.echo if k not in ("_offset", "_snapshot", "_count")]
    pairs += [("_count", str(query.count)), ("_offset", str(offset)), ("_snapshot", str(snapshot))]
    return f"{base}{path}?{urlencode(pairs)}"


def _entry_bytes(base: str, stored: Any, mode: str, query: Any) -> bytes:
    body = stored.body
    if query.summary in ("true", "text", "data") or query.elements:
        body = jsonio.dumps(apply_summary(jsonio.loads(body), query.summary, query.elements if mode == "match"
                                          else None))
    url = f"{base}/{stored.type}/{stored.id}".encode()
    return (b'{"fullUrl":"' + url + b'","resource":' + body + b',"search":{"mode":"' + mode.encode() + b'"}}')


def _summary_params(request: Request) -> tuple[str | None, tuple | None]:
    summary = request.query_params.get("_summary")
    if summary is not None and summary not in ("true", "false", "text", "data", "count"):
        raise errors.Invalid(f"_summary must be true, false, text, data or count, not '{summary}'", "_summary")
    elements = request.query_params.get("_elements")
    return (None if summary == "false" else summary,
            tuple(e.strip() for e in elements.split(",")) if elements else None)


def _if_match(request: Request) -> int | None:
    value = request.headers.get("if-match")
    if value is None:
        return None
    text = value.strip()
    text = text[2:] if text.startswith("W/") else text
    text = text.strip('"')
    if not text.isdigit():
        raise errors.Invalid(f"If-Match must be a version ETag like W/\"3\", not '{value}'", "If-Match")
    return int(text)


def _not_modified(request: Request, stored: Any) -> Response | None:
    etag = f'W/"{stored.version}"'
    inm = request.headers.get("if-none-match")
    if inm is not None:
        tags = [t.strip() for t in inm.split(",")]
        if "*" in tags or etag in tags or f'"{stored.version}"' in tags:
            return Response(b"", 304, headers=resource_headers(stored))
        return None
    ims = request.headers.get("if-modified-since")
    if ims is not None:
        since = dates.parse_http_date(ims)
        if since is not None and stored.updated // 1000 <= since // 1000:
            return Response(b"", 304, headers=resource_headers(stored))
    return None


def _deleted(outcome: Any) -> Response:
    if outcome is None:
        return Response(b"", 204)
    return Response(b"", 204, headers={"ETag": f'W/"{outcome.stored.version}"'})
