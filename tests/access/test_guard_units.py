"""A context that spans many write units (an import, the demo loader) audits each unit once,
with only what that unit wrote."""
from __future__ import annotations

import orjson

from enjournal.access.context import system_context, use
from enjournal.app import Platform
from enjournal.settings import Settings


def test_each_unit_of_a_long_context_gets_its_own_audit_record(tmp_path):
    platform = Platform(Settings(database=f"sqlite:///{tmp_path}/u.db"))
    try:
        with use(system_context("import")):
            for i in range(5):
                platform.resources.create("Organization", {"resourceType": "Organization", "name": f"Org {i}"})
        platform.audit.flush()
        rows = platform.store.audit_rows(0, 100)
        assert len(rows) == 5
        for row in rows:
            entities = [e for e in orjson.loads(row.body).get("entity", [])
                        if "Organization/" in e.get("what", {}).get("reference", "")]
            assert len(entities) == 1, entities
    finally:
        platform.close()
