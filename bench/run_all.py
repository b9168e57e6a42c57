"""Run every benchmark in sequence (``make bench``).

    .venv/bin/python -m bench.run_all            # small sizes: a few minutes
    .venv/bin/python -m bench.run_all --full     # the issue's sizes: 1M-resource search database
                                                 # (built once into bench/out/, ~20 min)

Sizes come from flags or the environment: BENCH_INGEST_RESOURCES, BENCH_READ_RESOURCES,
BENCH_SEARCH_RESOURCES, BENCH_SECONDS; BENCH_DATASET names a directory of Synthea Bundles
(default: a pre-generated set if present, else 20 patients generated once into bench/out/).
Results are printed and saved as JSON in bench/out/.

Not in the default set: ``--only before_after --before REV`` runs bench/before_after.py (the
read, search and ingest benchmarks on REV and on the working tree, alternating, with ratios).
"""
from __future__ import annotations

import argparse
import os
import time

from . import audit, before_after, everything, export, ingest, read, search
from .common import log, machine


def main() -> None:
    env = os.environ.get
    ap = argparse.ArgumentParser(description="run all enjournal benchmarks")
    ap.add_argument("--full", action="store_true", help="the issue's sizes (1M resources for search)")
    ap.add_argument("--ingest-resources", type=int, default=int(env("BENCH_INGEST_RESOURCES", 0)) or None)
    ap.add_argument("--read-resources", type=int, default=int(env("BENCH_READ_RESOURCES", 0)) or None)
    ap.add_argument("--search-resources", type=int, default=int(env("BENCH_SEARCH_RESOURCES", 0)) or None)
    ap.add_argument("--seconds", type=int, default=int(env("BENCH_SECONDS", 0)) or None)
    ap.add_argument("--profile", action="store_true", help="profile the in-process ingest (pyinstrument)")
    ap.add_argument("--only", help="comma-separated subset: ingest,read,audit,search,everything,export; "
                                   "also before_after (with --before REV; never in the default set)")
    ap.add_argument("--before", help="git revision for --only before_after (the 'before' code)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per version for --only before_after")
    ap.add_argument("--postgres", help="admin URL of a PostgreSQL cluster: also run the ingest there "
                                       "(for reads, searches and $export at 1M: bench.build_db --postgres, then bench.postgres)")
    args = ap.parse_args()
    full = args.full
    sizes = {
        "ingest": args.ingest_resources or (100_000 if full else 20_000),
        "read": args.read_resources or (100_000 if full else 20_000),
        "search": args.search_resources or (1_000_000 if full else 50_000),
        "seconds": args.seconds or (15 if full else 8),
    }
    chosen = set((args.only or "ingest,read,audit,search,everything,export").split(","))
    if "before_after" in chosen and not args.before:
        ap.error("--only before_after needs --before REV")
    log(f"enjournal benchmarks, {time.strftime('%Y-%m-%d %H:%M')}, {machine()}; sizes {sizes}")
    start = time.perf_counter()
    if "ingest" in chosen:
        ingest.run(sizes["ingest"], concurrency=2, profile=args.profile or full)
    if "read" in chosen:
        read.run(sizes["read"], seconds=sizes["seconds"])
    if "audit" in chosen:
        audit.run(None, sizes["read"], seconds=sizes["seconds"], rounds=2 if full else 1)
    if "search" in chosen:
        search.run(sizes["search"], patients=40 if full else 20)
    if "everything" in chosen:
        everything.run(3000, repeat=20 if full else 10)
    if "export" in chosen:
        export.run()            # the 1M database when built (--full), else a small demo database
    if "before_after" in chosen:  # only when asked for: two versions of the code, alternating
        before_after.run(args.before, rounds=args.rounds, seconds=args.seconds or 10)
    if args.postgres:           # the PostgreSQL round (docs/performance.md "PostgreSQL (issue 4)")
        ingest.run_postgres(args.postgres, sizes["ingest"], concurrency=2)
    log(f"all benchmarks done in {(time.perf_counter() - start) / 60:.1f} min; JSON results in bench/out/")


if __name__ == "__main__":
    main()
