"""Micro-benchmark: search index extraction, µs per resource.

    .venv/bin/python bench/extract_bench.py [path/to/hl7.fhir.r4.examples-4.0.1.tgz]

Prints the registry load time, the one-off compile time per resource type, and CPU µs/resource
for a Synthea-like Observation, a Synthea-like Patient and every example in the official
package (definitional resources such as StructureDefinition reported separately).
"""
from __future__ import annotations

import json
import sys
import tarfile
import time
from collections import defaultdict

TGZ = "/work/shared/data/hl7.fhir.r4.examples-4.0.1.tgz"
DEFINITIONS = {"SearchParameter", "StructureDefinition", "ValueSet", "CodeSystem", "ConceptMap",
               "OperationDefinition", "CapabilityStatement", "CompartmentDefinition", "NamingSystem",
               "ImplementationGuide", "StructureMap", "GraphDefinition", "MessageDefinition",
               "TerminologyCapabilities"}

SYNTHEA_OBSERVATION = {
    "resourceType": "Observation", "id": "0b7a6c52-8f3e-4a5e-9a0f-7f6d3c1b2a10",
    "meta": {"versionId": "1", "lastUpdated": "2024-05-01T10:00:00.000Z"},
    "status": "final",
    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                              "code": "vital-signs", "display": "vital-signs"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2", "display": "Body Height"}],
             "text": "Body Height"},
    "subject": {"reference": "Patient/5b2a1e0c-1b7e-4d0e-a6a2-1c1f3b8f9e11"},
    "encounter": {"reference": "Encounter/7c3d2f1e-2a4b-4c6d-8e0f-1a2b3c4d5e6f"},
    "effectiveDateTime": "2015-09-04T13:41:52-04:00",
    "issued": "2015-09-04T13:41:52.486-04:00",
    "valueQuantity": {"value": 176.4, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm"},
}

SYNTHEA_PATIENT = {
    "resourceType": "Patient", "id": "5b2a1e0c-1b7e-4d0e-a6a2-1c1f3b8f9e11",
    "meta": {"versionId": "1", "lastUpdated": "2024-05-01T10:00:00.000Z"},
    "identifier": [
        {"system": "https://github.com/synthetichealth/synthea", "value": "5b2a1e0c"},
        {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}],
                  "text": "Medical Record Number"},
         "system": "http://hospital.smarthealthit.org", "value": "5b2a1e0c"},
        {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "SS"}]},
         "system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-58-1234"}],
    "name": [{"use": "official", "family": "Nordmann", "given": ["Åse", "Kari"], "prefix": ["Mrs."]}],
    "telecom": [{"system": "phone", "value": "555-123-4567", "use": "home"}],
    "gender": "female", "birthDate": "1970-03-14",
    "address": [{"line": ["Storgata 1"], "city": "Tromsø", "state": "Troms", "postalCode": "9008",
                 "country": "NO"}],
    "maritalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                                  "code": "M", "display": "M"}], "text": "M"},
    "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "nb",
                                                "display": "Norwegian Bokmål"}]}}],
}


def distinct(resource: dict, n: int):
    """Copies with their own id and timestamps, so no cache sees a value twice."""
    for i in range(n):
        text = json.dumps(resource).replace(resource["id"], f"{i:08d}-{resource['id'][9:]}")
        text = text.replace("13:41:52", f"{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}")
        text = text.replace("1970-03-14", f"{1920 + i % 100}-03-{1 + i % 28:02d}")
        text = text.replace("2024-05-01T10:00:00.000Z", f"2024-05-01T10:00:00.{i % 1000:03d}Z")
        yield json.loads(text.replace("2024-05-01T10", f"2024-05-{1 + i // 1000 % 28:02d}T10"))


def per_resource_us(registry, resources, repeat: int) -> float:
    """CPU µs per resource (process time, so a busy shared machine distorts it less)."""
    t = time.process_time()
    for _ in range(repeat):
        for r in resources:
            registry.extract(r)
    return (time.process_time() - t) / repeat / len(resources) * 1e6


def load_examples(path: str) -> list[dict]:
    out = []
    with tarfile.open(path) as tar:
        for m in tar:
            if m.isfile() and m.name.endswith(".json") and not m.name.endswith("package.json"):
                data = json.load(tar.extractfile(m))
                if isinstance(data, dict) and "resourceType" in data:
                    out.append(data)
    return out


def main() -> None:
    t = time.perf_counter()
    from enjournal.fhir.searchparams import Registry
    registry = Registry.default()
    print(f"import + Registry.default(): {(time.perf_counter() - t) * 1000:.0f} ms")
    t = time.perf_counter()
    for rt in registry.resource_types():
        registry.extractor(rt)
    n = len(registry.resource_types())
    print(f"compile all {n} types: {(time.perf_counter() - t) * 1000:.0f} ms "
          f"({(time.perf_counter() - t) * 1000 / n:.2f} ms/type)")
    for name, res in (("Synthea-like Observation", SYNTHEA_OBSERVATION), ("Synthea-like Patient", SYNTHEA_PATIENT)):
        us = per_resource_us(registry, [res], 20000)
        fresh = per_resource_us(registry, list(distinct(res, 20000)), 1)
        print(f"{name}: {us:.1f} µs/resource repeated, {fresh:.1f} µs with distinct ids and times "
              f"({len(registry.extract(res))} index values)")
    path = sys.argv[1] if len(sys.argv) > 1 else TGZ
    try:
        examples = [r for r in load_examples(path) if r["resourceType"] in registry.resource_types()]
    except FileNotFoundError:
        print(f"{path} not found: skipping the official examples")
        return
    groups = defaultdict(list)
    for r in examples:
        groups["definitional" if r["resourceType"] in DEFINITIONS else "other"].append(r)
    for name, group in sorted(groups.items()):
        us = per_resource_us(registry, group, 5)
        print(f"official examples, {name}: {len(group)} resources, {us:.1f} µs/resource")
    by_type = defaultdict(list)
    for r in groups["other"]:
        by_type[r["resourceType"]].append(r)
    slowest = sorted(((per_resource_us(registry, rs, 3), t) for t, rs in by_type.items()), reverse=True)[:5]
    print("slowest types:", ", ".join(f"{t} {us:.0f} µs" for us, t in slowest))


if __name__ == "__main__":
    main()
