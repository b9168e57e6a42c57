"""Required terminology bindings: a coded element whose binding strength is *required*
must hold a code from its value set (https://hl7.org/fhir/R4/terminologies.html#required).

``check(resource)`` walks a resource (and every resource inside it: ``contained``,
``Bundle.entry.resource``, ``Parameters.parameter.resource``, each by its own type) and
returns an ``errors.Issue`` (code "code-invalid") for each code outside its value set:

- ``code``: the value must be one of the value set's codes, of any of its systems (a bare
  code carries no system);
- ``Coding``: when its system is one the value set draws on, the code must be one of that
  system's codes; a Coding without a system is checked as a bare code; a Coding of
  another system is outside the value set;
- ``CodeableConcept``: at least one of its codings must be in the value set (by the Coding
  rule), and one with only ``text`` is outside it (as HAPI's validator has it); one with
  neither (extensions only) is not checked.

The value sets are expanded ahead of time from the R4 package
(``data/required-bindings.json.gz``, see ``data/README.md``); value sets that cannot be
enumerated from it (MIME types, UCUM units, currencies, a LOINC answer list) are not
checked. The element datatypes come from ``data/element-types.json.gz``. Both are read
once, on first use, and turned into one lookup table per structure, so a check is a walk
over the resource's keys with dict lookups (see docs/validation.md for the cost).
"""
from __future__ import annotations

import functools
import gzip
import json
from importlib import resources

import fhirkit

from .. import errors

# Step kinds: what the element's value is checked as.
_NONE, _CODE, _CODING, _CONCEPT = 0, 1, 2, 3
_KINDS = {"code": _CODE, "string": _CODE, "uri": _CODE, "Coding": _CODING, "CodeableConcept": _CONCEPT}

_EXTENSIONS = ("extension", "modifierExtension")
# The resources that are not DomainResources have no extensions of their own.
_NO_EXTENSIONS = frozenset({"Bundle", "Binary", "Parameters"})

# A contained / entry / parameter resource: the walk goes on by its own resourceType.
_RESOURCE = object()

# Deeper than fhirkit reads (about 256 levels) is reported by the structure check; the
# walk stops well before Python's recursion limit.
_MAX_DEPTH = 300

# Codes named in a message: all of them up to _SHOWN, else the first _SHORT and "...".
_SHOWN, _SHORT = 6, 4


class ValueSet:
    """An expanded value set: its codes per system, in definition order."""

    __slots__ = ("url", "systems", "codes", "listed")

    def __init__(self, url: str, systems: list[list]):
        self.url = url
        self.systems: dict[str, frozenset[str]] = {s: frozenset(c) for s, c in systems}
        self.codes: frozenset[str] = frozenset(c for _, cs in systems for c in cs)
        self.listed = tuple(dict.fromkeys(c for _, cs in systems for c in cs))

    def has(self, code: str) -> bool:
        """A bare code of the value set. A code with surrounding whitespace is judged by its
        trimmed text: the whitespace is the structure check's issue, reported once."""
        return code in self.codes or code.strip() in self.codes

    def has_coding(self, coding: dict) -> bool:
        """The Coding rule (``code`` a string): a code of its system, or of any system when
        it has none."""
        code, system = coding["code"], coding.get("system")
        codes = self.codes if system is None else self.systems.get(system)
        return codes is not None and (code in codes or code.strip() in codes)

    def shown(self, system: str | None = None) -> str:
        codes = self.listed
        if system in self.systems and len(self.systems) > 1:
            codes = [c for c in codes if c in self.systems[system]]
        if len(codes) > _SHOWN:
            codes = [*codes[:_SHORT], "..."]
        return ", ".join(codes)


# A step: (kind, value set or None, child plan / _RESOURCE / None, gate: the child plan's
# keys as a frozenset, or None when the child is not a plan). A plan maps the JSON
# keys of one element (or resource) to steps; keys not in it lead to no binding.
Plan = dict


