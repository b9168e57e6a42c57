"""The same benchmarks on two versions of the code, in one run: before/after ratios.

    .venv/bin/python -m bench.before_after --before ee75728 [--rounds 3] [--seconds 10]
        [--database bench/out/db-200000.db] [--only read,asgi,search,ingest] [--wait-quiet 600]
    .venv/bin/python -m bench.run_all --only before_after --before ee75728

"Before" is git revision ``--before``, exported with ``git archive REV src`` into
bench/out/before-REV/ and imported through ``PYTHONPATH=bench/out/before-REV/src`` (it wins
over the venv's editable install). "After" is the working tree (``PYTHONPATH=src``). Every
process of a version (servers, their workers, ``enjournal token``, the benchmark subprocesses)
gets that PYTHONPATH; this process imports no enjournal code itself. A preflight check prints
``enjournal.__file__`` for both, starts a server of each through both launchers
(``python -m enjournal.cli`` as used here, the venv's ``enjournal`` script as the subprocess
benchmarks use it), reads every worker's PYTHONPATH from /proc and tells the two apart by
their answer to a URL over 64 KB (issue 12's ``web/shield.py``: 414 OperationOutcome; before
it, uvicorn's plain 400).

The rounds alternate, per benchmark (``--rounds`` of each version, default 3), by default as
before, after / after, before / before, after ... (``--order abba``): whichever runs second in a
pair inherits what the first left (its audit rows in the WAL to checkpoint), and with ``abab``
that cost the "after" 8-29% CPU per request in-process in one run (and the "before" as much with
``--after-first``). ``--order abab`` gives before, after in every round:

- ``read``: GET by id over HTTP, ``serve --workers 2`` (``bench.read.measure``: wrk -t1 -c8 at
  saturation, then the open loop at ``--rate`` req/s): a system token over 2,000 random ids,
  and the GP persona (``X-Purpose-Of-Use: TREAT``, ``X-Patient``) over 2,000 of one patient's;
  a fresh server per version and round;
- ``asgi``: the same GET by id in-process: ``asgi_read_main`` calls the served application
  (``app.asgi_factory``) over ASGI in a subprocess, no socket, one request after another, and
  reports CPU and wall microseconds per request (audit records flushed inside the measured
  time): the layers issue 12 touched without uvicorn and the load generators, and CPU time
  barely moves with other load on the machine;
- ``search``: ``python -m bench.search --database DB --patients 20 --repeat 3`` as a subprocess
  per version and round (in-process and over HTTP, system and GP); its
  bench/out/search.json is kept as bench/out/before_after/search-VERSION-ROUND.json (its output
  as .log beside it); p50 and p95 per query and caller, and the raw SQL replay for reference;
- ``ingest``: ``python -m bench.ingest --resources 20000 --no-http --no-audit-off`` likewise
  (in-process ``BundleService.process`` and its raw SQLite baseline, a fresh file each).

Printed per figure: the median over the rounds of each version, the ratio after/before of the
medians, the median ("paired") and range of the per-round ratios (round i's after over round
i's before; the paired figure is the sturdier one when the machine's load drifts) and the
spread of each version over its rounds ((max - min) / median: the run-to-run noise). A
monitor samples /proc once a second and reports the CPU used outside this run (other test
suites, ...) per measurement; with ``--wait-quiet S`` each measurement first waits (up to S
seconds) until that has stayed under 10% of a core for 30 s, and one during which it averaged
over 15% of a core is thrown away and made again (at most 3 times; the count is recorded). Saved as
bench/out/before_after.json, with the code state (``git log -1``, ``git diff --stat``) at the
start and the end of the run.

Both versions read and write the same database (audit rows, token keys): it must have a
schema both know (the newer code migrates it; older code skips migrations it does not know).
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from . import build_db
from .common import OUT, PYTHON, ROOT, bearer, enjournal_server, free_port, issue_token, log, machine, save_result
from .loadgen import wrk_available
from .read import check_reads, measure, patient_sample, sample_resources

DEFAULT_DB_RESOURCES = 200_000
RUNS = OUT / "before_after"
LONG_URL_BYTES = 65_600            # over web/shield.py's MAX_URL_BYTES (65,535)
MODULE_LAUNCHER = [PYTHON, "-m", "enjournal.cli"]


# -- versions -----------------------------------------------------------------------------

@dataclass
class Version:
    name: str                      # "before" | "after"
    label: str                     # the revision, or "working tree"
    src: Path                      # what PYTHONPATH names
    expect_shield: bool            # whether a URL over 64 KB gets the 414 of web/shield.py
    env: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = {"PYTHONPATH": str(self.src)}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def export_revision(rev: str) -> tuple[str, Path]:
    """``git archive REV src | tar -x -C bench/out/before-SHORT/``: (short hash, its src dir).
    Exported afresh each run (a few MB)."""
    short = git("rev-parse", "--short", f"{rev}^{{commit}}")
    target = OUT / f"before-{short}"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    archive = subprocess.Popen(["git", "archive", short, "src"], cwd=ROOT, stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(target)], stdin=archive.stdout, check=True)
    archive.stdout.close()
    if archive.wait() != 0:
        raise SystemExit(f"git archive {short} src failed")
    return short, target / "src"


def code_state() -> dict:
    stat = git("diff", "--stat")
    untracked = [p for p in git("ls-files", "--others", "--exclude-standard", "src").splitlines() if p]
    src = git("diff", "--stat", "--", "src")
    return {"head": git("log", "-1", "--oneline"), "diff_stat": stat.splitlines()[-1].strip() if stat else "clean",
            "src_diff_stat": src.splitlines()[-1].strip() if src else "clean", "untracked_src": untracked}


def imported_from(version: Version) -> str:
    out = subprocess.run([PYTHON, "-c", "import enjournal; print(enjournal.__file__)"], cwd=ROOT,
                         env={**os.environ, **version.env}, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rfind(")") + 2:].split()[1]), []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def pythonpaths(pid: int) -> dict[int, str | None]:
    """PYTHONPATH of ``pid`` and each of its descendants (the server's workers), from /proc."""
    out = {}
    for p in descendants(pid):
        try:
            env = open(f"/proc/{p}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        found = [e[len(b"PYTHONPATH="):].decode() for e in env if e.startswith(b"PYTHONPATH=")]
        out[p] = found[0] if found else None
    return out


def long_url_status(port: int, token: str) -> int:
    """The status of ``GET /Patient?name=aaa...`` with a URL over 64 KB (0: no status line)."""
    path = "/Patient?name=" + "a" * LONG_URL_BYTES
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
                  f"Connection: close\r\n\r\n".encode())
        head = b""
        while b"\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
    try:
        return int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def preflight(versions: list[Version], db: Path) -> dict:
    """Which code each version runs, checked in this process's children and in servers' workers."""
    out: dict = {}
    for v in versions:
        where = imported_from(v)
        if not where.startswith(str(v.src) + os.sep):
            raise SystemExit(f"{v.name}: enjournal imported from {where}, not from {v.src}")
        out[v.name] = {"label": v.label, "pythonpath": str(v.src), "enjournal_file": where, "servers": {}}
        log(f"  {v.name:<6} ({v.label}): enjournal.__file__ = {where}")
        for launcher, prefix in (("python -m enjournal.cli", MODULE_LAUNCHER), ("venv enjournal script", None)):
            with enjournal_server(db, workers=2, prefix=prefix, env=v.env) as server:
                token = issue_token(db, server.port, "system", prefix=prefix, env=v.env)
                time.sleep(1.0)                          # both workers up
                paths = pythonpaths(server.proc.pid)
                status = long_url_status(server.port, token)
            wrong = {p: pp for p, pp in paths.items() if pp != str(v.src)}
            shield = status == 414
            log(f"    {launcher:<24} {len(paths)} server processes, PYTHONPATH "
                f"{'as set in all' if not wrong else f'WRONG in {wrong}'}; URL of {LONG_URL_BYTES:,} bytes -> "
                f"{status} ({'web/shield.py' if shield else 'no shield'})")
            if wrong or shield != v.expect_shield or len(paths) < 3:
                raise SystemExit(f"{v.name} via {launcher}: not the expected code (processes {paths}, "
                                 f"long URL {status}, expected {'414' if v.expect_shield else 'not 414'})")
            out[v.name]["servers"][launcher] = {"processes": len(paths), "long_url_status": status}
    return out


SEARCH_LAUNCH = ["-m", "bench.search"]


def asgi_read_main() -> None:
    """GET by id in-process: the served application (``app.asgi_factory``, settings from
    ``ENJOURNAL_*``, as a worker builds it) called over ASGI, one request after another, no
    HTTP server or socket. Prints JSON: per caller, CPU and wall microseconds per request
    (the audit records written and flushed within the measured time). CPU time is far less
    sensitive than throughput to what else runs on the machine."""
    import asyncio
    import sys
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True, help="JSON file: port, callers {name: {headers, paths}}")
    ap.add_argument("--requests", type=int, default=20_000)
    args = ap.parse_args()
    spec = orjson.loads(Path(args.spec).read_bytes())
    from enjournal.app import asgi_factory
    asgi = asgi_factory()
    obj, platform = asgi, None
    while obj is not None and platform is None:
        platform = getattr(getattr(obj, "state", None), "platform", None)
        obj = getattr(obj, "app", None)
    port = spec["port"]

    async def call(path: str, headers: list) -> int:
        sent: list = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", port)}
        await asgi(scope, receive, send)
        return sent[0]["status"]

    async def run() -> dict:
        out = {}
        for name, caller in spec["callers"].items():
            headers = [(b"host", f"127.0.0.1:{port}".encode()), (b"accept", b"application/fhir+json")]
            headers += [(k.lower().encode(), v.encode()) for k, v in caller["headers"].items()]
            paths = caller["paths"]
            for k in range(min(2000, args.requests)):              # warm up
                await call(paths[k % len(paths)], headers)
            if platform is not None:
                platform.audit.flush()
            statuses: dict = {}
            cpu, wall = time.process_time(), time.perf_counter()
            for k in range(args.requests):
                status = await call(paths[k % len(paths)], headers)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
            if platform is not None:
                platform.audit.flush()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            out[name] = {"cpu_us_per_request": 1e6 * cpu / args.requests,
                         "wall_us_per_request": 1e6 * wall / args.requests, "statuses": statuses}
        return out

    try:
        import uvloop
        result = uvloop.run(run())
    except ImportError:
        result = asyncio.run(run())
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


