"""Parse a FHIR search query string into a plan of typed clauses (pure, no I/O).

Each repeated parameter is ANDed, comma-separated values are ORed
(https://hl7.org/fhir/R4/search.html#combining). Every value is parsed by its parameter
type; anything the server cannot honour raises ``errors.Invalid``/``NotSupported`` naming
the parameter, unless the client asked for lenient handling, in which case the problem is
recorded in ``SearchQuery.warnings`` and the parameter is dropped.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Union

from .. import errors
from . import dates
from .limits import MAX_HOPS, MAX_NUMBER_DIGITS, MAX_PARAMETERS, MAX_VALUES
from .searchparams import Registry, SearchParam

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
RESULT_PARAMS = {"_sort", "_count", "_include", "_revinclude", "_summary", "_elements", "_total",
                 "_offset", "_snapshot", "_format", "_pretty", "_contained", "_containedType", "_totalMethod"}
# DSTU1 comparators, still sent by clients such as fhirclient ({"$gt": ...} -> ">"); HAPI takes them too
_LEGACY_PREFIXES = ((">=", "ge"), ("<=", "le"), (">", "gt"), ("<", "lt"))
ANY = object()   # token system: any system


# ---- typed values -------------------------------------------------------------------

@dataclass(frozen=True)
class TokenQ:
    system: object        # ANY, None (explicitly no system) or a system string
    code: str | None      # None: any code in the system


@dataclass(frozen=True)
class OfTypeQ:
    type_system: str | None
    type_code: str
    value: str


@dataclass(frozen=True)
class StringQ:
    text: str             # as given (for :exact)
    norm: str             # normalised (prefix / contains)


@dataclass(frozen=True)
class RangeQ:
    """date, number and quantity values: a prefix and the search value's implicit range."""
    prefix: str
    value: float
    lo: float
    hi: float
    system: str | None = None     # quantity only
    code: str | None = None
    kind: str = "number"          # date | number | quantity


@dataclass(frozen=True)
class RefQ:
    type: str | None
    id: str | None
    url: str | None = None


@dataclass(frozen=True)
class UriQ:
    uri: str


@dataclass(frozen=True)
class CompositeQ:
    parts: tuple


Value = Union[TokenQ, OfTypeQ, StringQ, RangeQ, RefQ, UriQ, CompositeQ]


# ---- clauses ------------------------------------------------------------------------

@dataclass(frozen=True)
class Leaf:
    """``param[:modifier]=v1,v2``: true when any value matches (or none, when negated)."""
    resource_type: str | None
    param: SearchParam
    modifier: str | None
    values: tuple
    negate: bool = False


@dataclass(frozen=True)
class Missing:
    resource_type: str | None
    param: SearchParam
    missing: bool


@dataclass(frozen=True)
class Chain:
    """``ref.param=v``: resources whose reference ``ref`` points to a ``target_type`` matching ``inner``."""
    resource_type: str
    param: SearchParam
    target_type: str
    inner: "Clause"


@dataclass(frozen=True)
class Has:
    """``_has:Type:ref:param=v``: resources that a ``source_type`` matching ``inner`` refers to via ``ref``."""
    resource_type: str
    source_type: str
    param: SearchParam
    inner: "Clause"


@dataclass(frozen=True)
class AnyOf:
    clauses: tuple


@dataclass(frozen=True)
class AllOf:
    clauses: tuple


@dataclass(frozen=True)
class IdIn:
    ids: tuple


@dataclass(frozen=True)
class LastUpdated:
    values: tuple          # RangeQ on epoch ms


@dataclass(frozen=True)
class TypeIn:
    types: tuple


Clause = Union[Leaf, Missing, Chain, Has, AnyOf, AllOf, IdIn, LastUpdated, TypeIn]


@dataclass(frozen=True)
class SortKey:
    param: SearchParam | None     # None for _id / _lastUpdated
    special: str | None           # "_id" | "_lastUpdated"
    descending: bool


@dataclass(frozen=True)
class Include:
    source_type: str | None       # None: "_include=*" (whatever type the resources are)
    param: SearchParam | None     # None: "*" (every reference parameter)
    target_type: str | None
    iterate: bool
    reverse: bool


