"""Norwegian identifiers: person numbers (fødselsnummer, D-, H-, FH- and synthetic
numbers), HPR, organisation numbers, and the dispatch by identifier system."""
from __future__ import annotations

import random
from datetime import date, timedelta

import pytest

from enjournal.fhir import norway

W1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
W2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


def with_check_digits(nine: str) -> str | None:
    """An oracle written from the published rule, independent of the module: the classic
    k1 and k2 appended, or None when either comes out as 10."""
    d = [int(c) for c in nine]
    k1 = 11 - sum(a * b for a, b in zip(d, W1)) % 11
    k1 = 0 if k1 == 11 else k1
    if k1 == 10:
        return None
    k2 = 11 - sum(a * b for a, b in zip(d + [k1], W2)) % 11
    k2 = 0 if k2 == 11 else k2
    return None if k2 == 10 else f"{nine}{k1}{k2}"


# Published examples (Skatteetaten, NAV's fnrvalidator tests, DESIGN.md) and what they encode.
VALID = [
    # value, kind, birth date, sex
    ("02013299997", "fnr", date(2032, 1, 2), "male"),
    ("30108299920", "fnr", date(1982, 10, 30), "male"),
    ("15076500565", "fnr", date(1965, 7, 15), "male"),
    ("13097248022", "fnr", date(1972, 9, 13), "female"),
    ("29029648784", "fnr", date(1996, 2, 29), "male"),        # leap year
    ("29020075838", "fnr", date(2000, 2, 29), "female"),      # 2000 is a leap year
    ("15021951940", "fnr", date(2019, 2, 15), "male"),        # a check digit computed as 11 → 0
    ("30108299939", "fnr", date(1982, 10, 30), None),         # k1 by the 2032 rule: sex-neutral
    ("70019950032", "dnr", date(1899, 1, 30), "female"),      # D-number, individual 500 → 1800s
    ("53097248016", "dnr", date(1972, 9, 13), "female"),
    ("70108299914", "dnr", date(1982, 10, 30), "male"),
    ("13527248013", "hnr", date(1972, 12, 13), "female"),     # H-number: month + 40
    ("10915596784", "synthetic-fnr", date(1955, 11, 10), "male"),
    ("23906398699", "synthetic-fnr", date(1963, 10, 23), "female"),   # Skatteetaten test persons
    ("13873249565", "synthetic-fnr", date(1932, 7, 13), "male"),
    ("50846202355", "synthetic-dnr", date(1962, 4, 10), "male"),      # day + 40 and month + 80
]

INVALID = [
    ("02013299996", "check digit 2 is wrong"),          # 02013299997 with the last digit changed
    ("02013299987", "check digit 1 is wrong"),
    ("30108299921", "check digit 2 is wrong"),
    ("15076500566", "check digit 2 is wrong"),
    ("70019950033", "check digit 2 is wrong"),
    ("13097248032", "check digit 1 or 2 is wrong"),     # k1 changed to one the 2032 rule allows
    ("29020112345", "29.02.1901 is not a date"),
    ("31049912345", "31.04.1999 is not a date"),
    ("32127248022", "day 32 is not a date"),
    ("00017248022", "day 00 is not a date"),
    ("13137248022", "month 13 is not a month"),
    ("13007248022", "month 00 is not a month"),
    ("68467038838", "day 68 (D-number) with month 46 (H-number) is not a defined kind of number"),
    ("0201329999", "not 11 digits (has 10)"),
    ("020132999970", "not 11 digits (has 12)"),
    ("0201329999a", "not 11 digits (contains 'a')"),
    ("020132 99997", "not 11 digits (contains ' ')"),
    ("02013299997 ", "not 11 digits (contains ' ')"),
    ("٠٢٠١٣٢٩٩٩٩٧", "not 11 digits (contains '٠')"),   # Arabic-Indic digits are not digits here
    ("", "not 11 digits (has 0)"),
]


@pytest.mark.parametrize("value, kind, birth, sex", VALID)
def test_published_valid_numbers(value, kind, birth, sex):
    assert norway.check_person_number(value, allow_synthetic=True) is None
    assert norway.kind(value) == kind
    assert norway.birth_date(value) == birth
    assert norway.sex(value) == sex


@pytest.mark.parametrize("value, reason", INVALID)
def test_invalid_numbers_say_why(value, reason):
    assert norway.check_person_number(value, allow_synthetic=True) == reason
    assert norway.kind(value) is None
    assert norway.birth_date(value) is None
    assert norway.sex(value) is None


def test_non_strings_are_invalid_not_errors():
    assert norway.check_person_number(2013299997, True) == "not 11 digits (not a string)"  # type: ignore[arg-type]
    assert norway.check_person_number(None, True) == "not 11 digits (not a string)"  # type: ignore[arg-type]


def test_synthetic_numbers_only_when_allowed():
    assert norway.check_person_number("10915596784", allow_synthetic=True) is None
    assert norway.check_person_number("10915596784", allow_synthetic=False) == \
        "a synthetic test number (month + 80) is not accepted here"
    assert norway.check_person_number("50846202355", allow_synthetic=False) is not None
    # Real numbers are unaffected.
    assert norway.check_person_number("15076500565", allow_synthetic=False) is None


