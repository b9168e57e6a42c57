"""HTTP endpoints of the built-in OpenID Connect provider (docs/identity-provider.md).

- ``GET /.well-known/openid-configuration`` and ``GET /.well-known/smart-configuration``:
  metadata (OpenID Connect Discovery; SMART App Launch v2);
- ``GET /oidc/jwks``: the public signing key;
- ``GET|POST /oidc/authorize``: the authorization code flow with PKCE (RFC 6749 §4.1,
  RFC 7636, S256 only) behind a page where one picks a demo persona instead of logging in;
- ``POST /oidc/token``: the ``authorization_code`` and ``client_credentials`` grants.

Every endpoint is public. Errors follow RFC 6749 §5.2 (``{"error", "error_description"}``
with 400 or 401), or §4.1.2.1 (a redirect back to the client with ``error``) once the
redirect URI is known to be usable. Authorization codes last 60 seconds and are single-use;
they are kept in the database (the store's ``job`` table, under a hash of the code), so the
browser flow works with several worker processes.

The web front doors are registered clients (``provider.DOOR_CLIENTS``): their redirect URI
must end at the door's callback path, and the login page lists only the personas that
door is for (citizens for ``enjournal-portal``, personnel for ``enjournal-workspace``).
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import unquote, urlencode, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from .. import errors
from ..access.context import system_context, use
from ..access.principal import CITIZEN, PERSONNEL, PURPOSES, SYSTEM
from ..fhir import norway

CODE_SECONDS = 60
CODE_KIND = "oidc-code"     # authorization codes are rows of the store's job table


def _code_key(code: str) -> str:
    return "oc-" + hashlib.sha256(code.encode()).hexdigest()[:40]
_PKCE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_CORS = {"Access-Control-Allow-Origin": "*"}


class OAuthError(Exception):
    """An OAuth 2.0 error (RFC 6749 §5.2): ``error`` code, a description and the status."""

    def __init__(self, error: str, description: str, status: int = 400, headers: dict | None = None):
        super().__init__(description)
        self.error, self.description, self.status = error, description, status
        self.headers = headers or {}

    def response(self) -> Response:
        return JSONResponse({"error": self.error, "error_description": self.description},
                            status_code=self.status, headers={**_NO_STORE, **_CORS, **self.headers})


class RedirectError(OAuthError):
    """An authorization error the client hears about through its redirect URI (§4.1.2.1)."""

    def __init__(self, error: str, description: str, redirect_uri: str, state: str | None):
        super().__init__(error, description)
        self.redirect_uri, self.state = redirect_uri, state

    def response(self) -> Response:
        params = {"error": self.error, "error_description": self.description}
        if self.state:
            params["state"] = self.state
        return RedirectResponse(_with_query(self.redirect_uri, params), status_code=303)


@dataclass(frozen=True)
class AuthRequest:
    """A checked authorization request."""
    client_id: str
    redirect_uri: str
    state: str
    challenge: str
    scope: str
    nonce: str | None


@dataclass(frozen=True)
class Grant:
    """What an authorization code stands for until it is redeemed."""
    request: AuthRequest
    persona: str
    scope: str
    patient: str | None         # Patient id or person number for the token
    patient_id: str | None      # the SMART launch context (a Patient id), if any
    purpose: str | None
    reason: str | None
    expires: float


def _with_query(uri: str, params: dict) -> str:
    return uri + ("&" if "?" in uri else "?") + urlencode(params)


def _usable_redirect(uri: str) -> bool:
    """An absolute http(s) URI without a fragment (RFC 6749 §3.1.2). The dev provider has no
    client registry, so any such URI is accepted."""
    parts = urlsplit(uri)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not parts.fragment and "#" not in uri


def s256(verifier: str) -> str:
    """The PKCE S256 code challenge of ``verifier`` (RFC 7636 §4.2)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def check_authorization_request(params: Any, audience: str) -> AuthRequest:
    """The authorization request in ``params`` (query or form), or an ``OAuthError``: a
    plain one while the client or its redirect URI is unknown, a ``RedirectError`` after."""
    client_id = (params.get("client_id") or "").strip()
    redirect_uri = params.get("redirect_uri") or ""
    if not client_id:
        raise OAuthError("invalid_request", "client_id is required")
    if not _usable_redirect(redirect_uri):
        raise OAuthError("invalid_request", "redirect_uri must be an absolute http(s) URI without a fragment")
    state = params.get("state") or ""

    def fail(error: str, description: str) -> RedirectError:
        return RedirectError(error, description, redirect_uri, state or None)

    if params.get("response_type") != "code":
        raise fail("unsupported_response_type", "response_type must be 'code'")
    if not state:
        raise fail("invalid_request", "state is required")
    challenge = params.get("code_challenge") or ""
    if not challenge:
        raise fail("invalid_request", "code_challenge is required (PKCE, RFC 7636)")
    if params.get("code_challenge_method") != "S256":
        raise fail("invalid_request", "code_challenge_method must be S256")
    if not _PKCE.match(challenge):
        raise fail("invalid_request", "code_challenge must be 43-128 characters of [A-Za-z0-9-._~]")
    aud = params.get("aud")
    if aud and aud.rstrip("/") != audience:
        raise fail("invalid_request", f"aud must be this FHIR server's base URL, {audience}")
    return AuthRequest(client_id, redirect_uri, state, challenge, params.get("scope") or "",
                       params.get("nonce") or None)


