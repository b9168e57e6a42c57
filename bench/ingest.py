"""Ingest of Synthea transaction Bundles with every search parameter indexed.

    .venv/bin/python -m bench.ingest [--resources 20000] [--concurrency 2] [--profile]

Three figures from the same Bundles, in the same run, each into a fresh database file:

- in-process: ``BundleService.process`` on a ``Platform`` (parse + validate + extract + store),
  each Bundle in a fresh system access context, as one HTTP request would be: the guard
  checks nothing for a system and the Bundle's audit record is written in its transaction;
- in-process with the audit log off (``--audit-off``, bench only: the guard's ``audit`` set to
  None), to show what the write's audit record costs;
- over HTTP: each Bundle POSTed to ``enjournal serve --workers 2`` (``--concurrency`` clients)
  with a system token;
- baseline: the same JSON documents into one SQLite table (id, type, json) with ``executemany``
  in one transaction per Bundle, same pragmas (WAL, synchronous=FULL). Both sides parse the
  Bundle and serialise each resource, so the ratio is the price of FHIR semantics and indexes.

``--profile`` runs the in-process ingest once more under pyinstrument and prints the functions
with the most self time and the inclusive time of the main stages.
Target (issue): >= 2,000 resources/s.
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import threading
import time
from collections import defaultdict
from pathlib import Path

import orjson

from .build_db import remove_db
from .common import (OUT, audit_head, bearer, bundle_files, database_url, dataset_dir, enjournal_server,
                     entries_of, in_system_context, issue_token, log, machine, save_result)

TARGET = 2000.0


def pick_bundles(resources: int, dataset: Path | None = None) -> list[bytes]:
    """Whole patient Bundles, in file order, until ``resources`` entries are reached."""
    out, n = [], 0
    for f in bundle_files(dataset or dataset_dir()):
        raw = f.read_bytes()
        out.append(raw)
        n += entries_of(raw)
        if n >= resources:
            break
    return out


def fresh_db(name: str) -> Path:
    directory = Path(os.environ.get("BENCH_TMP") or OUT)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.db"
    remove_db(path)
    return path


# -- the three ways in ------------------------------------------------------------------------

def ingest_in_process(bundles: list[bytes], db: "Path | str", audit: bool = True) -> tuple[int, float]:
    from enjournal.app import Platform
    from enjournal.services.bundles import BundleService
    from enjournal.settings import Settings
    platform = Platform(Settings(database=database_url(db)))
    if not audit:
        platform.guard.audit = None         # bench only: the baseline without audit records
    service = BundleService(platform.resources)
    n = 0
    try:
        start = time.perf_counter()
        for raw in bundles:
            bundle = orjson.loads(raw)
            with in_system_context("bench ingest"):     # a fresh context per Bundle, like a request
                service.process(bundle, 1_000_000)
            n += len(bundle["entry"])
        return n, time.perf_counter() - start
    finally:
        platform.close()


def ingest_raw_sqlite(bundles: list[bytes], db: Path) -> tuple[int, float]:
    conn = sqlite3.connect(str(db), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE res (id TEXT NOT NULL, type TEXT NOT NULL, json BLOB NOT NULL)")
    n = 0
    try:
        start = time.perf_counter()
        for raw in bundles:
            bundle = orjson.loads(raw)
            rows = []
            for e in bundle["entry"]:
                r = e["resource"]
                rows.append((e.get("fullUrl") or r.get("id"), r["resourceType"], orjson.dumps(r)))
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO res (id, type, json) VALUES (?,?,?)", rows)
            conn.execute("COMMIT")
            n += len(rows)
        return n, time.perf_counter() - start
    finally:
        conn.close()


def fresh_pg(admin: str, name: str) -> str:
    """A new, empty PostgreSQL database ``name`` next to ``admin`` (the cluster's admin URL)."""
    import psycopg
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'")
    base, _, query = admin.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


def ingest_raw_pg_copy(bundles: list[bytes], url: str) -> tuple[int, float]:
    """The raw baseline on PostgreSQL: the same JSON documents, COPY into one table (id, type,
    json bytea), one transaction per Bundle (synchronous commit as the server is set)."""
    import psycopg
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE res (id text NOT NULL, type text NOT NULL, json bytea NOT NULL)")
        n = 0
        start = time.perf_counter()
        for raw in bundles:
            bundle = orjson.loads(raw)
            with conn.transaction(), conn.cursor() as cur, cur.copy("COPY res (id, type, json) FROM STDIN") as copy:
                for e in bundle["entry"]:
                    r = e["resource"]
                    copy.write_row((e.get("fullUrl") or r.get("id"), r["resourceType"], orjson.dumps(r)))
                    n += 1
        return n, time.perf_counter() - start


def run_postgres(admin: str, resources: int = 20000, concurrency: int = 2, http: bool = True,
                 dataset: Path | None = None) -> dict:
    """The ingest benchmark on PostgreSQL: in-process and over HTTP, against plain COPY."""
    bundles = pick_bundles(resources, dataset)
    total = sum(entries_of(b) for b in bundles)
    log(f"== ingest on PostgreSQL: {len(bundles)} Synthea transaction Bundles, {total:,} resources; {machine()}")
    result: dict = {"bundles": len(bundles), "resources": total, "backend": "postgresql"}
    n, dt = ingest_raw_pg_copy(bundles, fresh_pg(admin, "bench_ingest_raw"))
    raw = n / dt
    log(f"baseline plain COPY (id,type,json bytea; one COPY per bundle): {raw:,.0f} resources/s ({dt:.1f} s)")
    result["raw_copy_per_s"] = raw
    ingest_in_process(bundles[:1], fresh_pg(admin, "bench_ingest_warmup"))
    n, dt = ingest_in_process(bundles, fresh_pg(admin, "bench_ingest_inproc"))
    rate = n / dt
    log(f"in-process BundleService.process: {rate:,.0f} resources/s ({dt:.1f} s) target >= 1,500: "
        f"{'MET' if rate >= 1500 else 'MISSED'}; ratio enjournal/COPY = {rate / raw:.3f}")
    result["in_process_per_s"] = rate
    if http:
        n_http, dt, errs = ingest_http(bundles, fresh_pg(admin, "bench_ingest_http"), concurrency)
        rate_http = n_http / dt
        log(f"HTTP POST / (serve --workers 2, {concurrency} clients): {rate_http:,.0f} resources/s ({dt:.1f} s, "
            f"{errs} failed bundles) target >= 1,500: {'MET' if rate_http >= 1500 else 'MISSED'}; "
            f"ratio enjournal/COPY = {rate_http / raw:.3f}")
        result.update(http_per_s=rate_http, http_failed_bundles=errs)
    save_result("ingest-postgres", result)
    return result


def ingest_http(bundles: list[bytes], db: "Path | str", concurrency: int, workers: int = 2) -> tuple[int, float, int]:
    import httpx
    # schema created by `serve` itself before its workers start
    with enjournal_server(db, workers=workers) as server:
        headers = {"content-type": "application/fhir+json", **bearer(issue_token(db, server.port))}
        errors = []
        counts = [0] * concurrency
        queue = list(enumerate(bundles))
        lock = threading.Lock()

        def client(slot: int) -> None:
            with httpx.Client(base_url=server.url, timeout=600.0, headers=headers) as http:
                while True:
                    with lock:
                        if not queue:
                            return
                        _, raw = queue.pop(0)
                    r = http.post("/", content=raw)
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:300]}")
                        continue
                    counts[slot] += entries_of(raw)

        start = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
    for e in errors[:3]:
        log("  HTTP error:", e)
    return sum(counts), elapsed, len(errors)


