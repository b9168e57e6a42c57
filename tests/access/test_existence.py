"""Existence is unobservable (issue 12): a write to another patient's resource answers exactly
as a write to a resource that does not exist, for every kind of caller, on every path; the
same holds for the references a write makes; absolute references to this server count as
the relative ones; and the attestation itself cannot be gamed (empty emergency reasons, two
Authorization headers).
"""
from __future__ import annotations

import base64
import json

import httpx
import pytest

from tests.access.conftest import as_citizen, as_gp, first, observation, outcome, with_json

UNKNOWN = "no-such-observation"


def callers(demo, people) -> dict:
    A = people["silje"]
    return {
        "citizen with write scopes": as_citizen(demo, "silje"),
        "citizen, read-only": as_citizen(demo, "silje", scope=None),
        "GP of A": as_gp(demo, A),
        "GP of A, emergency": as_gp(demo, A, purpose="ETREAT", reason="unconscious on arrival"),
        "parent of a 14-year-old": as_citizen(demo, "silje", acting_for="19861286366"),
    }


def answer(response: httpx.Response, *ids: str) -> tuple:
    """What a client learns from an answer: status and the outcome's text, ids blanked."""
    issue = outcome(response)
    text = issue["diagnostics"]
    for id_ in ids:
        text = text.replace(id_, "<id>")
    return response.status_code, issue["code"], text, tuple(e.replace(ids[0], "<id>") for e in issue.get(
        "expression", ()))


@pytest.fixture(scope="module")
def b_obs(demo, web, people):
    return first(web, demo, "Observation", people["else"])


@pytest.fixture(scope="module")
def b_deleted(demo, web, people):
    r = web.post("/Observation", json=observation(people["else"], "deleted one"), headers=with_json(demo.auth))
    assert r.status_code == 201
    assert web.delete(f"/Observation/{r.json()['id']}", headers=demo.auth).status_code == 204
    return r.json()["id"]


