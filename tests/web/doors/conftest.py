"""A real server with the demo population (seed 2026) and a browser-like HTTP client that
logs in through a door: the door's login, the built-in provider's page, the callback."""
from __future__ import annotations

import contextlib
import html
import re

import httpx
import pytest

from enjournal.access.context import system_context, use
from enjournal.services.demo import load_demo
from tests.conftest import start_server

PERSONS = {"else": "18854005231", "silje": "25848531440", "hakon": "02828307595", "sara": "19841856050",
           "jakob": "19861286366", "maja": "10880984069", "olav": "01923404518"}
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def demo_server(tmp_path_factory, backend: str = "sqlite", **settings):
    srv = start_server(tmp_path_factory.mktemp("doors"), backend, **settings)
    with use(system_context("tests")):
        load_demo(srv.platform.resources, seed=2026, people=7)
    return srv


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def srv(request, tmp_path_factory):
    server = demo_server(tmp_path_factory, request.param)
    yield server
    server.stop()


def patient_id(srv, persona: str) -> str:
    found = srv.platform.facts.patient_by_number(PERSONS[persona])
    assert found, persona
    return found


def browser(srv) -> httpx.Client:
    return httpx.Client(base_url=srv.base, follow_redirects=False, timeout=30)


def log_in(client: httpx.Client, persona: str, door: str = "/innbygger", next_path: str | None = None) -> httpx.Response:
    """Log in as ``persona`` like a browser; returns the page the door sends the browser to."""
    start = client.get(next_path or f"{door}/")
    assert start.status_code == 303, start.text
    login = client.get(start.headers["location"])
    assert login.status_code == 303, login.text
    page = client.get(login.headers["location"])
    assert page.status_code == 200, page.text
    form = {k: html.unescape(v) for k, v in _HIDDEN.findall(page.text)}
    form["persona"] = persona
    back = client.post("/oidc/authorize", data=form)
    assert back.status_code == 303, back.text
    done = client.get(back.headers["location"])
    assert done.status_code == 303, done.text
    return client.get(done.headers["location"])


def csrf_of(page: httpx.Response) -> str:
    found = _CSRF.search(page.text)
    assert found, "no CSRF token on the page"
    return found.group(1)


def system_read(srv, path: str, **params) -> dict:
    response = httpx.get(srv.base + path, params=params, headers={**srv.auth, "Accept": "application/fhir+json"})
    assert response.status_code == 200, response.text
    return response.json()


def attorney_consent(giver: str, receiver_fnr: str, *scopes: str) -> dict:
    """A power of attorney (fullmakt) as docs/access.md shapes it: ``giver`` (a Patient id)
    lets the person with ``receiver_fnr`` act for them with ``scopes`` (view, use)."""
    return {
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "https://enjournal.no/fhir/CodeSystem/access-control",
                                  "code": "power-of-attorney"}]}],
        "patient": {"reference": f"Patient/{giver}"}, "dateTime": "2026-11-01T10:00:00+01:00",
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {"type": "permit", "period": {"start": "2026-01-01"},
                      "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                                      "code": "PRCP"}]},
                                 "reference": {"identifier": {"system": "urn:oid:2.16.578.1.12.4.1.4.1",
                                                              "value": receiver_fnr}}}],
                      "action": [{"coding": [{"system": "https://enjournal.no/fhir/CodeSystem/proxy-scope", "code": s}]}
                                 for s in scopes]}}


@contextlib.contextmanager
def power_of_attorney(base: str, system_headers: dict, giver: str, receiver_fnr: str, *scopes: str):
    """The Consent written by the system for the block, deleted after it."""
    headers = {**system_headers, "Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    r = httpx.post(f"{base}/Consent", json=attorney_consent(giver, receiver_fnr, *scopes), headers=headers)
    assert r.status_code == 201, r.text
    try:
        yield r.json()["id"]
    finally:
        assert httpx.delete(f"{base}/Consent/{r.json()['id']}", headers=headers).status_code in (200, 204)
