"""Shared fixtures: a real enjournal server over real HTTP on a temporary SQLite file."""
from __future__ import annotations

import itertools
import os
import socket
import tarfile
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from enjournal.app import build_asgi
from enjournal.settings import Settings
from enjournal.web.shield import http_protocol

EXAMPLES_TGZ = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hl7.fhir.r4.examples-4.0.1.tgz"
if not EXAMPLES_TGZ.exists():
    EXAMPLES_TGZ = Path("/work/shared/data/hl7.fhir.r4.examples-4.0.1.tgz")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A uvicorn server running the app in a background thread. ``auth`` holds the headers
    of a system token from the built-in provider; ``token(persona, ...)`` makes others."""

    def __init__(self, app, port: int | None = None):
        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False,
                                http=http_protocol())
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 15
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        self.base = f"http://127.0.0.1:{self.port}"
        self.app = app
        self.auth = {"Authorization": f"Bearer {self.token('system')}"}

    @property
    def platform(self):
        return self.app.state.platform

    def token(self, persona: str = "system", **claims) -> str:
        """A bearer token for a demo persona (or ``system``) from the built-in provider."""
        return self.platform.provider.issue(persona, **claims)

    def headers(self, persona: str = "system", **attestation) -> dict:
        """Authorization plus trust-framework headers, e.g. ``purpose="TREAT", patient="Patient/1"``."""
        names = {"purpose": "X-Purpose-Of-Use", "patient": "X-Patient", "reason": "X-Access-Reason",
                 "consent": "X-Consent-Declared"}
        out = {"Authorization": f"Bearer {self.token(persona)}"}
        for key, value in attestation.items():
            out[names[key]] = value
        return out

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.app.state.platform.close()


# the backends every server-level suite runs against (``server`` is parametrised by them)
BACKENDS = ("sqlite", "postgres")


def start_server(tmp_path: Path, backend: str = "sqlite", **settings) -> Server:
    """A server on a fresh database: a SQLite file in ``tmp_path``, or a new database in the
    test run's PostgreSQL cluster (with the built-in identity provider, which is off by
    default on PostgreSQL)."""
    if backend == "postgres":
        settings.setdefault("database", new_pg_database("srv"))
        settings.setdefault("builtin_idp", "on")
        settings.setdefault("export_dir", str(tmp_path / "exports"))
    settings.setdefault("database", f"sqlite:///{tmp_path}/enjournal.db")
    port = settings.setdefault("port", free_port())
    settings.setdefault("host", "127.0.0.1")
    return Server(build_asgi(Settings(**settings)), port)


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("srv"), request.param)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.base, timeout=60,
                      headers={"Accept": "application/fhir+json", **server.auth}) as c:
        yield c


@pytest.fixture(scope="session")
def examples_dir(tmp_path_factory):
    """The official R4 examples package, unpacked (skips where ../shared is absent)."""
    if not EXAMPLES_TGZ.exists():
        pytest.skip(f"the official R4 examples package is not at {EXAMPLES_TGZ} (../shared/data)")
    target = tmp_path_factory.mktemp("r4examples")
    with tarfile.open(EXAMPLES_TGZ) as tar:
        tar.extractall(target, filter="data")
    return target / "package"



# -- PostgreSQL: the test run's private cluster (tests/pgcluster.py, started by `make test`) --
# `make test` exports ENJOURNAL_TEST_PG (the cluster's admin URL). Each test that needs
# PostgreSQL gets a fresh database in it; the databases are dropped at the session's end.

_pg_databases: list[str] = []
_pg_counter = itertools.count()
_pg_found: list[str] = []          # the answering .pgtest URL, once found (per process)


def _pg_answers(url: str) -> bool:
    import psycopg
    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def pg_admin_url() -> str | None:
    """The admin URL of the test cluster: ``ENJOURNAL_TEST_PG``, else the one recorded in
    ``.pgtest/url`` if that cluster answers, else None."""
    if os.environ.get("ENJOURNAL_TEST_PG"):
        return os.environ["ENJOURNAL_TEST_PG"]
    if _pg_found:
        return _pg_found[0]
    from tests import pgcluster
    recorded = pgcluster.recorded_url()
    if recorded and _pg_answers(recorded):
        _pg_found.append(recorded)
        return recorded
    return None


def _pg_database_name(prefix: str) -> str:
    """prefix_worker_pid_counter, lowercase and at most 63 bytes (the prefix is cut, not the
    unique tail)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    tail = f"_{worker}_{os.getpid()}_{next(_pg_counter)}".lower()
    clean = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in prefix.lower()) or "t"
    if not clean[0].isalpha():
        clean = "t" + clean
    return clean[:63 - len(tail)] + tail


def new_pg_database(prefix: str = "t") -> str:
    """A fresh, empty database (UTF8, C collation) in the test cluster; its URL (the admin
    URL with the database name replaced). Fails the test when there is no cluster."""
    import psycopg
    admin = pg_admin_url()
    if not admin:
        pytest.fail("PostgreSQL test cluster not available: run `make test` or `python -m tests.pgcluster start`")
    name = _pg_database_name(prefix)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'")
    _pg_databases.append(name)
    base, _, query = admin.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session", autouse=True)
def _drop_pg_databases():
    """Drops this process's test databases at the session's end (best effort)."""
    yield
    if not _pg_databases:
        return
    import psycopg
    try:
        with psycopg.connect(pg_admin_url(), connect_timeout=5, autocommit=True) as conn:
            for name in _pg_databases:
                try:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                except psycopg.Error:
                    pass
    except Exception:        # best effort: the cluster is private to the test run
        pass
    _pg_databases.clear()


@pytest.fixture
def pg_url():
    """The URL of a fresh, empty PostgreSQL database in the test cluster."""
    return new_pg_database()


# -- the demo population on a server (docs/demo.md, seed 2026) ---------------------------------

DEMO_PEOPLE = {"silje": "25848531440", "hakon": "02828307595", "sara": "19841856050", "jakob": "19861286366",
               "maja": "10880984069", "else": "18854005231", "olav": "01923404518"}


def demo_server(tmp_path_factory, name: str, backend: str = "sqlite", people: int = 30):
    """A server on ``backend`` holding the demo population (``people`` households' worth);
    the caller stops it. For module fixtures: ``server = demo_server(...); yield server;
    server.stop()``."""
    from enjournal.access.context import system_context, use
    from enjournal.services.demo import load_demo
    server = start_server(tmp_path_factory.mktemp(name), backend)
    with use(system_context("tests")):
        load_demo(server.platform.resources, people=people)
    return server


def patient_ids(server, people: dict[str, str] | None = None) -> dict[str, str]:
    """The Patient ids of demo people (first name -> fødselsnummer; default ``DEMO_PEOPLE``)
    by first name, looked up with the system token (each must be found exactly once)."""
    out = {}
    with httpx.Client(base_url=server.base, timeout=60, headers={"Accept": "application/fhir+json"}) as http:
        for name, fnr in (people or DEMO_PEOPLE).items():
            r = http.get("/Patient", params={"identifier": f"urn:oid:2.16.578.1.12.4.1.4.1|{fnr}"},
                         headers=server.auth)
            assert r.status_code == 200 and len(r.json()["entry"]) == 1, r.text
            out[name] = r.json()["entry"][0]["resource"]["id"]
    return out
