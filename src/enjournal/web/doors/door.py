"""``Door``: one web front door (the citizen portal, the clinician workspace): its login,
its pages, their rendering and their forms. The contract is in ``doors/__init__.py``."""
from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ... import errors, __version__
from ...access.claims import HELSEID_HPR, HELSEID_ORG_CHILD, HELSEID_ORG_PARENT, HELSEID_PID
from ...access.principal import CITIZEN, PERSONNEL
from ..auth import base_of
from . import i18n
from .forms import CsrfRejected, FormErrors
from .i18n import N_
from .login import BuiltinIssuer, LoginFailed, LoginFlow, RemoteIssuer
from .session import Session, SessionStore, User

log = logging.getLogger("enjournal.doors")

SESSION_SCOPE_KEY = "enjournal.door_session"     # the ASGI scope key the layer puts the session under
PUBLIC_SCOPE_KEY = "enjournal.door_public"       # set when no logged-in session: web/auth lets it through
LANG_COOKIE = "enjournal_lang"
CSRF_FIELD = "csrf_token"
CLIENT_IDS = {CITIZEN: "enjournal-portal", PERSONNEL: "enjournal-workspace"}
SCOPES = {CITIZEN: "openid fhirUser patient/*.cruds", PERSONNEL: "openid fhirUser user/*.cruds"}
PENDING_SECONDS = 600       # a login must come back from the provider within 10 minutes
_SAFE_NEXT = re.compile(r"^/[A-Za-z0-9\-._~/%?=&+:@!$'()*,;]*$")

Handler = Callable[[Request, Session], Awaitable[Response]]


def environment() -> Environment:
    """The Jinja environment of the doors' templates (``web/templates``)."""
    env = Environment(loader=PackageLoader("enjournal.web", "templates"), autoescape=select_autoescape(),
                      extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True)
    env.newstyle_gettext = True     # {% trans %} formats with escaping, like _() with values
    env.globals["static"] = lambda path: f"/static/{path}?v={__version__}"
    env.globals["languages"] = i18n.LANGUAGES
    return env