@pytest.mark.parametrize("value, year", [
    ("15076500565", 1965),     # 000–499: 1900s
    ("70019950032", 1899),     # 500–749 with year 54–99: 1800s
    ("02013299997", 2032),     # 500–999 with year 00–39: 2000s
    ("30108299920", 1982),     # 900–999 with year 40–99: 1900s
])
def test_century_from_individual_number(value, year):
    assert norway.birth_date(value).year == year


def test_pair_outside_every_series_is_accepted_without_a_birth_date():
    # Individual 800 with year 45 fits no published series (750–899 only serve 2000–2039).
    # The number is accepted (the register may issue such numbers under rules to come)
    # but its birth date is unknown.
    number = next(n for n in (with_check_digits(f"150745{i}") for i in range(800, 900)) if n)
    assert norway.check_person_number(number, True) is None
    assert norway.kind(number) == "fnr"
    assert norway.birth_date(number) is None
    # 29 February with no known century: accepted only if a candidate century is a leap year.
    leap = next(n for n in (with_check_digits(f"290200{i}") for i in range(750, 900)) if n)
    assert norway.check_person_number(leap, True) is None                 # 2000 is a leap year
    never = next(n for n in (with_check_digits(f"290245{i}") for i in range(750, 900)) if n)
    assert norway.check_person_number(never, True) == "29.02.45 is not a date"


def test_2032_rule_accepts_k1_remainders_0_to_3_only():
    nine = "301082999"
    d = [int(c) for c in nine]
    s1 = sum(a * b for a, b in zip(d, W1))
    accepted = []
    for k1 in range(10):
        k2 = (11 - sum(a * b for a, b in zip(d + [k1], W2)) % 11) % 11
        if k2 == 10:
            continue
        if norway.check_person_number(f"{nine}{k1}{k2}", True) is None:
            accepted.append((s1 + k1) % 11)
    assert accepted and set(accepted) <= {0, 1, 2, 3}


def test_every_single_digit_change_is_caught():
    rng = random.Random(20261122)
    numbers = [v for v, *_ in VALID]
    for _ in range(300):
        birth = date(1900, 1, 1) + timedelta(days=rng.randrange(0, 40000))
        nine = f"{birth:%d%m%y}{rng.randrange(0, 500):03}" if birth.year < 2000 else \
            f"{birth:%d%m%y}{rng.randrange(500, 1000):03}"
        number = with_check_digits(nine)
        if number:
            assert norway.check_person_number(number, False) is None, number
            numbers.append(number)
    for number in numbers:
        for pos in range(11):
            for digit in "0123456789":
                if digit == number[pos]:
                    continue
                changed = number[:pos] + digit + number[pos + 1:]
                # A change may turn a fødselsnummer into another valid kind (day + 40 is a
                # D-number) only if the check digits still hold, which mod 11 rules out.
                assert norway.check_person_number(changed, True) is not None, (number, changed)


def test_random_input_never_raises():
    rng = random.Random(7)
    alphabet = "0123456789 -aX"
    for _ in range(20000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.choice((10, 11, 11, 11, 12))))
        reason = norway.check_person_number(value, True)
        assert reason is None or isinstance(reason, str)
        assert (norway.kind(value) is None) == (reason is not None)


def test_felles_hjelpenummer():
    fhn = next(n for n in (with_check_digits(f"8{i:08}") for i in range(12345678, 12345999)) if n)
    assert norway.kind(fhn) == "fhn"
    assert norway.check_person_number(fhn, False) is None
    assert norway.birth_date(fhn) is None and norway.sex(fhn) is None
    assert norway.check_identifier(norway.FHN, fhn) is None
    # FH-numbers keep the classic k1: a k1 only the 2032 rule allows is a typo here.
    d = [int(c) for c in fhn[:9]]
    s1 = sum(a * b for a, b in zip(d, W1))
    for k1 in range(10):
        if (s1 + k1) % 11 in (1, 2, 3):
            k2 = (11 - sum(a * b for a, b in zip(d + [k1], W2)) % 11) % 11
            if k2 < 10:
                assert norway.check_person_number(f"{fhn[:9]}{k1}{k2}", True) == "check digit 1 is wrong"


def test_make_synthetic_fnr_round_trips():
    day = date(1854, 1, 1)
    made = set()
    while day <= date(2039, 12, 31):
        for sex in ("male", "female"):
            number = norway.make_synthetic_fnr(day, 0, sex)
            assert norway.kind(number) == "synthetic-fnr", number
            assert norway.birth_date(number) == day
            assert norway.sex(number) == sex
            assert norway.check_person_number(number, allow_synthetic=True) is None
            assert norway.check_person_number(number, allow_synthetic=False) is not None
            assert int(number[2:4]) == day.month + 80
            made.add(number)
        day += timedelta(days=97)
    assert len(made) > 1300


