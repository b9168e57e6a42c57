"""Validation of a resource before it is written: pure, no I/O.

``validate_resource`` returns every problem as an ``errors.Issue`` (FHIRPath-style
expression, IssueType code, severity). A write is refused when any issue has severity
"error" (``blocking``); "warning" issues may be reported to the client with a successful
write. In strict mode (the default) every problem is an error. Checks:

1. resourceType is an R4 resource type, and the FHIR R4 structure (JSON types, unknown
   elements, required elements, primitive formats) per the specification
   (https://hl7.org/fhir/R4/json.html, https://hl7.org/fhir/R4/datatypes.html), by fhirkit;
2. dates that match the format but do not exist (1999-02-30), which fhirkit lets through;
3. ids of the resource and any resource inside it (contained, Bundle entries, Parameters):
   ``[A-Za-z0-9\\-\\.]{1,64}`` (https://hl7.org/fhir/R4/datatypes.html#id);
4. every Identifier of a known Norwegian system (fødselsnummer, D-number, HPR, ...),
   see ``norway``;
5. every code with a required binding is in its value set, see ``bindings`` (an error in
   lenient mode too: a code the server does not know breaks the meaning).

The write path calls this for every resource, so it is built for speed: fhirkit gets the
resource as JSON bytes (about twice as fast as handing it a dict) and the rest is one walk.
See docs/validation.md.
"""
from __future__ import annotations

import calendar
import re
from typing import Callable

import fhirkit
import orjson

from .. import errors
from . import bindings, norway

# The 146 resource types of FHIR R4 (4.0.1).
RESOURCE_TYPES: frozenset[str] = frozenset(fhirkit.RESOURCE_TYPES)

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")

# Element names whose type is date, dateTime or instant somewhere in R4, with choice
# elements spelled out (valueDate, effectiveDateTime, ...); taken from the snapshots of
# the R4 resource and datatype StructureDefinitions. Left out: ``value``, which is a plain
# string in Identifier and ContactPoint. The names that are also another type elsewhere
# (start, end, when, event, lockedDate) hold integers, codes, booleans or objects there,
# which never look like a date, so checking them by name is safe.
DATE_ELEMENTS: frozenset[str] = frozenset("""
    abatementDateTime answerDate answerDateTime approvalDate authored authoredOn birthDate
    bornDate collectedDateTime created createdDateTime creation date dateAsserted dateDateTime
    dateOfFirstAuthorization dateTime dateWritten deceasedDate deceasedDateTime
    defaultValueDate defaultValueDateTime defaultValueInstant detected dueDate effectiveDate
    effectiveDateTime effectiveInstant effectiveTime end enteredDate event expirationDate
    expiry fixedDate fixedDateTime fixedInstant identifiedDateTime ifModifiedSince
    internationalBirthDate issued lastModified lastOccurrence lastPerformed lastReviewDate
    lastUpdated lockedDate manufactureDate maxValueDate maxValueDateTime maxValueInstant
    minValueDate minValueDateTime minValueInstant nextScheduled occurredDateTime
    occurrenceDateTime onset onsetDateTime participantEffectiveDateTime patternDate
    patternDateTime patternInstant paymentDate performedDateTime presentationDate
    publicationDate received receivedTime recorded recordedDate recordedOn releaseDate
    restoreDate sent servicedDate start startDate started statusDate
    studyEffectiveDateTime time timeDateTime timestamp timingDate timingDateTime validTo
    validationDate valueDate valueDateTime valueInstant verificationDate when
    whenHandedOver whenPrepared
""".split())

