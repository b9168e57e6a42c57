"""``enjournal demo``: a Norwegian demo population as FHIR R4 transaction Bundles.

``demo_bundles(seed, people)`` is pure and deterministic: the same seed and size give the
same Bundles, byte for byte, on any machine (dates are relative to the fixed reference
date 2026-11-01, never the wall clock). The first Bundle creates the care providers with
``PUT Organization/demo-org-N`` and ``PUT Practitioner/demo-gp-N`` (create-on-update), the
same for every seed; each further Bundle is one household that refers to them literally
and to its own entries by ``urn:uuid:``. ``load_demo`` posts them through the server's
transaction processing (https://hl7.org/fhir/R4/http.html#transaction), so everything
passes the same validation as any client's write. See docs/demo.md.
"""
from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from ..fhir import norway
from . import demo_data as data

REFERENCE_DATE = date.fromisoformat(data.REFERENCE_DATE)

ATC = "http://www.whocc.no/atc"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ICPC2 = "urn:oid:2.16.578.1.12.4.1.1.7170"
KOMMUNENUMMER = "urn:oid:2.16.578.1.12.4.1.1.3402"
HELSEPERSONELLKATEGORI = "urn:oid:2.16.578.1.12.4.1.1.9060"
MUNICIPALITY_CODE = "http://hl7.no/fhir/StructureDefinition/no-basis-municipalitycode"
FAMILY_RELATION = "http://hl7.no/fhir/CodeSystem/no-basis-family-relation"
PARENTAL_RESPONSIBILITY = "http://hl7.no/fhir/CodeSystem/no-basis-parental-responsibility"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
_TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"
_COURSE_NAMES = {"continuous": "Continuous long term therapy", "seasonal": "Seasonal"}

# Every demo urn:uuid is a name-based UUID under this namespace: stable for a seed.
_NAMESPACE = uuid.UUID("6f1c1c52-5d0e-4b8e-9a57-0e6a2f6d2026")

PERSONA_HOUSEHOLDS = 3      # households 0-2 have a fixed shape, see docs/demo.md
# Postal codes served by the demo home-care service (Hjemmetjenesten bydel Grünerløkka).
GRUNERLOKKA = ("0550", "0555", "0560")


# -- small FHIR helpers -------------------------------------------------------------------

def _coding(system: str, code: str, display: str | None = None) -> dict:
    c = {"system": system, "code": code}
    if display:
        c["display"] = display
    return c


def _concept(system: str, code: str, display: str | None = None, text: str | None = None) -> dict:
    cc: dict[str, Any] = {"coding": [_coding(system, code, display)]}
    if text:
        cc["text"] = text
    return cc


def _ref(reference: str, display: str | None = None) -> dict:
    return {"reference": reference, "display": display} if display else {"reference": reference}


def _quantity(value: float, unit: str, code: str) -> dict:
    return {"value": value, "unit": unit, "system": UCUM, "code": code}


def _last_sunday(year: int, month: int) -> date:
    last = date(year, month, 31)
    return last - timedelta(days=(last.weekday() + 1) % 7)


def _oslo_time(day: date, hour: int, minute: int = 0) -> str:
    """A dateTime in Norwegian local time with its UTC offset (CET, CEST from the last
    Sunday of March to the last Sunday of October). Computed here so the output does not
    depend on the machine's time zone database."""
    summer = _last_sunday(day.year, 3) <= day < _last_sunday(day.year, 10)
    return f"{day.isoformat()}T{hour:02}:{minute:02}:00{'+02:00' if summer else '+01:00'}"


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:          # 29 February
        return day.replace(year=day.year - years, day=28)


