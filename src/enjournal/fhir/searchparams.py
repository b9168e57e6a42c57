"""The search parameter registry: the 1,375 official R4 parameters plus custom ones.

A parameter applies to the resource types in its ``base``; ``Resource`` and
``DomainResource`` params (``_id``, ``_lastUpdated``, ``_tag``, ``_text``, ...) apply to every
(domain) resource type. ``extract`` turns a resource into the index values for all its
parameters with extractors compiled once per type (``extract.py``).
See https://hl7.org/fhir/R4/search.html and https://hl7.org/fhir/R4/searchparameter.html.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources

import fhirkit

from .. import errors
from .extract import NOT_INDEXED, CompileJob, TypeExtractor, build_extractor, compile_param
from .fhirpath_compile import Compiler, ElementTypes, Unsupported

TYPES = ("number", "date", "string", "token", "reference", "composite", "quantity", "uri", "special")
_STATUSES = ("draft", "active", "retired", "unknown")
_CODE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-.]*$")
_ABSTRACT = ("Resource", "DomainResource")


@dataclass(frozen=True)
class SearchParam:
    code: str                     # "subject"
    type: str                     # number|date|string|token|reference|composite|quantity|uri|special
    base: tuple[str, ...]         # resource types ("Resource"/"DomainResource" mean all)
    expression: str | None        # FHIRPath as in the definition
    url: str
    targets: tuple[str, ...] = ()                  # reference target types
    components: tuple[tuple[str, str], ...] = ()   # composite: (component definition url, relative expression)
    modifiers: tuple[str, ...] = ()
    comparators: tuple[str, ...] = ()
    name: str = ""
    description: str = ""

    @classmethod
    def from_resource(cls, sp: dict) -> "SearchParam":
        """From a SearchParameter resource (or its stripped package form)."""
        return cls(
            code=sp["code"], type=sp["type"], base=tuple(sp["base"]), expression=sp.get("expression"),
            url=sp["url"], targets=tuple(sp.get("target", ())),
            components=tuple((c["definition"], c["expression"]) for c in sp.get("component", ())),
            modifiers=tuple(sp.get("modifier", ())), comparators=tuple(sp.get("comparator", ())),
            name=sp.get("name", ""), description=(sp.get("description") or "").strip().split("\n")[0][:160])


@functools.cache
def _package_data() -> tuple[tuple[SearchParam, ...], ElementTypes, frozenset[str]]:
    data = resources.files("enjournal.fhir") / "data"
    params = json.loads(gzip.decompress((data / "search-parameters.json.gz").read_bytes()))
    types = json.loads(gzip.decompress((data / "element-types.json.gz").read_bytes()))
    return (tuple(SearchParam.from_resource(p) for p in params), ElementTypes(types["types"]),
            frozenset(types["nonDomainResources"]))


class Registry:
    """Search parameters by (resource type, code) and by url, with compiled extraction.

    Immutable: ``with_custom`` returns a new registry, so a store can swap registries atomically.
    """

    def __init__(self, official: tuple[SearchParam, ...], custom: tuple[SearchParam, ...],
                 elements: ElementTypes, non_domain: frozenset[str]):
        self._official, self._custom = official, custom
        self._elements, self._non_domain = elements, non_domain
        self._types = tuple(fhirkit.RESOURCE_TYPES)
        self._type_set = frozenset(self._types)
        self._compiler = Compiler(elements, self._type_set.__contains__)
        self._index: dict[str, dict[str, SearchParam]] = {}
        self._urls: dict[str, SearchParam] = {}
        for p in official + custom:           # custom last: it replaces the official (base, code)
            self._urls[p.url] = p
            for b in p.base:
                self._index.setdefault(b, {})[p.code] = p
        self._for_type: dict[str, dict[str, SearchParam]] = {}
        self._extractors: dict[str, TypeExtractor] = {}

    @classmethod
    def default(cls) -> "Registry":
        """The official R4 parameters (cached: one shared, immutable instance)."""
        return _default_registry()

    @functools.cached_property
    def fingerprint(self) -> str:
        """A hash of every definition, so a store notices a change and reindexes."""
        h = hashlib.sha256()
        for p in sorted(self._official + self._custom, key=lambda p: (p.url, p.base)):
            h.update(repr((p.url, p.code, p.type, p.base, p.expression, p.targets, p.components)).encode())
        return h.hexdigest()[:32]

    def resource_types(self) -> tuple[str, ...]:
        return self._types

    def is_resource_type(self, name: str) -> bool:
        """Whether ``name`` is an R4 resource type (a set lookup: it runs on every request)."""
        return name in self._type_set

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        own = self._index.get(resource_type)
        if own and code in own:
            return own[code]
        if resource_type != "Resource" and resource_type not in self._non_domain:
            p = self._index.get("DomainResource", {}).get(code)
            if p is not None:
                return p
        return self._index.get("Resource", {}).get(code)

    def for_type(self, resource_type: str) -> dict[str, SearchParam]:
        """Every parameter that applies to ``resource_type``, by code (a fresh dict)."""
        params = self._for_type.get(resource_type)
        if params is None:
            params = dict(self._index.get("Resource", {}))
            if resource_type != "Resource" and resource_type not in self._non_domain:
                params.update(self._index.get("DomainResource", {}))
            if resource_type not in _ABSTRACT:
                params.update(self._index.get(resource_type, {}))
            self._for_type[resource_type] = params
        return dict(params)

    def by_url(self, url: str) -> SearchParam | None:
        return self._urls.get(url)

    def params(self) -> tuple[SearchParam, ...]:
        """All definitions, official then custom (a replaced official one is still listed)."""
        return self._official + self._custom

    def extract(self, resource: dict) -> list[tuple[str, object]]:
        """``(code, index value)`` for every parameter of ``resource["resourceType"]``."""
        resource_type = resource.get("resourceType")
        extractor = self._extractors.get(resource_type)
        if extractor is None:
            extractor = self.extractor(resource_type)
        return extractor(resource)

    def extractor(self, resource_type: str) -> TypeExtractor:
        """The compiled extractor for a type (``.fallbacks`` lists branches left to fhirpathpy)."""
        extractor = self._extractors.get(resource_type)
        if extractor is None:
            if resource_type not in self._type_set:
                raise errors.Invalid(f"unknown resource type {resource_type!r}", "resourceType")
            extractor = build_extractor(resource_type, self.for_type(resource_type).values(),
                                        self._compiler, self.by_url)
            self._extractors[resource_type] = extractor
        return extractor

    def with_custom(self, search_parameter: dict) -> "Registry":
        """A new registry including a custom SearchParameter resource.

        Only ``active`` parameters are in effect: another status removes an earlier version
        with the same url. Raises ``errors.Invalid`` (with a ``SearchParameter.*`` expression)
        when the definition is unusable.
        """
        param = _validate(search_parameter, self)
        custom = tuple(p for p in self._custom if p.url != param.url)
        if search_parameter["status"] == "active":
            custom += (param,)
        return Registry(self._official, custom, self._elements, self._non_domain)

    def compile_report(self) -> dict[str, object]:
        """How each definition compiles: ``fast`` (plain walkers only), ``fallback`` (some
        branch left to fhirpathpy, listed in ``fallback_params``) or ``not_indexed``."""
        report = {"fast": 0, "fallback": 0, "not_indexed": 0, "fallback_params": {}}
        for p in self.params():
            if not p.expression or p.type in NOT_INDEXED:
                report["not_indexed"] += 1
                continue
            fallbacks = []
            for base in p.base:
                job = CompileJob("Patient" if base in _ABSTRACT else base, self._compiler, self.by_url)
                try:
                    compile_param(p, job)
                except Unsupported as e:
                    job.fallbacks.append(str(e))
                fallbacks += job.fallbacks
            report["fallback" if fallbacks else "fast"] += 1
            if fallbacks:
                report["fallback_params"][p.url] = fallbacks
        return report


@functools.cache
def _default_registry() -> Registry:
    official, elements, non_domain = _package_data()
    return Registry(official, (), elements, non_domain)


def _validate(sp: dict, registry: Registry) -> SearchParam:
    def need(cond, message: str, where: str) -> None:
        if not cond:
            raise errors.Invalid(message, f"SearchParameter.{where}")

    need(isinstance(sp, dict) and sp.get("resourceType") == "SearchParameter",
         "not a SearchParameter resource", "resourceType")
    need(sp.get("status") in _STATUSES, f"status must be one of {', '.join(_STATUSES)}", "status")
    need(isinstance(sp.get("url"), str) and sp["url"], "a SearchParameter needs a url", "url")
    code = sp.get("code")
    need(isinstance(code, str) and _CODE.match(code), f"invalid code {code!r}", "code")
    need(sp.get("type") in TYPES, f"type must be one of {', '.join(TYPES)}", "type")
    need(sp["type"] != "special", "custom parameters of type special cannot be indexed", "type")
    base = sp.get("base")
    known = set(registry.resource_types()) | set(_ABSTRACT)
    need(isinstance(base, list) and base and all(b in known for b in base),
         f"base must list resource types, not {base!r}", "base")
    targets = sp.get("target", [])
    need(isinstance(targets, list) and all(t in known for t in targets),
         f"target must list resource types, not {targets!r}", "target")
    need(isinstance(sp.get("expression"), str) and sp["expression"].strip(),
         "a custom SearchParameter needs an expression", "expression")
    components = sp.get("component", [])
    if sp["type"] == "composite":
        need(isinstance(components, list) and len(components) >= 2,
             "a composite parameter needs at least two components", "component")
        for c in components:
            need(isinstance(c, dict) and registry.by_url(c.get("definition", "")) is not None,
                 f"unknown component definition {c.get('definition') if isinstance(c, dict) else c!r}",
                 "component")
            need(isinstance(c.get("expression"), str), "a component needs an expression", "component")
    try:
        param = SearchParam.from_resource(sp)
    except (KeyError, TypeError) as e:
        raise errors.Invalid(f"malformed SearchParameter: {e}", "SearchParameter") from e
    _check_expression(param, registry)
    return param


def _check_expression(param: SearchParam, registry: Registry) -> None:
    """Compile the expression for every base; it must compile (or be valid FHIRPath for the
    fallback engine) and be able to yield a value for at least one base."""
    any_walker = False
    for base in param.base:
        job = CompileJob("Patient" if base in _ABSTRACT else base, registry._compiler, registry.by_url, strict=True)
        try:
            any_walker |= bool(compile_param(param, job))
        except Exception as e:        # ours (Unsupported, SyntaxError) or fhirpathpy's own errors
            raise errors.Invalid(f"expression {param.expression!r} cannot be used on {base}: {e}",
                                 "SearchParameter.expression") from e
    if not any_walker:
        raise errors.Invalid(f"expression {param.expression!r} selects no {param.type} values on "
                             f"{', '.join(param.base)}", "SearchParameter.expression")
