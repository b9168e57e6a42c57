"""FHIR search over real HTTP (https://hl7.org/fhir/R4/search.html): every parameter type,
prefixes, modifiers, OR/AND, chaining and reverse chaining, _include/_revinclude, sorting,
paging, result parameters, system and compartment search, and bad or hostile input.

One module-scoped server holds a small, fixed clinical data set (below); each test names
the resources it expects, so a wrong match, a missing match or a wrong order fails it.
"""
from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import start_server

FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
TAGS = "http://example.org/tags"
LOCAL = "http://example.org/codes"


# ---- the data set ---------------------------------------------------------------------

def _patient(id_, family, given, *, gender=None, birth=None, active=None, city=None, extra=None):
    res = {"resourceType": "Patient", "id": id_, "name": [{"family": family, "given": [given]}],
           "meta": {"tag": [{"system": TAGS, "code": "base"}]}}
    if gender:
        res["gender"] = gender
    if birth:
        res["birthDate"] = birth
    if active is not None:
        res["active"] = active
    if city:
        res["address"] = [{"line": ["Storgata 1"], "city": city}]
    res.update(extra or {})
    return res


def _qty(value, code=None, system=UCUM, unit=None):
    q = {"value": value, "unit": unit or code}
    if code:
        q["system"], q["code"] = system, code
    return q


def _obs(id_, code, *, subject="Patient/pat-kari", status="final", **extra):
    res = {"resourceType": "Observation", "id": id_, "status": status, "code": code}
    if subject:
        res["subject"] = {"reference": subject} if isinstance(subject, str) else subject
    res.update(extra)
    return res


def _loinc(code, display=None):
    coding = {"system": LOINC, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


KARI = _patient("pat-kari", "Nordmann", "Kari", gender="female", birth="1980-05-17", active=True, city="Tromsø",
                extra={"communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "nb"}]}}],
                       "identifier": [
                    {"system": FNR, "value": "02013299997"},
                    {"type": {"coding": [{"system": V2_0203, "code": "MR"}]},
                     "system": "http://sykehus.example.no/pasient", "value": "MR-1001"}],
                       "meta": {"tag": [{"system": TAGS, "code": "base"}, {"system": TAGS, "code": "vip"}],
                                "profile": ["http://example.org/StructureDefinition/test-patient"],
                                "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                              "code": "R"}]}})
OLA = _patient("pat-ola", "Nordmann", "Ola", gender="male", birth="1975-03-01", active=False, city="Ålesund",
               extra={"identifier": [{"system": FNR, "value": "30108299920"}]})
JOSE = _patient("pat-jose", "García", "José", gender="male", birth="2020-10-30")
BJORN = _patient("pat-bjorn", "Ærøy", "Bjørn", gender="other", birth="2020-10")
ANON = _patient("pat-anon", "Zeta", "Zed")                                  # no gender, no birth date
ANNA = _patient("pat-anna", "Smith,Jones", "Anna", gender="female", birth="1990-01-01")
PATIENT_IDS = {"pat-kari", "pat-ola", "pat-jose", "pat-bjorn", "pat-anon", "pat-anna"}

RESOURCES = [
    KARI, OLA, JOSE, BJORN, ANON, ANNA,
    {"resourceType": "Encounter", "id": "enc-1", "status": "finished",
     "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
     "subject": {"reference": "Patient/pat-kari"},
     "period": {"start": "2020-10-30T08:00:00Z", "end": "2020-10-30T18:00:00Z"}},
    {"resourceType": "Encounter", "id": "enc-2", "status": "in-progress",
     "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
     "subject": {"reference": "Patient/pat-ola"}, "period": {"start": "2021-01-01T00:00:00Z"}},
    _obs("obs-bp", {**_loinc("85354-9", "Blood pressure panel"), "text": "Blodtrykk"},
         text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Blodtrykk 120/80</div>'},
         encounter={"reference": "Encounter/enc-1"}, effectiveDateTime="2020-10-30T10:00:00+02:00",
         component=[{"code": _loinc("8480-6"), "valueQuantity": _qty(120, "mm[Hg]")},
                    {"code": _loinc("8462-4"), "valueQuantity": _qty(80, "mm[Hg]")}]),
    _obs("obs-glu", _loinc("2339-0", "Glucose [Mass/volume] in Blood"),
         effectivePeriod={"start": "2020-10-01", "end": "2020-10-31"}, valueQuantity=_qty(5.4, "mg")),
    _obs("obs-sys-ola", _loinc("8480-6", "Systolic blood pressure"), subject="Patient/pat-ola",
         encounter={"reference": "Encounter/enc-2"}, effectiveDateTime="2021-01-15T09:30:00Z",
         valueQuantity=_qty(130, "mm[Hg]")),
    _obs("obs-sys-jose", _loinc("8480-6"), subject="Patient/pat-jose", effectiveDateTime="2021-06-15",
         valueQuantity=_qty(95, "mm[Hg]")),
    _obs("obs-local", {"coding": [{"system": LOCAL, "code": "1234-5"}]}, subject="Patient/pat-jose",
         status="preliminary", effectiveDateTime="2021-02-01", valueQuantity={"value": 5.4, "unit": "mg"}),
    _obs("obs-nosys", {"coding": [{"code": "xyz"}]}, subject="Patient/pat-bjorn",
         valueQuantity=_qty(5.4, "g")),
    _obs("obs-ext", _loinc("8480-6"), subject="http://external.example/fhir/Patient/ext-1",
         valueQuantity=_qty(110, "mm[Hg]")),
    _obs("obs-ident", _loinc("8480-6"), subject={"identifier": {"system": FNR, "value": "02013299997"}},
         valueQuantity=_qty(150, "mm[Hg]")),
    _obs("panel-top", {"coding": [{"system": LOCAL, "code": "panel"}]}, subject="Patient/pat-ola",
         hasMember=[{"reference": "Observation/panel-sub"}]),
    _obs("panel-sub", {"coding": [{"system": LOCAL, "code": "panel-sub"}]}, subject="Patient/pat-ola",
         hasMember=[{"reference": "Observation/obs-glu"}]),
    {"resourceType": "DiagnosticReport", "id": "dr-1", "status": "final", "code": _loinc("58410-2"),
     "subject": {"reference": "Patient/pat-kari"}, "result": [{"reference": "Observation/obs-glu"}]},
    {"resourceType": "DiagnosticReport", "id": "dr-2", "status": "preliminary", "code": _loinc("58410-2"),
     "subject": {"reference": "Patient/pat-ola"}, "result": [{"reference": "Observation/obs-sys-ola"}]},
    {"resourceType": "RiskAssessment", "id": "ra-high", "status": "final",
     "subject": {"reference": "Patient/pat-kari"}, "prediction": [{"probabilityDecimal": 0.8}]},
    {"resourceType": "RiskAssessment", "id": "ra-low", "status": "final",
     "subject": {"reference": "Patient/pat-ola"}, "prediction": [{"probabilityDecimal": 0.25}]},
    {"resourceType": "RiskAssessment", "id": "ra-range", "status": "final",
     "subject": {"reference": "Patient/pat-jose"},
     "prediction": [{"probabilityRange": {"low": {"value": 0.4}, "high": {"value": 0.6}}}]},
    {"resourceType": "MolecularSequence", "id": "ms-1", "type": "dna", "coordinateSystem": 0,
     "variant": [{"start": 100, "end": 101}]},
    {"resourceType": "MolecularSequence", "id": "ms-2", "type": "dna", "coordinateSystem": 0,
     "variant": [{"start": 2500, "end": 2501}]},
    {"resourceType": "ValueSet", "id": "vs-bp", "status": "active",
     "url": "http://example.org/fhir/ValueSet/blood/pressure"},
    {"resourceType": "ValueSet", "id": "vs-blood", "status": "active", "url": "http://example.org/fhir/ValueSet/blood"},
    {"resourceType": "ValueSet", "id": "vs-other", "status": "active", "url": "http://other.example/ValueSet/x"},
    {"resourceType": "Practitioner", "id": "prac-kari", "name": [{"family": "Lege", "given": ["Kari"]}]},
    {"resourceType": "Medication", "id": "med-api", "code": {"coding": [{"system": LOCAL, "code": "api"}]}},
    {"resourceType": "Medication", "id": "med-tab", "code": {"coding": [{"system": LOCAL, "code": "tab"}]},
     "ingredient": [{"itemReference": {"reference": "Medication/med-api"}}]},
    {"resourceType": "MedicationRequest", "id": "mr-1", "status": "active", "intent": "order",
     "medicationReference": {"reference": "Medication/med-tab"}, "subject": {"reference": "Patient/pat-kari"}},
]


FIXTURE_IDS: dict[str, set[str]] = {}
for _r in RESOURCES:
    FIXTURE_IDS.setdefault(_r["resourceType"], set()).add(_r["id"])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("search"))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in RESOURCES]}
    resp = httpx.post(srv.base + "/", json=bundle, timeout=60, headers=srv.auth)
    assert resp.status_code == 200, resp.text
    yield srv
    srv.stop()


# ---- helpers ------------------------------------------------------------------------------

def _pairs(query: str) -> list[tuple[str, str]]:
    """``a=1&b=2`` as pairs, so httpx percent-encodes ``| + $ , \\`` the way a client must."""
    return [tuple(p.split("=", 1)) for p in query.split("&") if p] if query else []


def search(client, url: str, headers: dict | None = None) -> dict:
    path, _, query = url.partition("?")
    resp = client.get("/" + path.lstrip("/"), params=_pairs(query), headers=headers)
    assert resp.status_code == 200, (url, resp.status_code, resp.text)
    body = resp.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "searchset"
    return body


def ids(client, url: str) -> list[str]:
    """Ids of the matches, in the order the server returned them (all pages of up to 1000)."""
    if "_count" not in url:
        url += ("&" if "?" in url else "?") + "_count=1000"
    return [e["resource"]["id"] for e in search(client, url).get("entry", []) if e["search"]["mode"] == "match"]


def found(client, url: str, cross_check: bool = True) -> set[str]:
    """The ids matching ``url``. Where the data set has resources of the searched type, the
    search is run again with ``_id`` listing all of them: the server then seeks by id and
    checks every other parameter on each candidate, a different path that must agree."""
    got = ids(client, url)
    assert len(got) == len(set(got)), f"duplicates in {url}: {got}"
    path = url.partition("?")[0]
    everyone = FIXTURE_IDS.get(path.rsplit("/", 1)[-1])
    if everyone and cross_check and "_id=" not in url:
        again = ids(client, url + ("&" if "?" in url else "?") + "_id=" + ",".join(sorted(everyone)))
        assert set(again) == set(got), f"{url}: {sorted(got)} found by index, {sorted(again)} by id"
    return set(got)


def included(bundle: dict) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "include"}


