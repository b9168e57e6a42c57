"""FHIR JSON in and out, keeping decimals exactly as written.

FHIR decimals carry their precision (``72.50`` is not ``72.5``,
https://hl7.org/fhir/R4/datatypes.html#decimal). orjson reads numbers as floats, so a body
holding a number whose text a float would not reproduce (trailing fractional zeros, an
exponent) is read with the standard library into ``Decimal`` instead, and ``dumps`` writes
``Decimal`` values back verbatim. Most bodies have no such number and take the fast path.
"""
from __future__ import annotations

import json
import re
from decimal import Decimal

import orjson

# trailing fractional zeros, an exponent, or 16+ significant digits (beyond a float's precision)
_RISKY_NUMBER = re.compile(rb"[0-9]\.[0-9]*0(?![0-9])|[0-9][eE][-+]?[0-9]|[0-9](?:\.?[0-9]){15}")


class JSONDecodeError(ValueError):
    pass


def loads(data: bytes | str) -> object:
    """Parse JSON; numbers that a float would change become ``Decimal``."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        if _RISKY_NUMBER.search(raw) is None:
            return orjson.loads(raw)
        return json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)
    except (orjson.JSONDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise JSONDecodeError(str(exc)) from None


def _reject_constant(name: str) -> None:
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())
    if isinstance(value, orjson.Fragment):
        return value
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dumps(value: object, pretty: bool = False) -> bytes:
    return orjson.dumps(value, default=_default, option=orjson.OPT_INDENT_2 if pretty else 0)
