"""Token verification (access/tokens.py) against a test-made OpenID issuer served over real
HTTP (discovery + JWKS), and claims -> Principal (access/claims.py) for each kind of caller
(docs/access-tokens.md)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from enjournal import errors
from enjournal.access import scopes
from enjournal.access.claims import (HELSEID_HPR, HELSEID_ORG_CHILD, HELSEID_ORG_PARENT, HELSEID_PID,
                                     HELSEID_SECURITY_LEVEL, TRUST_FRAMEWORK_TYPE, principal_from_claims)
from enjournal.access.principal import CITIZEN, PERSONNEL, SYSTEM
from enjournal.access.tokens import Issuer, TokenVerifier, default_base, from_settings
from enjournal.settings import Settings
from tests.conftest import free_port

AUD = "https://enjournal.test"
NOW = 1_800_000_000
DROP = object()         # a claim to leave out


# -- a test-made issuer over real HTTP ---------------------------------------------------------

@pytest.fixture(scope="module")
def keys() -> dict:
    """Signing keys, made once (RSA generation is slow): ``rsa``, ``ec`` (P-256), ``ec384``,
    ``rsa2`` (for rotation) and ``stranger`` (never published)."""
    return {
        "rsa": RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig"}, private=True),
        "ec": ECKey.generate_key("P-256", parameters={"kid": "ec-1", "use": "sig"}, private=True),
        "ec384": ECKey.generate_key("P-384", parameters={"kid": "ec384-1"}, private=True),
        "rsa2": RSAKey.generate_key(2048, parameters={"kid": "rsa-2"}, private=True),
        "stranger": RSAKey.generate_key(2048, parameters={"kid": "stranger"}, private=True),
    }


class TestIssuer:
    """An OpenID issuer: ``/.well-known/openid-configuration`` and ``/jwks`` on a free port,
    publishing the public half of ``published``; ``hits`` counts requests per path."""
    __test__ = False

    def __init__(self, keys: dict):
        self.keys = keys
        self.published = [keys["rsa"], keys["ec"], keys["ec384"]]
        self.hits: dict[str, int] = {}
        self.discovery_issuer: str | None = None       # None: the real URL
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                issuer.hits[self.path] = issuer.hits.get(self.path, 0) + 1
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.discovery_issuer or issuer.url, "jwks_uri": issuer.url + "/jwks"}
                elif self.path == "/jwks":
                    body = {"keys": [k.as_dict(private=False) for k in issuer.published]
                            + [{"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]}     # must be ignored
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def claims(self, **changes) -> dict:
        out = {"iss": self.url, "aud": AUD, "sub": "subject-1", "client_id": "ehr", "iat": NOW,
               "exp": NOW + 300, "jti": "token-1", "scope": "openid user/*.rs"}
        out.update(changes)
        return {k: v for k, v in out.items() if v is not DROP}

    def sign(self, alg: str = "RS256", key: str = "rsa", header: dict | None = None, **changes) -> str:
        k = self.keys[key]
        return jwt.encode({"alg": alg, "kid": k.kid, **(header or {})}, self.claims(**changes), k,
                          algorithms=[alg])


class Clock:
    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def idp(keys):
    server = TestIssuer(keys)
    yield server
    server.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(idp, clock) -> TokenVerifier:
    return TokenVerifier([Issuer(idp.url)], (AUD,), clock=clock)


def b64(data: bytes | dict) -> str:
    if isinstance(data, dict):
        data = json.dumps(data).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rejected(verifier: TokenVerifier, token, *words: str) -> errors.Unauthorized:
    """Assert the token is refused with a 401 whose message has every word in ``words``."""
    with pytest.raises(errors.Unauthorized) as info:
        verifier.verify(token)
    exc = info.value
    assert exc.status == 401 and exc.code == "login"
    for word in words:
        assert word in exc.message, exc.message
    challenge = exc.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="'), challenge
    return exc


# -- accepted tokens ---------------------------------------------------------------------------

@pytest.mark.parametrize("alg,key", [("RS256", "rsa"), ("RS384", "rsa"), ("RS512", "rsa"), ("PS256", "rsa"),
                                     ("ES256", "ec"), ("ES384", "ec384")])
def test_valid_token_through_discovery(verifier, idp, alg, key):
    claims = verifier.verify(idp.sign(alg, key))
    assert claims["iss"] == idp.url and claims["sub"] == "subject-1"
    assert idp.hits == {"/.well-known/openid-configuration": 1, "/jwks": 1}


def test_keys_are_fetched_once_for_many_tokens(verifier, idp):
    for n in range(5):
        verifier.verify(idp.sign("RS256", jti=f"t{n}"))
        verifier.verify(idp.sign("ES256", "ec", jti=f"e{n}"))
    assert idp.hits["/jwks"] == 1


def test_audience_list(verifier, idp):
    assert verifier.verify(idp.sign(aud=["https://other", AUD]))["aud"] == ["https://other", AUD]
    rejected(verifier, idp.sign(aud=["https://other", "https://third"]), "audience", "not accepted")


def test_time_within_leeway_is_accepted(verifier, idp, clock):
    assert verifier.verify(idp.sign(exp=NOW - 10, nbf=NOW + 10))


def test_token_without_kid_is_checked_against_every_key(verifier, idp, keys):
    token = jwt.encode({"alg": "ES256"}, idp.claims(), keys["ec"], algorithms=["ES256"])
    assert verifier.verify(token)["sub"] == "subject-1"
    rsa_only = TokenVerifier([Issuer("http://rsa", keys=KeySet([keys["rsa"]]))], (AUD,), clock=Clock())
    rejected(rsa_only, jwt.encode({"alg": "ES256"}, idp.claims(iss="http://rsa"), keys["ec"], algorithms=["ES256"]),
             "no key id (kid)", "no key for ES256")
    forged = jwt.encode({"alg": "ES256"}, idp.claims(), ECKey.generate_key("P-256", private=True),
                        algorithms=["ES256"])
    rejected(verifier, forged, "signature is not valid")


def test_local_issuer(keys):
    verifier = TokenVerifier([Issuer("http://builtin", keys=KeySet([keys["ec"]]))], (AUD,), clock=Clock())
    token = jwt.encode({"alg": "ES256", "kid": "ec-1"}, {"iss": "http://builtin", "aud": AUD, "exp": NOW + 60},
                       keys["ec"], algorithms=["ES256"])
    assert verifier.verify(token)["iss"] == "http://builtin"


# -- refused tokens ----------------------------------------------------------------------------

def test_alg_none(verifier, idp):
    for header in ({"alg": "none"}, {"alg": "none", "kid": "rsa-1"}, {"alg": "None"}, {"alg": "NONE"}):
        token = f"{b64(header)}.{b64(idp.claims())}."
        rejected(verifier, token, "algorithm", "not allowed")
    assert idp.hits == {}       # refused before any key was looked for


@pytest.mark.parametrize("alg,digest", [("HS256", hashlib.sha256), ("HS384", hashlib.sha384),
                                        ("HS512", hashlib.sha512)])
def test_hmac_signed_with_the_public_key(verifier, idp, keys, alg, digest):
    """The classic confusion attack: HMAC with the issuer's public key (PEM or JWK text) as secret."""
    public = keys["rsa"]
    secrets = (public.as_pem(private=False), json.dumps(public.as_dict(private=False)).encode())
    for secret in secrets:
        signing_input = f"{b64({'alg': alg, 'kid': 'rsa-1', 'typ': 'JWT'})}.{b64(idp.claims())}"
        signature = hmac.new(secret, signing_input.encode(), digest).digest()
        rejected(verifier, f"{signing_input}.{b64(signature)}", f"'{alg}'", "not allowed")


