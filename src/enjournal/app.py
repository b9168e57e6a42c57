"""Composition root: ``build_app(settings)`` wires the store, services and web layer.

Only this module and ``cli.py`` choose concrete implementations.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from . import errors
from .access.audit import AuditLog
from .access.claims import principal_from_claims
from .access.facts import FactsLoader
from .access.guard import Guard, GuardedRepository
from .access.tokens import Issuer
from .access.tokens import from_settings as verifier_from_settings
from .fhir.searchparams import Registry
from .services.export import ExportJobs
from .services.resources import ResourceService
from .services.searchparameters import CustomSearchParameters
from .services.summary.service import SummaryService
from .settings import Settings
from .store import open_repository
from .store.sqlite.repository import path_of
from .web.capability import capability_builder
from .web.fast_read import FastRead
from .web.fhir_api import FhirApi
from .web.audit_api import AuditApi
from .web.bulk_api import BulkApi
from .web.summary_api import SummaryApi
from .web.auth import Authenticate
from .web.landing import landing_page
from .access.provider import enabled as provider_enabled
from .services.personas import demo_provider
from .web.oidc import AuthorizationServer, patient_finder
from .web.responses import error_response
from .web.shield import Shield
from .web.doors import DoorsLayer, SessionStore
from .web.portal import portal_door
from .web.workspace import workspace_door

log = logging.getLogger("enjournal")


class Platform:
    """Everything one running server holds, built once per process."""

    def __init__(self, settings: Settings, clock: Callable[[], int] | None = None,
                 new_id: Callable[[], str] | None = None):
        self.settings = settings
        self.registry = Registry.default()
        # the store itself; everything else reaches data through the guarded ``repo``
        self.store = open_repository(settings.database, self.registry, clock=clock, new_id=new_id,
                                     pool_min=settings.db_pool_min, pool_max=settings.db_pool_max)
        self.facts = FactsLoader(self.store)
        self.audit = AuditLog(self.store)
        self.guard = Guard(self.store, self.facts, self.audit, emergency_minutes=settings.emergency_access_minutes)
        self.repo = GuardedRepository(self.store, self.guard)
        self.resources = ResourceService(self.repo, self.registry, settings)
        self.search_parameters = CustomSearchParameters(self.store, self.resources)
        self.search_parameters.start()
        self.exports = ExportJobs(self.store, export_directory(settings), settings.export_file_resources,
                                  settings.export_max_jobs, int(settings.export_keep_hours * 3_600_000))
        self.summary = SummaryService(self.resources, self.guard)    # docs/summary.md

    def close(self) -> None:
        self.exports.close()
        self.audit.close()
        self.store.close()


def export_directory(settings: Settings) -> Path:
    """Where $export files go: the setting, else ``exports`` beside a SQLite file, else ./exports."""
    if settings.export_dir:
        return Path(settings.export_dir)
    if settings.database.startswith("sqlite:"):
        return Path(os.path.abspath(path_of(settings.database))).parent / "exports"
    return Path("exports").resolve()


def build_app(settings: Settings, clock: Callable[[], int] | None = None,
              new_id: Callable[[], str] | None = None, platform: Platform | None = None) -> Starlette:
    platform = platform or Platform(settings, clock, new_id)
    api = FhirApi(platform.resources, settings, capability_builder(platform.registry, settings))
    landing = landing_page(platform.repo, api.base)

    async def root(request: Request) -> Response:
        if request.method == "POST":
            return await api.transaction(request)
        params = list(request.query_params.multi_items())
        if params and any(k not in ("_format", "_pretty") for k, _ in params):
            return api._search(request, None, params)
        accept = request.headers.get("accept") or ""
        if "html" in accept or not accept or "*/*" in accept and "json" not in accept:
            return await landing(request)
        return await api.metadata(request)

    async def fhir_error(request: Request, exc: errors.FhirError) -> Response:
        return error_response(exc, request.query_params.get("_pretty") == "true")

    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            err: errors.FhirError = errors.NotFound(f"no such path: {request.url.path}", "url")
        elif exc.status_code == 405:
            err = errors.MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}", "url")
        else:
            err = errors.Invalid(str(exc.detail), "url")
            err.status = exc.status_code
        return error_response(err)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        err = errors.FhirError("internal error: the request was not completed; nothing was stored")
        return error_response(err)

    routes = [Route("/", root, methods=["GET", "HEAD", "POST"])]
    platform.provider = None      # the built-in OpenID provider (docs/identity-provider.md)
    platform.authorization_server = None
    audit_api = AuditApi(platform.store, platform.guard, platform.audit, api.base)
    api.log_readers["AuditEvent"] = audit_api.bundle_get
    routes += audit_api.routes()
    if provider_enabled(settings.builtin_idp, settings.database):
        platform.provider = demo_provider(settings, platform.store)
        platform.authorization_server = AuthorizationServer(platform.provider, api.base,
                                                            patient_finder(platform.resources))
        routes += platform.authorization_server.routes()
    # the web front doors (web/doors): each is a Door with its own pages; their routes come
    # before the FHIR API's, whose /{type} patterns would match /innbygger
    platform.sessions = SessionStore(platform.store, settings.session_idle_minutes)
    platform.doors = [
        portal_door(platform, settings),            # /innbygger/ (web/portal)
        workspace_door(platform, settings),         # /helsepersonell/ (web/workspace)
    ]
    for door in platform.doors:
        routes += door.routes()
    routes.append(Mount("/static", app=StaticFiles(packages=[("enjournal.web", "static")]), name="static"))
    routes += BulkApi(platform.exports, platform.repo, platform.guard, platform.registry, api.base,
                      settings.max_body_bytes).routes()
    routes += SummaryApi(platform.summary, api.base, settings.max_body_bytes).routes()
    routes += api.routes()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # the code systems the platform publishes (CodeSystem/critical-information, ...)
        await run_in_threadpool(platform.summary.seed)
        # what is alive now (registry, templates, caches) lives as long as the process: keep
        # it out of the cyclic collector's full passes, which otherwise stall requests that
        # make many objects ($summary's p95: docs/performance.md)
        gc.collect()
        gc.freeze()
        yield
        # uvicorn re-raises SIGTERM after a graceful shutdown, so atexit handlers do not run:
        # stop the export jobs here (they are marked failed and their files removed), and
        # write the audit records still queued (the last ~50 ms of requests)
        await run_in_threadpool(platform.exports.close)
        await run_in_threadpool(platform.audit.flush)

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        errors.FhirError: fhir_error, HTTPException: http_error, Exception: unexpected})
    app.state.platform = platform
    return app


def build_asgi(settings: Settings, **kwargs: Any) -> Any:
    """The application as served: authentication and the access context around the fast
    path for plain reads, in front of ``build_app``."""
    app = build_app(settings, **kwargs)
    platform = app.state.platform
    local = []
    if platform.provider is not None:
        local.append(Issuer(platform.provider.issuer, keys=platform.provider.key_set()))
    verifier = verifier_from_settings(settings, local)
    if settings.oidc_issuers:
        # fetch remote issuers' keys now, off the event loop, so the first token does not wait
        threading.Thread(target=verifier.prefetch, name="enjournal-jwks", daemon=True).start()
    authenticate = Authenticate(FastRead(app, platform.resources), verifier, principal_from_claims, platform.facts,
                                platform.audit)
    return Shield(DoorsLayer(authenticate, platform.doors))


def asgi_factory() -> Any:
    """Entry point for ``uvicorn --factory`` worker processes: settings from the environment."""
    from .settings import load
    return build_asgi(load())