def patient_finder(resources: Any) -> Callable[[str], str | None]:
    """A function from a fødselsnummer or D-number to the id of the one Patient with it
    (None when there is none or several), searching as the provider itself."""
    def find(pid: str) -> str | None:
        kind = norway.kind(pid) or ""
        system = norway.DNR if "dnr" in kind else norway.FNR
        try:
            with use(system_context("enjournal-idp")):
                result = resources.search("Patient", [("identifier", f"{system}|{pid}"), ("_count", "2")])
        except errors.FhirError:
            return None
        ids = [stored.id for stored in result.matches]
        return ids[0] if len(ids) == 1 else None
    return find


class AuthorizationServer:
    """The routes of the built-in provider over a ``Provider`` (``access/provider.py``)."""

    def __init__(self, provider: Any, base_of: Callable[[Request], str] | None = None,
                 find_patient: Callable[[str], str | None] | None = None, lifetime: int = 3600):
        self.provider = provider
        self.base_of = base_of or (lambda request: str(request.base_url).rstrip("/"))
        self.find_patient = find_patient or (lambda pid: None)
        self.lifetime = lifetime
        env = Environment(loader=PackageLoader("enjournal.web", "templates"), autoescape=select_autoescape())
        self.template = env.get_template("login.html")

    def routes(self) -> list[Route]:
        return [
            Route("/.well-known/openid-configuration", self.openid_configuration, methods=["GET"]),
            Route("/.well-known/smart-configuration", self.smart_configuration, methods=["GET"]),
            Route("/oidc/jwks", self.jwks, methods=["GET"]),
            Route("/oidc/authorize", self.authorize, methods=["GET", "POST"]),
            Route("/oidc/token", self.token, methods=["GET", "POST"]),
        ]

    # -- metadata --------------------------------------------------------------------------

    async def openid_configuration(self, request: Request) -> Response:
        return JSONResponse(self.provider.discovery(self.base_of(request)), headers=_CORS)

    async def smart_configuration(self, request: Request) -> Response:
        return JSONResponse(self.provider.smart_configuration(self.base_of(request)), headers=_CORS)

    async def jwks(self, request: Request) -> Response:
        keys = await run_in_threadpool(self.provider.jwks)
        return JSONResponse(keys, headers=_CORS)

    # -- authorization endpoint ------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        try:
            if request.method == "GET":
                auth = self._registered(check_authorization_request(request.query_params, self.provider.audience))
                return self._login_page(auth)
            form = await _form(request)
            auth = self._registered(check_authorization_request(form, self.provider.audience))
            return await run_in_threadpool(self._consent, auth, form)
        except OAuthError as exc:
            return exc.response()

    def _client(self, client_id: str) -> Any:
        return getattr(self.provider, "clients", {}).get(client_id)

    def _registered(self, auth: AuthRequest) -> AuthRequest:
        """``auth``, if its client is unregistered or its redirect URI is the registered
        client's callback; an error page otherwise (the URI is not trusted: no redirect)."""
        client = self._client(auth.client_id)
        if client is not None and urlsplit(auth.redirect_uri).path != client.redirect_path:
            raise OAuthError("invalid_request", f"redirect_uri of client {client.client_id} must end at "
                             f"{client.redirect_path}")
        return auth

    def _login_page(self, auth: AuthRequest) -> Response:
        personas = list(self.provider.personas.values())
        client = self._client(auth.client_id)
        kinds = (("Health personnel (HelseID)", PERSONNEL), ("Citizens (ID-porten)", CITIZEN))
        groups = [(title, [p for p in personas if p.kind == kind])
                  for title, kind in kinds if client is None or client.kind == kind]
        html = self.template.render(auth=auth, groups=groups, purposes=PURPOSES, client=client,
                                    attest=client is None, personnel=PERSONNEL,
                                    launch_patient="launch/patient" in auth.scope.split(),
                                    redirect_host=urlsplit(auth.redirect_uri).netloc)
        return HTMLResponse(html, headers={**_NO_STORE, "X-Frame-Options": "DENY"})

    def _consent(self, auth: AuthRequest, form: Any) -> Response:
        """The persona chosen on the login page: a redirect with a fresh code, or an error."""
        def fail(error: str, description: str) -> RedirectError:
            return RedirectError(error, description, auth.redirect_uri, auth.state)

        if form.get("deny"):
            raise fail("access_denied", "the user declined")
        persona = self.provider.personas.get(form.get("persona") or "")
        client = self._client(auth.client_id)
        if persona is None or persona.kind == SYSTEM or client is not None and persona.kind != client.kind:
            raise OAuthError("invalid_request", "choose one of the personas on the page")
        try:
            scope = self.provider.grantable(persona, auth.scope)
        except errors.Invalid as exc:
            raise fail("invalid_scope", exc.message) from None
        purpose = reason = None
        if persona.kind == PERSONNEL:     # citizens attest nothing
            purpose = (form.get("purpose") or "").strip() or None
            reason = (form.get("reason") or "").strip() or None
        if purpose is not None and purpose not in PURPOSES:
            raise fail("invalid_request", f"purpose must be one of {', '.join(PURPOSES)}")
        patient, patient_id = self._patient(persona, scope, (form.get("patient") or "").strip())
        grant = Grant(auth, persona.key, scope, patient, patient_id, purpose, reason,
                      self.provider.clock() + CODE_SECONDS)
        code = self._remember(grant)
        return RedirectResponse(_with_query(auth.redirect_uri, {"code": code, "state": auth.state}),
                                status_code=303)

    def _patient(self, persona: Any, scope: str, given: str) -> tuple[str | None, str | None]:
        """The patient for the token and the SMART launch context: a citizen's own record, or
        the Patient id or person number health personnel typed."""
        if persona.kind == CITIZEN:
            if "launch/patient" not in scope.split():
                return None, None
            found = self.find_patient(persona.pid)
            return found, found
        if not given:
            return None, None
        if given.isdigit() and len(given) == 11:
            return given, self.find_patient(given)
        return given, given.removeprefix("Patient/")

    def _remember(self, grant: Grant) -> str:
        """A new code for ``grant``, kept in the database (so a code made by one worker
        process is redeemed by another); codes never redeemed go a minute after expiry."""
        code = secrets.token_urlsafe(32)
        now = self.provider.clock()
        store = self.provider.repo
        body = json.dumps({**dataclasses.asdict(grant), "request": dataclasses.asdict(grant.request)})
        store.job_put(_code_key(code), CODE_KIND, grant.persona, "active", body, int(now * 1000))
        store.job_sweep(CODE_KIND, int((now - 2 * CODE_SECONDS) * 1000))
        return code

    def _redeem(self, code: str) -> Grant | None:
        """The grant of ``code``, removed so it cannot be used twice; None if unknown or expired."""
        row = self.provider.repo.job_take(_code_key(code)) if len(code) < 100 else None
        if row is None or row[0] != CODE_KIND:
            return None
        state = json.loads(row[5])
        grant = Grant(**{**state, "request": AuthRequest(**state["request"])})
        if grant.expires <= self.provider.clock():
            return None
        return grant

    # -- token endpoint --------------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        try:
            if request.method != "POST":    # answered here, not by the FHIR read route it would match
                raise OAuthError("invalid_request", "the token endpoint takes POST", 405, {"Allow": "POST"})
            form = await _form(request)
            client_id, secret, basic = _client_authentication(request, form)
            grant_type = form.get("grant_type") or ""
            if grant_type == "authorization_code":
                body = await run_in_threadpool(self._code_grant, form, client_id, secret, basic)
            elif grant_type == "client_credentials":
                body = await run_in_threadpool(self._client_credentials, form, client_id, secret, basic)
            elif not grant_type:
                raise OAuthError("invalid_request", "grant_type is required")
            else:
                raise OAuthError("unsupported_grant_type",
                                 "grant_type must be authorization_code or client_credentials")
        except OAuthError as exc:
            return exc.response()
        except errors.FhirError as exc:
            return OAuthError("invalid_request", exc.message).response()
        return JSONResponse(body, headers={**_NO_STORE, **_CORS})

    def _code_grant(self, form: Any, client_id: str, secret: str | None, basic: bool) -> dict:
        if not client_id:
            raise OAuthError("invalid_request", "client_id is required")
        code = form.get("code") or ""
        if not code:
            raise OAuthError("invalid_request", "code is required")
        grant = self._redeem(code)
        if grant is None:
            raise OAuthError("invalid_grant", "the code is unknown, expired or already used")
        if grant.request.client_id != client_id:
            raise OAuthError("invalid_grant", "the code was issued to another client")
        if secret is not None and not self.provider.check_client_secret(secret):
            raise _bad_client(basic)
        if (form.get("redirect_uri") or "") != grant.request.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request's")
        verifier = form.get("code_verifier") or ""
        if not _PKCE.match(verifier):
            raise OAuthError("invalid_grant", "code_verifier must be 43-128 characters of [A-Za-z0-9-._~]")
        if not secrets.compare_digest(s256(verifier), grant.request.challenge):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        access = self.provider.issue(grant.persona, scope=grant.scope, lifetime=self.lifetime,
                                     patient=grant.patient, purpose=grant.purpose, reason=grant.reason,
                                     client_id=client_id)
        body = {"access_token": access, "token_type": "Bearer", "expires_in": self.lifetime, "scope": grant.scope}
        if "openid" in grant.scope.split():
            body["id_token"] = self.provider.id_token(grant.persona, client_id, grant.request.nonce,
                                                      lifetime=self.lifetime)
        if grant.patient_id and "launch/patient" in grant.scope.split():
            body["patient"] = grant.patient_id
        return body

    def _client_credentials(self, form: Any, client_id: str, secret: str | None, basic: bool) -> dict:
        if not client_id or secret is None:
            raise OAuthError("invalid_client", "client credentials need client_id and client_secret "
                             "(HTTP Basic or form)", 401, {"WWW-Authenticate": 'Basic realm="enjournal"'})
        if not self.provider.check_client_secret(secret):
            raise _bad_client(basic)
        system = next((p for p in self.provider.personas.values() if p.kind == SYSTEM), None)
        if system is None:
            raise OAuthError("unauthorized_client", "this provider has no system persona")
        try:
            scope = self.provider.grantable(system, form.get("scope"))
        except errors.Invalid as exc:
            raise OAuthError("invalid_scope", exc.message) from None
        access = self.provider.issue(system.key, scope=scope, lifetime=self.lifetime, client_id=client_id)
        return {"access_token": access, "token_type": "Bearer", "expires_in": self.lifetime, "scope": scope}


