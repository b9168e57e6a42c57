"""``enjournal`` command line: serve, demo, import, feed.

Every flag that is a setting comes from ``settings.SETTINGS`` (also readable as
``ENJOURNAL_*`` environment variables).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from . import settings as settings_mod


def _add_settings(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    for s in settings_mod.SETTINGS:
        if s.name in names:
            parser.add_argument("--" + s.name.replace("_", "-"), dest=s.name, type=s.type, default=None,
                                help=f"{s.help} (env {s.env}, default {s.default!r})")


def _settings(args: argparse.Namespace) -> settings_mod.Settings:
    overrides = {s.name: getattr(args, s.name, None) for s in settings_mod.SETTINGS}
    return settings_mod.load(**overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn
    settings = _settings(args)
    # worker processes rebuild the app from the environment, so hand the settings over that way
    for s in settings_mod.SETTINGS:
        os.environ[s.env] = str(getattr(settings, s.name))
    from .access.tokens import default_base
    from .app import Platform
    platform = Platform(settings)   # create or upgrade the schema once, before workers start
    try:
        _remember_base(platform, default_base(settings))
    finally:
        platform.close()
    print(f"enjournal serving {settings.database} on http://{settings.host}:{settings.port}/", flush=True)
    from .web.shield import http_protocol
    uvicorn.run("enjournal.app:asgi_factory", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers if settings.workers > 1 else None, log_level="warning",
                access_log=False, loop="auto", http=http_protocol())
    return 0


# the public base URL `enjournal serve` last started with, kept in the database so that
# `enjournal token` signs for that server (issuer and audience) without being told its port
SERVED_BASE_SETTING = "serve.base_url"
_BASE_SETTINGS = ("base_url", "host", "port")


def _remember_base(platform, base: str) -> None:
    from .access.context import system_context, use
    if platform.store.get_setting(SERVED_BASE_SETTING) == base:
        return
    with use(system_context("enjournal serve")):
        with platform.store.unit() as unit:
            unit.set_setting(SERVED_BASE_SETTING, base)


def _token_settings(args: argparse.Namespace) -> tuple[settings_mod.Settings, str]:
    """The settings ``enjournal token`` signs with, and where its base URL came from: the
    flags or ``ENJOURNAL_*`` variables when given, else the base URL ``enjournal serve`` last
    ran at with this database, else the default (http://127.0.0.1:8080)."""
    settings = _settings(args)
    given = any(getattr(args, name, None) is not None for name in _BASE_SETTINGS) or \
        any(s.env in os.environ for s in settings_mod.SETTINGS if s.name in _BASE_SETTINGS)
    if given:
        return settings, "given"
    from .store.sqlite.repository import path_of
    if settings.database.startswith("sqlite:") and not os.path.exists(path_of(settings.database)):
        return settings, "default"
    from .fhir.searchparams import Registry
    from .store import open_repository
    store = open_repository(settings.database, Registry.default())
    try:
        served = store.get_setting(SERVED_BASE_SETTING)
    finally:
        store.close()
    if served:
        return settings.with_overrides(base_url=served), "served"
    return settings, "default"


def cmd_demo(args: argparse.Namespace) -> int:
    from .app import Platform
    from .services.demo import load_demo
    from .access.context import system_context, use
    platform = Platform(_settings(args))
    try:
        if args.if_empty and not platform.repo.is_empty():
            print("database already has data: demo not loaded")
            return 0
        with use(system_context("enjournal demo")):
            summary = load_demo(platform.resources, seed=args.seed, people=args.people)
        print(summary)
    finally:
        platform.close()
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .app import Platform
    from .services.importer import import_paths
    from .access.context import system_context, use
    platform = Platform(_settings(args))
    try:
        with use(system_context("enjournal import")):
            report = import_paths(platform.resources, args.paths, progress=not args.quiet)
    finally:
        platform.close()
    print(report.summary())
    return 1 if report.errors else 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from .app import Platform
    from .store import schema_version
    settings = _settings(args)
    Platform(settings).close()
    print(f"schema is up to date (version {schema_version(settings.database)})")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Print a bearer token of the built-in identity provider (docs/identity-provider.md)."""
    from . import errors
    from .access.provider import enabled
    from .app import Platform
    from .services.personas import demo_personas, demo_provider
    from .web.oidc import patient_finder
    settings, _ = _token_settings(args)
    personas = {p.key: p for p in demo_personas()}
    if not args.client_secret and args.persona not in personas:
        print(f"unknown persona {args.persona!r}; choose one of:" if args.persona else "choose a persona:",
              file=sys.stderr)
        for p in personas.values():
            print(f"  {p.key:<20} {p.name} — {p.label}", file=sys.stderr)
        return 2
    try:
        if not enabled(settings.builtin_idp, settings.database):
            print("the built-in identity provider is off (setting builtin_idp)", file=sys.stderr)
            return 1
        platform = Platform(settings)
        try:
            provider = demo_provider(settings, platform.store)
            if args.client_secret:
                print(provider.client_secret())
                return 0
            patient = args.patient
            if patient and personas[args.persona].kind == "citizen" and patient.isdigit() and len(patient) == 11:
                patient = patient_finder(platform.resources)(patient)
                if patient is None:
                    raise errors.NotFound(f"no single Patient has fødselsnummer {args.patient}", "patient")
            token = provider.issue(args.persona, scope=args.scope, lifetime=args.lifetime, patient=patient,
                                   purpose=args.purpose, reason=args.reason)
        finally:
            platform.close()
    except errors.FhirError as exc:
        print(f"enjournal token: {exc.message}", file=sys.stderr)
        return 2
    print(token)
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Check the audit log's hash chain (docs/audit.md): exit 0 intact, 1 tampered, 2 unusable."""
    from . import errors
    from .access.audit import verify
    from .fhir.searchparams import Registry
    from .store import open_repository
    from .store.sqlite.repository import path_of as _path_of
    settings = _settings(args)
    try:
        if settings.database.startswith("sqlite:") and not os.path.exists(_path_of(settings.database)):
            raise errors.NotFound(f"no database at {_path_of(settings.database)}", "database")
        repo = open_repository(settings.database, Registry.default())
        try:
            report = verify(repo, args.head)
        finally:
            repo.close()
    except errors.FhirError as exc:
        print(f"enjournal audit verify: {exc.message}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="enjournal", description="enjournal: one citizen, one record (FHIR R4)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve the FHIR API over HTTP")
    _add_settings(p, [s.name for s in settings_mod.SETTINGS])
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="load the Norwegian demo population")
    _add_settings(p, ["database", "allow_synthetic_ids"])
    p.add_argument("--if-empty", action="store_true", help="only when the database holds no resources")
    p.add_argument("--seed", type=int, default=2026, help="random seed (the same seed gives the same people)")
    p.add_argument("--people", type=int, default=100, help="how many citizens to create")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("import", help="load Bundles (transaction/batch/collection) and NDJSON files")
    _add_settings(p, ["database", "validate_references", "allow_synthetic_ids", "strict_validation",
                      "max_bundle_entries"])
    p.add_argument("paths", nargs="+", help="files or directories (*.json, *.ndjson)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("migrate", help="create or upgrade the database schema (SQLite or PostgreSQL)")
    _add_settings(p, ["database"])
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("token", help="print a bearer token for a demo persona (built-in identity provider)")
    _add_settings(p, ["database", "base_url", "host", "port", "builtin_idp"])
    p.add_argument("--base", dest="base_url", default=None,
                   help="the server's base URL, e.g. http://127.0.0.1:9090 (same as --base-url; default: "
                        "where `enjournal serve` last ran with this database)")
    p.add_argument("persona", nargs="?", default="", help="gp, nurse, doctor, silje, else, system, ...")
    p.add_argument("--scope", default=None, help="scope string (default: the persona kind's)")
    p.add_argument("--patient", default=None, help="Patient id, Patient/<id> or fødselsnummer")
    p.add_argument("--purpose", default=None, choices=["TREAT", "ETREAT", "COC", "BTG"],
                   help="purpose of use (tillitsrammeverk)")
    p.add_argument("--reason", default=None, help="reason for access (needed for ETREAT and BTG)")
    p.add_argument("--lifetime", type=int, default=3600, help="seconds until the token expires")
    p.add_argument("--client-secret", action="store_true",
                   help="print the client secret of the client credentials grant instead")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("audit", help="work with the tamper-evident audit log")
    actions = p.add_subparsers(dest="audit_command", required=True)
    v = actions.add_parser("verify", help="check the audit log's hash chain: exit 0 intact, 1 tampered")
    _add_settings(v, ["database"])
    v.add_argument("--head", default=None,
                   help="a head hash published earlier ('<hex>' or '<seq>:<hex>'): it must be in the chain")
    v.set_defaults(func=cmd_audit_verify)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
