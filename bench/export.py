"""Bulk Data ``$export`` of a whole database over HTTP, against a raw baseline.

    .venv/bin/python -m bench.export [--database PATH|URL] [--workers 2] [--type Observation,...]

The database: ``--database`` (a SQLite file or a postgresql:// URL), else the 1M-resource
SQLite database ``bench/out/db-1000000.db`` if it exists (``bench.build_db``), else a small
one made once with ``enjournal demo`` (bench/out/export-demo.db). The export only reads the
data; starting the server may add the ``job`` table (a schema migration).

Figures (printed, and saved in bench/out/export.json):

- ``$export`` over HTTP as a client sees it (``enjournal serve --workers 2``, a system
  token): the kick-off, polling every 0.2 s until the manifest, then every NDJSON file
  downloaded and its lines counted; resources per second to the manifest and with the
  downloads. The job is cancelled (``DELETE``) afterwards, which removes its files;
- baseline (the floor for any export): the same rows' bodies read by one plain SELECT and
  written to one file, ``body + b"\\n"``.

Target: >= 20,000 resources/s with the downloads, for 1 million resources.
"""
from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import httpx

from .common import (ENJOURNAL, OUT, bearer, database_url, enjournal_server, issue_token, log, machine,
                     save_result)

TARGET = 20_000.0
BIG = OUT / "db-1000000.db"
DEMO = OUT / "export-demo.db"


def pick_database(explicit: str | None) -> str:
    if explicit and (explicit.startswith("postgres") or Path(explicit).resolve() != DEMO):
        return explicit if "://" in explicit else str(Path(explicit).resolve())
    if BIG.exists() and not explicit:
        return str(BIG)
    if not DEMO.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        log(f"building a small database with `enjournal demo` into {DEMO}")
        subprocess.run([ENJOURNAL, "demo", "--database", database_url(DEMO), "--people", "200"], check=True)
    return str(DEMO)


def raw_rows(database: str, types: tuple | None, extra: str = ""):
    """The baseline's rows: current bodies in key order, one plain SELECT (a named cursor on
    PostgreSQL, so neither side holds everything in memory); ``extra``: a further condition
    on ``res r``."""
    where = "r.deleted = 0"
    if types:
        where += f" AND r.type IN ({','.join(repr(t) for t in types)})"
    if extra:
        where += f" AND {extra}"
    sql = f"SELECT h.body FROM res r JOIN hist h ON h.seq = r.seq WHERE {where} ORDER BY r.rk"
    if "://" in database:
        import psycopg
        with psycopg.connect(database) as conn, conn.cursor(name="bench_export") as cur:
            cur.itersize = 5000
            cur.execute(sql)
            for (body,) in cur:
                yield body
        return
    import sqlite3
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        for (body,) in conn.execute(sql):
            yield body
    finally:
        conn.close()


def raw_export(database: str, types: tuple | None, extra: str = "") -> dict:
    target = OUT / "export-raw.ndjson"
    start = time.perf_counter()
    n = 0
    with open(target, "wb", buffering=1 << 20) as out:
        for body in raw_rows(database, types, extra):
            out.write(body)
            out.write(b"\n")
            n += 1
    seconds = time.perf_counter() - start
    size = target.stat().st_size
    target.unlink()
    log(f"raw: one SELECT, bodies to one file: {n:,} resources, {size / 2**20:,.0f} MB in {seconds:.1f} s = "
        f"{n / seconds:,.0f} resources/s")
    return {"resources": n, "bytes": size, "seconds": seconds, "per_s": n / seconds}


def http_export(database: str, workers: int, types: tuple | None, params: dict | None = None) -> dict:
    with enjournal_server(Path(database) if "://" not in database else database, workers=workers) as server:
        headers = bearer(issue_token(Path(database) if "://" not in database else database, server.port))
        params = {**({"_type": ",".join(types)} if types else {}), **(params or {})}
        with httpx.Client(base_url=server.url, headers=headers, timeout=600) as c:
            start = time.perf_counter()
            r = c.get("/$export", params=params,
                      headers={"Prefer": "respond-async", "Accept": "application/fhir+json"})
            assert r.status_code == 202, r.text
            location = r.headers["Content-Location"]
            polls = 0
            while True:
                r = c.get(location)
                polls += 1
                if r.status_code == 200:
                    break
                assert r.status_code == 202, r.text
                time.sleep(0.2)
            written = time.perf_counter() - start
            manifest = r.json()
            n, size = 0, 0
            for item in manifest["output"]:
                lines = 0
                with c.stream("GET", item["url"]) as f:
                    assert f.status_code == 200, f.read()
                    for chunk in f.iter_bytes(1 << 20):
                        size += len(chunk)
                        lines += chunk.count(b"\n")
                assert lines == item["count"], (item, lines)
                n += lines
            elapsed = time.perf_counter() - start
            assert c.delete(location).status_code == 202          # removes the files
    log(f"$export over HTTP: {n:,} resources, {size / 2**20:,.0f} MB in {len(manifest['output'])} files; "
        f"manifest after {written:.1f} s ({n / written:,.0f}/s, {polls} polls), "
        f"downloaded after {elapsed:.1f} s = {n / elapsed:,.0f} resources/s")
    return {"resources": n, "bytes": size, "files": len(manifest["output"]), "seconds_to_manifest": written,
            "seconds": elapsed, "written_per_s": n / written, "per_s": n / elapsed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database", help="SQLite file or postgresql:// URL (default: bench/out/db-1000000.db)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--type", help="comma-separated resource types (_type); default: every type")
    args = ap.parse_args()
    run(args.database, args.workers, tuple(args.type.split(",")) if args.type else None)


def run(database: str | None = None, workers: int = 2, types: tuple | None = None) -> dict:
    """The export benchmark (see the module docstring); ``bench.run_all`` calls it."""
    database = pick_database(database)
    log(f"== $export of {database}{' _type=' + ','.join(types) if types else ''}; {machine()}")
    raw = raw_export(database, types)
    exported = http_export(database, workers, types)
    assert exported["resources"] == raw["resources"], (exported["resources"], raw["resources"])
    ratio = exported["per_s"] / raw["per_s"]
    verdict = "MET" if exported["per_s"] >= TARGET else "MISSED"
    log(f"$export {exported['per_s']:,.0f} resources/s = {ratio:.2f} x raw ({raw['per_s']:,.0f}/s); "
        f"target >= {TARGET:,.0f}/s: {verdict}")
    result = {"database": Path(database).name if "://" not in database else "postgresql",
              "types": list(types) if types else None, "raw": raw, "export": exported,
              "ratio_to_raw": ratio, "target_per_s": TARGET}
    save_result("export", result)
    return result


if __name__ == "__main__":
    main()
