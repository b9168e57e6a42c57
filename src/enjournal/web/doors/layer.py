"""The doors' ASGI layer, in front of ``web/auth.Authenticate``.

For a request under a door's prefix it looks up the session of the door's cookie and
replaces the request's access headers with the session's: ``Authorization: Bearer <the
session's access token>`` and, from ``session.data["attestation"]``, ``X-Patient``,
``X-Purpose-Of-Use``, ``X-Access-Reason`` and ``X-Consent-Declared``. So ``Authenticate``
builds the page's access context exactly as for an API request with that token: the guard
checks and the audit log records every read and write of a page the same way, with no
second copy of the access rules. A browser cannot smuggle its own access headers into a
page: they are removed first. Without a logged-in session the request is marked public
(``PUBLIC_SCOPE_KEY``) and the door's page answers with a redirect to its login.
"""
from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool

from ..auth import ACCESS_HEADERS
from .door import PUBLIC_SCOPE_KEY, SESSION_SCOPE_KEY, Door

_ACCESS = {name.encode("ascii") for name in ACCESS_HEADERS}    # what a browser may not send itself


def attestation_headers(attestation: dict | None) -> list[tuple[bytes, bytes]]:
    """The trust-framework headers (docs/access.md) for a session's attestation."""
    if not attestation:
        return []
    out = []
    values = {b"x-patient": attestation.get("patient"), b"x-purpose-of-use": attestation.get("purpose"),
              b"x-access-reason": attestation.get("reason")}
    for name, value in values.items():
        if isinstance(value, str) and value.strip():
            out.append((name, " ".join(value.split()).encode("utf-8")))
    if attestation.get("consent"):
        out.append((b"x-consent-declared", b"true"))
    return out


class DoorsLayer:
    """ASGI middleware: door cookie → session → the session's token and attestation."""

    def __init__(self, app: Any, doors: list[Door]):
        self.app = app
        self.state = getattr(app, "state", None)
        self.doors = sorted(doors, key=lambda d: -len(d.prefix))

    def door_of(self, path: str) -> Door | None:
        for door in self.doors:
            if path == door.prefix or path.startswith(door.prefix + "/"):
                return door
        return None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        door = self.door_of(scope.get("path", "")) if scope["type"] == "http" else None
        if door is None:
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k not in _ACCESS]
        session_id = _cookie(scope["headers"], door.cookie)
        session = await run_in_threadpool(door.sessions.get, session_id, door.prefix) if session_id else None
        scope = dict(scope)
        scope[SESSION_SCOPE_KEY] = session
        if session is not None and session.logged_in:
            headers.append((b"authorization", b"Bearer " + session.token.encode("ascii")))
            headers += attestation_headers(session.attestation)
        else:
            scope[PUBLIC_SCOPE_KEY] = True
        scope["headers"] = headers
        await self.app(scope, receive, send)


def _cookie(headers: list, name: str) -> str | None:
    """The value of cookie ``name`` (parsed by hand: one odd cookie of another site on the
    same host must not hide ours)."""
    for key, value in headers:
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                k, eq, v = part.strip().partition("=")
                if eq and k == name:
                    return v.strip().strip('"')
    return None
