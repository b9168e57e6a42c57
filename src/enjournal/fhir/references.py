"""Literal references inside a resource: find them, resolve them, rewrite them.

https://hl7.org/fhir/R4/references.html. A ``Reference`` is any object with a string
``reference``; relative ones look like ``Type/id`` or ``Type/id/_history/v``.
"""
from __future__ import annotations

import re
from typing import Callable, Iterator

_RELATIVE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?$")


def iter_references(node: object, path: str = "") -> Iterator[tuple[str, dict]]:
    """Every Reference object in ``node`` with its FHIRPath-style path (``Observation.subject``).

    Contained resources are walked as well; references inside them are part of the resource.
    """
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            yield path, node
        for key, value in node.items():
            if key in ("reference", "resourceType") or key.startswith("_"):
                continue
            if isinstance(value, (dict, list)):
                yield from iter_references(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            if isinstance(item, (dict, list)):
                yield from iter_references(item, f"{path}[{index}]")


def parse_relative(reference: str) -> tuple[str, str, str | None] | None:
    """``("Patient", "123", version or None)`` for ``Patient/123[/_history/v]``, else None."""
    m = _RELATIVE.match(reference)
    return (m.group(1), m.group(2), m.group(3)) if m else None


def local_part(reference: str, base_urls: tuple[str, ...]) -> str:
    """Strip this server's base URL from an absolute reference so it becomes relative."""
    for base in base_urls:
        if base and reference.startswith(base.rstrip("/") + "/"):
            return reference[len(base.rstrip("/")) + 1:]
    return reference


def rewrite_references(node: object, replace: Callable[[str], str | None]) -> int:
    """Replace each ``reference`` value for which ``replace`` returns a string; returns how many.

    Only Reference elements are rewritten; narrative is left as it is
    (FHIR transaction rules: https://hl7.org/fhir/R4/http.html#trules).
    """
    count = 0
    for _path, ref in iter_references(node):
        new = replace(ref["reference"])
        if new is not None:
            ref["reference"] = new
            count += 1
    return count