def error(client, url: str, status: int = 400, headers: dict | None = None) -> dict:
    path, _, query = url.partition("?")
    resp = client.get("/" + path.lstrip("/"), params=_pairs(query), headers=headers)
    assert resp.status_code == status, (url, resp.status_code, resp.text)
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"][0]


def test_data_set_loaded(client):
    assert found(client, "Patient") == PATIENT_IDS


# ---- number (https://hl7.org/fhir/R4/search.html#number) -------------------------------------

@pytest.mark.parametrize("query, expected", [
    ("probability=0.8", {"ra-high"}),
    ("probability=0.80", {"ra-high"}),
    ("probability=0.5", set()),                     # the Range 0.4-0.6 is not inside [0.45, 0.55)
    ("probability=gt0.5", {"ra-high", "ra-range"}),  # a Range whose upper end lies above 0.5
    ("probability=lt0.5", {"ra-low", "ra-range"}),
    ("probability=ge0.8", {"ra-high"}),
    ("probability=le0.25", {"ra-low"}),
    ("probability=ne0.8", {"ra-low", "ra-range"}),
    ("probability=sa0.3", {"ra-high", "ra-range"}),  # starts after 0.3
    ("probability=eb0.3", {"ra-low"}),
    ("probability=ap0.78", {"ra-high"}),             # within 10 %
    ("probability=0.25,0.8", {"ra-low", "ra-high"}),
    ("probability=gt0.2&probability=lt0.7", {"ra-low", "ra-range"}),
])
def test_number(client, query, expected):
    assert found(client, f"RiskAssessment?{query}") == expected


@pytest.mark.parametrize("query, expected", [
    ("variant-start=100", {"ms-1"}),
    ("variant-start=1e2", {"ms-1"}),        # precision of 1e2 is [50, 150)
    ("variant-start=2.5e3", {"ms-2"}),
    ("variant-start=gt100", {"ms-2"}),
    ("variant-start=ge100", {"ms-1", "ms-2"}),
    ("variant-start=lt2500", {"ms-1"}),
    ("variant-start=101", set()),
])
def test_number_integer_and_precision(client, query, expected):
    assert found(client, f"MolecularSequence?{query}") == expected


