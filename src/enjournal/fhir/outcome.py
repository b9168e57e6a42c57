"""OperationOutcome resources for errors and informational results
(https://hl7.org/fhir/R4/operationoutcome.html)."""
from __future__ import annotations

from .. import errors


def operation_outcome(exc: errors.FhirError) -> dict:
    """The OperationOutcome for an error: one issue per problem, each with its location."""
    issues = []
    for issue in exc.issues:
        item = {"severity": issue.severity or "error", "code": issue.code or exc.code,
                "diagnostics": issue.diagnostics}
        if issue.expression:
            item["expression"] = list(issue.expression)
        issues.append(item)
    return {"resourceType": "OperationOutcome", "issue": issues}


def information(message: str, code: str = "informational") -> dict:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "information", "code": code, "diagnostics": message}]}
