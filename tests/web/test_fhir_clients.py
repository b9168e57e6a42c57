"""Real FHIR client libraries against the real server: fhirpy (SyncFHIRClient) and the SMART
on FHIR ``fhirclient`` models. They build their own URLs, encode values their own way, follow
``next`` links and parse our Bundles with their own models, so a search that works for
httpx but not for them fails here.
"""
from __future__ import annotations

import pytest
from fhirclient import client as smart_client
from fhirclient.models.observation import Observation as FcObservation
from fhirclient.models.patient import Patient as FcPatient
from fhirpy import SyncFHIRClient

from tests.conftest import start_server

FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
pytestmark = pytest.mark.filterwarnings("ignore:perform_resources:DeprecationWarning")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("clients"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def fhirpy(server):
    return SyncFHIRClient(server.base, authorization=server.auth["Authorization"],
                          extra_headers={"Accept": "application/fhir+json"})


@pytest.fixture(scope="module")
def smart(server):
    client = smart_client.FHIRClient(settings={"app_id": "enjournal-tests", "api_base": server.base + "/"})
    client.server.session.headers.update(server.auth)     # a system token from the built-in provider
    return client


# ---- fhirpy -----------------------------------------------------------------------------------

def test_fhirpy_create_search_and_page(fhirpy):
    ingrid = fhirpy.resource("Patient", name=[{"family": "Fjellheim", "given": ["Ingrid"]}], gender="female",
                             birthDate="1985-02-03", identifier=[{"system": FNR, "value": "15076500565"}])
    ingrid.save()
    assert ingrid.id
    created = set()
    for i in range(23):
        p = fhirpy.resource("Patient", name=[{"family": "Klientsen", "given": [f"Nr{i:02d}"]}],
                            birthDate=f"19{60 + i}-06-01")
        p.save()
        created.add(p.id)

    # fetch_all follows the next links to the end: every patient once
    paged = fhirpy.resources("Patient").search(family="klientsen").limit(4).fetch_all()
    assert len(paged) == 23 and {p.id for p in paged} == created
    assert fhirpy.resources("Patient").search(family="klientsen").count() == 23

    found = fhirpy.resources("Patient").search(name="ingrid").fetch_all()
    assert [p.id for p in found] == [ingrid.id]
    assert fhirpy.resources("Patient").search(identifier=f"{FNR}|15076500565").first().id == ingrid.id
    assert fhirpy.resources("Patient").search(name="nobody-by-that-name").fetch_all() == []

    # prefixes, AND of two values, sorting, descending
    born_70s = fhirpy.resources("Patient").search(family="klientsen", birthdate=["ge1970", "lt1980"]) \
        .sort("-birthdate").fetch_all()
    assert [p["birthDate"][:4] for p in born_70s] == [str(y) for y in range(1979, 1969, -1)]
    # a modifier, written the fhirpy way (name__exact -> name:exact)
    assert [p.id for p in fhirpy.resources("Patient").search(family__exact="Fjellheim").fetch_all()] == [ingrid.id]
    assert fhirpy.resources("Patient").search(family__exact="fjellheim").fetch_all() == []


def test_fhirpy_reference_search_include_and_update(fhirpy):
    per = fhirpy.resource("Patient", name=[{"family": "Referansen", "given": ["Per"]}])
    per.save()
    for value in (120, 135, 150):
        fhirpy.resource("Observation", status="final", subject=per.to_reference(),
                        code={"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                        valueQuantity={"value": value, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org",
                                       "code": "mm[Hg]"}).save()
    obs = fhirpy.resources("Observation").search(subject=per, **{"value-quantity": "gt130"}).fetch_all()
    assert sorted(o["valueQuantity"]["value"] for o in obs) == [135, 150]
    chained = fhirpy.resources("Observation").search(**{"subject:Patient.name": "referansen"}).fetch_all()
    assert len(chained) == 3
    bundle = fhirpy.resources("Observation").search(subject=per).include("Observation", "subject").fetch_raw()
    modes = sorted((e["search"]["mode"], e["resource"]["resourceType"]) for e in bundle.entry)
    assert modes == [("include", "Patient"), ("match", "Observation"), ("match", "Observation"),
                     ("match", "Observation")]
    # an update is searchable at once, under the new value only
    per["name"] = [{"family": "Omdøpt", "given": ["Per"]}]
    per.save()
    assert [p.id for p in fhirpy.resources("Patient").search(name="omdøpt").fetch_all()] == [per.id]
    assert fhirpy.resources("Patient").search(family="referansen").fetch_all() == []


# ---- fhirclient (SMART on FHIR models) --------------------------------------------------------

def test_fhirclient_create_where_and_pages(smart):
    server = smart.server
    ids = set()
    for i in range(7):
        p = FcPatient({"name": [{"family": "Smartheim", "given": [f"Ola{i}"]}], "gender": "male" if i % 2 else "female",
                       "birthDate": f"200{i}-01-01"})
        created = p.create(server)
        assert created["resourceType"] == "Patient" and created["id"]
        ids.add(created["id"])

    everyone = FcPatient.where(struct={"family": "smartheim"}).perform_resources(server)
    assert all(isinstance(p, FcPatient) for p in everyone)
    assert {p.id for p in everyone} == ids
    men = FcPatient.where(struct={"family": "smartheim", "gender": "male"}).perform_resources(server)
    assert sorted(p.name[0].given[0] for p in men) == ["Ola1", "Ola3", "Ola5"]
    # fhirclient's $gt / $lt operators become date prefixes
    young = FcPatient.where(struct={"family": "smartheim", "birthdate": {"$gt": "2004"}}).perform_resources(server)
    assert sorted(p.birthDate.isostring for p in young) == ["2005-01-01", "2006-01-01"]
    old = FcPatient.where(struct={"family": "smartheim", "birthdate": {"$lt": "2002"}}).perform_resources(server)
    assert sorted(p.birthDate.isostring for p in old) == ["2000-01-01", "2001-01-01"]

    # following next links page by page, each patient exactly once
    search = FcPatient.where(struct={"family": "smartheim", "_count": "2", "_sort": "birthdate"})
    pages = list(search.perform_iter(server))
    assert len(pages) == 4
    paged = [e.resource.birthDate.isostring for page in pages for e in page.entry or []]
    assert paged == [f"200{i}-01-01" for i in range(7)]


def test_fhirclient_reference_search(smart):
    server = smart.server
    kari = FcPatient({"name": [{"family": "Modellsen", "given": ["Kari"]}]}).create(server)
    obs = FcObservation({"status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
                         "subject": {"reference": f"Patient/{kari['id']}"},
                         "valueQuantity": {"value": 5.4, "unit": "mmol/L"}}).create(server)
    found = FcObservation.where(struct={"subject": f"Patient/{kari['id']}", "code": "http://loinc.org|2339-0"}) \
        .perform_resources(server)
    assert [o.id for o in found] == [obs["id"]]
    assert found[0].valueQuantity.value == 5.4
    assert FcObservation.where(struct={"subject": f"Patient/{kari['id']}", "code": "http://loinc.org|0000-0"}) \
        .perform_resources(server) == []