# -- machine load -------------------------------------------------------------------------

class LoadMonitor:
    """Samples /proc once a second: CPU of the whole machine and of this run's process tree
    (this process, its children and theirs, reaped children included), so the CPU used by
    anything else during a window is known."""

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self.hz = os.sysconf("SC_CLK_TCK")
        self.samples: list[tuple[float, float, float, float]] = []    # (t, busy s, steal s, ours s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-monitor", daemon=True)

    def _machine(self) -> tuple[float, float]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal ...
        return (v[0] + v[1] + v[2] + v[5] + v[6]) / self.hz, (v[7] if len(v) > 7 else 0) / self.hz

    def _ours(self) -> float:
        total = 0.0
        for p in descendants(os.getpid()):
            try:
                with open(f"/proc/{p}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            total += sum(int(x) for x in fields[11:15])      # utime stime cutime cstime
        return total / self.hz

    def sample(self) -> None:
        busy, steal = self._machine()
        self.samples.append((time.monotonic(), busy, steal, self._ours()))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> "LoadMonitor":
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def now(self) -> float:
        self.sample()
        return self.samples[-1][0]

    def wait_quiet(self, max_wait: float, threshold: float = 10.0, quiet: float = 30.0) -> float:
        """Wait (at most ``max_wait`` s) until the CPU used outside this run has stayed under
        ``threshold`` % of one core for ``quiet`` s; the seconds waited (0 with max_wait 0)."""
        if max_wait <= 0:
            return 0.0
        start = last_log = time.monotonic()
        while True:
            now = self.now()
            w = self.window(now - quiet, now)       # the samples of the last ``quiet`` s (monitor's)
            if w and w["covered_s"] >= quiet - 2 and w["other_cpu_pct"] < threshold:
                break
            if now - start >= max_wait:
                log(f"  (still busy after {max_wait:.0f} s: {w.get('other_cpu_pct', float('nan')):.0f}% of a "
                    f"core outside this run; going on)")
                break
            if now - last_log >= 60:
                last_log = now
                log(f"  waiting for a quiet machine: {w.get('other_cpu_pct', float('nan')):.0f}% of a core "
                    f"outside this run over the last {quiet:.0f} s")
            time.sleep(1.0)
        return time.monotonic() - start

    def window(self, t0: float, t1: float) -> dict:
        """CPU outside this run between t0 and t1, in % of one core (mean and the busiest second)."""
        s = sorted(x for x in list(self.samples) if t0 - 1e-6 <= x[0] <= t1 + 1e-6)
        if len(s) < 2 or s[-1][0] - s[0][0] <= 0:
            return {}
        per = [100 * max(0.0, (b[1] - a[1]) - (b[3] - a[3])) / (b[0] - a[0]) for a, b in zip(s, s[1:])
               if b[0] - a[0] > 0.2]
        dt = s[-1][0] - s[0][0]
        return {"covered_s": dt, "other_cpu_pct": 100 * max(0.0, (s[-1][1] - s[0][1]) - (s[-1][3] - s[0][3])) / dt,
                "other_cpu_pct_max_1s": max(per, default=float("nan")), "steal_pct": 100 * (s[-1][2] - s[0][2]) / dt,
                "loadavg_1m_end": os.getloadavg()[0]}


# -- the benchmarks, one version and round each --------------------------------------------

def read_round(v: Version, db: Path, paths: list[str], own_paths: list[str], patient: str,
               picked: list, own: list, seconds: int, rate: float, check: bool) -> dict:
    out = {"waited_s": MONITOR.wait_quiet(WAIT_QUIET)}
    with enjournal_server(db, workers=2, prefix=MODULE_LAUNCHER, env=v.env) as server:
        system = bearer(issue_token(db, server.port, "system", prefix=MODULE_LAUNCHER, env=v.env))
        gp = bearer(issue_token(db, server.port, "gp", prefix=MODULE_LAUNCHER, env=v.env), patient=patient)
        if check:
            check_reads(server, picked, system, f"{v.name}, system token")
            check_reads(server, own, gp, f"{v.name}, GP, TREAT, X-Patient")
        for caller, ids, headers in (("system", paths, system), ("gp", own_paths, gp)):
            for attempt in range(RETRIES + 1):
                if attempt:
                    MONITOR.wait_quiet(WAIT_QUIET)
                t0 = MONITOR.now()
                r = measure(server, ids, seconds, rate, headers, db)
                r["load"] = MONITOR.window(t0, MONITOR.now())
                r["discarded_busy"] = attempt
                if not busy(r["load"], attempt, f"{v.name} {caller}"):
                    break
            out[caller] = r
            sat, st = r["saturation"], r["steady"]
            log(f"    {v.name:<6} {caller:<6} saturation {sat['rps']:8,.0f} req/s ({sat['connection_split']}, "
                f"{sat['server_cpu_us_per_request']:.0f} us server CPU/req); steady {rate:,.0f}/s p50 "
                f"{st['p50']:.2f} ms p99 {st['p99']:.2f} ms ({st['sent_late']} sent late, {st['errors']} errors); "
                f"other CPU {r['load'].get('other_cpu_pct', float('nan')):.0f}% of a core")
    return out


def subprocess_round(v: Version, launch: list[str], argv: list[str], result_file: str, tag: str) -> dict:
    """``python LAUNCH ARGV`` with the version's PYTHONPATH; its saved JSON, copied away."""
    RUNS.mkdir(parents=True, exist_ok=True)
    log_path = RUNS / f"{tag}.log"
    src = OUT / result_file
    if src.exists():
        src.unlink()
    for attempt in range(RETRIES + 1):
        waited = MONITOR.wait_quiet(WAIT_QUIET)
        t0 = MONITOR.now()
        with open(log_path, "wb") as f:
            proc = subprocess.run([PYTHON, *launch, *argv], cwd=ROOT, env={**os.environ, **v.env},
                                  stdout=f, stderr=subprocess.STDOUT)
        load = MONITOR.window(t0, MONITOR.now())
        load["discarded_busy"] = attempt
        if proc.returncode != 0 or not busy(load, attempt, tag):
            break
    if proc.returncode != 0 or not src.exists():
        raise SystemExit(f"{' '.join(launch)} ({v.name}) failed with {proc.returncode}: see {log_path}\n"
                         + log_path.read_text()[-3000:])
    kept = RUNS / f"{tag}.json"
    shutil.copyfile(src, kept)
    data = orjson.loads(kept.read_bytes())
    data["load"] = {**load, "waited_s": waited}
    return data


def asgi_round(v: Version, db: Path, callers: dict, requests: int, tag: str) -> dict:
    """``asgi_read_main`` in a subprocess with the version's PYTHONPATH (tokens from that
    version's ``enjournal token``; the issuer is 127.0.0.1 on a port nothing listens on)."""
    RUNS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    spec = {"port": port, "callers": {}}
    for name, (persona, patient, paths) in callers.items():
        token = issue_token(db, port, persona, prefix=MODULE_LAUNCHER, env=v.env)
        spec["callers"][name] = {"headers": bearer(token, patient), "paths": paths}
    spec_file = RUNS / f"{tag}.spec.json"
    spec_file.write_bytes(orjson.dumps(spec))
    env = {**os.environ, **v.env, "ENJOURNAL_DATABASE": f"sqlite:///{db}", "ENJOURNAL_HOST": "127.0.0.1",
           "ENJOURNAL_PORT": str(port), "ENJOURNAL_BUILTIN_IDP": "on"}
    for attempt in range(RETRIES + 1):
        MONITOR.wait_quiet(WAIT_QUIET)
        t0 = MONITOR.now()
        proc = subprocess.run([PYTHON, "-c", "from bench.before_after import asgi_read_main; asgi_read_main()",
                               "--spec", str(spec_file), "--requests", str(requests)],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        load = MONITOR.window(t0, MONITOR.now())
        load["discarded_busy"] = attempt
        if proc.returncode != 0:
            raise SystemExit(f"in-process read ({v.name}) failed: {proc.stderr[-3000:]}")
        if not busy(load, attempt, tag):
            break
    (RUNS / f"{tag}.log").write_text(proc.stderr)
    data = orjson.loads(proc.stdout.strip().splitlines()[-1])
    for name, r in data.items():
        if set(r["statuses"]) != {"200"}:
            log(f"  WARNING: {v.name} {name}: statuses {r['statuses']}")
    data["load"] = load
    return data


def busy(load: dict, attempt: int, what: str) -> bool:
    """Whether a measurement is to be thrown away and made again (with --wait-quiet only):
    more than BUSY_PCT % of a core was used outside this run while it ran."""
    if WAIT_QUIET <= 0 or not load or load["other_cpu_pct"] <= BUSY_PCT:
        return False
    if attempt >= RETRIES:
        log(f"    ({what}: {load['other_cpu_pct']:.0f}% of a core used outside this run; kept after "
            f"{attempt} retries)")
        return False
    log(f"    ({what}: {load['other_cpu_pct']:.0f}% of a core used outside this run: measured again)")
    return True


# -- figures and tables -------------------------------------------------------------------

def round_order(versions: list[Version], r: int, order: str) -> list[Version]:
    """The versions in round ``r`` (from 0): as given, or with ``abba`` reversed in odd rounds."""
    return versions[::-1] if order == "abba" and r % 2 else versions


def summary(before: list[float], after: list[float], higher_is_better: bool) -> dict:
    mb, ma = statistics.median(before), statistics.median(after)
    per_round = [a / b for a, b in zip(after, before) if b]
    return {"before": before, "after": after, "before_median": mb, "after_median": ma,
            "ratio": ma / mb if mb else float("nan"),
            "round_ratios": per_round,
            "paired_ratio": statistics.median(per_round) if per_round else float("nan"),
            "spread_before": (max(before) - min(before)) / mb if mb else float("nan"),
            "spread_after": (max(after) - min(after)) / ma if ma else float("nan"),
            "higher_is_better": higher_is_better}


def verdict(s: dict, limit: float = 0.05) -> str:
    """Whether the after/before ratio stays within ``limit`` of a slowdown."""
    r = s["ratio"]
    slower = (1 - r) if s["higher_is_better"] else (r - 1)
    if slower <= limit:
        return "ok"
    noise = max(s["spread_before"], s["spread_after"])
    return f"SLOWER by {100 * slower:.0f}%" + (" (within the spread)" if slower <= noise else "")


def fmt(x: float, unit: str) -> str:
    if unit == "req/s":
        return f"{x:,.0f}"
    if unit == "/s":
        return f"{x:,.0f}"
    if unit == "us":
        return f"{x:.0f}"
    if unit == "x":
        return f"{x:.3f}"
    return f"{x:.2f}"


def table(title: str, rows: list[tuple[str, str, dict]], before_label: str, after_label: str) -> None:
    log(f"\n{title}")
    w = max([len(r[0]) for r in rows] + [20])
    log(f"  {'figure':<{w}} {'before':>10} {'after':>10} {'ratio a/b':>9} {'paired':>7}  {'per-round ratios':<14} "
        f"{'spread b / a':<15} verdict")
    for name, unit, s in rows:
        rr = s["round_ratios"]
        log(f"  {name:<{w}} {fmt(s['before_median'], unit):>10} {fmt(s['after_median'], unit):>10} "
            f"{s['ratio']:>9.3f} {s['paired_ratio']:>7.3f}  {min(rr):.3f}-{max(rr):.3f}{'':<2} "
            f"{100 * s['spread_before']:4.1f}% / {100 * s['spread_after']:4.1f}%  {verdict(s)}")
    log(f"  (before, after: medians over the rounds, before = {before_label}, after = {after_label}; ratio: of "
        f"those medians; paired: median of the per-round ratios (round i's after / round i's before); "
        f"spread = (max - min) / median of one version's rounds)")


# -- main ---------------------------------------------------------------------------------

MONITOR: LoadMonitor
WAIT_QUIET = 0.0        # --wait-quiet: longest wait for a quiet machine before each measurement
RETRIES = 3             # with --wait-quiet: a measurement made while the machine was busy is made again
BUSY_PCT = 15.0         # ... busy: more than this % of one core used outside this run, on average


def run(before: str = "ee75728", rounds: int = 3, seconds: int = 10, rate: float = 1000.0,
        database: Path | None = None, patients: int = 20, repeat: int = 3, ingest_resources: int = 20_000,
        sample: int = 2000, only: str = "read,asgi,search,ingest", wait_quiet: float = 0.0,
        asgi_requests: int = 20_000, after_first: bool = False, order: str = "abba") -> dict:
    global MONITOR, WAIT_QUIET
    WAIT_QUIET = wait_quiet
    chosen = set(only.split(","))
    unknown = chosen - {"read", "asgi", "search", "ingest"}
    if unknown:
        raise SystemExit(f"--only: unknown {sorted(unknown)} (read, asgi, search, ingest)")
    if "read" in chosen and not wrk_available():
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    short, before_src = export_revision(before)
    versions = [Version("before", short, before_src, expect_shield=False),
                Version("after", "working tree", ROOT / "src", expect_shield=True)]
    if after_first:                 # each round runs the working tree first (to see an order effect)
        versions.reverse()
    state = code_state()
    db = database or build_db.db_path(DEFAULT_DB_RESOURCES)
    if not db.exists():
        log(f"{db} missing: building it with the working tree's code")
        db = build_db.build(DEFAULT_DB_RESOURCES)
    MONITOR = LoadMonitor().start()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    results_order = f"{order}{' (after first)' if after_first else ''}"
    log(f"== before/after: {short} vs the working tree ({state['head']}; git diff --stat: {state['diff_stat']}; "
        f"of src/: {state['src_diff_stat']}; untracked in src/: {len(state['untracked_src'])} files), {rounds} rounds alternating ({results_order}), {db.name}; "
        f"{machine()}")
    with open(db, "rb") as f:                         # into the page cache before either version reads it
        while f.read(1 << 24):
            pass
    results: dict = {"before_rev": short, "code_state": state, "database": db.name, "rounds": rounds,
                     "order": results_order,
                     "started": started, "preflight": preflight(versions, db)}
    tables: list = []

    if "read" in chosen:
        picked = sample_resources(db, sample)
        paths = ["/" + k for k, _ in picked]
        patient, own = patient_sample(db, sample)
        own_paths = ["/" + k for k, _ in own]
        log(f"\n== read: GET /Type/id, {len(paths)} random ids (system) and {len(own_paths)} of Patient/{patient}'s "
            f"(GP, TREAT, X-Patient); wrk -t1 -c8 {seconds} s, then {rate:,.0f} req/s open loop {seconds} s")
        runs = {v.name: [] for v in versions}
        for r in range(rounds):
            log(f"  round {r + 1}/{rounds}")
            for v in round_order(versions, r, order):
                runs[v.name].append(read_round(v, db, paths, own_paths, patient, picked, own, seconds, rate,
                                               check=r == 0))
        figures: dict = {}
        for caller in ("system", "gp"):
            def series(name: str, get) -> list[float]:
                return [get(x[caller]) for x in runs[name]]
            for fig, unit, get, hib in (
                    ("saturation req/s", "req/s", lambda x: x["saturation"]["rps"], True),
                    ("server CPU us/req at saturation", "us", lambda x: x["saturation"]["server_cpu_us_per_request"], False),
                    ("wrk p50 ms at saturation", "ms", lambda x: x["saturation"]["latency_ms"].get("p50", float("nan")), False),
                    (f"steady {rate:,.0f}/s p50 ms", "ms", lambda x: x["steady"]["p50"], False),
                    (f"steady {rate:,.0f}/s p99 ms", "ms", lambda x: x["steady"]["p99"], False)):
                figures[f"{caller}/{fig}"] = (unit, summary(series("before", get), series("after", get), hib))
        results["read"] = {"patient": patient, "ids": len(paths), "patient_ids": len(own_paths), "runs": runs,
                           "figures": {k: s for k, (_, s) in figures.items()}}
        for caller, title in (("system", "GET by id, system token, random ids"),
                              ("gp", f"GET by id, GP persona (TREAT, X-Patient), Patient/{patient}'s ids")):
            tables.append((title, [(k.split("/", 1)[1], unit, s) for k, (unit, s) in figures.items()
                                   if k.startswith(caller + "/")]))
        table(*tables[-2], short, "working tree")
        table(*tables[-1], short, "working tree")

    if "asgi" in chosen:
        picked = sample_resources(db, sample)
        patient, own = patient_sample(db, sample)
        callers = {"system": ("system", None, ["/" + k for k, _ in picked]),
                   "gp": ("gp", patient, ["/" + k for k, _ in own])}
        log(f"\n== GET by id in-process over ASGI (asgi_factory, no HTTP server), {asgi_requests:,} requests per "
            f"caller and round, one after another: system over {len(picked)} random ids, GP over Patient/{patient}'s")
        runs = {v.name: [] for v in versions}
        for r in range(rounds):
            for v in round_order(versions, r, order):
                data = asgi_round(v, db, callers, asgi_requests, f"asgi-{v.name}-{r + 1}")
                runs[v.name].append(data)
                log(f"  round {r + 1} {v.name:<6} " + "; ".join(
                    f"{c} {data[c]['cpu_us_per_request']:.0f} us CPU, {data[c]['wall_us_per_request']:.0f} us wall"
                    for c in callers) + f" per request; other CPU {data['load'].get('other_cpu_pct', float('nan')):.0f}% "
                    "of a core")
        figures = {}
        for c in callers:
            for fig, key in (("CPU us/request", "cpu_us_per_request"), ("wall us/request", "wall_us_per_request")):
                figures[f"{c} {fig}"] = summary([x[c][key] for x in runs["before"]],
                                                [x[c][key] for x in runs["after"]], False)
        results["asgi_read"] = {"requests": asgi_requests, "patient": patient, "figures": figures,
                                "runs": runs}
        tables.append(("GET by id in-process over ASGI (no HTTP server)",
                       [(k, "us", s) for k, s in figures.items()]))
        table(*tables[-1], short, "working tree")

    if "search" in chosen:
        log(f"\n== search: python -m bench.search --database {db} --patients {patients} --repeat {repeat}")
        runs = {v.name: [] for v in versions}
        for r in range(rounds):
            for v in round_order(versions, r, order):
                data = subprocess_round(v, SEARCH_LAUNCH, ["--database", str(db), "--patients", str(patients),
                                                            "--repeat", str(repeat)],
                                        "search.json", f"search-{v.name}-{r + 1}")
                runs[v.name].append(data)
                log(f"  round {r + 1} {v.name:<6} system/observation in-process p50 "
                    f"{data['in_process']['system/observation']['p50']:.2f} ms, HTTP "
                    f"{data['http']['system/observation']['p50']:.2f} ms; other CPU "
                    f"{data['load'].get('other_cpu_pct', float('nan')):.0f}% of a core")
        keys = list(runs["before"][0]["in_process"])
        figures = {}
        for where in ("in_process", "http", "raw_sql"):
            for key in keys:
                for pct in ("p50", "p95"):
                    figures[f"{where}/{key}/{pct}"] = summary([x[where][key][pct] for x in runs["before"]],
                                                              [x[where][key][pct] for x in runs["after"]], False)
        matches = {v.name: runs[v.name][0]["matches"] for v in versions}
        results["search"] = {"figures": figures, "matches": matches, "examples": runs["after"][0].get("examples"),
                             "load": {v.name: [x["load"] for x in runs[v.name]] for v in versions},
                             "runs": [f"search-{v.name}-{r + 1}.json" for r in range(rounds) for v in versions]}
        for key in keys:
            if matches["before"][key] != matches["after"][key]:
                log(f"  note: {key} matches differ: before {matches['before'][key]}, after {matches['after'][key]}")
        for where, label in (("in_process", "in-process"), ("http", "over HTTP"),
                             ("raw_sql", "raw SQL replay of the statements each version ran (reference)")):
            rows = [(f"{key} {pct} ms", "ms", figures[f"{where}/{key}/{pct}"]) for key in keys for pct in ("p50", "p95")]
            tables.append((f"search {label}, n = {patients} patients x {repeat} repeats per figure", rows))
            table(*tables[-1], short, "working tree")

    if "ingest" in chosen:
        log(f"\n== ingest: python -m bench.ingest --resources {ingest_resources} --no-http --no-audit-off")
        runs = {v.name: [] for v in versions}
        for r in range(rounds):
            for v in round_order(versions, r, order):
                data = subprocess_round(v, ["-m", "bench.ingest"], ["--resources", str(ingest_resources), "--no-http",
                                                            "--no-audit-off"],
                                        "ingest.json", f"ingest-{v.name}-{r + 1}")
                runs[v.name].append(data)
                log(f"  round {r + 1} {v.name:<6} {data['in_process_per_s']:,.0f} resources/s in-process "
                    f"(raw SQLite {data['raw_sqlite_per_s']:,.0f}/s); other CPU "
                    f"{data['load'].get('other_cpu_pct', float('nan')):.0f}% of a core")
        figures = {
            "in-process resources/s": summary([x["in_process_per_s"] for x in runs["before"]],
                                              [x["in_process_per_s"] for x in runs["after"]], True),
            "raw SQLite resources/s (same code both)": summary([x["raw_sqlite_per_s"] for x in runs["before"]],
                                                               [x["raw_sqlite_per_s"] for x in runs["after"]], True),
            "in-process / raw SQLite": summary([x["in_process_per_s"] / x["raw_sqlite_per_s"] for x in runs["before"]],
                                               [x["in_process_per_s"] / x["raw_sqlite_per_s"] for x in runs["after"]],
                                               True)}
        results["ingest"] = {"resources": runs["after"][0]["resources"], "figures": figures,
                             "load": {v.name: [x["load"] for x in runs[v.name]] for v in versions}}
        tables.append((f"ingest in-process, {runs['after'][0]['resources']:,} resources (no target; information)",
                       [(k, "/s" if "/s" in k else "x", s) for k, s in figures.items()]))
        table(*tables[-1], short, "working tree")

    MONITOR.stop()
    end_state = code_state()
    results["code_state_end"] = end_state
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    whole = MONITOR.window(MONITOR.samples[0][0], MONITOR.samples[-1][0])
    results["load"] = whole
    log(f"\nrun {started} - {results['finished']}: CPU outside this run {whole.get('other_cpu_pct', 0):.1f}% of a "
        f"core on average (busiest second {whole.get('other_cpu_pct_max_1s', 0):.0f}%), steal "
        f"{whole.get('steal_pct', 0):.1f}%, load average now {os.getloadavg()[0]:.2f}")
    if end_state != state:
        log(f"  WARNING: the working tree changed during the run: {state['diff_stat']} -> {end_state['diff_stat']}")
    log(f"  code: {state['head']}; git diff --stat | tail -1: {state['diff_stat']} "
        f"(of src/: {state['src_diff_stat']}; untracked in src/: {state['untracked_src'] or 'none'})")
    save_result("before_after", results)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description="before/after ratios of read, search and ingest benchmarks")
    ap.add_argument("--before", default="ee75728", help="git revision of the 'before' code (default ee75728)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10, help="per wrk run and per open-loop run")
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--database", help=f"default bench/out/db-{DEFAULT_DB_RESOURCES}.db (built if missing)")
    ap.add_argument("--patients", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ingest-resources", type=int, default=20_000)
    ap.add_argument("--sample", type=int, default=2000, help="ids to rotate over in the read benchmark")
    ap.add_argument("--only", default="read,asgi,search,ingest")
    ap.add_argument("--asgi-requests", type=int, default=20_000, help="requests per caller and round, in-process")
    ap.add_argument("--after-first", action="store_true", help="start with the working tree (round 1: after, before)")
    ap.add_argument("--order", choices=("abba", "abab"), default="abba",
                    help="abba (default): the order flips every round (before, after / after, before / ...), so "
                         "what the first of a pair leaves behind (the audit rows it wrote, a WAL to checkpoint) "
                         "weighs on both versions alike; abab: before, after in every round")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                    help="before each measurement, wait up to SECONDS until the CPU used outside this run "
                         "has stayed under 10%% of a core for 30 s (default 0: do not wait)")
    args = ap.parse_args()
    run(args.before, args.rounds, args.seconds, args.rate, Path(args.database) if args.database else None,
        args.patients, args.repeat, args.ingest_resources, args.sample, args.only, args.wait_quiet,
        args.asgi_requests, args.after_first, args.order)


if __name__ == "__main__":
    main()
