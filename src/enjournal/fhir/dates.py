"""FHIR date, dateTime and instant values as inclusive epoch-millisecond ranges.

A value covers the whole of its precision: ``2020`` is all of 2020, ``2020-10-30T09:10``
the whole minute. A value without a time zone is read as UTC (the server's zone).
See https://hl7.org/fhir/R4/search.html#date.
"""
from __future__ import annotations

import calendar
import re
import time
from functools import lru_cache
from datetime import datetime, timezone

_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def parse_range(text: str) -> tuple[int, int] | None:
    """``(lo, hi)`` epoch ms for a FHIR date/dateTime/instant string, or None if it is not one."""
    m = _DATE.match(text)
    if not m:
        return None
    year = int(m["y"])
    month = int(m["m"]) if m["m"] else None
    day = int(m["d"]) if m["d"] else None
    if year < 1 or (month is not None and not 1 <= month <= 12):
        return None
    if day is not None and not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    offset_ms = 0
    if m["tz"] and m["tz"] != "Z":
        sign = 1 if m["tz"][0] == "+" else -1
        hh, mm = int(m["tz"][1:3]), int(m["tz"][4:6])
        offset_ms = sign * (hh * 3600 + mm * 60) * 1000
    if m["H"] is not None:
        hour, minute = int(m["H"]), int(m["M"])
        if hour > 23 or minute > 59:
            return None
        second = int(m["S"]) if m["S"] is not None else None
        if second is not None and second > 59:
            return None
        base = _epoch_ms(year, month, day, hour, minute, second or 0) - offset_ms
        if m["f"]:
            digits = min(len(m["f"]), 3)
            lo = base + int(m["f"][:3].ljust(3, "0"))
            return lo, lo + 10 ** (3 - digits) - 1
        if second is not None:
            return base, base + 999
        return base, base + 60_000 - 1
    if day is not None:
        lo = _epoch_ms(year, month, day)
        return lo, lo + 86_400_000 - 1
    if month is not None:
        lo = _epoch_ms(year, month, 1)
        days = calendar.monthrange(year, month)[1]
        return lo, lo + days * 86_400_000 - 1
    lo = _epoch_ms(year, 1, 1)
    hi = _epoch_ms(year + 1, 1, 1) - 1 if year < 9999 else _epoch_ms(9999, 12, 31) + 86_400_000 - 1
    return lo, hi


def _epoch_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    days = (datetime(year, month, day) - datetime(1970, 1, 1)).days
    return ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000


def parameter_range(value: str, name: str) -> tuple[int, int]:
    """The range of a date parameter such as ``_since`` or ``_at``; a bad value is a 400 naming it."""
    from .. import errors
    rng = parse_range(value)
    if rng is None:
        raise errors.Invalid(f"{name} must be a date, dateTime or instant, not '{value}'", name)
    return rng


def to_instant(ms: int) -> str:
    """Epoch ms as a FHIR instant with millisecond precision in UTC (``2026-11-22T05:34:39.123Z``)."""
    return f"{_second(ms // 1000)}.{ms % 1000:03d}Z"


@lru_cache(maxsize=1024)
def _second(seconds: int) -> str:
    t = time.gmtime(seconds)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


@lru_cache(maxsize=4096)
def _http_second(seconds: int) -> str:
    from email.utils import formatdate
    return formatdate(seconds, usegmt=True)


def http_date(ms: int) -> str:
    """Epoch ms as an HTTP date (RFC 9110), for Last-Modified."""
    return _http_second(ms // 1000)


def parse_http_date(text: str) -> int | None:
    from email.utils import parsedate_to_datetime
    try:
        dt = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)
