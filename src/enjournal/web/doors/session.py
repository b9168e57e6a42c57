"""Login sessions of the web front doors, kept in the database so that every worker
process (``serve --workers 2``) and a restart see the same ones.

A session is a row of the store's ``job`` table (kind ``door-session``: a keyed JSON row
on SQLite and PostgreSQL alike) under the SHA-256 of the secret cookie value, so someone
who can read the database cannot use the rows as cookies. A session ends at logout
(row deleted), after ``session_idle_minutes`` without a request, or when its access token
expires: an ended session is deleted when next seen and reads as none, and rows idle past
the limit are swept when logins start (at most every five minutes per process).
"""
from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import orjson

KIND = "door-session"
# how often a session's "last seen" is written while it is used (not on every request)
TOUCH_MS = 60_000
SWEEP_MS = 300_000         # how often a process removes ended sessions' rows (at a login start)


@dataclass(frozen=True)
class User:
    """The person logged in through a door: name, kind (``principal.CITIZEN`` or
    ``PERSONNEL``), fødselsnummer, HPR number (personnel) and, for citizens, the id of
    their own Patient resource (None when the platform has none)."""
    name: str
    kind: str
    subject: str
    pid: str | None = None
    hpr: str | None = None
    patient: str | None = None
    org: str | None = None


@dataclass
class Session:
    """One browser's login at one door. ``data`` is the door's own state, saved with the
    session by ``save()`` (the workspace keeps the per-patient attestation there, the portal
    whom the citizen acts for: both under ``data["attestation"]``)."""
    id: str                                 # the secret cookie value
    door: str                               # the door's prefix
    user: User | None = None                # None while the login is under way
    token: str = ""                         # the access token the pages act with
    expires: int = 0                        # the token's expiry, epoch seconds
    lang: str = "nb"
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    data: dict = field(default_factory=dict)
    pending: dict | None = None             # a login under way: state, nonce, verifier, next
    created: int = 0                        # epoch ms
    seen: int = 0                           # epoch ms of the last request
    store: Any = field(default=None, repr=False, compare=False)

    @property
    def logged_in(self) -> bool:
        return self.user is not None and bool(self.token)

    @property
    def attestation(self) -> dict | None:
        value = self.data.get("attestation")
        return value if isinstance(value, dict) else None

    def save(self) -> None:
        """Write the session (its ``data``, ``lang``, ...) to the database now."""
        self.store.save(self)


def _key(session_id: str) -> str:
    return "ds-" + hashlib.sha256(session_id.encode()).hexdigest()[:40]


class SessionStore:
    """Creates, reads, saves and ends sessions in the store's ``job`` table."""

    def __init__(self, store: Any, idle_minutes: int = 30, clock: Callable[[], float] | None = None):
        self.store = store
        self.idle_ms = max(1, idle_minutes) * 60_000
        self.clock = clock or time.time
        self._swept = 0

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def new(self, door: str, lang: str = "nb") -> Session:
        """A fresh, unsaved session with a new secret id (and, at most every few minutes,
        the rows of sessions idle too long are removed)."""
        now = self.now_ms()
        if now - self._swept > SWEEP_MS and hasattr(self.store, "job_sweep"):
            self._swept = now
            self.store.job_sweep(KIND, now - self.idle_ms - TOUCH_MS)
        return Session(id=secrets.token_urlsafe(32), door=door, lang=lang, created=now, seen=now, store=self)

    def get(self, session_id: str | None, door: str) -> Session | None:
        """The live session with this cookie value at this door, or None (unknown, another
        door's, idle too long or its token expired: such a row is deleted)."""
        if not session_id or len(session_id) > 100:
            return None
        row = self.store.job_get(_key(session_id))
        if row is None or row[0] != KIND:
            return None
        try:
            state = orjson.loads(row[5])
        except orjson.JSONDecodeError:
            return None
        now = self.now_ms()
        user = state.get("user")
        session = Session(id=session_id, door=state.get("door", ""), user=User(**user) if user else None,
                          token=state.get("token", ""), expires=int(state.get("expires", 0)),
                          lang=state.get("lang", "nb"), csrf=state.get("csrf", ""), data=state.get("data") or {},
                          pending=state.get("pending"), created=int(state.get("created", 0)),
                          seen=int(state.get("seen", 0)), store=self)
        ended = now - session.seen > self.idle_ms or (session.logged_in and session.expires * 1000 <= now)
        if session.door != door or ended:
            if ended:
                self.delete(session)
            return None
        if now - session.seen > TOUCH_MS:
            session.seen = now
            self.save(session)
        return session

    def save(self, session: Session) -> None:
        state = {"door": session.door, "user": asdict(session.user) if session.user else None,
                 "token": session.token, "expires": session.expires, "lang": session.lang, "csrf": session.csrf,
                 "data": session.data, "pending": session.pending, "created": session.created,
                 "seen": session.seen}
        owner = session.user.subject if session.user else ""
        self.store.job_put(_key(session.id), KIND, owner, "active", orjson.dumps(state).decode(), self.now_ms())

    def delete(self, session: Session) -> None:
        self.store.job_delete(_key(session.id))

    def rotate(self, session: Session) -> Session:
        """The same session under a new secret id (after login: a session id known before
        the login is worth nothing after it)."""
        self.delete(session)
        session.id = secrets.token_urlsafe(32)
        session.csrf = secrets.token_urlsafe(32)
        return session