def writes(target: dict, id_: str, mine: str) -> list[tuple]:
    """(name, method, url, body, content type) of every way to write Observation/id_."""
    body = {**observation(mine, "overwritten"), "id": id_}
    patch = [{"op": "replace", "path": "/status", "value": "entered-in-error"}]
    patch_b64 = base64.b64encode(json.dumps(patch).encode()).decode()
    return [
        ("PUT", "PUT", f"/Observation/{id_}", body, "application/fhir+json"),
        ("PATCH", "PATCH", f"/Observation/{id_}", patch, "application/json-patch+json"),
        ("DELETE", "DELETE", f"/Observation/{id_}", None, None),
        ("conditional PUT with the id in the body", "PUT", f"/Observation?_id={id_}&code:text=nothing", body,
         "application/fhir+json"),
        ("transaction PUT", "POST", "/", {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "PUT", "url": f"Observation/{id_}"}, "resource": body}]}, "application/fhir+json"),
        ("transaction PATCH", "POST", "/", {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "PATCH", "url": f"Observation/{id_}"},
             "resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": patch_b64}}]},
         "application/fhir+json"),
        ("transaction DELETE", "POST", "/", {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "DELETE", "url": f"Observation/{id_}"}}]}, "application/fhir+json"),
        ("batch PUT", "POST", "/", {"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "PUT", "url": f"Observation/{id_}"}, "resource": body}]}, "application/fhir+json"),
    ]


def _send(web, headers, method, url, body, ctype):
    extra = {"Content-Type": ctype} if ctype else {}
    r = web.request(method, url, content=json.dumps(body) if body is not None else None,
                    headers={**headers, **extra})
    if url == "/" and r.status_code == 200 and body["type"] == "batch":
        entry = r.json()["entry"][0]["response"]
        return entry["status"], entry.get("outcome", {}).get("issue", [{}])[0].get("diagnostics")
    return r


@pytest.mark.parametrize("who", ["citizen with write scopes", "citizen, read-only", "GP of A",
                                 "GP of A, emergency", "parent of a 14-year-old"])
def test_writing_another_patients_resource_answers_as_if_it_did_not_exist(demo, web, people, b_obs, b_deleted, who):
    headers = callers(demo, people)[who]
    mine = people["silje"]
    before = web.get(f"/Observation/{b_obs['id']}", headers=demo.auth).json()
    for target in (b_obs["id"], b_deleted):
        for (name, method, url, body, ctype), (_n, _m, url2, body2, _c) in zip(
                writes(b_obs, target, mine), writes(b_obs, UNKNOWN, mine)):
            theirs = _send(web, headers, method, url, body, ctype)
            unknown = _send(web, headers, method, url2, body2, ctype)
            if isinstance(theirs, tuple):           # a batch entry
                assert (theirs[0], (theirs[1] or "").replace(target, "<id>")) == \
                       (unknown[0], (unknown[1] or "").replace(UNKNOWN, "<id>")), (who, name)
                assert theirs[0][:3] in ("403", "404"), (who, name, theirs)
                continue
            assert theirs.status_code in (403, 404), (who, name, theirs.text)
            assert answer(theirs, target) == answer(unknown, UNKNOWN), (who, name, theirs.text, unknown.text)
    assert web.get(f"/Observation/{b_obs['id']}", headers=demo.auth).json() == before
    assert web.get(f"/Observation/{b_deleted}", headers=demo.auth).status_code == 410


def test_only_systems_choose_the_ids_of_new_resources(demo, web, people):
    A = people["silje"]
    body = {**observation(A, "my own id"), "id": "my-chosen-id"}
    r = web.put("/Observation/my-chosen-id", json=body, headers=with_json(as_citizen(demo, "silje")))
    assert r.status_code == 404 and "POST" in outcome(r)["diagnostics"], r.text
    r = web.put("/Observation/my-chosen-id", json=body, headers=with_json(as_gp(demo, A)))
    assert r.status_code == 404
    created = web.post("/Observation", json=body, headers=with_json(as_citizen(demo, "silje")))
    assert created.status_code == 201 and created.json()["id"] != "my-chosen-id"
    # the client's own resource, with the id the server gave it, can be updated as before
    again = {**created.json(), "valueString": "changed"}
    assert web.put(f"/Observation/{again['id']}", json=again, headers=with_json(as_citizen(demo, "silje"))
                   ).status_code == 200
    assert web.put("/Observation/my-chosen-id", json=body, headers=with_json(demo.auth)).status_code == 201


def test_reference_checks_do_not_tell_whether_another_patients_resource_exists(demo, web, people, b_obs):
    A = people["silje"]
    for headers in (as_citizen(demo, "silje"), as_gp(demo, A)):
        theirs = web.post("/Observation", json=observation(A, hasMember=[{"reference": f"Observation/{b_obs['id']}"}]),
                          headers=with_json(headers))
        unknown = web.post("/Observation", json=observation(A, hasMember=[{"reference": f"Observation/{UNKNOWN}"}]),
                           headers=with_json(headers))
        assert theirs.status_code == 422, theirs.text
        assert answer(theirs, b_obs["id"]) == answer(unknown, UNKNOWN)
        own = first(web, demo, "Observation", A)
        fine = web.post("/Observation", json=observation(A, hasMember=[{"reference": f"Observation/{own['id']}"}]),
                        headers=with_json(headers))
        assert fine.status_code == 201, fine.text


def test_absolute_references_to_this_server_are_the_relative_ones(demo, web, people):
    A, B = people["silje"], people["else"]
    citizen = with_json(as_citizen(demo, "silje"))
    for reference in (f"{demo.base}/Patient/{B}", f"Patient/{B}"):
        r = web.post("/Observation", json=observation(A, performer=[{"reference": reference}]), headers=citizen)
        assert r.status_code == 403 and "for that patient" in outcome(r)["diagnostics"], (reference, r.text)
    r = web.post("/Observation", json=observation(A, performer=[{"reference": f"//Patient/{B}"}]), headers=citizen)
    assert r.status_code == 400 and outcome(r)["expression"] == ["Observation.performer[0]"], r.text
    # a system's write: made relative, so it is in B's compartment like any reference to B
    r = web.post("/Observation", json=observation(B, "absolute", performer=[{"reference": f"{demo.base}/Patient/{A}"}]),
                 headers=with_json(demo.auth))
    assert r.status_code == 201 and r.json()["performer"][0]["reference"] == f"Patient/{A}", r.text


def test_references_to_another_server_are_in_no_local_compartment(demo, web, people):
    A, B = people["silje"], people["else"]
    elsewhere = f"https://fhir.elsewhere.example/Patient/{B}"
    r = web.post("/Observation", json=observation(A, "from elsewhere", performer=[{"reference": elsewhere}]),
                 headers=with_json(demo.auth))
    assert r.status_code == 201, r.text
    obs = r.json()["id"]
    everything = web.get(f"/Patient/{B}/$everything", params={"_count": 1000}, headers=demo.auth).json()
    assert obs not in {e["resource"]["id"] for e in everything["entry"]}
    local = web.get("/Observation", params={"performer": f"Patient/{B}"}, headers=demo.auth).json()
    assert obs not in {e["resource"]["id"] for e in local.get("entry", [])}
    by_url = web.get("/Observation", params={"performer": elsewhere}, headers=demo.auth).json()
    assert [e["resource"]["id"] for e in by_url["entry"]] == [obs]
    included = web.get("/Observation", params={"_id": obs, "_include": "Observation:performer"}, headers=demo.auth)
    assert {e["resource"]["resourceType"] for e in included.json()["entry"]} == {"Observation"}


# -- the attestation --------------------------------------------------------------------------

@pytest.mark.parametrize("reason", ["-", "...", "- -", "!!!???", "12345", "a.b"])
def test_emergency_access_needs_a_reason_in_words(demo, web, people, reason):
    patient = people["jakob"]
    headers = demo.headers("gp2", purpose="BTG", patient=f"Patient/{patient}", reason=reason)
    r = web.get("/AllergyIntolerance", headers=headers)
    assert r.status_code == 403, r.text
    assert "X-Access-Reason" in outcome(r)["diagnostics"]
    # no grant was opened: the next emergency request still needs a reason
    r = web.get("/AllergyIntolerance", headers=demo.headers("gp2", purpose="BTG", patient=f"Patient/{patient}"))
    assert r.status_code == 403


def test_a_short_reason_in_words_opens_emergency_access(demo, web, people):
    headers = demo.headers("doctor", purpose="ETREAT", patient=f"Patient/{people['maja']}", reason="fall")
    assert web.get("/Condition", headers=headers).status_code == 200


@pytest.mark.parametrize("header", ["Authorization", "X-Patient", "X-Purpose-Of-Use"])
def test_a_request_with_two_of_an_access_header_is_refused(demo, web, people, header):
    A = people["silje"]
    first_headers = as_gp(demo, A)
    second = {"Authorization": f"Bearer {demo.token('system')}", "X-Patient": f"Patient/{people['else']}",
              "X-Purpose-Of-Use": "BTG"}[header]
    pairs = list(first_headers.items()) + [(header, second), ("Accept", "application/fhir+json")]
    r = web.get("/Observation", headers=httpx.Headers(pairs))
    assert r.status_code == 400, r.text
    assert outcome(r)["expression"] == [header.lower()]
