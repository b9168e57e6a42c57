"""Bearer token verification against trusted OpenID issuers (docs/access-tokens.md).

A token is a JWS-signed JWT (RFC 7519) from one of the configured issuers: HelseID,
ID-porten, or the built-in provider. ``TokenVerifier.verify`` checks, in this order, that
it is a JWS compact serialization, that its ``alg`` is an asymmetric algorithm we allow
(never ``none``, never HMAC: an HMAC "signed" with the issuer's public key is the classic
forgery), that ``iss`` is a configured issuer, that the signature is made by a key of that
issuer's JWKS (RFC 7517), and that ``exp``, ``nbf`` and ``aud`` hold. Any failure is an
``errors.Unauthorized`` carrying ``WWW-Authenticate: Bearer error="invalid_token"`` (RFC 6750 §3).

Remote issuers' keys are found by OpenID Connect Discovery 1.0 (``{issuer}/.well-known/
openid-configuration`` -> ``jwks_uri``), fetched with the standard library, cached, and
refetched at most once a minute per issuer when a token names an unknown key id (a key
rotation). Verified tokens are cached by their exact text, so a client that reuses its token
pays for the signature once; expiry is checked again on every use.
"""
from __future__ import annotations

import ipaddress
import json
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.client import HTTPException
from typing import Any, Callable, Iterable

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, KeySet

from .. import errors

# Asymmetric algorithms only (RFC 7518 §3.1). HS* and "none" are refused before any key is chosen.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384")
DISCOVERY_PATH = "/.well-known/openid-configuration"
FETCH_TIMEOUT = 5.0             # seconds per HTTP request to an issuer
REFETCH_SECONDS = 60.0          # least time between two fetches of one issuer's keys
MAX_DOCUMENT_BYTES = 1 << 20    # a discovery document or JWKS larger than this is refused
CACHE_SIZE = 10_000             # verified tokens remembered per verifier
LEEWAY = 30.0                   # seconds of clock skew tolerated for exp and nbf
_KEY_TYPES = ("RSA", "EC")      # what a signing key in a trusted JWKS may be
_LOOPBACK_NAMES = ("localhost",)


def default_base(settings: Any) -> str:
    """The server's public base URL without a trailing slash: ``base_url`` if set, else
    ``http://host:port``. It is the default token audience and the built-in provider's issuer."""
    return (settings.base_url or f"http://{settings.host}:{settings.port}").rstrip("/")


