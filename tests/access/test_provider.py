"""The built-in OpenID Connect provider, through a real server over HTTP
(docs/identity-provider.md): metadata, JWKS, the authorization code flow with PKCE, client
credentials, the token claims per persona kind, a key that survives a restart, and
``enjournal token``."""
from __future__ import annotations

import base64
import hashlib
import os
import secrets
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from enjournal import errors
from enjournal.access.context import system_context, use
from enjournal.app import build_app
from enjournal.access.provider import (HELSEID_HPR, HELSEID_ORG_CHILD, HELSEID_ORG_PARENT, HELSEID_PID,
                                       HELSEID_SECURITY_LEVEL, KEY_SETTING, Provider, enabled)
from enjournal.fhir import norway
from enjournal.fhir.searchparams import Registry
from enjournal.services.demo import demo_bundles, org_number
from enjournal.services.personas import demo_personas, org_number_of
from enjournal.settings import Settings
from enjournal.store import open_repository
from tests.conftest import start_server

REDIRECT = "http://127.0.0.1:9/callback"
SILJE = "25848531440"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("idp"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(srv):
    with httpx.Client(base_url=srv.base, timeout=30, follow_redirects=False) as c:
        yield c


@pytest.fixture(scope="module")
def keys(http) -> KeySet:
    return KeySet.import_key_set(http.get("/oidc/jwks").json())


@pytest.fixture(scope="module")
def silje_patient(srv) -> str:
    """Silje Økland as a Patient (written directly, not through the FHIR API)."""
    patient = {"resourceType": "Patient", "identifier": [{"system": norway.FNR, "value": SILJE}],
               "name": [{"family": "Økland", "given": ["Silje"]}], "birthDate": "1985-04-25"}
    with use(system_context("test")):
        return srv.platform.resources.create("Patient", patient).stored.id


def decode(token: str, keys: KeySet) -> dict:
    return jwt.decode(token, keys, algorithms=["ES256"]).claims


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def auth_params(challenge: str, **extra) -> dict:
    params = {"response_type": "code", "client_id": "test-app", "redirect_uri": REDIRECT, "state": "st-1",
              "scope": "openid fhirUser launch/patient patient/*.rs", "code_challenge": challenge,
              "code_challenge_method": "S256"}
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}


def log_in(http: httpx.Client, persona: str, challenge: str, **extra) -> httpx.Response:
    """The login page, then the persona's button: the response redirecting to the client."""
    params = auth_params(challenge, **extra)
    page = http.get("/oidc/authorize", params=params)
    assert page.status_code == 200, page.text
    return http.post("/oidc/authorize", data={**params, "persona": persona})


def code_of(response: httpx.Response) -> str:
    assert response.status_code == 303, response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == ["st-1"]
    return query["code"][0]


def redeem(http: httpx.Client, code: str, verifier: str, **extra) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "client_id": "test-app", "code_verifier": verifier}
    data.update(extra)
    return http.post("/oidc/token", data={k: v for k, v in data.items() if v is not None})


def redirect_error(response: httpx.Response) -> dict:
    assert response.status_code == 303, response.text
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}


# -- metadata ----------------------------------------------------------------------------------

def test_issuer_and_audience_are_the_servers_base(srv):
    assert srv.platform.provider.issuer == srv.base
    assert srv.platform.provider.audience == srv.base


def test_openid_discovery(http, srv):
    doc = http.get("/.well-known/openid-configuration").json()
    assert doc["issuer"] == srv.base
    assert doc["authorization_endpoint"] == f"{srv.base}/oidc/authorize"
    assert doc["token_endpoint"] == f"{srv.base}/oidc/token"
    assert doc["jwks_uri"] == f"{srv.base}/oidc/jwks"
    assert doc["id_token_signing_alg_values_supported"] == ["ES256"]
    assert doc["response_types_supported"] == ["code"]


