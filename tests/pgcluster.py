"""A private PostgreSQL cluster for the test suite, started by ``make test``.

    python -m tests.pgcluster start    # prints the admin URL (only that, on stdout; logs on stderr)
    python -m tests.pgcluster stop
    python -m tests.pgcluster url      # the admin URL if the cluster is running, else nothing (exit 1)

The cluster lives in ``.pgtest/`` in the repository (``data/``, ``log``, ``sock/``, ``url``), or in
``/tmp/enjournal-pgtest-<hash of the repository path>/`` when the postgres user cannot reach the
repository. It listens only on a unix socket (in ``/tmp/enjournal-pgsock-<hash>/`` when the
repository path is too long for one) on a port chosen once and reused, so its URL survives
restarts. ``start`` is idempotent and ``rm -rf .pgtest`` throws the cluster away.

As root, initdb and pg_ctl run as the ``postgres`` user (the server refuses to run as root).
Where PostgreSQL is not installed, ``apt-get install -y postgresql`` brings it.

The cluster runs with ``fsync=off``, ``synchronous_commit=off`` and ``full_page_writes=off``:
a crash can lose or corrupt its data. That is right for throw-away test databases only —
never use these settings for a database that matters.
"""
from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OWNER = "postgres"                    # the OS user that runs the server when we are root
# test-only settings: durability off (see the module docstring), enough connections for
# two xdist workers each running multi-worker servers with pools
SETTINGS = ("-c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=300 -c shared_buffers=256MB")
SOCKET_PATH_MAX = 107                 # sun_path is 108 bytes with its terminating NUL
_TAG = hashlib.sha1(str(REPO).encode()).hexdigest()[:10]
LOCAL = REPO / ".pgtest"
FALLBACK = Path(f"/tmp/enjournal-pgtest-{_TAG}")


class ClusterError(SystemExit):
    """A failure with a message meant for a person (printed by ``python -m``)."""


def _say(*parts: object) -> None:
    print("pgcluster:", *parts, file=sys.stderr, flush=True)


def _root() -> bool:
    return os.geteuid() == 0


def _as_owner() -> list[str]:
    """The command prefix that runs PostgreSQL's programs as a user it accepts."""
    return ["runuser", "-u", OWNER, "--"] if _root() else []


def _owner_exists() -> bool:
    try:
        pwd.getpwnam(OWNER)
        return True
    except KeyError:
        return False


def _find_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def bindir(install: bool = True) -> Path:
    """The directory of initdb and pg_ctl (the newest installed major version). Installs
    PostgreSQL with apt-get where it is missing (or, as root, where its user is missing)."""
    found = _find_bindir()
    if found and (_owner_exists() or not _root()):
        return found
    if not install:
        raise ClusterError("pgcluster: PostgreSQL is not installed (apt-get install -y postgresql)")
    if not _root() or not shutil.which("apt-get"):
        raise ClusterError("pgcluster: PostgreSQL (initdb, pg_ctl) is not installed and cannot be installed "
                           "automatically here: install it (e.g. apt-get install -y postgresql)")
    _say("PostgreSQL is not installed: apt-get install -y postgresql ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"]):
        done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            _say(done.stdout[-3000:])
            raise ClusterError(f"pgcluster: failed: {' '.join(cmd)}")
    found = _find_bindir()
    if not found or not _owner_exists():
        raise ClusterError("pgcluster: apt-get installed postgresql but initdb or the postgres user is still missing")
    return found


def _has_cluster(where: Path) -> bool:
    return (where / "data" / "PG_VERSION").exists()


def home() -> Path:
    """Where the cluster lives (or would live): the existing one, else ``.pgtest``; no side effects."""
    if _has_cluster(LOCAL) or not _has_cluster(FALLBACK):
        return LOCAL
    return FALLBACK


def _owner_can_use(path: Path) -> bool:
    """Whether the server's user can reach and write ``path`` (every parent must be searchable)."""
    if not _root():
        return os.access(path, os.W_OK | os.X_OK)
    return subprocess.run(_as_owner() + ["test", "-w", str(path), "-a", "-x", str(path)],
                          capture_output=True).returncode == 0


def _give_to_owner(path: Path) -> None:
    if _root():
        shutil.chown(path, OWNER, OWNER)


def _choose_home() -> Path:
    """Like ``home()``, but for a new cluster: creates ``.pgtest`` and falls back to /tmp
    when the postgres user cannot use it (say, a repository under a root-only directory)."""
    if _has_cluster(LOCAL) or _has_cluster(FALLBACK):
        return home()
    LOCAL.mkdir(exist_ok=True)
    _give_to_owner(LOCAL)
    if _owner_can_use(LOCAL):
        return LOCAL
    _say(f"the {OWNER} user cannot use {LOCAL}; the cluster goes to {FALLBACK}")
    try:
        LOCAL.rmdir()
    except OSError:
        pass
    FALLBACK.mkdir(mode=0o700, exist_ok=True)
    _give_to_owner(FALLBACK)
    return FALLBACK


