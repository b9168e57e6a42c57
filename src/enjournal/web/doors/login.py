"""A door's OpenID Connect login: the authorization code flow with PKCE (RFC 7636, S256),
``state`` against cross-site request forgery of the callback and ``nonce`` against a
replayed ID token (OpenID Connect Core 1.0 §3.1).

``LoginFlow`` starts a login (the URL to send the browser to and the secrets to keep in the
session) and finishes it (checks ``state``, redeems the code, checks the ID token's
signature, audience and ``nonce``). The issuer behind it is an ``Issuer``: ``BuiltinIssuer``
redeems codes in-process with the built-in provider (``web/oidc.py``), ``RemoteIssuer`` talks
to a configured one (ID-porten-, HelseID-style) over HTTP with OpenID discovery.
"""
from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from starlette.concurrency import run_in_threadpool


class LoginFailed(Exception):
    """The login could not be completed; the message is for the log and the error page
    (never holds a token or personal data)."""


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge) (RFC 7636 §4.1-4.2)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
    return verifier, challenge


class Issuer(Protocol):
    def authorization_endpoint(self, base: str) -> str: ...
    async def redeem(self, code: str, verifier: str, redirect_uri: str, client_id: str) -> dict: ...
    async def keys(self, base: str) -> KeySet: ...
    def issuer(self, base: str) -> str: ...


class BuiltinIssuer:
    """The built-in provider of this server, redeemed in-process (no HTTP to itself, so it
    works behind any proxy and in in-process tests)."""

    def __init__(self, server: Any):
        self.server = server                    # web.oidc.AuthorizationServer

    def authorization_endpoint(self, base: str) -> str:
        return f"{base}/oidc/authorize"

    def issuer(self, base: str) -> str:
        return self.server.provider.issuer

    async def redeem(self, code: str, verifier: str, redirect_uri: str, client_id: str) -> dict:
        from ..oidc import OAuthError
        form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
                "redirect_uri": redirect_uri, "client_id": client_id}
        try:
            return await run_in_threadpool(self.server._code_grant, form, client_id, None, False)
        except OAuthError as exc:
            raise LoginFailed(f"{exc.error}: {exc.description}") from None

    async def keys(self, base: str) -> KeySet:
        return await run_in_threadpool(self.server.provider.key_set)


class RemoteIssuer:
    """A configured OpenID provider, found by discovery (``/.well-known/openid-configuration``)."""

    def __init__(self, issuer_url: str, client_secret: str | None = None, timeout: float = 10.0):
        self.url = issuer_url.rstrip("/")
        self.client_secret = client_secret
        self.timeout = timeout
        self._meta: dict | None = None
        self._keys: tuple[float, KeySet] | None = None

    async def metadata(self) -> dict:
        if self._meta is None:
            try:
                async with httpx.AsyncClient(timeout=self.timeout) as client:
                    response = await client.get(f"{self.url}/.well-known/openid-configuration")
                if response.status_code != 200:
                    raise LoginFailed(f"discovery at {self.url} answered {response.status_code}")
                meta = response.json()
                for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not isinstance(meta.get(key), str):
                        raise LoginFailed(f"discovery at {self.url} gives no {key}")
            except (httpx.HTTPError, ValueError) as exc:
                raise LoginFailed(f"discovery at {self.url} failed: {type(exc).__name__}") from None
            self._meta = meta
        return self._meta

    def authorization_endpoint(self, base: str) -> str:
        if self._meta is None:
            raise LoginFailed("the issuer's metadata is not loaded")
        return self._meta["authorization_endpoint"]

    def issuer(self, base: str) -> str:
        return (self._meta or {}).get("issuer", self.url)

    async def redeem(self, code: str, verifier: str, redirect_uri: str, client_id: str) -> dict:
        meta = await self.metadata()
        form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
                "redirect_uri": redirect_uri, "client_id": client_id}
        auth = (client_id, self.client_secret) if self.client_secret else None
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(meta["token_endpoint"], data=form, auth=auth)
            if response.status_code != 200:
                raise LoginFailed(f"the token endpoint answered {response.status_code}")
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise LoginFailed(f"the token endpoint failed: {type(exc).__name__}") from None
        if not isinstance(body, dict):
            raise LoginFailed("the token endpoint's answer is not an object")
        return body

    async def keys(self, base: str) -> KeySet:
        if self._keys is None or self._keys[0] < time.monotonic():
            meta = await self.metadata()
            try:
                async with httpx.AsyncClient(timeout=self.timeout) as client:
                    response = await client.get(meta["jwks_uri"])
                self._keys = (time.monotonic() + 600, KeySet.import_key_set(response.json()))
            except (httpx.HTTPError, ValueError, JoseError) as exc:
                raise LoginFailed(f"the issuer's keys could not be read: {type(exc).__name__}") from None
        return self._keys[1]


