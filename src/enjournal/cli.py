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
    from .app import Platform
    Platform(settings).close()   # create or upgrade the schema once, before workers start
    print(f"enjournal serving {settings.database} on http://{settings.host}:{settings.port}/", flush=True)
    uvicorn.run("enjournal.app:asgi_factory", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers if settings.workers > 1 else None, log_level="warning",
                access_log=False, loop="auto", http="auto")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .app import Platform
    from .services.demo import load_demo
    platform = Platform(_settings(args))
    try:
        if args.if_empty and not platform.repo.is_empty():
            print("database already has data: demo not loaded")
            return 0
        summary = load_demo(platform.resources, seed=args.seed, people=args.people)
        print(summary)
    finally:
        platform.close()
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .app import Platform
    from .services.importer import import_paths
    platform = Platform(_settings(args))
    try:
        report = import_paths(platform.resources, args.paths, progress=not args.quiet)
    finally:
        platform.close()
    print(report.summary())
    return 1 if report.errors else 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from .app import Platform
    Platform(_settings(args)).close()
    print("schema is up to date")
    return 0


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

    p = sub.add_parser("migrate", help="create or upgrade the database schema")
    _add_settings(p, ["database"])
    p.set_defaults(func=cmd_migrate)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