@dataclass
class SearchQuery:
    resource_type: str | None
    clauses: list = field(default_factory=list)
    sort: list = field(default_factory=list)
    count: int = 20
    offset: int = 0
    includes: list = field(default_factory=list)
    summary: str | None = None
    elements: tuple | None = None
    total: str = "none"
    snapshot: int | None = None
    warnings: list = field(default_factory=list)
    types: tuple = ()                           # system-level search: _type
    echo: list = field(default_factory=list)    # (name, value) pairs to rebuild the self link


# ---- parsing ------------------------------------------------------------------------

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def parse(resource_type: str | None, params: Iterable[tuple[str, str]], registry: Registry, *,
          lenient: bool = False, default_count: int = 20, max_count: int = 1000) -> SearchQuery:
    """Parse query ``params`` (name, value pairs in order) for a search on ``resource_type``
    (None for a system-level search). The ``limits`` hold whatever the handling: a search of
    more than ``MAX_PARAMETERS`` parameters is refused."""
    q = SearchQuery(resource_type, count=default_count)
    params = list(params)
    if len(params) > MAX_PARAMETERS:
        raise errors.TooCostly(f"the search has {len(params)} parameters; at most {MAX_PARAMETERS} are accepted",
                               params[MAX_PARAMETERS][0][:100])
    for name, value in params:
        if name == "_type":
            q.types += tuple(t for t in value.split(",") if t)
    for t in q.types:
        if not registry.is_resource_type(t):
            _problem(q, lenient, errors.Invalid(f"unknown resource type '{t}' in _type", "_type"))
    for name, value in params:
        try:
            _parse_one(q, name, value, registry, default_count, max_count)
        except (errors.Invalid, errors.NotSupported) as exc:
            _problem(q, lenient, exc)
        else:
            q.echo.append((name, value))
    return q


def _problem(q: SearchQuery, lenient: bool, exc: errors.FhirError) -> None:
    if not lenient:
        raise exc
    q.warnings.append(exc)


def _parse_one(q: SearchQuery, name: str, value: str, registry: Registry,
               default_count: int, max_count: int) -> None:
    base, _, modifier = name.partition(":")
    if name == "_type":
        return
    if base in RESULT_PARAMS:
        _parse_result_param(q, base, modifier, value, registry, max_count)
        return
    if base in ("_format", "_pretty"):
        return
    q.clauses.append(parse_clause(q.resource_type, name, value, registry, q.types))


def _parse_result_param(q: SearchQuery, base: str, modifier: str, value: str,
                        registry: Registry, max_count: int) -> None:
    if base == "_count":
        q.count = min(count_number(value, "_count"), max_count)
    elif base == "_offset":
        q.offset = count_number(value, "_offset")
    elif base == "_snapshot":
        q.snapshot = whole_number(value, "_snapshot")
    elif base == "_total":
        if value not in ("none", "estimate", "accurate"):
            raise errors.Invalid(f"_total must be none, estimate or accurate, not '{value}'", "_total")
        q.total = value
    elif base == "_totalMethod":      # Aidbox's spelling, which fhirpy's count() sends
        if value not in ("count", "estimate", "none"):
            raise errors.Invalid(f"_totalMethod must be count, estimate or none, not '{value}'", "_totalMethod")
        q.total = {"count": "accurate"}.get(value, value)
    elif base == "_summary":
        if value not in ("true", "false", "text", "data", "count"):
            raise errors.Invalid(f"_summary must be true, false, text, data or count, not '{value}'", "_summary")
        q.summary = None if value == "false" else value
    elif base == "_elements":
        q.elements = tuple(e.strip() for e in value.split(",") if e.strip())
    elif base == "_sort":
        q.sort = _parse_sort(q.resource_type, value, registry)
    elif base in ("_include", "_revinclude"):
        if modifier not in ("", "iterate", "recurse"):
            raise errors.Invalid(f"unknown modifier ':{modifier}' on {base}", base)
        q.includes.append(_parse_include(value, registry, iterate=bool(modifier), reverse=base == "_revinclude"))
    elif base in ("_contained", "_containedType"):
        if value not in ("false", "container"):
            raise errors.NotSupported(f"{base}={value} is not supported: contained resources are not searched", base)


MAX_INT = 2**53


