"""Every version is judged by the patient it belonged to (issue 12): an Observation of patient
B moved to patient A has versions of both, and read, vread and history show each person only
the versions of the patients they may see, counted in the totals they get.
"""
from __future__ import annotations

import pytest

from tests.access.conftest import as_citizen, as_gp, observation, with_json


@pytest.fixture(scope="module")
def moved(demo, web, people):
    """An Observation written for B (v1, v2), moved to A (v3), changed for A (v4), then deleted
    (v5, a deletion of A's resource)."""
    A, B = people["silje"], people["else"]
    headers = with_json(demo.auth)
    r = web.post("/Observation", json=observation(B, "B's blood sugar", valueString="B-secret-1"), headers=headers)
    assert r.status_code == 201, r.text
    obs = r.json()
    versions = [obs]
    for subject, value in ((B, "B-secret-2"), (A, "A-value-3"), (A, "A-value-4")):
        body = {**versions[-1], "subject": {"reference": f"Patient/{subject}"}, "valueString": value}
        body.pop("meta")
        r = web.put(f"/Observation/{obs['id']}", json=body, headers=headers)
        assert r.status_code == 200, r.text
        versions.append(r.json())
    assert web.delete(f"/Observation/{obs['id']}", headers=demo.auth).status_code == 204
    return obs["id"]


def viewers(demo, people) -> dict:
    A, B = people["silje"], people["else"]
    return {"A's GP": as_gp(demo, A), "A": as_citizen(demo, "silje"), "B's GP": as_gp(demo, B),
            "B": as_citizen(demo, "else"), "Jakob's GP": as_gp(demo, people["jakob"])}


SEES = {"A's GP": [3, 4, 5], "A": [3, 4, 5], "B's GP": [1, 2], "B": [1, 2], "Jakob's GP": []}


@pytest.mark.parametrize("who", list(SEES))
def test_history_shows_only_the_versions_of_patients_one_may_see(demo, web, people, moved, who):
    headers = viewers(demo, people)[who]
    r = web.get(f"/Observation/{moved}/_history", headers=headers)
    if not SEES[who]:
        assert r.status_code == 404, r.text
        return
    assert r.status_code == 200, r.text
    bundle = r.json()
    versions = [int(e["response"]["etag"].strip('W/"')) for e in bundle["entry"]]
    assert sorted(versions) == SEES[who]
    assert bundle["total"] == len(SEES[who])
    hidden = {1: "B-secret-1", 2: "B-secret-2", 3: "A-value-3", 4: "A-value-4"}
    for version, text in hidden.items():
        assert (text in r.text) == (version in SEES[who]), (who, version)
    other = people["silje"] if who.startswith("B") else people["else"]
    assert other not in r.text


@pytest.mark.parametrize("who", list(SEES))
def test_vread_answers_each_version_by_its_own_patient(demo, web, people, moved, who):
    headers = viewers(demo, people)[who]
    for version in (1, 2, 3, 4, 5):
        r = web.get(f"/Observation/{moved}/_history/{version}", headers=headers)
        if version not in SEES[who]:
            assert r.status_code == 404, (who, version, r.text)
        elif version == 5:
            assert r.status_code == 410, (who, version, r.text)      # the deletion
        else:
            assert r.status_code == 200 and r.json()["meta"]["versionId"] == str(version), (who, version, r.text)


def test_history_pages_count_only_what_is_shown(demo, web, people, moved):
    headers = as_gp(demo, people["silje"])
    seen = []
    url, params = f"/Observation/{moved}/_history", {"_count": 1}
    while url:
        r = web.get(url, params=params, headers=headers)
        assert r.status_code == 200, r.text
        bundle = r.json()
        assert bundle["total"] == 3
        seen += [e["response"]["etag"] for e in bundle["entry"]]
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        params = None
    assert seen == ['W/"5"', 'W/"4"', 'W/"3"']


def test_the_system_sees_every_version(demo, web, moved):
    bundle = web.get(f"/Observation/{moved}/_history", headers=demo.auth).json()
    assert bundle["total"] == 5 and len(bundle["entry"]) == 5


def test_reading_an_earlier_version_is_in_that_patients_access_log(demo, web, people, moved):
    B = people["else"]
    assert web.get(f"/Observation/{moved}/_history/1", headers=as_gp(demo, B)).status_code == 200
    log = web.get(f"/Patient/{B}/$access-log", params={"_count": 20}, headers=as_citizen(demo, "else"))
    assert log.status_code == 200, log.text
    whats = [entity.get("what", {}).get("reference", "") for e in log.json().get("entry", [])
             for entity in e["resource"].get("entity", [])]
    assert f"Observation/{moved}/_history/1" in whats, whats
