"""The read, search, size and $export benchmarks on a PostgreSQL database (issue 4).

    .venv/bin/python -m bench.build_db --resources 1000000 --postgres URL    # once
    .venv/bin/python -m bench.postgres --database URL

Figures (printed, and saved in bench/out/postgres.json):

- sizes: bytes per resource in tables and in indexes (pg_total_relation_size per table);
- GET by id over HTTP (``enjournal serve --workers 2``, system token): wrk at saturation and
  p50/p99 at a steady 1,000 req/s; raw baseline: the same lookups as plain psycopg queries
  from two threads (the engine alone), as a ratio;
- searches in-process (the service with the guard, as the web layer calls it), p50/p99 per
  query kind for a system and for a GP with attestation;
- ``Patient/$everything`` of the patient whose compartment is closest to 3,000 resources:
  the first page in-process and over HTTP, and all of it in-process (``bench.everything``);
- ``$export`` of the whole database over HTTP, as ``bench.export`` measures it (kick-off, poll,
  download every file), against one plain SELECT of the bodies into one file.
- ``$export`` of one Observation code with ``_typeFilter``, against one plain SELECT of the
  same bodies that seeks the code's index rows.
"""
from __future__ import annotations

import argparse
import random
import threading
import time

import httpx
import psycopg

from .common import bearer, enjournal_server, issue_token, log, machine, save_result, summarize_ms
from .export import http_export, raw_export
from .read import measure
from .search import PERSONAS, Callers, queries_of



CLINICAL_CODE = "http://hl7.org/fhir/SearchParameter/clinical-code"


def type_filter_export(url: str, code: str = "8867-4") -> dict:
    """``$export?_type=Observation&_typeFilter=Observation?code=http://loinc.org|<code>`` (heart
    rate, ~6 % of the Observations in Synthea data) against one plain SELECT of the same
    bodies that seeks the code's index rows."""
    with psycopg.connect(url) as conn:
        pid = conn.execute("SELECT pid FROM sp WHERE url = %s", (f"Observation|{CLINICAL_CODE}",)).fetchone()
    if pid is None:
        log("type filter: no Observation code index here")
        return {}
    extra = (f"r.rk IN (SELECT rk FROM ix_tok WHERE pid = {int(pid[0])} AND sys = 'http://loinc.org' "
             f"AND code = '{code}')")
    raw = raw_export(url, ("Observation",), extra)
    exported = http_export(url, 2, ("Observation",), {"_typeFilter": f"Observation?code=http://loinc.org|{code}"})
    assert exported["resources"] == raw["resources"], (exported["resources"], raw["resources"])
    exported["ratio_to_raw"] = exported["per_s"] / raw["per_s"]
    log(f"$export with _typeFilter (Observation code {code}): {exported['resources']:,} resources in "
        f"{exported['seconds']:.2f} s, {exported['per_s']:,.0f}/s; the plain SELECT seeking the code "
        f"{raw['seconds']:.2f} s (ratio {exported['ratio_to_raw']:.2f})")
    return {"export": exported, "raw": raw}


def sizes(url: str) -> dict:
    with psycopg.connect(url) as conn:
        resources = conn.execute("SELECT COUNT(*) FROM res").fetchone()[0]
        versions = conn.execute("SELECT COUNT(*) FROM hist").fetchone()[0]
        audit = conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
        rows = conn.execute(
            "SELECT c.relname, pg_table_size(c.oid), pg_indexes_size(c.oid) FROM pg_class c "
            "WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace ORDER BY 2 DESC").fetchall()
    tables = {name: {"table_mb": t / 2**20, "index_mb": i / 2**20} for name, t, i in rows}
    data = [r for r in rows if r[0] != "audit"]
    out = {"resources": resources, "versions": versions, "audit_rows": audit, "tables": tables,
           "table_bytes_per_resource": sum(r[1] for r in data) / max(1, resources),
           "index_bytes_per_resource": sum(r[2] for r in data) / max(1, resources),
           "audit_bytes_per_row": sum(r[1] + r[2] for r in rows if r[0] == "audit") / max(1, audit)}
    log(f"sizes: {resources:,} resources, {versions:,} versions; per resource {out['table_bytes_per_resource']:,.0f} B "
        f"in tables + {out['index_bytes_per_resource']:,.0f} B in indexes; audit {out['audit_bytes_per_row']:,.0f} B/row")
    return out


