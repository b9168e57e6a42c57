"""Batch and transaction Bundles (https://hl7.org/fhir/R4/http.html#transaction).

A transaction runs in one unit of work: all entries commit or none do. Entries are
processed in the order the spec requires (DELETE, POST, PUT/PATCH, GET/HEAD), ``urn:uuid:``
full URLs and conditional references (``Patient?identifier=...``) are resolved before any
resource is written, and the response lists entries in the request's order.
A batch runs each entry on its own; a failing entry gets an OperationOutcome in its place.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import errors
from ..fhir import dates
from ..fhir.references import local_part, reference_objects, rewrite_references
from .resources import Outcome, ResourceService

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


@dataclass
class Entry:
    index: int
    method: str
    type: str
    id: str | None
    criteria: str | None        # query string of a conditional URL
    resource: Any
    full_url: str | None
    if_none_exist: str | None
    if_match: int | None
    url: str
    result: dict = field(default_factory=dict)
    refs: list | None = None     # the resource's Reference objects, found while resolving
    prepared: bool = False       # checked by ResourceService.prepare before the unit began
    values: list | None = None   # index values extracted before the unit began


class BundleService:
    def __init__(self, resources: ResourceService, reader: Callable[[str], dict] | None = None,
                 base_urls: Callable[[], tuple[str, ...]] | None = None):
        """``reader(url)`` answers GET entries (the web layer's own read and search); without
        one (import, demo) a GET entry is refused. ``base_urls`` are this server's own bases
        (by default ``ResourceService.own_bases``: the configured one and the request's)."""
        self.resources = resources
        self.reader = reader
        self.base_urls = base_urls or resources.own_bases

    def process(self, bundle: Any, max_entries: int) -> dict:
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise errors.Invalid("POST to the base URL takes a Bundle of type batch or transaction", "Bundle")
        kind = bundle.get("type")
        if kind not in ("batch", "transaction"):
            raise errors.Invalid(f"Bundle.type must be batch or transaction, not '{kind}'", "Bundle.type")
        raw = bundle.get("entry") or []
        if not isinstance(raw, list):
            raise errors.Invalid("Bundle.entry must be an array", "Bundle.entry")
        self.resources.ready()
        if len(raw) > max_entries:
            raise errors.TooLarge(f"the Bundle has {len(raw)} entries; at most {max_entries} are accepted",
                                  "Bundle.entry")
        if kind == "transaction":
            entries = [self._entry(i, e) for i, e in enumerate(raw)]
            _unique_full_urls(entries)
            self._transaction(entries)
            response = [e.result for e in entries]
        else:
            response = [self._batch_entry(i, e) for i, e in enumerate(raw)]
        return {"resourceType": "Bundle", "type": f"{kind}-response", "entry": response}

    # -- parsing ------------------------------------------------------------------------

    def _entry(self, index: int, raw: Any) -> Entry:
        where = f"Bundle.entry[{index}]"
        if not isinstance(raw, dict):
            raise errors.Invalid("each entry must be an object", where)
        request = raw.get("request")
        if not isinstance(request, dict):
            raise errors.Invalid("entry.request is required in a batch or transaction", f"{where}.request")
        method = request.get("method")
        if type(method) is not str or method not in _ORDER:
            raise errors.Invalid(f"request.method must be GET, HEAD, POST, PUT, PATCH or DELETE, not '{method}'",
                                 f"{where}.request.method")
        url = request.get("url")
        if not isinstance(url, str) or not url:
            raise errors.Invalid("request.url is required", f"{where}.request.url")
        full_url = raw.get("fullUrl")
        if full_url is not None and (type(full_url) is not str or not full_url):
            raise errors.Invalid("fullUrl must be a non-empty string", f"{where}.fullUrl")
        url = local_part(url, self.base_urls()).lstrip("/")
        path, _, query = url.partition("?")
        parts = path.split("/")
        type_ = parts[0]
        id_ = parts[1] if len(parts) > 1 else None
        resource = raw.get("resource")
        if method == "PATCH" and isinstance(resource, dict) and resource.get("resourceType") == "Binary":
            resource = _binary_patch(resource, where)
        if method in ("POST", "PUT") and not isinstance(resource, dict):
            raise errors.Invalid(f"a {method} entry needs a resource", f"{where}.resource")
        if_match = None
        if request.get("ifMatch"):
            if_match = _etag_version(request["ifMatch"], f"{where}.request.ifMatch")
        if method != "GET" and method != "HEAD":
            self.resources.check_type(type_)
            self.resources.repo.check_writable(type_, where)
            if method == "POST" and id_ is not None:
                raise errors.Invalid("POST creates a resource: its url is the type alone", f"{where}.request.url")
            if method in ("PUT", "PATCH", "DELETE") and id_ is None and not query:
                raise errors.Invalid(f"{method} needs Type/id or Type?criteria", f"{where}.request.url")
        if_none_exist = request.get("ifNoneExist")
        if if_none_exist is not None and type(if_none_exist) is not str:
            raise errors.Invalid("request.ifNoneExist must be a string (a search query)",
                                 f"{where}.request.ifNoneExist")
        return Entry(index, method, type_, id_, query or None, resource, full_url, if_none_exist, if_match, url)

    # -- transaction ------------------------------------------------------------------------

    def _transaction(self, entries: list[Entry]) -> None:
        service = self.resources
        ordered = sorted(entries, key=lambda e: _ORDER[e.method])
        registry = service.registry
        early = self._prepare_early(entries)
        with service.repo.unit() as unit:
            outcomes: list[Outcome] = []
            for e in ordered:
                if e.method == "DELETE":
                    self._run(unit, e, outcomes)
            if not early:
                self._resolve(unit, entries, self._assign_ids(unit, entries))
            elif service.registry is not registry:
                for e in entries:          # search parameters changed meanwhile: extract again
                    e.values = None
            unit.prefetch([(e.type, e.id) for e in ordered if e.method in ("POST", "PUT", "PATCH") and e.id])
            for e in ordered:
                if e.method in ("POST", "PUT", "PATCH"):
                    self._run(unit, e, outcomes)
            service.check_references(unit, outcomes, self.base_urls())
        for e in ordered:
            if e.method in ("GET", "HEAD"):
                e.result = self._get(e)

    def _prepare_early(self, entries: list[Entry]) -> bool:
        """For a transaction with no conditional parts, do before taking the write lock
        everything that needs no database: give new resources their ids, resolve ``urn:uuid:``
        references, validate, and extract index values. Another writer can then use the
        lock meanwhile. Returns False (nothing done) when the transaction needs the database
        for any of it (ifNoneExist, conditional URLs or references)."""
        writes = [e for e in entries if e.method in ("POST", "PUT", "PATCH", "DELETE")]
        if any(e.if_none_exist or e.criteria for e in writes):
            return False
        is_type = self.resources.registry.is_resource_type
        found: dict[int, list] = {}
        for e in writes:
            if e.method in ("POST", "PUT"):
                refs = reference_objects(e.resource)
                if any("?" in r["reference"] and is_type(r["reference"].split("?", 1)[0].rsplit("/", 1)[-1])
                       for r in refs):
                    return False           # a conditional reference: resolved under the lock
                found[e.index] = refs
        ids: dict[str, str] = {}
        for e in writes:
            if e.method == "POST":
                e.id = self.resources.repo.new_id()
            if e.full_url and e.method in ("POST", "PUT"):
                ids[e.full_url] = f"{e.type}/{e.id}"
        replace = self._replacer(ids)
        registry = self.resources.registry
        for e in writes:
            if e.method not in ("POST", "PUT"):
                continue
            where = f"Bundle.entry[{e.index}]"
            self._rewrite(e, replace, found[e.index])
            if e.method == "PUT":
                self.resources.check_id(e.id, f"{where}.request.url")
            e.resource = self.resources.prepare(e.type, e.resource, e.id if e.method == "PUT" else None, where)
            e.prepared = True
            e.values = registry.extract(e.resource)
        return True

    def _assign_ids(self, unit: Any, entries: list[Entry]) -> dict[str, str]:
        """fullUrl -> Type/id for every entry a reference may name, before anything is written."""
        ids: dict[str, str] = {}
        for e in entries:
            if e.method == "POST":
                if e.if_none_exist:
                    found = self.resources.match(unit, e.type, e.if_none_exist, f"Bundle.entry[{e.index}]"
                                                 ".request.ifNoneExist")
                    if len(found) > 1:
                        raise errors.MultipleMatches(f"ifNoneExist '{e.if_none_exist}' matches {len(found)} "
                                                     "resources", f"Bundle.entry[{e.index}].request.ifNoneExist")
                    if found:
                        e.result = {"existing": found[0]}
                        e.id = found[0].id
                if e.id is None:
                    e.id = unit.fresh_id()
            elif e.method == "PUT" and e.criteria:
                found = self.resources.match(unit, e.type, e.criteria, f"Bundle.entry[{e.index}].request.url")
                if len(found) > 1:
                    raise errors.MultipleMatches(f"conditional update '{e.criteria}' matches {len(found)} "
                                                 "resources", f"Bundle.entry[{e.index}].request.url")
                e.id = found[0].id if found else (e.resource.get("id") or unit.fresh_id())
            if e.full_url and e.id and e.method in ("POST", "PUT"):
                ids[e.full_url] = f"{e.type}/{e.id}"
        return ids

    def _replacer(self, ids: dict[str, str], unit: Any = None) -> Callable[[str], str | None]:
        """The new value of a reference in a transaction: the id given to a ``fullUrl``, this
        server's absolute URLs made relative, and (with a ``unit``) a conditional reference
        ``Type?criteria`` replaced by the one resource it matches."""
        bases = self.base_urls()
        is_type = self.resources.registry.is_resource_type
        cache: dict[str, str] = {}

        def replace(ref: str) -> str | None:
            if ref in ids:
                return ids[ref]
            if ref.startswith("urn:uuid:") or ref.startswith("urn:oid:"):
                raise errors.Invalid(f"reference '{ref}' names no entry of this transaction",
                                     "Bundle.entry.resource")
            local = local_part(ref, bases)
            if unit is not None and "?" in local and is_type(local.split("?")[0]):
                if local not in cache:
                    type_, criteria = local.split("?", 1)
                    found = self.resources.match(unit, type_, criteria, "conditional reference")
                    if len(found) != 1:
                        raise errors.Unprocessable(f"conditional reference '{ref}' matches {len(found)} resources "
                                                   "(it must match exactly one)", "Bundle.entry.resource")
                    cache[local] = f"{type_}/{found[0].id}"
                return cache[local]
            return local if local != ref else None
        return replace

    def _resolve(self, unit: Any, entries: list[Entry], ids: dict[str, str]) -> None:
        replace = self._replacer(ids, unit)
        for e in entries:
            if e.method in ("POST", "PUT") and isinstance(e.resource, dict):
                self._rewrite(e, replace)

    @staticmethod
    def _rewrite(e: Entry, replace: Callable[[str], str | None], refs: list | None = None) -> None:
        """Rewrite the entry's references; an error names the entry's resource."""
        try:
            e.refs = rewrite_references(e.resource, replace, refs)
        except errors.FhirError as exc:
            exc.issues[0].expression = (f"Bundle.entry[{e.index}].resource",)
            raise

    def _run(self, unit: Any, e: Entry, outcomes: list[Outcome]) -> None:
        """Run one write entry; an error that does not say where gets the entry's place."""
        try:
            self._run_entry(unit, e, outcomes)
        except errors.FhirError as exc:
            where = f"Bundle.entry[{e.index}]"
            for issue in exc.issues:
                if not any(x.startswith("Bundle.entry") for x in issue.expression):
                    issue.expression = (where,) + tuple(issue.expression)
            raise

    def _run_entry(self, unit: Any, e: Entry, outcomes: list[Outcome]) -> None:
        service = self.resources
        where = f"Bundle.entry[{e.index}]"
        if e.method == "DELETE":
            if e.criteria:
                service.conditional_delete_in(unit, e.type, e.criteria)
            else:
                service.delete_in(unit, e.type, e.id, e.if_match)
            e.result = {"response": {"status": "204 No Content"}}
            return
        if e.method == "POST":
            existing = e.result.get("existing") if e.result else None
            if existing is not None:
                e.result = _response(Outcome(existing, unchanged=True), "200 OK")
                return
            outcome = service.create_in(unit, e.type, e.resource, None, id=e.id, expression=where,
                                        prepared=e.prepared, values=e.values)
        elif e.method == "PUT":
            outcome = service.update_in(unit, e.type, e.id, e.resource, e.if_match, expression=where,
                                        prepared=e.prepared, values=e.values)
        else:
            if e.criteria:
                found = service.match(unit, e.type, e.criteria, f"{where}.request.url")
                if len(found) != 1:
                    raise errors.PreconditionFailed(f"conditional patch matches {len(found)} resources",
                                                    f"{where}.request.url")
                e.id = found[0].id
            outcome = service.patch_in(unit, e.type, e.id, e.resource, e.if_match, expression=where)
        if e.method != "PATCH":
            outcome.refs = e.refs
        outcomes.append(outcome)
        e.result = _response(outcome, "201 Created" if outcome.created else "200 OK")

    def _get(self, e: Entry) -> dict:
        try:
            if self.reader is None:
                raise errors.NotSupported("GET entries are not run here", f"Bundle.entry[{e.index}].request")
            return {"resource": self.reader(e.url), "response": {"status": "200 OK"}}
        except errors.FhirError as exc:
            return _error_entry(exc)

    # -- batch ------------------------------------------------------------------------------

    def _batch_entry(self, index: int, raw: Any) -> dict:
        try:
            e = self._entry(index, raw)
            if e.method in ("GET", "HEAD"):
                return self._get(e)
            service = self.resources
            with service.repo.unit() as unit:
                self._resolve(unit, [e], {})
                if e.method == "POST":
                    outcome = service.create_in(unit, e.type, e.resource, e.if_none_exist,
                                                expression=f"Bundle.entry[{index}]")
                    service.check_references(unit, [outcome], self.base_urls())
                    status = "201 Created" if outcome.created else "200 OK"
                    return _response(outcome, status)
                outcomes: list[Outcome] = []
                if e.method == "PUT" and e.criteria:
                    outcome = service.conditional_update_in(unit, e.type, e.criteria, e.resource, e.if_match,
                                                            expression=f"Bundle.entry[{index}]")
                    outcomes.append(outcome)
                    e.result = _response(outcome, "201 Created" if outcome.created else "200 OK")
                else:
                    self._run(unit, e, outcomes)
                service.check_references(unit, outcomes, self.base_urls())
                return e.result
        except errors.FhirError as exc:
            return _error_entry(exc)


def _unique_full_urls(entries: list[Entry]) -> None:
    """A transaction's entries that write a resource must not share a fullUrl: a reference
    to it would name two resources (https://hl7.org/fhir/R4/bundle.html#bundle-unique)."""
    seen: dict[str, int] = {}
    for e in entries:
        if e.full_url is None or e.method not in ("POST", "PUT"):
            continue
        first = seen.setdefault(e.full_url, e.index)
        if first != e.index:
            raise errors.Invalid(f"fullUrl '{e.full_url[:200]}' is used by entry {first} and entry {e.index}: "
                                 "each fullUrl names one resource", f"Bundle.entry[{e.index}].fullUrl")


def _response(outcome: Outcome, status: str) -> dict:
    s = outcome.stored
    response = {"status": status, "location": f"{s.type}/{s.id}/_history/{s.version}",
                "etag": f'W/"{s.version}"', "lastModified": dates.to_instant(s.updated)}
    return {"response": response, "_stored": s}


def _error_entry(exc: errors.FhirError) -> dict:
    from ..fhir.outcome import operation_outcome
    return {"response": {"status": f"{exc.status}", "outcome": operation_outcome(exc)}}


def _etag_version(value: Any, where: str) -> int:
    if type(value) is not str:
        raise errors.Invalid("ifMatch must be a version ETag like W/\"3\" (a string)", where)
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise errors.Invalid(f"'{value}' is not a version ETag like W/\"3\"", where)
    return int(text)


def _binary_patch(resource: dict, where: str) -> Any:
    """A PATCH entry carries its JSON Patch as a Binary resource (base64 data)."""
    from ..fhir import jsonio
    try:
        return jsonio.loads(base64.b64decode(resource.get("data", "")))
    except ValueError:
        raise errors.Invalid("the Binary of a PATCH entry must hold a JSON Patch document", f"{where}.resource") from None
