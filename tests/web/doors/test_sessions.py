"""Door sessions in the database: they survive another process (a second Platform on the same
file), end after the idle time, when the token expires, and at another door."""
from __future__ import annotations

import pytest

from enjournal.app import Platform
from enjournal.settings import Settings
from enjournal.web.doors import SessionStore, User


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path):
    platform = Platform(Settings(database=f"sqlite:///{tmp_path}/s.db"))
    yield platform.store, tmp_path
    platform.close()


def logged_in(sessions: SessionStore, clock: Clock, door: str = "/innbygger"):
    s = sessions.new(door)
    s.user = User(name="Else Hølland", kind="citizen", subject="sub-1", pid="18854005231", patient="p1")
    s.token = "token-1"
    s.expires = int(clock.now) + 3600
    s.data["attestation"] = {"patient": "Patient/p2"}
    sessions.save(s)
    return s


def test_a_session_is_read_back_by_another_process(store):
    raw, tmp = store
    clock = Clock()
    s = logged_in(SessionStore(raw, 30, clock), clock)
    other = Platform(Settings(database=f"sqlite:///{tmp}/s.db"))       # as a second worker would
    try:
        again = SessionStore(other.store, 30, clock).get(s.id, "/innbygger")
        assert again is not None and again.user.name == "Else Hølland" and again.token == "token-1"
        assert again.data == {"attestation": {"patient": "Patient/p2"}} and again.csrf == s.csrf
    finally:
        other.close()


def test_the_database_holds_no_usable_cookie(store):
    raw, _ = store
    clock = Clock()
    s = logged_in(SessionStore(raw, 30, clock), clock)
    assert raw.job_get(s.id) is None, "rows are keyed by a hash of the cookie, not the cookie"


def test_idle_sessions_end(store):
    raw, _ = store
    clock = Clock()
    sessions = SessionStore(raw, 30, clock)
    s = logged_in(sessions, clock)
    clock.now += 29 * 60
    assert sessions.get(s.id, "/innbygger") is not None      # used: idle time starts again
    clock.now += 29 * 60
    assert sessions.get(s.id, "/innbygger") is not None
    clock.now += 31 * 60
    assert sessions.get(s.id, "/innbygger") is None
    clock.now -= 31 * 60
    assert sessions.get(s.id, "/innbygger") is None, "an ended session is deleted"


def test_a_session_ends_with_its_token(store):
    raw, _ = store
    clock = Clock()
    sessions = SessionStore(raw, 600, clock)
    s = logged_in(sessions, clock)
    clock.now += 3601
    assert sessions.get(s.id, "/innbygger") is None


def test_a_session_belongs_to_one_door(store):
    raw, _ = store
    clock = Clock()
    sessions = SessionStore(raw, 30, clock)
    s = logged_in(sessions, clock, "/innbygger")
    assert sessions.get(s.id, "/helsepersonell") is None
    assert sessions.get(s.id, "/innbygger") is not None
    assert sessions.get("made-up", "/innbygger") is None and sessions.get("", "/innbygger") is None


def test_rotate_gives_a_new_id_and_token(store):
    raw, _ = store
    clock = Clock()
    sessions = SessionStore(raw, 30, clock)
    s = logged_in(sessions, clock)
    old_id, old_csrf = s.id, s.csrf
    sessions.rotate(s)
    sessions.save(s)
    assert s.id != old_id and s.csrf != old_csrf
    assert sessions.get(old_id, "/innbygger") is None and sessions.get(s.id, "/innbygger") is not None


def test_sessions_idle_too_long_are_swept_when_a_login_starts(store):
    raw, _ = store
    clock = Clock()
    sessions = SessionStore(raw, 30, clock)
    old = logged_in(sessions, clock)
    clock.now += 40 * 60
    fresh = logged_in(SessionStore(raw, 30, clock), clock)     # another process starts a login
    from enjournal.web.doors.session import _key
    assert raw.job_get(_key(old.id)) is None, "the idle session's row is gone"
    assert raw.job_get(_key(fresh.id)) is not None
