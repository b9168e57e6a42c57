"""GET by id over HTTP with 8 concurrent connections.

    .venv/bin/python -m bench.read [--resources 20000] [--seconds 10] [--database PATH]

Starts ``enjournal serve --workers 2`` on a free loopback port over a Synthea database, and
as baselines, in the same run, bare Starlette apps (2 uvicorn workers) returning the same
bytes: from memory (``baseline``) and from a one-table SQLite file (``raw sqlite``).

Every request carries a bearer token of the built-in identity provider (``enjournal
token``). Three kinds of caller, against the same server:

- ``system``: a system token, 2,000 random ids of the whole database (the figure of issue 2);
- ``system_patient``: the system token, 2,000 random ids of one patient's compartment;
- ``gp``: the GP persona (health personnel) with ``X-Purpose-Of-Use: TREAT`` and
  ``X-Patient: Patient/<that patient>``, the same ids: the full policy runs (facts cache,
  ``decide``) for every read.

Every read is audited (one row each); the rows written per second are reported.

- saturation: ``wrk -t1 -c8`` rotating over the ids; target >= 3,000 requests/s;
- steady 1,000 requests/s: open-loop asyncio client (``loadgen.open_loop``), latency from the
  scheduled send time; target p99 < 5 ms.
"""
from __future__ import annotations

import argparse
import os
import random
import sqlite3
import time
from pathlib import Path

import orjson

from . import build_db
from .common import (OUT, PYTHON, ROOT, Server, audit_head, bearer, enjournal_server, fmt_ms, free_port,
                     issue_token, log, machine, save_result, tree_cpu_seconds)
from .loadgen import open_loop, sequential, wrk_available, wrk_saturate

TARGET_RPS = 3000.0
TARGET_P99_MS = 5.0