# -- profile ------------------------------------------------------------------------------------

STAGES = ("process", "_transaction", "_entry", "_assign_ids", "_resolve", "_run", "create_in", "prepare",
          "validate_resource", "check_references", "put", "_index", "extract", "add_rows", "flush",
          "_pid_for_write", "loads", "dumps")


def profile_in_process(bundles: list[bytes], db: Path, top: int = 15) -> dict:
    from pyinstrument import Profiler
    profiler = Profiler(interval=0.0005)
    profiler.start()
    n, elapsed = ingest_in_process(bundles, db)
    profiler.stop()
    session = profiler.last_session
    root = session.root_frame()
    total = root.time
    self_time: dict[tuple, float] = defaultdict(float)
    incl: dict[str, float] = defaultdict(float)

    def walk(frame, active: frozenset) -> None:
        if frame.is_synthetic:
            return              # "[self]" and "[await]" leaves: already in the parent's self time
        name = frame.function
        if (not frame.file_path or frame.file_path.startswith("<")) and frame.parent is not None:
            # a builtin: say who called it
            name = f"{name} <- {frame.parent.function}"
        key = (name, _short(frame.file_path), frame.line_no)
        self_time[key] += frame.total_self_time
        name = frame.function
        if name in STAGES and name not in active:
            incl[name] += frame.time
            active = active | {name}
        for child in frame.children:
            walk(child, active)

    walk(root, frozenset())
    hot = sorted(self_time.items(), key=lambda kv: -kv[1])[:top]
    out = {"resources": n, "seconds": elapsed, "total_profiled_s": total,
           "self": [{"function": f, "where": f"{p}:{ln}", "pct": 100 * t / total} for (f, p, ln), t in hot],
           "inclusive": {k: 100 * v / total for k, v in sorted(incl.items(), key=lambda kv: -kv[1])}}
    text = profiler.output_text(unicode=True, color=False, show_all=False)
    (OUT / "ingest-profile.txt").write_text(text)
    try:
        (OUT / "ingest-profile.html").write_text(profiler.output_html())
    except Exception:   # html renderer is a nicety
        pass
    return out