def age_on(birth: date, day: date = REFERENCE_DATE) -> int:
    """Whole years from ``birth`` to ``day``."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def municipality_address(number: str, line: str, postal_code: str, city: str, use: str = "home") -> dict:
    """An Address with the kommunenummer as HL7 Norway no-basis puts it: the municipality
    name in ``district`` and the number in the no-basis-municipalitycode extension on it."""
    name = data.MUNICIPALITY[number].name if number in data.MUNICIPALITY else data.OTHER_MUNICIPALITY_NAMES[number]
    return {
        "use": use, "type": "physical", "line": [line], "city": city, "postalCode": postal_code,
        "district": name,
        "_district": {"extension": [{"url": MUNICIPALITY_CODE,
                                     "valueCoding": _coding(KOMMUNENUMMER, number, name)}]},
        "country": "NO",
    }


def org_number(n: int) -> str:
    """The ``n``-th demo organisation number: 9 digits with a valid mod-11 check digit
    (weights 3,2,7,6,5,4,3,2); bases whose check digit would be 10 are skipped."""
    base = 91_000_000 + n * 1_013
    while True:
        digits = [int(c) for c in str(base)]
        check = (11 - sum(a * b for a, b in zip(digits, (3, 2, 7, 6, 5, 4, 3, 2))) % 11) % 11
        if check != 10:
            return f"{base}{check}"
        base += 1


def _put(resource: dict, key: str) -> dict:
    return {"fullUrl": f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'providers/{key}')}", "resource": resource,
            "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}}


def _transaction(entries: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


# -- care providers ------------------------------------------------------------------------

ORG_IDS = {org.key: f"demo-org-{i + 1}" for i, org in enumerate(data.ORGANISATIONS)}
STAFF_BY_ID = {s.id: s for s in data.STAFF}
GPS_BY_MUNICIPALITY = {m.number: tuple(s.id for s in data.STAFF if s.org == f"gp-{m.number}")
                       for m in data.MUNICIPALITIES}


def _organization(i: int, org: data.Org) -> dict:
    resource = {
        "resourceType": "Organization", "id": ORG_IDS[org.key], "active": True,
        "identifier": [{"use": "official", "system": norway.ENH, "value": org_number(i)},
                       {"system": norway.HER, "value": org.her_id}],
        "type": [_concept(_TERMINOLOGY + "organization-type", org.type_code,
                          "Healthcare Provider" if org.type_code == "prov" else "Government", org.kind)],
        "name": org.name,
        "telecom": [{"system": "phone", "value": f"+47{22000000 + 1117 * (i + 1)}", "use": "work"}],
        "address": [municipality_address(org.municipality, org.street, org.postal_code, org.city, "work")],
    }
    if org.part_of:
        resource["partOf"] = _ref(f"Organization/{ORG_IDS[org.part_of]}",
                                  next(o.name for o in data.ORGANISATIONS if o.key == org.part_of))
    return resource


def _practitioner(staff: data.Staff) -> dict:
    return {
        "resourceType": "Practitioner", "id": staff.id, "active": True,
        "identifier": [{"use": "official", "system": norway.HPR, "value": staff.hpr}],
        "name": [{"use": "official", "family": staff.family, "given": [staff.given]}],
        "gender": staff.gender,
        "qualification": [{"code": _concept(HELSEPERSONELLKATEGORI, staff.category,
                                            data.CATEGORY_NAMES[staff.category])}],
    }


def _practitioner_role(staff: data.Staff) -> dict:
    org = next(o for o in data.ORGANISATIONS if o.key == staff.org)
    role = {
        "resourceType": "PractitionerRole", "id": f"{staff.id}-role", "active": True,
        "practitioner": _ref(f"Practitioner/{staff.id}", f"{staff.given} {staff.family}"),
        "organization": _ref(f"Organization/{ORG_IDS[org.key]}", org.name),
        "code": [_concept(_TERMINOLOGY + "practitioner-role", staff.role, data.ROLE_NAMES[staff.role],
                          staff.role_text)],
    }
    if staff.role_text == "Fastlege":
        role["specialty"] = [_concept(SNOMED, "394814009", "General practice (specialty)", "Allmennmedisin")]
    return role


def providers_bundle() -> dict:
    """Organisations, practitioners and their roles, with fixed ids; the same for every seed."""
    entries = [_put(_organization(i, org), org.key) for i, org in enumerate(data.ORGANISATIONS)]
    for staff in data.STAFF:
        entries.append(_put(_practitioner(staff), staff.id))
        entries.append(_put(_practitioner_role(staff), f"{staff.id}-role"))
    return _transaction(entries)


# -- households ------------------------------------------------------------------------------

@dataclass
class _Person:
    urn: str
    given: list[str]
    family: str
    gender: str
    birth: date
    fnr: str
    role: str                       # "adult" | "child"
    phone: str | None = None
    email: str | None = None
    patient: dict = field(default_factory=dict)

    @property
    def age(self) -> int:
        return age_on(self.birth)

    @property
    def name(self) -> str:
        return " ".join(self.given + [self.family])


@dataclass
class _Member:
    age: int
    gender: str
    role: str


class _Household:
    """One household: its people, their relations and a little clinical history."""

    def __init__(self, seed: int, index: int, used_fnr: set[str]):
        self.seed, self.index = seed, index
        self.rng = random.Random(f"enjournal-demo/{seed}/{index}")
        self.used_fnr = used_fnr
        self.counter = 0
        self.entries: list[dict] = []
        self.people: list[_Person] = []

    def urn(self) -> str:
        self.counter += 1
        return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{self.seed}/{self.index}/{self.counter}')}"

    def add(self, resource: dict, urn: str | None = None) -> str:
        urn = urn or self.urn()
        self.entries.append({"fullUrl": urn, "resource": resource,
                             "request": {"method": "POST", "url": resource["resourceType"]}})
        return urn

    # -- the shape of the household --

    def plan(self) -> tuple[str, list[_Member]]:
        """(kind, members): the personas for the first households, then a random mix."""
        rng = self.rng
        if self.index == 0:     # a family with children under 12, 12–15 and 16+
            return "family", [_Member(41, "female", "adult"), _Member(43, "male", "adult"),
                              _Member(8, "female", "child"), _Member(14, "male", "child"),
                              _Member(17, "female", "child")]
        if self.index == 1:
            return "home-care", [_Member(86, "female", "adult")]
        if self.index == 2:
            return "nursing-home", [_Member(91, "male", "adult")]
        kind = rng.choices(("family", "couple", "single", "elderly"), (40, 20, 22, 18))[0]
        if kind == "family":
            mother = rng.randint(27, 50)
            members = [_Member(mother, "female", "adult")]
            if rng.random() < 0.8:
                members.append(_Member(mother + rng.randint(-3, 6), "male", "adult"))
            elif rng.random() < 0.3:    # a single father instead
                members = [_Member(mother + 2, "male", "adult")]
            for _ in range(rng.choices((1, 2, 3), (40, 45, 15))[0]):
                members.append(_Member(rng.randint(0, min(19, mother - 22)), rng.choice(("female", "male")),
                                       "child"))
            return kind, members
        if kind == "couple":
            age = rng.randint(24, 78)
            return kind, [_Member(age, "female", "adult"), _Member(max(20, age + rng.randint(-4, 6)), "male", "adult")]
        if kind == "single":
            return kind, [_Member(rng.randint(19, 80), rng.choice(("female", "male")), "adult")]
        age = rng.randint(75, 96)
        members = [_Member(age, rng.choices(("female", "male"), (60, 40))[0], "adult")]
        if rng.random() < 0.35:
            members.append(_Member(max(70, age + rng.randint(-5, 4)), "male" if members[0].gender == "female"
                                   else "female", "adult"))
        return "elderly", members

    def municipality(self) -> data.Municipality:
        if self.index < PERSONA_HOUSEHOLDS:
            return data.MUNICIPALITY["0301"]
        return self.rng.choices(data.MUNICIPALITIES, [m.weight for m in data.MUNICIPALITIES])[0]

    # -- people --

    def birth_date(self, age: int) -> date:
        return _years_before(REFERENCE_DATE, age) - timedelta(days=self.rng.randint(1, 364))

    def fnr(self, birth: date, gender: str) -> str:
        low, high = (500, 999) if birth.year >= 2000 else (0, 499)
        for _ in range(200):
            try:
                value = norway.make_synthetic_fnr(birth, self.rng.randint(low, high), gender)
            except ValueError:
                continue
            if value not in self.used_fnr:
                self.used_fnr.add(value)
                return value
        raise RuntimeError(f"no free synthetic fødselsnummer for {birth}")   # 250 per day and sex

    def given_names(self, birth: date, gender: str) -> list[str]:
        generation = "old" if birth.year < 1960 else "mid" if birth.year < 1995 else "young"
        names = data.GIVEN_NAMES[(gender, generation)]
        first = self.rng.choice(names)
        if self.rng.random() < 0.2:
            second = self.rng.choice(names)
            if second != first:
                return [first, second]
        return [first]

    def phone(self) -> str:
        return f"+47{self.rng.choice('49')}{self.rng.randint(0, 9999999):07}"

    def person(self, member: _Member, family: str) -> _Person:
        birth = self.birth_date(member.age)
        given = self.given_names(birth, member.gender)
        p = _Person(self.urn(), given, family, member.gender, birth, self.fnr(birth, member.gender), member.role)
        if member.age >= 12:
            p.phone = self.phone()
        if member.age >= 18 and self.rng.random() < 0.5:
            local = f"{given[0]}.{family.split()[0]}".lower()
            for a, b in (("æ", "ae"), ("ø", "o"), ("å", "aa"), ("ü", "u"), ("é", "e")):
                local = local.replace(a, b)
            p.email = f"{local}{self.rng.randint(1, 99)}@example.com"
        return p

    def address(self, municipality: data.Municipality, kind: str) -> dict:
        if kind == "nursing-home":
            org = next(o for o in data.ORGANISATIONS if o.key == "sykehjem")
            return municipality_address(org.municipality, org.street, org.postal_code, org.city)
        streets = municipality.streets
        if self.index < 2:      # the family and the home-care persona live in bydel Grünerløkka
            streets = tuple(s for s in streets if s[1] in GRUNERLOKKA)
        street, postal_code, city = self.rng.choice(streets)
        number = f"{self.rng.randint(1, 120)}{self.rng.choice(('', '', '', ' A', ' B'))}"
        return municipality_address(municipality.number, f"{street} {number}", postal_code, city)

    def patient(self, p: _Person, address: dict, gp: str) -> dict:
        staff = STAFF_BY_ID[gp]
        resource: dict[str, Any] = {
            "resourceType": "Patient", "active": True,
            "identifier": [{"use": "official", "system": norway.FNR, "value": p.fnr}],
            "name": [{"use": "official", "family": p.family, "given": p.given}],
            "gender": p.gender, "birthDate": p.birth.isoformat(),
            "address": [address],
            "communication": [{"language": _concept("urn:ietf:bcp:47", "nb", "Norsk bokmål"), "preferred": True}],
            "generalPractitioner": [_ref(f"Practitioner/{gp}", f"{staff.given} {staff.family}")],
        }
        telecom = []
        if p.phone:
            telecom.append({"system": "phone", "value": p.phone, "use": "mobile"})
        if p.email:
            telecom.append({"system": "email", "value": p.email, "use": "home"})
        if telecom:
            resource["telecom"] = telecom
        p.patient = resource
        return resource

    def build(self, room: int) -> None:
        """Create the household's entries; at most ``room`` people (the last household of a
        population may be cut short: adults are kept first)."""
        kind, members = self.plan()
        members = members[:room]
        municipality = self.municipality()
        rng = self.rng
        pool = data.NORDIC_FAMILY_NAMES if self.index == 0 else data.FAMILY_NAMES
        family = rng.choice(pool)
        address = self.address(municipality, kind)
        if self.index in (0, 1):
            gp = "demo-gp-1"
        elif self.index == 2:
            gp = "demo-gp-2"
        else:
            gp = rng.choice(GPS_BY_MUNICIPALITY[municipality.number])
        adults: list[_Person] = []
        for m in members:
            surname = family
            if m.role == "adult" and adults and rng.random() < 0.35:
                surname = rng.choice(data.FAMILY_NAMES)     # a partner who kept their own name
            elif m.role == "child" and len(adults) > 1 and adults[1].family != family and rng.random() < 0.4:
                surname = f"{adults[1].family} {family}"
            p = self.person(m, surname)
            self.people.append(p)
            if m.role == "adult":
                adults.append(p)
            self.add(self.patient(p, address, gp), p.urn)
        children = [p for p in self.people if p.role == "child" and p.age < 18]
        for child in children:
            self.parents(child, adults, address)
        in_home_care_area = address["postalCode"] in GRUNERLOKKA
        if kind == "home-care" or (kind == "elderly" and in_home_care_area and self.people[0].age >= 80
                                   and rng.random() < 0.6):
            self.episode(self.people[0], "hjemmetjeneste", "Hjemmesykepleie", "demo-nurse-1", 400)
        if kind == "nursing-home":
            self.episode(self.people[0], "sykehjem", "Langtidsopphold i sykehjem", "demo-nurse-3", 700)
        if kind in ("home-care", "nursing-home"):
            self.next_of_kin(self.people[0])
        forced = {"home-care": ("K78", "K77", "K86", "L90"), "nursing-home": ("P70", "K86")}.get(kind, ())
        for p in self.people:
            _Clinical(self, p, gp, kind, forced if p is self.people[0] else ()).build()

    def parents(self, child: _Person, adults: list[_Person], address: dict) -> None:
        """A RelatedPerson for each parent of ``child`` (with parental responsibility and
        the same address), linked from the parent's own Patient."""
        for parent in adults:
            mother = parent.gender == "female"
            responsibility = "felles" if len(adults) > 1 else ("mor" if mother else "far")
            related: dict[str, Any] = {
                "resourceType": "RelatedPerson", "active": True,
                "identifier": [{"use": "official", "system": norway.FNR, "value": parent.fnr}],
                "patient": _ref(child.urn, child.name),
                "relationship": [
                    {"coding": [_coding(ROLE_CODE, "MTH" if mother else "FTH", "mother" if mother else "father"),
                                _coding(FAMILY_RELATION, "mor" if mother else "far", "Mor" if mother else "Far")]},
                    {"coding": [_coding(PARENTAL_RESPONSIBILITY, responsibility, responsibility.capitalize())],
                     "text": "Foreldreansvar"},
                ],
                "name": [{"use": "official", "family": parent.family, "given": parent.given}],
                "gender": parent.gender, "birthDate": parent.birth.isoformat(), "address": [address],
            }
            if parent.phone:
                related["telecom"] = [{"system": "phone", "value": parent.phone, "use": "mobile"}]
            urn = self.add(related)
            parent.patient.setdefault("link", []).append({"other": _ref(urn, child.name), "type": "seealso"})

    def episode(self, p: _Person, org_key: str, text: str, manager: str, max_days: int) -> None:
        org = next(o for o in data.ORGANISATIONS if o.key == org_key)
        nurse = STAFF_BY_ID[manager]
        start = REFERENCE_DATE - timedelta(days=self.rng.randint(60, max_days))
        self.add({
            "resourceType": "EpisodeOfCare", "status": "active",
            "type": [{"text": text}],
            "patient": _ref(p.urn, p.name),
            "managingOrganization": _ref(f"Organization/{ORG_IDS[org_key]}", org.name),
            "period": {"start": start.isoformat()},
            "careManager": _ref(f"Practitioner/{manager}", f"{nurse.given} {nurse.family}"),
        })

    def next_of_kin(self, p: _Person) -> None:
        rng = self.rng
        relation = rng.choice(data.NEXT_OF_KIN_RELATIONS)
        gender = "female" if relation in ("Datter", "Niese") or (relation == "Ektefelle" and p.gender == "male") \
            else "male"
        given = rng.choice(data.GIVEN_NAMES[(gender, "mid")])
        family = p.family if relation in ("Datter", "Sønn", "Ektefelle") else rng.choice(data.FAMILY_NAMES)
        p.patient["contact"] = [{
            "relationship": [_concept(_TERMINOLOGY + "v2-0131", "N", "Next-of-Kin"), {"text": relation}],
            "name": {"family": family, "given": [given]},
            "telecom": [{"system": "phone", "value": self.phone(), "use": "mobile"}],
            "gender": gender,
        }]


