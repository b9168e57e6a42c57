"""Shared helpers for the benchmarks: the Synthea dataset, replicated copies, servers on
loopback ports, percentiles and a machine description.

Nothing here asserts on time; every benchmark prints its figures and a ratio against a raw
baseline measured in the same run.
"""
from __future__ import annotations

import os
import platform
import re
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import orjson

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
PYTHON = sys.executable
ENJOURNAL = str(Path(PYTHON).with_name("enjournal"))

# where a Synthea set may already be (the first that exists wins), else bench/out/synthea-N
DATASET_CANDIDATES = ("/tmp/syn200/fhir", "/tmp/syn20/fhir")
UUID_RE = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def log(*args: object) -> None:
    print(*args, flush=True)


# -- dataset ------------------------------------------------------------------------------

def dataset_dir(patients: int | None = None, explicit: str | None = None) -> Path:
    """A directory of Synthea transaction Bundles: ``explicit``, $BENCH_DATASET, a known
    pre-generated set, or one generated once into bench/out/synthea-N (seed 42)."""
    explicit = explicit or os.environ.get("BENCH_DATASET")
    if explicit:
        return Path(explicit)
    for cand in DATASET_CANDIDATES:
        p = Path(cand)
        if p.is_dir() and any(p.glob("*.json")):
            return p
    n = patients or 20
    target = OUT / f"synthea-{n}"
    fhir = target / "fhir"
    if not (fhir.is_dir() and len(list(fhir.glob("*.json"))) >= n):
        log(f"generating {n} Synthea patients into {target} (about 2.6 s per patient)...")
        synthea = str(Path(PYTHON).with_name("synthea"))
        subprocess.run([synthea, "-p", str(n), "-s", "42", "-r", "20261101", "-o", str(target)], check=True)
    return fhir


def bundle_files(directory: Path, limit: int | None = None) -> list[Path]:
    files = sorted(p for p in directory.glob("*.json"))
    return files[:limit] if limit else files


def replicate(raw: bytes, copy: int) -> bytes:
    """Copy ``copy`` of a Bundle's JSON with every UUID (fullUrls, references, ids,
    identifiers) replaced by a fresh deterministic one; copy 0 is the original."""
    if copy == 0:
        return raw
    ns = uuid.UUID(int=copy)
    cache: dict[bytes, bytes] = {}

    def sub(m: re.Match) -> bytes:
        old = m.group(0)
        new = cache.get(old)
        if new is None:
            new = cache[old] = str(uuid.uuid5(ns, old.decode())).encode()
        return new

    return UUID_RE.sub(sub, raw)


def iter_bundles(files: list[Path], copies: int = 1, max_resources: int | None = None) -> Iterator[bytes]:
    """Raw Bundle JSON for ``copies`` copies of ``files`` (stops after ``max_resources``)."""
    seen = 0
    for copy in range(copies):
        for f in files:
            raw = replicate(f.read_bytes(), copy)
            yield raw
            if max_resources is not None:
                seen += raw.count(b'"request"')
                if seen >= max_resources:
                    return


def entries_of(raw: bytes) -> int:
    return raw.count(b'"request"')


# -- servers ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on port {port} after {timeout} s")


class Server:
    """A subprocess serving HTTP on a loopback port; stopped (its process group) on exit."""

    def __init__(self, argv: list[str], port: int, env: dict | None = None, name: str = "server"):
        self.port = port
        self.name = name
        self.log_path = OUT / f"{name}-{port}.log"
        OUT.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, start_new_session=True)

    def __enter__(self) -> "Server":
        try:
            wait_for_port(self.port, self.proc)
        except Exception:
            self.stop()
            log(self.log_path.read_text()[-2000:])
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            import signal
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def enjournal_server(db: Path, workers: int = 2, port: int | None = None, prefix: list[str] | None = None,
                     env: dict | None = None) -> Server:
    """``enjournal serve`` over ``db``. ``prefix`` replaces the ``enjournal`` command (e.g.
    ``[python, "-m", "enjournal.cli"]``) and ``env`` is added to the environment (e.g. a
    ``PYTHONPATH`` naming another version's source, bench/before_after.py)."""
    port = port or free_port()
    argv = [*(prefix or [ENJOURNAL]), "serve", "--workers", str(workers), "--host", "127.0.0.1", "--port", str(port),
            "--database", database_url(db), "--builtin-idp", "on"]
    return Server(argv, port, env=env, name="enjournal")


