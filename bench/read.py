"""GET by id over HTTP with 8 concurrent connections.

    .venv/bin/python -m bench.read [--resources 20000] [--seconds 10] [--database PATH]

Starts ``enjournal serve --workers 2`` on a free loopback port over a Synthea database, and
as baselines, in the same run, bare Starlette apps (2 uvicorn workers) returning the same
bytes: from memory (``baseline``) and from a one-table SQLite file (``raw sqlite``).

- saturation: ``wrk -t1 -c8`` rotating over 2,000 random ids; target >= 3,000 requests/s;
- steady 1,000 requests/s: open-loop asyncio client (``loadgen.open_loop``), latency from the
  scheduled send time; target p99 < 5 ms.
"""
from __future__ import annotations

import argparse
import os
import random
import sqlite3
from pathlib import Path

import orjson

from . import build_db
from .common import OUT, PYTHON, ROOT, Server, enjournal_server, fmt_ms, free_port, log, machine, save_result
from .loadgen import open_loop, sequential, wrk_available, wrk_saturate

TARGET_RPS = 3000.0
TARGET_P99_MS = 5.0


def sample_resources(db: Path, n: int, seed: int = 7) -> list[tuple[str, bytes]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = conn.execute("SELECT r.type, r.id, h.body FROM res r JOIN hist h ON h.seq = r.seq "
                        "WHERE r.deleted = 0").fetchall()
    conn.close()
    random.Random(seed).shuffle(rows)
    return [(f"{t}/{i}", b) for t, i, b in rows[:n]]


def baseline_server(mode: str, bodies_file: Path, raw_db: Path) -> Server:
    port = free_port()
    env = {"BENCH_BASELINE_BODIES": str(bodies_file), "PYTHONPATH": str(ROOT)}
    if mode == "sqlite":
        env["BENCH_BASELINE_DB"] = str(raw_db)
    argv = [PYTHON, "-m", "uvicorn", "bench.baseline_app:create", "--factory", "--workers", "2",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    return Server(argv, port, env=env, name=f"baseline-{mode}")


def measure(server: Server, paths: list[str], seconds: int, rate: float) -> dict:
    # warm up (connections, statement caches, page cache)
    wrk_saturate(server.url, paths, 8, 2)
    sat = wrk_saturate(server.url, paths, 8, seconds)
    steady = open_loop(server.port, paths, rate, seconds, 8)
    sat.pop("raw", None)
    return {"saturation": sat, "steady": steady}


def run(resources: int = 20000, seconds: int = 10, rate: float = 1000.0, database: Path | None = None,
        sample: int = 2000) -> dict:
    if not wrk_available():
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    db = database or build_db.build(resources)
    picked = sample_resources(db, sample)
    paths = ["/" + key for key, _ in picked]
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
    log(f"== read: GET /Type/id, 8 connections, {len(paths)} random ids of {n_res:,} resources in {db.name}; "
        f"{machine()}")
    results: dict = {"database": db.name, "resources": n_res, "ids": len(paths)}

    with enjournal_server(db, workers=2) as server:
        _, got = sequential(server.port, paths[:20])
        same = sum(g == b for g, (_, b) in zip(got, picked[:20]))
        log(f"enjournal returns the stored bytes for {same}/20 sampled reads")
        results["enjournal"] = measure(server, paths, seconds, rate)
    for mode in ("memory", "sqlite"):
        with baseline_server(mode, bodies_file, raw_db) as server:
            results[f"baseline_{mode}"] = measure(server, paths, seconds, rate)

    e, b, s = results["enjournal"], results["baseline_memory"], results["baseline_sqlite"]
    rps = e["saturation"]["rps"]
    p99 = e["steady"]["p99"]
    log(f"saturation (wrk -t1 -c8, {seconds} s): enjournal {rps:,.0f} req/s "
        f"[target >= {TARGET_RPS:,.0f}: {'MET' if rps >= TARGET_RPS else f'MISSED ({rps / TARGET_RPS:.0%})'}]; "
        f"bare Starlette from memory {b['saturation']['rps']:,.0f} req/s (ratio {rps / b['saturation']['rps']:.2f}); "
        f"bare Starlette + SQLite {s['saturation']['rps']:,.0f} req/s (ratio {rps / s['saturation']['rps']:.2f}); "
        f"wrk used {e['saturation']['client_cpu_pct_of_core']:.0f}% of a core")
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
    args = ap.parse_args()
    run(args.resources, args.seconds, args.rate, Path(args.database) if args.database else None)


if __name__ == "__main__":
    main()
