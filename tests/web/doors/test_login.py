"""A door's login over real HTTP: OpenID Connect code flow with PKCE against the built-in
provider, state and nonce checked, the session cookie's flags, logout, expiry, and that a
browser cannot bring its own access headers into a page."""
from __future__ import annotations

import asyncio
import html
import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from enjournal.web.doors.login import LoginFailed, LoginFlow
from tests.web.doors.conftest import PERSONS, browser, csrf_of, demo_server, log_in, patient_id

_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = demo_server(tmp_path_factory)
    yield server
    server.stop()


def start(client: httpx.Client, next_path: str = "/innbygger/") -> tuple[httpx.Response, dict]:
    """The door's login start: its redirect and the authorization request's parameters."""
    r = client.get("/innbygger/logg-inn", params={"next": next_path})
    assert r.status_code == 303
    return r, {k: v[0] for k, v in parse_qs(urlsplit(r.headers["location"]).query).items()}


def pick(client: httpx.Client, location: str, persona: str) -> httpx.Response:
    page = client.get(location)
    form = {k: html.unescape(v) for k, v in _HIDDEN.findall(page.text)}
    form["persona"] = persona
    return client.post("/oidc/authorize", data=form)


def test_a_page_asked_for_comes_after_the_login(srv):
    with browser(srv) as c:
        r = c.get("/innbygger/donorkort")
        assert r.status_code == 303 and r.headers["location"] == "/innbygger/logg-inn?next=%2Finnbygger%2Fdonorkort"
        page = log_in(c, "else", next_path="/innbygger/donorkort")
        assert page.status_code == 200 and "<h1" in page.text and "Donorkort" in page.text
        assert page.headers["cache-control"] == "no-store"


def test_the_authorization_request_uses_pkce_state_and_nonce(srv):
    with browser(srv) as c:
        r, params = start(c)
        assert params["client_id"] == "enjournal-portal" and params["code_challenge_method"] == "S256"
        assert len(params["code_challenge"]) == 43 and params["state"] and params["nonce"]
        assert params["redirect_uri"] == f"{srv.base}/innbygger/callback"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/innbygger" in cookie
        assert "Secure" not in cookie            # plain http here


def test_the_cookie_is_secure_behind_https(srv):
    with browser(srv) as c:
        r = c.get("/innbygger/logg-inn", headers={"X-Forwarded-Proto": "https"})
        assert "Secure" in r.headers["set-cookie"]


def test_the_login_page_offers_only_citizens_to_the_portal(srv):
    with browser(srv) as c:
        r, _ = start(c)
        page = c.get(r.headers["location"])
        assert 'value="silje"' in page.text and 'value="gp"' not in page.text
        refused = pick(c, r.headers["location"], "gp")
        assert refused.status_code == 400


def test_a_forged_state_logs_no_one_in(srv):
    with browser(srv) as c:
        r, params = start(c)
        back = pick(c, r.headers["location"], "else")
        query = parse_qs(urlsplit(back.headers["location"]).query)
        forged = c.get("/innbygger/callback", params={"code": query["code"][0], "state": "someone-elses"})
        assert forged.status_code == 400 and "Innloggingen mislyktes" in forged.text
        assert c.get("/innbygger/").status_code == 303        # still not logged in


def test_a_callback_without_a_started_login_fails(srv):
    with browser(srv) as c:
        r = c.get("/innbygger/callback", params={"code": "x", "state": "y"})
        assert r.status_code == 400 and c.get("/innbygger/").status_code == 303


def test_a_code_works_once(srv):
    with browser(srv) as c:
        r, _ = start(c)
        back = pick(c, r.headers["location"], "else")
        assert c.get(back.headers["location"]).status_code == 303
        with browser(srv) as other:
            other.cookies.update(c.cookies)
            again = other.get(back.headers["location"])
            assert again.status_code == 400