class Bindings:
    """The required-binding checker for every R4 resource type, built from the package
    data tables (``types``: element-types.json.gz ``types``; ``data``: the content of
    required-bindings.json.gz) and the names of the resource types."""

    def __init__(self, types: dict[str, dict], data: dict, resource_types: frozenset[str]):
        self.value_sets = {url: ValueSet(url, systems) for url, systems in data["valueSets"].items()}
        self.skipped: dict[str, str] = {url: why for url, (why, _) in data["skipped"].items()}
        self._bound = data["bindings"]
        self._kids: dict[str, list[tuple[str, str, list | str]]] = {}
        for struct, elements in types.items():
            for rel, element_types in elements.items():
                parent, _, name = rel.rpartition(".")
                self._kids.setdefault(f"{struct}.{parent}" if parent else struct, []).append(
                    (name, rel, element_types))
        self._plans: dict[str, Plan] = {}
        # Every primitive's "_name" sibling holds only extensions.
        self._element: Plan = {}
        self._plans["#Element"] = self._element
        for ctx in list(self._kids):
            self._plan(ctx)
        self._element["extension"] = (_NONE, None, self._plan("Extension"))
        self._prune()
        self.roots: dict[str, Plan] = {t: self._plans[t] for t in resource_types if t in self._plans}

    # ---- building ------------------------------------------------------------------------

    def _plan(self, ctx: str) -> Plan:
        plan = self._plans.get(ctx)
        if plan is not None:
            return plan
        plan = self._plans[ctx] = {}           # registered first: structures nest recursively
        struct = ctx.split(".", 1)[0]
        bound = self._bound.get(struct, {})
        for name, rel, element_types in self._kids.get(ctx, ()):
            if isinstance(element_types, str):  # contentReference "#Questionnaire.item"
                plan[name] = (_NONE, None, self._plan(element_types.lstrip("#")))
                continue
            binding = bound.get(rel)
            value_set = self.value_sets[binding[1]] if binding else None
            choice = name.endswith("[x]")
            for t in element_types:
                key = name[:-3] + t[0].upper() + t[1:] if choice else name
                kind = _KINDS.get(t, _NONE) if value_set else _NONE
                if t == "Resource":
                    child = _RESOURCE
                elif f"{ctx}.{name}" in self._kids:          # backbone element
                    child = self._plan(f"{ctx}.{name}")
                elif t in self._kids:
                    child = self._plan(t)
                else:
                    child = None
                plan[key] = (kind, value_set if kind else None, child)
                if t[:1].islower():
                    plan["_" + key] = (_NONE, None, self._element)
        if ctx != struct or struct not in _NO_EXTENSIONS:
            for key in _EXTENSIONS:      # left out of element-types: they are everywhere
                plan[key] = (_NONE, None, self._plan("Extension"))
        return plan

    def _prune(self) -> None:
        """Drop the steps that can never reach a binding, so the walk skips those subtrees."""
        useful: set[int] = set()
        changed = True
        while changed:
            changed = False
            for plan in self._plans.values():
                if id(plan) in useful:
                    continue
                if any(kind or child is _RESOURCE or (child is not None and id(child) in useful)
                       for kind, _, child in plan.values()):
                    useful.add(id(plan))
                    changed = True
        for plan in self._plans.values():
            for key in [k for k, (kind, _, child) in plan.items()
                        if not kind and child is not _RESOURCE and (child is None or id(child) not in useful)]:
                del plan[key]
        # Most elements hold none of the keys that lead to a binding (a Reference with only
        # "reference", a Coding without extensions): the walk enters an element only when
        # it shares a key with the element's plan, a test made in C (``isdisjoint``).
        for plan in self._plans.values():
            for key, (kind, value_set, child) in plan.items():
                gate = frozenset(child) if type(child) is dict else None
                plan[key] = (kind, value_set, child, gate)

    # ---- checking ------------------------------------------------------------------------

    def check(self, resource: dict) -> list[errors.Issue]:
        """The required-binding problems of ``resource`` (parsed FHIR JSON), as Issues with
        code "code-invalid"; an empty list when every bound code is in its value set."""
        issues: list[errors.Issue] = []
        resource_type = resource.get("resourceType")
        plan = self.roots.get(resource_type) if type(resource_type) is str else None
        if plan is not None:
            self._walk(resource, plan, (None, resource_type, None), issues, 0)
        return issues

    def _walk(self, obj: dict, plan: Plan, path: tuple, issues: list, depth: int) -> None:
        # The path is a linked list of (parent, key, index or None), turned into text only
        # for an issue: most resources have none.
        if depth > _MAX_DEPTH:
            return
        for key, value in obj.items():
            step = plan.get(key)
            if step is None:
                continue
            if type(value) is list:
                for i, item in enumerate(value):
                    self._value(step, item, (path, key, i), issues, depth)
            else:
                self._value(step, value, (path, key, None), issues, depth)

    def _value(self, step: tuple, value: object, where: tuple, issues: list, depth: int) -> None:
        """One value of a bound or gated element: its code checked, its children walked."""
        kind, value_set, child, gate = step
        if kind == _CODE:
            if type(value) is str and value not in value_set.codes and not value_set.has(value):
                issues.append(_code_issue(value, value_set, where))
        elif kind:
            self._check(kind, value_set, value, where, issues)
        if type(value) is dict:
            if gate is not None:
                if not gate.isdisjoint(value):
                    self._walk(value, child, where, issues, depth + 1)
            elif child is _RESOURCE:
                self._resource(value, where, issues, depth)

    def _resource(self, obj: dict, path: tuple, issues: list, depth: int) -> None:
        """A resource inside another (contained, Bundle entry, Parameters): by its own type."""
        resource_type = obj.get("resourceType")
        plan = self.roots.get(resource_type) if type(resource_type) is str else None
        if plan is not None:
            self._walk(obj, plan, path, issues, depth + 1)

    def _check(self, kind: int, value_set: ValueSet, value, path: tuple, issues: list) -> None:
        """A Coding or CodeableConcept (``code`` is checked in ``_walk``)."""
        if type(value) is not dict:
            return
        if kind == _CODING:
            if type(value.get("code")) is str and not value_set.has_coding(value):
                issues.append(_coding_issue(value, value_set, path))
            return
        codings = value.get("coding")
        coded = [(i, c) for i, c in enumerate(codings) if type(c) is dict and type(c.get("code")) is str] \
            if type(codings) is list else []
        if not coded:
            if "text" in value:            # a concept in words only: not from the value set
                issues.append(_issue(f"no code: a coding from the required value set {value_set.url} "
                                     f"is needed ({value_set.shown()})", path))
            return
        if any(value_set.has_coding(c) for _, c in coded):
            return
        # Point at the coding whose system belongs to the value set (a wrong code of the
        # right system); when none does, the concept as a whole is outside the value set.
        for i, coding in coded:
            system = coding.get("system")
            if system is None or system in value_set.systems:
                issues.append(_coding_issue(coding, value_set, (path, "coding", i)))
                return
        found = ", ".join(f"{c.get('system')}|{c.get('code')}" for _, c in coded)
        issues.append(_issue(f"no coding is from the required value set {value_set.url} "
                             f"({value_set.shown()}); found {found}", path))


