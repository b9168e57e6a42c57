"""Persistence behind one Repository protocol; ``sqlite/`` and ``postgres/`` implement it
(sharing ``sql/``).

Only ``app.py`` and ``cli.py`` pick an implementation (``open_repository``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol


@dataclass(frozen=True)
class Stored:
    """One version of a resource as stored. ``body`` is the JSON (with meta) or None for a delete."""
    type: str
    id: str
    version: int
    updated: int            # epoch ms
    deleted: bool
    body: bytes | None
    seq: int = 0            # position in the change feed (commit order)
    method: str = ""        # POST | PUT | PATCH | DELETE
    patient: str | None = None  # the Patient it belongs to: its id, '*' for several, None for none


@dataclass(frozen=True)
class FeedEntry:
    seq: int
    type: str
    id: str
    version: int
    method: str
    updated: int
    tx: int


@dataclass(frozen=True)
class AuditRow:
    """One record of the hash-chained audit log (``access/audit.py``, docs/audit.md).
    ``body`` is an AuditEvent's JSON; ``hash = audit_hash(prev, seq, body)``."""
    seq: int
    recorded: int           # epoch ms
    patient: str | None     # the Patient id the record concerns (the citizen's access log)
    emergency: bool         # emergency access, for review
    body: bytes
    prev: bytes             # the previous row's hash (GENESIS for the first)
    hash: bytes


# A new audit row before it is appended: (recorded ms, patient, emergency, AuditEvent JSON).
NewAuditRow = tuple[int, "str | None", bool, bytes]

AUDIT_HEAD = "audit.head"       # setting: "<seq>:<hash hex>" of the newest audit row
GENESIS = bytes(32)             # ``prev`` of the first audit row


def audit_hash(prev: bytes, seq: int, body: bytes) -> bytes:
    """The chain hash of one audit row: sha256(prev || seq as 8-byte big-endian || body)."""
    return hashlib.sha256(prev + seq.to_bytes(8, "big") + body).digest()


def parse_head(text: str | None) -> tuple[int, bytes] | None:
    """``(seq, hash)`` from an ``AUDIT_HEAD`` setting value ("<seq>:<hex>"); None when absent
    or malformed."""
    if not text:
        return None
    seq, _, digest = text.partition(":")
    try:
        return int(seq), bytes.fromhex(digest)
    except ValueError:
        return None


@dataclass
class Page:
    """One page of search results: keys in order, matches ``total`` when counted."""
    keys: list              # opaque row keys of the matches, in order
    total: int | None
    has_more: bool
    snapshot: int           # ceiling key for stable paging
    loaded: list | None = None   # the resources of ``keys``, when the backend read them with the keys


class UnitOfWork(Protocol):
    """Reads and writes inside one atomic database transaction that holds the write lock."""
    def read(self, type: str, id: str) -> Stored | None: ...
    def exists(self, type: str, id: str) -> bool: ...
    def search(self, query: Any) -> Page: ...
    def load(self, keys: list) -> list[Stored]: ...
    def put(self, type: str, id: str, resource: dict | None, method: str,
            expected_version: int | None = None, values: list | None = None) -> Stored: ...
    def fresh_id(self) -> str: ...
    def feed(self, after: int, limit: int) -> list[FeedEntry]: ...
    def get_cursor(self, name: str) -> int: ...
    def set_cursor(self, name: str, seq: int) -> None: ...
    def set_setting(self, name: str, value: str) -> None: ...
    def bodies_of_type(self, type: str) -> list[bytes]: ...
    def reindex(self, types: tuple | None) -> int: ...
    def on_rollback(self, hook: Callable[[], None]) -> None: ...
    def append_audit(self, rows: list[NewAuditRow]) -> tuple[int, bytes]: ...
    def add_grant(self, patient: str, hpr: str, until_ms: int, reason: str, created_ms: int) -> None: ...