def _socket_dir(where: Path, port: int) -> Path:
    """``<home>/sock``, or a directory under /tmp when that path is too long for a unix socket."""
    local = where / "sock"
    if len(str(local / f".s.PGSQL.{port}").encode()) <= SOCKET_PATH_MAX:
        return local
    return Path(f"/tmp/enjournal-pgsock-{_TAG}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _recorded_port(where: Path) -> int | None:
    """The port of the last start (``port``, else the one in ``url``), so the URL stays the same."""
    try:
        return int((where / "port").read_text().strip())
    except (OSError, ValueError):
        pass
    try:
        return int((where / "url").read_text().strip().rsplit("port=", 1)[1])
    except (OSError, ValueError, IndexError):
        return None


def _url(sock: Path | str, port: int | str) -> str:
    return f"postgresql://postgres@/postgres?host={sock}&port={port}"


def _log_tail(log: Path, lines: int = 40) -> str:
    try:
        return "".join(log.read_text(errors="replace").splitlines(True)[-lines:])
    except OSError:
        return f"(no log at {log})"


def _run(cmd: list[str], log: Path | None = None, hint: str = "") -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        _say(f"failed (exit {done.returncode}): {' '.join(cmd)}")
        for out in (done.stdout, done.stderr):
            if out.strip():
                print(out.rstrip(), file=sys.stderr)
        if log is not None:
            _say(f"last lines of {log}:")
            print(_log_tail(log), file=sys.stderr)
        raise ClusterError(f"pgcluster: failed: {' '.join(cmd)}" + (f"\n{hint}" if hint else ""))


def _pg_ctl_status(bin_: Path, data: Path) -> bool:
    return subprocess.run(_as_owner() + [str(bin_ / "pg_ctl"), "-D", str(data), "status"],
                          capture_output=True).returncode == 0


def _running_url(where: Path, bin_: Path | None) -> str | None:
    """The admin URL of the cluster in ``where`` if its server is up (read from postmaster.pid)."""
    data = where / "data"
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 5 or not lines[3].strip().isdigit() or not lines[4].strip():
        return None
    if bin_ is not None and not _pg_ctl_status(bin_, data):
        return None
    return _url(lines[4].strip(), lines[3].strip())


@contextmanager
def _locked(where: Path):
    """Serialises start and stop (two ``make test`` at once must not race on initdb)."""
    with open(where / "lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def start() -> str:
    """Start the cluster (creating it the first time) and return its admin URL."""
    bin_ = bindir()
    where = _choose_home()
    with _locked(where):
        data, log = where / "data", where / "log"
        running = _running_url(where, bin_)
        if running:
            (where / "url").write_text(running + "\n")
            (where / "port").write_text(running.rsplit("port=", 1)[1] + "\n")
            return running
        if not _has_cluster(where):
            if data.exists():         # a half-made cluster from an interrupted initdb
                shutil.rmtree(data)
            _say(f"creating a test cluster in {data}")
            _run(_as_owner() + [str(bin_ / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                "--encoding=UTF8", "--locale=C"])
        port = _recorded_port(where) or _free_port()
        sock = _socket_dir(where, port)
        sock.mkdir(mode=0o755, exist_ok=True)
        _give_to_owner(sock)
        if _root():
            log.touch()
            _give_to_owner(log)
        _say(f"starting the test cluster: {data}, socket {sock}, port {port}")
        _run(_as_owner() + [str(bin_ / "pg_ctl"), "-D", str(data), "-w", "-t", "60", "-l", str(log),
                            "start", "-o", f"-p {port} -k {sock} {SETTINGS}"], log,
             hint=f"pgcluster: to begin afresh: python -m tests.pgcluster stop; rm -rf {where}")
        (where / "port").write_text(f"{port}\n")
        url = _url(sock, port)
        (where / "url").write_text(url + "\n")
        return url


def stop() -> None:
    """Stop the cluster (fast shutdown); its data stays for the next ``start``."""
    where = home()
    if not _has_cluster(where):
        _say(f"no test cluster in {where}")
        return
    bin_ = bindir(install=False)
    with _locked(where):
        if not _pg_ctl_status(bin_, where / "data"):
            _say("the test cluster is not running")
        else:
            _run(_as_owner() + [str(bin_ / "pg_ctl"), "-D", str(where / "data"), "-w", "-t", "60",
                                "-m", "fast", "stop"], where / "log")
            _say(f"stopped the test cluster in {where}")
        (where / "url").unlink(missing_ok=True)


def recorded_url() -> str | None:
    """The URL written by the last ``start`` (the cluster may since have stopped)."""
    try:
        return (home() / "url").read_text().strip() or None
    except OSError:
        return None


def url() -> str | None:
    """The admin URL of the running cluster, or None."""
    where = home()
    if not _has_cluster(where):
        return None
    found = _find_bindir()
    return _running_url(where, found) if found else None


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "start"
    if command == "start":
        print(start(), flush=True)
    elif command == "stop":
        stop()
    elif command == "url":
        found = url()
        if not found:
            return 1
        print(found)
    else:
        print("usage: python -m tests.pgcluster start|stop|url", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