# ---- date (https://hl7.org/fhir/R4/search.html#date) ---------------------------------------

@pytest.mark.parametrize("query, expected", [
    ("birthdate=1980", {"pat-kari"}),
    ("birthdate=1980-05", {"pat-kari"}),
    ("birthdate=1980-05-17", {"pat-kari"}),
    ("birthdate=1980-05-18", set()),
    ("birthdate=2020-10", {"pat-jose", "pat-bjorn"}),      # a month-precise birth date lies within
    ("birthdate=2020-10-30", {"pat-jose"}),               # ... but not within one day
    ("birthdate=eq2020", {"pat-jose", "pat-bjorn"}),
    ("birthdate=ne2020", {"pat-kari", "pat-ola", "pat-anna"}),
    ("birthdate=gt1980", {"pat-anna", "pat-jose", "pat-bjorn"}),
    ("birthdate=ge1980", {"pat-kari", "pat-anna", "pat-jose", "pat-bjorn"}),
    ("birthdate=lt1980-05-17", {"pat-ola"}),
    ("birthdate=le1980-05-17", {"pat-ola", "pat-kari"}),
    ("birthdate=sa1990-01-01", {"pat-jose", "pat-bjorn"}),
    ("birthdate=eb1980", {"pat-ola"}),
    ("birthdate=ap1980-05-15", {"pat-kari"}),
    ("birthdate=ge1975&birthdate=lt1990", {"pat-ola", "pat-kari"}),
    ("birthdate=1975,1990", {"pat-ola", "pat-anna"}),
    ("birthdate=>1980", {"pat-anna", "pat-jose", "pat-bjorn"}),           # DSTU1 comparators, as
    ("birthdate=<=1980-05-17", {"pat-ola", "pat-kari"}),                  # fhirclient sends them
])
def test_date_precision_and_prefixes(client, query, expected):
    assert found(client, f"Patient?{query}") == expected


@pytest.mark.parametrize("query, expected", [
    # obs-bp is 2020-10-30T10:00:00+02:00 (08:00Z); obs-glu is the period 2020-10-01 .. 2020-10-31
    ("date=2020-10-30", {"obs-bp"}),
    ("date=2020-10", {"obs-bp", "obs-glu"}),
    ("date=2020-10-30T08:00:00Z", {"obs-bp"}),
    ("date=2020-10-30T10:00:00+02:00", {"obs-bp"}),
    ("date=2020-10-30T10:00:00Z", set()),
    ("date=2020-10-30T08:00Z", {"obs-bp"}),               # minute precision covers the second
    ("date=ge2020-10-15&date=le2020-10-15", {"obs-glu"}),  # the period overlaps that day
    ("date=gt2020-10-30T12:00:00Z&_id=obs-bp,obs-glu", {"obs-glu"}),
    ("date=lt2020-10-30T12:00:00Z&_id=obs-bp,obs-glu", {"obs-bp", "obs-glu"}),
    ("date=sa2020-09-30&_id=obs-bp,obs-glu", {"obs-bp", "obs-glu"}),
    ("date=sa2020-10-01&_id=obs-bp,obs-glu", {"obs-bp"}),  # the period starts on, not after, 10-01
    ("date=eb2020-11&_id=obs-bp,obs-glu,obs-sys-ola", {"obs-bp", "obs-glu"}),
    ("date=ne2020-10-30&_id=obs-bp,obs-glu", {"obs-glu"}),
    ("date=2021", {"obs-sys-ola", "obs-sys-jose", "obs-local"}),
])
def test_date_on_datetime_and_period(client, query, expected):
    assert found(client, f"Observation?{query}") == expected


@pytest.mark.parametrize("query, expected", [
    ("date=2020-10-30", {"enc-1"}),
    ("date=2020-10-30T12:00:00Z", set()),                       # eq: the visit is not inside one second
    ("date=ge2020-10-30T12:00:00Z&date=le2020-10-30T12:00:00Z", {"enc-1"}),   # but it overlaps it
    ("date=ge2030-01-01", {"enc-2"}),                          # a period without end is ongoing
    ("date=lt2021", {"enc-1"}),
    ("date=sa2020-12-31", {"enc-2"}),
    ("date=eb2021", {"enc-1"}),
])
def test_date_period_semantics(client, query, expected):
    assert found(client, f"Encounter?{query}") == expected


# ---- string (https://hl7.org/fhir/R4/search.html#string) ------------------------------------

@pytest.mark.parametrize("query, expected", [
    ("name=kar", {"pat-kari"}),
    ("name=NORD", {"pat-kari", "pat-ola"}),
    ("family=nordmann", {"pat-kari", "pat-ola"}),
    ("given=ola", {"pat-ola"}),
    ("name=jose", {"pat-jose"}),               # accent-insensitive
    ("name=José", {"pat-jose"}),
    ("family=garcia", {"pat-jose"}),
    ("name=ærøy", {"pat-bjorn"}),              # æ, ø, å are letters of their own
    ("name=ÆRØY", {"pat-bjorn"}),
    ("name=aeroy", set()),
    ("given=bjørn", {"pat-bjorn"}),
    ("given=bjorn", set()),
    ("address=tromsø", {"pat-kari"}),
    ("address-city=ålesund", {"pat-ola"}),
    ("address-city=alesund", set()),
    ("address=storgata", {"pat-kari", "pat-ola"}),
    ("name:exact=Kari", {"pat-kari"}),
    ("name:exact=kari", set()),
    ("name:exact=Kar", set()),
    ("name:contains=ordm", {"pat-kari", "pat-ola"}),
    ("name:contains=RØ", {"pat-bjorn"}),
    ("name:contains=%", set()),                # LIKE wildcards are literal
    ("name:contains=_", set()),
    ("name=kari,ola", {"pat-kari", "pat-ola"}),
    ("family=nordmann&given=ola", {"pat-ola"}),
    ("family=Smith\\,Jones", {"pat-anna"}),      # an escaped comma is part of the value
    ("family=Smith,Jones", {"pat-anna"}),        # ... unescaped it is two values, each a prefix
    ("family:exact=Smith\\,Jones", {"pat-anna"}),
    ("family:exact=Smith,Jones", set()),
])
def test_string(client, query, expected):
    assert found(client, f"Patient?{query}") == expected


# ---- token (https://hl7.org/fhir/R4/search.html#token) --------------------------------------