def _code_issue(code: str, value_set: ValueSet, path: tuple) -> errors.Issue:
    return _issue(f"{code!r} is not in the required value set {value_set.url} ({value_set.shown()})", path)


def _coding_issue(coding: dict, value_set: ValueSet, path: tuple) -> errors.Issue:
    system, code = coding.get("system"), coding.get("code")
    if system is None or system in value_set.systems:
        return _issue(f"{code!r} is not in the required value set {value_set.url} "
                      f"({value_set.shown(system)})", (path, "code", None))
    return _issue(f"{system}|{code} is not in the required value set {value_set.url}: "
                  f"its codes are from {', '.join(value_set.systems)} ({value_set.shown()})", path)


def _issue(message: str, path: tuple) -> errors.Issue:
    return errors.Issue(message, (_expression(path),), "code-invalid", "error")


def _expression(path: tuple) -> str:
    """(((None, "Patient", None), "telecom", 1), "system", None) -> "Patient.telecom[1].system"."""
    parts = []
    while path is not None:
        path, key, index = path
        if index is not None:
            parts.append(f"{key}[{index}]")
        else:
            parts.append(key)
    return ".".join(reversed(parts))


@functools.cache
def default() -> Bindings:
    """The checker for the shipped R4 package data, built on first use (tens of ms)."""
    data = resources.files("enjournal.fhir") / "data"
    types = json.loads(gzip.decompress((data / "element-types.json.gz").read_bytes()))["types"]
    bound = json.loads(gzip.decompress((data / "required-bindings.json.gz").read_bytes()))
    return Bindings(types, bound, frozenset(fhirkit.RESOURCE_TYPES))


def check(resource: dict) -> list[errors.Issue]:
    """``default().check(resource)``: the required-binding problems of a resource."""
    return default().check(resource)
