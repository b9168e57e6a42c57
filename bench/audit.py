"""What the audit log costs (issue 3: "Audit writes must not halve throughput: batch them;
report the cost").

    .venv/bin/python -m bench.audit [--database bench/out/db-1000000.db] [--seconds 10] [--rounds 2]

Two parts, in the same run:

1. Per event, in-process. Real access contexts are captured by sending requests through the
   served application (``build_asgi``) in-process with a recorder in place of its audit log:
   system reads, GP reads (``X-Purpose-Of-Use: TREAT``, ``X-Patient``) and GP searches of 20
   resources. Then, into a fresh database, ``AuditLog.record`` (what a request pays: queue the
   context) and ``AuditLog.flush`` in batches of 500 (what the background thread pays: build
   the AuditEvents, hash-chain and append them, commit), in µs per event, with the part of
   the flush that is building the events and the part that is ``append_audit``.

2. GET by id over HTTP with the audit log on and off. The same application, as ``enjournal
   serve --workers 2`` runs it, from the bench-only factory ``bench/audit_app.py``, which for
   the baseline sets the authentication middleware's ``audit`` to None (the product has no
   such switch). Per round, one server with audit on and one with it off (the order
   alternates between rounds), each measured with a system token over 2,000 random ids and
   with the GP persona over 2,000 ids of one patient: ``wrk -t1 -c8`` at saturation and the
   open loop at 1,000 requests/s. Reports the ratios on/off and the audit rows written per
   second (read from the database before and after each saturation run).
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from . import build_db
from .common import (OUT, audit_head, audit_switch_server, bearer, fmt_ms, issue_token, log, machine,
                     save_result)
from .loadgen import wrk_available
from .read import measure, patient_sample, sample_resources

BATCH = 500       # AuditLog's default batch


# -- 1. per event ------------------------------------------------------------------------------

class _Recorder:
    """Stands in for the AuditLog: keeps the contexts the middleware hands over."""

    def __init__(self) -> None:
        self.contexts: list = []

    def record(self, ctx) -> None:
        self.contexts.append(ctx)


def capture_contexts(db: Path, system_paths: list[str], patient: str, gp_paths: list[str],
                     searches: list[str]) -> dict[str, list]:
    """Access contexts of real requests through ``build_asgi`` (in-process, no sockets)."""
    from enjournal.app import build_asgi
    from enjournal.settings import Settings

    settings = Settings(database=f"sqlite:///{db}", host="127.0.0.1", port=8080)
    app = build_asgi(settings)
    platform = app.state.platform
    real_audit = app.audit
    recorder = _Recorder()
    app.audit = recorder
    system = bearer(platform.provider.issue("system"))
    gp = bearer(platform.provider.issue("gp"), patient=patient)

    async def call(target: str, headers: dict) -> int:
        path, _, query = target.partition("?")
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
                 "query_string": query.encode(), "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 40000),
                 "headers": [(b"host", b"127.0.0.1:8080"), (b"accept", b"application/fhir+json")]
                 + [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
        status = [0]

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]

        await app(scope, receive, send)
        return status[0]

    async def run(paths: list[str], headers: dict) -> list:
        start = len(recorder.contexts)
        bad = 0
        for p in paths:
            if await call(p, headers) != 200:
                bad += 1
        if bad:
            log(f"  WARNING: {bad} of {len(paths)} captured requests did not answer 200")
        return recorder.contexts[start:]

    try:
        out = {"system read": asyncio.run(run(system_paths, system)),
               "GP read": asyncio.run(run(gp_paths, gp)),
               "GP search (20 resources)": asyncio.run(run(searches, gp))}
    finally:
        app.audit = real_audit
        platform.close()
    return out


def per_event_costs(contexts: list, repeat: int = 3) -> dict:
    """µs per event of record(), flush() (in batches of 500), and of flush's two parts."""
    from enjournal.access.audit import AuditLog, EventBuilder
    from enjournal.fhir.searchparams import Registry
    from enjournal.store import open_repository

    registry = Registry.default()
    n = len(contexts)
    runs = []
    for k in range(repeat):
        path = OUT / f"audit-micro-{k}.db"
        build_db.remove_db(path)
        repo = open_repository(f"sqlite:///{path}", registry)
        audit = AuditLog(repo, flush_ms=10_000_000, batch=10 ** 9, max_queue=10 ** 9)   # flushed by hand
        record = flush = 0.0
        rows = 0
        for i in range(0, n, BATCH):
            chunk = contexts[i:i + BATCH]
            t0 = time.perf_counter()
            for ctx in chunk:
                audit.record(ctx)
            t1 = time.perf_counter()
            rows += audit.flush()
            flush += time.perf_counter() - t1
            record += t1 - t0
        audit.close()
        # the two parts of a flush, separately: building the rows, then appending them
        builder = EventBuilder()
        t0 = time.perf_counter()
        built = [row for ctx in contexts for row in builder.rows(ctx, 1_790_000_000_000 + k)]
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(0, len(built), BATCH):
            repo.append_audit(built[i:i + BATCH])
        append = time.perf_counter() - t0
        body = sum(len(r[3]) for r in built) / len(built)
        repo.close()
        build_db.remove_db(path)
        runs.append({"record_us": 1e6 * record / n, "flush_us": 1e6 * flush / n, "build_us": 1e6 * build / n,
                     "append_us": 1e6 * append / n, "rows_per_event": rows / n, "body_bytes": body})
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]} | {"events": n, "repeat": repeat}


