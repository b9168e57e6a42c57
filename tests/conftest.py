"""Shared fixtures: a real enjournal server over real HTTP on a temporary SQLite file."""
from __future__ import annotations

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

EXAMPLES_TGZ = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hl7.fhir.r4.examples-4.0.1.tgz"
if not EXAMPLES_TGZ.exists():
    EXAMPLES_TGZ = Path("/work/shared/data/hl7.fhir.r4.examples-4.0.1.tgz")


class Server:
    """A uvicorn server running the app in a background thread."""

    def __init__(self, app):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
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

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.app.state.platform.close()


def start_server(tmp_path: Path, **settings) -> Server:
    settings.setdefault("database", f"sqlite:///{tmp_path}/enjournal.db")
    return Server(build_asgi(Settings(**settings)))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("srv"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.base, timeout=60, headers={"Accept": "application/fhir+json"}) as c:
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