@dataclass(frozen=True)
class Started:
    url: str            # where to send the browser
    pending: dict       # what the session keeps until the callback


class LoginFlow:
    """One door's login against one issuer as one client."""

    def __init__(self, issuer: Issuer, client_id: str, scope: str):
        self.issuer = issuer
        self.client_id = client_id
        self.scope = scope

    async def start(self, base: str, redirect_uri: str, next_path: str) -> Started:
        if isinstance(self.issuer, RemoteIssuer):
            await self.issuer.metadata()
        verifier, challenge = pkce_pair()
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        params = {"response_type": "code", "client_id": self.client_id, "redirect_uri": redirect_uri,
                  "scope": self.scope, "state": state, "nonce": nonce, "code_challenge": challenge,
                  "code_challenge_method": "S256"}
        url = self.issuer.authorization_endpoint(base) + "?" + urlencode(params)
        pending = {"state": state, "nonce": nonce, "verifier": verifier, "next": next_path,
                   "redirect_uri": redirect_uri, "started": int(time.time())}
        return Started(url, pending)

    async def finish(self, base: str, pending: dict | None, params: Any) -> dict:
        """The token response of a successful login (``access_token``, ``id_token``, ...),
        after checking ``state`` and the ID token; ``LoginFailed`` otherwise."""
        if not pending:
            raise LoginFailed("no login was started in this browser (or it took too long)")
        if params.get("error"):
            raise LoginFailed(f"the identity provider refused: {params.get('error')}")
        state = params.get("state") or ""
        if not secrets.compare_digest(state.encode(), str(pending.get("state", "")).encode()):
            raise LoginFailed("state does not match the login started in this browser")
        code = params.get("code") or ""
        if not code:
            raise LoginFailed("the callback has no code")
        body = await self.issuer.redeem(code, pending["verifier"], pending["redirect_uri"], self.client_id)
        if not body.get("access_token"):
            raise LoginFailed("the token response has no access token")
        id_token = body.get("id_token")
        if not id_token:
            raise LoginFailed("the token response has no ID token (scope openid)")
        keys = await self.issuer.keys(base)
        try:
            claims = jwt.decode(id_token, keys).claims
        except (JoseError, ValueError) as exc:
            raise LoginFailed(f"the ID token does not verify: {type(exc).__name__}") from None
        if claims.get("iss") != self.issuer.issuer(base):
            raise LoginFailed("the ID token is from another issuer")
        audience = claims.get("aud")
        if audience != self.client_id and not (isinstance(audience, list) and self.client_id in audience):
            raise LoginFailed("the ID token is for another client")
        if int(claims.get("exp", 0)) < time.time():
            raise LoginFailed("the ID token has expired")
        if not secrets.compare_digest(str(claims.get("nonce", "")).encode(), str(pending["nonce"]).encode()):
            raise LoginFailed("the ID token's nonce does not match this login")
        body["id_claims"] = claims
        return body
