"""Norwegian identifiers: which systems they use and whether a value is well formed.

Pure functions over strings. Each ``check_*`` returns ``None`` for a valid value, or a
short English reason ("check digit 2 is wrong") that the validator puts after "not a
valid fødselsnummer: ". Systems are the OIDs of HL7 Norway's no-basis profiles
(https://simplifier.net/hl7norwayno-basis). Person numbers follow Skatteetaten's rules
and HIS 1001 (identifikatorer for personer, Helsedirektoratet):

- fødselsnummer: DDMMYY + 3-digit individual number + 2 check digits (mod 11);
- D-number: day + 40; H-number (an organisation's internal aid number): month + 40;
- felles hjelpenummer (FH-number, Norsk helsenett): first digit 8 or 9, the rest random,
  with the same two check digits;
- Skatteetaten's synthetic test numbers (Tenor): month + 80, on fødselsnummer and D-number.
"""
from __future__ import annotations

from datetime import date
from typing import NamedTuple

FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
DNR = "urn:oid:2.16.578.1.12.4.1.4.2"
FHN = "urn:oid:2.16.578.1.12.4.1.4.3"
HPR = "urn:oid:2.16.578.1.12.4.1.4.4"
ENH = "urn:oid:2.16.578.1.12.4.1.4.101"
RESH = "urn:oid:2.16.578.1.12.4.1.4.102"
HER = "urn:oid:2.16.578.1.12.4.1.2"

# What an identifier of each system is called in messages ("not a valid D-number: ...").
SYSTEM_NAMES: dict[str, str] = {
    FNR: "fødselsnummer",
    DNR: "D-number",
    FHN: "felles hjelpenummer",
    HPR: "HPR number",
    ENH: "organisation number",
    RESH: "RESH id",
    HER: "HER-id",
}

# The person-number kinds each person system holds; the others get a pointer to the right one.
_KINDS_OF_SYSTEM = {
    FNR: ("fnr", "synthetic-fnr"),
    DNR: ("dnr", "synthetic-dnr"),
    FHN: ("fhn",),
}
_SYSTEM_OF_KIND = {"fnr": FNR, "synthetic-fnr": FNR, "dnr": DNR, "synthetic-dnr": DNR, "fhn": FHN}
_KIND_NAMES = {
    "fnr": "a fødselsnummer", "synthetic-fnr": "a synthetic fødselsnummer",
    "dnr": "a D-number", "synthetic-dnr": "a synthetic D-number",
    "hnr": "an H-number (month + 40), which is internal to the organisation that made it",
    "fhn": "a felles hjelpenummer",
}

_W1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_W2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
# Remainders of (weighted sum + k1) mod 11 that make k1 right. Before 2032 only 0; numbers
# issued from 1 January 2032 may also leave 1, 2 or 3 (Skatteetaten, "nytt fødselsnummer
# fra 2032"). Nothing in the number says when it was issued, so both rules are accepted.
_K1_REMAINDERS = (0, 1, 2, 3)


def _days_in_month(year: int, month: int) -> int:
    # calendar.monthrange also computes a weekday: twice the cost for nothing here.
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


class _Person(NamedTuple):
    kind: str                 # fnr | dnr | hnr | fhn | synthetic-fnr | synthetic-dnr
    birth: date | None        # None for FH-numbers and when the century is unknown
    new_k1: bool              # k1 only fits the 2032 rule: the number carries no sex


def _digits_problem(value: object, length: int) -> str | None:
    if not isinstance(value, str):
        return f"not {length} digits (not a string)"
    for ch in value:
        if not "0" <= ch <= "9":
            return f"not {length} digits (contains {ch!r})"
    if len(value) != length:
        return f"not {length} digits (has {len(value)})"
    return None


def _century(individual: int, yy: int) -> int | None:
    """The century a birth year belongs to, from the individual-number series
    (folkeregisterforskriften): 000–499 1900–1999; 500–749 1854–1899; 900–999 1940–1999;
    500–999 2000–2039. None when the pair fits no series."""
    if individual <= 499:
        return 1900
    if individual <= 749 and yy >= 54:
        return 1800
    if yy <= 39:
        return 2000
    if individual >= 900:
        return 1900
    return None