def invalid_token(message: str) -> errors.Unauthorized:
    """A 401 for a token that cannot be accepted, with the RFC 6750 §3 challenge naming why."""
    return errors.Unauthorized(message, headers={
        "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{_header_text(message)}"'})


def _header_text(message: str) -> str:
    # A quoted-string in an HTTP header: printable ASCII, no quote or backslash (RFC 9110 §5.6.4).
    text = "".join(c if " " <= c <= "~" and c not in '"\\' else "'" if c == '"' else "?" for c in message)
    return text[:300]


def _show(value: Any) -> str:
    """A token-supplied value for a message: short, so an attacker cannot flood the logs."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _when(seconds: float) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return str(seconds)


# -- fetching an issuer's keys -----------------------------------------------------------------

def url_problem(url: str) -> str | None:
    """None when keys may be fetched from ``url``: https, or plain http to this machine
    (loopback) only, since keys fetched over the network without TLS could be anyone's."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme == "https" and host:
        return None
    if parts.scheme == "http" and host:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host in _LOOPBACK_NAMES
        return None if loopback else "plain http is allowed only to localhost; use https"
    return "must be an https URL"


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to URLs keys may come from (no downgrade to plain http)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 (urllib's signature)
        problem = url_problem(newurl)
        if problem:
            raise urllib.error.URLError(f"redirect to {newurl}: {problem}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_json(url: str, timeout: float = FETCH_TIMEOUT) -> dict:
    """The JSON object at ``url`` (GET). Raises ``ValueError`` naming what went wrong:
    unreachable, an HTTP error status, too large, or not a JSON object."""
    opener = urllib.request.build_opener(_SafeRedirects)
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "enjournal"})
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read(MAX_DOCUMENT_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise ValueError(f"GET {url} answered {exc.code}") from None
    except (OSError, HTTPException) as exc:     # URLError, timeouts, refused connections
        reason = getattr(exc, "reason", None) or exc
        raise ValueError(f"GET {url} failed: {reason}") from None
    if len(body) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"GET {url}: the document is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        value = json.loads(body)
    except ValueError:
        raise ValueError(f"GET {url}: not JSON") from None
    if not isinstance(value, dict):
        raise ValueError(f"GET {url}: not a JSON object")
    return value


@dataclass(frozen=True)
class _KeyIndex:
    """An issuer's signing keys by ``kid``; ``all`` for tokens that name no key."""
    by_kid: dict
    all: tuple

    @classmethod
    def of(cls, entries: Iterable[Any]) -> "_KeyIndex":
        """Index JWKs (dicts or joserfc keys). Keys for encryption, symmetric keys and keys
        joserfc cannot read are left out: they can never verify a token."""
        keys = []
        for entry in entries:
            data = entry.as_dict(private=False) if hasattr(entry, "as_dict") else entry
            if not isinstance(data, dict) or data.get("kty") not in _KEY_TYPES or data.get("use", "sig") != "sig":
                continue
            try:
                keys.append(JWKRegistry.import_key(data))
            except (JoseError, ValueError, TypeError):
                continue
        by_kid: dict[str, list] = {}
        for key in keys:
            if isinstance(key.kid, str):
                by_kid.setdefault(key.kid, []).append(key)
        return cls({kid: tuple(found) for kid, found in by_kid.items()}, tuple(keys))

    def lookup(self, kid: str | None) -> tuple:
        return self.all if kid is None else self.by_kid.get(kid, ())


@dataclass(eq=False)
class Issuer:
    """A trusted token issuer. ``url`` is its issuer identifier, compared exactly with a
    token's ``iss``. Its keys are either ``keys`` (a joserfc ``KeySet``, for the built-in
    provider in this process) or remote: from ``jwks_uri`` if given, else found by OpenID
    discovery at ``{url}/.well-known/openid-configuration``."""
    url: str
    keys: KeySet | None = None
    jwks_uri: str | None = None
    timeout: float = FETCH_TIMEOUT
    refetch_seconds: float = REFETCH_SECONDS
    fetch: Callable[[str, float], dict] = fetch_json
    _index: _KeyIndex | None = field(default=None, init=False, repr=False)
    _attempted: float | None = field(default=None, init=False, repr=False)
    _problem: str = field(default="", init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url:
            raise errors.Invalid("an issuer needs its issuer URL", "oidc_issuers")
        if self.keys is not None:
            if self.jwks_uri is not None:
                raise errors.Invalid(f"issuer {self.url}: give local keys or a jwks_uri, not both", "oidc_issuers")
            self._index = _KeyIndex.of(self.keys.keys)
            return
        for url in (self.url, self.jwks_uri):
            problem = url_problem(url) if url is not None else None
            if problem:
                raise errors.Invalid(f"issuer {self.url}: {url} {problem}", "oidc_issuers")

    @property
    def remote(self) -> bool:
        return self.keys is None

    @property
    def problem(self) -> str:
        """Why the last fetch of the keys failed ("" when it did not)."""
        return self._problem

    def keys_for(self, kid: str | None, now: float) -> tuple:
        """The issuer's keys with this ``kid`` (every key when ``kid`` is None). For a remote
        issuer an unknown ``kid`` refetches the JWKS, at most once per ``refetch_seconds``;
        ``errors.Unauthorized`` when the keys were never obtained."""
        index = self._index
        found = index.lookup(kid) if index is not None else ()
        if found or not self.remote:
            return found
        self.refresh(now)
        return self._index.lookup(kid) if self._index is not None else ()

    def refresh(self, now: float, force: bool = False) -> None:
        """Fetch the JWKS now unless it was tried less than ``refetch_seconds`` ago (``force``
        ignores that). A failed fetch keeps the keys already known."""
        with self._lock:        # one fetch at a time; the others then find its result
            recent = self._attempted is not None and 0 <= now - self._attempted < self.refetch_seconds
            if not recent or force:
                self._attempted = now
                try:
                    self._index = _KeyIndex.of(self._fetch_jwks())
                    self._problem = ""
                except ValueError as exc:
                    self._problem = str(exc)
            if self._index is None:
                wait = max(0, math.ceil(self._attempted + self.refetch_seconds - now))
                raise invalid_token(f"the signing keys of issuer {self.url} are not available "
                                    f"({self._problem}); next attempt in {wait} s")

    def _fetch_jwks(self) -> list:
        uri = self.jwks_uri
        if uri is None:
            meta = self.fetch(self.url.rstrip("/") + DISCOVERY_PATH, self.timeout)
            if meta.get("issuer") != self.url:
                # OpenID Connect Discovery 1.0 §4.3: the document must be the issuer's own
                raise ValueError(f"the discovery document names issuer {_show(meta.get('issuer'))}, "
                                 f"not {self.url!r}")
            uri = meta.get("jwks_uri")
            if not isinstance(uri, str):
                raise ValueError("the discovery document has no jwks_uri")
            problem = url_problem(uri)
            if problem:
                raise ValueError(f"jwks_uri {uri} {problem}")
        keys = self.fetch(uri, self.timeout).get("keys")
        if not isinstance(keys, list):
            raise ValueError(f"{uri} is not a JWK set (no 'keys' list)")
        return keys


# -- verification ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Verified:
    claims: dict
    exp: float
    nbf: float | None


class TokenVerifier:
    """Verifies bearer tokens from trusted ``issuers`` for one of ``audiences``.

    ``clock`` gives the time in epoch seconds (inject it in tests); ``leeway`` is the clock
    skew allowed for ``exp`` and ``nbf``; up to ``cache_size`` verified tokens are remembered.
    Thread-safe.
    """

    def __init__(self, issuers: Iterable[Issuer], audiences: Iterable[str],
                 clock: Callable[[], float] = time.time, leeway: float = LEEWAY,
                 cache_size: int = CACHE_SIZE):
        self.issuers: dict[str, Issuer] = {}
        for issuer in issuers:
            if issuer.url in self.issuers:
                raise errors.Invalid(f"issuer {issuer.url} is configured twice", "oidc_issuers")
            self.issuers[issuer.url] = issuer
        self.audiences = tuple(a for a in audiences if a)
        if not self.audiences:
            raise errors.Invalid("a token verifier needs at least one accepted audience", "oidc_audience")
        self._audience_set = frozenset(self.audiences)
        self.clock = clock
        self.leeway = leeway
        self.cache_size = cache_size
        self._cache: dict[str, _Verified] = {}
        self._lock = threading.Lock()
        self._registry = jws.JWSRegistry(algorithms=ALGORITHMS, strict_check_header=False)
        self._registry.max_header_length = 4096     # room for an x5c certificate chain

    def verify(self, token: str) -> dict:
        """The verified claims of ``token``; ``errors.Unauthorized`` saying what is wrong
        otherwise. The dict is shared with the cache: treat it as read-only."""
        now = self.clock()
        hit = self._cache.get(token) if isinstance(token, str) else None
        if hit is not None:
            try:
                self._check_time(hit.exp, hit.nbf, now)
            except errors.Unauthorized:
                with self._lock:
                    self._cache.pop(token, None)
                raise
            return hit.claims
        verified = self._verify_signed(token, now)
        self._remember(token, verified)
        return verified.claims

    def cached(self) -> int:
        """How many verified tokens are remembered now."""
        return len(self._cache)

    def prefetch(self) -> dict[str, str]:
        """Fetch every remote issuer's keys now (e.g. at start-up, off the request path).
        Returns the problems by issuer URL; empty when all keys were fetched."""
        problems = {}
        for issuer in self.issuers.values():
            if issuer.remote:
                try:
                    issuer.refresh(self.clock(), force=True)
                except errors.Unauthorized:
                    pass
                if issuer.problem:
                    problems[issuer.url] = issuer.problem
        return problems

    # -- steps -------------------------------------------------------------------------------

    def _verify_signed(self, token: Any, now: float) -> _Verified:
        obj = self._parse(token)
        header = obj.headers()
        self._check_header(header)
        claims = _payload(obj.payload)
        issuer = self._issuer_of(claims)
        self._check_signature(obj, issuer, header, now)
        exp, nbf = _times(claims)
        self._check_time(exp, nbf, now)
        self._check_audience(claims.get("aud"))
        return _Verified(claims, exp, nbf)

    def _parse(self, token: Any) -> Any:
        if not isinstance(token, str) or not token:
            raise invalid_token("malformed token: empty or not text")
        try:
            return jws.extract_compact(token.encode("ascii"), registry=self._registry)
        except (JoseError, ValueError, TypeError) as exc:
            detail = f" ({exc.description or exc.error})" if isinstance(exc, JoseError) else ""
            raise invalid_token("malformed token: not a signed JWT (header.payload.signature "
                                f"in base64url){detail}") from None

    def _check_header(self, header: dict) -> None:
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise invalid_token(f"token algorithm {_show(alg)} is not allowed (allowed: {', '.join(ALGORITHMS)})")
        if "crit" in header or "b64" in header:
            raise invalid_token("token header uses extensions (crit, b64) that are not supported")
        try:
            self._registry.check_header(header)
        except JoseError as exc:
            raise invalid_token(f"malformed token header: {exc.description or exc.error}") from None

    def _issuer_of(self, claims: dict) -> Issuer:
        iss = claims.get("iss")
        if iss is None:
            raise invalid_token("token has no issuer (iss)")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise invalid_token(f"token issuer {_show(iss)} is not trusted here")
        return issuer

    def _check_signature(self, obj: Any, issuer: Issuer, header: dict, now: float) -> None:
        kid = header.get("kid")
        alg = header["alg"]
        keys = issuer.keys_for(kid, now)
        if not keys:
            if kid is None:
                raise invalid_token(f"token names no key id (kid) and issuer {issuer.url} has no signing key")
            raise invalid_token(f"token key id {_show(kid)} is not a signing key of issuer {issuer.url}")
        unfit, why = 0, ""
        for key in keys:        # one key for a kid; every key of the issuer for a token without kid
            try:
                if jws.validate_compact(obj, key, registry=self._registry):
                    return
            except JoseError as exc:        # the key is not for this alg (type, curve, its own "alg")
                unfit, why = unfit + 1, exc.description or exc.error
        if unfit == len(keys):
            if kid is None:
                raise invalid_token(f"token names no key id (kid) and issuer {issuer.url} has no key for {alg}")
            raise invalid_token(f"token key {_show(kid)} of issuer {issuer.url} cannot verify {alg}: {why}")
        raise invalid_token("token signature is not valid")

    def _check_time(self, exp: float, nbf: float | None, now: float) -> None:
        if now - self.leeway >= exp:
            raise invalid_token(f"token expired at {_when(exp)}")
        if nbf is not None and now + self.leeway < nbf:
            raise invalid_token(f"token is not valid before {_when(nbf)}")

    def _check_audience(self, aud: Any) -> None:
        if aud is None:
            raise invalid_token("token has no audience (aud)")
        given = [aud] if isinstance(aud, str) else aud
        if not isinstance(given, list) or not all(isinstance(a, str) for a in given):
            raise invalid_token("token audience (aud) must be a string or a list of strings")
        if self._audience_set.isdisjoint(given):
            raise invalid_token(f"token audience {_show(aud)} is not accepted here "
                                f"(expected {' or '.join(self.audiences)})")

    def _remember(self, token: str, verified: _Verified) -> None:
        if self.cache_size <= 0:
            return
        with self._lock:
            if token not in self._cache:
                while len(self._cache) >= self.cache_size:
                    del self._cache[next(iter(self._cache))]     # the oldest entry
            self._cache[token] = verified


def _payload(payload: bytes) -> dict:
    try:
        claims = json.loads(payload)
    except ValueError:
        raise invalid_token("malformed token: the payload is not JSON") from None
    if not isinstance(claims, dict):
        raise invalid_token("malformed token: the payload is not a JSON object")
    return claims


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _times(claims: dict) -> tuple[float, float | None]:
    """``exp`` (required) and ``nbf`` (optional) as numbers (RFC 7519 §4.1.4, §4.1.5)."""
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if exp is None:
        raise invalid_token("token has no expiry (exp)")
    if not _number(exp):
        raise invalid_token("token expiry (exp) must be a number of seconds")
    if nbf is not None and not _number(nbf):
        raise invalid_token("token not-before (nbf) must be a number of seconds")
    return exp, nbf


def from_settings(settings: Any, local_issuers: Iterable[Issuer] = (), *,
                  clock: Callable[[], float] = time.time, leeway: float = LEEWAY) -> TokenVerifier:
    """A verifier for the issuers in setting ``oidc_issuers`` (remote, by discovery) plus
    ``local_issuers`` (e.g. the built-in provider), accepting the audiences in
    ``oidc_audience``, or the server's base URL when that is empty."""
    remote = [Issuer(url) for url in _split(settings.oidc_issuers)]
    audiences = _split(settings.oidc_audience) or [default_base(settings)]
    return TokenVerifier(remote + list(local_issuers), audiences, clock=clock, leeway=leeway)


def _split(text: str) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]
