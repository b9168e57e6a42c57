"""Bulk Data export (``$export``, https://hl7.org/fhir/uv/bulkdata/STU2/export.html).

A kick-off request is checked and answered at once (202 with a status URL); a background
thread of the process that took it writes NDJSON files, one series per resource type, and
keeps the job's state in the database, so any worker process answers status polls, file
downloads and cancellations. Stored bodies are written as they are (compact JSON, one line
each), read in key order in batches, never parsed. See docs/bulk-export.md.
"""
from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl

import orjson

from .. import errors
from ..fhir import dates
from ..fhir import query as fq
from ..fhir.references import parse_relative

log = logging.getLogger("enjournal.export")

OUTPUT_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
_NOT_SUPPORTED = ("_elements", "includeAssociatedData", "organizeOutputBy", "allowPartialManifests")
_KNOWN = ("_outputFormat", "_type", "_since", "patient", "_typeFilter", "_format", "_pretty")
# _typeFilter holds comma-separated queries "Type?..."; a comma inside a query (an OR of
# values) is not followed by "Type?"
_FILTER_SPLIT = re.compile(r",(?=[A-Z][A-Za-z]*\?)")
_FILTER = re.compile(r"^([A-Z][A-Za-z]*)\?(.+)$", re.S)
# the filters become one statement's conditions: bounded well under the engines' parameter limits
MAX_FILTERS, MAX_FILTER_TEXT = 100, 20_000
# a FHIR instant (https://hl7.org/fhir/R4/datatypes.html#instant): seconds and a time zone
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
BATCH = 5000
# Group members per statement: each appears twice in it, well under SQLite's 32,766 and
# PostgreSQL's 65,535 parameters; a larger Group is exported in several passes
PATIENT_CHUNK = 2000
KIND = "export"
RUNNING, COMPLETE, FAILED, CANCELLED = "running", "complete", "failed", "cancelled"
# a running job writes its row after every batch; one silent this long lost its process
STALE_MS = 30 * 60_000
_ELEVEN_DIGITS = re.compile(r"[0-9]{11}")
_LOST = "the export stopped: the server process writing it ended; start a new export"


@dataclass(frozen=True)
class ExportRequest:
    level: str                   # system | patient | group
    group: str | None
    types: tuple | None          # asked for with _type (None: all the client may read)
    since: int | None            # epoch ms
    url: str                     # the kick-off URL, for the manifest
    patients: tuple | None = None    # ``patient``: only these patients' data (ids)
    filters: tuple = ()          # ``_typeFilter``: (type, SearchQuery) pairs, ORed per type