def sample_ids(url: str, n: int, seed: int = 7) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        top = conn.execute("SELECT MAX(rk) FROM res").fetchone()[0]
        keys = random.Random(seed).sample(range(1, top + 1), min(top, n * 2))
        rows = conn.execute("SELECT type, id FROM res WHERE rk = ANY(%s) AND deleted = 0", (keys,)).fetchall()
    return [tuple(r) for r in rows[:n]]


def raw_lookups(url: str, ids: list[tuple[str, str]], seconds: float, threads: int = 2) -> float:
    """Lookups by id per second with plain psycopg (the engine alone), ``threads`` at once."""
    done = [0] * threads
    stop = time.perf_counter() + seconds
    sql = ("SELECT r.version, h.body FROM res r JOIN hist h ON h.seq = r.seq "
           "WHERE r.type = %s AND r.id = %s")

    def run(slot: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            i = slot
            while time.perf_counter() < stop:
                conn.execute(sql, ids[i % len(ids)], prepare=True).fetchone()
                i += threads
                done[slot] += 1

    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(done) / seconds


def reads(url: str, seconds: int, rate: float) -> dict:
    ids = sample_ids(url, 2000)
    paths = [f"/{t}/{i}" for t, i in ids]
    raw = raw_lookups(url, ids, seconds)
    log(f"raw psycopg lookups by id (2 threads): {raw:,.0f}/s")
    with enjournal_server(url, workers=2) as server:
        headers = bearer(issue_token(url, server.port))
        r = httpx.get(f"{server.url}{paths[0]}", headers=headers)
        assert r.status_code == 200, r.text
        result = measure(server, paths, seconds, rate, headers=headers)
    sat, steady = result["saturation"], result["steady"]
    log(f"GET by id over HTTP: {sat['rps']:,.0f} req/s at saturation (ratio to raw lookups {sat['rps'] / raw:.2f}); "
        f"at {rate:,.0f} req/s p50 {steady['p50']:.2f} ms p99 {steady['p99']:.2f} ms")
    result["raw_lookups_per_s"] = raw
    return result


def pick_queries(url: str, patients: int, seed: int = 11) -> dict:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT r.id, h.body FROM res r JOIN hist h ON h.seq = r.seq "
                            "WHERE r.type = 'Patient' AND r.deleted = 0 ORDER BY r.rk").fetchall()
        random.Random(seed).shuffle(rows)
        rows = rows[:patients]
        status_of = {}
        for pid, _ in rows:
            row = conn.execute(
                "SELECT t.code FROM res r JOIN ix_tok t ON t.rk = r.rk JOIN sp ON sp.pid = t.pid "
                "AND sp.url LIKE '%%MedicationRequest-status' WHERE r.type = 'MedicationRequest' AND r.pat = %s "
                "LIMIT 1", (pid,)).fetchone()
            status_of[pid] = row[0] if row else "active"
    return queries_of(rows, status_of)


def searches(url: str, patients: int, repeat: int) -> dict:
    from enjournal.access.context import use
    from enjournal.app import Platform
    from enjournal.settings import Settings
    queries = pick_queries(url, patients)
    settings = Settings(database=url, builtin_idp="on")
    platform = Platform(settings)
    callers = Callers(platform, settings)
    out: dict = {}
    try:
        for persona in PERSONAS:
            for kind, qs in queries.items():
                counts = []
                for t, params, pid in qs:                    # warm up
                    with use(callers.context(persona, t, params, pid)):
                        counts.append(len(platform.resources.search(t, params).matches))
                times = []
                for _ in range(repeat):
                    for t, params, pid in qs:
                        start = time.perf_counter()
                        with use(callers.context(persona, t, params, pid)):
                            platform.resources.search(t, params)
                        times.append(time.perf_counter() - start)
                stats = summarize_ms(times)
                stats["mean_matches"] = sum(counts) / len(counts)
                out[f"{persona}/{kind}"] = stats
                log(f"search {persona}/{kind}: p50 {stats['p50']:.2f} ms p99 {stats['p99']:.2f} ms "
                    f"({stats['mean_matches']:.1f} matches)")
    finally:
        platform.close()
    return out