def search_paths(db: Path, patient: str, n: int) -> list[str]:
    """GP searches that touch 20 resources each: ``Observation?patient=X&_count=20&_offset=k``."""
    return [f"/Observation?patient=Patient/{patient}&_count=20&_offset={20 * (k % 10)}" for k in range(n)]


# -- 2. over HTTP ------------------------------------------------------------------------------

def http_round(db: Path, audit: bool, paths: list[str], patient: str, gp_paths: list[str], seconds: int,
               rate: float, workers: int = 2) -> dict:
    with audit_switch_server(db, audit, workers=workers) as server:
        system = bearer(issue_token(db, server.port, "system"))
        gp = bearer(issue_token(db, server.port, "gp"), patient=patient)
        return {"system": measure(server, paths, seconds, rate, system, db, workers),
                "gp": measure(server, gp_paths, seconds, rate, gp, db, workers)}


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run(database: Path | None = None, resources: int = 20000, seconds: int = 10, rate: float = 1000.0,
        rounds: int = 2, sample: int = 2000, events: int = 2000, http: bool = True, workers: int = 2,
        micro: bool = True) -> dict:
    db = database or build_db.build(resources)
    picked = sample_resources(db, sample)
    paths = ["/" + k for k, _ in picked]
    patient, own = patient_sample(db, sample)
    gp_paths = ["/" + k for k, _ in own]
    log(f"== audit: {db.name}, patient {patient} ({len(gp_paths)} ids); {audit_head(db):,} audit rows "
        f"before the run; {machine()}")
    result: dict = {"database": db.name, "patient": patient, "workers": workers}

    contexts = capture_contexts(db, paths[:events], patient, gp_paths[:events],
                                search_paths(db, patient, events // 4)) if micro else {}
    costs = {}
    for kind, ctxs in contexts.items():
        c = costs[kind] = per_event_costs(ctxs)
        log(f"{kind}: record() {c['record_us']:.2f} µs/event (on the request); flush {c['flush_us']:.1f} µs/event "
            f"in batches of {BATCH} (background thread: build {c['build_us']:.1f} + append/hash/commit "
            f"{c['append_us']:.1f}); {c['rows_per_event']:.2f} rows/event of {c['body_bytes']:.0f} bytes; "
            f"n={c['events']}, median of {c['repeat']}")
    result["per_event"] = costs

    if http:
        if not wrk_available():
            raise SystemExit("wrk is needed: apt-get install -y wrk")
        runs: list[dict] = []
        for r in range(rounds):
            order = (True, False) if r % 2 == 0 else (False, True)
            for audit in order:
                m = http_round(db, audit, paths, patient, gp_paths, seconds, rate, workers)
                m["audit"] = audit
                m["round"] = r
                runs.append(m)
                for who in ("system", "gp"):
                    x = m[who]
                    log(f"  round {r + 1} audit {'on ' if audit else 'off'} {who:<6}: {x['saturation']['rps']:,.0f} req/s "
                        f"(connections {x['saturation']['connection_split']}, server CPU "
                        f"{x['saturation']['server_cpu_us_per_request']:.0f} µs/request), steady {fmt_ms(x['steady'])} "
                        f"(connections {x['steady']['connection_split']}), {x['audit_rows_per_s']:,.0f} audit rows/s")
        result["http_runs"] = runs
        summary = {}
        for who in ("system", "gp"):
            on = [m[who] for m in runs if m["audit"]]
            off = [m[who] for m in runs if not m["audit"]]
            s = summary[who] = {
                "rps_on": _med([x["saturation"]["rps"] for x in on]),
                "rps_off": _med([x["saturation"]["rps"] for x in off]),
                "p50_on": _med([x["steady"]["p50"] for x in on]), "p50_off": _med([x["steady"]["p50"] for x in off]),
                "p99_on": _med([x["steady"]["p99"] for x in on]), "p99_off": _med([x["steady"]["p99"] for x in off]),
                "rows_per_s_on": _med([x["audit_rows_per_s"] for x in on]),
                "rows_per_s_off": _med([x["audit_rows_per_s"] for x in off]),
                "cpu_us_on": _med([x["saturation"]["server_cpu_us_per_request"] for x in on]),
                "cpu_us_off": _med([x["saturation"]["server_cpu_us_per_request"] for x in off]),
                "steady_cpu_us_on": _med([x["steady"]["server_cpu_us_per_request"] for x in on]),
                "steady_cpu_us_off": _med([x["steady"]["server_cpu_us_per_request"] for x in off]),
                "rps_on_all": [x["saturation"]["rps"] for x in on],
                "rps_off_all": [x["saturation"]["rps"] for x in off],
            }
            s["rps_ratio"] = s["rps_on"] / s["rps_off"]
            s["p99_ratio"] = s["p99_on"] / s["p99_off"]
            log(f"{who}: saturation audit on {s['rps_on']:,.0f} req/s vs off {s['rps_off']:,.0f} "
                f"(ratio on/off {s['rps_ratio']:.2f}; runs on {', '.join(f'{v:,.0f}' for v in s['rps_on_all'])}, "
                f"off {', '.join(f'{v:,.0f}' for v in s['rps_off_all'])}); steady {rate:,.0f} req/s p50 "
                f"{s['p50_on']:.2f} vs {s['p50_off']:.2f} ms, p99 {s['p99_on']:.2f} vs {s['p99_off']:.2f} ms "
                f"(ratio {s['p99_ratio']:.2f}); audit rows/s at saturation {s['rows_per_s_on']:,.0f} "
                f"(off: {s['rows_per_s_off']:,.0f}); server CPU per request at saturation {s['cpu_us_on']:.0f} vs "
                f"{s['cpu_us_off']:.0f} µs (+{s['cpu_us_on'] - s['cpu_us_off']:.0f}), at {rate:,.0f} req/s "
                f"{s['steady_cpu_us_on']:.0f} vs {s['steady_cpu_us_off']:.0f} µs [target: audit must not halve throughput: "
                f"{'MET' if s['rps_ratio'] > 0.5 else 'MISSED'}]")
        result["http"] = summary
    result["audit_rows_after"] = audit_head(db)
    save_result("audit" if workers == 2 else f"audit-{workers}w", result)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description="audit log cost benchmark")
    ap.add_argument("--database", help="an existing enjournal SQLite file (e.g. bench/out/db-1000000.db)")
    ap.add_argument("--resources", type=int, default=20000, help="database built when --database is not given")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--rounds", type=int, default=2, help="on/off pairs over HTTP (order alternates)")
    ap.add_argument("--events", type=int, default=2000, help="contexts per kind for the per-event costs")
    ap.add_argument("--workers", type=int, default=2, help="uvicorn workers of the servers")
    ap.add_argument("--no-http", action="store_true")
    ap.add_argument("--no-micro", action="store_true", help="skip the per-event costs")
    args = ap.parse_args()
    run(Path(args.database) if args.database else None, args.resources, args.seconds, args.rate, args.rounds,
        events=args.events, http=not args.no_http, workers=args.workers, micro=not args.no_micro)


if __name__ == "__main__":
    main()
