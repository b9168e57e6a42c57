"""Turn one FHIR element into the index values of a search parameter type.

``leaf(param_type, datatype)`` picks a converter by the element's declared FHIR datatype
(the compiled fast path); ``by_shape(param_type)`` reads the JSON shape instead, for values
a FHIRPath engine returns and for datatypes without a dedicated converter. Converters have
the walker signature ``(value, root, out)`` and append to ``out``.
See https://hl7.org/fhir/R4/search.html#ptypes for what each type indexes.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from functools import lru_cache

from . import dates
from .index_values import (DATE_MAX, DATE_MIN, DateRange, IdentifierOfType, Number, Quantity,
                           Reference, String, Token, Uri, normalise)

_INF = float("inf")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_TYPE = re.compile(r"^[A-Z][A-Za-z]+$")
_TEXT_TYPES = frozenset({"string", "markdown", "code", "id", "uri", "url", "canonical", "oid", "uuid",
                         "date", "dateTime", "instant", "time", "base64Binary", "xhtml"})
_NUMBER_TYPES = frozenset({"decimal", "integer", "positiveInt", "unsignedInt", "integer64"})
_QUANTITY_TYPES = frozenset({"Quantity", "Age", "Duration", "Distance", "Count", "SimpleQuantity", "MoneyQuantity"})
_CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})


# JSON numbers: ``jsonio.loads`` gives ``Decimal`` for those a float would change (``72.50``,
# ``1e3``), so FHIR decimal precision survives. ``bool`` is an ``int`` subclass but not a number,
# hence exact type tests (one set lookup, fast on the write path), never ``isinstance``.
_NUMERIC = frozenset((int, float, Decimal))
_PRIMITIVE = frozenset((str, bool, int, float, Decimal))


def _float(v) -> float | None:
    """A JSON number as a float (index values hold floats); None for anything else and NaN."""
    if type(v) in _NUMERIC:
        try:
            f = float(v)
        except OverflowError:          # an integer beyond the float range
            return _INF if v > 0 else -_INF
        if f == f:
            return f
    return None


def _str(d: dict, key: str) -> str | None:
    """``d[key]`` when it is a string: index values stay hashable whatever the input holds."""
    x = d.get(key)
    return x if type(x) is str else None


def _items(x) -> list | tuple:
    return x if type(x) is list else () if x is None else (x,)


# ---- string ---------------------------------------------------------------------------

# Both are pure and see the same texts and timestamps again and again (displays, an
# encounter's time on all its observations), so caching them is most of extraction's speed.
_normalise = lru_cache(maxsize=65536)(normalise)
_SECOND = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.(\d{1,6}))?(?:Z|[+-]\d\d:\d\d)$")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)


@lru_cache(maxsize=65536)
def _date_range(text: str) -> tuple[int, int] | None:
    """``dates.parse_range``, through the C ``fromisoformat`` for the common machine-written
    shape (second precision with a zone): several times faster than the general parser."""
    m = _SECOND.match(text)
    if m is None:
        return dates.parse_range(text)
    try:
        lo = (datetime.fromisoformat(text) - _EPOCH) // _MS
    except (ValueError, OverflowError):
        return dates.parse_range(text)
    frac = m.group(1)
    return lo, lo + (999 if frac is None else 10 ** max(0, 3 - len(frac)) - 1)


def _string(v, root, out):
    if type(v) is str and v:
        out.append(String(_normalise(v), v))


def _string_parts(keys: tuple[str, ...]):
    def convert(v, root, out):
        if type(v) is not dict:
            return
        for key in keys:
            for x in _items(v.get(key)):
                _string(x, root, out)
    return convert


_human_name = _string_parts(("text", "family", "given", "prefix", "suffix"))
_address = _string_parts(("text", "line", "city", "district", "state", "postalCode", "country"))
_name_or_address = _string_parts(("text", "family", "given", "prefix", "suffix", "line", "city", "district",
                                  "state", "postalCode", "country"))


def _string_shape(v, root, out):
    if type(v) is dict:
        _name_or_address(v, root, out)
    else:
        _string(v, root, out)


# ---- token ----------------------------------------------------------------------------

def _norm(text) -> str | None:
    return _normalise(text) if type(text) is str and text else None


def _token_primitive(v, root, out):
    if type(v) is bool:
        out.append(Token(None, "true" if v else "false"))
    elif type(v) is str:
        out.append(Token(None, v))
    elif type(v) in _NUMERIC and v == v:
        out.append(Token(None, str(v)))         # a Decimal keeps its text: "72.50"


def _coding(v, root, out, text=None):
    if type(v) is dict:
        system, code = v.get("system"), v.get("code")      # inlined _str: the hottest converter
        if type(system) is not str:
            system = None
        if type(code) is not str:
            code = None
        if system is not None or code is not None:
            display = _norm(v.get("display"))
            if text and display and display != text:
                # :text matches the CodeableConcept's text or a coding's display
                # (search.html#modifiers), so keep both, as words: "blodtrykk blood pressure panel"
                display = f"{text} {display}"
            out.append(Token(system, code, display or text))


def _codeable_concept(v, root, out):
    if type(v) is not dict:
        return
    text = _norm(v.get("text"))
    codings = v.get("coding")
    if codings:
        for c in _items(codings):
            _coding(c, root, out, text)
    elif text:
        out.append(Token(None, None, text))


def _identifier(v, root, out):
    value = _str(v, "value") if type(v) is dict else None
    if value is None:
        return
    id_type = v.get("type")
    type_text = None
    if type(id_type) is dict:
        type_text = _norm(id_type.get("text"))
        for c in _items(id_type.get("coding")):
            if type(c) is dict and _str(c, "code"):
                out.append(IdentifierOfType(_str(c, "system"), c["code"], value))
    out.append(Token(_str(v, "system"), value, type_text))


def _contact_point(v, root, out):
    if type(v) is dict and _str(v, "value") is not None:
        out.append(Token(None, v["value"]))


def _token_shape(v, root, out):
    if type(v) is not dict:
        _token_primitive(v if type(v) in _PRIMITIVE else str(v), root, out)
    elif "coding" in v or ("text" in v and "value" not in v and "code" not in v):
        _codeable_concept(v, root, out)
    elif "code" in v:
        _coding(v, root, out)
    elif "value" in v:
        if _str(v, "system") in _CONTACT_SYSTEMS or "rank" in v:
            _contact_point(v, root, out)
        else:
            _identifier(v, root, out)
    elif "reference" in v or "identifier" in v:
        _reference_identifier(v, out)


# ---- reference ------------------------------------------------------------------------

@lru_cache(maxsize=65536)
def parse_reference(text: str) -> Reference | None:
    """``Type/id[/_history/v]``, absolute ``.../Type/id``, ``urn:uuid:``/``urn:oid:`` and other
    URLs (``url|version``); None for contained (``#x``) and unparseable references."""
    if not text or text[0] == "#":
        return None
    if text.startswith("urn:"):
        return Reference(None, None, url=text)
    absolute = "://" in text
    if absolute and "|" in text:
        url, _, version = text.partition("|")
        return Reference(None, None, url=url, version=version or None)
    parts = text.split("/")
    version = None
    if len(parts) >= 4 and parts[-2] == "_history":
        version = parts[-1]
        parts = parts[:-2]
    typed = len(parts) >= 2 and _TYPE.match(parts[-2]) and _ID.match(parts[-1])
    if not absolute:
        return Reference(parts[-2], parts[-1], version=version) if typed and len(parts) == 2 else None
    url = "/".join(parts)
    if typed:
        return Reference(parts[-2], parts[-1], url=url, version=version)
    return Reference(None, None, url=url, version=version)


def _reference_identifier(v: dict, out):
    ident = v.get("identifier") if type(v) is dict else None
    if type(ident) is dict and _str(ident, "value") is not None:
        out.append(Token(_str(ident, "system"), ident["value"], None))


def _reference(v, root, out):
    if type(v) is not dict:
        return
    text = v.get("reference")
    if type(text) is str:
        ref = parse_reference(text)
        if ref is not None:
            out.append(ref)
    if "identifier" in v:
        _reference_identifier(v, out)


def _canonical(v, root, out):
    """A canonical is a URL (``url|version``); a relative one (``Library/x``, common in the
    official examples) can only mean a local resource, so it is indexed as a reference."""
    if type(v) is str and v and v[0] != "#":
        url, _, version = v.partition("|")
        if "://" not in url and not url.startswith("urn:"):
            ref = parse_reference(url)
            if ref is not None:
                out.append(ref._replace(version=version) if version else ref)
            return
        out.append(Reference(None, None, url=url, version=version or None))


def _embedded_resource(v, root, out):
    if type(v) is dict and type(v.get("resourceType")) is str and type(v.get("id")) is str:
        out.append(Reference(v["resourceType"], v["id"]))


def _reference_shape(v, root, out):
    if type(v) is str:
        ref = parse_reference(v)
        if ref is not None:
            out.append(ref)
    elif type(v) is dict:
        (_embedded_resource if "resourceType" in v else _reference)(v, root, out)


# ---- date -----------------------------------------------------------------------------

def _date(v, root, out):
    if type(v) is str:
        r = _date_range(v)
        if r is not None:
            out.append(DateRange(*r))


def _period(v, root, out):
    if type(v) is not dict:
        return
    start, end = v.get("start"), v.get("end")
    lo = _date_range(start) if type(start) is str else None
    hi = _date_range(end) if type(end) is str else None
    if lo is not None or hi is not None:
        out.append(DateRange(lo[0] if lo else DATE_MIN, hi[1] if hi else DATE_MAX))


def _timing(v, root, out):
    if type(v) is not dict:
        return
    for event in _items(v.get("event")):
        _date(event, root, out)
    repeat = v.get("repeat")
    if type(repeat) is dict and "boundsPeriod" in repeat:
        _period(repeat["boundsPeriod"], root, out)


def _date_shape(v, root, out):
    if type(v) is dict:
        (_timing if ("event" in v or "repeat" in v) else _period)(v, root, out)
    elif v is not None and type(v) is not bool and type(v) not in _NUMERIC:
        _date(str(v), root, out)


# ---- number and quantity --------------------------------------------------------------

def _value_of(q) -> float | None:
    return _float(q.get("value")) if type(q) is dict else None


def _number(v, root, out):
    f = _float(v)
    if f is not None:
        out.append(Number(f, f, f))


def _number_range(v, root, out):
    lo, hi = _value_of(v.get("low")) if type(v) is dict else None, _value_of(v.get("high")) if type(v) is dict else None
    if lo is not None or hi is not None:
        out.append(Number(lo if lo is not None else hi, lo if lo is not None else -_INF, hi if hi is not None else _INF))


def _number_shape(v, root, out):
    if type(v) is dict:
        if "low" in v or "high" in v:
            _number_range(v, root, out)
        elif (f := _value_of(v)) is not None:
            out.append(Number(f, f, f))
    else:
        _number(v, root, out)


def _quantity(v, root, out):
    f = _value_of(v)
    if f is not None:
        out.append(Quantity(f, f, f, _str(v, "system"), _str(v, "code"), _str(v, "unit")))


def _money(v, root, out):
    f = _value_of(v)
    if f is not None:
        out.append(Quantity(f, f, f, "urn:iso:std:iso:4217", _str(v, "currency"), None))


def _quantity_range(v, root, out):
    if type(v) is not dict:
        return
    low, high = v.get("low"), v.get("high")
    lo, hi = _value_of(low), _value_of(high)
    if lo is None and hi is None:
        return
    unit_of = low if lo is not None else high
    out.append(Quantity(lo if lo is not None else hi, lo if lo is not None else -_INF,
                        hi if hi is not None else _INF,
                        _str(unit_of, "system"), _str(unit_of, "code"), _str(unit_of, "unit")))


def _quantity_shape(v, root, out):
    if type(v) is dict:
        if "low" in v or "high" in v:
            _quantity_range(v, root, out)
        elif "currency" in v:
            _money(v, root, out)
        else:
            _quantity(v, root, out)
    elif (f := _float(v)) is not None:
        out.append(Quantity(f, f, f, None, None, None))


# ---- uri ------------------------------------------------------------------------------

def _uri(v, root, out):
    if type(v) is str and v:
        out.append(Uri(v))


# ---- tables ---------------------------------------------------------------------------

_SKIP = object()
_BY_TYPE = {
    "string": {**dict.fromkeys(_TEXT_TYPES, _string), "HumanName": _human_name, "Address": _address},
    "token": {**dict.fromkeys(_TEXT_TYPES | _NUMBER_TYPES | {"boolean"}, _token_primitive),
              "Coding": _coding, "CodeableConcept": _codeable_concept, "Identifier": _identifier,
              "ContactPoint": _contact_point, "Reference": lambda v, root, out: _reference_identifier(v, out),
              **dict.fromkeys(("Quantity", "Range", "Period", "Attachment"), _SKIP)},
    "reference": {"Reference": _reference, "canonical": _canonical, "uri": _canonical, "url": _canonical,
                  "Resource": _embedded_resource, **dict.fromkeys(("Attachment", "code"), _SKIP)},
    "date": {"date": _date, "dateTime": _date, "instant": _date, "Period": _period, "Timing": _timing,
             **dict.fromkeys(("Age", "Duration", "Range", "string", "time", "Quantity", "boolean",
                              "CodeableConcept", "integer"), _SKIP)},
    "number": {**dict.fromkeys(_NUMBER_TYPES, _number), "Range": _number_range},
    "quantity": {**dict.fromkeys(_QUANTITY_TYPES, _quantity), "Money": _money, "Range": _quantity_range,
                 "SampledData": _SKIP},
    "uri": dict.fromkeys(("uri", "url", "canonical", "oid", "uuid", "string", "code", "id"), _uri),
}
_SHAPE = {"string": _string_shape, "token": _token_shape, "reference": _reference_shape, "date": _date_shape,
          "number": _number_shape, "quantity": _quantity_shape, "uri": _uri}


def leaf(param_type: str, datatype: str, targets: tuple[str, ...] = (), known: bool = True):
    """The converter for an element of FHIR ``datatype``; None when such elements never yield
    a value for this parameter type (e.g. an Age for a date parameter, a HumanName for a
    token). A datatype that is not ``known`` (a backbone element) is read by its JSON shape."""
    if datatype == "Resource" and param_type == "reference" and targets:
        allowed = frozenset(targets)          # Bundle.entry[0].resource: a message or a document

        def embedded(v, root, out):
            if type(v) is dict and v.get("resourceType") in allowed:
                _embedded_resource(v, root, out)
        return embedded
    conv = _BY_TYPE.get(param_type, {}).get(datatype)
    if conv is _SKIP or (conv is None and known):
        return None
    return conv or _SHAPE.get(param_type)


def by_shape(param_type: str):
    """A converter reading the JSON shape of the value (for FHIRPath engine results)."""
    return _SHAPE.get(param_type)
