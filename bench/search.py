"""Typical clinical searches, in-process (``ResourceService.search``) and over HTTP.

    .venv/bin/python -m bench.search [--database bench/out/db-1000000.db] [--patients 40]

Queries (default page size, so at most 20 resources per answer):

- ``Observation?subject=Patient/X&code=http://loinc.org|8867-4&_sort=-date``
- ``Condition?patient=Patient/X``
- ``MedicationRequest?patient=Patient/X&status=<a status the patient has>``
- ``Patient?name=<family>&birthdate=<birthDate>``

Each search runs as two callers (docs/access.md), each search in a fresh access context as
one request would have:

- ``system``: a system client (no restriction);
- ``gp``: the GP persona (health personnel, ``X-Purpose-Of-Use: TREAT``, ``X-Patient`` = the
  searched patient): the guard decides for the patient (facts cache, ``decide``) and adds
  the patient's compartment clause to the search (``Patient?...`` gets ``_id``).

In-process, the GP's subject is built by the authentication middleware itself from a token
of the built-in provider and the headers; over HTTP both send bearer tokens.

Targets (issue, at 1 million resources): p50 < 3 ms, p95 < 15 ms.
Baseline ("raw engine"): the SQL statements the store ran for the same search, captured with
``set_trace_callback`` and replayed on a plain ``sqlite3`` connection to the same file, so
the ratio is the cost of parsing, planning and Python around the database work.
"""
from __future__ import annotations

import argparse
import os
import random
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import orjson

from . import build_db
from .common import bearer, enjournal_server, fmt_ms, issue_token, log, machine, save_result, summarize_ms
from .loadgen import sequential

TARGET_P50_MS, TARGET_P95_MS = 3.0, 15.0
LOINC_HR = "http://loinc.org|8867-4"


def default_database(resources: int) -> Path:
    big = build_db.db_path(1_000_000)
    if resources >= 1_000_000 and big.exists():
        return big
    return build_db.build(resources)


PERSONAS = ("system", "gp")