def whole_number(value: str, name: str) -> int:
    """A whole-number result parameter; values beyond 2^53 are refused (no SQLite overflow)."""
    try:
        number = int(value)
    except ValueError:
        raise errors.Invalid(f"{name} must be a whole number, not '{value}'", name) from None
    if abs(number) > MAX_INT:
        raise errors.Invalid(f"{name} is too large: {value}", name)
    return number


def count_number(value: str, name: str) -> int:
    """A paging parameter (``_count``, ``_offset``): a whole number, 0 or more. A count
    above the server's maximum is lowered to it (the spec lets a server return fewer), a
    negative one is an error, not clamped."""
    number = whole_number(value, name)
    if number < 0:
        raise errors.Invalid(f"{name} must be 0 or more, not {value}", name)
    return number


def _parse_sort(resource_type: str | None, value: str, registry: Registry) -> list[SortKey]:
    keys = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        desc = item.startswith("-")
        code = item[1:] if desc else item
        if code in ("_id", "_lastUpdated"):
            keys.append(SortKey(None, code, desc))
            continue
        param = registry.get(resource_type, code) if resource_type else None
        if param is None:
            raise errors.Invalid(f"unknown sort parameter '{code}' for {resource_type or 'system search'}", "_sort")
        if param.type == "composite":
            raise errors.NotSupported(f"cannot sort by {param.type} parameter '{code}'", "_sort")
        _check_indexed(param, "_sort")
        keys.append(SortKey(param, None, desc))
    return keys


def _parse_include(value: str, registry: Registry, *, iterate: bool, reverse: bool) -> Include:
    """``Type:param[:target]``, ``Type:*``, or ``*`` alone: every reference parameter of any
    type (https://hl7.org/fhir/R4/search.html#include)."""
    name = "_revinclude" if reverse else "_include"
    if value == "*":
        return Include(None, None, None, iterate, reverse)
    parts = value.split(":")
    if len(parts) not in (2, 3):
        raise errors.Invalid(f"{name} must be Type:parameter[:targetType], not '{value}'", name)
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if not registry.is_resource_type(source):
        raise errors.Invalid(f"unknown resource type '{source}' in {name}", name)
    if target is not None and not registry.is_resource_type(target):
        raise errors.Invalid(f"unknown target type '{target}' in {name}", name)
    if code == "*":
        return Include(source, None, target, iterate, reverse)
    param = registry.get(source, code)
    if param is None or param.type != "reference":
        raise errors.Invalid(f"'{code}' is not a reference search parameter of {source} ({name})", name)
    return Include(source, param, target, iterate, reverse)


def parse_clause(resource_type: str | None, name: str, value: str, registry: Registry,
                 types: tuple = ()) -> Clause:
    """One ``name=value`` search parameter as a clause over ``resource_type``: at most
    ``MAX_HOPS`` reference hops (each ``.`` of a chain and each ``_has:`` level) and
    ``MAX_VALUES`` comma-separated values."""
    hops = name.count(".") + name.count("_has:")
    if hops > MAX_HOPS:
        raise errors.TooCostly(f"'{name[:300]}' takes {hops} reference hops (chains and _has together); at most "
                               f"{MAX_HOPS} are accepted", name[:300])
    if name.startswith("_has:"):
        return _parse_has(resource_type, name, value, registry)
    head, dot, rest = name.partition(".")
    base, _, modifier = head.partition(":")
    modifier = modifier or None
    if base == "_id":
        if modifier is not None:
            raise errors.Invalid(f"modifier ':{modifier}' is not supported on _id", name)
        ids = tuple(v for v in _split_or(value, name) if v)
        for v in ids:
            if not _ID.match(v):
                raise errors.Invalid(f"'{v}' is not a valid resource id", name)
        return IdIn(ids)
    if base == "_lastUpdated":
        return LastUpdated(tuple(_parse_range_value(name, v, "date") for v in _split_or(value, name)))
    if base == "_type":
        return TypeIn(tuple(_split_or(value, name)))
    if resource_type is None and types:
        return _parse_for_types(types, base, name, value, registry)
    param = _lookup(resource_type, base, registry, name)
    if dot:
        return _parse_chain(resource_type, param, modifier, rest, value, registry, name)
    if modifier == "missing":
        if value not in ("true", "false"):
            raise errors.Invalid(f"{name} must be true or false, not '{value}'", name)
        return Missing(resource_type, param, value == "true")
    _check_modifier(param, modifier, name, registry)
    values = tuple(_parse_value(param, modifier, v, name, registry, resource_type) for v in _split_or(value, name))
    if not values:
        raise errors.Invalid(f"search parameter '{name}' has no value", name)
    negate = modifier == "not"
    return Leaf(resource_type, param, None if negate else modifier, values, negate)