def sample_resources(db: Path, n: int, seed: int = 7) -> list[tuple[str, bytes]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    keys = [r[0] for r in conn.execute("SELECT rk FROM res WHERE deleted = 0 ORDER BY rk")]
    random.Random(seed).shuffle(keys)
    rows = [conn.execute("SELECT r.type, r.id, h.body FROM res r JOIN hist h ON h.seq = r.seq WHERE r.rk = ?",
                         (rk,)).fetchone() for rk in keys[:n]]
    conn.close()
    return [(f"{t}/{i}", b) for t, i, b in rows]


def patient_sample(db: Path, n: int, seed: int = 7) -> tuple[str, list[tuple[str, bytes]]]:
    """A patient with at least ``n`` resources (the smallest such, else the largest) and up to
    ``n`` random resources of its compartment (``res.pat``, migration 6), its Patient included."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        counts = conn.execute("SELECT pat, COUNT(*) FROM res WHERE deleted = 0 AND pat IS NOT NULL "
                              "AND pat != '*' GROUP BY pat").fetchall()
        if not counts:
            raise SystemExit(f"{db}: no resource has a patient (res.pat): is the database migrated?")
        big = sorted((c, p) for p, c in counts if c >= n)
        patient = big[0][1] if big else max(counts, key=lambda r: r[1])[0]
        rows = conn.execute("SELECT r.type, r.id, h.body FROM res r JOIN hist h ON h.seq = r.seq "
                            "WHERE r.pat = ? AND r.deleted = 0", (patient,)).fetchall()
    finally:
        conn.close()
    own = [r for r in rows if r[0] == "Patient"]
    others = [r for r in rows if r[0] != "Patient"]
    random.Random(seed).shuffle(others)
    picked = own + others[:n - len(own)]
    return patient, [(f"{t}/{i}", b) for t, i, b in picked]


def baseline_server(mode: str, bodies_file: Path, raw_db: Path) -> Server:
    port = free_port()
    env = {"BENCH_BASELINE_BODIES": str(bodies_file), "PYTHONPATH": str(ROOT)}
    if mode == "sqlite":
        env["BENCH_BASELINE_DB"] = str(raw_db)
    argv = [PYTHON, "-m", "uvicorn", "bench.baseline_app:create", "--factory", "--workers", "2",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    return Server(argv, port, env=env, name=f"baseline-{mode}")


def measure(server: Server, paths: list[str], seconds: int, rate: float, headers: dict | None = None,
            db: Path | None = None, workers: int = 2) -> dict:
    """wrk at saturation, then the open loop at ``rate``; with ``db``, also the audit rows
    written per second at saturation (the newest seq before and after, once flushed).
    wrk's 8 connections are spread evenly over the ``workers`` (see ``wrk_saturate``)."""
    # warm up (connections, statement caches, page cache, token and facts caches)
    wrk_saturate(server.url, paths, 8, 2, headers=headers)
    if db is not None:
        settled(db)                        # the warm-up's audit rows written
    before = audit_head(db) if db is not None else 0
    sat = wrk_saturate(server.url, paths, 8, seconds, headers=headers, workers=workers,
                       probe=lambda: tree_cpu_seconds(server.proc.pid))
    cpu0 = sat.pop("probe_start")
    sat.pop("probe_end")
    if db is not None:
        at_end = audit_head(db)
        after, drain = settled(db)
    cpu2 = tree_cpu_seconds(server.proc.pid)
    steady = open_loop(server.port, paths, rate, seconds, 8, headers=headers, workers=workers)
    cpu3 = tree_cpu_seconds(server.proc.pid)
    # server CPU per request (all its processes and threads, SQLite included), from the start
    # of the kept wrk run; the audit backlog written after wrk stopped is counted too
    sat["server_cpu_us_per_request"] = 1e6 * (cpu2 - cpu0) / max(1.0, sat["rps"] * seconds)
    steady["server_cpu_us_per_request"] = 1e6 * (cpu3 - cpu2) / max(1, steady["n"])
    steady["server_cpu_pct"] = 100 * (cpu3 - cpu2) / seconds
    sat.pop("raw", None)
    if workers > 1 and sat["connection_split"] and sat["connection_split"] != "4/4":
        log(f"  note: wrk's connections were spread {sat['connection_split']} over the workers "
            f"(after {sat['restarts']} restarts)")
    if sat["non2xx"] or sat["socket_errors"]:
        log(f"  WARNING: {sat['non2xx']} non-2xx answers, {sat['socket_errors'] or 'no socket errors'}")
    if steady["errors"]:
        log(f"  WARNING: {steady['errors']} non-200 answers at the steady rate")
    out = {"saturation": sat, "steady": steady}
    if db is not None:
        # rows committed while wrk ran, and the backlog the audit thread wrote after it
        out["audit_rows"] = after - before
        out["audit_rows_per_s"] = (at_end - before) / seconds
        out["audit_rows_per_request"] = (after - before) / max(1.0, sat["rps"] * seconds)
        out["audit_backlog_rows"] = after - at_end
        out["audit_drain_s"] = drain
    return out


def settled(db: Path, quiet: float = 0.3, timeout: float = 60.0) -> tuple[int, float]:
    """Wait until the audit log stops growing (nothing new for ``quiet`` s): (head, waited s)."""
    start = time.perf_counter()
    head = audit_head(db)
    last_change = start
    while time.perf_counter() - start < timeout:
        time.sleep(0.05)
        now = audit_head(db)
        if now != head:
            head, last_change = now, time.perf_counter()
        elif time.perf_counter() - last_change >= quiet:
            break
    return head, last_change - start


def check_reads(server: Server, picked: list[tuple[str, bytes]], headers: dict, label: str) -> None:
    _, got = sequential(server.port, ["/" + k for k, _ in picked[:20]], headers=headers)
    same = sum(g == b for g, (_, b) in zip(got, picked[:20]))
    log(f"enjournal returns the stored bytes for {same}/20 sampled reads ({label})")


def run(resources: int = 20000, seconds: int = 10, rate: float = 1000.0, database: Path | None = None,
        sample: int = 2000) -> dict:
    if not wrk_available():
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    db = database or build_db.build(resources)
    picked = sample_resources(db, sample)
    paths = ["/" + key for key, _ in picked]
    patient, own = patient_sample(db, sample)
    own_paths = ["/" + key for key, _ in own]
    bodies_file = OUT / "read-bodies.json"
    bodies_file.write_bytes(orjson.dumps({k: b.decode() for k, b in picked}))
    raw_db = OUT / "read-raw.db"
    build_db.remove_db(raw_db)
    conn = sqlite3.connect(raw_db)
    conn.execute("CREATE TABLE raw (key TEXT PRIMARY KEY, body BLOB)")
    conn.executemany("INSERT INTO raw VALUES (?,?)", picked)
    conn.commit()
    conn.close()
    n_res = sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("SELECT COUNT(*) FROM res").fetchone()[0]
    log(f"== read: GET /Type/id, 8 connections, {len(paths)} random ids of {n_res:,} resources in {db.name}, "
        f"and {len(own_paths)} of Patient/{patient}'s; {audit_head(db):,} audit rows before the run; {machine()}")
    results: dict = {"database": db.name, "resources": n_res, "ids": len(paths), "patient": patient,
                     "patient_ids": len(own_paths)}

    with enjournal_server(db, workers=2) as server:
        system = bearer(issue_token(db, server.port, "system"))
        gp = bearer(issue_token(db, server.port, "gp"), patient=patient)
        check_reads(server, picked, system, "system token")
        check_reads(server, own, gp, "GP, TREAT, X-Patient")
        results["enjournal"] = measure(server, paths, seconds, rate, system, db)
        results["enjournal_system_patient"] = measure(server, own_paths, seconds, rate, system, db)
        results["enjournal_gp"] = measure(server, own_paths, seconds, rate, gp, db)
    for mode in ("memory", "sqlite"):
        with baseline_server(mode, bodies_file, raw_db) as server:
            results[f"baseline_{mode}"] = measure(server, paths, seconds, rate)

    e, b, s = results["enjournal"], results["baseline_memory"], results["baseline_sqlite"]
    for key, label in (("enjournal_system_patient", "system token, one patient's ids"),
                       ("enjournal_gp", "GP persona (TREAT, X-Patient), same ids")):
        r = results[key]
        log(f"{label}: saturation {r['saturation']['rps']:,.0f} req/s "
            f"(ratio to system/random {r['saturation']['rps'] / e['saturation']['rps']:.2f}); steady "
            f"{rate:,.0f} req/s {fmt_ms(r['steady'])}, {r['steady']['errors']} errors; "
            f"{r['audit_rows_per_s']:,.0f} audit rows/s at saturation, backlog {r['audit_backlog_rows']:,} rows "
            f"written {r['audit_drain_s']:.2f} s after wrk stopped")
    rps = e["saturation"]["rps"]
    p99 = e["steady"]["p99"]
    log(f"saturation (wrk -t1 -c8, {seconds} s): enjournal {rps:,.0f} req/s "
        f"[target >= {TARGET_RPS:,.0f}: {'MET' if rps >= TARGET_RPS else f'MISSED ({rps / TARGET_RPS:.0%})'}]; "
        f"bare Starlette from memory {b['saturation']['rps']:,.0f} req/s (ratio {rps / b['saturation']['rps']:.2f}); "
        f"bare Starlette + SQLite {s['saturation']['rps']:,.0f} req/s (ratio {rps / s['saturation']['rps']:.2f}); "
        f"wrk used {e['saturation']['client_cpu_pct_of_core']:.0f}% of a core; "
        f"{e['audit_rows_per_s']:,.0f} audit rows/s while wrk ran ({e['audit_rows_per_request']:.2f} per request; "
        f"backlog {e['audit_backlog_rows']:,} rows written {e['audit_drain_s']:.2f} s after it stopped)")
    log("  wrk latency at saturation, enjournal: " +
        ", ".join(f"{k} {v:.2f} ms" for k, v in e["saturation"]["latency_ms"].items()))
    log(f"steady {rate:,.0f} req/s open loop ({seconds} s): enjournal {fmt_ms(e['steady'])}, "
        f"achieved {e['steady']['achieved_rps']:,.0f} req/s, {e['steady']['errors']} errors "
        f"[target p99 < {TARGET_P99_MS} ms: {'MET' if p99 < TARGET_P99_MS else f'MISSED ({p99 / TARGET_P99_MS:.1f}x)'}]")
    log(f"  baseline memory {fmt_ms(b['steady'])}; baseline sqlite {fmt_ms(s['steady'])}; "
        f"p99 ratio enjournal/memory {p99 / b['steady']['p99']:.2f}; "
        f"client used {e['steady']['client_cpu_pct_of_core']:.0f}% of a core")
    save_result("read", results)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description="GET by id benchmark")
    ap.add_argument("--resources", type=int, default=int(os.environ.get("BENCH_READ_RESOURCES", 20000)),
                    help="size of the database built for the run (ignored with --database)")
    ap.add_argument("--database", help="an existing enjournal SQLite file (e.g. bench/out/db-1000000.db)")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--sample", type=int, default=2000, help="ids to rotate over")
    args = ap.parse_args()
    run(args.resources, args.seconds, args.rate, Path(args.database) if args.database else None, args.sample)


if __name__ == "__main__":
    main()
