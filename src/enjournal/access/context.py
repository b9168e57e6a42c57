"""The access context of one request: who asks, what they attested, what they touched.

The web layer builds an ``AccessContext`` per request (``web/auth.py``) and makes it current
for the request with ``use()``; the guarded repository (``guard.py``) reads it to decide and
records what was touched in it; the audit log (``audit.py``) turns it into an AuditEvent at
the end. A ``ContextVar`` carries it because every service call of the request, including
those run in worker threads, must see the same one; code running outside any request (the
CLI, background consumers) sets a system context explicitly (``system_context``).
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterator

from . import scopes as sc
from .policy import Decision
from .principal import SYSTEM, Principal, Subject


@dataclass
class Touched:
    """One resource (or query) the request read or wrote."""
    type: str
    id: str | None
    version: int | None
    patient: str | None
    action: str             # C R U D E (AuditEvent.action)
    query: str | None = None    # for searches: the query string as given


@dataclass
class AccessContext:
    subject: Subject | None                  # None: not authenticated
    method: str = ""
    path: str = ""
    query: str = ""
    interaction: str = ""                    # read, search-type, create, ... (restful-interaction)
    client_address: str = ""
    touched: list[Touched] = field(default_factory=list)
    denied: Decision | None = None           # the first denial of the request, if any
    basis: Decision | None = None            # the decision that allowed patient data (for the audit record)
    emergency: bool = False                  # some access was emergency access (review)
    written: bool = False                    # a write's audit record went into its transaction
    status: int = 0                          # the HTTP status sent
    base: str = ""                           # this server's base URL as the request addressed it
    issued: set = field(default_factory=set)  # ids the server gave out for this request's creates

    @property
    def patients(self) -> list[str]:
        seen: dict[str, None] = {}
        for t in self.touched:
            if t.patient and t.patient != "*":
                seen.setdefault(t.patient)
        if self.subject is not None and self.subject.patient_id:
            seen.setdefault(self.subject.patient_id)
        return list(seen)


_current: ContextVar[AccessContext | None] = ContextVar("enjournal_access", default=None)

SYSTEM_PRINCIPAL = Principal(kind=SYSTEM, subject="enjournal", issuer="enjournal", name="enjournal",
                             client_id="enjournal", scopes=sc.parse("system/*.cruds"),
                             scope="system/*.cruds")


def current() -> AccessContext | None:
    return _current.get()


@contextlib.contextmanager
def use(ctx: AccessContext) -> Iterator[AccessContext]:
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def system_context(name: str = "enjournal") -> AccessContext:
    """A context for the platform's own work outside a request (import, demo, consumers)."""
    principal = SYSTEM_PRINCIPAL if name == "enjournal" else Principal(
        kind=SYSTEM, subject=name, issuer="enjournal", name=name, client_id=name,
        scopes=sc.parse("system/*.cruds"), scope="system/*.cruds")
    return AccessContext(Subject(principal), method="", path=name, interaction="batch")
