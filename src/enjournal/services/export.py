"""Bulk Data export (``$export``, https://hl7.org/fhir/uv/bulkdata/STU2/export.html).

A kick-off request is checked and answered at once (202 with a status URL); a background
thread of the process that took it writes NDJSON files, one series per resource type, and
keeps the job's state in the database, so any worker process answers status polls, file
downloads and cancellations. Stored bodies are written as they are (compact JSON, one line
each), read in key order in batches, never parsed. See docs/bulk-export.md.
"""
from __future__ import annotations

import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import orjson

from .. import errors
from ..fhir import dates

OUTPUT_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
_NOT_SUPPORTED = ("_typeFilter", "_elements", "includeAssociatedData", "patient", "organizeOutputBy",
                  "allowPartialManifests")
_KNOWN = ("_outputFormat", "_type", "_since", "_format", "_pretty")
BATCH = 5000
KIND = "export"


@dataclass(frozen=True)
class ExportRequest:
    level: str                   # system | patient | group
    group: str | None
    types: tuple | None          # asked for with _type (None: all the client may read)
    since: int | None            # epoch ms
    url: str                     # the kick-off URL, for the manifest


def parse_request(params: list[tuple[str, str]], level: str, group: str | None, url: str,
                  known_types: frozenset, lenient: bool = False) -> ExportRequest:
    """The kick-off's parameters, or ``errors.Invalid`` naming the one that is wrong."""
    types: list[str] | None = None
    since = None
    for name, value in params:
        if name == "_outputFormat":
            if value not in OUTPUT_FORMATS:
                raise errors.Invalid(f"_outputFormat '{value}' is not supported: use application/fhir+ndjson",
                                     "_outputFormat")
        elif name == "_type":
            for type_ in (t.strip() for t in value.split(",")):
                if type_ not in known_types:
                    raise errors.Invalid(f"_type: unknown resource type '{type_}'", "_type")
                types = (types or []) + [type_]
        elif name == "_since":
            parsed = dates.parse_range(value) if "T" in value and value[-1:] == "Z" or "+" in value[10:] \
                or value[19:].count("-") else None
            if parsed is None:
                raise errors.Invalid(f"_since must be a FHIR instant with a time zone (e.g. 2026-01-01T00:00:00Z), "
                                     f"not '{value}'", "_since")
            since = parsed[0]
        elif name in _NOT_SUPPORTED:
            raise errors.NotSupported(f"the export parameter {name} is not supported", name)
        elif name not in _KNOWN and not lenient:
            raise errors.Invalid(f"unknown export parameter '{name}'", name)
    return ExportRequest(level, group, tuple(dict.fromkeys(types)) if types else None, since, url)