def _parse_for_types(types: tuple, code: str, name: str, value: str, registry: Registry) -> Clause:
    """A system-level search with ``_type``: the parameter must apply to every listed type
    (https://hl7.org/fhir/R4/search.html#all); types whose definitions differ (Patient-name,
    Practitioner-name) each get their own clause, limited to those types."""
    by_url: dict[str, list[str]] = {}
    for t in types:
        param = registry.get(t, code)
        if param is None:
            raise errors.Invalid(f"unknown search parameter '{code}' for {t} (a parameter in a search "
                                 "with _type must apply to every listed type)", name)
        by_url.setdefault(param.url, []).append(t)
    groups = list(by_url.values())
    if len(groups) == 1:
        return parse_clause(groups[0][0], name, value, registry)
    return AnyOf(tuple(AllOf((TypeIn(tuple(ts)), parse_clause(ts[0], name, value, registry))) for ts in groups))


def _lookup(resource_type: str | None, code: str, registry: Registry, name: str) -> SearchParam:
    if resource_type is None:
        param = registry.get("Resource", code)
        if param is None:
            raise errors.Invalid(f"unknown search parameter '{code}' for a system-level search "
                                 "(give _type to search parameters of a type)", name)
        _check_indexed(param, name)
        return param
    param = registry.get(resource_type, code)
    if param is None:
        raise errors.Invalid(f"unknown search parameter '{code}' for {resource_type}", name)
    _check_indexed(param, name)
    return param


def _check_indexed(param: SearchParam, name: str) -> None:
    """Special parameters (near) and those without an expression (_text, _content, _query) have
    no index: searching them would silently match nothing, so say so instead."""
    if param.type == "special" or not param.expression:
        raise errors.NotSupported(f"search parameter '{param.code}' is not supported by this server", name)


_MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"text", "not", "missing", "of-type"},
    "reference": {"missing", "identifier"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "uri": {"missing", "above", "below"},
    "composite": {"missing"},
}


def _check_modifier(param: SearchParam, modifier: str | None, name: str, registry: Registry) -> None:
    if modifier is None:
        return
    allowed = _MODIFIERS.get(param.type, set())
    if modifier in allowed:
        return
    if param.type == "reference" and registry.is_resource_type(modifier):
        return
    if modifier in ("in", "not-in", "above", "below") and param.type == "token":
        raise errors.NotSupported(f"modifier ':{modifier}' needs a terminology service, which this server "
                                  f"does not have ({name})", name)
    raise errors.Invalid(f"modifier ':{modifier}' is not valid on {param.type} parameter '{param.code}'", name)


