"""enjournal: Én innbygger – én journal. Norway's national e-health solutions on FHIR R4."""

__version__ = "0.1.0"
FHIR_VERSION = "4.0.1"
