"""``_summary`` and ``_elements``: return only part of a resource
(https://hl7.org/fhir/R4/search.html#summary, #elements).

Which elements are "summary" comes from the R4 StructureDefinitions (``isSummary``),
shipped as ``data/summary-elements.json``. A reduced resource is tagged SUBSETTED.
"""
from __future__ import annotations

import json
from functools import cache
from importlib import resources

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED",
             "display": "As requested, resource has been subsetted"}
_ALWAYS = ("resourceType", "id", "meta")


@cache
def _table() -> dict:
    text = resources.files("enjournal.fhir").joinpath("data/summary-elements.json").read_text()
    return json.loads(text)


def _matches(key: str, names: set[str]) -> bool:
    if key in names:
        return True
    for name in names:
        if name.endswith("[x]") and key.startswith(name[:-3]) and key[len(name) - 3:len(name) - 2].isupper():
            return True
    return False


def apply_summary(resource: dict, summary: str | None, elements: tuple | None) -> dict:
    """The resource reduced by ``_summary`` (true|text|data|count) or ``_elements``."""
    if not summary and not elements:
        return resource
    info = _table().get(resource.get("resourceType"), {"summary": [], "mandatory": []})
    mandatory = set(info["mandatory"])
    if summary == "true":
        keep = set(info["summary"]) | mandatory
        out = {k: v for k, v in resource.items() if k in _ALWAYS or _matches(k, keep)}
    elif summary == "text":
        out = {k: v for k, v in resource.items() if k in _ALWAYS or k == "text" or _matches(k, mandatory)}
    elif summary == "data":
        out = {k: v for k, v in resource.items() if k != "text"}
    elif elements:
        keep = {e.split(".")[0] for e in elements} | mandatory
        out = {k: v for k, v in resource.items() if k in _ALWAYS or _matches(k, keep)}
    else:
        return resource
    if out != resource:
        meta = dict(out.get("meta") or {})
        meta["tag"] = list(meta.get("tag") or []) + [SUBSETTED]
        out["meta"] = meta
    return out
