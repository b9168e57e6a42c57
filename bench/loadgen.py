"""Load generators for HTTP benchmarks on loopback.

- ``wrk_saturate``: Debian's ``wrk`` (one thread, N connections) with a Lua script that
  rotates through a list of paths; returns requests/s and wrk's latency percentiles.
- ``open_loop``: a small asyncio client (uvloop when installed) on raw sockets with
  keep-alive connections that *schedules* requests at a fixed rate (wrk2's open-loop model):
  latency is measured from the scheduled send time, so a stalled server cannot hide its
  queueing (no coordinated omission). It reports its own CPU time as its overhead.
- ``sequential``: one keep-alive connection, one request after another (search latency).

Every data request needs a bearer token (docs/access.md): each generator takes ``headers``,
extra request headers ({"Authorization": "Bearer ...", "X-Patient": ...}) sent with every
request; ``sequential`` also takes (path, headers) pairs for per-request headers.
"""
from __future__ import annotations

import asyncio
import re
import resource
import shutil
import subprocess
import time

from .common import OUT, summarize_ms

WRK_LUA = """
local paths = {}
for line in io.lines("%s") do paths[#paths + 1] = line end
local headers = {["Accept"] = "application/fhir+json"%s}
local i = math.random(#paths)
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i], headers)
end
"""


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'



def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def connection_split(port: int) -> list[int]:
    """How the established client connections to ``port`` are spread over the server's
    processes (uvicorn workers accept from one shared socket, so 8 connections can land 8/0
    as well as 4/4), largest first; [] when ``ss`` cannot tell."""
    try:
        out = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    counts: dict[str, int] = {}
    for line in out.splitlines():
        m = re.search(r"pid=(\d+)", line)
        if m:
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return sorted(counts.values(), reverse=True)


def wrk_saturate(url: str, paths: list[str], connections: int = 8, seconds: int = 10,
                 threads: int = 1, headers: dict[str, str] | None = None, workers: int = 0,
                 tries: int = 6, probe=None) -> dict:
    """``wrk`` at saturation. With ``workers`` > 1, the spread of wrk's connections over the
    server's worker processes is checked 0.5 s in, and a run whose spread is off by more
    than one connection from even is stopped and started again (up to ``tries`` times), since
    the throughput of an 8/0 spread is that of one worker; the spread is reported.
    ``probe()`` (e.g. the server's CPU seconds) is read as the kept run starts and ends:
    ``probe_start``, ``probe_end`` in the result."""
    OUT.mkdir(parents=True, exist_ok=True)
    path_file = OUT / "wrk-paths.txt"
    path_file.write_text("\n".join(paths) + "\n")
    script = OUT / "wrk-rotate.lua"
    extra = "".join(f", [{_lua_string(k)}] = {_lua_string(v)}" for k, v in (headers or {}).items())
    script.write_text(WRK_LUA % (path_file, extra))
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s", str(script), url]
    restarts = 0
    while True:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        probe_start = probe() if probe is not None else None
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        split: list[int] = []
        if workers > 1:
            time.sleep(0.5)
            split = connection_split(port)
            even = connections // workers
            if (split and (len(split) < workers or split[0] - even > 1)) and restarts < tries - 1:
                proc.kill()
                proc.communicate()
                restarts += 1
                time.sleep(0.5)
                continue
        out, err = proc.communicate(timeout=seconds + 60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        probe_end = probe() if probe is not None else None
        break
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"wrk failed: {out}\n{err}")
    lat = {}
    for pct in ("50", "75", "90", "99"):
        mm = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if mm:
            v = float(mm.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[mm.group(2)]
            lat[f"p{pct}"] = v
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"rps": float(m.group(1)), "latency_ms": lat, "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(0) if errors else "", "client_cpu_pct_of_core": 100 * cpu / seconds,
            "connection_split": "/".join(map(str, split)) if split else "", "restarts": restarts,
            "probe_start": probe_start, "probe_end": probe_end,
            "raw": out}