@pytest.mark.parametrize("query, expected", [
    ("code=http://loinc.org|8480-6", {"obs-sys-ola", "obs-sys-jose", "obs-ext", "obs-ident"}),
    ("code=8480-6", {"obs-sys-ola", "obs-sys-jose", "obs-ext", "obs-ident"}),
    ("code=http://example.org/other|8480-6", set()),
    ("code=|xyz", {"obs-nosys"}),
    ("code=|8480-6", set()),                        # |code: only codes without a system
    ("code=xyz", {"obs-nosys"}),
    (f"code={LOCAL}|", {"obs-local", "panel-top", "panel-sub"}),
    ("code=1234-5,2339-0", {"obs-local", "obs-glu"}),
    ("code:text=glucose", {"obs-glu"}),             # the coding's display
    ("code:text=blodtrykk", {"obs-bp"}),            # CodeableConcept.text
    ("code:text=pressure", {"obs-bp", "obs-sys-ola"}),    # a word of a display, beside the text
    ("code:text=systolic blood", {"obs-sys-ola"}),
    ("code:text=blood pr", {"obs-bp", "obs-sys-ola"}),
    ("code:not=8480-6&status=final&_id=obs-bp,obs-glu,obs-sys-ola", {"obs-bp", "obs-glu"}),
    ("status=preliminary", {"obs-local"}),
    ("status:not=final", {"obs-local"}),
    ("combo-code=8480-6&subject=Patient/pat-kari", {"obs-bp"}),     # component codes too
])
def test_token_on_codes(client, query, expected):
    assert found(client, f"Observation?{query}") == expected


@pytest.mark.parametrize("query, expected", [
    (f"identifier={FNR}|02013299997", {"pat-kari"}),
    ("identifier=30108299920", {"pat-ola"}),
    (f"identifier={FNR}|", {"pat-kari", "pat-ola"}),
    ("identifier=http://sykehus.example.no/pasient|02013299997", set()),
    (f"identifier:of-type={V2_0203}|MR|MR-1001", {"pat-kari"}),
    (f"identifier:of-type={V2_0203}|MR|MR-9999", set()),
    (f"identifier:of-type={V2_0203}|NI|MR-1001", set()),
    ("gender=female", {"pat-kari", "pat-anna"}),
    ("gender=male,other", {"pat-ola", "pat-jose", "pat-bjorn"}),
    ("gender:not=male", {"pat-kari", "pat-anna", "pat-bjorn", "pat-anon"}),   # no gender is "not male"
    ("active=true", {"pat-kari"}),
    ("active=false", {"pat-ola"}),
    ("active:not=true", PATIENT_IDS - {"pat-kari"}),
    ("gender=female&active=true", {"pat-kari"}),
])
def test_token_identifier_gender_boolean(client, query, expected):
    assert found(client, f"Patient?{query}") == expected


# ---- reference (https://hl7.org/fhir/R4/search.html#reference) ------------------------------

@pytest.mark.parametrize("query, expected", [
    ("subject=Patient/pat-kari&code=2339-0,85354-9", {"obs-bp", "obs-glu"}),
    ("subject=pat-jose", {"obs-sys-jose", "obs-local"}),
    ("subject:Patient=pat-jose", {"obs-sys-jose", "obs-local"}),
    ("subject:Group=pat-jose", set()),
    ("patient=pat-jose", {"obs-sys-jose", "obs-local"}),
    ("subject=Patient/pat-jose,Patient/pat-bjorn", {"obs-sys-jose", "obs-local", "obs-nosys"}),
    ("subject=http://external.example/fhir/Patient/ext-1", {"obs-ext"}),
    (f"subject:identifier={FNR}|02013299997", {"obs-ident"}),
    ("subject:identifier=02013299997", {"obs-ident"}),
    ("encounter=Encounter/enc-1", {"obs-bp"}),
    ("has-member=Observation/obs-glu", {"panel-sub"}),
])
def test_reference(client, query, expected):
    assert found(client, f"Observation?{query}") == expected


def test_reference_with_single_target_type(client):
    # DiagnosticReport.result refers only to Observation, so a bare id means Observation/<id>
    assert found(client, "DiagnosticReport?result=obs-glu") == {"dr-1"}
    assert found(client, "DiagnosticReport?result=Observation/obs-sys-ola") == {"dr-2"}
    assert found(client, "MedicationRequest?medication=med-tab") == {"mr-1"}
    error(client, "DiagnosticReport?result=Patient/pat-kari")


# ---- composite (https://hl7.org/fhir/R4/search.html#composite) -------------------------------

@pytest.mark.parametrize("query, expected", [
    (f"code-value-quantity={LOINC}|8480-6$gt100", {"obs-sys-ola", "obs-ext", "obs-ident"}),
    (f"code-value-quantity={LOINC}|8480-6$lt100", {"obs-sys-jose"}),
    ("code-value-quantity=8480-6$130", {"obs-sys-ola"}),
    (f"code-value-quantity={LOINC}|2339-0$5.4|{UCUM}|mg", {"obs-glu"}),
    (f"code-value-quantity={LOINC}|2339-0$5.4|{UCUM}|g", set()),
    (f"code-value-quantity={LOINC}|8480-6$gt100,{LOINC}|2339-0$5.4", {"obs-sys-ola", "obs-ext", "obs-ident",
                                                                      "obs-glu"}),
    (f"component-code-value-quantity={LOINC}|8480-6$gt100", {"obs-bp"}),
    (f"component-code-value-quantity={LOINC}|8480-6$gt150", set()),
    # the value must belong to the same component as the code: diastolic is 80, systolic 120
    (f"component-code-value-quantity={LOINC}|8462-4$gt100", set()),
    (f"component-code-value-quantity={LOINC}|8462-4$80", {"obs-bp"}),
])
def test_composite(client, query, expected):
    assert found(client, f"Observation?{query}") == expected


# ---- quantity (https://hl7.org/fhir/R4/search.html#quantity) ---------------------------------

