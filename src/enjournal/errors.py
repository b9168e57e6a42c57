"""One error vocabulary for the whole platform.

Code below the web layer raises these; only ``web`` turns them into an OperationOutcome
with the HTTP status (https://hl7.org/fhir/R4/operationoutcome.html). ``expression`` is
the FHIRPath-style location of the problem (``Patient.birthDate``, ``Bundle.entry[3]``,
or a search parameter name), so a client can tell what is wrong and where.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Issue:
    diagnostics: str
    expression: tuple[str, ...] = ()
    code: str = ""
    severity: str = "error"


class FhirError(Exception):
    status = 500
    code = "exception"

    def __init__(self, message: str, expression: str | tuple[str, ...] | None = None,
                 issues: list[Issue] | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if isinstance(expression, str):
            expression = (expression,)
        self.issues = issues or [Issue(message, tuple(expression or ()), self.code)]
        self.headers = headers or {}


class Invalid(FhirError):
    status, code = 400, "invalid"


class NotSupported(FhirError):
    status, code = 400, "not-supported"


class Unauthorized(FhirError):
    status, code = 401, "login"


class Forbidden(FhirError):
    status, code = 403, "forbidden"


class NotFound(FhirError):
    status, code = 404, "not-found"


class MethodNotAllowed(FhirError):
    status, code = 405, "not-supported"


class Conflict(FhirError):
    status, code = 409, "conflict"


class Gone(FhirError):
    status, code = 410, "deleted"


class PreconditionFailed(FhirError):
    status, code = 412, "conflict"


class TooLarge(FhirError):
    status, code = 413, "too-costly"


class UnsupportedMediaType(FhirError):
    status, code = 415, "not-supported"


class Unprocessable(FhirError):
    """Well-formed but breaks a business rule or profile (FHIR uses 422 for these)."""
    status, code = 422, "processing"


class TooCostly(FhirError):
    status, code = 400, "too-costly"


class TooManyRequests(FhirError):
    status, code = 429, "throttled"


class MultipleMatches(PreconditionFailed):
    """A conditional interaction matched more than one resource."""
    status, code = 412, "multiple-matches"
