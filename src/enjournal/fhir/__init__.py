"""Pure FHIR R4 knowledge: no I/O. Search parameters, query parsing, bundles, validation."""