def _parse(value: object) -> _Person | str:
    """The decoded person number, or the reason it is not one."""
    problem = _digits_problem(value, 11)
    if problem:
        return problem
    assert isinstance(value, str)
    d = [ord(c) - 48 for c in value]

    if d[0] >= 8:
        kind, birth = "fhn", None        # FH-numbers carry no date: the digits are random
    else:
        day, month, yy = d[0] * 10 + d[1], d[2] * 10 + d[3], d[4] * 10 + d[5]
        dnumber = day > 40
        if dnumber:
            day -= 40
        if month > 80:
            kind, month = ("synthetic-dnr" if dnumber else "synthetic-fnr"), month - 80
        elif month > 40:
            if dnumber:
                return (f"day {value[:2]} (D-number) with month {value[2:4]} (H-number) "
                        "is not a defined kind of number")
            kind, month = "hnr", month - 40
        else:
            kind = "dnr" if dnumber else "fnr"
        if not 1 <= day <= 31:
            return f"day {value[:2]} is not a date"
        if not 1 <= month <= 12:
            return f"month {value[2:4]} is not a month"
        century = _century(d[6] * 100 + d[7] * 10 + d[8], yy)
        if century is not None:
            if day > _days_in_month(century + yy, month):
                return f"{day:02}.{month:02}.{century + yy} is not a date"
            birth = date(century + yy, month, day)
        else:
            # The series table says nothing for this pair. Rather than reject a number the
            # register may issue under rules not yet published, accept it when the day
            # exists in some century (29 February needs a leap year among them).
            if not any(day <= _days_in_month(c + yy, month) for c in (1800, 1900, 2000)):
                return f"{day:02}.{month:02}.{yy:02} is not a date"
            birth = None

    r1 = (sum(a * b for a, b in zip(d, _W1)) + d[9]) % 11
    # The 2032 rule is Skatteetaten's, for its own numbers (and its synthetic ones);
    # H-numbers and FH-numbers keep the classic rule.
    allowed = _K1_REMAINDERS if kind in ("fnr", "dnr", "synthetic-fnr", "synthetic-dnr") else (0,)
    if r1 not in allowed:
        return "check digit 1 is wrong"
    if (sum(a * b for a, b in zip(d, _W2)) + d[10]) % 11:
        # A k1 accepted only by the 2032 rule may itself be the typo: don't blame k2 alone.
        return "check digit 1 or 2 is wrong" if r1 else "check digit 2 is wrong"
    return _Person(kind, birth, r1 != 0)


def check_person_number(value: str, allow_synthetic: bool = True) -> str | None:
    """None when ``value`` is a well-formed Norwegian person number of any kind
    (fødselsnummer, D-number, H-number, FH-number; Skatteetaten's synthetic ones only with
    ``allow_synthetic``), otherwise the reason it is not ("check digit 1 is wrong")."""
    parsed = _parse(value)
    if isinstance(parsed, str):
        return parsed
    if parsed.kind.startswith("synthetic-") and not allow_synthetic:
        return "a synthetic test number (month + 80) is not accepted here"
    return None


def kind(value: str) -> str | None:
    """"fnr", "dnr", "hnr", "fhn", "synthetic-fnr" or "synthetic-dnr"; None when invalid."""
    parsed = _parse(value)
    return None if isinstance(parsed, str) else parsed.kind


def birth_date(value: str) -> date | None:
    """The birth date a valid person number encodes; None for FH-numbers, invalid numbers
    and numbers whose century cannot be told. From 2032 Skatteetaten warns that the
    register, not the number, is the authority on the birth date."""
    parsed = _parse(value)
    return None if isinstance(parsed, str) else parsed.birth


def sex(value: str) -> str | None:
    """"male" (odd 9th digit) or "female" (even) for a valid person number; None for
    FH-numbers and for numbers whose k1 only fits the 2032 rule, which are sex-neutral."""
    parsed = _parse(value)
    if isinstance(parsed, str) or parsed.kind == "fhn" or parsed.new_k1:
        return None
    return "male" if int(value[8]) % 2 else "female"


def _check_digits(nine: str) -> tuple[int, int] | None:
    """The classic (pre-2032) k1, k2 for nine digits; None when either would be 10."""
    d = [ord(c) - 48 for c in nine]
    k1 = (11 - sum(a * b for a, b in zip(d, _W1)) % 11) % 11
    if k1 == 10:
        return None
    k2 = (11 - sum(a * b for a, b in zip(d + [k1], _W2)) % 11) % 11
    if k2 == 10:
        return None
    return k1, k2