@pytest.mark.parametrize("query, expected", [
    ("value-quantity=5.4", {"obs-glu", "obs-local", "obs-nosys"}),
    (f"value-quantity=5.4|{UCUM}|mg", {"obs-glu"}),
    ("value-quantity=5.4||mg", {"obs-glu", "obs-local"}),          # code or unit
    ("value-quantity=5.4||g", {"obs-nosys"}),
    ("value-quantity=5", {"obs-glu", "obs-local", "obs-nosys"}),  # 5 means [4.5, 5.5)
    ("value-quantity=5.0", set()),                                 # 5.0 means [4.95, 5.05)
    ("value-quantity=130", {"obs-sys-ola"}),
    ("value-quantity=1.3e2", {"obs-sys-ola"}),                     # [125, 135)
    ("value-quantity=gt120", {"obs-sys-ola", "obs-ident"}),
    ("value-quantity=ge130", {"obs-sys-ola", "obs-ident"}),
    ("value-quantity=lt100", {"obs-glu", "obs-local", "obs-nosys", "obs-sys-jose"}),
    ("value-quantity=le95", {"obs-glu", "obs-local", "obs-nosys", "obs-sys-jose"}),
    ("value-quantity=sa120", {"obs-sys-ola", "obs-ident"}),
    ("value-quantity=eb6", {"obs-glu", "obs-local", "obs-nosys"}),
    (f"value-quantity=ne130|{UCUM}|mm[Hg]", {"obs-sys-jose", "obs-ext", "obs-ident"}),
    ("value-quantity=ap100", {"obs-sys-jose", "obs-ext"}),         # 90 .. 110
    (f"value-quantity=gt100|{UCUM}|mm[Hg]&value-quantity=lt140", {"obs-sys-ola", "obs-ext"}),
    ("value-quantity=95,150", {"obs-sys-jose", "obs-ident"}),
])
def test_quantity(client, query, expected):
    assert found(client, f"Observation?{query}") == expected


# ---- uri (https://hl7.org/fhir/R4/search.html#uri) ------------------------------------------

@pytest.mark.parametrize("query, expected", [
    ("url=http://example.org/fhir/ValueSet/blood", {"vs-blood"}),
    ("url=http://example.org/fhir/ValueSet/blo", set()),                 # no prefix match without :below
    ("url:below=http://example.org/fhir/ValueSet/blood", {"vs-blood", "vs-bp"}),
    ("url:below=http://example.org/fhir", {"vs-blood", "vs-bp"}),
    ("url:below=http://example.org/fhir/", {"vs-blood", "vs-bp"}),
    ("url:below=http://example.org/fhir/ValueSet/blo", set()),          # by path segment, not by letter
    ("url:below=http://other.example/ValueSet/x", {"vs-other"}),
    ("url:above=http://example.org/fhir/ValueSet/blood/pressure/systolic", {"vs-blood", "vs-bp"}),
    ("url:above=http://example.org/fhir/ValueSet/blood", {"vs-blood"}),
    ("url:above=http://example.org/fhir/ValueSet/bloodbank", set()),
    ("url=http://other.example/ValueSet/x,http://example.org/fhir/ValueSet/blood", {"vs-other", "vs-blood"}),
])
def test_uri(client, query, expected):
    assert found(client, f"ValueSet?{query}") == expected


def test_profile_tag_security(client):
    assert found(client, "Patient?_profile=http://example.org/StructureDefinition/test-patient") == {"pat-kari"}
    assert found(client, f"Patient?_tag={TAGS}|vip") == {"pat-kari"}
    assert found(client, "Patient?_tag=vip") == {"pat-kari"}
    assert found(client, f"Patient?_tag={TAGS}|base") == PATIENT_IDS
    assert found(client, f"Patient?_tag:not={TAGS}|vip") == PATIENT_IDS - {"pat-kari"}
    assert found(client, "Patient?_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R") == {"pat-kari"}
    assert found(client, "Patient?_security=N") == set()


# ---- :missing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("query, expected", [
    ("Patient?birthdate:missing=true", {"pat-anon"}),
    ("Patient?gender:missing=true", {"pat-anon"}),
    ("Patient?active:missing=false", {"pat-kari", "pat-ola"}),
    ("Patient?identifier:missing=false", {"pat-kari", "pat-ola"}),
    ("Observation?value-quantity:missing=true&code:missing=false", {"obs-bp", "panel-top", "panel-sub"}),
    ("Observation?encounter:missing=false", {"obs-bp", "obs-sys-ola"}),
    ("Observation?subject:missing=true", set()),
    ("ValueSet?url:missing=false", {"vs-bp", "vs-blood", "vs-other"}),
])
def test_missing(client, query, expected):
    assert found(client, query) == expected


# ---- chaining and reverse chaining (https://hl7.org/fhir/R4/search.html#chaining) -----------

@pytest.mark.parametrize("query, expected", [
    ("Observation?subject.name=ola", {"obs-sys-ola", "panel-top", "panel-sub"}),
    ("Observation?subject:Patient.name=ola", {"obs-sys-ola", "panel-top", "panel-sub"}),
    ("Observation?subject:Patient.birthdate=2020&code=8480-6", {"obs-sys-jose"}),
    ("Observation?patient.gender=female", {"obs-bp", "obs-glu"}),
    (f"Observation?subject.identifier={FNR}|30108299920&code=8480-6", {"obs-sys-ola"}),
    ("Observation?encounter.subject.name=kari", {"obs-bp"}),           # two hops
    ("Observation?encounter.date=ge2021", {"obs-sys-ola"}),
    ("DiagnosticReport?result.subject.name=kari", {"dr-1"}),
    ("DiagnosticReport?result.code=8480-6", {"dr-2"}),
    ("DiagnosticReport?result.value-quantity=gt100", {"dr-2"}),
    ("MedicationRequest?medication.ingredient.code=api", {"mr-1"}),
    ("Observation?subject.name=kari,ola&code=8480-6", {"obs-sys-ola"}),
    ("Observation?subject.name=nordmann&subject.gender=male", {"obs-sys-ola", "panel-top", "panel-sub"}),
    ("Observation?subject._id=pat-bjorn", {"obs-nosys"}),
    ("Observation?subject.name:exact=Ola&code=8480-6", {"obs-sys-ola"}),
    ("Observation?subject.name:exact=ola", set()),
])
def test_chained_parameters(client, query, expected):
    assert found(client, query) == expected


@pytest.mark.parametrize("query, expected", [
    ("Patient?_has:Observation:patient:code=1234-5", {"pat-jose"}),
    ("Patient?_has:Observation:subject:code=8480-6", {"pat-ola", "pat-jose"}),
    ("Patient?_has:Observation:subject:value-quantity=gt120", {"pat-ola"}),
    ("Patient?_has:DiagnosticReport:subject:status=final", {"pat-kari"}),
    ("Patient?_has:Observation:subject:code=8480-6&_has:Observation:subject:code=1234-5", {"pat-jose"}),
    ("Patient?_has:Observation:subject:_has:DiagnosticReport:result:status=preliminary", {"pat-ola"}),
    ("Encounter?_has:Observation:encounter:code=85354-9", {"enc-1"}),
    ("Observation?_has:DiagnosticReport:result:subject.name=kari", {"obs-glu"}),
])
def test_reverse_chaining(client, query, expected):
    assert found(client, query) == expected


