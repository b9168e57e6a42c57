"""Totals count only what the caller may see, and pages are full (issue 12): for every kind of
caller, ``Bundle.total`` of a search and of ``$everything`` equals the entries they can page
through, and a page holds ``_count`` entries unless it is the last.
"""
from __future__ import annotations

import pytest

from tests.access.conftest import as_citizen, as_gp

SARA, JAKOB = "19841856050", "19861286366"


def roles(demo, people) -> dict:
    """(headers, the patient whose record is read) per kind of caller."""
    A = people["silje"]
    return {
        "system": (demo.auth, A),
        "GP": (as_gp(demo, A), A),
        "citizen": (as_citizen(demo, "silje", scope=None), A),
        "parent of a child under 12": (as_citizen(demo, "silje", acting_for=SARA, scope=None), people["sara"]),
        "parent of a 12-15-year-old": (as_citizen(demo, "silje", acting_for=JAKOB, scope=None), people["jakob"]),
        "GP of the 14-year-old": (as_gp(demo, people["jakob"]), people["jakob"]),
    }


def pages(web, url: str, params: dict, headers: dict) -> tuple[list[dict], list]:
    """Every page of a searchset: the match entries and (total, entries) of each page."""
    matches, shape = [], []
    while url:
        r = web.get(url, params=params, headers=headers)
        assert r.status_code == 200, (url, r.text)
        bundle = r.json()
        found = [e for e in bundle.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]
        matches += found
        shape.append((bundle.get("total"), len(found)))
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        params = None
    return matches, shape


@pytest.mark.parametrize("who", ["system", "GP", "citizen", "parent of a child under 12",
                                 "parent of a 12-15-year-old", "GP of the 14-year-old"])
def test_everything_counts_what_it_shows_and_fills_its_pages(demo, web, people, who):
    headers, patient = roles(demo, people)[who]
    found, shape = pages(web, f"/Patient/{patient}/$everything", {"_count": 7}, headers)
    totals = {t for t, _n in shape}
    assert totals == {len(found)}, (who, shape)
    assert all(n == 7 for _t, n in shape[:-1]) and 0 < shape[-1][1] <= 7, shape
    types = {e["resource"]["resourceType"] for e in found}
    if who == "parent of a 12-15-year-old":
        assert not types & {"AllergyIntolerance", "Flag"}, types
    if who == "GP of the 14-year-old":
        assert "AllergyIntolerance" in types        # Jakob's peanut allergy: the GP sees it


@pytest.mark.parametrize("who", ["system", "GP", "citizen", "parent of a child under 12",
                                 "parent of a 12-15-year-old", "GP of the 14-year-old"])
@pytest.mark.parametrize("type_", ["Observation", "Condition", "Immunization", "Encounter"])
def test_search_totals_count_what_is_shown(demo, web, people, who, type_):
    headers, patient = roles(demo, people)[who]
    params = {"patient": f"Patient/{patient}", "_count": 5, "_total": "accurate",
              "_revinclude": "Provenance:target", "_include": f"{type_}:patient"}
    found, shape = pages(web, f"/{type_}", params, headers)
    assert {t for t, _n in shape} == {len(found)}, (who, type_, shape)
    assert all(n == 5 for _t, n in shape[:-1]), shape
    assert {e["resource"]["subject"]["reference"] if "subject" in e["resource"] else
            e["resource"]["patient"]["reference"] for e in found} <= {f"Patient/{patient}"}
    counted = web.get(f"/{type_}", params={"patient": f"Patient/{patient}", "_summary": "count"}, headers=headers)
    assert counted.json()["total"] == len(found)


def test_a_section_hidden_from_the_parent_is_refused_not_counted(demo, web, people):
    headers, patient = roles(demo, people)["parent of a 12-15-year-old"]
    r = web.get("/AllergyIntolerance", params={"patient": f"Patient/{patient}", "_total": "accurate"},
                headers=headers)
    assert r.status_code == 403, r.text
