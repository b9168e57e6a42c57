"""The catalogues the demo population is drawn from: names, places, care providers,
conditions, medicines, allergies and vaccines. Plain data, no logic; ``demo.py`` builds
FHIR resources from it. See docs/demo.md.

Municipality numbers are SSB's (2024 numbering); postal codes and streets are real places
in each municipality but the house numbers and the combinations are made up. Codes:
ICPC-2 (``urn:oid:2.16.578.1.12.4.1.1.7170``) with SNOMED CT, ATC for medicines and
vaccines, SNOMED CT for allergy substances and reactions.
"""
from __future__ import annotations

from typing import NamedTuple

REFERENCE_DATE = "2026-11-01"   # "today" for the demo: all dates are relative to it


class Municipality(NamedTuple):
    number: str                               # kommunenummer (SSB)
    name: str
    weight: int                               # share of households (roughly the population)
    streets: tuple[tuple[str, str, str], ...]  # (street, postal code, postal place)


MUNICIPALITIES: tuple[Municipality, ...] = (
    Municipality("0301", "Oslo", 36, (
        ("Thorvald Meyers gate", "0555", "Oslo"), ("Bogstadveien", "0355", "Oslo"),
        ("Grønlandsleiret", "0190", "Oslo"), ("Kirkeveien", "0368", "Oslo"),
        ("Trondheimsveien", "0560", "Oslo"), ("Sognsveien", "0855", "Oslo"),
        ("Tøyengata", "0578", "Oslo"), ("Ekebergveien", "1181", "Oslo"),
        ("Søndre gate", "0550", "Oslo"), ("Holmenkollveien", "0376", "Oslo"),
    )),
    Municipality("4601", "Bergen", 14, (
        ("Nygårdsgaten", "5015", "Bergen"), ("Kalfarveien", "5018", "Bergen"),
        ("Sandviksveien", "5035", "Bergen"), ("Fjøsangerveien", "5054", "Bergen"),
        ("Storetveitvegen", "5067", "Bergen"), ("Øvre Ole Bulls plass", "5012", "Bergen"),
    )),
    Municipality("5001", "Trondheim", 11, (
        ("Olav Tryggvasons gate", "7011", "Trondheim"), ("Elgeseter gate", "7030", "Trondheim"),
        ("Innherredsveien", "7043", "Trondheim"), ("Byåsveien", "7021", "Trondheim"),
        ("Øvre Bakklandet", "7016", "Trondheim"), ("Kjøpmannsgata", "7013", "Trondheim"),
    )),
    Municipality("1103", "Stavanger", 8, (
        ("Pedersgata", "4013", "Stavanger"), ("Løkkeveien", "4008", "Stavanger"),
        ("Madlaveien", "4009", "Stavanger"), ("Hillevågsveien", "4016", "Stavanger"),
        ("Kongsgata", "4005", "Stavanger"),
    )),
    Municipality("3201", "Bærum", 7, (
        ("Sandvikaveien", "1337", "Sandvika"), ("Gamle Ringeriksvei", "1356", "Bekkestua"),
        ("Gamle Drammensvei", "1369", "Stabekk"), ("Høvikveien", "1363", "Høvik"),
    )),
    Municipality("4204", "Kristiansand", 6, (
        ("Markens gate", "4611", "Kristiansand"), ("Dronningens gate", "4608", "Kristiansand"),
        ("Elvegata", "4614", "Kristiansand"), ("Tordenskjolds gate", "4612", "Kristiansand"),
    )),
    Municipality("5501", "Tromsø", 4, (
        ("Storgata", "9008", "Tromsø"), ("Grønnegata", "9008", "Tromsø"),
        ("Stakkevollvegen", "9010", "Tromsø"), ("Skippergata", "9008", "Tromsø"),
    )),
)
MUNICIPALITY = {m.number: m for m in MUNICIPALITIES}


# -- care providers (the same for every seed, so their ids and names are stable) ---------

