"""Build (once) an enjournal SQLite database of N resources from the Synthea set, replicating
the patient Bundles with fresh UUIDs when N exceeds the set, for the search and $everything
benchmarks. The finished file is bench/out/db-N.db; a partial build is never left under that name.

    .venv/bin/python -m bench.build_db --resources 1000000        # ~20 min at ~1,000 resources/s
    .venv/bin/python -m bench.build_db --resources 1000000 --postgres postgresql://.../bench1m

With ``--postgres`` the same Bundles go into that (empty) PostgreSQL database instead, through
the same pipeline (validation, indexes, audit), and the ingest rate is printed.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import orjson

from .common import OUT, bundle_files, dataset_dir, entries_of, in_system_context, iter_bundles, log


def db_path(resources: int) -> Path:
    return OUT / f"db-{resources}.db"


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(str(path) + suffix)
        except FileNotFoundError:
            pass


def build_postgres(resources: int, url: str, dataset: Path | None = None) -> float:
    """Load ``resources`` resources into the PostgreSQL database ``url``; the rate per second."""
    from enjournal.app import Platform
    from enjournal.services.bundles import BundleService
    from enjournal.settings import Settings

    files = bundle_files(dataset or dataset_dir())
    per_copy = sum(entries_of(f.read_bytes()) for f in files)
    copies = -(-resources // per_copy)
    platform = Platform(Settings(database=url))
    if not platform.store.is_empty():
        raise SystemExit(f"{url} is not empty")
    service = BundleService(platform.resources)
    done, start, last = 0, time.perf_counter(), time.perf_counter()
    try:
        for raw in iter_bundles(files, copies, max_resources=resources):
            bundle = orjson.loads(raw)
            with in_system_context("bench build_db"):
                service.process(bundle, 1_000_000)
            done += len(bundle["entry"])
            if time.perf_counter() - last > 30:
                last = time.perf_counter()
                rate = done / (last - start)
                log(f"  {done:,} resources, {rate:,.0f}/s, about {(resources - done) / rate / 60:.0f} min left")
    finally:
        platform.close()
    elapsed = time.perf_counter() - start
    log(f"built {done:,} resources in PostgreSQL in {elapsed:.0f} s ({done / elapsed:,.0f} resources/s)")
    return done / elapsed


def build(resources: int, dataset: Path | None = None, force: bool = False) -> Path:
    """The path of a database holding at least ``resources`` resources (built if missing)."""
    from enjournal.app import Platform
    from enjournal.services.bundles import BundleService
    from enjournal.settings import Settings

    final = db_path(resources)
    if final.exists() and not force:
        return final
    OUT.mkdir(parents=True, exist_ok=True)
    partial = OUT / f"db-{resources}.partial.db"
    remove_db(partial)
    files = bundle_files(dataset or dataset_dir())
    per_copy = sum(entries_of(f.read_bytes()) for f in files)
    copies = -(-resources // per_copy)
    log(f"building {final.name}: {resources:,} resources from {len(files)} bundles x {copies} "
        f"cop{'y' if copies == 1 else 'ies'} ({per_copy:,} resources per copy)")
    platform = Platform(Settings(database=f"sqlite:///{partial}"))
    service = BundleService(platform.resources)
    done, start, last = 0, time.perf_counter(), time.perf_counter()
    try:
        for i, raw in enumerate(iter_bundles(files, copies, max_resources=resources)):
            bundle = orjson.loads(raw)
            with in_system_context("bench build_db"):      # one context (one audit record) per Bundle
                service.process(bundle, 1_000_000)
            done += len(bundle["entry"])
            if time.perf_counter() - last > 30:
                last = time.perf_counter()
                rate = done / (last - start)
                log(f"  {done:,} resources, {rate:,.0f}/s, about {(resources - done) / rate / 60:.0f} min left")
    finally:
        platform.close()
    elapsed = time.perf_counter() - start
    log(f"built {done:,} resources in {elapsed:.0f} s ({done / elapsed:,.0f} resources/s)")
    remove_db(final)
    for suffix in ("-wal", "-shm"):
        p = Path(str(partial) + suffix)
        if p.exists():
            p.rename(str(final) + suffix)
    partial.rename(final)
    return final


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resources", type=int, default=1_000_000)
    ap.add_argument("--dataset", help="directory of Synthea transaction Bundles")
    ap.add_argument("--force", action="store_true", help="rebuild even if the file exists")
    ap.add_argument("--postgres", help="load into this (empty) PostgreSQL database instead")
    args = ap.parse_args()
    if args.postgres:
        build_postgres(args.resources, args.postgres, Path(args.dataset) if args.dataset else None)
        return
    build(args.resources, Path(args.dataset) if args.dataset else None, args.force)


if __name__ == "__main__":
    main()