def test_make_synthetic_fnr_skips_individual_numbers_with_check_digit_10():
    birth = date(1980, 5, 17)
    for start in range(0, 60):
        number = norway.make_synthetic_fnr(birth, start, "female")
        individual = int(number[6:9])
        assert individual >= start and individual % 2 == 0
        # Every individual number skipped on the way gave a check digit of 10.
        for skipped in range(start + (start % 2), individual, 2):
            assert with_check_digits(f"178580{skipped:03}") is None
    # Distinct individual numbers give distinct people on the same day.
    a = norway.make_synthetic_fnr(birth, 0, "male")
    b = norway.make_synthetic_fnr(birth, int(a[6:9]) + 1, "male")
    assert a != b and norway.birth_date(b) == birth


def test_make_synthetic_fnr_refuses_what_cannot_exist():
    with pytest.raises(ValueError):
        norway.make_synthetic_fnr(date(1850, 1, 1), 0, "male")
    with pytest.raises(ValueError):
        norway.make_synthetic_fnr(date(2040, 1, 1), 0, "male")
    with pytest.raises(ValueError):
        norway.make_synthetic_fnr(date(1980, 1, 1), 0, "unknown")
    with pytest.raises(ValueError):
        norway.make_synthetic_fnr(date(1980, 1, 1), 1000, "male")
    with pytest.raises(ValueError):       # 1899 uses 500–749 only: nothing from 998 up
        norway.make_synthetic_fnr(date(1899, 6, 1), 998, "female")


@pytest.mark.parametrize("value, reason", [
    ("9144900", None),
    ("565501872", None),
    ("1", None),
    ("0123456", "starts with 0"),
    ("000000000", "starts with 0"),
    ("1234567890", "more than 9 digits (has 10)"),
    ("12345a", "not a number"),
    ("", "not a number"),
    (" 9144900", "not a number"),
])
def test_hpr_numbers_are_checked_for_format_only(value, reason):
    assert norway.check_hpr(value) == reason


@pytest.mark.parametrize("value, reason", [
    ("974760673", None),          # Brønnøysundregistrene
    ("983044778", None),
    ("923609016", None),
    ("974761076", None),
    ("971526920", None),          # check digit 11 → 0
    ("974760674", "check digit is wrong"),
    ("983044779", "check digit is wrong"),
    ("991742146", "check digit is wrong (no number starts with these 8 digits)"),  # remainder 1
    ("97476067", "not 9 digits (has 8)"),
    ("9747606731", "not 9 digits (has 10)"),
    ("974 760 673", "not 9 digits (contains ' ')"),
])
def test_organisation_numbers(value, reason):
    assert norway.check_org_number(value) == reason


def test_check_identifier_dispatches_by_system():
    assert norway.check_identifier(norway.FNR, "15076500565") is None
    assert norway.check_identifier(norway.FNR, "15076500566") == "check digit 2 is wrong"
    assert norway.check_identifier(norway.DNR, "70019950032") is None
    assert norway.check_identifier(norway.HPR, "9144900") is None
    assert norway.check_identifier(norway.HPR, "0914490") == "starts with 0"
    assert norway.check_identifier(norway.ENH, "974760673") is None
    assert norway.check_identifier(norway.ENH, "974760674") == "check digit is wrong"
    assert norway.check_identifier(norway.RESH, "4001031") is None
    assert norway.check_identifier(norway.HER, "8093464") is None
    assert norway.check_identifier(norway.HER, "08093464") == "starts with 0"
    assert norway.check_identifier(norway.RESH, "abc") == "not a number"
    # Unknown systems are not this module's business.
    assert norway.check_identifier("http://example.org/mrn", "anything") is None
    assert norway.check_identifier("urn:oid:2.16.578.1.12.4.1.4.999", "x") is None


def test_person_systems_hold_their_own_kind():
    assert norway.check_identifier(norway.FNR, "70019950032") == \
        f"this is a D-number; use system {norway.DNR}"
    assert norway.check_identifier(norway.DNR, "15076500565") == \
        f"this is a fødselsnummer; use system {norway.FNR}"
    assert norway.check_identifier(norway.FNR, "13527248013").startswith("this is an H-number")
    fhn = next(n for n in (with_check_digits(f"9{i:08}") for i in range(1000, 2000)) if n)
    assert norway.check_identifier(norway.FNR, fhn) == \
        f"this is a felles hjelpenummer; use system {norway.FHN}"
    assert norway.check_identifier(norway.FHN, "15076500565") == \
        f"this is a fødselsnummer; use system {norway.FNR}"
    assert norway.check_identifier(norway.DNR, "50846202355") is None
    assert norway.check_identifier(norway.FNR, "10915596784", allow_synthetic=False) == \
        "a synthetic test number (month + 80) is not accepted here"
    assert norway.check_identifier(norway.DNR, "50846202355", allow_synthetic=False) is not None


def test_system_names_cover_every_system():
    systems = {norway.FNR, norway.DNR, norway.FHN, norway.HPR, norway.ENH, norway.RESH, norway.HER}
    assert set(norway.SYSTEM_NAMES) == systems
    assert norway.FNR == "urn:oid:2.16.578.1.12.4.1.4.1"
    assert norway.HER == "urn:oid:2.16.578.1.12.4.1.2"
