"""Form errors for the doors' pages: a field name → message mapping that the
``templates/doors/forms.html`` macros show at the field and in the error summary.

An ``errors.Invalid`` (or any ``FhirError``) from a service maps to fields by each issue's
``expression``: the expression itself when it is a field name, or a name given in
``fields`` (``{"Consent.provision.actor": "hpr"}``), else the last part of a dotted path
when that is a field; what maps to no field is a general error (shown in the summary only).
"""
from __future__ import annotations

from typing import Iterable

from ... import errors

GENERAL = "_general"


class CsrfRejected(Exception):
    """The form's CSRF token is missing or wrong: nothing was done (400)."""


class FormErrors(dict):
    """``{field: message}``, in the order added; ``GENERAL`` holds errors of no field."""

    def add(self, field: str | None, message: str) -> "FormErrors":
        key = field or GENERAL
        if key in self:
            self[key] = f"{self[key]} {message}"
        else:
            self[key] = message
        return self

    @property
    def fields(self) -> dict[str, str]:
        return {k: v for k, v in self.items() if k != GENERAL}

    @property
    def general(self) -> str | None:
        return self.get(GENERAL)

    @classmethod
    def from_error(cls, exc: errors.FhirError, known: Iterable[str] = (),
                   fields: dict[str, str] | None = None) -> "FormErrors":
        """The errors of ``exc``, each at the field its expression names."""
        out = cls()
        known = set(known)
        fields = fields or {}
        for issue in exc.issues:
            target = None
            for expression in issue.expression:
                if expression in fields:
                    target = fields[expression]
                elif expression in known:
                    target = expression
                else:
                    tail = expression.split(".")[-1].split("[")[0]
                    target = tail if tail in known else None
                if target:
                    break
            out.add(target, issue.diagnostics)
        if not out:
            out.add(None, exc.message)
        return out