# ---- _include and _revinclude (https://hl7.org/fhir/R4/search.html#include) -----------------

def test_include(client):
    bundle = search(client, "Observation?_id=obs-glu,obs-sys-ola&_include=Observation:subject")
    assert {e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "match"} == {"obs-glu",
                                                                                                 "obs-sys-ola"}
    assert included(bundle) == {"pat-kari", "pat-ola"}
    typed = search(client, "Observation?_id=obs-glu&_include=Observation:subject:Patient")
    assert included(typed) == {"pat-kari"}
    wrong_type = search(client, "Observation?_id=obs-glu&_include=Observation:subject:Group")
    assert included(wrong_type) == set()
    every = search(client, "Observation?_id=obs-bp&_include=Observation:*")
    assert included(every) == {"pat-kari", "enc-1"}
    star = search(client, "Observation?_id=obs-bp&_include=*")
    assert included(star) == {"pat-kari", "enc-1"}
    two = search(client, "Observation?_id=obs-bp&_include=Observation:subject&_include=Observation:encounter")
    assert included(two) == {"pat-kari", "enc-1"}


def test_include_does_not_repeat_matches(client):
    # panel-sub is both a match and a has-member target of panel-top: it appears once
    bundle = search(client, "Observation?_id=panel-top,panel-sub&_include=Observation:has-member")
    ids_ = [e["resource"]["id"] for e in bundle["entry"]]
    assert sorted(ids_) == ["obs-glu", "panel-sub", "panel-top"]
    assert included(bundle) == {"obs-glu"}


def test_revinclude(client):
    bundle = search(client, "Patient?_id=pat-jose&_revinclude=Observation:subject")
    assert included(bundle) == {"obs-sys-jose", "obs-local"}
    more = search(client, "Patient?_id=pat-kari&_revinclude=Observation:subject&_revinclude=DiagnosticReport:subject"
                          "&_revinclude=MedicationRequest:subject")
    assert included(more) == {"obs-bp", "obs-glu", "dr-1", "mr-1"}


def test_include_iterate(client):
    plain = search(client, "Observation?_id=panel-top&_include=Observation:has-member")
    assert included(plain) == {"panel-sub"}
    deep = search(client, "Observation?_id=panel-top&_include:iterate=Observation:has-member")
    assert included(deep) == {"panel-sub", "obs-glu"}
    meds = search(client, "MedicationRequest?_id=mr-1&_include=MedicationRequest:medication"
                          "&_include:iterate=Medication:ingredient")
    assert included(meds) == {"med-tab", "med-api"}
    no_iterate = search(client, "MedicationRequest?_id=mr-1&_include=MedicationRequest:medication"
                                "&_include=Medication:ingredient")
    assert included(no_iterate) == {"med-tab"}
    # iterate across include and revinclude: the report's result, then that result's subject
    mixed = search(client, "DiagnosticReport?_id=dr-2&_include=DiagnosticReport:result"
                           "&_include:iterate=Observation:subject")
    assert included(mixed) == {"obs-sys-ola", "pat-ola"}


# ---- _sort (https://hl7.org/fhir/R4/search.html#sort) ----------------------------------------

def test_sort(client):
    assert ids(client, "Patient?_sort=birthdate") == [
        "pat-ola", "pat-kari", "pat-anna", "pat-bjorn", "pat-jose", "pat-anon"]
    # descending compares the latest possible instant: 2020-10 ends after 2020-10-30
    assert ids(client, "Patient?_sort=-birthdate") == [
        "pat-bjorn", "pat-jose", "pat-anna", "pat-kari", "pat-ola", "pat-anon"]
    assert ids(client, "Patient?_sort=family,-given") == [
        "pat-jose", "pat-ola", "pat-kari", "pat-anna", "pat-anon", "pat-bjorn"]
    # a token first, then a date; resources without a gender are kept, at the end
    assert ids(client, "Patient?_sort=gender,-birthdate") == [
        "pat-anna", "pat-kari", "pat-jose", "pat-ola", "pat-bjorn", "pat-anon"]
    assert ids(client, "Observation?_sort=-date&code=8480-6,85354-9,2339-0") == [
        "obs-sys-jose", "obs-sys-ola", "obs-glu", "obs-bp", "obs-ext", "obs-ident"]
    assert ids(client, "Observation?_sort=value-quantity&code=8480-6") == [
        "obs-sys-jose", "obs-ext", "obs-sys-ola", "obs-ident"]
    assert ids(client, "Patient?_sort=_id&_id=pat-ola,pat-anna,pat-kari") == ["pat-anna", "pat-kari", "pat-ola"]
    assert ids(client, "Patient?_sort=-_id&_id=pat-ola,pat-anna,pat-kari") == ["pat-ola", "pat-kari", "pat-anna"]


def test_sort_keeps_resources_without_the_value_across_pages(client):
    seen = _all_pages(client, "Patient?_sort=birthdate&_count=2")
    assert seen == ["pat-ola", "pat-kari", "pat-anna", "pat-bjorn", "pat-jose", "pat-anon"]


def _all_pages(client, url: str) -> list[str]:
    bundle = search(client, url)
    out = []
    for _ in range(1000):
        out += [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            return out
        resp = client.get(nxt[0])
        assert resp.status_code == 200, resp.text
        bundle = resp.json()
    raise AssertionError("paging never ended")


# ---- paging (https://hl7.org/fhir/R4/http.html#paging) --------------------------------------

@pytest.fixture(scope="module")
def paging(tmp_path_factory):
    """A server of its own, so creating resources between pages disturbs no other test."""
    srv = start_server(tmp_path_factory.mktemp("paging"))
    with httpx.Client(base_url=srv.base, timeout=60, headers=srv.auth) as c:
        entries = [{"resource": {"resourceType": "Patient", "name": [{"family": "Sidevis", "given": [f"P{i:02d}"]}],
                                 "birthDate": f"19{50 + i % 7}-01-01" if i % 5 else None},
                    "request": {"method": "POST", "url": "Patient"}} for i in range(23)]
        for e in entries:
            if e["resource"]["birthDate"] is None:
                del e["resource"]["birthDate"]
        resp = c.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
        assert resp.status_code == 200, resp.text
        yield c
    srv.stop()


def test_paging_returns_every_resource_once(paging):
    everyone = found(paging, "Patient?family=sidevis", cross_check=False)
    assert len(everyone) == 23
    for url in ("Patient?family=sidevis&_count=5", "Patient?family=sidevis&_count=4&_sort=birthdate",
                "Patient?family=sidevis&_count=3&_sort=-birthdate,given", "Patient?family=sidevis&_count=1"):
        got = _all_pages(paging, url)
        assert len(got) == 23 and set(got) == everyone, url


def test_paging_is_stable_while_resources_are_created(paging):
    everyone = found(paging, "Patient?family=sidevis", cross_check=False)
    bundle = search(paging, "Patient?family=sidevis&_count=4&_sort=birthdate")
    got = []
    while True:
        got += [e["resource"]["id"] for e in bundle.get("entry", [])]
        # a new match between pages, sorting first, must not shift the pages already being read
        paging.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Sidevis"}],
                                      "birthDate": "1900-01-01"})
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            break
        bundle = paging.get(nxt[0]).json()
    assert sorted(got) == sorted(everyone)
    assert len(found(paging, "Patient?family=sidevis", cross_check=False)) > len(everyone)