def test_the_verifier_and_nonce_are_checked(srv):
    """LoginFlow.finish refuses a code redeemed with another verifier, and an ID token whose
    nonce is not the login's."""
    flow = LoginFlow(srv.platform.doors[0].issuer(), "enjournal-portal", "openid fhirUser patient/*.cruds")

    async def attempt(tamper: str) -> None:
        started = await flow.start(srv.base, f"{srv.base}/innbygger/callback", "/innbygger/")
        pending = dict(started.pending)
        with browser(srv) as c:
            back = pick(c, started.url, "else")
        code = parse_qs(urlsplit(back.headers["location"]).query)["code"][0]
        if tamper == "verifier":
            pending["verifier"] = "x" * 64
        else:
            pending["nonce"] = "another"
        await flow.finish(srv.base, pending, {"code": code, "state": pending["state"]})

    for tamper in ("verifier", "nonce"):
        with pytest.raises(LoginFailed):
            asyncio.run(attempt(tamper))


def test_logout_ends_the_session(srv):
    with browser(srv) as c:
        home = log_in(c, "else")
        cookie = c.cookies.get("enjournal_innbygger")
        out = c.post("/innbygger/logg-ut", data={"csrf_token": csrf_of(home)})
        assert out.status_code == 303 and out.headers["location"] == "/innbygger/logget-ut"
        assert "Du er logget ut" in c.get("/innbygger/logget-ut").text
    with browser(srv) as stale:
        stale.cookies.set("enjournal_innbygger", cookie, path="/innbygger")
        assert stale.get("/innbygger/").status_code == 303, "the old cookie is worth nothing"


def test_logout_needs_the_csrf_token(srv):
    with browser(srv) as c:
        log_in(c, "else")
        assert c.post("/innbygger/logg-ut", data={}).status_code == 400
        assert c.get("/innbygger/").status_code == 200


def test_an_idle_session_goes_to_the_login_and_back(srv):
    sessions = srv.platform.doors[0].sessions
    with browser(srv) as c:
        log_in(c, "else")
        real = sessions.clock
        sessions.clock = lambda: real() + sessions.idle_ms / 1000 + 60
        try:
            r = c.get("/innbygger/personvern")
            assert r.status_code == 303 and r.headers["location"].endswith("next=%2Finnbygger%2Fpersonvern")
        finally:
            sessions.clock = real
        c.cookies.clear()
        page = log_in(c, "else", next_path="/innbygger/personvern")
        assert "Personverninnstillinger" in page.text


def test_access_headers_from_the_browser_are_ignored(srv):
    olav = patient_id(srv, "olav")
    with browser(srv) as c:
        log_in(c, "else")
        r = c.get("/innbygger/kjernejournal", headers={"X-Patient": f"Patient/{olav}",
                                                        "Authorization": f"Bearer {srv.token('system')}"})
        assert r.status_code == 200
        # the page is Else's: her own overview greets her, nobody is represented
        assert "Du ser journalen til" not in r.text


def test_the_door_cookie_does_not_open_the_api(srv):
    with browser(srv) as c:
        log_in(c, "else")
        cookie = c.cookies.get("enjournal_innbygger")
        r = httpx.get(f"{srv.base}/Patient", headers={"Cookie": f"enjournal_innbygger={cookie}"})
        assert r.status_code == 401


def test_personnel_at_the_citizen_door_are_turned_away(srv):
    door = srv.platform.doors[0]
    assert door.kind == "citizen" and PERSONS["else"]


def test_a_configured_issuer_is_used_over_http(tmp_path_factory):
    """``citizen_issuer`` set: the portal finds the issuer by discovery and redeems the code at
    its token endpoint over HTTP (here the server's own built-in provider, reached like a
    remote ID-porten)."""
    from tests.conftest import free_port
    port = free_port()
    server = demo_server(tmp_path_factory, port=port, citizen_issuer=f"http://127.0.0.1:{port}")
    try:
        from enjournal.web.doors.login import RemoteIssuer
        assert isinstance(server.platform.doors[0].issuer(), RemoteIssuer)
        with browser(server) as c:
            page = log_in(c, "else")
            assert page.status_code == 200 and "Hei, Else Hølland" in page.text
    finally:
        server.stop()


def test_an_unreachable_issuer_gives_a_page_not_a_500(tmp_path_factory):
    from tests.conftest import free_port
    server = demo_server(tmp_path_factory, citizen_issuer=f"http://127.0.0.1:{free_port()}")
    try:
        with browser(server) as c:
            r = c.get("/innbygger/logg-inn")
            assert r.status_code == 503 and "Innloggingen er ikke tilgjengelig" in r.text
    finally:
        server.stop()