class Org(NamedTuple):
    key: str            # id is f"demo-org-{n}" in this order; key names it in code
    name: str
    kind: str           # text of Organization.type
    type_code: str      # http://terminology.hl7.org/CodeSystem/organization-type
    municipality: str
    street: str
    postal_code: str
    city: str
    her_id: str
    part_of: str | None = None


ORGANISATIONS: tuple[Org, ...] = (
    Org("helse-sor-ost", "Helse Sør-Øst RHF", "Regionalt helseforetak", "prov", "3403",
        "Skolegata 22", "2318", "Hamar", "100100"),
    Org("ous", "Oslo universitetssykehus HF", "Sykehus", "prov", "0301",
        "Sognsvannsveien 20", "0372", "Oslo", "4001031", part_of="helse-sor-ost"),
    Org("oslo-kommune", "Oslo kommune", "Kommune", "govt", "0301",
        "Rådhusplassen 1", "0037", "Oslo", "90204"),
    Org("sykehjem", "Sofienberg sykehjem", "Sykehjem", "prov", "0301",
        "Sofienberggata 10", "0558", "Oslo", "8100213", part_of="oslo-kommune"),
    Org("hjemmetjeneste", "Hjemmetjenesten bydel Grünerløkka", "Hjemmetjeneste", "prov", "0301",
        "Trondheimsveien 5", "0560", "Oslo", "8100214", part_of="oslo-kommune"),
    Org("apotek", "Løkka apotek", "Apotek", "prov", "0301",
        "Thorvald Meyers gate 40", "0555", "Oslo", "8100301"),
    Org("gp-0301", "Grünerløkka legesenter", "Legekontor", "prov", "0301",
        "Thorvald Meyers gate 30", "0555", "Oslo", "8100401"),
    Org("gp-4601", "Nygård legekontor", "Legekontor", "prov", "4601",
        "Nygårdsgaten 5", "5015", "Bergen", "8100402"),
    Org("gp-5001", "Bakklandet legekontor", "Legekontor", "prov", "5001",
        "Øvre Bakklandet 12", "7016", "Trondheim", "8100403"),
    Org("gp-1103", "Storhaug legesenter", "Legekontor", "prov", "1103",
        "Pedersgata 40", "4013", "Stavanger", "8100404"),
    Org("gp-3201", "Sandvika legesenter", "Legekontor", "prov", "3201",
        "Sandvikaveien 5", "1337", "Sandvika", "8100405"),
    Org("gp-4204", "Kvadraturen legekontor", "Legekontor", "prov", "4204",
        "Markens gate 20", "4611", "Kristiansand", "8100406"),
    Org("gp-5501", "Tromsø sentrum legekontor", "Legekontor", "prov", "5501",
        "Storgata 60", "9008", "Tromsø", "8100407"),
)

# Hamar is where Helse Sør-Øst has its seat; it is not a demo municipality for citizens.
OTHER_MUNICIPALITY_NAMES = {"3403": "Hamar"}


class Staff(NamedTuple):
    id: str             # Practitioner id; the PractitionerRole id is the same with "-role"
    given: str
    family: str
    gender: str
    category: str       # helsepersonellkategori (urn:oid:2.16.578.1.12.4.1.1.9060)
    role: str           # http://terminology.hl7.org/CodeSystem/practitioner-role
    role_text: str
    org: str            # Org.key
    hpr: str