class ExportJobs:
    """Background export jobs of one process; their state lives in the store (table ``job``)."""

    def __init__(self, store: Any, directory: Path, file_resources: int = 100_000, max_jobs: int = 4,
                 clock: Callable[[], int] | None = None):
        self.store = store
        self.directory = Path(directory)
        self.file_resources = max(1, file_resources)
        self.max_jobs = max_jobs
        self.clock = clock or store.clock
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.before_batch: Callable[[str], None] | None = None     # tests: slow a job down

    # -- requests ------------------------------------------------------------------------

    def start(self, request: ExportRequest, owner: str, types: tuple, patients: tuple | None) -> str:
        """Record a job and start writing it; returns the job id. 429 when too many run."""
        with self._lock:
            running = [j for j, t in self._threads.items() if t.is_alive()]
            if len(running) >= self.max_jobs:
                raise errors.TooManyRequests(f"{len(running)} exports are running; try again later",
                                             headers={"Retry-After": "30"})
            job = uuid.uuid4().hex
            now = self.clock()
            state = {"request": request.url, "transactionTime": now, "types": list(types),
                     "level": request.level, "since": request.since, "exported": 0, "output": []}
            self.store.job_put(job, KIND, owner, "running", orjson.dumps(state).decode(), now)
            thread = threading.Thread(target=self._run, args=(job, owner, state, types, request.since, now, patients),
                                      name=f"enjournal-export-{job[:8]}", daemon=True)
            self._threads[job] = thread
            thread.start()
        return job

    def status(self, job: str, owner: str) -> tuple[str, dict]:
        """(status, state) of the caller's job; NotFound for unknown, another's, or cancelled."""
        row = self._row(job, owner)
        return row[2], orjson.loads(row[5])

    def cancel(self, job: str, owner: str) -> None:
        """Stop a job and delete its files; its status is then 404."""
        row = self._row(job, owner)
        self.store.job_put(job, KIND, owner, "cancelled", row[5], self.clock())
        thread = self._threads.get(job)
        if thread is None or not thread.is_alive():
            shutil.rmtree(self.directory / job, ignore_errors=True)

    def file(self, job: str, owner: str, name: str) -> Path:
        """The path of one of the caller's completed job's files."""
        status, state = self.status(job, owner)
        if status != "complete" or name not in {o["name"] for o in state["output"]}:
            raise errors.NotFound(f"no file {name} in export {job}", "url")
        return self.directory / job / name

    def close(self) -> None:
        self._closing.set()
        for thread in list(self._threads.values()):
            thread.join(timeout=10)

    def _row(self, job: str, owner: str) -> tuple:
        row = self.store.job_get(job) if _plausible(job) else None
        if row is None or row[0] != KIND or row[1] != owner or row[2] == "cancelled":
            raise errors.NotFound(f"no export job {job}", "url")
        return row

    # -- the work ------------------------------------------------------------------------

    def _run(self, job: str, owner: str, state: dict, types: tuple, since: int | None, until: int,
             patients: tuple | None) -> None:
        folder = self.directory / job
        writer = _Files(folder, self.file_resources)
        after, exported = 0, 0
        try:
            folder.mkdir(parents=True, exist_ok=True)
            while True:
                if self._closing.is_set() or self._cancelled(job):
                    writer.close()
                    shutil.rmtree(folder, ignore_errors=True)
                    return
                if self.before_batch is not None:
                    self.before_batch(job)
                rows = self.store.export_batch(after, BATCH, types, since, until, patients,
                                               compartments=state["level"] != "system")
                if not rows:
                    break
                for _key, type_, body in rows:
                    writer.write(type_, body)
                after = rows[-1][0]
                exported += len(rows)
                state["exported"] = exported
                self.store.job_put(job, KIND, owner, "running", orjson.dumps(state).decode(), self.clock())
            writer.close()
            state["output"] = writer.manifest()
            if self._cancelled(job):
                shutil.rmtree(folder, ignore_errors=True)
                return
            self.store.job_put(job, KIND, owner, "complete", orjson.dumps(state).decode(), self.clock())
        except Exception as exc:        # the job failed, not the request: its status says so
            writer.close()
            shutil.rmtree(folder, ignore_errors=True)
            state["error"] = f"the export failed: {type(exc).__name__}"
            self.store.job_put(job, KIND, owner, "failed", orjson.dumps(state).decode(), self.clock())
        finally:
            with self._lock:
                self._threads.pop(job, None)

    def _cancelled(self, job: str) -> bool:
        row = self.store.job_get(job)
        return row is None or row[2] == "cancelled"


class _Files:
    """NDJSON files per resource type, a new part every ``per_file`` resources."""

    def __init__(self, folder: Path, per_file: int):
        self.folder = folder
        self.per_file = per_file
        self.open: dict[str, tuple[Any, int]] = {}     # type -> (file, lines in it)
        self.done: list[dict] = []                       # {type, name, count}

    def write(self, type_: str, body: bytes) -> None:
        handle, count = self.open.get(type_, (None, 0))
        if handle is None or count >= self.per_file:
            if handle is not None:
                self._finish(type_, handle, count)
            part = sum(1 for d in self.done if d["type"] == type_) + 1
            handle, count = open(self.folder / f"{type_}-{part}.ndjson", "wb", buffering=1 << 20), 0
        handle.write(body)
        handle.write(b"\n")
        self.open[type_] = (handle, count + 1)

    def _finish(self, type_: str, handle: Any, count: int) -> None:
        handle.close()
        self.done.append({"type": type_, "name": os.path.basename(handle.name), "count": count})

    def close(self) -> None:
        for type_, (handle, count) in self.open.items():
            if not handle.closed:
                self._finish(type_, handle, count)
        self.open.clear()

    def manifest(self) -> list[dict]:
        return sorted(self.done, key=lambda d: (d["type"], d["name"]))


def _plausible(job: str) -> bool:
    return len(job) == 32 and all(c in "0123456789abcdef" for c in job)
