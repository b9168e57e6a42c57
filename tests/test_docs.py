"""Every setting, CLI command and $operation is documented (DESIGN.md style rule 7)."""
from __future__ import annotations

import re
from pathlib import Path

from enjournal.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
DOCS = "\n".join(p.read_text() for p in (ROOT / "docs").rglob("*.md")) + (ROOT / "README.md").read_text()


def test_every_setting_is_documented():
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in DOCS or s.env not in DOCS]
    assert not missing, f"settings missing from docs/: {missing}"


def test_every_cli_command_is_documented():
    cli = (ROOT / "src/enjournal/cli.py").read_text()
    commands = re.findall(r'sub\.add_parser\("([a-z-]+)"', cli)
    assert commands
    missing = [c for c in commands if f"`enjournal {c}`" not in DOCS]
    assert not missing, f"commands missing from docs/cli.md: {missing}"


def test_every_operation_is_documented():
    api = "".join((ROOT / "src/enjournal/web" / name).read_text() for name in ("fhir_api.py", "audit_api.py", "bulk_api.py"))
    operations = set(re.findall(r'Route\("[^"]*\$([a-z-]+)"', api))
    assert operations
    missing = [op for op in operations if f"`${op}`" not in DOCS]
    assert not missing, f"operations missing from docs/operations.md: {missing}"