def _short(path: str | None) -> str:
    if not path:
        return "?"
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


# -- main ---------------------------------------------------------------------------------------

def run(resources: int = 20000, concurrency: int = 2, profile: bool = False, http: bool = True,
        dataset: Path | None = None, audit_off: bool = True) -> dict:
    bundles = pick_bundles(resources, dataset)
    total = sum(entries_of(b) for b in bundles)
    log(f"== ingest: {len(bundles)} Synthea transaction Bundles, {total:,} resources "
        f"({sum(map(len, bundles)) / 2**20:.0f} MB); {machine()}")
    result: dict = {"bundles": len(bundles), "resources": total}

    n, dt = ingest_raw_sqlite(bundles, fresh_db("ingest-raw"))
    raw_rate = n / dt
    log(f"baseline raw SQLite (id,type,json; executemany per bundle): {raw_rate:,.0f} resources/s ({dt:.1f} s)")
    result["raw_sqlite_per_s"] = raw_rate

    # warm up this process (compiled extractors, validation schemas, caches) so that the first
    # measured run does not pay for what the second one (audit off) then gets for free
    ingest_in_process(bundles[:1], fresh_db("ingest-warmup"))
    db = fresh_db("ingest-inproc")
    n, dt = ingest_in_process(bundles, db)
    rate = n / dt
    rows = audit_head(db)
    log(f"in-process BundleService.process: {rate:,.0f} resources/s ({dt:.1f} s) "
        f"target >= {TARGET:,.0f}: {'MET' if rate >= TARGET else f'MISSED ({rate / TARGET:.0%} of target)'}; "
        f"{raw_rate / rate:.1f}x slower than raw SQLite (ratio enjournal/raw = {rate / raw_rate:.3f}); "
        f"{rows} audit rows written")
    result["in_process_per_s"] = rate
    result["in_process_audit_rows"] = rows

    if audit_off:
        n, dt = ingest_in_process(bundles, fresh_db("ingest-inproc-noaudit"), audit=False)
        rate_off = n / dt
        log(f"in-process, audit log off (bench only): {rate_off:,.0f} resources/s ({dt:.1f} s); "
            f"ratio audit on/off = {rate / rate_off:.3f}")
        result["in_process_audit_off_per_s"] = rate_off

    if http:
        n_http, dt, errs = ingest_http(bundles, fresh_db("ingest-http"), concurrency)
        rate_http = n_http / dt
        log(f"HTTP POST / (serve --workers 2, {concurrency} client{'s' if concurrency > 1 else ''}, system token): "
            f"{rate_http:,.0f} resources/s ({dt:.1f} s, {errs} failed bundles) "
            f"target >= {TARGET:,.0f}: {'MET' if rate_http >= TARGET else f'MISSED ({rate_http / TARGET:.0%} of target)'}; "
            f"ratio enjournal/raw = {rate_http / raw_rate:.3f}")
        result.update(http_per_s=rate_http, http_failed_bundles=errs, http_clients=concurrency)

    if profile:
        sample = bundles[:max(1, len(bundles) // 2)]
        prof = profile_in_process(sample, fresh_db("ingest-profile"))
        log(f"profile (pyinstrument, {prof['resources']:,} resources in-process; full tree in "
            f"bench/out/ingest-profile.txt):")
        log("  inclusive time of stages: " + ", ".join(f"{k} {v:.0f}%" for k, v in prof["inclusive"].items()))
        log("  top self time:")
        for h in prof["self"]:
            log(f"    {h['pct']:5.1f}%  {h['function']}  ({h['where']})")
        result["profile"] = prof
    save_result("ingest", result)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description="ingest benchmark")
    ap.add_argument("--resources", type=int, default=int(os.environ.get("BENCH_INGEST_RESOURCES", 20000)))
    ap.add_argument("--concurrency", type=int, default=2, help="HTTP clients posting Bundles at once")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--no-http", action="store_true")
    ap.add_argument("--no-audit-off", action="store_true",
                    help="skip the in-process run with the audit log off (the audit cost baseline)")
    ap.add_argument("--dataset")
    ap.add_argument("--postgres", help="admin URL of a PostgreSQL cluster: run the benchmark there")
    args = ap.parse_args()
    if args.postgres:
        run_postgres(args.postgres, args.resources, args.concurrency, not args.no_http,
                     Path(args.dataset) if args.dataset else None)
        return
    run(args.resources, args.concurrency, args.profile, not args.no_http,
        Path(args.dataset) if args.dataset else None, not args.no_audit_off)


if __name__ == "__main__":
    main()
