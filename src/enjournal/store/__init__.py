"""Persistence behind one Repository protocol; ``sqlite/`` (and later ``postgres/``) implement it.

Only ``app.py`` and ``cli.py`` pick an implementation (``open_repository``).
"""
from __future__ import annotations

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


@dataclass(frozen=True)
class FeedEntry:
    seq: int
    type: str
    id: str
    version: int
    method: str
    updated: int
    tx: int


@dataclass
class Page:
    """One page of search results: keys in order, matches ``total`` when counted."""
    keys: list              # opaque row keys of the matches, in order
    total: int | None
    has_more: bool
    snapshot: int           # ceiling key for stable paging


class UnitOfWork(Protocol):
    """Reads and writes inside one atomic database transaction."""
    def read(self, type: str, id: str) -> Stored | None: ...
    def exists(self, type: str, id: str) -> bool: ...
    def search_keys(self, query: Any, limit: int) -> list: ...
    def load(self, keys: list) -> list[Stored]: ...
    def put(self, type: str, id: str, resource: dict | None, method: str,
            expected_version: int | None = None, values: list | None = None) -> Stored: ...
    def set_cursor(self, name: str, seq: int) -> None: ...
    def fresh_id(self) -> str: ...


class Repository(Protocol):
    def read(self, type: str, id: str) -> Stored | None: ...
    def vread(self, type: str, id: str, version: int) -> Stored | None: ...
    def unit(self) -> Any: ...                     # context manager yielding a UnitOfWork
    def search(self, query: Any) -> Page: ...
    def load(self, keys: list) -> list[Stored]: ...
    def history(self, type: str | None, id: str | None, since: int | None, at: int | None,
                count: int, offset: int) -> tuple[list[Stored], int]: ...
    def feed(self, after: int, limit: int) -> list[FeedEntry]: ...
    def cursor(self, name: str) -> int: ...
    def close(self) -> None: ...


def open_repository(url: str, registry: Any, clock: Callable[[], int] | None = None,
                    new_id: Callable[[], str] | None = None, **options: Any) -> Repository:
    """The repository for a database URL (``sqlite:///path``)."""
    if url.startswith("sqlite:"):
        from .sqlite.repository import SqliteRepository
        return SqliteRepository(url, registry, clock=clock, new_id=new_id, **options)
    from .. import errors
    raise errors.Invalid(f"unsupported database URL '{url}': use sqlite:///PATH")


def iter_chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
