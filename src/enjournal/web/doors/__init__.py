"""The web front doors' shared machinery: the citizen portal (``/innbygger/``,
``web/portal/``) and the clinician workspace (``/helsepersonell/``, ``web/workspace/``) are
each a ``Door``. Design record: docs/decisions/0005-web-front-doors.md.

Contract (both doors code against these names):

- ``Door(platform, settings, prefix, kind, name)``: one door; ``kind`` is
  ``access.principal.CITIZEN`` or ``PERSONNEL``; ``name`` is shown in the header. Optional
  keywords: ``nav=[(path, label msgid), ...]`` (the header menu), ``issuer``, ``client_id``,
  ``scope``, ``sessions``.
- ``@door.page(path, methods=("GET",))`` registers ``async def handler(request, session) ->
  Response`` at ``prefix + path``. It runs only with a logged-in session (otherwise: 303 to
  the door's login and, after it, back to the page asked for; an htmx request gets
  ``HX-Redirect``), and under the ``AccessContext`` of the session's own access token: the
  ASGI layer (``layer.DoorsLayer``, in front of ``web/auth.Authenticate``) puts the token
  and the attestation into the request, so every read and write through
  ``platform.resources``, ``platform.repo``, ``platform.summary`` is checked by the guard
  and audited exactly as an API request with that token. Run blocking service calls with
  ``await door.call(fn, *args)`` (a worker thread, same context). What the handler raises
  becomes an error page: ``errors.FhirError`` with its 4xx status (403 page, 404 page ...),
  ``errors.Unauthorized`` ends the session and goes to the login, anything else a 500 page
  without details ("nothing was saved").
- ``door.render(request, session, template, status=200, **context) -> HTMLResponse``: the
  context always has ``_``/``gettext``/``ngettext`` (Babel, the session's language, bokmål
  default; ``_("Hei %(name)s", name=n)`` formats with escaping), ``csrf_token``, ``session``,
  ``user`` (``doors.session.User``: ``name``, ``kind``, ``pid``, ``hpr``, ``patient`` (a
  citizen's own Patient id), ``org``), ``prefix``, ``lang``, ``request``, ``urls`` (home,
  login, logout, language, logged-out), ``nav``, ``current_path``, ``door_name``; and the
  globals ``static(path)`` and ``languages``. Pages answer ``Cache-Control: no-store``.
- ``await door.form(request, session) -> dict[str, str | list[str]]``: the form, after its
  CSRF token (field ``csrf_token``; put ``{{ forms.csrf(csrf_token) }}`` in every form) is
  checked; a missing or wrong token gives a 400 page and nothing is done.
- ``FormErrors`` (``forms.py``): ``{field: message}`` with ``.add(field, msg)``,
  ``.general``; ``FormErrors.from_error(exc, known_fields, {expression: field})`` maps an
  ``errors.Invalid`` from a service by each issue's ``expression``. Macros in
  ``templates/doors/forms.html`` (``{% import "doors/forms.html" as forms with context %}``): ``csrf(token)``, ``error_summary(errors)``
  (``ds-error-summary`` linking to the fields), ``field(name, label, errors, value=..,
  type=.., description=.., required=.., autocomplete=..)``, ``textarea(...)``,
  ``select(name, label, options, errors, value=..)``, ``radios(name, legend, options, errors,
  value=..)``, ``checkbox(name, label, errors, checked=..)``; each field's id is
  ``f-<name>``. Page pattern: on invalid input render the form again with status 400 and the
  errors; on success redirect (303) to a page that says what was saved.
- ``session`` (``session.Session``): ``.id``, ``.user``, ``.token``, ``.lang``, ``.csrf``,
  ``.data`` (a dict saved with the session by ``session.save()``; call it from a worker
  thread or ``await door.call(session.save)``). ``session.data["attestation"] =
  {"patient": "Patient/<id>", "purpose": "TREAT|ETREAT|COC|BTG", "reason": str|None,
  "consent": bool}`` is sent with every later request of the session (X-Patient,
  X-Purpose-Of-Use, X-Access-Reason, X-Consent-Declared). The portal sets only "patient"
  for representation (a citizen acting for a child or for the giver of a power of attorney:
  ``web/auth`` binds a citizen to the X-Patient given, and the policy decides as parent or
  attorney), and ``session.data["acting_for"] = {"patient", "name", "basis"}`` for the banner.
- ``door.routes()``: ``prefix`` (→ ``prefix/``), ``/logg-inn`` (login start, ``?next=``),
  ``/callback`` (OIDC), ``/logg-ut`` (POST, CSRF), ``/logget-ut``, ``/sprak`` (POST: ``lang``,
  ``next``), then every page. Static files are served at ``/static/`` (``web/static``).
- Templates: ``{% extends "doors/base.html" %}`` with blocks ``title``, ``banner`` (under the
  header: the portal's representation banner, the workspace's patient banner), ``nav``,
  ``content``; it has ``lang``, a skip link to ``#main``, header/nav/main/footer landmarks,
  the language switch and logout.

Login: OpenID Connect authorization code flow with PKCE (S256), state and nonce checked,
against the built-in provider in development (``web/oidc.py``; the door is its client
``enjournal-portal`` or ``enjournal-workspace``) or the issuer of setting ``citizen_issuer`` /
``personnel_issuer`` (``login.RemoteIssuer``, OpenID discovery, ``door_client_secret``).
Sessions are server-side, in the database (``session.py``): cookie ``enjournal_<door>``,
HttpOnly, SameSite=Lax, Secure behind https, path = the door's prefix; they end at logout,
after ``session_idle_minutes`` without a request, or when the token expires.
"""
from .door import CSRF_FIELD, Door, environment
from .forms import GENERAL, CsrfRejected, FormErrors
from .layer import DoorsLayer
from .session import Session, SessionStore, User

__all__ = ["CSRF_FIELD", "CsrfRejected", "Door", "DoorsLayer", "FormErrors", "GENERAL", "Session", "SessionStore",
           "User", "environment"]