STAFF: tuple[Staff, ...] = (
    # fastleger: three in Oslo, two elsewhere
    Staff("demo-gp-1", "Astrid", "Bråten", "female", "LE", "doctor", "Fastlege", "gp-0301", "9144101"),
    Staff("demo-gp-2", "Håkon", "Lie", "male", "LE", "doctor", "Fastlege", "gp-0301", "9144102"),
    Staff("demo-gp-3", "Fatima", "Ahmed", "female", "LE", "doctor", "Fastlege", "gp-0301", "9144103"),
    Staff("demo-gp-4", "Øystein", "Sæther", "male", "LE", "doctor", "Fastlege", "gp-4601", "9144104"),
    Staff("demo-gp-5", "Ragnhild", "Økland", "female", "LE", "doctor", "Fastlege", "gp-4601", "9144105"),
    Staff("demo-gp-6", "Torbjørn", "Aune", "male", "LE", "doctor", "Fastlege", "gp-5001", "9144106"),
    Staff("demo-gp-7", "Siri", "Lønseth", "female", "LE", "doctor", "Fastlege", "gp-5001", "9144107"),
    Staff("demo-gp-8", "Kjetil", "Tjøstheim", "male", "LE", "doctor", "Fastlege", "gp-1103", "9144108"),
    Staff("demo-gp-9", "Ingvild", "Håland", "female", "LE", "doctor", "Fastlege", "gp-1103", "9144109"),
    Staff("demo-gp-10", "Erik", "Grønvold", "male", "LE", "doctor", "Fastlege", "gp-3201", "9144110"),
    Staff("demo-gp-11", "Marte", "Sørlie", "female", "LE", "doctor", "Fastlege", "gp-3201", "9144111"),
    Staff("demo-gp-12", "Gunnar", "Åsland", "male", "LE", "doctor", "Fastlege", "gp-4204", "9144112"),
    Staff("demo-gp-13", "Tuva", "Fjære", "female", "LE", "doctor", "Fastlege", "gp-4204", "9144113"),
    Staff("demo-gp-14", "Nils", "Mikkelsen Sara", "male", "LE", "doctor", "Fastlege", "gp-5501", "9144114"),
    Staff("demo-gp-15", "Sunniva", "Eliassen", "female", "LE", "doctor", "Fastlege", "gp-5501", "9144115"),
    # municipal nurses, a hospital doctor and nurse, a pharmacist
    Staff("demo-nurse-1", "Mette", "Kvåle", "female", "SP", "nurse", "Sykepleier i hjemmesykepleien",
          "hjemmetjeneste", "9244201"),
    Staff("demo-nurse-2", "Jonas", "Bøe", "male", "SP", "nurse", "Sykepleier i hjemmesykepleien",
          "hjemmetjeneste", "9244202"),
    Staff("demo-nurse-3", "Linnea", "Næss", "female", "SP", "nurse", "Sykepleier i sykehjem",
          "sykehjem", "9244203"),
    Staff("demo-nurse-4", "Sander", "Holm", "male", "SP", "nurse", "Sykepleier, medisinsk avdeling",
          "ous", "9244204"),
    Staff("demo-doctor-1", "Hanne", "Ødegård", "female", "LE", "doctor", "Overlege, medisinsk avdeling",
          "ous", "9144301"),
    Staff("demo-pharmacist-1", "Petter", "Strøm", "male", "FA1", "pharmacist", "Provisorfarmasøyt",
          "apotek", "9344401"),
)

CATEGORY_NAMES = {"LE": "Lege", "SP": "Sykepleier", "FA1": "Provisorfarmasøyt"}
ROLE_NAMES = {"doctor": "Doctor", "nurse": "Nurse", "pharmacist": "Pharmacist"}


# -- names -----------------------------------------------------------------------------
# Three generations: born before 1960, 1960–1994, from 1995 (SSB's popular names).

GIVEN_NAMES: dict[tuple[str, str], tuple[str, ...]] = {
    ("female", "old"): ("Solveig", "Åse", "Ragnhild", "Astrid", "Ingrid", "Bjørg", "Gerd", "Kari",
                        "Randi", "Liv", "Turid", "Gunvor", "Målfrid", "Sigrid", "Else", "Aud"),
    ("male", "old"): ("Bjørn", "Øystein", "Olav", "Kjell", "Arne", "Knut", "Svein", "Gunnar",
                      "Håkon", "Ola", "Per", "Tor", "Åsmund", "Odd", "Terje", "Jørgen"),
    ("female", "mid"): ("Kari", "Anne", "Silje", "Ingvild", "Hege", "Marianne", "Ida", "Camilla",
                        "Kristin", "Tone", "Ragnhild", "Siv", "Hilde", "Åshild", "Mari", "Line"),
    ("male", "mid"): ("Ola", "Henrik", "Håkon", "Espen", "Marius", "Thomas", "Anders", "Øyvind",
                      "Lars", "Kristian", "Stian", "Jørn", "Bård", "Eirik", "Geir", "Trond"),
    ("female", "young"): ("Nora", "Emma", "Sofie", "Maja", "Ingrid", "Olivia", "Ella", "Sara",
                          "Frida", "Astrid", "Tiril", "Selma", "Hedda", "Leah", "Aurora", "Mia"),
    ("male", "young"): ("Jakob", "Lukas", "Aksel", "Emil", "Filip", "Oskar", "Noah", "Isak",
                        "Johannes", "Theodor", "Magnus", "Sander", "Håkon", "Olav", "Mathias", "Tobias"),
}

