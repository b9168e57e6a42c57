"""``Patient/$everything`` (https://hl7.org/fhir/R4/patient-operation-everything.html):
the patient, every resource in the patient's compartment, and the resources those refer
to (practitioners, organisations, medications...), paged with ``_count``."""
from __future__ import annotations


from .. import errors
from ..fhir import dates
from ..fhir import query as fq
from ..fhir.compartments import compartment_params, compartment_types
from ..store import Page
from .resources import ResourceService, SearchResult


def everything(service: ResourceService, patient_id: str | None, params: list) -> SearchResult:
    since = None
    types: set[str] | None = None
    count = service.settings.max_page_size
    offset = 0
    echo = []
    for name, value in params:
        if name == "_since":
            since = dates.parameter_range(value, name)[0]
        elif name == "_type":
            types = {t for t in value.split(",") if t}
            for t in types:
                service.check_type(t)
        elif name == "_count":
            count = max(1, min(fq.count_number(value, "_count"), service.settings.max_page_size))
            continue
        elif name == "_offset":
            offset = fq.count_number(value, "_offset")
            continue
        elif name in ("_snapshot", "_format", "_pretty", "start", "end"):
            continue
        else:
            raise errors.Invalid(f"unknown $everything parameter '{name}'", name)
        echo.append((name, value))
    if patient_id is None:
        raise errors.NotSupported("Patient/$everything over all patients is not supported: use Bulk Data "
                                  "$export, or Patient/[id]/$everything", "Patient")
    patient = service.read("Patient", patient_id)
    ahead = None
    if offset == 0 and since is None and types is None:
        # the first page is the patient and its first members: read them while the whole
        # compartment is worked out (where the store can); load() reads only what it lacks
        ahead = service.repo.members_ahead("Patient", patient.id, _compartment_params(service), count)
    keys = _keys(service, patient.id, since, types)
    query = fq.SearchQuery("Patient", count=count, offset=offset, echo=echo)
    page_keys = keys[offset:offset + count]
    page = Page(page_keys, len(keys), offset + count < len(keys), 0)
    return SearchResult(query, page, service.repo.load(page_keys, ahead))


def everything_keys(service: ResourceService, patient_id: str, since: int | None, types: set | None) -> list:
    """Keys of everything about the patient, the patient first, then in storage order."""
    return _keys(service, service.read("Patient", patient_id).id, since, types)


def _keys(service: ResourceService, patient_id: str, since: int | None, types: set | None) -> list:
    repo = service.repo
    members, referenced = repo.compartment("Patient", patient_id, _compartment_params(service))
    keys = [repo.key_of("Patient", patient_id)] + members + referenced
    if since is not None or types is not None:
        keys = repo.filter_keys(keys, since, tuple(types) if types is not None else None)
    return list(dict.fromkeys(keys))



def _compartment_params(service: ResourceService) -> list:
    """(resource type, search parameter) for each parameter that places a resource in a
    Patient's compartment (the CompartmentDefinition)."""
    out = []
    for type_ in compartment_types("Patient"):
        for code in compartment_params("Patient", type_):
            param = service.registry.get(type_, code)
            if param is not None:
                out.append((type_, param))
    return out