def _split_or(value: str, name: str = "", limit: int = MAX_VALUES) -> list[str]:
    """Split on commas not escaped with a backslash, then unescape ``\\,`` ``\\$`` ``\\|``;
    at most ``limit`` values."""
    if value.count(",") >= limit:
        parts = _split_unescaped(value, ",")
        if len(parts) > limit:
            raise errors.TooCostly(f"{name or 'a search parameter'} has {len(parts)} values; at most "
                                   f"{limit} are accepted (search in several requests)", name or None)
    parts, cur, i = [], [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            cur.append(value[i:i + 2])
            i += 2
            continue
        if ch == ",":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def _split_unescaped(value: str, sep: str) -> list[str]:
    parts, cur, i = [], [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            cur.append(value[i:i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(value: str) -> str:
    return re.sub(r"\\([,$|\\])", r"\1", value)


def _parse_value(param: SearchParam, modifier: str | None, raw: str, name: str,
                 registry: Registry, resource_type: str | None) -> Value:
    from .index_values import normalise
    kind = param.type
    if kind == "string":
        text = _unescape(raw)
        return StringQ(text, normalise(text))
    if kind == "token":
        if modifier == "text":
            text = _unescape(raw)
            return StringQ(text, normalise(text))
        if modifier == "of-type":
            parts = [_unescape(p) for p in _split_unescaped(raw, "|")]
            if len(parts) != 3 or not parts[1] or not parts[2]:
                raise errors.Invalid(f"{name} must be system|code|value, not '{raw}'", name)
            return OfTypeQ(parts[0] or None, parts[1], parts[2])
        return _parse_token(raw, name)
    if kind in ("date", "number", "quantity"):
        return _parse_range_value(name, raw, kind)
    if kind == "reference":
        if modifier == "identifier":
            return _parse_token(raw, name)
        return _parse_reference(param, modifier, _unescape(raw), name, registry)
    if kind == "uri":
        if not raw:
            raise errors.Invalid(f"{name} needs a uri", name)
        return UriQ(_unescape(raw))
    if kind == "composite":
        return _parse_composite(param, raw, name, registry)
    raise errors.NotSupported(f"search parameter type '{kind}' is not supported ({name})", name)


def _parse_token(raw: str, name: str) -> TokenQ:
    parts = _split_unescaped(raw, "|")
    if len(parts) == 1:
        code = _unescape(parts[0])
        if not code:
            raise errors.Invalid(f"{name} needs a code", name)
        return TokenQ(ANY, code)
    if len(parts) != 2:
        raise errors.Invalid(f"{name} must be [system|]code, not '{raw}'", name)
    system, code = _unescape(parts[0]), _unescape(parts[1])
    if not system and not code:
        raise errors.Invalid(f"{name} needs a system or a code", name)
    return TokenQ(system or None, code or None)


def _split_prefix(raw: str) -> tuple[str, str]:
    if len(raw) > 2 and raw[:2] in PREFIXES:
        return raw[:2], raw[2:]
    for legacy, prefix in _LEGACY_PREFIXES:
        if raw.startswith(legacy):
            return prefix, raw[len(legacy):]
    return "eq", raw


def _parse_range_value(name: str, raw: str, kind: str) -> RangeQ:
    prefix, body = _split_prefix(raw)
    if kind == "date":
        rng = dates.parse_range(body)
        if rng is None:
            raise errors.Invalid(f"'{body}' is not a valid date for {name} "
                                 "(use YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss][Z|+hh:mm])", name)
        return RangeQ(prefix, float(rng[0]), rng[0], rng[1], kind="date")
    system = code = None
    if kind == "quantity":
        parts = _split_unescaped(body, "|")
        if len(parts) not in (1, 3):
            raise errors.Invalid(f"{name} must be [prefix]number[|system|code], not '{raw}'", name)
        body = parts[0]
        if len(parts) == 3:
            system = _unescape(parts[1]) or None
            code = _unescape(parts[2]) or None
    if not _NUMBER.match(body):
        raise errors.Invalid(f"'{body[:100]}' is not a number ({name})", name)
    digits = sum(1 for ch in body.lower().partition("e")[0] if ch.isdigit())
    if digits > MAX_NUMBER_DIGITS:
        raise errors.Invalid(f"the number in {name} has {digits} digits; at most {MAX_NUMBER_DIGITS} are accepted",
                             name)
    value = float(body)
    underflow = value == 0 and body.lower().partition("e")[0].strip("+-0.") != ""
    if not math.isfinite(value) or abs(value) > 1e300 or underflow:
        raise errors.Invalid(f"'{body}' is out of range ({name})", name)
    lo, hi = _implicit_range(body, value)
    return RangeQ(prefix, value, lo, hi, system, code, kind)


def _implicit_range(text: str, value: float) -> tuple[float, float]:
    """Half a unit of the last significant digit either side: ``100`` -> [99.5, 100.5)."""
    mantissa, _, exponent = text.lower().partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    power = (int(exponent) if exponent else 0) - decimals
    step = 10.0 ** max(-300, min(300, power))
    lo, hi = value - step / 2, value + step / 2
    # beyond a float's precision (17 significant digits) the half step vanishes: keep the
    # range around the value non-empty
    return min(lo, value), max(hi, math.nextafter(value, math.inf))


def _parse_reference(param: SearchParam, modifier: str | None, raw: str, name: str,
                     registry: Registry) -> RefQ:
    if not raw:
        raise errors.Invalid(f"{name} needs a reference", name)
    type_ = modifier if modifier and modifier[0].isupper() else None
    if "://" in raw or raw.startswith("urn:"):
        m = re.search(r"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$", raw)
        if m and registry.is_resource_type(m.group(1)):
            return RefQ(m.group(1), m.group(2), raw)
        return RefQ(None, None, raw.split("|")[0])
    parts = raw.split("/")
    if len(parts) >= 2 and registry.is_resource_type(parts[0]):
        if type_ and type_ != parts[0]:
            raise errors.Invalid(f"{name}: type modifier {type_} does not match reference {raw}", name)
        type_, ident = parts[0], parts[1]
    elif len(parts) == 1:
        ident = parts[0]
    else:
        raise errors.Invalid(f"'{raw}' is not a valid reference for {name}", name)
    if not _ID.match(ident):
        raise errors.Invalid(f"'{ident}' is not a valid resource id ({name})", name)
    if type_ and param.targets and type_ not in param.targets and "Resource" not in param.targets:
        raise errors.Invalid(f"{param.code} cannot refer to {type_} (allowed: {', '.join(param.targets)})", name)
    if type_ is None and len(param.targets) == 1:
        type_ = param.targets[0]
    return RefQ(type_, ident)


def _parse_composite(param: SearchParam, raw: str, name: str, registry: Registry) -> CompositeQ:
    pieces = _split_unescaped(raw, "$")
    if len(pieces) != len(param.components):
        raise errors.Invalid(f"{name} needs {len(param.components)} values separated by $, not '{raw}'", name)
    parts = []
    for (url, _expr), piece in zip(param.components, pieces):
        comp = registry.by_url(url)
        if comp is None:
            raise errors.NotSupported(f"component {url} of {name} is unknown", name)
        parts.append(_parse_value(comp, None, piece, name, registry, None))
    return CompositeQ(tuple(parts))


def _parse_chain(resource_type: str | None, param: SearchParam, modifier: str | None, rest: str,
                 value: str, registry: Registry, name: str) -> Clause:
    if resource_type is None:
        raise errors.NotSupported("chained parameters need a resource type", name)
    if param.type != "reference":
        raise errors.Invalid(f"'{param.code}' is not a reference parameter, so it cannot be chained", name)
    if modifier and not registry.is_resource_type(modifier):
        raise errors.Invalid(f"'{modifier}' is not a resource type ({name})", name)
    targets = [modifier] if modifier else [t for t in param.targets if t != "Resource"]
    inner_code = rest.partition(".")[0].partition(":")[0]
    chains = []
    for target in targets:
        if inner_code in ("_id", "_lastUpdated") or registry.get(target, inner_code) is not None:
            inner = parse_clause(target, rest, value, registry)
            chains.append(Chain(resource_type, param, target, inner))
    if not chains:
        raise errors.Invalid(f"'{inner_code}' is not a search parameter of {' or '.join(targets) or 'the target'} "
                             f"({name})", name)
    return chains[0] if len(chains) == 1 else AnyOf(tuple(chains))


def _parse_has(resource_type: str | None, name: str, value: str, registry: Registry) -> Clause:
    if resource_type is None:
        raise errors.NotSupported("_has needs a resource type", name)
    parts = name.split(":", 3)
    if len(parts) != 4 or not all(parts[1:]):
        raise errors.Invalid(f"_has must be _has:Type:reference:parameter, not '{name}'", name)
    _, source, ref_code, rest = parts
    if not registry.is_resource_type(source):
        raise errors.Invalid(f"unknown resource type '{source}' in {name}", name)
    ref = registry.get(source, ref_code)
    if ref is None or ref.type != "reference":
        raise errors.Invalid(f"'{ref_code}' is not a reference parameter of {source} ({name})", name)
    if ref.targets and resource_type not in ref.targets and "Resource" not in ref.targets:
        raise errors.Invalid(f"{source}.{ref_code} cannot refer to {resource_type} ({name})", name)
    inner = parse_clause(source, rest, value, registry)
    return Has(resource_type, source, ref, inner)