FAMILY_NAMES: tuple[str, ...] = (
    "Hansen", "Johansen", "Olsen", "Larsen", "Andersen", "Pedersen", "Nilsen", "Kristiansen",
    "Jensen", "Karlsen", "Johnsen", "Pettersen", "Eriksen", "Berg", "Haugen", "Hagen",
    "Johannessen", "Andreassen", "Jacobsen", "Dahl", "Jørgensen", "Halvorsen", "Henriksen",
    "Lund", "Sørensen", "Moen", "Gundersen", "Iversen", "Strand", "Solberg", "Svendsen", "Eide",
    "Knutsen", "Martinsen", "Paulsen", "Bakken", "Kristoffersen", "Mathisen", "Lie", "Amundsen",
    "Nguyen", "Rasmussen", "Ali", "Lunde", "Solheim", "Ødegård", "Sæther", "Ås", "Bråten",
    "Løken", "Sørlie", "Aasen", "Mørk", "Grønvold", "Næss", "Bøe", "Økland", "Kvåle", "Hølland",
    "Bjørnstad", "Fjære", "Vågen", "Rønning", "Mæland",
)
# Surnames with æ, ø or å, drawn for the first household so every seed shows them.
NORDIC_FAMILY_NAMES = tuple(n for n in FAMILY_NAMES if any(c in n for c in "æøåÆØÅ"))

NEXT_OF_KIN_RELATIONS = ("Datter", "Sønn", "Ektefelle", "Nevø", "Niese")


# -- clinical catalogues ----------------------------------------------------------------

class Drug(NamedTuple):
    atc: str
    atc_name: str
    text: str           # Norwegian product text, as on a prescription
    dosage: str         # dosage text (dosering)
    per_day: int        # 0: when needed
    dose: float
    unit: str


DRUGS: dict[str, Drug] = {d.atc: d for d in (
    Drug("C08CA01", "amlodipine", "Amlodipin 5 mg tablett", "1 tablett daglig", 1, 1, "tablett"),
    Drug("C09CA01", "losartan", "Losartan 50 mg tablett", "1 tablett daglig", 1, 1, "tablett"),
    Drug("A10BA02", "metformin", "Metformin 500 mg tablett", "1 tablett 2 ganger daglig", 2, 1, "tablett"),
    Drug("R03AC02", "salbutamol", "Salbutamol inhalasjonspulver 0,2 mg/dose",
         "1–2 inhalasjoner ved behov", 0, 1, "inhalasjon"),
    Drug("R03AK07", "formoterol and budesonide", "Budesonid/formoterol inhalasjonspulver 160/4,5 µg/dose",
         "1 inhalasjon morgen og kveld", 2, 1, "inhalasjon"),
    Drug("C10AA05", "atorvastatin", "Atorvastatin 20 mg tablett", "1 tablett om kvelden", 1, 1, "tablett"),
    Drug("B01AF02", "apixaban", "Apixaban 5 mg tablett", "1 tablett morgen og kveld", 2, 1, "tablett"),
    Drug("H03AA01", "levothyroxine sodium", "Levotyroksin 50 mikrog tablett", "1 tablett om morgenen",
         1, 1, "tablett"),
    Drug("N06AB06", "sertraline", "Sertralin 50 mg tablett", "1 tablett daglig", 1, 1, "tablett"),
    Drug("R06AE07", "cetirizine", "Cetirizin 10 mg tablett", "1 tablett daglig i pollensesongen",
         1, 1, "tablett"),
    Drug("N02CC01", "sumatriptan", "Sumatriptan 50 mg tablett", "1 tablett ved migreneanfall",
         0, 1, "tablett"),
    Drug("C03CA01", "furosemide", "Furosemid 40 mg tablett", "1 tablett om morgenen", 1, 1, "tablett"),
    Drug("C07AB02", "metoprolol", "Metoprolol 50 mg depottablett", "1 depottablett daglig",
         1, 1, "depottablett"),
    Drug("R03BB04", "tiotropium bromide", "Tiotropium inhalasjonsvæske 2,5 mikrog/dose",
         "2 inhalasjoner 1 gang daglig", 1, 2, "inhalasjon"),
    Drug("N06BA04", "methylphenidate", "Metylfenidat 18 mg depottablett", "1 depottablett om morgenen",
         1, 1, "depottablett"),
    Drug("N02BE01", "paracetamol", "Paracetamol 500 mg tablett", "2 tabletter inntil 3 ganger daglig ved behov",
         0, 2, "tablett"),
    Drug("D07AA02", "hydrocortisone", "Hydrokortison 1 % krem", "Smøres tynt 2 ganger daglig ved behov",
         0, 1, "påsmøring"),
    Drug("N06DA02", "donepezil", "Donepezil 5 mg tablett", "1 tablett om kvelden", 1, 1, "tablett"),
)}