def database_url(db: "Path | str") -> str:
    """A database URL for a SQLite file path, or the URL itself (``postgresql://...``)."""
    return str(db) if "://" in str(db) else f"sqlite:///{db}"


def audit_switch_server(db: Path, audit: bool, workers: int = 2, port: int | None = None) -> Server:
    """The served application (``build_asgi``, as ``enjournal serve`` runs it) from the
    bench-only factory ``bench.audit_app``: with ``audit`` False its authentication
    middleware hands nothing to the audit log. For the audit benchmark's baseline only."""
    port = port or free_port()
    env = {"PYTHONPATH": str(ROOT), "BENCH_AUDIT": "on" if audit else "off",
           "ENJOURNAL_DATABASE": f"sqlite:///{db}", "ENJOURNAL_HOST": "127.0.0.1", "ENJOURNAL_PORT": str(port)}
    argv = [PYTHON, "-m", "uvicorn", "bench.audit_app:create", "--factory", "--workers", str(workers),
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    return Server(argv, port, env=env, name=f"audit-{'on' if audit else 'off'}")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its live descendants
    (a server's supervisor and workers), from /proc; 0.0 where /proc is unavailable."""
    hz = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(name))
        cpu[int(name)] = (int(fields[11]) + int(fields[12])) / hz
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += cpu.get(p, 0.0)
        todo.extend(children.get(p, ()))
    return total


# -- access (docs/access.md) --------------------------------------------------------------

def issue_token(db: Path, port: int, persona: str = "system", lifetime: int = 8 * 3600,
                prefix: list[str] | None = None, env: dict | None = None) -> str:
    """A bearer token of the built-in identity provider for a server on 127.0.0.1:``port``
    over ``db`` (the issuer is the server's base URL, so the port must match); ``prefix`` and
    ``env`` as for ``enjournal_server``."""
    proc = subprocess.run([*(prefix or [ENJOURNAL]), "token", persona, "--database", database_url(db),
                           "--builtin-idp", "on", "--host", "127.0.0.1",
                           "--port", str(port), "--lifetime", str(lifetime)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"enjournal token {persona} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def bearer(token: str, patient: str | None = None, purpose: str = "TREAT") -> dict[str, str]:
    """Request headers: the token, and for health personnel the trust-framework attestation
    (``X-Purpose-Of-Use``, ``X-Patient: Patient/<id>``)."""
    headers = {"Authorization": f"Bearer {token}"}
    if patient is not None:
        headers["X-Purpose-Of-Use"] = purpose
        headers["X-Patient"] = f"Patient/{patient}"
    return headers


def audit_head(db: Path) -> int:
    """The number of audit rows in ``db`` (the newest seq; 0 before migration 6's table)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT COALESCE(MAX(seq), 0) FROM audit").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def in_system_context(name: str = "bench"):
    """``use(system_context(name))``: in-process work outside a request needs an access
    context (docs/access.md). Use a fresh one per unit of work (per Bundle): a context
    collects what it touched for one audit record."""
    from enjournal.access.context import system_context, use
    return use(system_context(name))


# -- statistics and reporting ---------------------------------------------------------------

def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def summarize_ms(samples_s: list[float]) -> dict:
    v = sorted(x * 1000 for x in samples_s)
    return {"n": len(v), "p50": percentile(v, 50), "p95": percentile(v, 95), "p99": percentile(v, 99),
            "max": v[-1] if v else float("nan")}


def fmt_ms(stats: dict) -> str:
    return (f"p50 {stats['p50']:.2f} ms, p95 {stats['p95']:.2f} ms, p99 {stats['p99']:.2f} ms "
            f"(n={stats['n']})")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = "load average %.1f" % os.getloadavg()[0]
    except OSError:
        load = "load average ?"
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}, {load}")


def save_result(name: str, data: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), **data}
    (OUT / f"{name}.json").write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
