"""The typed values a resource is indexed under, one kind per search parameter type.

Extraction (``extract.py``) turns a resource into these; each store maps them to rows.
Dates are epoch milliseconds (UTC; a date without a zone is read as UTC) as an inclusive
range ``[lo, hi]``: ``2020-10`` is the whole month, a Period without an end is open to
``DATE_MAX``. Numbers and quantities keep the value and an inclusive range (a Range
element, or the value itself twice).
See https://hl7.org/fhir/R4/search.html#ptypes.
"""
from __future__ import annotations

import unicodedata
from typing import NamedTuple

DATE_MIN = -62135596800000      # 0001-01-01T00:00:00Z
DATE_MAX = 253402300799999      # 9999-12-31T23:59:59.999Z


class Token(NamedTuple):
    system: str | None           # None: the element has no system (plain code, boolean, id)
    code: str | None
    text: str | None = None      # normalised display / CodeableConcept.text / Identifier.type.text


class IdentifierOfType(NamedTuple):
    """An Identifier's type coding with its value, for the ``:of-type`` modifier."""
    type_system: str | None
    type_code: str
    value: str


class String(NamedTuple):
    norm: str                    # normalise(): case- and accent-insensitive, spaces folded
    exact: str


class DateRange(NamedTuple):
    lo: int
    hi: int


class Number(NamedTuple):
    value: float
    lo: float
    hi: float


class Quantity(NamedTuple):
    value: float
    lo: float
    hi: float
    system: str | None
    code: str | None
    unit: str | None


class Reference(NamedTuple):
    """A reference. Literal local ones carry type and id; absolute URLs and canonicals carry url."""
    type: str | None
    id: str | None
    url: str | None = None
    version: str | None = None


class Uri(NamedTuple):
    uri: str


class Composite(NamedTuple):
    """One composite value: per component, the values the component expression produced
    from the same element (https://hl7.org/fhir/R4/search.html#composite)."""
    parts: tuple[tuple, ...]


def normalise(text: str) -> str:
    """Case-insensitive, accent-insensitive form for string search (``Ærø`` -> ``ærø``, ``José`` -> ``jose``).

    Norwegian letters æ, ø, å are letters of their own, not accented forms, so they are kept;
    other combining marks are removed.
    """
    decomposed = unicodedata.normalize("NFD", text.casefold())
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch) or ch == "\u030a")
    folded = unicodedata.normalize("NFC", stripped)
    return " ".join(folded.split())
