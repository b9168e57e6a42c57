"""SMART App Launch v2 scopes (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html).

``patient/Observation.rs``, ``user/*.cruds``, ``system/*.rs``, and the v1 forms ``.read``,
``.write`` and ``.*``. A scope grants interactions: c create, r read (read, vread, instance
history), u update (update, patch), d delete, s search (search, type history). Scopes with a
v2 query (``patient/Observation.rs?category=...``) are narrower than we can enforce per
resource, so they grant nothing (a client that needs them gets a 403 that says why).
"""
from __future__ import annotations

from dataclasses import dataclass

_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
CONTEXTS = ("patient", "user", "system")


@dataclass(frozen=True)
class ResourceScope:
    context: str        # patient | user | system
    type: str           # a resource type or "*"
    letters: str        # subset of "cruds"


def parse(text: str) -> tuple[ResourceScope, ...]:
    """The resource scopes in a space-separated scope string (others are ignored here)."""
    out = []
    for item in (text or "").split():
        scope = parse_one(item)
        if scope is not None:
            out.append(scope)
    return tuple(out)


def parse_one(item: str) -> ResourceScope | None:
    context, slash, rest = item.partition("/")
    if not slash or context not in CONTEXTS or "?" in rest:
        return None
    type_, dot, perms = rest.rpartition(".")
    if not dot or not type_:
        return None
    if perms in _V1:
        letters = _V1[perms]
    else:
        letters = perms
        if not letters or any(c not in "cruds" for c in letters) or list(letters) != sorted(
                letters, key="cruds".index) or len(set(letters)) != len(letters):
            return None
    return ResourceScope(context, type_, letters)


def allows(scopes: tuple[ResourceScope, ...], type: str, letter: str,
           contexts: tuple[str, ...] = CONTEXTS) -> bool:
    """Whether any scope of the given contexts grants ``letter`` on ``type``."""
    for scope in scopes:
        if scope.context in contexts and letter in scope.letters and scope.type in ("*", type):
            return True
    return False


# interaction -> the scope letter it needs
LETTER = {"read": "r", "vread": "r", "history-instance": "r", "search": "s", "history-type": "s",
          "history-system": "s", "create": "c", "update": "u", "patch": "u", "delete": "d",
          "operation": "r"}