def pick_everything_patient(url: str, size: int) -> tuple[str, int]:
    """The patient whose compartment is closest to ``size`` resources."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tid, COUNT(DISTINCT rk) FROM ix_ref WHERE ttype = 'Patient' AND url IS NULL "
                            "GROUP BY tid").fetchall()
    return min(rows, key=lambda r: abs(r[1] - size))


def everything(url: str, size: int, repeat: int) -> dict:
    """``Patient/$everything`` at 1M, as ``bench.everything`` measures it on SQLite: the first
    page (1,000) in-process and over HTTP, and every resource in-process; raw baseline: the
    same bodies fetched by key with one plain statement per 900 keys."""
    from enjournal.app import Platform
    from enjournal.services.everything import everything as everything_page, everything_keys
    from enjournal.settings import Settings
    from .common import in_system_context
    from .loadgen import sequential
    patient, members = pick_everything_patient(url, size)
    platform = Platform(Settings(database=url, builtin_idp="on"))
    service = platform.resources
    first, full = [], []
    try:
        with in_system_context("bench everything"):
            total = everything_page(service, patient, []).page.total
        for _ in range(repeat):
            with in_system_context("bench everything"):
                start = time.perf_counter()
                everything_page(service, patient, [])
                first.append(time.perf_counter() - start)
            with in_system_context("bench everything"):
                start = time.perf_counter()
                keys = everything_keys(service, patient, None, None)
                service.repo.load(keys)
                full.append(time.perf_counter() - start)
    finally:
        platform.close()
    raw = []
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(5):
            start = time.perf_counter()
            parts = []
            for i in range(0, len(keys), 900):
                parts.extend(r[0] for r in conn.execute(
                    "SELECT h.body FROM res r JOIN hist h ON h.seq = r.seq WHERE r.rk = ANY(%s)", (keys[i:i + 900],)))
            b"[" + b",".join(parts) + b"]"
            raw.append(time.perf_counter() - start)
    raw.sort()
    out = {"patient_resources": members, "total": total, "in_process_first_page": summarize_ms(first),
           "in_process_all": summarize_ms(full), "raw_fetch_all_ms": raw[len(raw) // 2] * 1000}
    with enjournal_server(url, workers=2) as server:
        headers = bearer(issue_token(url, server.port))
        path = f"/Patient/{patient}/$everything"
        sequential(server.port, [path], 2, headers=headers)            # warm up
        times, _bodies = sequential(server.port, [path], repeat, headers=headers)
        out["http_first_page"] = summarize_ms(times)
    log(f"$everything of a patient with {members:,} resources ({total:,} in $everything): first page in-process "
        f"p50 {out['in_process_first_page']['p50']:.1f} ms, over HTTP p50 {out['http_first_page']['p50']:.1f} ms; "
        f"all {len(keys):,} in-process p50 {out['in_process_all']['p50']:.1f} ms "
        f"(raw fetch of the same bodies {out['raw_fetch_all_ms']:.1f} ms)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database", required=True, help="postgresql://... holding the benchmark data")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--patients", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--everything-size", type=int, default=3000)
    ap.add_argument("--only", default="sizes,reads,searches,everything,export,typefilter")
    args = ap.parse_args()
    only = set(args.only.split(","))
    log(f"== PostgreSQL benchmarks; {machine()}")
    result: dict = {}
    if "sizes" in only:
        result["sizes"] = sizes(args.database)
    if "searches" in only:
        result["searches"] = searches(args.database, args.patients, args.repeat)
    if "reads" in only:
        result["reads"] = reads(args.database, args.seconds, args.rate)
    if "everything" in only:
        result["everything"] = everything(args.database, args.everything_size, 20)
    if "export" in only:
        raw = raw_export(args.database, None)
        result["export"] = http_export(args.database, 2, None)
        result["export"]["ratio_to_raw"] = result["export"]["per_s"] / raw["per_s"]
        result["raw_export"] = raw
        log(f"$export with downloads / plain SELECT to a file = {result['export']['ratio_to_raw']:.2f}")
    if "typefilter" in only:
        result["type_filter_export"] = type_filter_export(args.database)
    save_result("postgres", result)


if __name__ == "__main__":
    main()
