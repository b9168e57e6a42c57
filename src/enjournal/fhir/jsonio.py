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

from .limits import MAX_EXPONENT, MAX_NUMBER_DIGITS

_INF = float("inf")

# trailing fractional zeros, an exponent, or 16+ significant digits (beyond a float's precision)
_RISKY_NUMBER = re.compile(rb"[0-9]\.[0-9]*0(?![0-9])|[0-9][eE][-+]?[0-9]|[0-9](?:\.?[0-9]){15}")


class JSONDecodeError(ValueError):
    pass


class NumberOutOfRange(JSONDecodeError):
    """Valid JSON holding a number beyond ``limits`` (too many digits, or beyond a double)."""


def loads(data: bytes | str) -> object:
    """Parse JSON; numbers that a float would change become ``Decimal`` (and integers beyond
    64 bits too, so they are written back as given). A number of more than
    ``limits.MAX_NUMBER_DIGITS`` digits, or beyond what a double holds (``1e400``), raises
    ``NumberOutOfRange``; a lone UTF-16 surrogate (``"\\ud800"``) is invalid JSON text."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        if _RISKY_NUMBER.search(raw) is None:
            return orjson.loads(raw)
        if b"\\u" in raw:
            orjson.loads(raw)       # refuses lone surrogates, which the standard library lets through
        return json.loads(raw, parse_float=_decimal, parse_int=_integer, parse_constant=_reject_constant)
    except NumberOutOfRange:
        raise
    except (orjson.JSONDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise JSONDecodeError(str(exc)) from None


def _digits(text: str) -> int:
    mantissa = text.lower().partition("e")[0]
    return sum(1 for ch in mantissa if ch.isdigit())


def _integer(text: str) -> int | Decimal:
    if _digits(text) > MAX_NUMBER_DIGITS:
        raise NumberOutOfRange(f"a number has {_digits(text):,} digits; at most {MAX_NUMBER_DIGITS} are accepted")
    value = int(text)
    return value if -2**63 <= value < 2**63 else Decimal(text)


def _decimal(text: str) -> Decimal:
    if _digits(text) > MAX_NUMBER_DIGITS:
        raise NumberOutOfRange(f"a number has {_digits(text):,} digits; at most {MAX_NUMBER_DIGITS} are accepted")
    value = Decimal(text)
    as_float = float(value)
    if as_float in (_INF, -_INF) or (as_float == 0 and value != 0):
        raise NumberOutOfRange(f"the number {text[:40]} is out of range: its magnitude must lie within "
                               f"1e-{MAX_EXPONENT} and 1e{MAX_EXPONENT}")
    return value


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