def test_other_algorithms_are_refused(verifier, idp, keys):
    token = jwt.encode({"alg": "ES512", "kid": "x"}, idp.claims(), ECKey.generate_key("P-521", private=True),
                       algorithms=["ES512"])
    rejected(verifier, token, "'ES512'", "not allowed")


def test_key_not_in_the_jwks(verifier, idp):
    rejected(verifier, idp.sign(key="stranger"), "key id 'stranger'", idp.url)


def test_known_kid_but_another_key(verifier, idp, keys):
    """A token claiming the issuer's kid but signed with the attacker's own key."""
    token = jwt.encode({"alg": "RS256", "kid": "rsa-1"}, idp.claims(), keys["stranger"], algorithms=["RS256"])
    rejected(verifier, token, "signature is not valid")


def test_key_of_the_wrong_type_for_the_alg(verifier, idp, keys):
    """ES256 naming the RSA key's kid: joserfc cannot use an RSA key for ES256."""
    token = jwt.encode({"alg": "ES256", "kid": "rsa-1"}, idp.claims(), keys["ec"], algorithms=["ES256"])
    rejected(verifier, token, "cannot verify ES256")


def test_unknown_kid_refetches_at_most_once_a_minute(verifier, idp, clock):
    verifier.verify(idp.sign())                           # first fetch at NOW
    assert idp.hits["/jwks"] == 1
    rejected(verifier, idp.sign(key="stranger"), "key id 'stranger'")
    assert idp.hits["/jwks"] == 1                         # fetched less than 60 s ago: no refetch
    clock.now += 61
    rejected(verifier, idp.sign(key="stranger", exp=clock.now + 300), "key id 'stranger'")
    assert idp.hits["/jwks"] == 2
    for _ in range(5):                                    # a flood of unknown kids: no more fetches
        rejected(verifier, idp.sign(key="stranger", exp=clock.now + 300), "key id 'stranger'")
    assert idp.hits["/jwks"] == 2


