"""A server configured to trust a second, test-made OpenID issuer (``oidc_issuers``): its
HelseID-style tokens work end to end over real HTTP, with keys found by discovery."""
from __future__ import annotations

import time

import httpx
import pytest

from enjournal.access.context import system_context, use
from enjournal.services.demo import load_demo

from ..conftest import free_port, start_server
from .test_tokens import TestIssuer, keys  # noqa: F401  (the keys fixture)

FNR = "urn:oid:2.16.578.1.12.4.1.4.1"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, keys):  # noqa: F811
    idp = TestIssuer(keys)
    port = free_port()
    # the external API's audience, and the base URL the built-in provider's tokens carry
    srv = start_server(tmp_path_factory.mktemp("ext"), port=port, oidc_issuers=idp.url,
                       oidc_audience=f"nhn:enjournal, http://127.0.0.1:{port}")
    with use(system_context("tests")):
        load_demo(srv.platform.resources, people=8)
    yield idp, srv
    srv.stop()
    idp.stop()


def helseid_token(idp: TestIssuer, **changes) -> str:
    now = int(time.time())
    claims = {"aud": "nhn:enjournal", "iat": now, "exp": now + 300, "sub": "hid-1",
              "scope": "openid helseid://scopes/identity/pid user/*.rs",
              "helseid://claims/identity/pid": "02013299997",
              "helseid://claims/hpr/hpr_number": "9144101", "name": "Astrid Bråten",
              "helseid://claims/identity/security_level": "4",
              "helseid://claims/client/claims/orgnr_parent": "910000004"}
    claims.update(changes)
    return idp.sign("ES256", "ec", **claims)


def test_a_second_issuers_token_reads_with_attestation(setup):
    idp, srv = setup
    with httpx.Client(base_url=srv.base, timeout=30) as c:
        found = c.get("/Patient", params={"identifier": f"{FNR}|25848531440"}, headers=srv.auth).json()
        pid = found["entry"][0]["resource"]["id"]
        bearer = {"Authorization": f"Bearer {helseid_token(idp)}"}
        assert c.get(f"/Patient/{pid}", headers=bearer).status_code == 403        # no attestation
        ok = c.get("/Observation", headers={**bearer, "X-Purpose-Of-Use": "TREAT", "X-Patient": "25848531440",
                                            "Accept": "application/fhir+json"})
        assert ok.status_code == 200
        subjects = {e["resource"]["subject"]["reference"] for e in ok.json().get("entry", [])}
        assert subjects <= {f"Patient/{pid}"} and subjects
        # the trust-framework attestation can come in the token instead of headers
        attested = helseid_token(idp, authorization_details=[{
            "type": "nhn:tillitsrammeverk:parameters",
            "care_relationship": {"purpose_of_use": {"code": "TREAT"}},
            "patients": [{"identifier": {"value": "25848531440"}}]}])
        r = c.get(f"/Patient/{pid}", headers={"Authorization": f"Bearer {attested}"})
        assert r.status_code == 200 and r.json()["id"] == pid
        # its scopes are read-only: a write is refused
        w = c.post("/Observation", headers={**bearer, "X-Purpose-Of-Use": "TREAT", "X-Patient": "25848531440"},
                   json={"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                         "subject": {"reference": f"Patient/{pid}"}})
        assert w.status_code == 403 and "scopes" in w.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("change,expected", [
    ({"aud": "someone-else"}, "audience"),
    ({"exp": 1}, "expired"),
])
def test_bad_tokens_from_the_second_issuer_are_refused(setup, change, expected):
    idp, srv = setup
    r = httpx.get(f"{srv.base}/Organization", headers={"Authorization": f"Bearer {helseid_token(idp, **change)}"})
    assert r.status_code == 401 and expected in r.json()["issue"][0]["diagnostics"]
    assert "invalid_token" in r.headers["www-authenticate"]


def test_a_key_the_issuer_never_published_is_refused(setup):
    idp, srv = setup
    now = int(time.time())
    forged = idp.sign("RS256", "stranger", aud="nhn:enjournal", exp=now + 300, iat=now)
    r = httpx.get(f"{srv.base}/Organization", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401