def _request(path: str, host: str, headers: dict[str, str] | None = None) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/fhir+json\r\n{extra}\r\n").encode()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    if m:
        body = await reader.readexactly(int(m.group(1)))
    elif re.search(rb"(?i)\r\ntransfer-encoding:\s*chunked", head):
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(chunk[:-2])
        body = b"".join(parts)
    else:
        body = b""
    return status, body


def open_loop(port: int, paths: list[str], rate: float, seconds: float, connections: int = 8,
              headers: dict[str, str] | None = None, workers: int = 0) -> dict:
    """Send ``rate`` requests/s for ``seconds`` over ``connections`` keep-alive connections
    (with ``workers`` > 1, reconnected until they are spread evenly over the workers, at
    most 6 tries)."""
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    return runner(_open_loop(port, paths, rate, seconds, connections, headers, workers))


async def _open_loop(port: int, paths: list[str], rate: float, seconds: float, connections: int,
                     headers: dict[str, str] | None = None, workers: int = 0) -> dict:
    host = f"127.0.0.1:{port}"
    reqs = [_request(p, host, headers) for p in paths]
    for attempt in range(6):
        idle: asyncio.Queue = asyncio.Queue()
        for _ in range(connections):
            idle.put_nowait(await asyncio.open_connection("127.0.0.1", port))
            if workers > 1:
                await asyncio.sleep(0.02)       # gives the other worker a chance to accept
        await asyncio.sleep(0.2)
        split = connection_split(port)
        if workers <= 1 or not split or (len(split) >= workers and split[0] - connections // workers <= 1) \
                or attempt == 5:
            break
        while not idle.empty():
            _, writer = idle.get_nowait()
            writer.close()
        await asyncio.sleep(0.3)
    total = int(rate * seconds)
    latencies: list[float] = []
    errors = [0]
    late = [0]
    cpu0 = time.process_time()
    start = time.perf_counter() + 0.05
    loop = asyncio.get_running_loop()
    pending: set = set()

    async def one(k: int, scheduled: float) -> None:
        conn = await idle.get()
        reader, writer = conn
        try:
            writer.write(reqs[k % len(reqs)])
            status, _ = await _read_response(reader)
            if status != 200:
                errors[0] += 1
            latencies.append(time.perf_counter() - scheduled)
        finally:
            idle.put_nowait(conn)

    for k in range(total):
        scheduled = start + k / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.001:
            late[0] += 1
        task = loop.create_task(one(k, scheduled))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending, timeout=30)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    while not idle.empty():
        _, writer = idle.get_nowait()
        writer.close()
    stats = summarize_ms(latencies)
    stats.update(achieved_rps=len(latencies) / elapsed, errors=errors[0], sent_late=late[0],
                 client_cpu_pct_of_core=100 * cpu / elapsed, connection_split="/".join(map(str, split)))
    return stats


def sequential(port: int, paths: list, repeat: int = 1, headers: dict[str, str] | None = None,
               ) -> tuple[list[float], list[bytes]]:
    """Latency of each request sent one after another on one keep-alive connection.
    ``paths``: paths, or (path, headers) pairs whose headers are added to ``headers``."""
    async def run() -> tuple[list[float], list[bytes]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        host = f"127.0.0.1:{port}"
        reqs = []
        for item in paths:
            p, own = (item, None) if isinstance(item, str) else item
            reqs.append((p, _request(p, host, {**(headers or {}), **(own or {})})))
        times, bodies = [], []
        for _ in range(repeat):
            for p, req in reqs:
                t = time.perf_counter()
                writer.write(req)
                status, body = await _read_response(reader)
                times.append(time.perf_counter() - t)
                if status != 200:
                    raise RuntimeError(f"GET {p}: {status} {body[:300]!r}")
                bodies.append(body)
        writer.close()
        return times, bodies
    return asyncio.run(run())
