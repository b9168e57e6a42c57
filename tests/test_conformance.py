"""Conformance against the official FHIR R4 examples (hl7.fhir.r4.examples 4.0.1).

Every non-definition example in the package is written with ``PUT /{type}/{id}`` to a real
server over HTTP, read back and compared with the original (ignoring ``meta.versionId`` and
``meta.lastUpdated``), then searched by every value the server indexes for it: one search
per (example, parameter, value), each narrowed with ``_id`` so it is cheap. The examples the
server rejects, the round-trip differences and the searches that miss are explicit lists
below, each entry with a one-line reason, so any change (a regression or a fix) fails the test
and the lists are kept true. The counts and lists are described in docs/conformance.md.

Set ``ENJOURNAL_CONFORMANCE_REPORT=/some/file.json`` to write the full report.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from enjournal.fhir.index_values import (DATE_MAX, DATE_MIN, Composite, DateRange, IdentifierOfType, Number,
                                         Quantity, Reference, String, Token, Uri)
from enjournal.fhir.searchparams import Registry

from tests.conftest import start_server

# Conformance and terminology resources (the spec's Conformance and Terminology modules) are
# definitions, not examples: the server is not a terminology or profile registry. Knowledge
# artifacts (Library, PlanDefinition, Measure, Questionnaire, ...) are ordinary examples.
DEFINITION_TYPES = frozenset({
    "StructureDefinition", "SearchParameter", "ValueSet", "CodeSystem", "ConceptMap",
    "OperationDefinition", "CompartmentDefinition", "CapabilityStatement", "ImplementationGuide",
    "NamingSystem", "StructureMap", "GraphDefinition", "MessageDefinition",
    "TerminologyCapabilities", "ExampleScenario",
})

# ---- known results (update these when the server changes; every entry has a reason) -----------

# Examples the server rejects with a 4xx: "Type/id" -> why. Each was checked by hand.
KNOWN_INVALID: dict[str, str] = {
    "Questionnaire/qs1": "invalid example: 32 of its 87 items (the nested 'display' items) have no "
                         "linkId, which is required (Questionnaire.item.linkId 1..1)",
    # by design: the server keeps its own append-only, hash-chained audit log (docs/audit.md),
    # so clients cannot write AuditEvents (405)
    **{f"AuditEvent/{i}": "the audit log is append-only: AuditEvents are written by the server"
       for i in ("example", "example-error", "example-media", "example-search", "example-disclosure",
                 "example-login", "example-logout", "example-rest", "example-pixQuery")},
}

# Examples read back different from what was written (beyond meta.versionId/lastUpdated).
KNOWN_ROUND_TRIP_DIFFERENCES: dict[str, str] = {
}

# Searches by an example's own indexed value that do not find it, grouped by cause:
# cause -> {(Type/id, search parameter code), ...}.
_BAD_TARGET = ("invalid example: it refers to a resource type the element does not allow; the server stores it "
               "(no target-type check on write) but the query parser rejects that type for the parameter")

KNOWN_SEARCH_MISSES: dict[str, set[tuple[str, str]]] = {
    _BAD_TARGET: {
        ("DeviceMetric/example", "parent"),                     # DeviceDefinition; parent is Reference(Device)
        ("MedicationRequest/medrx0301", "intended-dispenser"),  # Practitioner; dispenseRequest.performer is
                                                                # Reference(Organization)
        ("Observation/clinical-gender", "performer"),           # Encounter: not an Observation.performer type
    },
}

# Index values no search can express: a composite whose coded component is a CodeableConcept
# with only text (composite search matches codes; there is no :text inside a composite).
TEXT_ONLY = "composite component has only text (no system or code)"


# ---- the run -------------------------------------------------------------------------------


@dataclass
class Report:
    files: int = 0
    definitions: int = 0
    examples: list = field(default_factory=list)          # "Type/id" of every non-definition example
    stored: list = field(default_factory=list)
    rejected: dict = field(default_factory=dict)          # "Type/id" -> (status, diagnostics)
    equal: list = field(default_factory=list)
    different: dict = field(default_factory=dict)         # "Type/id" -> [difference, ...]
    searches: int = 0
    found: int = 0
    by_param_type: dict = field(default_factory=dict)     # search parameter type -> [searches, found]
    misses: dict = field(default_factory=dict)            # (Type/id, code) -> [(query, why), ...]
    unsearchable: dict = field(default_factory=dict)      # (Type/id, code) -> why no query was built
    seconds: dict = field(default_factory=dict)


def load_examples(package: Path) -> tuple[list[tuple[str, dict, bytes]], int, int]:
    """(file name, resource, raw bytes) for every non-definition example, plus the number of
    resource files and of definitions skipped."""
    examples, files, definitions = [], 0, 0
    for path in sorted(package.glob("*.json")):
        raw = path.read_bytes()
        resource = json.loads(raw)
        if "resourceType" not in resource:           # package.json, .index.json
            continue
        files += 1
        if is_definition(resource):
            definitions += 1
            continue
        examples.append((path.name, resource, raw))
    return examples, files, definitions


def is_definition(resource: dict) -> bool:
    """A definition type, or a Bundle holding nothing but definitions (the spec's registries)."""
    if resource["resourceType"] in DEFINITION_TYPES:
        return True
    if resource["resourceType"] == "Bundle":
        types = {(e.get("resource") or {}).get("resourceType") for e in resource.get("entry", ())}
        return bool(types) and types <= DEFINITION_TYPES
    return False


# JSON with numbers kept as their text, so 72.50 and 72.5 (or 1 and 1.0) differ.
def _exact(raw: bytes | str):
    return json.loads(raw, parse_float=lambda s: ("#decimal", s), parse_int=lambda s: ("#integer", s))


def _without_server_meta(resource: dict) -> dict:
    resource = dict(resource)
    meta = dict(resource.get("meta") or {})
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    if meta:
        resource["meta"] = meta
    else:
        resource.pop("meta", None)
    return resource


def differences(a, b, path: str = "") -> list[str]:
    """Where two JSON values (from ``_exact``) differ, as ``path: a != b`` lines."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in list(a) + [k for k in b if k not in a]:
            if key not in b:
                out.append(f"{path}.{key}: missing on read")
            elif key not in a:
                out.append(f"{path}.{key}: added on read")
            else:
                out += differences(a[key], b[key], f"{path}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items written, {len(b)} read"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    if a != b:
        return [f"{path}: {_show(a)} != {_show(b)}"]
    return []


def _show(v) -> str:
    if isinstance(v, tuple):
        return v[1]
    return json.dumps(v)[:80]


# ---- search queries built from index values ------------------------------------------------

def _esc(text: str) -> str:
    """Escape the search syntax characters (https://hl7.org/fhir/R4/search.html#escaping)."""
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("$", "\\$").replace("|", "\\|")


def _instant(ms: int) -> str:
    t = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}." \
           f"{t.microsecond // 1000:03d}Z"


def _num(x: float) -> str:
    return repr(float(x))


def _token(t: Token) -> str | None:
    if t.code is not None:
        return f"{_esc(t.system)}|{_esc(t.code)}" if t.system is not None else f"|{_esc(t.code)}"
    if t.system is not None:
        return f"{_esc(t.system)}|"
    return None


def _quantity_text(q: Quantity, prefix: str = "eq") -> str:
    text = f"{prefix}{_num(q.value)}"
    if q.code is not None or q.system is not None:
        return f"{text}|{_esc(q.system or '')}|{_esc(q.code or '')}"
    if q.unit is not None:
        return f"{text}||{_esc(q.unit)}"
    return text


def _reference_text(r: Reference) -> str | None:
    if r.url is not None:
        return _esc(r.url)
    if r.type is not None and r.id is not None:
        return f"{r.type}/{r.id}"
    return None


def queries_for(code: str, ptype: str, value) -> list[tuple[str, str]] | str:
    """The search parameters that must find a resource indexed with ``value`` under ``code``
    (ANDed), or a reason no such query can be written."""
    cls = type(value)
    if cls is Token:
        if ptype == "reference":             # a Reference.identifier
            text = _token(value)
            return [(f"{code}:identifier", text)] if text else "identifier without value"
        text = _token(value)
        if text is not None:
            return [(code, text)]
        if value.text:
            return [(f"{code}:text", _esc(value.text[:60]))]
        return "token without system, code or text"
    if cls is IdentifierOfType:
        return [(f"{code}:of-type", f"{_esc(value.type_system or '')}|{_esc(value.type_code)}|{_esc(value.value)}")]
    if cls is String:
        return [(code, _esc(value.exact[:60]))]
    if cls is DateRange:
        out = []
        if value.lo != DATE_MIN:
            out.append((code, f"ge{_instant(value.lo)}"))
        if value.hi != DATE_MAX:
            out.append((code, f"le{_instant(value.hi)}"))
        return out or "open date range"
    if cls in (Number, Quantity):
        if value.lo == value.hi == value.value:
            return [(code, _quantity_text(value) if cls is Quantity else f"eq{_num(value.value)}")]
        out = []
        if value.lo != float("-inf"):
            out.append((code, _quantity_text(value._replace(value=value.lo), "ge") if cls is Quantity
                        else f"ge{_num(value.lo)}"))
        if value.hi != float("inf"):
            out.append((code, _quantity_text(value._replace(value=value.hi), "le") if cls is Quantity
                        else f"le{_num(value.hi)}"))
        return out
    if cls is Reference:
        text = _reference_text(value)
        return [(code, text)] if text else "reference without type/id or url"
    if cls is Uri:
        return [(code, _esc(value.uri))]
    if cls is Composite:
        pieces = []
        for part in value.parts:       # the first value of each component that a search can express
            piece = next((p for p in map(_composite_piece, part) if p is not None), None)
            if piece is None:
                if all(type(v) is Token and v.system is None and v.code is None for v in part):
                    return TEXT_ONLY
                return f"composite component {part!r} cannot be written as a search value"
            pieces.append(piece)
        return [(code, "$".join(pieces))]
    return f"unknown index value {cls.__name__}"


def _composite_piece(v) -> str | None:
    cls = type(v)
    if cls is Token:
        return _token(v)
    if cls is Reference:
        return _reference_text(v)
    if cls is Uri:
        return _esc(v.uri)
    if cls is String:
        return _esc(v.exact[:60])
    if cls in (Quantity, Number):                # one value only: eq, or a bound of a Range
        prefix, x = ("eq", v.value) if v.lo == v.hi else ("ge", v.lo) if v.lo != float("-inf") else ("le", v.hi)
        return _quantity_text(v._replace(value=x), prefix) if cls is Quantity else f"{prefix}{_num(x)}"
    if cls is DateRange:
        return f"ge{_instant(v.lo)}" if v.lo != DATE_MIN else f"le{_instant(v.hi)}"
    return None


# ---- the conformance run (once per session) -----------------------------------------------

def run(package: Path, tmp_path: Path) -> Report:
    report = Report()
    examples, report.files, report.definitions = load_examples(package)
    registry = Registry.default()
    srv = start_server(tmp_path, validate_references=False, strict_validation=True)
    try:
        with httpx.Client(base_url=srv.base, timeout=60,
                          headers={"Accept": "application/fhir+json", **srv.auth,
                                   "Content-Type": "application/fhir+json"}) as client:
            t0 = time.perf_counter()
            stored: dict[str, bytes] = {}
            for _name, resource, raw in examples:
                key = f"{resource['resourceType']}/{resource.get('id')}"
                report.examples.append(key)
                resp = client.put(f"/{key}", content=raw)
                if resp.status_code >= 400:
                    report.rejected[key] = (resp.status_code, _diagnostics(resp))
                else:
                    report.stored.append(key)
                    stored[key] = raw
            t1 = time.perf_counter()
            reads: dict[str, dict] = {}
            for key, raw in stored.items():
                resp = client.get(f"/{key}")
                assert resp.status_code == 200, (key, resp.text[:300])
                body = resp.content
                # plain floats, not the server's own parsing: the values a correct server indexes
                reads[key] = json.loads(body)
                diff = differences(_without_server_meta(_exact(raw)), _without_server_meta(_exact(body)))
                if diff:
                    report.different[key] = diff
                else:
                    report.equal.append(key)
            t2 = time.perf_counter()
            for key, resource in reads.items():
                _search_example(client, registry, key, resource, report)
            t3 = time.perf_counter()
            report.seconds = {"write": round(t1 - t0, 1), "read": round(t2 - t1, 1), "search": round(t3 - t2, 1)}
    finally:
        srv.stop()
    out = os.environ.get("ENJOURNAL_CONFORMANCE_REPORT")
    if out:
        Path(out).write_text(json.dumps(_jsonable(report), indent=1, ensure_ascii=False))
    return report


def _diagnostics(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        return "; ".join(f"{i.get('diagnostics')} @ {','.join(i.get('expression', []))}"
                         for i in body.get("issue", []))
    except ValueError:
        return resp.text[:300]


def _search_example(client: httpx.Client, registry: Registry, key: str, resource: dict, report: Report) -> None:
    """Search ``resource`` (as read back) by each value the server indexes for it."""
    type_, id_ = key.split("/", 1)
    for code, value in registry.extract(resource):
        param = registry.get(type_, code)
        if param is None or code in ("_id",):
            continue
        built = queries_for(code, param.type, value)
        if isinstance(built, str):
            report.unsearchable.setdefault((key, code), []).append(built)
            continue
        report.searches += 1
        tally = report.by_param_type.setdefault(param.type, [0, 0])
        tally[0] += 1
        params = built + [("_id", id_), ("_summary", "count"), ("_total", "accurate")]
        resp = client.get(f"/{type_}", params=params)
        query = "&".join(f"{k}={v}" for k, v in built)
        if resp.status_code != 200:
            report.misses.setdefault((key, code), []).append((query, f"HTTP {resp.status_code}: {_diagnostics(resp)}"))
        elif resp.json().get("total") != 1:
            report.misses.setdefault((key, code), []).append((query, f"not found (value {value!r})"))
        else:
            report.found += 1
            tally[1] += 1


def _jsonable(report: Report) -> dict:
    d = dict(report.__dict__)
    d["misses"] = {f"{k[0]} {k[1]}": v for k, v in report.misses.items()}
    d["unsearchable"] = {f"{k[0]} {k[1]}": v for k, v in report.unsearchable.items()}
    d["different"] = report.different
    return d


@pytest.fixture(scope="module")
def report(examples_dir, tmp_path_factory) -> Report:
    return run(examples_dir, tmp_path_factory.mktemp("conformance"))


# ---- the assertions -------------------------------------------------------------------------

def summary(report: Report) -> str:
    missed = sum(len(v) for v in report.misses.values())
    return (f"{report.files} resources in the package, {report.definitions} definitions, "
            f"{len(report.examples)} examples: {len(report.stored)} stored, {len(report.rejected)} rejected; "
            f"{len(report.equal)} read back equal, {len(report.different)} different; "
            f"{report.searches} searches: {report.found} found, {missed} not found "
            f"({len(report.misses)} example/parameter pairs); "
            f"{sum(len(v) for v in report.unsearchable.values())} values not expressible; "
            f"seconds {report.seconds}; by parameter type [searches, found] {report.by_param_type}")


def test_counts(report):
    print(summary(report))
    assert len(report.examples) >= 700
    assert report.found + sum(len(v) for v in report.misses.values()) == report.searches


def test_every_example_is_stored_or_known_invalid(report):
    assert report.examples, "no examples found in the package"
    assert len(set(report.examples)) == len(report.examples), "two examples share a type and id"
    rejected = set(report.rejected)
    new = {k: report.rejected[k] for k in rejected - KNOWN_INVALID.keys()}
    fixed = KNOWN_INVALID.keys() - rejected
    assert not new, f"examples newly rejected: {new}"
    assert not fixed, f"examples in KNOWN_INVALID are now accepted (remove them): {sorted(fixed)}"
    assert len(report.stored) + len(report.rejected) == len(report.examples)


def test_every_stored_example_reads_back_equal(report):
    new = {k: v[:5] for k, v in report.different.items() if k not in KNOWN_ROUND_TRIP_DIFFERENCES}
    fixed = KNOWN_ROUND_TRIP_DIFFERENCES.keys() - report.different.keys()
    assert not new, f"examples newly read back different: {new}"
    assert not fixed, f"KNOWN_ROUND_TRIP_DIFFERENCES entries now read back equal (remove them): {sorted(fixed)}"


def test_every_indexed_value_finds_its_example(report):
    assert report.searches > 5000
    known = {pair: cause for cause, pairs in KNOWN_SEARCH_MISSES.items() for pair in pairs}
    new = {k: v[:3] for k, v in report.misses.items() if k not in known}
    fixed = known.keys() - report.misses.keys()
    assert not new, f"searches newly missing their example: {new}"
    assert not fixed, f"KNOWN_SEARCH_MISSES entries now found (remove them): {sorted(fixed)}"
    odd = {k: v for k, v in report.unsearchable.items() if set(v) != {TEXT_ONLY}}
    assert not odd, f"index values no search can express: {odd}"