class Disease(NamedTuple):
    icpc2: str
    icpc2_text: str     # Norwegian
    snomed: str
    snomed_text: str
    min_age: int
    max_age: int
    chance: float       # per person in the age range
    drugs: tuple[str, ...]   # ATC codes treated with
    resolved: bool = False


DISEASES: tuple[Disease, ...] = (
    Disease("K86", "Hypertensjon ukomplisert", "38341003", "Hypertensive disorder, systemic arterial",
            40, 120, 0.28, ("C08CA01",)),
    Disease("T93", "Lipidforstyrrelse", "55822004", "Hyperlipidemia", 45, 120, 0.18, ("C10AA05",)),
    Disease("T90", "Diabetes type 2", "44054006", "Diabetes mellitus type 2", 40, 120, 0.09, ("A10BA02",)),
    Disease("R96", "Astma", "195967001", "Asthma", 4, 120, 0.08, ("R03AC02", "R03AK07")),
    Disease("R97", "Allergisk rhinitt", "61582004", "Allergic rhinitis", 6, 120, 0.12, ("R06AE07",)),
    Disease("P76", "Depresjon", "35489007", "Depressive disorder", 18, 120, 0.07, ("N06AB06",)),
    Disease("L90", "Kneartrose", "239873007", "Osteoarthritis of knee", 55, 120, 0.15, ("N02BE01",)),
    Disease("K78", "Atrieflimmer/flutter", "49436004", "Atrial fibrillation", 65, 120, 0.12,
            ("B01AF02", "C07AB02")),
    Disease("K77", "Hjertesvikt", "84114007", "Heart failure", 70, 120, 0.08, ("C03CA01",)),
    Disease("R95", "Kronisk obstruktiv lungesykdom", "13645005", "Chronic obstructive lung disease",
            55, 120, 0.07, ("R03BB04",)),
    Disease("T86", "Hypotyreose/myksødem", "40930008", "Hypothyroidism", 25, 120, 0.05, ("H03AA01",)),
    Disease("N89", "Migrene", "37796009", "Migraine", 14, 70, 0.08, ("N02CC01",)),
    Disease("S87", "Atopisk eksem", "24079001", "Atopic dermatitis", 0, 30, 0.10, ("D07AA02",)),
    Disease("P81", "Hyperkinetisk forstyrrelse", "406506008", "Attention deficit hyperactivity disorder",
            7, 25, 0.05, ("N06BA04",)),
    Disease("P70", "Demens", "52448006", "Dementia", 80, 120, 0.10, ("N06DA02",)),
    Disease("R74", "Akutt øvre luftveisinfeksjon", "54150009", "Upper respiratory infection",
            0, 120, 0.15, (), resolved=True),
)
DISEASE = {d.icpc2: d for d in DISEASES}