class Repository(Protocol):
    """What services need from a store; ``tests/store`` is its contract suite."""
    registry: Any
    index_format: int
    def new_id(self) -> str: ...
    def unit(self) -> Any: ...                     # context manager yielding a UnitOfWork
    def read(self, type: str, id: str) -> Stored | None: ...
    def vread(self, type: str, id: str, version: int) -> Stored | None: ...
    def search(self, query: Any) -> Page: ...
    def load(self, keys: list, ahead: Any = None) -> list[Stored]: ...
    def includes(self, keys: list, includes: list) -> list: ...
    def pid_of(self, resource_type: str | None, param: Any) -> int | None: ...
    def key_of(self, type: str, id: str) -> int | None: ...
    def compartment(self, type: str, id: str, params: list) -> tuple[list[int], list[int]]: ...
    def members_ahead(self, type: str, id: str, params: list, count: int) -> Any: ...
    def filter_keys(self, keys: list, since: int | None, types: tuple | None) -> list: ...
    def history(self, type: str | None, id: str | None, since: int | None, at: tuple[int, int] | None,
                count: int, offset: int) -> tuple[list[Stored], int]: ...
    def feed(self, after: int, limit: int) -> list[FeedEntry]: ...
    def cursor(self, name: str) -> int: ...
    def bodies_of_type(self, type: str) -> list[bytes]: ...
    def get_setting(self, name: str) -> str | None: ...
    def is_empty(self) -> bool: ...
    def type_counts(self) -> dict[str, int]: ...
    # the audit log (access/audit.py): appended in its own write transaction, read for
    # verification, the citizen's access log and privacy officers' searches
    def append_audit(self, rows: list[NewAuditRow]) -> tuple[int, bytes]: ...
    def audit_rows(self, after_seq: int, limit: int) -> list[AuditRow]: ...
    def audit_get(self, seq: int) -> AuditRow | None: ...
    def audit_for_patient(self, patient: str, count: int, offset: int = 0,
                          since: int | None = None) -> list[AuditRow]: ...
    def audit_search(self, patient: str | None = None, agent: str | None = None, since: int | None = None,
                     until: int | None = None, emergency: bool | None = None, count: int = 100,
                     offset: int = 0) -> list[AuditRow]: ...
    def grants(self, patient: str) -> list[tuple[str, int, str]]: ...
    # bulk export (services/export.py): current resources as (key, type, body) in key order,
    # keyset-paged; background jobs' rows (state as JSON text; a cancelled job stays cancelled)
    def export_batch(self, after_key: int, limit: int, types: tuple | None = None, since: int | None = None,
                     until: int | None = None, patients: tuple | None = None,
                     compartments: bool = False, filters: dict | None = None, deleted: bool = False,
                     ) -> list[tuple[int, str, bytes, str, int, str | None]]: ...
    def job_put(self, id: str, kind: str, owner: str, status: str, state: str, now_ms: int) -> None: ...
    def job_get(self, id: str) -> tuple | None: ...     # (kind, owner, status, created, updated, state)
    def job_delete(self, id: str) -> None: ...
    def close(self) -> None: ...


def open_repository(url: str, registry: Any, clock: Callable[[], int] | None = None,
                    new_id: Callable[[], str] | None = None, **options: Any) -> Repository:
    """The repository for a database URL (``sqlite:///PATH`` or ``postgresql://...``)."""
    if url.startswith("sqlite:"):
        from .sqlite.repository import SqliteRepository
        options.pop("pool_min", None)
        options.pop("pool_max", None)
        return SqliteRepository(url, registry, clock=clock, new_id=new_id, **options)
    if url.startswith(("postgresql:", "postgres:")):
        from .postgres.repository import PostgresRepository
        options.pop("synchronous", None)
        return PostgresRepository(url, registry, clock=clock, new_id=new_id, **options)
    from .. import errors
    raise errors.Invalid(f"unsupported database URL '{url}': use sqlite:///PATH or postgresql://...", "database")


def iter_chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def migration_statements(script: str | tuple[str, ...]) -> list[str]:
    """The statements of one schema migration: a script split on ";", or a tuple of
    statements as they are (for triggers and functions, which hold a ";" themselves)."""
    if isinstance(script, tuple):
        return list(script)
    return [statement for statement in script.split(";") if statement.strip()]


def schema_version(url: str) -> int:
    """The number of migrations the backend for ``url`` defines (what ``enjournal migrate``
    brings a database to)."""
    if url.startswith("sqlite:"):
        from .sqlite.schema import MIGRATIONS
    else:
        from .postgres.schema import MIGRATIONS
    return len(MIGRATIONS)
