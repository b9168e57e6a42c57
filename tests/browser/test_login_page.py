"""The built-in provider's login page as a door's authorization request shows it: it fits a
390 px phone screen without sideways scrolling and passes axe-core."""
from __future__ import annotations

import secrets
from urllib.parse import urlencode

from enjournal.web.oidc import s256

DOORS = {"/innbygger": "enjournal-portal", "/helsepersonell": "enjournal-workspace"}


def authorize_url(live_server, door: str) -> str:
    """The authorization request a door sends (code flow with PKCE)."""
    params = {"response_type": "code", "client_id": DOORS[door], "redirect_uri": f"{live_server.url}{door}/callback",
              "scope": "openid fhirUser", "state": secrets.token_urlsafe(16),
              "code_challenge": s256(secrets.token_urlsafe(48)), "code_challenge_method": "S256"}
    return f"{live_server.url}/oidc/authorize?{urlencode(params)}"


def test_citizen_login_page_fits_a_phone(live_server, phone_page, axe_check):
    phone_page.goto(authorize_url(live_server, "/innbygger"))
    assert phone_page.locator("[name=persona][value=silje]").count() == 1
    width = phone_page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the login page is {width} px wide on a 390 px screen"
    axe_check(phone_page, "the built-in login page (citizen, phone)")


def test_personnel_login_page_fits_a_phone(live_server, phone_page, axe_check):
    phone_page.goto(authorize_url(live_server, "/helsepersonell"))
    assert phone_page.locator("[name=persona][value=gp]").count() == 1
    width = phone_page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the login page is {width} px wide on a 390 px screen"
    axe_check(phone_page, "the built-in login page (personnel, phone)")


def test_the_doors_lead_to_the_login_page_and_back(live_server, page, login):
    """Each door sends a visitor who is not logged in to the built-in provider's login page,
    and back to the door after a persona is picked (the `login` fixture's own proof)."""
    for door, persona, name in (("/innbygger", "silje", "Silje Økland"), ("/helsepersonell", "gp", "Astrid Bråten")):
        page.context.clear_cookies()
        page.goto(f"{live_server.url}{door}/")
        assert "/oidc/authorize" in page.url or page.locator("text=Logg inn").count(), page.url
        login(page, door, persona)
        assert page.url.startswith(f"{live_server.url}{door}/"), page.url
        assert page.get_by_text(name).first.is_visible()
