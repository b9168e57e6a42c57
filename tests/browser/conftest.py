"""Real-browser fixtures: a live enjournal server with the demo population, Debian's chromium
driven by Playwright, and axe-core for accessibility (docs/testing.md).

Fixtures (the contract the page tests rely on):

- ``live_server`` (session, one per xdist worker): a real uvicorn server on 127.0.0.1 with the
  full ASGI stack (``app.build_asgi``), a SQLite file in tmp, the built-in identity provider and
  the demo population (seed 2026, 30 people). ``.url`` is its base URL, ``.platform`` the
  Platform, ``.system_token()`` a system bearer token for checking FHIR data in assertions,
  ``.token(persona)`` / ``.headers(persona, ...)`` others, ``.fhir(path, **params)`` a
  system-token GET returning the JSON body, ``.patient_id(fnr)`` the id of a demo patient.
  The server is shared by every browser test of the worker: tests that write data should
  check what they wrote themselves, not counts that other tests change.
- ``browser`` (session): chromium from ``/usr/bin/chromium`` (``ENJOURNAL_CHROMIUM`` overrides).
- ``page`` (1280x900), ``phone_page`` (390x844, mobile, touch), ``js_disabled_page`` (1280x900,
  JavaScript off): each a fresh context (no cookies) and page, closed after the test, locale nb-NO.
- ``axe_check(page, context)``: runs the vendored axe-core (tests/browser/vendor) on the page as it
  is now and fails listing every violation of impact serious or critical (WCAG 2.0/2.1 A and AA
  rules and axe's best practices); returns axe's full results.
- ``login(page, door, persona)``: logs in through a door ("/innbygger" or "/helsepersonell") with
  the built-in provider's login page, picking the persona by its key, and waits until the browser
  is back at the door (not at its callback). Returns the page.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from enjournal.access.context import system_context, use
from enjournal.services.demo import load_demo
from tests.conftest import start_server

# playwright is in the test extras: without it the browser tests fail (an ImportError), never skip
import playwright.sync_api as playwright_api  # noqa: E402

VENDOR = Path(__file__).resolve().parent / "vendor"
AXE_JS = VENDOR / "axe.min.js"
CHROMIUM = os.environ.get("ENJOURNAL_CHROMIUM") or "/usr/bin/chromium"
# Playwright cannot download its own browsers here: Debian's chromium, headless, and nothing
# that reaches out to the network on its own
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 15_000
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
FAILING_IMPACTS = ("serious", "critical")
DOORS = ("/innbygger", "/helsepersonell")
FHIR_JSON = "application/fhir+json"
FNR = "urn:oid:2.16.578.1.12.4.1.4.1"


class LiveServer:
    """The running server as tests see it (wraps tests.conftest.Server)."""

    def __init__(self, server: Any):
        self._server = server
        self.url = server.base
        self.port = server.port
        self.client = httpx.Client(base_url=self.url, timeout=60, headers={"Accept": FHIR_JSON})

    @property
    def platform(self) -> Any:
        return self._server.platform

    def system_token(self) -> str:
        """A bearer token of the built-in provider's system client (full access)."""
        return self._server.token("system")

    def token(self, persona: str = "system", **claims: Any) -> str:
        return self._server.token(persona, **claims)

    def headers(self, persona: str = "system", **attestation: str) -> dict:
        """Authorization plus trust-framework headers, e.g. ``purpose="TREAT", patient="Patient/1"``."""
        return self._server.headers(persona, **attestation)

    def fhir(self, path: str, **params: Any) -> dict:
        """GET ``path`` (e.g. ``/Patient/1`` or ``/Flag``) with the system token; the JSON body.
        Fails the test unless the answer is 200."""
        r = self.client.get(path, params=params, headers={"Authorization": f"Bearer {self.system_token()}"})
        assert r.status_code == 200, f"GET {path} {params}: {r.status_code} {r.text[:500]}"
        return r.json()

    def patient_id(self, fnr: str) -> str:
        """The id of the Patient with this fødselsnummer (exactly one must exist)."""
        entries = self.fhir("/Patient", identifier=f"{FNR}|{fnr}").get("entry") or []
        assert len(entries) == 1, f"{len(entries)} patients with fødselsnummer {fnr}"
        return entries[0]["resource"]["id"]

    def stop(self) -> None:
        self.client.close()
        self._server.stop()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("live"), "sqlite", builtin_idp="on")
    try:
        with use(system_context("tests")):
            load_demo(server.platform.resources, people=30)
    except BaseException:
        server.stop()
        raise
    live = LiveServer(server)
    yield live
    live.stop()


@pytest.fixture(scope="session")
def _playwright() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(_playwright) -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.fail(f"no chromium at {CHROMIUM}: `make test` installs Debian's package "
                    "(apt-get install -y chromium), or set ENJOURNAL_CHROMIUM to a chromium binary")
    b = _playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield b
    b.close()


# contexts created with JavaScript off: axe cannot run in them (see axe_check)
_NO_JS: set[int] = set()


