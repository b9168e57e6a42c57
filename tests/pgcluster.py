"""A private PostgreSQL cluster for the test suite, started by ``make test``.

    python -m tests.pgcluster start    # prints the admin URL (only that, on stdout)
    python -m tests.pgcluster stop
    python -m tests.pgcluster url

The cluster lives in ``.pgtest/`` in the repository (or under /tmp when the postgres user
cannot reach the repository), listens only on a unix socket, and runs with fsync off: it is
for tests, and is thrown away with ``rm -rf .pgtest``. As root, initdb and pg_ctl run as the
``postgres`` user (the server refuses to run as root). Where PostgreSQL is not installed,
``apt-get install postgresql`` brings it.
"""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ("-c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=300 -c shared_buffers=256MB")


def _say(*parts: object) -> None:
    print(*parts, file=sys.stderr)


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found and shutil.which("initdb"):
        return Path(shutil.which("initdb")).parent
    if not found:
        _say("PostgreSQL is not installed: apt-get install -y postgresql")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=True, env=env, stdout=sys.stderr)
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent


def _as_owner() -> list[str]:
    """The command prefix that runs PostgreSQL's programs as a user it accepts."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _owner_can_reach(path: Path) -> bool:
    if os.geteuid() != 0:
        return True
    return subprocess.run(_as_owner() + ["test", "-w", str(path)], capture_output=True).returncode == 0


def home() -> Path:
    """Where the cluster lives: ``.pgtest`` in the repository if the postgres user can write
    there, else a directory under /tmp named after the repository path."""
    local = REPO / ".pgtest"
    if local.exists() and (local / "url").exists():
        return local
    local.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(local, "postgres", "postgres")
    if _owner_can_reach(local) and len(str(local / "sock" / ".s.PGSQL.65535")) < 100:
        return local
    local.rmdir()
    tag = hashlib.sha1(str(REPO).encode()).hexdigest()[:10]
    return Path(f"/tmp/enjournal-pgtest-{tag}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], log: Path | None = None) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        _say(done.stdout, done.stderr)
        if log is not None and log.exists():
            _say("".join(log.read_text(errors="replace").splitlines(True)[-30:]))
        raise SystemExit(f"failed: {' '.join(cmd)}")


def _running(bindir: Path, data: Path) -> bool:
    return subprocess.run(_as_owner() + [str(bindir / "pg_ctl"), "-D", str(data), "status"],
                          capture_output=True).returncode == 0


def start() -> str:
    """Start the cluster (creating it the first time) and return its admin URL."""
    bindir = _bindir()
    where = home()
    where.mkdir(parents=True, exist_ok=True)
    data, sock, log, url_file = where / "data", where / "sock", where / "log", where / "url"
    if os.geteuid() == 0:
        shutil.chown(where, "postgres", "postgres")
    if url_file.exists() and data.exists() and _running(bindir, data):
        return url_file.read_text().strip()
    if not (data / "PG_VERSION").exists():
        _run(_as_owner() + [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                            "--encoding=UTF8", "--locale=C"])
    sock.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(sock, "postgres", "postgres")
    port = _free_port()
    _run(_as_owner() + [str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "60", "-l", str(log), "start",
                        "-o", f"-p {port} -k {sock} {SETTINGS}"], log)
    url = f"postgresql://postgres@/postgres?host={sock}&port={port}"
    url_file.write_text(url + "\n")
    return url


def stop() -> None:
    where = home()
    data = where / "data"
    if data.exists():
        subprocess.run(_as_owner() + [str(_bindir() / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                       capture_output=True)
    (where / "url").unlink(missing_ok=True)


def url() -> str | None:
    """The admin URL of the running cluster, or None."""
    url_file = home() / "url"
    if not url_file.exists():
        return None
    if not _running(_bindir(), home() / "data"):
        return None
    return url_file.read_text().strip()


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else "start"
    if command == "start":
        print(start())
    elif command == "stop":
        stop()
    elif command == "url":
        print(url() or "")
    else:
        raise SystemExit("usage: python -m tests.pgcluster start|stop|url")


if __name__ == "__main__":
    main()
