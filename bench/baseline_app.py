"""The read benchmark's baseline: a bare Starlette app that answers ``GET /{type}/{id}`` with
the very bytes enjournal stores for that resource, with no FHIR logic.

``BENCH_BASELINE_BODIES`` names a JSON file {"Type/id": body, ...} loaded into memory
(mode ``memory``, the default), or ``BENCH_BASELINE_DB`` a SQLite file with a table
``raw(key TEXT PRIMARY KEY, body BLOB)`` read per request (mode ``sqlite``: the raw engine).

    uvicorn bench.baseline_app:create --factory --workers 2
"""
from __future__ import annotations

import os
import sqlite3

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

MEDIA = "application/fhir+json; charset=utf-8"


def create() -> Starlette:
    db = os.environ.get("BENCH_BASELINE_DB")
    if db:
        conn = sqlite3.connect(db, check_same_thread=False)
        conn.execute("PRAGMA query_only=1")

        def lookup(key: str) -> bytes | None:
            row = conn.execute("SELECT body FROM raw WHERE key = ?", (key,)).fetchone()
            return row[0] if row else None
    else:
        with open(os.environ["BENCH_BASELINE_BODIES"], "rb") as f:
            bodies = {k: v.encode() for k, v in orjson.loads(f.read()).items()}
        lookup = bodies.get

    async def read(request: Request) -> Response:
        key = f"{request.path_params['type']}/{request.path_params['id']}"
        body = lookup(key)
        if body is None:
            return Response(b'{"resourceType":"OperationOutcome"}', 404, media_type=MEDIA)
        return Response(body, media_type=MEDIA, headers={"ETag": 'W/"1"'})

    return Starlette(routes=[Route("/{type}/{id}", read, methods=["GET"])])