def _bad_client(basic: bool) -> OAuthError:
    headers = {"WWW-Authenticate": 'Basic realm="enjournal"'} if basic else {}
    return OAuthError("invalid_client", "client authentication failed", 401, headers)


async def _form(request: Request) -> Any:
    """The urlencoded (or multipart) body, or ``invalid_request``."""
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise OAuthError("invalid_request", "send the parameters as application/x-www-form-urlencoded")
    try:
        return await request.form()
    except Exception as exc:   # a malformed body is the client's error, never a 500
        raise OAuthError("invalid_request", f"unreadable form body: {exc}") from None


def _client_authentication(request: Request, form: Any) -> tuple[str, str | None, bool]:
    """(client_id, client_secret or None, whether HTTP Basic was used): RFC 6749 §2.3.1."""
    header = request.headers.get("authorization") or ""
    form_id = (form.get("client_id") or "").strip()
    if header[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
            raw_id, colon, raw_secret = decoded.partition(":")
            if not colon:
                raise ValueError("no colon")
        except ValueError:
            raise OAuthError("invalid_client", "malformed HTTP Basic credentials", 401,
                             {"WWW-Authenticate": 'Basic realm="enjournal"'}) from None
        client_id, secret = unquote(raw_id.replace("+", " ")), unquote(raw_secret.replace("+", " "))
        if form_id and form_id != client_id:
            raise OAuthError("invalid_request", "client_id in the form differs from the HTTP Basic one")
        return client_id, secret, True
    secret = form.get("client_secret")
    return form_id, (secret if secret is not None else None), False