def pick_queries(db: Path, patients: int, seed: int = 11) -> dict[str, list[tuple[str, list, str]]]:
    """Per query kind, (type, params, patient id) for ``patients`` random patients that have data."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = conn.execute("SELECT r.id, h.body FROM res r JOIN hist h ON h.seq = r.seq "
                        "WHERE r.type = 'Patient' AND r.deleted = 0").fetchall()
    random.Random(seed).shuffle(rows)
    rows = rows[:patients]
    status_of: dict[str, str] = {}
    for pid, _ in rows:
        row = conn.execute(
            "SELECT t.code FROM ix_ref x JOIN res r ON r.rk = x.rk AND r.type = 'MedicationRequest' "
            "JOIN ix_tok t ON t.rk = x.rk JOIN sp ON sp.pid = t.pid AND sp.url LIKE '%MedicationRequest-status' "
            "WHERE x.tid = ? AND x.ttype = 'Patient' LIMIT 1", (pid,)).fetchone()
        status_of[pid] = row[0] if row else "active"
    conn.close()
    return queries_of(rows, status_of)


def queries_of(rows: list, status_of: dict) -> dict[str, list[tuple[str, list, str]]]:
    """The four query kinds for each (patient id, Patient JSON) in ``rows``."""
    out: dict[str, list] = {"observation": [], "condition": [], "medicationrequest": [], "patient": []}
    for pid, body in rows:
        patient = orjson.loads(body)
        out["observation"].append(("Observation", [("subject", f"Patient/{pid}"), ("code", LOINC_HR),
                                                   ("_sort", "-date")], pid))
        out["condition"].append(("Condition", [("patient", f"Patient/{pid}")], pid))
        out["medicationrequest"].append(("MedicationRequest", [("patient", f"Patient/{pid}"),
                                                               ("status", status_of[pid])], pid))
        family = (patient.get("name") or [{}])[0].get("family", "")
        out["patient"].append(("Patient", [("name", family), ("birthdate", patient.get("birthDate", ""))], pid))
    return out


def query_path(type_: str, params: list) -> str:
    return f"/{type_}?" + urlencode(params, quote_via=quote, safe="/")


class Callers:
    """Access contexts for in-process searches, as the web layer builds them per request."""

    def __init__(self, platform, settings):
        from enjournal.access.claims import principal_from_claims
        from enjournal.access.tokens import Issuer
        from enjournal.access.tokens import from_settings as verifier_from_settings
        from enjournal.services.personas import demo_provider
        from enjournal.web.auth import Authenticate
        provider = demo_provider(settings, platform.store)
        verifier = verifier_from_settings(settings, [Issuer(provider.issuer, keys=provider.key_set())])
        self.auth = Authenticate(None, verifier, principal_from_claims, platform.facts, None)
        self.tokens = {"system": provider.issue("system"), "gp": provider.issue("gp")}
        self.subjects: dict = {}

    def context(self, persona: str, type_: str, params: list, pid: str):
        from enjournal.access.context import AccessContext
        key = (persona, pid if persona != "system" else None)
        subject = self.subjects.get(key)
        if subject is None:
            headers = {"authorization": f"Bearer {self.tokens[persona]}"}
            if persona != "system":
                headers.update({"x-purpose-of-use": "TREAT", "x-patient": f"Patient/{pid}"})
            subject = self.subjects[key] = self.auth.subject(headers)
        return AccessContext(subject, "GET", f"/{type_}", urlencode(params), "search-type", "127.0.0.1")


def in_process(db: Path, queries: dict, repeat: int, personas: tuple = PERSONAS) -> tuple[dict, dict, dict]:
    """(service latency, raw SQL replay latency, matches) per persona and query kind."""
    from enjournal.access.context import use
    from enjournal.app import Platform
    from enjournal.settings import Settings
    settings = Settings(database=f"sqlite:///{db}")
    platform = Platform(settings)
    service = platform.resources
    callers = Callers(platform, settings)
    conn = platform.store._reading().conn      # this thread's reader, whose statements are traced
    captured: list[str] = []
    svc: dict = {}
    raw: dict = {}
    hits: dict = {}
    replay = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    for pragma in ("cache_size=-65536", "mmap_size=1073741824", "temp_store=MEMORY"):
        replay.execute(f"PRAGMA {pragma}")
    try:
        for persona in personas:
            for kind, qs in queries.items():
                times, rtimes, counts = [], [], []
                statements: list[list[str]] = []
                for t, params, pid in qs:          # warm up, and capture the SQL of each search
                    captured.clear()
                    conn.set_trace_callback(captured.append)
                    with use(callers.context(persona, t, params, pid)):
                        result = service.search(t, params)
                    conn.set_trace_callback(None)
                    statements.append([s for s in captured if s.lstrip().upper().startswith("SELECT")])
                    counts.append(len(result.matches))
                for _ in range(repeat):
                    for t, params, pid in qs:
                        start = time.perf_counter()
                        with use(callers.context(persona, t, params, pid)):
                            service.search(t, params)
                        times.append(time.perf_counter() - start)
                    for stmts in statements:
                        start = time.perf_counter()
                        for s in stmts:
                            replay.execute(s).fetchall()
                        rtimes.append(time.perf_counter() - start)
                key = f"{persona}/{kind}"
                svc[key], raw[key] = summarize_ms(times), summarize_ms(rtimes)
                hits[key] = {"mean_matches": sum(counts) / len(counts), "empty": counts.count(0)}
    finally:
        replay.close()
        platform.close()
    return svc, raw, hits


def over_http(db: Path, queries: dict, repeat: int, personas: tuple = PERSONAS) -> dict:
    out = {}
    with enjournal_server(db, workers=2) as server:
        tokens = {p: issue_token(db, server.port, p) for p in personas}
        for persona in personas:
            for kind, qs in queries.items():
                paths = [(query_path(t, p), bearer(tokens[persona], None if persona == "system" else pid))
                         for t, p, pid in qs]
                sequential(server.port, paths, 1)                       # warm up both workers
                times, _ = sequential(server.port, paths, repeat)
                out[f"{persona}/{kind}"] = summarize_ms(times)
    return out


def verdict(stats: dict) -> str:
    ok = stats["p50"] < TARGET_P50_MS and stats["p95"] < TARGET_P95_MS
    if ok:
        return "MET"
    return (f"MISSED (p50 {stats['p50'] / TARGET_P50_MS:.1f}x, p95 {stats['p95'] / TARGET_P95_MS:.1f}x "
            f"of target)")


def run(resources: int = 100_000, patients: int = 40, repeat: int = 3, database: Path | None = None,
        http: bool = True) -> dict:
    db = database or default_database(resources)
    n_res = sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute(
        "SELECT COUNT(*) FROM res WHERE deleted = 0").fetchone()[0]
    queries = pick_queries(db, patients)
    log(f"== search: {n_res:,} resources in {db.name}, {len(queries['patient'])} random patients x {repeat} "
        f"repeats per query kind; {machine()}")
    svc, raw, hits = in_process(db, queries, repeat)
    results: dict = {"database": db.name, "resources": n_res, "in_process": svc, "raw_sql": raw, "matches": hits}
    web = over_http(db, queries, repeat) if http else {}
    results["http"] = web
    examples = {k: query_path(*v[0][:2]) for k, v in queries.items()}
    for kind in queries:
        log(f"{kind}: e.g. {examples[kind]}")
        for persona in PERSONAS:
            key = f"{persona}/{kind}"
            log(f"  {persona:<6} ({hits[key]['mean_matches']:.1f} matches on the page, {hits[key]['empty']} empty)")
            log(f"    in-process  {fmt_ms(svc[key])}  [{verdict(svc[key])}]"
                + (f"  (p50 ratio gp/system {svc[key]['p50'] / svc['system/' + kind]['p50']:.2f})"
                   if persona != "system" else ""))
            log(f"    raw SQL     {fmt_ms(raw[key])}  (ratio service/raw p50 "
                f"{svc[key]['p50'] / max(raw[key]['p50'], 1e-6):.1f})")
            if web:
                log(f"    HTTP        {fmt_ms(web[key])}  [{verdict(web[key])}]")
    results["examples"] = examples
    save_result("search", results)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description="clinical search benchmark")
    ap.add_argument("--resources", type=int, default=int(os.environ.get("BENCH_SEARCH_RESOURCES", 100_000)),
                    help="database size to build (1000000 uses bench/out/db-1000000.db when built)")
    ap.add_argument("--database")
    ap.add_argument("--patients", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-http", action="store_true")
    args = ap.parse_args()
    run(args.resources, args.patients, args.repeat, Path(args.database) if args.database else None,
        not args.no_http)


if __name__ == "__main__":
    main()
