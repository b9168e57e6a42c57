"""Every setting of the platform, declared once.

The CLI flags, the ``ENJOURNAL_*`` environment reader and the documentation test all read
``SETTINGS``. A value comes from (lowest to highest precedence): the default, the
environment (``ENJOURNAL_<NAME>``), then an explicit override (a CLI flag).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any, Callable


@dataclass(frozen=True)
class Setting:
    name: str
    type: Callable[[str], Any]
    default: Any
    help: str

    @property
    def env(self) -> str:
        return "ENJOURNAL_" + self.name.upper()


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


SETTINGS: tuple[Setting, ...] = (
    Setting("database", str, "sqlite:///enjournal.db",
            "Database URL: sqlite:///PATH (relative), sqlite:////abs/PATH, or postgresql://USER@HOST:PORT/DB "
            "(also read from ENJOURNAL_DATABASE_URL)"),
    Setting("db_pool_min", int, 2, "PostgreSQL: connections each process keeps open"),
    Setting("db_pool_max", int, 16, "PostgreSQL: most connections each process opens"),
    Setting("host", str, "127.0.0.1", "Interface the HTTP server listens on"),
    Setting("port", int, 8080, "Port the HTTP server listens on"),
    Setting("workers", int, 1, "HTTP worker processes (each opens its own database connections)"),
    Setting("base_url", str, "",
            "Public base URL used in Bundle links and Location headers (default: from the request)"),
    Setting("max_body_bytes", int, 64 * 2**20, "Largest request body accepted, in bytes"),
    Setting("max_bundle_entries", int, 20000, "Most entries accepted in one batch or transaction Bundle"),
    Setting("default_page_size", int, 20, "Search page size when _count is not given"),
    Setting("max_page_size", int, 1000, "Largest _count honoured; larger values are capped"),
    Setting("validate_references", _bool, True,
            "Reject writes whose literal references to this server do not resolve"),
    Setting("allow_synthetic_ids", _bool, True,
            "Accept Skatteetaten's synthetic fødselsnummer (month + 80) as valid identifiers"),
    Setting("strict_validation", _bool, True,
            "Reject resources with structural errors against FHIR R4 (unknown elements, wrong types)"),
    Setting("feed_poll_seconds", float, 0.5, "How often change-feed consumers poll for new entries"),
    Setting("export_dir", str, "",
            "Where $export writes its NDJSON files (default: 'exports' beside the SQLite file, else ./exports)"),
    Setting("export_file_resources", int, 100_000, "Most resources in one $export NDJSON file"),
    Setting("export_max_jobs", int, 4, "Most $export jobs running at once in one process (more: 429)"),
    Setting("export_keep_hours", float, 24.0,
            "How long a finished $export's files are kept (the manifest's Expires) before they are removed"),
    Setting("emergency_access_minutes", int, 240,
            "How long emergency access (ETREAT/BTG with a stated reason) lasts before a new reason is needed"),
    Setting("builtin_idp", str, "auto",
            "Built-in OpenID provider for development and demos: auto (on with SQLite, off with PostgreSQL), on, off"),
    Setting("oidc_issuers", str, "",
            "Trusted OpenID issuers, comma-separated issuer URLs; their JWKS is found by OpenID discovery"),
    Setting("oidc_audience", str, "",
            "Accepted token audiences, comma-separated (default: the server's base URL)"),
    Setting("session_idle_minutes", int, 30,
            "Web front doors (/innbygger/, /helsepersonell/): minutes without a request before a login session ends"),
    Setting("citizen_issuer", str, "",
            "OpenID issuer URL the citizen portal (/innbygger/) logs in with (ID-porten-style; default: the built-in provider)"),
    Setting("personnel_issuer", str, "",
            "OpenID issuer URL the clinician workspace (/helsepersonell/) logs in with (HelseID-style; default: the built-in provider)"),
    Setting("door_client_secret", str, "",
            "Client secret the web front doors send to a configured issuer's token endpoint (default: none, a public client with PKCE)"),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    database: str = "sqlite:///enjournal.db"
    db_pool_min: int = 2
    db_pool_max: int = 16
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    base_url: str = ""
    max_body_bytes: int = 64 * 2**20
    max_bundle_entries: int = 20000
    default_page_size: int = 20
    max_page_size: int = 1000
    validate_references: bool = True
    allow_synthetic_ids: bool = True
    strict_validation: bool = True
    feed_poll_seconds: float = 0.5
    export_dir: str = ""
    export_file_resources: int = 100_000
    export_max_jobs: int = 4
    export_keep_hours: float = 24.0
    emergency_access_minutes: int = 240
    builtin_idp: str = "auto"
    oidc_issuers: str = ""
    oidc_audience: str = ""
    session_idle_minutes: int = 30
    citizen_issuer: str = ""
    personnel_issuer: str = ""
    door_client_secret: str = ""

    def with_overrides(self, **overrides: Any) -> "Settings":
        clean = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **clean)


def load(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from defaults, then ``ENJOURNAL_*`` environment variables, then ``overrides``."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.env)
        if setting.name == "database" and raw is None:
            raw = environ.get("ENJOURNAL_DATABASE_URL")
        if raw is not None:
            try:
                values[setting.name] = setting.type(raw)
            except ValueError as exc:
                raise SystemExit(f"{setting.env}: {exc}") from None
    return Settings(**values).with_overrides(**overrides)


def _check_consistency() -> None:
    declared = {f.name for f in fields(Settings)}
    assert declared == set(_BY_NAME), declared ^ set(_BY_NAME)
    for f in fields(Settings):
        assert f.default == _BY_NAME[f.name].default, f.name


_check_consistency()