def parse_request(params: list[tuple[str, str | None]], level: str, group: str | None, url: str,
                  known_types: frozenset, lenient: bool = False,
                  patient_types: frozenset = frozenset(), registry: Any = None) -> ExportRequest:
    """The kick-off's parameters, or ``errors.Invalid`` / ``errors.NotSupported`` naming the
    one that is wrong. ``patient_types``: the types a Patient- or Group-level export can hold
    (asking only for others is a 400). A value of None is a POST parameter that is not a
    string. ``lenient`` (``Prefer: handling=lenient``) drops unknown parameters. ``patient``
    (references ``Patient/<id>``, repeated or comma-separated) limits a Patient- or
    Group-level export to those patients' data. ``_typeFilter`` (FHIR search queries
    ``Type?...``, comma-separated or repeated; parsed with ``registry``) keeps, of a type it
    names, the resources that match one of its queries."""
    types: list[str] | None = None
    since = None
    patients: list[str] | None = None
    filters: list[tuple[str, Any]] = []
    filter_text = 0
    for name, value in params:
        if name in _NOT_SUPPORTED:
            raise errors.NotSupported(f"the export parameter {name} is not supported: leave it out", name)
        if name not in _KNOWN:
            if lenient:
                continue
            raise errors.Invalid(f"unknown export parameter '{name}' (supported: _type, _since, _outputFormat)",
                                 name)
        if value is None:
            raise errors.Invalid(f"the export parameter {name} takes a string value", name)
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
            since = _instant(value)
        elif name == "_typeFilter":
            filter_text += len(value)
            texts = _FILTER_SPLIT.split(value)
            if len(filters) + len(texts) > MAX_FILTERS or filter_text > MAX_FILTER_TEXT:
                raise errors.Invalid(f"_typeFilter: at most {MAX_FILTERS} queries of {MAX_FILTER_TEXT:,} characters "
                                     "in all; export the type and filter it afterwards", "_typeFilter")
            filters.extend(_type_filter(text, known_types, registry) for text in texts)
        elif name == "patient":
            if level == "system":
                raise errors.Invalid("the patient parameter is for Patient- and Group-level exports "
                                     "([base]/Patient/$export, [base]/Group/[id]/$export)", "patient")
            for ref in (r.strip() for r in value.split(",")):
                target = parse_relative(ref)
                if target is None or target[0] != "Patient" or target[2] is not None:
                    raise errors.Invalid(f"patient: '{ref}' is not a reference Patient/<id>", "patient")
                patients = (patients or []) + [target[1]]
    if types and level != "system" and patient_types and not lenient and not set(types) & patient_types:
        raise errors.Invalid(f"_type: {', '.join(types)} cannot be in a patient's compartment, so a {level}-level "
                             "export holds none of it; use the system-level [base]/$export", "_type")
    if types:
        outside = [t for t, _q in filters if t not in types]
        if outside:
            raise errors.Invalid(f"_typeFilter: {outside[0]} is not among the types of _type, so it is not "
                                 "exported; add it to _type or leave the filter out", "_typeFilter")
    return ExportRequest(level, group, tuple(dict.fromkeys(types)) if types else None, since, url,
                         tuple(dict.fromkeys(patients)) if patients else None, tuple(filters))