def test_page_links_and_total(paging):
    first = search(paging, "Patient?family=sidevis&_count=5&_total=accurate")
    n = first["total"]
    assert n >= 23 and len(first["entry"]) == 5
    relations = {link["relation"] for link in first["link"]}
    assert "next" in relations and "previous" not in relations
    second = paging.get(next(link["url"] for link in first["link"] if link["relation"] == "next")).json()
    assert any(link["relation"] == "previous" for link in second["link"])
    assert not {e["resource"]["id"] for e in first["entry"]} & {e["resource"]["id"] for e in second["entry"]}
    count_only = search(paging, "Patient?family=sidevis&_summary=count")
    assert count_only["total"] == n and not count_only.get("entry")
    zero = search(paging, "Patient?family=sidevis&_count=0")
    assert zero["total"] == n and not zero.get("entry")


# ---- result parameters ----------------------------------------------------------------------

def test_summary_and_elements(client):
    elements = search(client, "Patient?_id=pat-kari&_elements=name,birthDate")["entry"][0]["resource"]
    assert elements["name"][0]["family"] == "Nordmann" and elements["birthDate"] == "1980-05-17"
    assert "gender" not in elements and "address" not in elements
    assert any(t.get("code") == "SUBSETTED" for t in elements["meta"]["tag"])
    summary = search(client, "Patient?_id=pat-kari&_summary=true")["entry"][0]["resource"]
    assert summary["birthDate"] == "1980-05-17"
    assert any(t.get("code") == "SUBSETTED" for t in summary["meta"]["tag"])
    data = search(client, "Observation?_id=obs-bp&_summary=data")["entry"][0]["resource"]
    assert "text" not in data and data["component"]
    text = search(client, "Observation?_id=obs-bp&_summary=text")["entry"][0]["resource"]
    assert "component" not in text and text["status"] == "final"     # mandatory elements stay
    count = search(client, "Observation?code=8480-6&_summary=count")
    assert count["total"] == 4 and not count.get("entry")


def test_total_accurate_on_a_partial_page(client):
    bundle = search(client, "Observation?code=8480-6&_count=1&_total=accurate")
    assert bundle["total"] == 4 and len(bundle["entry"]) == 1


def test_id_and_last_updated(client):
    assert found(client, "Patient?_id=pat-kari") == {"pat-kari"}
    assert found(client, "Patient?_id=pat-kari,pat-ola,nope") == {"pat-kari", "pat-ola"}
    assert found(client, "Observation?_id=pat-kari") == set()
    kari = client.get("/Patient/pat-kari").json()
    stamp = kari["meta"]["lastUpdated"]
    assert "pat-kari" in found(client, f"Patient?_lastUpdated={stamp}")
    assert "pat-kari" in found(client, f"Patient?_lastUpdated=ge{stamp}")
    assert "pat-kari" in found(client, f"Patient?_lastUpdated=le{stamp}")
    assert "pat-kari" not in found(client, f"Patient?_lastUpdated=gt{stamp}")
    assert "pat-kari" not in found(client, f"Patient?_lastUpdated=lt{stamp}")
    assert found(client, "Patient?_lastUpdated=lt2000-01-01") == set()
    time.sleep(0.01)
    later = client.post("/Flag", json={"resourceType": "Flag", "status": "active", "code": {"text": "later"},
                                       "subject": {"reference": "Patient/pat-kari"}}).json()
    assert found(client, f"Flag?_lastUpdated=gt{stamp}") == {later["id"]}
    assert found(client, f"Flag?_lastUpdated=lt{stamp}") == set()
    assert found(client, f"Flag?_lastUpdated=ge{stamp}&_lastUpdated=le{later['meta']['lastUpdated']}") == {later["id"]}


# ---- system, POST and compartment search ------------------------------------------------------

def test_system_level_search(client):
    bundle = search(client, "?_type=Patient,Observation&_id=pat-kari,obs-glu,dr-1")
    assert {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]} == {
        ("Patient", "pat-kari"), ("Observation", "obs-glu")}
    every = search(client, "?_id=pat-kari,obs-glu,dr-1")
    assert {e["resource"]["id"] for e in every["entry"]} == {"pat-kari", "obs-glu", "dr-1"}
    named = search(client, "?_type=Patient,Practitioner&name=kari")
    assert {e["resource"]["id"] for e in named["entry"]} == {"pat-kari", "prac-kari"}
    chained = search(client, "?_type=Observation,DiagnosticReport&subject.name=kari&_sort=_id")
    assert [e["resource"]["id"] for e in chained["entry"]] == ["dr-1", "obs-bp", "obs-glu"]
    assert "name" in error(client, "?_type=Patient,Observation&name=kari")["diagnostics"]
    tagged = search(client, f"?_tag={TAGS}|vip")
    assert {e["resource"]["id"] for e in tagged["entry"]} == {"pat-kari"}
    error(client, "?_type=Patient,Nonsense&_id=x")


def test_post_search_with_form_body(client):
    resp = client.post("/Patient/_search", data={"family": "nordmann", "gender": "male"})
    assert resp.status_code == 200, resp.text
    assert [e["resource"]["id"] for e in resp.json()["entry"]] == ["pat-ola"]
    mixed = client.post("/Patient/_search?family=nordmann", data={"given": "kari"})
    assert [e["resource"]["id"] for e in mixed.json()["entry"]] == ["pat-kari"]
    bad = client.post("/Patient/_search", data={"nonsense": "x"})
    assert bad.status_code == 400
    huge = client.post("/Patient/_search", data={"name": "y" * 200_000})
    assert huge.status_code == 200 and not huge.json().get("entry")