def _series(year: int) -> list[range]:
    if 1854 <= year <= 1899:
        return [range(500, 750)]
    if 1900 <= year <= 1939:
        return [range(0, 500)]
    if 1940 <= year <= 1999:
        return [range(0, 500), range(900, 1000)]
    if 2000 <= year <= 2039:
        return [range(500, 1000)]
    raise ValueError(f"no individual-number series covers birth year {year}")


def make_synthetic_fnr(birth: date, individual: int, sex: str) -> str:
    """A valid synthetic fødselsnummer (month + 80, classic check digits) for ``birth``:
    the one with the smallest individual number ≥ ``individual`` that lies in the
    series for the birth year, has the parity of ``sex`` ("male" odd, "female" even) and
    gives check digits below 10. Raises ValueError when there is none."""
    if sex not in ("male", "female"):
        raise ValueError(f"sex must be 'male' or 'female', not {sex!r}")
    if not 0 <= individual <= 999:
        raise ValueError(f"individual number {individual} is not 0–999")
    want_odd = sex == "male"
    prefix = f"{birth.day:02}{birth.month + 80:02}{birth.year % 100:02}"
    for series in _series(birth.year):
        for n in series:
            if n < individual or (n % 2 == 1) != want_odd:
                continue
            nine = f"{prefix}{n:03}"
            check = _check_digits(nine)
            if check:
                return f"{nine}{check[0]}{check[1]}"
    raise ValueError(f"no synthetic number for {birth} from individual number {individual}")


def check_hpr(value: str) -> str | None:
    """None when ``value`` looks like an HPR number (Helsepersonellregisteret): a whole
    number of at most 9 digits without a leading zero. Format only: HPR numbers carry no
    published check digit, so whether one exists is for the register to say."""
    if not isinstance(value, str) or not value.isascii() or not value.isdigit():
        return "not a number"
    if len(value) > 9:
        return f"more than 9 digits (has {len(value)})"
    if value[0] == "0":
        # "0123456" and "123456" would be one number written two ways: searches would miss.
        return "starts with 0"
    return None


def check_org_number(value: str) -> str | None:
    """None when ``value`` is a well-formed organisation number (Enhetsregisteret):
    9 digits whose last is the mod-11 check digit over weights 3,2,7,6,5,4,3,2."""
    problem = _digits_problem(value, 9)
    if problem:
        return problem
    d = [ord(c) - 48 for c in value]
    k = (11 - sum(a * b for a, b in zip(d, (3, 2, 7, 6, 5, 4, 3, 2))) % 11) % 11
    if k == 10:
        return "check digit is wrong (no number starts with these 8 digits)"
    if k != d[8]:
        return "check digit is wrong"
    return None


def _check_register_id(value: str) -> str | None:
    # RESH and HER-ids are sequence numbers handed out by their registers, with no check
    # digit: only the format can be checked.
    if not isinstance(value, str) or not value.isascii() or not value.isdigit():
        return "not a number"
    if value[0] == "0":
        return "starts with 0"
    if len(value) > 10:
        return f"more than 10 digits (has {len(value)})"
    return None


def check_identifier(system: str, value: str, allow_synthetic: bool = True) -> str | None:
    """The reason ``value`` is not a valid identifier of the Norwegian ``system``, or None
    when it is valid or the system is not one this module knows."""
    if system in _KINDS_OF_SYSTEM:
        parsed = _parse(value)
        if isinstance(parsed, str):
            return parsed
        if parsed.kind not in _KINDS_OF_SYSTEM[system]:
            hint = _SYSTEM_OF_KIND.get(parsed.kind)
            where = f"; use system {hint}" if hint else ""
            return f"this is {_KIND_NAMES[parsed.kind]}{where}"
        if parsed.kind.startswith("synthetic-") and not allow_synthetic:
            return "a synthetic test number (month + 80) is not accepted here"
        return None
    if system == HPR:
        return check_hpr(value)
    if system == ENH:
        return check_org_number(value)
    if system in (RESH, HER):
        return _check_register_id(value)
    return None
