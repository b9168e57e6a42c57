"""Custom SearchParameter resources (https://hl7.org/fhir/R4/searchparameter.html).

Storing an active SearchParameter makes it searchable at once: the registry is rebuilt
from the official definitions plus every active stored SearchParameter, and resources of
the affected types are reindexed in the same transaction. The registry's fingerprint is
kept in the database, so other worker processes notice the change and reload, and a
server whose definitions changed (an upgrade) reindexes on start.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from ..fhir import jsonio
from ..fhir.searchparams import Registry

log = logging.getLogger("enjournal.searchparameters")
SETTING = "registry-fingerprint"
CHECK_SECONDS = 1.0


class CustomSearchParameters:
    def __init__(self, repo: Any, resources: Any):
        self.repo = repo
        self.resources = resources
        self._next_check = 0.0
        resources.after_write["SearchParameter"] = self.on_write
        resources.before_use.append(self.refresh)

    def _use(self, registry: Registry) -> None:
        self.repo.registry = registry
        self.resources.registry = registry

    def build(self, stored_bodies: list[bytes]) -> Registry:
        registry = Registry.default()
        for body in stored_bodies:
            resource = jsonio.loads(body)
            if resource.get("status") == "active":
                registry = registry.with_custom(resource)
        return registry

    def _stamp(self, registry: Registry) -> str:
        """What the database records: the store's index format and the definitions' hash."""
        return f"{self.repo.index_format}:{registry.fingerprint}"

    def start(self) -> None:
        """Load stored custom parameters; reindex everything if the definitions (or the way
        the store keys its index) changed since the database was last indexed."""
        registry = self.build(self.repo.bodies_of_type("SearchParameter"))
        self._use(registry)
        stored = self.repo.get_setting(SETTING)
        if stored != self._stamp(registry):
            with self.repo.unit() as unit:
                if stored is not None:
                    began = time.perf_counter()
                    count = unit.reindex(None)
                    log.warning("search parameter definitions changed: reindexed %d resources in %.1f s",
                                count, time.perf_counter() - began)
                unit.set_setting(SETTING, self._stamp(registry))

    def refresh(self) -> None:
        """Reload when another process changed the definitions (checked at most once a second)."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + CHECK_SECONDS
        if self.repo.get_setting(SETTING) != self._stamp(self.resources.registry):
            self._use(self.build(self.repo.bodies_of_type("SearchParameter")))

    def on_write(self, unit: Any, type: str, old: bytes | None, new: dict | None) -> None:
        """After a SearchParameter is written in ``unit``: rebuild, reindex the affected types."""
        previous = self.resources.registry
        bases = set()
        for resource in (jsonio.loads(old) if old else None, new):
            if resource:
                bases.update(resource.get("base") or [])
        registry = self.build(unit.bodies_of_type("SearchParameter"))
        self._use(registry)
        unit.on_rollback(lambda: self._use(previous))
        types = sorted(registry.resource_types()) if {"Resource", "DomainResource"} & bases else sorted(bases)
        unit.reindex(tuple(t for t in types if registry.is_resource_type(t)))
        unit.set_setting(SETTING, self._stamp(registry))