_DATE_HEAD = re.compile(r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?")
# Not calendar.month_name: that follows the process locale, and messages are English.
_MONTHS = ("", "January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")

# fhirkit refuses JSON nested deeper than about 256 levels; the walk stops well below
# Python's recursion limit so such input is an Issue, never a RecursionError (a 500).
_MAX_DEPTH = 400

# What fhirkit's messages mean, as IssueType codes (https://hl7.org/fhir/R4/valueset-issue-type.html).
_REQUIRED = ("required element missing", "needs at least")
_STRUCTURE = ("unknown element", "expected ", "only one type may be given", "null",
              "an empty array", "the key appears more than once", "a resource needs",
              "nested too deeply")
# Problems that leave the resource storable and searchable: with strict=False they come
# back as warnings. Everything else (wrong JSON types, nulls, bad numbers, bad dates and
# times, unknown resource types) would break indexing or reading, so it stays an error.
_TOLERABLE = ("unknown element", "required element missing", "needs at least",
              "an empty array", "an empty string", "only one type may be given")
_TOLERABLE_FORMAT = re.compile(r"is not a valid (?!date|dateTime|instant|time)\w+$")

# The structural validator's signature: the resource as a dict or as its JSON bytes, and
# whether to be strict.
StructureCheck = Callable[[dict | bytes, bool], list[errors.Issue]]


def _code(message: str) -> str:
    if message.startswith(_REQUIRED):
        return "required"
    if message.startswith(_STRUCTURE) or "resource type" in message:
        return "structure"
    return "value"


def _tolerable(message: str) -> bool:
    return message.startswith(_TOLERABLE) or _TOLERABLE_FORMAT.search(message) is not None


def fhirkit_structure(resource: dict | bytes, strict: bool = True) -> list[errors.Issue]:
    """The FHIR R4 structural problems of ``resource`` (a dict, or its JSON bytes) found
    by fhirkit-rs, as Issues whose expression is the element path
    (``Patient.name[0].given[1]``). With ``strict=False`` the problems that leave the
    resource usable are warnings.

    This is the one place that knows fhirkit: another function with the same signature
    can be passed to ``validate_resource`` instead."""
    try:
        found = fhirkit.validate(resource)
    except (ValueError, TypeError) as exc:        # fhirkit.ParseError is a ValueError
        return [errors.Issue(f"not a FHIR resource: {exc}", (), "structure", "error")]
    issues = []
    for item in found:
        message = item.message
        severity = item.severity
        if not strict and severity == "error" and _tolerable(message):
            severity = "warning"
        issues.append(errors.Issue(message, (item.path,), _code(message), severity))
    return issues


def validate_resource(resource: dict, *, allow_synthetic: bool = True, strict: bool = True,
                      structure: StructureCheck = fhirkit_structure) -> list[errors.Issue]:
    """Every problem of ``resource`` (parsed FHIR R4 JSON) as Issues; an empty list means
    valid. The write must be refused when any issue has severity "error" (``blocking``).

    ``allow_synthetic``: accept Skatteetaten's synthetic fødselsnummer (month + 80).
    ``strict``: when False, structural problems that leave the resource usable (unknown
    elements, missing required elements, badly formatted codes and uris, empty strings
    and arrays) are returned as warnings instead of errors. Norwegian identifiers, ids,
    resource types, JSON types, numbers, dates and codes outside a required value set stay
    errors either way.
    """
    if not isinstance(resource, dict):
        return [errors.Issue("a resource must be a JSON object", (), "structure")]
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        return [errors.Issue("a resource needs a resourceType", ("resourceType",), "required")]
    if resource_type not in RESOURCE_TYPES:
        # Nothing else can be checked against an unknown type.
        return [errors.Issue(f"{resource_type!r} is not a FHIR R4 resource type",
                             ("resourceType",), "not-supported")]
    try:
        # fhirkit reads JSON bytes about twice as fast as it walks a dict, and orjson
        # writes them in a microsecond or two. Values orjson cannot write (Decimal,
        # integers beyond 64 bits, non-string keys, very deep nesting) go as the dict.
        raw: bytes | None = orjson.dumps(resource)
    except TypeError:                 # orjson.JSONEncodeError is a TypeError
        raw = None
    issues = structure(resource if raw is None else raw, strict)
    _Walk(issues, allow_synthetic).node(resource, [resource_type], 0)
    issues += bindings.check(resource)
    return issues


def blocking(issues: list[errors.Issue]) -> list[errors.Issue]:
    """The issues that must stop a write: those with severity "error"."""
    return [issue for issue in issues if issue.severity == "error"]


class _Walk:
    """One pass over the JSON tree for the checks fhirkit does not make.

    The path is a list of segments, joined only when an issue is found: most resources
    have none, and building strings for every node would cost more than the checks."""

    __slots__ = ("issues", "allow_synthetic")

    def __init__(self, issues: list[errors.Issue], allow_synthetic: bool):
        self.issues = issues
        self.allow_synthetic = allow_synthetic

    def node(self, obj: dict, path: list[str], depth: int) -> None:
        if depth > _MAX_DEPTH:
            return
        if "resourceType" in obj:
            self.resource_id(obj, path)
        for key, value in obj.items():
            kind = type(value)
            if kind is str:
                if key in DATE_ELEMENTS:
                    self.date(value, path, key)
            elif kind is dict:
                path.append(key)
                if key == "identifier" or key.endswith("Identifier"):
                    self.identifier(value, path)
                self.node(value, path, depth + 1)
                path.pop()
            elif kind is list:
                self.items(key, value, path, depth)

    def items(self, key: str, values: list, path: list[str], depth: int) -> None:
        is_identifier = key == "identifier" or key.endswith("Identifier")
        is_date = key in DATE_ELEMENTS                  # Timing.event: a list of dateTimes
        for i, item in enumerate(values):
            kind = type(item)
            if kind is dict:
                path.append(f"{key}[{i}]")
                if is_identifier:
                    self.identifier(item, path)
                self.node(item, path, depth + 1)
                path.pop()
            elif kind is str and is_date:
                self.date(item, path, f"{key}[{i}]")

    def resource_id(self, obj: dict, path: list[str]) -> None:
        rid = obj.get("id")
        # Non-strings and empty strings are reported by the structure check.
        if type(rid) is str and rid and not _ID.fullmatch(rid):
            self.issues.append(errors.Issue(
                f"id {rid!r} is not a valid FHIR id: 1 to 64 letters, digits, '-' or '.'",
                (_join(path, "id"),), "value"))

    def identifier(self, ident: dict, path: list[str]) -> None:
        system, value = ident.get("system"), ident.get("value")
        if type(system) is not str or type(value) is not str:
            return
        name = norway.SYSTEM_NAMES.get(system)
        if name is None:
            return
        reason = norway.check_identifier(system, value, self.allow_synthetic)
        if reason:
            self.issues.append(errors.Issue(
                f"not a valid {name}: {reason}", (_join(path, "value"),), "value"))

    def date(self, text: str, path: list[str], key: str) -> None:
        # Only day 29-31 or year 0000 can be impossible; test that first (most dates
        # are neither), then parse. Text that is not date-shaped is the structure
        # check's business.
        if text.startswith("0000"):
            if _DATE_HEAD.match(text) is None:
                return
            problem = "there is no year 0000"
        elif text[8:10] > "28" and (m := _DATE_HEAD.match(text)) and m[3]:
            year, month, day = int(m[1]), int(m[2]), int(m[3])
            if not 1 <= month <= 12 or day <= (last := calendar.monthrange(year, month)[1]):
                return
            problem = f"{_MONTHS[month]} {year} has {last} days"
        else:
            return
        self.issues.append(errors.Issue(f"{text!r} is not a valid date: {problem}",
                                        (_join(path, key),), "value"))


def _join(path: list[str], last: str) -> str:
    return ".".join(path) + "." + last