def test_key_rotation(verifier, idp, keys, clock):
    verifier.verify(idp.sign())
    idp.published = [keys["rsa2"], keys["ec"]]            # the issuer rotates its RSA key
    clock.now += 61
    token = idp.sign(key="rsa2", exp=clock.now + 300)
    assert verifier.verify(token)["iss"] == idp.url      # unknown kid -> refetch -> found
    assert idp.hits["/jwks"] == 2


def test_rotation_within_the_refetch_window_waits(verifier, idp, keys, clock):
    verifier.verify(idp.sign())
    idp.published = [keys["rsa2"]]
    clock.now += 10
    rejected(verifier, idp.sign(key="rsa2", exp=clock.now + 300), "key id 'rsa-2'")
    clock.now += 60
    assert verifier.verify(idp.sign(key="rsa2", exp=clock.now + 300))


def test_expired(verifier, idp):
    rejected(verifier, idp.sign(exp=NOW - 31), "expired at 2027-01-15T07:59:29Z")


def test_not_yet_valid(verifier, idp):
    rejected(verifier, idp.sign(nbf=NOW + 3600), "not valid before")


def test_missing_or_bad_exp(verifier, idp):
    rejected(verifier, idp.sign(exp=DROP), "no expiry (exp)")
    rejected(verifier, idp.sign(exp=str(NOW + 60)), "exp", "number")
    rejected(verifier, idp.sign(exp=True), "exp", "number")
    rejected(verifier, idp.sign(nbf="soon"), "nbf", "number")


def test_wrong_or_missing_audience(verifier, idp):
    exc = rejected(verifier, idp.sign(aud="https://elsewhere"), "'https://elsewhere'", "not accepted", AUD)
    assert "https://elsewhere" in exc.headers["WWW-Authenticate"]
    rejected(verifier, idp.sign(aud=DROP), "no audience (aud)")
    rejected(verifier, idp.sign(aud=[AUD, 7]), "aud", "list of strings")
    rejected(verifier, idp.sign(aud={"x": AUD}), "aud")


def test_unknown_or_missing_issuer(verifier, idp):
    rejected(verifier, idp.sign(iss="https://evil.example"), "issuer 'https://evil.example'", "not trusted")
    rejected(verifier, idp.sign(iss=idp.url + "/"), "not trusted")          # compared exactly
    rejected(verifier, idp.sign(iss=DROP), "no issuer (iss)")
    rejected(verifier, idp.sign(iss=["x"]), "not trusted")
    assert idp.hits == {}