def _new_page(browser: Any, live_server: LiveServer, **options: Any) -> Any:
    context = browser.new_context(base_url=live_server.url, locale="nb-NO", **options)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    if options.get("java_script_enabled") is False:
        _NO_JS.add(id(page))
    return page


def _close(page: Any) -> None:
    _NO_JS.discard(id(page))
    page.context.close()


@pytest.fixture
def page(browser, live_server) -> Iterator[Any]:
    p = _new_page(browser, live_server, viewport=DESKTOP)
    yield p
    _close(p)


@pytest.fixture
def phone_page(browser, live_server) -> Iterator[Any]:
    p = _new_page(browser, live_server, viewport=PHONE, device_scale_factor=3, is_mobile=True, has_touch=True)
    yield p
    _close(p)


@pytest.fixture
def js_disabled_page(browser, live_server) -> Iterator[Any]:
    p = _new_page(browser, live_server, viewport=DESKTOP, java_script_enabled=False)
    yield p
    _close(p)


@pytest.fixture(scope="session")
def _axe_source() -> str:
    return AXE_JS.read_text(encoding="utf-8")


def _describe(violations: list[dict]) -> str:
    lines = []
    for v in violations:
        lines.append(f"- {v['id']} ({v['impact']}): {v['help']} <{v.get('helpUrl', '')}>")
        for node in v.get("nodes", [])[:10]:
            summary = " ".join((node.get("failureSummary") or "").split())
            lines.append(f"    at {' '.join(map(str, node.get('target', [])))}: {summary[:300]}")
        if len(v.get("nodes", [])) > 10:
            lines.append(f"    ... and {len(v['nodes']) - 10} more")
    return "\n".join(lines)


def _run_axe(page: Any, source: str) -> dict:
    # evaluated through the DevTools protocol, so a page's Content-Security-Policy (no inline
    # scripts) does not keep axe out
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(source)
    return page.evaluate("""(tags) => axe.run(document, {
        runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})""", AXE_TAGS)


def _snapshot_page(page: Any, browser: Any, live_server: LiveServer) -> Any:
    """A JavaScript-enabled page showing ``page``'s current document (served at its URL with
    the page's own scripts blocked), for axe, which needs JavaScript to run."""
    html = page.content()
    twin = _new_page(browser, live_server, viewport=page.viewport_size)

    def document(route: Any) -> None:
        route.fulfill(status=200, body=html, headers={"Content-Type": "text/html; charset=utf-8",
                                                       "Content-Security-Policy": "script-src 'none'"})
    url = page.url
    twin.route(lambda u: u == url, document)
    twin.goto(url)
    return twin


@pytest.fixture
def axe_check(browser, live_server, _axe_source) -> Callable[[Any, str], dict]:
    """``axe_check(page, "what this page is")``: fails listing the serious and critical
    violations; returns axe's results otherwise."""

    def check(page: Any, context: str) -> dict:
        target = _snapshot_page(page, browser, live_server) if id(page) in _NO_JS else page
        try:
            target.wait_for_load_state("load")
            results = _run_axe(target, _axe_source)
        finally:
            if target is not page:
                _close(target)
        bad = [v for v in results["violations"] if v.get("impact") in FAILING_IMPACTS]
        if bad:
            pytest.fail(f"axe-core: {len(bad)} serious or critical violation(s) on {context} "
                        f"({page.url}):\n{_describe(bad)}", pytrace=False)
        return results
    return check


@pytest.fixture
def login(live_server) -> Callable[..., Any]:
    """``login(page, "/innbygger", "silje")``: logs in as the persona through the door's OIDC
    flow with the built-in provider; back at the door when it returns. ``path`` (default "/")
    is the page of the door to ask for first; ``patient``, ``purpose`` and ``reason`` fill the
    login page's optional fields (personnel)."""

    def do(page: Any, door: str, persona: str, path: str = "/", patient: str | None = None,
           purpose: str | None = None, reason: str | None = None) -> Any:
        door = "/" + door.strip("/")
        start = f"{live_server.url}{door}"
        page.goto(start + (path if path.startswith("/") else "/" + path))
        if "/oidc/authorize" not in page.url:
            # a door may show its own page with a login button before sending one to the provider
            button = page.locator("form[action*='login'] button, a[href*='login'], "
                                  "button:has-text('Logg inn'), a:has-text('Logg inn')").first
            button.click()
            page.wait_for_url("**/oidc/authorize**")
        choice = page.locator(f"[name=persona][value='{persona}']")
        if choice.count() == 0:
            pytest.fail(f"the login page at {page.url} offers no persona {persona!r}", pytrace=False)
        if patient is not None:
            page.fill("[name=patient]", patient)
        if purpose is not None:
            page.select_option("[name=purpose]", purpose)
        if reason is not None:
            page.fill("[name=reason]", reason)
        choice.first.click()
        # the provider redirects to the door's callback, which redirects on to a page of the door
        page.wait_for_url(lambda url: url.startswith(start) and "code=" not in url and "/oidc/" not in url)
        page.wait_for_load_state("load")
        return page
    return do