def test_smart_configuration(http, srv):
    response = http.get("/.well-known/smart-configuration")
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == "*"
    doc = response.json()
    assert doc["token_endpoint"] == f"{srv.base}/oidc/token"
    assert doc["authorization_endpoint"] == f"{srv.base}/oidc/authorize"
    assert doc["jwks_uri"] == f"{srv.base}/oidc/jwks"
    assert doc["grant_types_supported"] == ["authorization_code", "client_credentials"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    for scope in ("openid", "fhirUser", "launch/patient", "patient/*.rs", "user/*.cruds", "system/*.rs"):
        assert scope in doc["scopes_supported"]
    for capability in ("launch-standalone", "client-public", "client-confidential-symmetric", "permission-v2",
                       "context-standalone-patient", "sso-openid-connect", "permission-patient",
                       "permission-user"):
        assert capability in doc["capabilities"]


def test_jwks_holds_only_the_public_key(http):
    doc = http.get("/oidc/jwks").json()
    assert len(doc["keys"]) == 1
    key = doc["keys"][0]
    assert key["kty"] == "EC" and key["crv"] == "P-256" and key["alg"] == "ES256" and key["kid"]
    assert "d" not in key


def test_key_set_matches_the_jwks(srv, http):
    assert srv.platform.provider.key_set().as_dict() == http.get("/oidc/jwks").json()


# -- tokens and their claims -------------------------------------------------------------------

def test_health_personnel_token_is_helseid_shaped(srv, keys):
    gp = next(p for p in demo_personas() if p.key == "gp")
    token = srv.platform.provider.issue("gp")
    assert jwt.decode(token, keys).header["kid"] == keys.keys[0].kid
    claims = decode(token, keys)
    assert claims["iss"] == srv.base and claims["aud"] == srv.base
    assert claims["exp"] - claims["iat"] == 3600 and claims["nbf"] == claims["iat"]
    assert claims["jti"] and claims["sub"] and claims["sub"] != gp.pid and claims["client_id"]
    assert claims["scope"] == "openid fhirUser user/*.cruds"
    assert claims["name"] == "Astrid Bråten"
    assert claims[HELSEID_HPR] == "9144101"
    assert claims[HELSEID_PID] == gp.pid and norway.check_person_number(gp.pid) is None
    assert claims[HELSEID_SECURITY_LEVEL] == "4"
    assert claims[HELSEID_ORG_PARENT] == org_number(6)          # Grünerløkka legesenter, demo-org-7
    assert claims["fhirUser"] == "Practitioner/demo-gp-1"
    assert "authorization_details" not in claims and "patient" not in claims


def test_attestation_claims(srv, keys):
    claims = decode(srv.platform.provider.issue("doctor", patient="Patient/p-1", purpose="BTG",
                                                reason="unconscious, no next of kin"), keys)
    assert claims["patient"] == "p-1"
    assert claims["authorization_details"] == [{
        "type": "nhn:tillitsrammeverk:parameters",
        "care_relationship": {
            "purpose_of_use": {"code": "BTG", "system": "urn:oid:2.16.840.1.113883.1.11.20448"},
            "purpose_of_use_details": {"text": "unconscious, no next of kin"}},
        "patients": [{"identifier": {"value": "p-1"}}]}]
    by_number = decode(srv.platform.provider.issue("nurse", patient=SILJE, purpose="TREAT"), keys)
    assert "patient" not in by_number
    assert by_number["authorization_details"][0]["patients"] == [
        {"identifier": {"system": norway.FNR, "value": SILJE}}]
    assert by_number[HELSEID_ORG_PARENT] == org_number_of("oslo-kommune")
    assert by_number[HELSEID_ORG_CHILD] == org_number_of("hjemmetjeneste")


def test_citizen_token_is_idporten_shaped(srv, keys):
    claims = decode(srv.platform.provider.issue("silje", lifetime=60), keys)
    assert claims["pid"] == SILJE and claims["acr"] == "idporten-loa-high"
    assert claims["name"] == "Silje Økland"
    assert claims["scope"] == "openid fhirUser launch/patient patient/*.rs"
    assert claims["exp"] - claims["iat"] == 60
    assert HELSEID_HPR not in claims and "authorization_details" not in claims


def test_system_token(srv, keys):
    claims = decode(srv.platform.provider.issue("system", scope="system/*.rs"), keys)
    assert claims["scope"] == "system/*.rs" and claims["client_id"] == "enjournal-system"
    assert claims["sub"] == "enjournal-system"
    assert claims[HELSEID_ORG_PARENT] == org_number_of("helse-sor-ost")
    assert decode(srv.platform.provider.issue("system"), keys)["scope"] == "system/*.cruds"


def test_bad_issue_arguments(srv):
    with pytest.raises(errors.NotFound, match="unknown persona 'nobody'"):
        srv.platform.provider.issue("nobody")
    with pytest.raises(errors.Invalid, match="purpose"):
        srv.platform.provider.issue("gp", purpose="CURIOSITY")
    with pytest.raises(errors.Invalid, match="Patient id"):
        srv.platform.provider.issue("silje", patient=SILJE)


# -- authorization code with PKCE --------------------------------------------------------------

def test_login_page_lists_the_personas(http):
    _, challenge = pkce()
    page = http.get("/oidc/authorize", params=auth_params(challenge))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for name in ("Astrid Bråten", "Mette Kvåle", "Silje Økland", "Else Hølland", "Olav Jensen"):
        assert name in page.text
    assert 'value="gp"' in page.text and 'value="silje"' in page.text
    assert 'value="system"' not in page.text


def test_citizen_code_flow_with_launch_patient(http, keys, srv, silje_patient):
    verifier, challenge = pkce()
    code = code_of(log_in(http, "silje", challenge, nonce="n-1"))
    response = redeem(http, code, verifier)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["scope"] == "openid fhirUser launch/patient patient/*.rs"
    assert body["patient"] == silje_patient
    access = decode(body["access_token"], keys)
    assert access["pid"] == SILJE and access["client_id"] == "test-app" and access["patient"] == silje_patient
    identity = decode(body["id_token"], keys)
    assert identity["aud"] == "test-app" and identity["iss"] == srv.base and identity["nonce"] == "n-1"
    assert identity["sub"] == access["sub"]


def test_personnel_code_flow_with_attestation(http, keys):
    verifier, challenge = pkce()
    params = auth_params(challenge, scope="launch/patient user/*.rs system/*.rs")
    assert http.get("/oidc/authorize", params=params).status_code == 200
    response = http.post("/oidc/authorize", data={**params, "persona": "gp", "patient": "Patient/abc",
                                                  "purpose": "TREAT", "reason": ""})
    body = redeem(http, code_of(response), verifier).json()
    assert body["scope"] == "launch/patient user/*.rs"             # no system scopes for a person
    assert body["patient"] == "abc" and "id_token" not in body
    claims = decode(body["access_token"], keys)
    assert claims[HELSEID_HPR] == "9144101" and claims["patient"] == "abc"
    assert claims["authorization_details"][0]["care_relationship"]["purpose_of_use"]["code"] == "TREAT"


def test_wrong_verifier_then_the_code_is_spent(http):
    verifier, challenge = pkce()
    code = code_of(log_in(http, "gp", challenge))
    wrong = redeem(http, code, pkce()[0])
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    again = redeem(http, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_a_code_works_once(http):
    verifier, challenge = pkce()
    code = code_of(log_in(http, "hakon", challenge))
    assert redeem(http, code, verifier).status_code == 200
    reused = redeem(http, code, verifier)
    assert reused.status_code == 400
    assert reused.json() == {"error": "invalid_grant",
                             "error_description": "the code is unknown, expired or already used"}


def test_wrong_redirect_uri_and_client(http):
    verifier, challenge = pkce()
    response = redeem(http, code_of(log_in(http, "gp", challenge)), verifier,
                      redirect_uri="http://127.0.0.1:9/elsewhere")
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    verifier, challenge = pkce()
    response = redeem(http, code_of(log_in(http, "gp", challenge)), verifier, client_id="other-app")
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_codes_expire_after_a_minute(http, srv):
    verifier, challenge = pkce()
    code = code_of(log_in(http, "gp", challenge))
    provider, clock = srv.platform.provider, srv.platform.provider.clock
    provider.clock = lambda: clock() + 61
    try:
        response = redeem(http, code, verifier)
    finally:
        provider.clock = clock
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("change, error", [
    ({"code_challenge": None}, "invalid_request"),
    ({"code_challenge_method": None}, "invalid_request"),
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge": "short"}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"aud": "http://elsewhere.example/fhir"}, "invalid_request"),
])
def test_bad_authorization_requests_go_back_to_the_client(http, change, error):
    _, challenge = pkce()
    response = http.get("/oidc/authorize", params=auth_params(challenge, **change))
    query = redirect_error(response)
    assert query["error"] == error and query["state"] == "st-1" and query["error_description"]


def test_missing_state_is_an_error(http):
    _, challenge = pkce()
    query = redirect_error(http.get("/oidc/authorize", params=auth_params(challenge, state=None)))
    assert query["error"] == "invalid_request" and "state" not in query


@pytest.mark.parametrize("change", [{"client_id": None}, {"redirect_uri": None},
                                    {"redirect_uri": "/relative"}, {"redirect_uri": "http://x.example/cb#frag"}])
def test_unusable_client_or_redirect_is_answered_directly(http, change):
    _, challenge = pkce()
    response = http.get("/oidc/authorize", params=auth_params(challenge, **change))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_scope_a_persona_cannot_hold(http):
    _, challenge = pkce()
    response = log_in(http, "silje", challenge, scope="openid user/*.cruds")
    assert redirect_error(response)["error"] == "invalid_scope"


def test_declining_and_unknown_persona(http):
    _, challenge = pkce()
    params = auth_params(challenge)
    assert redirect_error(http.post("/oidc/authorize", data={**params, "deny": "1"}))["error"] == "access_denied"
    response = http.post("/oidc/authorize", data={**params, "persona": "nobody"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("kwargs, status, error", [
    ({"data": {"grant_type": "password", "client_id": "x"}}, 400, "unsupported_grant_type"),
    ({"data": {"client_id": "x"}}, 400, "invalid_request"),
    ({"json": {"grant_type": "client_credentials"}}, 400, "invalid_request"),
    ({"data": {"grant_type": "authorization_code", "client_id": "x"}}, 400, "invalid_request"),
    ({"data": {"grant_type": "authorization_code", "client_id": "x", "code": "nope"}}, 400, "invalid_grant"),
    ({"content": b"\xff\xfe=%%%", "headers": {"content-type": "application/x-www-form-urlencoded"}},
     400, "invalid_request"),
    ({"data": {"grant_type": "client_credentials"}, "headers": {"authorization": "Basic !!!"}},
     401, "invalid_client"),
])
def test_token_endpoint_errors(http, kwargs, status, error):
    response = http.post("/oidc/token", **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error and response.json()["error_description"]


# -- client credentials ------------------------------------------------------------------------

def test_client_credentials_with_basic_auth(http, srv, keys):
    secret = srv.platform.provider.client_secret()
    response = http.post("/oidc/token", data={"grant_type": "client_credentials", "scope": "system/*.rs"},
                         auth=("lab-system", secret))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "system/*.rs" and body["token_type"] == "Bearer" and "id_token" not in body
    claims = decode(body["access_token"], keys)
    assert claims["client_id"] == "lab-system" and claims["sub"] == "lab-system"
    assert claims["scope"] == "system/*.rs" and claims["aud"] == srv.base


def test_client_credentials_in_the_form(http, srv):
    response = http.post("/oidc/token", data={"grant_type": "client_credentials", "client_id": "epj",
                                              "client_secret": srv.platform.provider.client_secret()})
    assert response.status_code == 200 and response.json()["scope"] == "system/*.cruds"


def test_client_credentials_refused(http, srv):
    bad = http.post("/oidc/token", data={"grant_type": "client_credentials"}, auth=("lab-system", "wrong"))
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    assert bad.headers["www-authenticate"].startswith("Basic")
    missing = http.post("/oidc/token", data={"grant_type": "client_credentials", "client_id": "x"})
    assert missing.status_code == 401 and missing.json()["error"] == "invalid_client"
    scope = http.post("/oidc/token", data={"grant_type": "client_credentials", "scope": "user/*.rs"},
                      auth=("x", srv.platform.provider.client_secret()))
    assert scope.status_code == 400 and scope.json()["error"] == "invalid_scope"


# -- the key survives a restart, and enjournal token ------------------------------------------

def test_a_second_provider_on_the_same_database_has_the_same_key(srv, keys, tmp_path):
    database = srv.platform.settings.database
    stored = srv.platform.store.get_setting(KEY_SETTING)
    assert '"d"' in stored                       # the private part is in the database ...
    repo = open_repository(database, Registry.default())
    try:
        again = Provider(repo, srv.base, demo_personas())
        assert again.jwks() == srv.platform.provider.jwks()
        assert decode(again.issue("gp"), keys)["iss"] == srv.base
        assert again.client_secret() == srv.platform.provider.client_secret()
    finally:
        repo.close()
    other = open_repository(f"sqlite:///{tmp_path}/other.db", Registry.default())
    try:                                         # ... and a different database has its own
        assert Provider(other, srv.base, demo_personas()).jwks() != srv.platform.provider.jwks()
    finally:
        other.close()


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENJOURNAL_")}
    return subprocess.run([sys.executable, "-m", "enjournal.cli", "token", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_enjournal_token_prints_a_token_the_server_trusts(srv, keys, http):
    settings = srv.platform.settings
    common = ("--database", settings.database, "--host", settings.host, "--port", str(settings.port))
    done = _cli("gp", *common, "--purpose", "TREAT", "--patient", "Patient/abc", "--lifetime", "120")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert done.stdout == token + "\n" and token.count(".") == 2
    claims = decode(token, keys)
    assert claims["iss"] == srv.base and claims["aud"] == srv.base
    assert claims[HELSEID_HPR] == "9144101" and claims["exp"] - claims["iat"] == 120 and claims["patient"] == "abc"

    done = _cli("system", *common, "--scope", "system/*.rs")
    assert done.returncode == 0 and decode(done.stdout.strip(), keys)["scope"] == "system/*.rs"

    secret = _cli("--client-secret", *common).stdout.strip()
    assert secret == srv.platform.provider.client_secret()
    response = http.post("/oidc/token", data={"grant_type": "client_credentials"}, auth=("cli", secret))
    assert response.status_code == 200


def test_enjournal_token_refuses_an_unknown_persona(srv):
    done = _cli("nobody", "--database", srv.platform.settings.database)
    assert done.returncode == 2 and done.stdout == ""
    assert "unknown persona 'nobody'" in done.stderr
    for key in ("gp", "nurse", "pharmacist", "doctor", "hospital-nurse", "silje", "else", "olav", "system"):
        assert f"  {key} " in done.stderr


def test_enjournal_token_when_the_provider_is_off(tmp_path):
    done = _cli("gp", "--database", f"sqlite:///{tmp_path}/off.db", "--builtin-idp", "off")
    assert done.returncode == 1 and "off" in done.stderr and done.stdout == ""


# -- settings and personas ---------------------------------------------------------------------

def test_enabled():
    assert enabled("auto", "sqlite:///x.db") and not enabled("auto", "postgresql://db/enjournal")
    assert enabled("on", "postgresql://db/enjournal") and not enabled("off", "sqlite:///x.db")
    with pytest.raises(errors.Invalid):
        enabled("maybe", "sqlite:///x.db")


def test_provider_off_means_no_routes(tmp_path):
    app = build_app(Settings(database=f"sqlite:///{tmp_path}/off.db", builtin_idp="off"))
    try:
        assert app.state.platform.provider is None
        assert not any(getattr(r, "path", "").startswith(("/oidc", "/.well-known")) for r in app.routes)
    finally:
        app.state.platform.close()


def test_personas_match_the_demo_population():
    bundles = demo_bundles(seed=2026, people=7)
    patients = {}
    organisations = {}
    practitioners = {}
    for bundle in bundles:
        for entry in bundle["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] == "Patient":
                fnr = next(i["value"] for i in resource["identifier"] if i["system"] == norway.FNR)
                name = resource["name"][0]
                patients[fnr] = " ".join(name["given"] + [name["family"]])
            elif resource["resourceType"] == "Organization":
                organisations[resource["id"]] = resource["identifier"][0]["value"]
            elif resource["resourceType"] == "Practitioner":
                practitioners[resource["id"]] = resource["identifier"][0]["value"]
    personas = demo_personas()
    assert len({p.key for p in personas}) == len(personas)
    for p in personas:
        assert p.key == p.key.lower() and " " not in p.key
        if p.kind == "citizen":
            assert patients.get(p.pid) == p.name, p.key
        elif p.kind == "personnel":
            assert practitioners[p.practitioner] == p.hpr
            assert p.org_parent in organisations.values() and norway.check_person_number(p.pid) is None
            assert p.pid not in patients
        for number in (p.org_parent, p.org_child):
            assert number is None or number in organisations.values()
    assert organisations["demo-org-7"] == next(p for p in personas if p.key == "gp").org_parent


def test_the_token_endpoint_takes_post_only(http):
    response = http.get("/oidc/token")
    assert response.status_code == 405 and response.json()["error"] == "invalid_request"
