"""The CapabilityStatement (``/metadata``): what this server really does
(https://hl7.org/fhir/R4/capabilitystatement.html). Built from the search-parameter
registry, so it lists exactly the parameters search accepts."""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from .. import FHIR_VERSION, __version__
from ..access.provider import enabled as provider_enabled

_INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
                 "search-type"]
_UNSUPPORTED_TYPES = {"special"}
# Bulk Data Access IG STU2 (https://hl7.org/fhir/uv/bulkdata/STU2/): $export at system level,
# on Patient (every patient) and on Group (its members), as its CapabilityStatement places them
_BULK = "http://hl7.org/fhir/uv/bulkdata"
_BULK_VERSION = "2.0.0"
_SUMMARY = "https://enjournal.no/fhir/OperationDefinition"      # the summary care record (docs/summary.md)
_CRITICAL_OPERATIONS = [
    {"name": "confirm", "definition": f"{_SUMMARY}/confirm",
     "documentation": "Mark critical information as confirmed now by the caller (docs/summary.md)"},
    {"name": "entered-in-error", "definition": f"{_SUMMARY}/entered-in-error",
     "documentation": "Mark critical information entered in error, with a reason (docs/summary.md)"},
]
_BULK_RESOURCE_OPERATIONS = {
    "Patient": [{"name": "export", "definition": f"{_BULK}/OperationDefinition/patient-export|{_BULK_VERSION}",
                 "documentation": "Bulk Data export of every patient's compartment"},
                {"name": "summary", "definition": "http://hl7.org/fhir/uv/ips/OperationDefinition/summary",
                 "documentation": "The summary care record (kjernejournal) as an IPS-shaped document Bundle "
                                  "(docs/summary.md)"}],
    "AllergyIntolerance": _CRITICAL_OPERATIONS,
    "Flag": _CRITICAL_OPERATIONS,
    "Group": [{"name": "export", "definition": f"{_BULK}/OperationDefinition/group-export|{_BULK_VERSION}",
               "documentation": "Bulk Data export of the compartments of the Group's Patient members"}],
}


def capability_builder(registry: Any, settings: Any):
    builtin = provider_enabled(settings.builtin_idp, settings.database)   # its endpoints are ours

    @lru_cache(maxsize=8)
    def build(base: str) -> dict:
        resources = []
        for type_ in registry.resource_types():
            params = []
            for code, p in sorted(registry.for_type(type_).items()):
                if p.type in _UNSUPPORTED_TYPES or code in ("_text", "_content", "_query", "_list", "_filter"):
                    continue
                params.append({"name": code, "definition": p.url, "type": p.type})
            ref_params = sorted(c for c, p in registry.for_type(type_).items() if p.type == "reference")
            resources.append({
                "type": type_,
                "interaction": [{"code": c} for c in _INTERACTIONS],
                "versioning": "versioned-update",
                "readHistory": True,
                "updateCreate": True,
                "conditionalCreate": True,
                "conditionalRead": "full-support",      # If-None-Match and If-Modified-Since
                "conditionalUpdate": True,
                "conditionalDelete": "multiple",
                "referencePolicy": ["literal", "logical", "enforced", "local"],
                "searchInclude": [f"{type_}:{c}" for c in ref_params] + [f"{type_}:*"],
                "searchRevInclude": ["*"],
                "searchParam": params,
                **({"operation": _BULK_RESOURCE_OPERATIONS[type_]} if type_ in _BULK_RESOURCE_OPERATIONS else {}),
            })
        return {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2026-11-22",
            "publisher": "enjournal",
            "kind": "instance",
            "instantiates": [f"{_BULK}/CapabilityStatement/bulk-data|{_BULK_VERSION}"],
            "software": {"name": "enjournal", "version": __version__},
            "implementation": {"description": "enjournal FHIR R4 server", "url": base},
            "fhirVersion": FHIR_VERSION,
            "format": ["application/fhir+json", "json"],
            "patchFormat": ["application/json-patch+json"],
            "rest": [{
                "mode": "server",
                "documentation": "Search modifiers: string :exact :contains :missing; token :text :not :of-type "
                                 ":missing; reference :[type] :identifier :missing and chains; uri :above :below; "
                                 "all prefixes eq ne gt lt ge le sa eb ap. Not supported: token :in :not-in "
                                 ":above :below (no terminology service), _text, _content, _filter, _list, near.",
                "security": {
                    "cors": False,
                    "service": [{"coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR"}], "text": "OAuth2 bearer tokens (SMART App Launch v2)"}],
                    **({"extension": [{
                        "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                        "extension": [{"url": "authorize", "valueUri": f"{base}/oidc/authorize"},
                                      {"url": "token", "valueUri": f"{base}/oidc/token"}]}]} if builtin else {}),
                    "description": "Every request for data needs a bearer token (JWT) from a trusted OpenID "
                                   "issuer; health personnel attest purpose of use and patient per request "
                                   "(X-Purpose-Of-Use, X-Patient). See /.well-known/smart-configuration.",
                },
                "resource": resources,
                "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"},
                                {"code": "search-system"}],
                "searchParam": [{"name": n, "type": t} for n, t in (("_id", "token"), ("_lastUpdated", "date"),
                                                                    ("_tag", "token"), ("_profile", "uri"),
                                                                    ("_security", "token"), ("_type", "token"))],
                "operation": [
                    {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"},
                    {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
                    {"name": "export", "definition": f"{_BULK}/OperationDefinition/export|{_BULK_VERSION}",
                     "documentation": "Bulk Data system-level export for system clients (docs/bulk-export.md)"},
                ],
            }],
        }
    return build