# -- clinical data -------------------------------------------------------------------------

class _Clinical:
    """Conditions, medicines, allergies, vital signs and vaccinations for one person."""

    def __init__(self, household: _Household, person: _Person, gp: str, kind: str, forced: tuple[str, ...]):
        self.h, self.p, self.gp, self.kind, self.forced = household, person, gp, kind, forced
        self.rng = household.rng
        staff = STAFF_BY_ID[gp]
        self.gp_ref = _ref(f"Practitioner/{gp}", f"{staff.given} {staff.family}")
        self.subject = _ref(person.urn, person.name)

    def build(self) -> None:
        diseases = [d for d in data.DISEASES
                    if d.icpc2 in self.forced
                    or d.min_age <= self.p.age <= d.max_age and self.rng.random() < d.chance]
        for disease in diseases:
            self.condition(disease)
        if self.p.age >= 18 and self.rng.random() < 0.05:
            self.otc("N02BE01")
        if self.p.age >= 1 and self.rng.random() < (0.12 if self.p.age < 18 else 0.15):
            allergens = [a for a in data.ALLERGENS if self.p.age < a.max_age]
            self.allergy(self.rng.choice(allergens))
        self.vital_signs(diseases)
        self.immunizations()

    def day_between(self, first: date, last: date) -> date:
        if last <= first:
            return first
        return first + timedelta(days=self.rng.randint(0, (last - first).days))

    def condition(self, d: data.Disease) -> None:
        # not before the age the disease starts at, nor longer ago than a GP record goes back
        earliest = max(_years_before(self.p.birth, -d.min_age),
                       _years_before(REFERENCE_DATE, 2 if d.resolved else 15))
        onset = self.day_between(earliest, REFERENCE_DATE - timedelta(days=30))
        resource: dict[str, Any] = {
            "resourceType": "Condition",
            "clinicalStatus": _concept(_TERMINOLOGY + "condition-clinical",
                                       "resolved" if d.resolved else "active"),
            "verificationStatus": _concept(_TERMINOLOGY + "condition-ver-status", "confirmed"),
            "category": [_concept(_TERMINOLOGY + "condition-category",
                                  "encounter-diagnosis" if d.resolved else "problem-list-item")],
            "code": {"coding": [_coding(ICPC2, d.icpc2, d.icpc2_text), _coding(SNOMED, d.snomed, d.snomed_text)],
                     "text": d.icpc2_text},
            "subject": self.subject,
            "onsetDateTime": onset.isoformat(),
            "recordedDate": onset.isoformat(),
            "recorder": self.gp_ref, "asserter": self.gp_ref,
        }
        if d.resolved:
            abated = min(onset + timedelta(days=self.rng.randint(5, 14)), REFERENCE_DATE)
            resource["abatementDateTime"] = abated.isoformat()
        urn = self.h.add(resource)
        for atc in d.drugs:
            self.prescription(data.DRUGS[atc], onset, urn, d.icpc2_text)

    def dosage(self, drug: data.Drug) -> dict:
        dosage: dict[str, Any] = {"text": drug.dosage,
                                  "doseAndRate": [{"doseQuantity": {"value": drug.dose, "unit": drug.unit}}]}
        if drug.per_day:
            dosage["timing"] = {"repeat": {"frequency": drug.per_day, "period": 1, "periodUnit": "d"}}
        else:
            dosage["asNeededBoolean"] = True
        return dosage

    def medication(self, drug: data.Drug) -> dict:
        return {"coding": [_coding(ATC, drug.atc, drug.atc_name)], "text": drug.text}

    def prescription(self, drug: data.Drug, onset: date, condition: str, reason: str) -> None:
        """The current e-prescription (valid one year) and the medication-list entry based on it."""
        authored = self.day_between(max(onset, REFERENCE_DATE - timedelta(days=330)),
                                    REFERENCE_DATE - timedelta(days=2))
        supply = 30 * max(drug.per_day, 1) * 3
        request: dict[str, Any] = {
            "resourceType": "MedicationRequest", "status": "active", "intent": "order",
            "medicationCodeableConcept": self.medication(drug),
            "subject": self.subject, "authoredOn": authored.isoformat(), "requester": self.gp_ref,
            "reasonReference": [_ref(condition, reason)],
            "dosageInstruction": [self.dosage(drug)],
            "dispenseRequest": {
                "validityPeriod": {"start": authored.isoformat(),
                                   "end": (authored + timedelta(days=365)).isoformat()},
                "numberOfRepeatsAllowed": 3,
                "quantity": {"value": supply, "unit": drug.unit},
            },
        }
        course = "seasonal" if "sesong" in drug.dosage else "continuous" if drug.per_day else None
        if course:
            request["courseOfTherapyType"] = _concept(_TERMINOLOGY + "medicationrequest-course-of-therapy", course,
                                                      _COURSE_NAMES[course])
        request_urn = self.h.add(request)
        started = self.day_between(onset, min(onset + timedelta(days=20), REFERENCE_DATE - timedelta(days=1)))
        self.h.add({
            "resourceType": "MedicationStatement", "status": "active",
            "basedOn": [_ref(request_urn)],
            "medicationCodeableConcept": self.medication(drug),
            "subject": self.subject,
            "effectivePeriod": {"start": started.isoformat()},
            "dateAsserted": authored.isoformat(),
            "informationSource": self.gp_ref,
            "reasonReference": [_ref(condition, reason)],
            "dosage": [self.dosage(drug)],
        })

    def otc(self, atc: str) -> None:
        drug = data.DRUGS[atc]
        started = self.day_between(REFERENCE_DATE - timedelta(days=700), REFERENCE_DATE - timedelta(days=10))
        self.h.add({
            "resourceType": "MedicationStatement", "status": "active",
            "medicationCodeableConcept": self.medication(drug), "subject": self.subject,
            "effectivePeriod": {"start": started.isoformat()}, "dateAsserted": started.isoformat(),
            "informationSource": _ref(self.p.urn, self.p.name), "dosage": [self.dosage(drug)],
        })

    def allergy(self, a: data.Allergen) -> None:
        onset_from = self.p.birth + timedelta(days=180)
        recorded = self.day_between(max(onset_from, REFERENCE_DATE - timedelta(days=3650)),
                                    REFERENCE_DATE - timedelta(days=14))
        verified = self.rng.random() < 0.8
        self.h.add({
            "resourceType": "AllergyIntolerance",
            "clinicalStatus": _concept(_TERMINOLOGY + "allergyintolerance-clinical", "active"),
            "verificationStatus": _concept(_TERMINOLOGY + "allergyintolerance-verification",
                                           "confirmed" if verified else "unconfirmed"),
            "type": "allergy", "category": [a.category], "criticality": a.criticality,
            "code": {"coding": [_coding(SNOMED, a.snomed, a.snomed_text)], "text": a.text},
            "patient": self.subject,
            "recordedDate": recorded.isoformat(),
            "recorder": self.gp_ref,
            "reaction": [{"manifestation": [_concept(SNOMED, *a.reaction)], "severity": a.severity}],
        })

    # -- vital signs --

    def vital_signs(self, diseases: list[data.Disease]) -> None:
        codes = {d.icpc2 for d in diseases}
        if self.p.age < 1:
            return
        visit = self.day_between(REFERENCE_DATE - timedelta(days=3 * 365), REFERENCE_DATE - timedelta(days=3))
        self.measurements(visit, self.rng.randint(8, 15), self.gp_ref, codes, body=True)
        if self.kind == "home-care" and self.p is self.h.people[0]:
            nurse = _ref("Practitioner/demo-nurse-1", "Mette Kvåle")
            for days_ago in (4, 3, 2, 1):       # daily rounds; the last one shows a deterioration
                self.measurements(REFERENCE_DATE - timedelta(days=days_ago), 9, nurse, codes,
                                  unwell=days_ago == 1)
        elif self.kind == "nursing-home" and self.p is self.h.people[0]:
            nurse = _ref("Practitioner/demo-nurse-3", "Linnea Næss")
            for days_ago in (7, 1):
                self.measurements(REFERENCE_DATE - timedelta(days=days_ago), 10, nurse, codes)

    def measurements(self, day: date, hour: int, performer: dict, codes: set[str],
                     body: bool = False, unwell: bool = False) -> None:
        rng, age = self.rng, self.p.age
        when = _oslo_time(day, hour, rng.choice((0, 10, 15, 20, 30, 40, 45)))
        if unwell:
            pulse, resp, temp, spo2, sys_bp, dia_bp = 104, 22, 38.4, 94, 106, 64
        else:
            pulse = rng.randint(110, 140) if age < 2 else rng.randint(75, 110) if age < 12 else rng.randint(55, 88)
            resp = rng.randint(24, 34) if age < 2 else rng.randint(18, 24) if age < 12 else rng.randint(12, 18)
            temp = round(rng.uniform(36.3, 37.3), 1)
            spo2 = rng.randint(90, 94) if "R95" in codes else rng.randint(96, 100)
            sys_bp = rng.randint(135, 158) if "K86" in codes else rng.randint(105, 132)
            dia_bp = rng.randint(82, 96) if "K86" in codes else rng.randint(62, 84)
        self.observation("8867-4", "Heart rate", "Puls", when, performer, _quantity(pulse, "/min", "/min"))
        self.observation("9279-1", "Respiratory rate", "Respirasjonsfrekvens", when, performer,
                         _quantity(resp, "/min", "/min"))
        self.observation("8310-5", "Body temperature", "Kroppstemperatur", when, performer,
                         _quantity(temp, "Cel", "Cel"))
        if age >= 12 or unwell:
            self.observation("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "Oksygenmetning",
                             when, performer, _quantity(spo2, "%", "%"),
                             extra=_coding(LOINC, "2708-6", "Oxygen saturation in Arterial blood"))
        if age >= 16:
            self.blood_pressure(when, performer, sys_bp, dia_bp)
        if body:
            height, weight = self.body_size()
            self.observation("8302-2", "Body height", "Høyde", when, performer, _quantity(height, "cm", "cm"))
            self.observation("29463-7", "Body weight", "Vekt", when, performer, _quantity(weight, "kg", "kg"))

    def body_size(self) -> tuple[float, float]:
        rng, age = self.rng, self.p.age
        adult = 167 if self.p.gender == "female" else 180
        if age < 12:
            height = 75 + 6.2 * age
        elif age < 17:
            height = 150 + (adult - 150) * (age - 11) / 6
        else:
            height = adult - max(0, age - 70) * 0.3
        height = round(height + rng.uniform(-6, 6), 1)
        bmi = rng.uniform(15, 19) if age < 12 else rng.uniform(19, 31)
        return height, round(bmi * (height / 100) ** 2, 1)

    def observation(self, code: str, display: str, text: str, when: str, performer: dict, value: dict,
                    extra: dict | None = None) -> None:
        coding = [_coding(LOINC, code, display)] + ([extra] if extra else [])
        self.h.add({
            "resourceType": "Observation", "status": "final",
            "category": [_concept(_TERMINOLOGY + "observation-category", "vital-signs", "Vital Signs")],
            "code": {"coding": coding, "text": text},
            "subject": self.subject, "effectiveDateTime": when, "performer": [performer],
            "valueQuantity": value,
        })

    def blood_pressure(self, when: str, performer: dict, systolic: int, diastolic: int) -> None:
        self.h.add({
            "resourceType": "Observation", "status": "final",
            "category": [_concept(_TERMINOLOGY + "observation-category", "vital-signs", "Vital Signs")],
            "code": {"coding": [_coding(LOINC, "85354-9", "Blood pressure panel with all children optional")],
                     "text": "Blodtrykk"},
            "subject": self.subject, "effectiveDateTime": when, "performer": [performer],
            "component": [
                {"code": _concept(LOINC, "8480-6", "Systolic blood pressure", "Systolisk"),
                 "valueQuantity": _quantity(systolic, "mmHg", "mm[Hg]")},
                {"code": _concept(LOINC, "8462-4", "Diastolic blood pressure", "Diastolisk"),
                 "valueQuantity": _quantity(diastolic, "mmHg", "mm[Hg]")},
            ],
        })

    # -- vaccinations --

    def immunizations(self) -> None:
        rng, p = self.rng, self.p
        if p.age < 18:
            if rng.random() < 0.03:         # a family that declined the programme
                return
            for key, dose, days in data.CHILDHOOD_PROGRAMME:
                if key == "rota" and p.birth < date(2014, 9, 1):
                    continue
                if key == "hpv" and (p.birth.year < 1997 or p.gender == "male" and p.birth.year < 2006):
                    continue
                given = p.birth + timedelta(days=days + rng.randint(0, 21))
                if given >= REFERENCE_DATE or rng.random() < 0.04:
                    continue
                self.vaccination(key, dose, given, "Barnevaksinasjonsprogrammet")
        elif p.age >= 65:
            for season in (2024, 2025, 2026):
                if rng.random() < 0.65:
                    last = date(2026, 10, 30) if season == 2026 else date(season, 11, 30)
                    self.vaccination("flu", 1, self.day_between(date(season, 10, 12), last),
                                     f"Influensavaksinasjon {season}/{(season + 1) % 100:02}")
            if rng.random() < 0.5:
                self.vaccination("covid", 1, self.day_between(date(2025, 10, 15), date(2025, 12, 15)),
                                 "Koronavaksinasjon høsten 2025")
        elif rng.random() < 0.12:
            self.vaccination("flu", 1, self.day_between(date(2025, 10, 12), date(2025, 11, 30)),
                             "Influensavaksinasjon 2025/26")

    def vaccination(self, key: str, dose: int, day: date, series: str) -> None:
        v = data.VACCINES[key]
        # One batch per vaccine and month, as at a real vaccination site: useful for recalls.
        lot = f"{v.lot_prefix}{(day.year * 13 + day.month * 7) % 900 + 100}{'ABCDEFGHJK'[day.month % 10]}"
        self.h.add({
            "resourceType": "Immunization", "status": "completed",
            "vaccineCode": {"coding": [_coding(ATC, v.atc, v.atc_name)], "text": v.text},
            "patient": self.subject,
            "occurrenceDateTime": _oslo_time(day, self.rng.randint(8, 15), self.rng.choice((0, 15, 30, 45))),
            "recorded": day.isoformat(),
            "primarySource": True,
            "lotNumber": lot,
            "expirationDate": date(day.year + 1, day.month, 1).isoformat(),
            "route": _concept(_TERMINOLOGY + "v3-RouteOfAdministration",
                              "PO" if key == "rota" else "IM",
                              "Swallow, oral" if key == "rota" else "Injection, intramuscular"),
            "performer": [{"function": _concept(_TERMINOLOGY + "v2-0443", "AP", "Administering Provider"),
                           "actor": self.gp_ref}],
            "protocolApplied": [{"series": series, "doseNumberPositiveInt": dose}],
        })