def test_compartment_search(client):
    assert found(client, "Patient/pat-kari/Observation") == {"obs-bp", "obs-glu"}
    assert found(client, "Patient/pat-kari/Observation?code=2339-0") == {"obs-glu"}
    assert found(client, "Patient/pat-ola/Observation?_sort=date") == {"obs-sys-ola", "panel-top", "panel-sub"}
    assert found(client, "Patient/pat-kari/DiagnosticReport") == {"dr-1"}
    assert found(client, "Patient/pat-kari/MedicationRequest") == {"mr-1"}
    assert found(client, "Patient/pat-anon/Observation") == set()
    assert found(client, "Encounter/enc-1/Observation") == {"obs-bp"}
    assert client.get("/Patient/no-such-patient/Observation").status_code == 404


# ---- errors and hostile input -------------------------------------------------------------------

def test_unknown_parameter_is_400_naming_it(client):
    issue = error(client, "Patient?favourite-colour=blue")
    assert "favourite-colour" in issue["diagnostics"]
    assert issue["expression"] == ["favourite-colour"]
    assert "nope" in error(client, "Patient?name:nope=x")["diagnostics"]
    assert "bogus" in error(client, "Observation?subject.bogus=1")["diagnostics"]
    assert "bogus" in error(client, "Patient?_has:Observation:subject:bogus=1")["diagnostics"]
    assert "bogus" in error(client, "Patient?_sort=bogus")["diagnostics"]
    assert "bogus" in error(client, "Patient?_include=Patient:bogus")["diagnostics"]


def test_lenient_handling_drops_unknown_parameters(client):
    lenient = {"Prefer": "handling=lenient"}
    bundle = search(client, "Patient?favourite-colour=blue&family=nordmann", headers=lenient)
    matches = [e for e in bundle["entry"] if e["search"]["mode"] == "match"]
    assert {e["resource"]["id"] for e in matches} == {"pat-kari", "pat-ola"}
    outcomes = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcomes) == 1
    assert outcomes[0]["resource"]["resourceType"] == "OperationOutcome"
    assert "favourite-colour" in outcomes[0]["resource"]["issue"][0]["diagnostics"]
    self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    assert "favourite-colour" not in self_link and "family=nordmann" in self_link
    strict = client.get("/Patient", params={"favourite-colour": "blue"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400


@pytest.mark.parametrize("url", [
    "Patient?birthdate=2020-13-45",
    "Patient?birthdate=yesterday",
    "Patient?birthdate=gt",
    "Patient?birthdate=2020-02-30",
    "Patient?birthdate=xx2020",
    "Observation?date=2020-10-30T25:00:00Z",
    "RiskAssessment?probability=abc",
    "RiskAssessment?probability=gt",
    "RiskAssessment?probability=1,2,x",
    "Observation?value-quantity=5.4|http://unitsofmeasure.org",
    "Observation?value-quantity=five||mg",
    "Observation?code-value-quantity=8480-6",
    "Observation?code-value-quantity=8480-6$abc",
    "Patient?gender=",
    "Patient?identifier=a|b|c",
    "Patient?identifier:of-type=MR-1001",
    "Patient?active:missing=maybe",
    "Observation?subject=Patient/has space",
    "Patient?_count=ten",
    "Patient?_total=all",
    "Patient?_summary=everything",
    "Patient?_id=a b",
    "Patient?_lastUpdated=recently",
    "Patient?_include=Patient",
    "Patient?_include=Nonsense:subject",
    "Patient?_has:Observation:code=1",
])
def test_invalid_values_are_400(client, url):
    issue = error(client, url)
    assert issue["severity"] == "error" and issue["diagnostics"]


@pytest.mark.parametrize("url", [
    "Observation?code:in=http://example.org/fhir/ValueSet/blood",
    "Observation?code:below=http://loinc.org|8480",
    "Observation?code:above=http://loinc.org|8480-6",
    "Observation?code:not-in=http://example.org/fhir/ValueSet/blood",
    "Patient?_text=kari",
    "Patient?_content=kari",
    "Patient?_contained=true",
])
def test_unsupported_features_are_400_not_supported(client, url):
    issue = error(client, url)
    assert issue["code"] == "not-supported"


@pytest.mark.parametrize("url", [
    "Patient?name=' OR 1=1 --",
    "Patient?name=\" OR \"\"=\"",
    "Patient?name:exact=x' OR '1'='1",
    "Patient?name:contains=%' OR 1=1; --",
    "Patient?family=Robert'); DROP TABLE res;--",
    "Patient?identifier=x' OR 1=1 --|y",
    "Patient?gender=male' OR 'a'='a",
    "ValueSet?url:above=x' OR 1=1 --",
    "Observation?subject:identifier='; DELETE FROM ix_ref; --",
])
def test_sql_injection_matches_nothing(client, url):
    assert ids(client, url) == []
    assert found(client, "Patient") == PATIENT_IDS


def test_sql_injection_in_names_and_sort_is_rejected_and_harmless(client):
    for url in ("Patient?_sort=name;DROP TABLE res", "Patient?_sort=family DESC; DELETE FROM res",
                "Patient?name;DROP TABLE res=x", "Patient?_include=Patient:link;DROP TABLE res",
                "Patient?_has:Observation:subject:code;DROP TABLE res=1",
                "Observation?subject:Patient);DROP TABLE res;--.name=x",
                "Observation?subject=Patient/1' OR '1'='1", "Patient?_id=1' OR '1'='1"):
        path, _, query = url.partition("?")
        name, _, value = query.partition("=")
        resp = client.get("/" + path, params=[(name, value)])
        assert resp.status_code == 400, (url, resp.text)
        assert resp.json()["resourceType"] == "OperationOutcome"
    assert found(client, "Patient") == PATIENT_IDS
    assert found(client, "Observation?subject=pat-kari") == {"obs-bp", "obs-glu"}


def test_very_long_values(client):
    long_name = "x" * 4000
    assert ids(client, f"Patient?name={long_name}") == []
    assert ids(client, f"Patient?name:contains={long_name}") == []
    assert ids(client, f"Patient?identifier={FNR}|{'9' * 4000}") == []
    many = ",".join(f"id-{i}" for i in range(500)) + ",pat-kari"
    assert ids(client, f"Patient?_id={many}") == ["pat-kari"]
    many_names = ",".join(f"n{i}" for i in range(300)) + ",kari"
    assert ids(client, f"Patient?name={many_names}") == ["pat-kari"]
    too_long = client.get("/Patient", params={"name": "z" * 60_000})
    assert too_long.status_code == 200 and not too_long.json().get("entry")
