"""The change feed: every committed write, in commit order, exactly once per consumer.

A consumer names itself; its position is stored in the database in the same transaction
as whatever the handler writes, so a crash between the two is impossible: after a
restart it resumes at the first entry whose effects were not committed.

A consumer is a system actor of the platform: its reads and writes go through the guarded
repository under a system context named after it, so they are audited like any other.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

from ..access.context import current, system_context, use
from ..store import FeedEntry

Handler = Callable[[Any, list[FeedEntry]], None]   # (unit of work, entries) -> None


class FeedConsumer:
    def __init__(self, repo: Any, name: str, handler: Handler, batch: int = 500):
        self.repo = repo
        self.name = name
        self.handler = handler
        self.batch = batch
        self._stop = threading.Event()

    def position(self) -> int:
        return self.repo.cursor(self.name)

    def step(self) -> int:
        """Hand the next batch of entries to the handler; returns how many were handled."""
        if current() is None:
            with use(system_context(f"feed consumer {self.name}")):
                return self._step()
        return self._step()

    def _step(self) -> int:
        if not self.repo.feed(self.position(), 1):
            return 0         # cheap check without taking the write lock
        with self.repo.unit() as unit:
            # read position and entries under the write lock: another process may consume too
            entries = unit.feed(unit.get_cursor(self.name), self.batch)
            if not entries:
                return 0
            self.handler(unit, entries)
            unit.set_cursor(self.name, entries[-1].seq)
        return len(entries)

    def run(self, poll_seconds: float = 0.5) -> None:
        """Consume until ``stop()``; sleeps ``poll_seconds`` when the feed is drained."""
        while not self._stop.is_set():
            if self.step() == 0:
                self._stop.wait(poll_seconds)

    def stop(self) -> None:
        self._stop.set()
