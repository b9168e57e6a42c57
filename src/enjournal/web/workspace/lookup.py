"""The "find a patient" form: what the clinician typed, checked before anything is asked.

Pure functions over the submitted form. A fødselsnummer or D-number must pass the check
digits (``fhir/norway.py``: the same rule the FHIR validator applies); a name search needs
a name and a birth date (a whole date, ``DD.MM.ÅÅÅÅ`` or ``ÅÅÅÅ-MM-DD``). Error messages are
gettext msgids (marked with ``N_``) that the page translates; the keys are the form's field
names, so the error summary links to the field.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from ...fhir import norway


def N_(message: str) -> str:
    """Marks a msgid for extraction; the template translates it."""
    return message


NUMBER_FIELD, NAME_FIELD, BIRTH_FIELD = "number", "name", "birthdate"
_SPACES = re.compile(r"[\s.\-]")
_NORWEGIAN_DATE = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# the kinds of person number a clinician may search by (key: whether synthetic ones count)
_SEARCHABLE = {False: ("fnr", "dnr"), True: ("fnr", "dnr", "synthetic-fnr", "synthetic-dnr")}


@dataclass(frozen=True)
class Lookup:
    """A checked search: by person number (``number``) or by name and birth date."""
    number: str | None = None
    name: str | None = None
    birth_date: date | None = None

    @property
    def by_number(self) -> bool:
        return self.number is not None


def check_lookup(form: dict, allow_synthetic: bool = True) -> tuple[Lookup | None, dict[str, str]]:
    """(the lookup, {}) for a good form, (None, {field: msgid}) otherwise."""
    number = _SPACES.sub("", str(form.get(NUMBER_FIELD) or ""))
    name = " ".join(str(form.get(NAME_FIELD) or "").split())
    birth_text = str(form.get(BIRTH_FIELD) or "").strip()
    if number:
        # one parse: kind() is None for a number check_person_number refuses; H- and
        # FH-numbers are valid but name no person one can look up here
        if norway.kind(number) not in _SEARCHABLE[allow_synthetic]:
            return None, {NUMBER_FIELD: N_("Ikke et gyldig fødselsnummer eller D-nummer: kontroller de 11 sifrene")}
        return Lookup(number=number), {}
    errors: dict[str, str] = {}
    if not name and not birth_text:
        return None, {NUMBER_FIELD: N_("Skriv inn fødselsnummer eller D-nummer, eller navn og fødselsdato")}
    if len(name) < 2:
        errors[NAME_FIELD] = N_("Skriv inn pasientens navn (minst to bokstaver)")
    birth = parse_date(birth_text)
    if birth is None:
        errors[BIRTH_FIELD] = N_("Skriv fødselsdatoen som DD.MM.ÅÅÅÅ")
    elif birth > date.today():
        errors[BIRTH_FIELD] = N_("Fødselsdatoen er fram i tid")
    if errors:
        return None, errors
    return Lookup(name=name, birth_date=birth), {}


def parse_date(text: str) -> date | None:
    """A date written ``DD.MM.YYYY`` (Norwegian) or ``YYYY-MM-DD``; None if it is neither."""
    match = _NORWEGIAN_DATE.match(text)
    try:
        if match:
            return date(int(match.group(3)), int(match.group(2)), int(match.group(1)))
        if _ISO_DATE.match(text):
            return date.fromisoformat(text)
    except ValueError:
        return None
    return None


def masked(number: str | None) -> str:
    """A person number with the individual number and check digits hidden: ``020132 *****``."""
    if not number:
        return ""
    return f"{number[:6]} *****"
