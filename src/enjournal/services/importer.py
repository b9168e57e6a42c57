"""``enjournal import``: load FHIR Bundles and NDJSON files into the store.

- a transaction or batch Bundle is processed as if POSTed to the server;
- a collection (or searchset) Bundle, a single resource and NDJSON lines become
  transactions of ``PUT Type/id`` (create-on-update keeps the ids, so references between
  them resolve) or ``POST`` for resources without an id.
A file that fails is reported with the entry that failed; the others still load.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from ..fhir import jsonio

from .. import errors
from .bundles import BundleService
from .resources import ResourceService

NDJSON_CHUNK = 1000


@dataclass
class ImportReport:
    resources: int = 0
    files: int = 0
    seconds: float = 0.0
    errors: list = field(default_factory=list)

    def summary(self) -> str:
        rate = self.resources / self.seconds if self.seconds else 0.0
        lines = [f"imported {self.resources} resources from {self.files} files in {self.seconds:.1f} s "
                 f"({rate:,.0f} resources/s), {len(self.errors)} errors"]
        lines += [f"  error: {e}" for e in self.errors[:50]]
        if len(self.errors) > 50:
            lines.append(f"  ... and {len(self.errors) - 50} more")
        return "\n".join(lines)


def _files(paths: list[str]) -> list[str]:
    out = []
    for path in paths:
        if os.path.isdir(path):
            for root, _dirs, names in os.walk(path):
                out.extend(os.path.join(root, n) for n in sorted(names) if n.endswith((".json", ".ndjson")))
        elif os.path.exists(path):
            out.append(path)
        else:
            raise errors.Invalid(f"no such file or directory: {path}")
    return sorted(out)


def import_paths(resources: ResourceService, paths: list[str], progress: bool = True) -> ImportReport:
    bundles = BundleService(resources)
    report = ImportReport()
    files = _files(paths)
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(files), unit="file", dynamic_ncols=True)
    for path in files:
        report.files += 1
        for label, bundle in _bundles_of(path, report):
            try:
                result = bundles.process(bundle, resources.settings.max_bundle_entries)
            except errors.FhirError as exc:
                where = ", ".join(e for issue in exc.issues for e in issue.expression)
                report.errors.append(f"{label}: {exc.message}" + (f" (at {where})" if where else ""))
                continue
            report.resources += sum(1 for e in result["entry"] if "_stored" in e)
            failed = [e for e in result["entry"] if "outcome" in e.get("response", {})]
            for e in failed:
                diag = e["response"]["outcome"]["issue"][0].get("diagnostics", "")
                report.errors.append(f"{label}: entry failed: {diag}")
        if bar is not None:
            bar.update(1)
            elapsed = time.perf_counter() - start
            bar.set_postfix(resources=report.resources, rate=f"{report.resources / max(elapsed, 1e-9):,.0f}/s")
    if bar is not None:
        bar.close()
    report.seconds = time.perf_counter() - start
    return report


def _bundles_of(path: str, report: ImportReport) -> Iterator[tuple[str, dict]]:
    name = os.path.basename(path)
    if path.endswith(".ndjson"):
        chunk: list = []
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    chunk.append(jsonio.loads(line))
                except jsonio.JSONDecodeError as exc:
                    report.errors.append(f"{name} line {number}: not valid JSON: {exc}")
                    continue
                if len(chunk) >= NDJSON_CHUNK:
                    yield f"{name} up to line {number}", as_transaction(chunk)
                    chunk = []
        if chunk:
            yield f"{name} (last lines)", as_transaction(chunk)
        return
    try:
        with open(path, "rb") as handle:
            data = jsonio.loads(handle.read())
    except (OSError, jsonio.JSONDecodeError) as exc:
        report.errors.append(f"{name}: cannot read JSON: {exc}")
        return
    if not isinstance(data, dict) or "resourceType" not in data:
        report.errors.append(f"{name}: not a FHIR resource")
        return
    if data["resourceType"] == "Bundle" and data.get("type") in ("transaction", "batch"):
        yield name, data
    elif data["resourceType"] == "Bundle" and data.get("type") in ("collection", "searchset", "document"):
        yield name, as_transaction([e.get("resource") for e in data.get("entry", []) if e.get("resource")])
    else:
        yield name, as_transaction([data])


def as_transaction(resources: list[Any]) -> dict:
    """A transaction Bundle that creates (or updates, keeping their ids) ``resources``."""
    entries = []
    for r in resources:
        if not isinstance(r, dict):
            continue
        rtype, rid = r.get("resourceType"), r.get("id")
        if rid:
            entries.append({"fullUrl": f"{rtype}/{rid}", "resource": r,
                            "request": {"method": "PUT", "url": f"{rtype}/{rid}"}})
        else:
            entries.append({"resource": r, "request": {"method": "POST", "url": str(rtype)}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}