@pytest.mark.parametrize("token", [
    "", "abc", "a.b", "a.b.c", "..", "....", "a.b.c.d.e", "é.é.é", "Bearer x.y.z",
    b64({"alg": "RS256"}) + ".not-json!.sig", "%%%.%%%.%%%", "x" * 200_000,
    b64(b"[1,2]") + "." + b64({"iss": "x"}) + ".c2ln",
])
def test_garbage(verifier, token):
    rejected(verifier, token, "malformed")


def test_not_text(verifier):
    for token in (None, 42, b"a.b.c", ["a"]):
        rejected(verifier, token, "malformed")


def test_payload_not_a_json_object(verifier):
    rejected(verifier, f"{b64({'alg': 'RS256'})}.{b64(b'[1]')}.c2ln", "payload is not a JSON object")
    rejected(verifier, f"{b64({'alg': 'RS256'})}.{b64(b'{nope')}.c2ln", "payload is not JSON")


def test_truncated(verifier, idp):
    token = idp.sign()
    for cut in (token[:-1], token[:-10], token[: token.rindex(".") + 1], token[: token.rindex(".")],
                token[: len(token) // 3]):
        with pytest.raises(errors.Unauthorized):
            verifier.verify(cut)


def test_payload_edited_after_signing(verifier, idp):
    header, payload, signature = idp.sign().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "someone-else"
    rejected(verifier, f"{header}.{b64(claims)}.{signature}", "signature is not valid")
    header2 = b64({**json.loads(base64.urlsafe_b64decode(header + "==")), "alg": "RS384"})
    rejected(verifier, f"{header2}.{payload}.{signature}", "signature is not valid")


def test_critical_header_extensions_are_refused(verifier, idp):
    rejected(verifier, idp.sign(header={"crit": ["kid"]}), "crit")
    rejected(verifier, f"{b64({'alg': 'RS256', 'crit': ['x'], 'x': 1})}.{b64(idp.claims())}.c2ln", "crit")


def test_bad_header_values(verifier, idp):
    rejected(verifier, f"{b64({'alg': 'RS256', 'kid': 5})}.{b64(idp.claims())}.c2ln", "malformed token header")


# -- issuers that cannot give keys -------------------------------------------------------------

def test_discovery_naming_another_issuer(verifier, idp):
    idp.discovery_issuer = "https://impostor"
    rejected(verifier, idp.sign(), "signing keys of issuer", "not available", "impostor")
    assert "/jwks" not in idp.hits


def test_unreachable_issuer(clock):
    url = f"http://127.0.0.1:{free_port()}"
    verifier = TokenVerifier([Issuer(url)], (AUD,), clock=clock)
    token = f"{b64({'alg': 'RS256', 'kid': 'k'})}.{b64({'iss': url, 'aud': AUD, 'exp': NOW + 60})}.c2ln"
    started = time.monotonic()
    rejected(verifier, token, "not available", "next attempt in 60 s")
    rejected(verifier, token, "not available", "next attempt in 60 s")   # throttled: no new attempt
    assert time.monotonic() - started < 5
    assert verifier.prefetch()[url].startswith(f"GET {url}/.well-known/openid-configuration failed")


def test_remote_issuers_must_use_https():
    with pytest.raises(errors.Invalid, match="https"):
        Issuer("http://idp.example.com")
    with pytest.raises(errors.Invalid, match="https"):
        Issuer("https://idp.example.com", jwks_uri="http://idp.example.com/jwks")
    assert Issuer("https://helseid-sts.nhn.no").remote
    assert Issuer("http://localhost:8080").remote


def test_prefetch(verifier, idp):
    assert verifier.prefetch() == {}
    assert idp.hits["/jwks"] == 1
    verifier.verify(idp.sign())
    assert idp.hits["/jwks"] == 1


# -- the cache ---------------------------------------------------------------------------------

def test_cached_token_is_rejected_once_expired(verifier, idp, clock):
    token = idp.sign(exp=NOW + 100)
    assert verifier.verify(token) is verifier.verify(token)      # the second answer is the cached one
    assert verifier.cached() == 1
    clock.now = NOW + 100 + 30                                  # exp + leeway
    rejected(verifier, token, "expired")
    assert verifier.cached() == 0


def test_cache_hit_needs_no_keys(verifier, idp):
    token = idp.sign()
    verifier.verify(token)
    idp.published = []                       # even with the key gone, the verified token is known
    assert verifier.verify(token)["sub"] == "subject-1"


def test_cache_is_bounded(idp, clock):
    verifier = TokenVerifier([Issuer(idp.url)], (AUD,), clock=clock, cache_size=3)
    tokens = [idp.sign(jti=str(n)) for n in range(5)]
    for token in tokens:
        verifier.verify(token)
    assert verifier.cached() == 3
    assert list(verifier._cache) == tokens[2:]           # the oldest were evicted


def test_failures_are_not_cached(verifier, idp):
    rejected(verifier, idp.sign(aud="x"), "audience")
    assert verifier.cached() == 0


# -- settings ----------------------------------------------------------------------------------

def test_default_base():
    assert default_base(Settings()) == "http://127.0.0.1:8080"
    assert default_base(Settings(base_url="https://ej.example/fhir/")) == "https://ej.example/fhir"


def test_from_settings(idp, keys, clock):
    local = Issuer("http://127.0.0.1:8080", keys=KeySet([keys["ec"]]))
    verifier = from_settings(Settings(oidc_issuers=f" {idp.url} , https://helseid-sts.nhn.no"), [local], clock=clock)
    assert set(verifier.issuers) == {idp.url, "https://helseid-sts.nhn.no", "http://127.0.0.1:8080"}
    assert verifier.audiences == ("http://127.0.0.1:8080",)
    assert verifier.verify(idp.sign(aud="http://127.0.0.1:8080"))
    verifier = from_settings(Settings(oidc_issuers=idp.url, oidc_audience=f"{AUD}, nhn:enjournal"), clock=clock)
    assert verifier.audiences == (AUD, "nhn:enjournal")
    assert verifier.verify(idp.sign(aud="nhn:enjournal"))
    with pytest.raises(errors.Invalid, match="twice"):
        from_settings(Settings(oidc_issuers="http://127.0.0.1:8080"), [local])


# -- claims -> Principal -----------------------------------------------------------------------

FNR = "02013299997"
BASE = {"iss": "https://helseid-sts.nhn.no", "sub": "pairwise-1", "client_id": "ehr-client", "exp": NOW + 300,
        "jti": "jti-1", "scope": "openid user/*.rs patient/Observation.read"}


def personnel(**changes) -> dict:
    out = {**BASE, HELSEID_HPR: "9144101", HELSEID_PID: "30108299920", "name": "Astrid Bråten",
           HELSEID_SECURITY_LEVEL: "4", HELSEID_ORG_PARENT: "910000006", HELSEID_ORG_CHILD: "910001010"}
    out.update(changes)
    return {k: v for k, v in out.items() if v is not DROP}


def attestation(purpose="TREAT", reason=None, patient=FNR) -> dict:
    care = {"purpose_of_use": {"system": "urn:oid:2.16.840.1.113883.1.11.20448", "code": purpose}}
    if reason is not None:
        care["purpose_of_use_details"] = {"text": reason}
    return {"type": TRUST_FRAMEWORK_TYPE, "care_relationship": care,
            "patients": [{"identifier": {"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": patient}}]}


def unauthorized(claims: dict, *words: str) -> None:
    with pytest.raises(errors.Unauthorized) as info:
        principal_from_claims(claims, "https://helseid-sts.nhn.no")
    for word in words:
        assert word in info.value.message, info.value.message
    assert 'error="invalid_token"' in info.value.headers["WWW-Authenticate"]


def test_health_personnel():
    p = principal_from_claims(personnel(authorization_details=[
        {"type": "other:type", "x": 1}, attestation("ETREAT", "bevisstløs pasient")]), "https://helseid-sts.nhn.no")
    assert (p.kind, p.subject, p.issuer, p.name) == (PERSONNEL, "pairwise-1", "https://helseid-sts.nhn.no",
                                                     "Astrid Bråten")
    assert (p.pid, p.hpr, p.org, p.org_parent, p.assurance) == ("30108299920", "9144101", "910001010",
                                                                "910000006", "4")
    assert (p.client_id, p.expires, p.token_id) == ("ehr-client", NOW + 300, "jti-1")
    assert p.scope == "openid user/*.rs patient/Observation.read"
    assert p.scopes == scopes.parse(p.scope) and len(p.scopes) == 2
    assert (p.claims_purpose, p.claims_reason, p.claims_patient) == ("ETREAT", "bevisstløs pasient", FNR)


def test_health_personnel_fallbacks():
    p = principal_from_claims(personnel(name=DROP, given_name="Kari", family_name="Nordmann",
                                        **{HELSEID_ORG_CHILD: DROP, HELSEID_SECURITY_LEVEL: DROP},
                                        acr="urn:helseid:loa:high"))
    assert (p.name, p.org, p.org_parent, p.assurance, p.issuer) == (
        "Kari Nordmann", "910000006", "910000006", "urn:helseid:loa:high", "https://helseid-sts.nhn.no")
    assert (p.claims_purpose, p.claims_reason, p.claims_patient) == (None, None, None)


def test_attestation_forms():
    one = principal_from_claims(personnel(authorization_details=attestation("BTG", "akutt")))
    assert (one.claims_purpose, one.claims_reason, one.claims_patient) == ("BTG", "akutt", FNR)
    smart = principal_from_claims(personnel(patient="pat-42", authorization_details=[attestation()]))
    assert smart.claims_patient == "pat-42"                         # the SMART launch context wins
    plain = principal_from_claims(personnel(purpose_of_use="ETREAT", emergency_reason="hjertestans"))
    assert (plain.claims_purpose, plain.claims_reason) == ("ETREAT", "hjertestans")
    odd = principal_from_claims(personnel(authorization_details=[attestation("RESEARCH")]))
    assert odd.claims_purpose == "RESEARCH"                        # kept, for the policy to refuse
    empty = principal_from_claims(personnel(authorization_details=[
        {"type": TRUST_FRAMEWORK_TYPE, "care_relationship": {}, "patients": []}]))
    assert (empty.claims_purpose, empty.claims_patient) == (None, None)


def test_citizen():
    p = principal_from_claims({**BASE, "pid": FNR, "name": "Silje Økland", "acr": "idporten-loa-high",
                               "patient": "pat-1", "scope": ["openid", "patient/*.rs"]})
    assert (p.kind, p.pid, p.name, p.assurance, p.hpr) == (CITIZEN, FNR, "Silje Økland", "idporten-loa-high", None)
    assert (p.claims_patient, p.scope) == ("pat-1", "openid patient/*.rs")
    assert p.scopes == (scopes.ResourceScope("patient", "*", "rs"),)


def test_system():
    p = principal_from_claims({"iss": "https://helseid-sts.nhn.no", "client_id": "registry-client",
                               "scope": "system/*.rs", "exp": NOW, HELSEID_ORG_PARENT: "910000006"})
    assert (p.kind, p.client_id, p.subject, p.org, p.org_parent) == (
        SYSTEM, "registry-client", "registry-client", "910000006", "910000006")
    assert principal_from_claims({"azp": "app", "sub": "s1"}, "x").client_id == "app"
    assert principal_from_claims({"sub": "svc"}, "x").client_id == "svc"
    unauthorized({"iss": "x", "scope": "system/*.rs"}, "no client")


@pytest.mark.parametrize("changes,words", [
    ({HELSEID_HPR: 9144101}, (HELSEID_HPR, "string", "int")),
    ({HELSEID_HPR: "HPR-1"}, (HELSEID_HPR, "not an HPR number")),
    ({HELSEID_PID: 30108299920}, (HELSEID_PID, "string")),
    ({HELSEID_PID: "123"}, (HELSEID_PID, "fødselsnummer")),
    ({HELSEID_ORG_PARENT: "91000000"}, (HELSEID_ORG_PARENT, "organisation number")),
    ({HELSEID_ORG_CHILD: ["910001010"]}, (HELSEID_ORG_CHILD, "string")),
    ({"name": {"text": "x"}}, ("name", "string")),
    ({"sub": 5}, ("sub", "string")),
    ({"scope": 5}, ("scope",)),
    ({"scope": ["a", 1]}, ("scope",)),
    ({"exp": "soon"}, ("exp", "number")),
    ({"jti": 1}, ("jti",)),
    ({"patient": 42}, ("patient", "string")),
    ({"authorization_details": "TREAT"}, ("authorization_details", "list or an object")),
    ({"authorization_details": ["TREAT"]}, ("authorization_details[0]", "object")),
    ({"authorization_details": [{"type": TRUST_FRAMEWORK_TYPE, "care_relationship": []}]},
     ("authorization_details[0].care_relationship", "object")),
    ({"authorization_details": [{"type": TRUST_FRAMEWORK_TYPE,
                                 "care_relationship": {"purpose_of_use": "TREAT"}}]},
     ("purpose_of_use", "object")),
    ({"authorization_details": [{"type": TRUST_FRAMEWORK_TYPE,
                                 "care_relationship": {"purpose_of_use": {"code": 1}}}]},
     ("purpose_of_use.code", "string")),
    ({"authorization_details": [{"type": TRUST_FRAMEWORK_TYPE,
                                 "care_relationship": {"purpose_of_use_details": {"text": ["x"]}}}]},
     ("purpose_of_use_details.text", "string")),
    ({"authorization_details": [{"type": TRUST_FRAMEWORK_TYPE, "patients": {"identifier": {}}}]},
     ("patients", "list")),
    ({"authorization_details": [{"type": TRUST_FRAMEWORK_TYPE, "patients": ["02013299997"]}]},
     ("patients[0]", "object")),
    ({"authorization_details": [{"type": TRUST_FRAMEWORK_TYPE,
                                 "patients": [{"identifier": {"value": 2013299997}}]}]},
     ("patients[0].identifier.value", "string")),
    ({"purpose_of_use": ["TREAT"]}, ("purpose_of_use", "string")),
    ({"emergency_reason": 7}, ("emergency_reason", "string")),
])
def test_bad_claim_types(changes, words):
    unauthorized(personnel(**changes), *words)


def test_citizen_bad_pid():
    unauthorized({**BASE, "pid": 2013299997}, "pid", "string")
    unauthorized({**BASE, "pid": "0201329999"}, "pid", "11 digits")


def test_not_a_dict():
    with pytest.raises(errors.Unauthorized):
        principal_from_claims(["sub"], "x")


# -- the built-in provider's tokens, end to end --------------------------------------------------

class _KeyStore:
    """The provider's repository, reduced to the one setting it reads (its signing key)."""

    def __init__(self):
        key = ECKey.generate_key("P-256", parameters={"use": "sig", "alg": "ES256"}, private=True, auto_kid=True)
        self.key = json.dumps(key.as_dict(private=True))

    def get_setting(self, name):
        return self.key if name == "idp.signing_key" else None


def test_builtin_provider_tokens():
    from enjournal.access.provider import Provider
    from enjournal.services.personas import demo_personas

    settings = Settings(base_url="http://127.0.0.1:8080/")
    provider = Provider(_KeyStore(), default_base(settings), demo_personas(), clock=lambda: NOW)
    verifier = from_settings(settings, [Issuer(provider.issuer, keys=provider.key_set())], clock=Clock())

    gp = principal_from_claims(verifier.verify(provider.issue("gp", patient=FNR, purpose="TREAT")))
    assert (gp.kind, gp.claims_purpose, gp.claims_patient, gp.issuer) == (PERSONNEL, "TREAT", FNR, provider.issuer)
    assert gp.hpr and gp.pid and gp.org_parent and gp.assurance == "4"
    silje = principal_from_claims(verifier.verify(provider.issue("silje")))
    assert (silje.kind, silje.pid) == (CITIZEN, "25848531440")
    system = principal_from_claims(verifier.verify(provider.issue("system")))
    assert (system.kind, system.client_id) == (SYSTEM, "enjournal-system")