class Allergen(NamedTuple):
    snomed: str
    snomed_text: str
    text: str           # Norwegian
    category: str       # food | medication | environment | biologic
    criticality: str    # low | high | unable-to-assess
    reaction: tuple[str, str]   # SNOMED CT manifestation (code, display)
    severity: str       # mild | moderate | severe
    max_age: int = 120


ALLERGENS: tuple[Allergen, ...] = (
    Allergen("764146007", "Penicillin", "Penicillin", "medication", "high",
             ("64305001", "Urticaria"), "moderate"),
    Allergen("762952008", "Peanut", "Peanøtter", "food", "high", ("39579001", "Anaphylactic reaction"),
             "severe"),
    Allergen("102263004", "Eggs (edible)", "Egg", "food", "low", ("247472004", "Hives"), "mild", max_age=12),
    Allergen("3718001", "Cow's milk", "Kumelk", "food", "low", ("271807003", "Eruption of skin"), "mild",
             max_age=6),
    Allergen("256277009", "Grass pollen", "Gresspollen", "environment", "low", ("70076002", "Rhinitis"),
             "mild"),
    Allergen("111088007", "Latex", "Lateks", "environment", "high", ("64305001", "Urticaria"), "moderate"),
    Allergen("387207008", "Ibuprofen", "Ibuprofen", "medication", "low", ("267036007", "Dyspnea"),
             "moderate"),
)


class Vaccine(NamedTuple):
    atc: str
    atc_name: str
    text: str           # product (Norwegian usage)
    lot_prefix: str


VACCINES: dict[str, Vaccine] = {k: v for k, v in (
    ("rota", Vaccine("J07BH01", "rota virus, live attenuated", "Rotarix", "AROLB")),
    ("hexa", Vaccine("J07CA09", "diphtheria-hemophilus influenzae B-pertussis-poliomyelitis-tetanus-hepatitis B",
                     "Infanrix hexa", "A21CD")),
    ("pcv", Vaccine("J07AL02", "pneumococcus purified polysaccharides antigen conjugated", "Prevenar 13", "HR")),
    ("mmr", Vaccine("J07BD52", "measles, combinations with mumps and rubella, live attenuated", "Priorix",
                    "A71CC")),
    ("dtp-ipv", Vaccine("J07CA02", "diphtheria-pertussis-poliomyelitis-tetanus", "Tetravac", "W1A")),
    ("hpv", Vaccine("J07BM03", "papillomavirus (human types 6, 11, 16, 18, 31, 33, 45, 52, 58)", "Gardasil 9",
                    "T0")),
    ("dtap-ipv", Vaccine("J07CA02", "diphtheria-pertussis-poliomyelitis-tetanus", "Boostrix Polio", "AC20B")),
    ("flu", Vaccine("J07BB02", "influenza, inactivated, split virus or surface antigen", "Influvac Tetra", "Q")),
    ("covid", Vaccine("J07BN01", "covid-19, RNA-based vaccine", "Comirnaty", "HH")),
)}

# The childhood immunisation programme (barnevaksinasjonsprogrammet), simplified:
# (vaccine, dose number, age in days when given).
CHILDHOOD_PROGRAMME: tuple[tuple[str, int, int], ...] = (
    ("rota", 1, 42), ("rota", 2, 91),
    ("hexa", 1, 91), ("pcv", 1, 91),
    ("hexa", 2, 152), ("pcv", 2, 152),
    ("hexa", 3, 365), ("pcv", 3, 365),
    ("mmr", 1, 456),
    ("dtp-ipv", 1, 7 * 365 + 60),
    ("mmr", 2, 11 * 365 + 60),
    ("hpv", 1, 12 * 365 + 40), ("hpv", 2, 12 * 365 + 220),
    ("dtap-ipv", 1, 15 * 365 + 60),
)