# -- the population ---------------------------------------------------------------------------

def demo_bundles(seed: int = 2026, people: int = 100) -> list[dict]:
    """The demo population as transaction Bundles: first the care providers, then one
    Bundle per household, exactly ``people`` citizens in all. Pure and deterministic: a
    household's content depends only on the seed, its position and the numbers already
    taken, so a larger population begins with the same households as a smaller one."""
    if people < 0:
        raise ValueError("people must be zero or more")
    bundles = [providers_bundle()]
    used_fnr: set[str] = set()
    count = index = 0
    while count < people:
        household = _Household(seed, index, used_fnr)
        household.build(people - count)
        count += len(household.people)
        bundles.append(_transaction(household.entries))
        index += 1
    return bundles


def load_demo(resources: Any, seed: int = 2026, people: int = 100) -> str:
    """Write the demo population through the server's transaction processing, one Bundle
    at a time, and return a one-line summary. Raises the server's error (``errors.*``)
    if a Bundle is refused; the Bundles before it stay written."""
    from .bundles import BundleService
    start = time.perf_counter()
    bundles = demo_bundles(seed, people)
    counts: dict[str, int] = {}
    for bundle in bundles:
        for entry in bundle["entry"]:
            kind = entry["resource"]["resourceType"]
            counts[kind] = counts.get(kind, 0) + 1
    service = BundleService(resources)
    for bundle in bundles:
        service.process(bundle, max_entries=resources.settings.max_bundle_entries)
    seconds = time.perf_counter() - start
    return (f"loaded {counts.get('Patient', 0)} people in {len(bundles) - 1} households, "
            f"{counts.get('Organization', 0)} organisations, {counts.get('Practitioner', 0)} practitioners: "
            f"{sum(counts.values())} resources in {seconds:.1f} s")