def _type_filter(text: str, known_types: frozenset, registry: Any) -> tuple[str, Any]:
    """(type, SearchQuery) of one ``_typeFilter`` query ``Type?name=value&...``: search
    parameters only (no _sort, _count, _include, _elements...), strictly parsed (an unknown
    parameter is an error, whatever ``Prefer: handling`` says: it would export more than asked)."""
    found = _FILTER.match(text.strip())
    if found is None:
        raise errors.Invalid(f"_typeFilter: '{text}' is not a search query of the form Type?name=value",
                             "_typeFilter")
    type_ = found[1]
    if type_ not in known_types:
        raise errors.Invalid(f"_typeFilter: unknown resource type '{type_}'", "_typeFilter")
    try:
        pairs = parse_qsl(found[2], keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise errors.Invalid(f"_typeFilter: '{text}' is not a query string name=value&...", "_typeFilter") from None
    for name, _value in pairs:
        base = name.partition(":")[0]
        if base in fq.RESULT_PARAMS or base in ("_type", "_format", "_pretty"):
            raise errors.Invalid(f"_typeFilter: {name} does not filter resources; a filter takes search "
                                 "parameters only", "_typeFilter")
    try:
        query = fq.parse(type_, pairs, registry)
    except (errors.Invalid, errors.NotSupported, errors.TooCostly) as exc:
        raise errors.Invalid(f"_typeFilter {type_}: {exc.message}", "_typeFilter") from None
    return type_, query


def _instant(value: str) -> int:
    """Epoch ms of a FHIR instant; a '+' of the time zone that a query string turned into a
    space is taken as '+'."""
    text = value[:19] + value[19:].replace(" ", "+")
    parsed = dates.parse_range(text) if _INSTANT.match(text) else None
    if parsed is None:
        raise errors.Invalid(f"_since must be a FHIR instant with seconds and a time zone "
                             f"(e.g. 2026-01-01T00:00:00Z), not '{value}'", "_since")
    return parsed[0]


class ExportJobs:
    """Background export jobs of one process; their state lives in the store (table ``job``):
    ``{"request", "transactionTime", "types", "level", "since", "exported", "output", "error"}``
    as JSON, status running, complete, failed or cancelled."""

    def __init__(self, store: Any, directory: Path, file_resources: int = 100_000, max_jobs: int = 4,
                 keep_ms: int = 24 * 3_600_000, clock: Callable[[], int] | None = None):
        self.store = store
        self.directory = Path(directory)
        self.file_resources = max(1, file_resources)
        self.max_jobs = max_jobs
        self.keep_ms = keep_ms
        self.clock = clock or store.clock
        self._threads: dict[str, threading.Thread] = {}     # jobs not yet finished (see _finish)
        self._workers: set[threading.Thread] = set()         # threads still running, for close()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._at_exit = False
        self.before_batch: Callable[[str], None] | None = None     # tests: slow a job down

    # -- requests ------------------------------------------------------------------------

    @staticmethod
    def new_id() -> str:
        """A job id: random and unguessable (it is part of the status and file URLs), without
        a run of eleven digits, which the audit log would mask as a possible person number."""
        while True:
            job = uuid.uuid4().hex
            if not _ELEVEN_DIGITS.search(job):
                return job

    def start(self, job: str, request: ExportRequest, owner: str, types: tuple | None,
              patients: tuple | None, record: Any = None) -> None:
        """Record job ``job`` and start writing it. ``types``: the types to export (None:
        every type); ``patients``: the patients whose data it holds (a Group's members or
        those of the ``patient`` parameter); ``record``: called with each batch written, as
        (type, id, version, patient, body, deleted) rows, and closed when the job ends, for
        the audit log (the access module's ``ExportRecorder``). 429 when too many run here."""
        self.sweep()
        with self._lock:
            if self._closing.is_set():
                message = "the server is stopping: start the export again in a moment"
                stopping = errors.FhirError(message, issues=[errors.Issue(message, (), "transient")],
                                            headers={"Retry-After": "10"})
                stopping.status = 503
                raise stopping
            running = [j for j, t in self._threads.items() if t.is_alive()]
            if len(running) >= self.max_jobs:
                raise errors.TooManyRequests(f"{len(running)} exports are running; try again later",
                                             headers={"Retry-After": "30"})
            now = self.clock()
            state = {"request": request.url, "transactionTime": now, "types": list(types) if types else None,
                     "level": request.level, "since": request.since, "exported": 0, "output": []}
            self.store.job_put(job, KIND, owner, RUNNING, _json(state), now)
            filters: dict[str, list] = {}
            for type_, query in request.filters:
                filters.setdefault(type_, []).append(list(query.clauses))
            thread = threading.Thread(target=self._run, args=(job, owner, state, types, request.since, now, patients,
                                                              record, filters or None),
                                      name=f"enjournal-export-{job[:8]}", daemon=True)
            if not self._at_exit:
                # a process may end without Platform.close() (uvicorn's shutdown calls close()
                # itself, app.py): stop the jobs at exit; as daemon threads they still run then
                atexit.register(self.close)
                self._at_exit = True
            self._threads[job] = thread
            self._workers.add(thread)
            thread.start()

    def status(self, job: str, owner: str) -> tuple[str, dict, int]:
        """(status, state, last update in epoch ms) of the caller's job; NotFound for an
        unknown, another client's, cancelled or expired one. A running job whose process
        stopped answering (no update for ``STALE_MS``) is failed."""
        row = self._row(job, owner)
        status, state, updated = row[2], orjson.loads(row[5]), row[4]
        now = self.clock()
        if status == RUNNING and job not in self._threads and now - updated > STALE_MS:
            status = FAILED
            state["error"] = _LOST
            self.store.job_put(job, KIND, owner, FAILED, _json(state), now)
        elif status in (COMPLETE, FAILED) and now - updated > self.keep_ms:
            raise errors.NotFound(f"export {job} has expired; start a new export", "url")
        return status, state, updated

    def cancel(self, job: str, owner: str) -> None:
        """Stop a job (its thread notices before its next batch) and delete its files; its
        status is then 404."""
        row = self._row(job, owner)
        self.store.job_put(job, KIND, owner, CANCELLED, row[5], self.clock())
        shutil.rmtree(self.directory / job, ignore_errors=True)

    def file(self, job: str, owner: str, name: str) -> Path:
        """The path of one of the caller's completed job's files."""
        status, state, _ = self.status(job, owner)
        path = self.directory / job / name
        names = {o["name"] for o in state["output"] + state.get("deleted", [])}
        if status != COMPLETE or name not in names or not path.is_file():
            raise errors.NotFound(f"no file {name} in export {job}", "url")
        return path

    def expires(self, updated: int) -> int:
        """When a job finished at ``updated`` is removed (epoch ms)."""
        return updated + self.keep_ms

    def sweep(self) -> None:
        """Remove the files and rows of this database's jobs that finished more than
        ``keep_ms`` ago, and the files of running jobs whose process is gone (they are marked
        failed). Folders of unknown jobs are left alone: the folder may be shared."""
        now = self.clock()
        try:
            entries = [e.name for e in os.scandir(self.directory) if e.is_dir() and _plausible(e.name)]
        except OSError:
            return
        for job in entries:
            with self._lock:        # a job leaves _threads in the same step that finishes it (_finish)
                if job in self._threads:
                    continue
            row = self.store.job_get(job)
            if row is None:
                continue
            if row[2] == RUNNING and now - row[4] > STALE_MS:
                shutil.rmtree(self.directory / job, ignore_errors=True)
                state = orjson.loads(row[5])
                state["error"] = _LOST
                self.store.job_put(job, KIND, row[1], FAILED, _json(state), now)
            elif row[2] != RUNNING and now - row[4] > self.keep_ms:
                shutil.rmtree(self.directory / job, ignore_errors=True)
                self.store.job_delete(job)

    def close(self) -> None:
        """Stop the running jobs (they are marked failed and their files removed)."""
        self._closing.set()
        with self._lock:
            workers = list(self._workers)
        for thread in workers:
            thread.join(timeout=30)
        if self._at_exit:
            atexit.unregister(self.close)
            self._at_exit = False

    def _row(self, job: str, owner: str) -> tuple:
        row = self.store.job_get(job) if _plausible(job) else None
        if row is None or row[0] != KIND or row[1] != owner or row[2] == CANCELLED:
            raise errors.NotFound(f"no export job {job}", "url")
        return row

    # -- the work ------------------------------------------------------------------------

    def _run(self, job: str, owner: str, state: dict, types: tuple | None, since: int | None, until: int,
             patients: tuple | None, record: Any, filters: dict | None = None) -> None:
        folder = self.directory / job
        writer = _Files(folder, self.file_resources)
        # with _since, the resources deleted since then, as Bundles of DELETE entries (the
        # manifest's "deleted"), so a client that exported before can remove them too
        gone_writer = _Files(folder, self.file_resources, prefix="deleted-")
        compartments = state["level"] != "system"
        # a large Group goes in passes of PATIENT_CHUNK members; a resource of several patients
        # can match more than one pass, so the keys written are remembered then
        chunks = [patients[i:i + PATIENT_CHUNK] for i in range(0, len(patients), PATIENT_CHUNK)] \
            if patients is not None else [None]
        written: set[int] | None = set() if len(chunks) > 1 else None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for gone in (False, True) if since is not None else (False,):
                for chunk in chunks:
                    after = 0
                    while True:
                        if self._stopped(job, owner, state, writer, gone_writer):
                            return
                        if self.before_batch is not None:
                            self.before_batch(job)
                        rows = self.store.export_batch(after, BATCH, types, since, until, chunk, compartments,
                                                       filters, deleted=gone)
                        if not rows:
                            break
                        read = []
                        for key, type_, body, id_, version, patient in rows:
                            if written is not None:
                                if key in written:
                                    continue
                                written.add(key)
                            if gone:
                                gone_writer.write("Bundle", _deletion(type_, id_))
                            else:
                                writer.write(type_, body)
                            read.append((type_, id_, version, patient, body, gone))
                        if record is not None:
                            record(read)
                        after = rows[-1][0]
                        state["exported"] = writer.count + gone_writer.count
                        self.store.job_put(job, KIND, owner, RUNNING, _json(state), self.clock())
            writer.close()
            gone_writer.close()
            if record is not None:
                record.close()              # in the access log before the manifest is out
            state["output"] = writer.manifest()
            state["deleted"] = gone_writer.manifest()
            # the files are complete before the one update that makes them visible; a
            # cancelled job's row stays cancelled (job_put does not overwrite it)
            self._finish(job, owner, COMPLETE, state)
            if self._cancelled(job):
                shutil.rmtree(folder, ignore_errors=True)
        except Exception as exc:        # the job failed, not a request: its status says so (500)
            writer.discard()
            gone_writer.discard()
            shutil.rmtree(folder, ignore_errors=True)
            try:
                if self._cancelled(job):    # e.g. a new part's file in the folder a cancel removed
                    return
                log.exception("export %s failed", job)
                state["error"] = f"the export failed: {type(exc).__name__}; start a new export"
                self._finish(job, owner, FAILED, state)
            except Exception:
                log.exception("export %s: its failure could not be recorded", job)
        finally:
            if record is not None:
                try:
                    record.close()          # a failed or stopped job's files were read all the same
                except Exception:
                    log.exception("export %s: its reads could not be recorded", job)
            with self._lock:
                self._threads.pop(job, None)
                self._workers.discard(threading.current_thread())

    def _stopped(self, job: str, owner: str, state: dict, *writers: "_Files") -> bool:
        """Cancelled, or the server is stopping (the job is then failed): files removed."""
        closing = self._closing.is_set()
        if not closing and not self._cancelled(job):
            return False
        for writer in writers:
            writer.discard()
        shutil.rmtree(self.directory / job, ignore_errors=True)
        if closing:
            state["error"] = "the server stopped before the export finished; start a new export"
            self._finish(job, owner, FAILED, state)
        return True

    def _finish(self, job: str, owner: str, status: str, state: dict) -> None:
        """Record the job's final status and drop its thread from ``_threads`` in one step
        (under the lock), so that whoever sees the job finished also sees it no longer
        running here: a sweep then removes it once it expires, even while the thread is
        still finishing (closing the audit record)."""
        with self._lock:
            self.store.job_put(job, KIND, owner, status, _json(state), self.clock())
            self._threads.pop(job, None)

    def _cancelled(self, job: str) -> bool:
        row = self.store.job_get(job)
        return row is None or row[2] == CANCELLED


class _Files:
    """NDJSON files per resource type, a new part every ``per_file`` resources."""

    def __init__(self, folder: Path, per_file: int, prefix: str = ""):
        self.folder = folder
        self.per_file = per_file
        self.prefix = prefix                              # of the file names
        self.open: dict[str, list] = {}                  # type -> [file, lines in it, part]
        self.done: list[dict] = []                       # {type, name, count}
        self.count = 0

    def write(self, type_: str, body: bytes) -> None:
        entry = self.open.get(type_)
        if entry is None or entry[1] >= self.per_file:
            part = 1
            if entry is not None:
                self._finish(type_, entry)
                part = entry[2] + 1
            name = f"{self.prefix}{type_}-{part}.ndjson"
            entry = self.open[type_] = [open(self.folder / name, "wb", buffering=1 << 20), 0, part]
        entry[0].write(body + b"\n")
        entry[1] += 1
        self.count += 1

    def _finish(self, type_: str, entry: list) -> None:
        entry[0].close()
        self.done.append({"type": type_, "name": os.path.basename(entry[0].name), "count": entry[1]})

    def close(self) -> None:
        for type_, entry in self.open.items():
            if not entry[0].closed:
                self._finish(type_, entry)
        self.open.clear()

    def discard(self) -> None:
        """Close every file, ignoring errors (their folder is removed next)."""
        for entry in self.open.values():
            try:
                entry[0].close()
            except OSError:
                pass
        self.open.clear()

    def manifest(self) -> list[dict]:
        return sorted(self.done, key=lambda d: (d["type"], int(d["name"].rsplit("-", 1)[1].split(".")[0])))


def _deletion(type_: str, id_: str) -> bytes:
    """One line of the manifest's ``deleted`` files: a transaction Bundle with one DELETE."""
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction",
                         "entry": [{"request": {"method": "DELETE", "url": f"{type_}/{id_}"}}]})


def _json(state: dict) -> str:
    return orjson.dumps(state).decode()


def _plausible(job: str) -> bool:
    return len(job) == 32 and all(c in "0123456789abcdef" for c in job)