class Door:
    """One front door at ``prefix`` ("/innbygger", "/helsepersonell") for users of ``kind``
    (``principal.CITIZEN`` or ``PERSONNEL``); ``name`` is shown in its header."""

    def __init__(self, platform: Any, settings: Any, prefix: str, kind: str, name: str, *,
                 sessions: SessionStore | None = None, issuer: Any = None, client_id: str | None = None,
                 scope: str | None = None, env: Environment | None = None, nav: Iterable[tuple[str, str]] = ()):
        if kind not in (CITIZEN, PERSONNEL):
            raise ValueError(f"a door is for citizens or personnel, not {kind!r}")
        self.platform = platform
        self.settings = settings
        self.prefix = "/" + prefix.strip("/")
        self.kind = kind
        self.name = name
        self.sessions = sessions or getattr(platform, "sessions", None) or SessionStore(
            platform.store, getattr(settings, "session_idle_minutes", 30))
        self._issuer = issuer
        self.client_id = client_id or CLIENT_IDS[kind]
        self.scope = scope or SCOPES[kind]
        self.env = env or environment()
        self.nav = list(nav)            # (path, label msgid) for the header's menu
        self.cookie = "enjournal_" + self.prefix.strip("/").replace("/", "_")
        self._routes: list[Route] = []

    # -- urls ------------------------------------------------------------------------------

    def url(self, name: str) -> str:
        """The path of one of the door's own routes: home, login, callback, logout,
        logged-out, language."""
        return self.prefix + {"home": "/", "login": "/logg-inn", "callback": "/callback", "logout": "/logg-ut",
                              "logged-out": "/logget-ut", "language": "/sprak"}[name]

    def base(self, request: Request) -> str:
        return (self.settings.base_url or base_of(request.scope)).rstrip("/")

    def safe_next(self, value: str | None) -> str:
        """``value`` if it is a path inside this door (no open redirect), else the home page."""
        value = value or ""
        if (value == self.prefix or value.startswith(self.prefix + "/")) and _SAFE_NEXT.match(value) \
                and "//" not in value and "/../" not in value:
            return value
        return self.url("home")

    # -- pages -----------------------------------------------------------------------------

    def page(self, path: str, methods: Iterable[str] = ("GET",)) -> Callable[[Handler], Handler]:
        """Register ``async def handler(request, session) -> Response`` at ``prefix + path``.
        It runs only for a logged-in session (else: 303 to the login, and back here after),
        under the access context of the session's own token (and attestation)."""
        def register(handler: Handler) -> Handler:
            async def endpoint(request: Request) -> Response:
                session = request.scope.get(SESSION_SCOPE_KEY)
                if session is None or not session.logged_in:
                    return self.login_redirect(request)
                return await self.run(handler, request, session)
            self._routes.append(Route(self.prefix + path, endpoint, methods=list(methods)))
            return handler
        return register

    async def run(self, handler: Handler, request: Request, session: Session) -> Response:
        """Call a page handler; what it raises becomes an error page, never a 500 with a trace."""
        try:
            return await handler(request, session)
        except CsrfRejected:
            return self.error_page(request, session, 400, N_("Skjemaet kunne ikke sendes"),
                                   N_("Skjemaet var utløpt eller kom ikke fra denne siden. Ingenting ble lagret. "
                                   "Gå tilbake, last inn siden på nytt og prøv igjen."))
        except errors.Unauthorized:
            # the token was refused (expired, or the issuer's key changed): log in again
            self.sessions.delete(session)
            return self.login_redirect(request)
        except errors.FhirError as exc:
            status = exc.status if 400 <= exc.status < 500 else 500
            title = {403: N_("Ingen tilgang"), 404: N_("Fant ikke siden"), 410: N_("Slettet")}.get(status, N_("Noe gikk galt"))
            return self.error_page(request, session, status, title, exc.message if status < 500 else
                                   N_("Noe gikk galt hos oss. Ingenting ble lagret. Prøv igjen om litt."))
        except Exception:
            log.exception("page %s failed", request.url.path)
            return self.error_page(request, session, 500, N_("Noe gikk galt"),
                                   N_("Noe gikk galt hos oss. Ingenting ble lagret. Prøv igjen om litt."))

    def login_redirect(self, request: Request) -> Response:
        wanted = request.url.path + (f"?{request.url.query}" if request.url.query and request.method == "GET" else "")
        target = f"{self.url('login')}?{urlencode({'next': self.safe_next(wanted)})}"
        if request.headers.get("hx-request"):
            return Response(status_code=200, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)

    # -- rendering -------------------------------------------------------------------------

    def context(self, request: Request, session: Session | None) -> dict:
        lang = session.lang if session is not None else i18n.language(request.cookies.get(LANG_COOKIE))
        return {**i18n.callables(lang), "lang": lang, "request": request, "session": session,
                "user": session.user if session is not None else None,
                "csrf_token": session.csrf if session is not None and session.logged_in else "",
                "prefix": self.prefix, "door": self, "door_name": self.name, "urls": {
                    k: self.url(k) for k in ("home", "login", "logout", "language", "logged-out")},
                "nav": self.nav, "current_path": request.url.path,
                "acting_for": (session.data.get("acting_for") if session is not None else None)}

    def render(self, request: Request, session: Session | None, template: str, status: int = 200,
               **context: Any) -> HTMLResponse:
        """``template`` rendered with the door's context (``_``, ``gettext``, ``ngettext``,
        ``csrf_token``, ``session``, ``user``, ``prefix``, ``lang``, ``request``) and ``context``."""
        html = self.env.get_template(template).render({**self.context(request, session), **context})
        return HTMLResponse(html, status_code=status, headers=_PAGE_HEADERS)

    def error_page(self, request: Request, session: Session | None, status: int, title: str,
                   message: str) -> HTMLResponse:
        return self.render(request, session, "doors/error.html", status=status, title=title, message=message,
                           code=status)

    def gettext(self, session: Session | None) -> Callable[..., str]:
        """A plain gettext in the session's language, for messages made in Python code."""
        return i18n.plain(session.lang if session is not None else i18n.DEFAULT)

    # -- forms -----------------------------------------------------------------------------

    async def form(self, request: Request, session: Session) -> dict[str, str | list[str]]:
        """The submitted form, after checking its CSRF token against the session's
        (``CsrfRejected`` → a 400 page, nothing done). A field sent once is a string, one
        sent several times a list; the token itself is left out."""
        try:
            raw = await request.form()
        except Exception:       # a malformed body is the sender's error
            raise CsrfRejected() from None
        token = raw.get(CSRF_FIELD)
        if not isinstance(token, str) or not session.csrf or \
                not secrets.compare_digest(token.encode(), session.csrf.encode()):
            raise CsrfRejected()
        out: dict[str, str | list[str]] = {}
        for key, value in raw.multi_items():
            if key == CSRF_FIELD or not isinstance(value, str):
                continue
            if key in out:
                old = out[key]
                out[key] = (old if isinstance(old, list) else [old]) + [value]
            else:
                out[key] = value
        return out

    @staticmethod
    def errors_from(exc: errors.FhirError, known: Iterable[str] = (), fields: dict | None = None) -> FormErrors:
        return FormErrors.from_error(exc, known, fields)

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking service call off the event loop, in the request's access context."""
        return await run_in_threadpool(fn, *args, **kwargs)

    # -- login, logout, language -------------------------------------------------------------

    def issuer(self) -> Any:
        """The door's OpenID provider: the configured ``citizen_issuer`` / ``personnel_issuer``
        (over HTTP), else the built-in provider (in-process)."""
        if self._issuer is None:
            url = getattr(self.settings, "citizen_issuer" if self.kind == CITIZEN else "personnel_issuer", "")
            if url:
                self._issuer = RemoteIssuer(url, getattr(self.settings, "door_client_secret", "") or None)
                return self._issuer
            server = getattr(self.platform, "authorization_server", None)
            if server is None:
                raise LoginFailed("no identity provider is configured for this door")
            self._issuer = BuiltinIssuer(server)
        return self._issuer

    async def login(self, request: Request) -> Response:
        session: Session | None = request.scope.get(SESSION_SCOPE_KEY)
        next_path = self.safe_next(request.query_params.get("next"))
        if session is not None and session.logged_in:
            return RedirectResponse(next_path, status_code=303)
        try:
            flow = LoginFlow(self.issuer(), self.client_id, self.scope)
            base = self.base(request)
            started = await flow.start(base, base + self.url("callback"), next_path)
        except LoginFailed as exc:
            log.warning("login could not start at %s: %s", self.prefix, exc)
            return self.error_page(request, None, 503, N_("Innloggingen er ikke tilgjengelig"), str(exc))
        lang = session.lang if session is not None else i18n.language(request.cookies.get(LANG_COOKIE))
        fresh = self.sessions.new(self.prefix, lang)
        fresh.pending = started.pending
        await run_in_threadpool(self.sessions.save, fresh)
        response = RedirectResponse(started.url, status_code=303)
        self.set_cookie(request, response, fresh.id)
        return response

    async def callback(self, request: Request) -> Response:
        session: Session | None = request.scope.get(SESSION_SCOPE_KEY)
        pending = session.pending if session is not None else None
        if pending and time.time() - pending.get("started", 0) > PENDING_SECONDS:
            pending = None
        try:
            body = await LoginFlow(self.issuer(), self.client_id, self.scope).finish(
                self.base(request), pending, request.query_params)
            user = await run_in_threadpool(self._user, body["id_claims"])
        except LoginFailed as exc:
            log.warning("login failed at %s: %s", self.prefix, exc)
            if session is not None:
                await run_in_threadpool(self.sessions.delete, session)
            return self.render(request, None, "doors/login-required.html", status=400,
                               problem=N_("Innloggingen mislyktes. Prøv å logge inn på nytt."),
                               next=pending.get("next") if pending else self.url("home"))
        if user.kind != self.kind:
            await run_in_threadpool(self.sessions.delete, session)
            message = (N_("Denne inngangen er for innbyggere. Helsepersonell logger inn på /helsepersonell/.")
                       if self.kind == CITIZEN else
                       N_("Denne inngangen er for helsepersonell. Innbyggere logger inn på /innbygger/."))
            return self.error_page(request, None, 403, N_("Feil inngang"), message)
        assert session is not None
        await run_in_threadpool(self.sessions.rotate, session)
        session.user = user
        session.token = body["access_token"]
        session.expires = int(time.time()) + int(body.get("expires_in") or 3600)
        next_path = self.safe_next(pending.get("next"))
        session.pending = None
        session.seen = self.sessions.now_ms()
        await run_in_threadpool(self.sessions.save, session)
        response = RedirectResponse(next_path, status_code=303)
        self.set_cookie(request, response, session.id)
        return response

    def _user(self, claims: dict) -> User:
        hpr = claims.get(HELSEID_HPR)
        if hpr:
            return User(name=claims.get("name", ""), kind=PERSONNEL, subject=claims.get("sub", ""),
                        pid=claims.get(HELSEID_PID), hpr=str(hpr),
                        org=claims.get(HELSEID_ORG_CHILD) or claims.get(HELSEID_ORG_PARENT))
        pid = claims.get("pid")
        patient = self.platform.facts.patient_by_number(pid) if pid else None
        return User(name=claims.get("name", ""), kind=CITIZEN, subject=claims.get("sub", ""), pid=pid,
                    patient=patient)

    async def logout(self, request: Request) -> Response:
        session: Session | None = request.scope.get(SESSION_SCOPE_KEY)
        if session is not None:
            try:
                await self.form(request, session)
            except CsrfRejected:
                return self.error_page(request, session if session.logged_in else None, 400,
                                       N_("Skjemaet kunne ikke sendes"),
                                       N_("Utloggingen kom ikke fra denne siden. Bruk knappen «Logg ut»."))
            await run_in_threadpool(self.sessions.delete, session)
        response = RedirectResponse(self.url("logged-out"), status_code=303)
        response.delete_cookie(self.cookie, path=self.prefix)
        return response

    async def logged_out(self, request: Request) -> Response:
        session = request.scope.get(SESSION_SCOPE_KEY)
        if session is not None and session.logged_in:
            return RedirectResponse(self.url("home"), status_code=303)
        return self.render(request, None, "doors/login-required.html", logged_out=True, next=self.url("home"))

    async def language(self, request: Request) -> Response:
        """Switch the language (bokmål, English): saved in the session and in a cookie for
        the pages before login. A logged-in session's form must carry its CSRF token."""
        session: Session | None = request.scope.get(SESSION_SCOPE_KEY)
        if session is not None and session.logged_in:
            try:
                form = await self.form(request, session)
            except CsrfRejected:
                return self.error_page(request, session, 400, N_("Skjemaet kunne ikke sendes"),
                                       N_("Skjemaet var utløpt. Last inn siden på nytt og prøv igjen."))
        else:
            form = dict((await request.form()).items())
        lang = i18n.language(form.get("lang") if isinstance(form.get("lang"), str) else None)
        if session is not None and session.logged_in:
            session.lang = lang
            await run_in_threadpool(self.sessions.save, session)
        response = RedirectResponse(self.safe_next(form.get("next") if isinstance(form.get("next"), str) else None),
                                    status_code=303)
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, path="/", samesite="lax",
                            secure=self.secure(request))
        return response

    async def home_redirect(self, request: Request) -> Response:
        return RedirectResponse(self.url("home"), status_code=307)

    # -- cookies ---------------------------------------------------------------------------

    def secure(self, request: Request) -> bool:
        """Whether cookies get ``Secure``: the request came over https, or through a proxy
        that says so, or the configured base URL is https."""
        return (request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"
                or (self.settings.base_url or "").startswith("https:"))

    def set_cookie(self, request: Request, response: Response, session_id: str) -> None:
        response.set_cookie(self.cookie, session_id, path=self.prefix, httponly=True, samesite="lax",
                            secure=self.secure(request))

    # -- routes ----------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        """The door's own routes (login, callback, logout, language) and every page."""
        return [
            Route(self.prefix, self.home_redirect, methods=["GET", "HEAD"]),
            Route(self.url("login"), self.login, methods=["GET"]),
            Route(self.url("callback"), self.callback, methods=["GET"]),
            Route(self.url("logout"), self.logout, methods=["POST"]),
            Route(self.url("logged-out"), self.logged_out, methods=["GET"]),
            Route(self.url("language"), self.language, methods=["POST"]),
            *self._routes,
        ]


_PAGE_HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
                 "Referrer-Policy": "same-origin"}


def quote_next(path: str) -> str:
    return quote(path, safe="/")
