"""Literal references inside a resource: find them, resolve them, rewrite them.

https://hl7.org/fhir/R4/references.html. A ``Reference`` is any object with a string
``reference``; relative ones look like ``Type/id`` or ``Type/id/_history/v``.
"""
from __future__ import annotations

import re
from typing import Callable, Iterator

_RELATIVE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?$")


def reference_objects(node: object) -> list[dict]:
    """Every Reference object (a dict with a string ``reference``) inside ``node``, in
    document order, contained resources and extensions included. Paths are left out to
    keep this cheap: it runs on every write; ``path_of`` finds one when an error needs it."""
    out: list[dict] = []
    _collect(node, out)
    return out


def _collect(node: object, out: list) -> None:
    if type(node) is dict:
        if type(node.get("reference")) is str:
            out.append(node)
        for value in node.values():
            kind = type(value)
            if kind is dict or kind is list:
                _collect(value, out)
    else:
        for value in node:
            kind = type(value)
            if kind is dict or kind is list:
                _collect(value, out)


def path_of(node: object, target: dict, path: str = "") -> str | None:
    """The FHIRPath-style path (``subject``, ``component[1].valueReference``) of ``target`` in ``node``."""
    if node is target:
        return path
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                found = path_of(value, target, f"{path}.{key}" if path else key)
                if found is not None:
                    return found
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found = path_of(value, target, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def iter_references(node: object) -> Iterator[tuple[str, dict]]:
    """Every Reference object with its path (slower; for reports, not for the write path)."""
    for ref in reference_objects(node):
        yield path_of(node, ref) or "", ref


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


def rewrite_references(node: object, replace: Callable[[str], str | None],
                       refs: list[dict] | None = None) -> list[dict]:
    """Replace each ``reference`` value for which ``replace`` returns a string; returns every
    Reference object found (so callers need not walk the resource again). ``refs``: the
    Reference objects of ``node`` when the caller already has them.

    Only Reference elements are rewritten; narrative is left as it is
    (FHIR transaction rules: https://hl7.org/fhir/R4/http.html#trules).
    """
    if refs is None:
        refs = reference_objects(node)
    for ref in refs:
        new = replace(ref["reference"])
        if new is not None:
            ref["reference"] = new
    return refs
