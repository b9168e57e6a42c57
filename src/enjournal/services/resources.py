"""The FHIR RESTful interactions on resources: read, vread, create, update, patch, delete,
their conditional forms, search and history (https://hl7.org/fhir/R4/http.html).

Every write goes through ``prepare()`` (structure, ids, Norwegian identifiers) and
``check_references()``, and runs inside a unit of work so it is atomic; transactions (``bundles.py``) reuse the
``*_in`` functions with one unit for the whole Bundle.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import jsonpatch

from .. import errors
from ..fhir import dates, jsonio
from ..fhir import query as fq
from ..fhir.references import local_part, parse_relative, path_of, reference_objects
from ..access.context import current
from ..fhir.validation import validate_resource
from ..settings import Settings
from ..store import Page, Stored

_ID_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


@dataclass
class Outcome:
    """What a write did: the stored version and whether it created the resource."""
    stored: Stored
    created: bool = False
    unchanged: bool = False     # conditional create that found a match, or an update that changed nothing
    resource: dict | None = None  # the resource as written (saves parsing the body again)
    refs: list | None = None      # its Reference objects, when the caller already walked it


@dataclass
class SearchResult:
    query: fq.SearchQuery
    page: Page
    matches: list
    included: list = field(default_factory=list)


class ResourceService:
    def __init__(self, repo: Any, registry: Any, settings: Settings):
        self.repo = repo
        self.registry = registry
        self.settings = settings
        # type -> hook(unit, type, old body or None, new resource or None), run inside the write's unit
        self.after_write: dict[str, Any] = {}
        self.before_use: list = []      # called before each search and write (e.g. reload definitions)

    def ready(self) -> None:
        for hook in self.before_use:
            hook()

    def _written(self, unit: Any, type: str, old: Stored | None, new: dict | None) -> None:
        hook = self.after_write.get(type)
        if hook is not None:
            hook(unit, type, old.body if old is not None and not old.deleted else None, new)

    # -- reads -------------------------------------------------------------------------

    def read(self, type: str, id: str) -> Stored:
        self.check_type(type)
        stored = self.repo.read(type, id)
        if stored is None:
            raise errors.NotFound(f"{type}/{id} is not known", f"{type}.id")
        if stored.deleted:
            raise errors.Gone(f"{type}/{id} was deleted (version {stored.version})", f"{type}.id",
                              headers={"ETag": f'W/"{stored.version}"'})
        return stored

    def vread(self, type: str, id: str, version: str) -> Stored:
        self.check_type(type)
        if not version.isdigit() or len(version) > 15:
            raise errors.NotFound(f"{type}/{id} has no version '{version}'", f"{type}.meta.versionId")
        stored = self.repo.vread(type, id, int(version))
        if stored is None:
            raise errors.NotFound(f"{type}/{id} has no version {version}", f"{type}.meta.versionId")
        if stored.deleted:
            raise errors.Gone(f"version {version} of {type}/{id} is a deletion", f"{type}.meta.versionId")
        return stored

    def search(self, type: str | None, params: Iterable[tuple[str, str]], *, lenient: bool = False,
               unit: Any = None, compartment: tuple | None = None) -> SearchResult:
        """Search ``type`` (None: all types); ``compartment`` is (type, id, reference codes)
        for a compartment search such as ``Patient/123/Observation``."""
        self.ready()
        if type is not None:
            self.check_type(type)
        query = fq.parse(type, params, self.registry, lenient=lenient,
                         default_count=self.settings.default_page_size, max_count=self.settings.max_page_size)
        if compartment is not None:
            query.clauses.append(self._compartment_clause(type, *compartment))
        source = unit if unit is not None else self.repo
        page = source.search(query)
        matches = source.load(page.keys)
        included = []
        if query.includes and page.keys:
            included = self.repo.load(self.repo.includes(page.keys, query.includes))
        return SearchResult(query, page, matches, included)

    def _compartment_clause(self, type: str, comp: str, cid: str, codes: tuple) -> fq.AnyOf:
        clauses = []
        for code in codes:
            param = self.registry.get(type, code)
            if param is not None and param.type == "reference":
                clauses.append(fq.Leaf(type, param, None, (fq.RefQ(comp, cid),)))
        return fq.AnyOf(tuple(clauses)) if clauses else fq.IdIn(())

    def history(self, type: str | None, id: str | None, params: Iterable[tuple[str, str]]) -> tuple:
        if type is not None:
            self.check_type(type)
        since = at = None
        count, offset = self.settings.default_page_size, 0
        for name, value in params:
            if name == "_since":
                since = dates.parameter_range(value, name)[0]
            elif name == "_at":
                at = dates.parameter_range(value, name)
            elif name == "_count":
                count = min(fq.count_number(value, "_count"), self.settings.max_page_size)
            elif name == "_offset":
                offset = fq.count_number(value, "_offset")
            elif name in ("_format", "_pretty"):
                continue
            else:
                raise errors.Invalid(f"unknown history parameter '{name}'", name)
        entries, total = self.repo.history(type, id, since, at, count, offset)
        return entries, total, count, offset

    def read_any(self, type: str, id: str) -> Stored:
        stored = self.repo.read(type, id)
        if stored is None:
            raise errors.NotFound(f"{type}/{id} is not known", f"{type}.id")
        return stored

    # -- writes (each its own unit of work) ---------------------------------------------

    def create(self, type: str, resource: dict, if_none_exist: str | None = None) -> Outcome:
        self.ready()
        with self.repo.unit() as unit:
            outcome = self.create_in(unit, type, resource, if_none_exist)
            self.check_references(unit, [outcome])
        return outcome

    def update(self, type: str, id: str, resource: dict, if_match: int | None = None) -> Outcome:
        self.ready()
        with self.repo.unit() as unit:
            outcome = self.update_in(unit, type, id, resource, if_match)
            self.check_references(unit, [outcome])
        return outcome

    def conditional_update(self, type: str, criteria: str, resource: dict, if_match: int | None = None) -> Outcome:
        self.ready()
        with self.repo.unit() as unit:
            outcome = self.conditional_update_in(unit, type, criteria, resource, if_match)
            self.check_references(unit, [outcome])
        return outcome

    def patch(self, type: str, id: str, patch: Any, if_match: int | None = None) -> Outcome:
        self.ready()
        with self.repo.unit() as unit:
            outcome = self.patch_in(unit, type, id, patch, if_match)
            self.check_references(unit, [outcome])
        return outcome

    def delete(self, type: str, id: str, if_match: int | None = None) -> Outcome | None:
        self.ready()
        with self.repo.unit() as unit:
            return self.delete_in(unit, type, id, if_match)

    def conditional_delete(self, type: str, criteria: str) -> list[Outcome]:
        self.ready()
        with self.repo.unit() as unit:
            return self.conditional_delete_in(unit, type, criteria)

    # -- writes inside a given unit ------------------------------------------------------

    def create_in(self, unit: Any, type: str, resource: dict, if_none_exist: str | None = None,
                  id: str | None = None, expression: str = "", prepared: bool = False,
                  values: list | None = None) -> Outcome:
        """Create inside ``unit``. ``prepared``: the resource was already checked by ``prepare``;
        ``values``: its index values, extracted before the unit began."""
        self.repo.check_writable(type)
        self.check_type(type)
        if if_none_exist:
            found = self.match(unit, type, if_none_exist, "If-None-Exist")
            if len(found) == 1:
                return Outcome(found[0], created=False, unchanged=True)
            if len(found) > 1:
                raise errors.MultipleMatches(f"If-None-Exist '{if_none_exist}' matches {len(found)} {type} "
                                             "resources", "If-None-Exist")
        if not prepared:
            resource = self.prepare(type, resource, None, expression)
        new_id = id or unit.fresh_id()
        stored = unit.put(type, new_id, resource, "POST", values=values)
        self._written(unit, type, None, resource)
        return Outcome(stored, created=True, resource=resource)

    def update_in(self, unit: Any, type: str, id: str, resource: dict, if_match: int | None = None,
                  expression: str = "", prepared: bool = False, values: list | None = None) -> Outcome:
        self.repo.check_writable(type)
        self.check_type(type)
        self.check_id(id, expression or f"{type}.id")
        if not prepared:
            resource = self.prepare(type, resource, id, expression)
        current = unit.read(type, id)
        if if_match is None and current is not None and not current.deleted and current.body is not None:
            old = jsonio.loads(current.body)
            if _same_content(old, resource):
                _permit(unit, type, id, resource)
                return Outcome(current, created=False, unchanged=True)
        stored = unit.put(type, id, resource, "PUT", expected_version=if_match, values=values)
        self._written(unit, type, current, resource)
        return Outcome(stored, created=current is None or current.deleted, resource=resource)

    def conditional_update_in(self, unit: Any, type: str, criteria: str, resource: dict,
                              if_match: int | None = None, expression: str = "") -> Outcome:
        self.repo.check_writable(type)
        found = self.match(unit, type, criteria, "criteria")
        if len(found) > 1:
            raise errors.MultipleMatches(f"conditional update '{criteria}' matches {len(found)} {type} resources")
        body_id = resource.get("id") if isinstance(resource, dict) else None
        if not found:
            return self.create_in(unit, type, resource, None, id=body_id, expression=expression)
        existing = found[0]
        if body_id is not None and body_id != existing.id:
            raise errors.Invalid(f"resource id '{body_id}' does not match {type}/{existing.id} found by "
                                 f"'{criteria}'", f"{type}.id")
        if body_id is None and isinstance(resource, dict):
            resource = dict(resource, id=existing.id)
        return self.update_in(unit, type, existing.id, resource, if_match, expression)

    def patch_in(self, unit: Any, type: str, id: str, patch: Any, if_match: int | None = None,
                 expression: str = "") -> Outcome:
        self.repo.check_writable(type)
        self.check_type(type)
        current = unit.read(type, id)
        if current is None:
            raise errors.NotFound(f"{type}/{id} is not known", f"{type}.id")
        if current.deleted:
            raise errors.Gone(f"{type}/{id} was deleted", f"{type}.id")
        old = jsonio.loads(current.body)
        resource = apply_json_patch(old, patch)
        if resource.get("resourceType") != type or resource.get("id") != id:
            raise errors.Unprocessable("a patch may not change resourceType or id", f"{type}.id")
        resource = self.prepare(type, resource, id, expression)
        if _same_content(old, resource):
            _permit(unit, type, id, resource)
            if if_match is not None and if_match != current.version:
                raise errors.PreconditionFailed(f"{type}/{id} is at version {current.version}, not {if_match}")
            return Outcome(current, unchanged=True)
        expected = if_match if if_match is not None else current.version
        stored = unit.put(type, id, resource, "PATCH", expected_version=expected)
        self._written(unit, type, current, resource)
        return Outcome(stored, resource=resource)

    def delete_in(self, unit: Any, type: str, id: str, if_match: int | None = None) -> Outcome | None:
        self.repo.check_writable(type)
        self.check_type(type)
        current = unit.read(type, id)
        if current is None or current.deleted:
            _permit(unit, type, id, None)      # the subject could have deleted it (else 404 or 403)
            if if_match is not None:       # the condition fails: there is no such version now
                raise errors.PreconditionFailed(f"{type}/{id} is {'deleted' if current else 'not known'}, "
                                                f"not at version {if_match} (If-Match)")
            return None      # deleting what is not there succeeds (idempotent)
        stored = unit.put(type, id, None, "DELETE", expected_version=if_match)
        self._written(unit, type, current, None)
        return Outcome(stored)

    def conditional_delete_in(self, unit: Any, type: str, criteria: str) -> list[Outcome]:
        self.repo.check_writable(type)
        found = self.match(unit, type, criteria, "criteria", limit=1000)
        if not found:
            _permit(unit, type, None, None)
        return [o for o in (self.delete_in(unit, type, s.id) for s in found) if o is not None]

    def match(self, unit: Any, type: str, criteria: str, where: str, limit: int = 2) -> list[Stored]:
        """Current resources of ``type`` matching a query string (conditional interactions)."""
        from urllib.parse import parse_qsl
        criteria = criteria.split("?", 1)[1] if "?" in criteria else criteria
        params = parse_qsl(criteria, keep_blank_values=True)
        if not any(not name.startswith("_") or name in ("_id", "_lastUpdated", "_tag", "_profile",
                                                        "_security", "_has") for name, _ in params):
            raise errors.Invalid(f"{where} '{criteria}' has no search criteria", where)
        query = fq.parse(type, params, self.registry, default_count=limit, max_count=limit)
        query.count = limit
        page = unit.search(query)
        return unit.load(page.keys)

    # -- validation --------------------------------------------------------------------

    def check_type(self, type: str) -> None:
        if not self.registry.is_resource_type(type):
            raise errors.NotFound(f"'{type}' is not a FHIR R4 resource type", "resourceType")

    @staticmethod
    def check_id(id: str, expression: str) -> None:
        if not id or len(id) > 64 or not set(id) <= _ID_CHARS:
            raise errors.Invalid(f"'{id[:100]}' is not a valid id (1-64 of A-Z a-z 0-9 - .)", expression)
        if not id.strip("."):
            # "." and ".." are URL path segments (RFC 3986 5.2.4): Observation/.. is not an address
            raise errors.Invalid(f"'{id}' is not a valid id: an id of dots alone cannot be part of a URL", expression)

    def prepare(self, type: str, resource: Any, id: str | None, expression: str = "") -> dict:
        """Check a resource before it is written; returns it ready to store."""
        where = expression or type
        self.repo.check_writable(type, where)   # before validation: what no client may write says so
        if not isinstance(resource, dict):
            raise errors.Invalid("the body must be a JSON object (a FHIR resource)", where)
        actual = resource.get("resourceType")
        if actual != type:
            raise errors.Invalid(f"resourceType '{actual}' does not match the URL's type '{type}'",
                                 f"{where}.resourceType" if expression else "resourceType")
        body_id = resource.get("id")
        if id is not None and body_id != id:
            if body_id is None:
                raise errors.Invalid(f"the resource has no id, but the URL names {type}/{id}", f"{type}.id")
            raise errors.Invalid(f"id '{body_id}' in the body does not match the URL's id '{id}'", f"{type}.id")
        if id is None and body_id is not None:
            resource = {k: v for k, v in resource.items() if k != "id"}  # the server assigns ids on create
        self.localise_references(resource, expression or type)
        issues = validate_resource(resource, allow_synthetic=self.settings.allow_synthetic_ids,
                                   strict=self.settings.strict_validation)
        issues = [i for i in issues if i.severity in ("error", "fatal")]
        if issues:
            if expression:
                for issue in issues:        # Observation.status -> Bundle.entry[2].resource.status
                    issue.expression = tuple(_within(expression, type, e) for e in issue.expression) or (expression,)
            raise errors.Invalid(f"{type} is not valid: {issues[0].diagnostics}", issues=issues)
        return resource

    def own_bases(self) -> tuple[str, ...]:
        """This server's base URLs: the configured ``base_url`` and the one the current request
        addressed (``http://host:port``), so an absolute reference to this server is known as such."""
        ctx = current()
        configured = self.settings.base_url.rstrip("/")
        here = ctx.base.rstrip("/") if ctx is not None and ctx.base else ""
        return tuple(b for b in dict.fromkeys((configured, here)) if b)

    def localise_references(self, resource: dict, where: str) -> None:
        """Make every reference to this server relative (``http://host/Patient/1`` becomes
        ``Patient/1``), so it is indexed, placed in compartments and judged by the access
        guard exactly as the relative one (https://hl7.org/fhir/R4/references.html#literal);
        a protocol-relative ``//...`` reference is refused: it names no server."""
        bases = self.own_bases()
        for ref in reference_objects(resource):
            value = ref["reference"]
            if value.startswith("//"):
                raise errors.Invalid(f"reference '{value[:100]}' is not valid: use Type/id for a resource on this "
                                     "server, or an absolute URL with its scheme", f"{where}.{path_of(resource, ref)}")
            if bases and "://" in value:
                local = local_part(value, bases)
                if local != value and parse_relative(local) is not None:
                    ref["reference"] = local

    def check_references(self, unit: Any, outcomes: list[Outcome], base_urls: tuple[str, ...] = ()) -> None:
        """Every relative literal reference in the written resources must resolve (setting
        ``validate_references``); checked after all writes of a unit so a transaction may
        refer forward to its own entries."""
        if not self.settings.validate_references:
            return
        cache: dict[tuple[str, str], bool] = {}
        for outcome in outcomes:
            if outcome.unchanged or outcome.stored.body is None:
                continue
            resource = outcome.resource or jsonio.loads(outcome.stored.body)
            contained = {"#" + c.get("id", "") for c in resource.get("contained", []) if isinstance(c, dict)}
            for ref in outcome.refs if outcome.refs is not None else reference_objects(resource):
                problem = self._unresolved(unit, ref["reference"], contained, base_urls, cache)
                if problem:
                    where = f"{outcome.stored.type}.{path_of(resource, ref)}"
                    raise errors.Unprocessable(problem, where)

    def _unresolved(self, unit: Any, reference: str, contained: set, base_urls: tuple, cache: dict) -> str | None:
        """Why ``reference`` does not resolve, or None when it does (or is not ours to resolve)."""
        value = local_part(reference, base_urls)
        if value.startswith("#"):
            if value != "#" and value not in contained:
                return f"contained reference '{value}' not found"
            return None
        parsed = parse_relative(value)
        if parsed is None:
            return None          # absolute, urn: or logical references are not ours to resolve
        rtype, rid, _ = parsed
        if not self.registry.is_resource_type(rtype):
            return f"reference '{value}' names an unknown resource type"
        key = (rtype, rid)
        if key not in cache:
            cache[key] = unit.exists(rtype, rid)
        if not cache[key]:
            return f"reference '{value}' does not resolve: no such resource on this server"
        return None


def _within(entry: str, type: str, path: str) -> str:
    """A resource's element ``path`` (``Observation.status``) as a path inside the Bundle
    entry ``entry`` (``Bundle.entry[2].resource.status``)."""
    if path.startswith(entry):
        return path
    if path == type:
        return f"{entry}.resource"
    return f"{entry}.resource.{path.removeprefix(type + '.')}"


def apply_json_patch(resource: dict, patch: Any) -> dict:
    """Apply an RFC 6902 JSON Patch (https://hl7.org/fhir/R4/http.html#patch)."""
    if not isinstance(patch, list):
        raise errors.Invalid("a JSON Patch must be a JSON array of operations", "Patch")
    try:
        patched = jsonpatch.apply_patch(resource, patch)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise errors.Unprocessable(f"JSON Patch test failed: {exc}", "Patch") from None
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
        raise errors.Invalid(f"JSON Patch cannot be applied: {exc}", "Patch") from None
    if not isinstance(patched, dict):
        raise errors.Invalid("the patched document must be a resource (a JSON object), not "
                             f"{type(patched).__name__}", "Patch")
    return patched


def _permit(unit: Any, type: str, id: str | None, resource: dict | None) -> None:
    """A write that changes nothing is still checked by the access guard (when the unit
    is guarded, as every unit a request uses is)."""
    permit = getattr(unit, "permit", None)
    if permit is not None:
        permit(type, id, resource)


def _same_content(old: dict, new: dict) -> bool:
    """True when an update would change nothing but meta (no new version is made)."""
    strip = ("meta",)
    a = {k: v for k, v in old.items() if k not in strip}
    b = {k: v for k, v in new.items() if k not in strip}
    old_meta = {k: v for k, v in (old.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    new_meta = {k: v for k, v in (new.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    return a == b and old_meta == new_meta
