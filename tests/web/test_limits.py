"""The documented limits (fhir/limits.py, docs/api.md "Limits") and the inputs that once gave a
500 (issue 12): every one is a 4xx OperationOutcome naming the problem, on both backends, and
the keep-alive connection survives every answer, a 500 included.
"""
from __future__ import annotations

import http.client
import json

from decimal import Decimal

import pytest

from enjournal.fhir import jsonio
from enjournal.fhir.limits import MAX_HOPS, MAX_NUMBER_DIGITS, MAX_PARAMETERS, MAX_URL_BYTES, MAX_VALUES

PID = "limits-target"


@pytest.fixture(scope="module", autouse=True)
def target(client):
    assert client.put(f"/Patient/{PID}", json={"resourceType": "Patient", "id": PID, "name": [{"family": "Grense"}]}
                      ).status_code in (200, 201)
    r = client.post("/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                          "subject": {"reference": f"Patient/{PID}"}})
    assert r.status_code == 201


def refused(response, status: int, expression: str | None, words: str) -> None:
    assert response.status_code == status, response.text[:500]
    issue = response.json()["issue"][0]
    assert response.json()["resourceType"] == "OperationOutcome"
    assert words in issue["diagnostics"], issue
    if expression is not None:
        assert issue["expression"] == [expression], issue
    assert response.headers.get("connection") != "close"


def still_alive(client) -> None:
    """The same keep-alive connection answers the next request."""
    assert client.get("/metadata").status_code == 200


CHAIN = "subject:Patient.organization.partof.partof.name"
HAS = "_has:Observation:subject:_has:Observation:has-member:_has:Observation:derived-from:_has:Observation:has-member:code"


def test_chains_and_has_beyond_the_limit_are_400_naming_the_parameter(client):
    assert CHAIN.count(".") == MAX_HOPS + 1
    refused(client.get("/Observation", params={CHAIN: "x"}), 400, CHAIN, f"at most {MAX_HOPS}")
    refused(client.get("/Patient", params={HAS: "x"}), 400, HAS, "reference hops")
    deep = "_has:Observation:subject:" * 20 + "code"
    refused(client.get("/Patient", params={deep: "x"}), 400, None, "reference hops")
    deeper = "_has:Observation:subject:" * 200 + "code"
    refused(client.post("/Patient/_search", data={deeper: "x"}), 400, None, "reference hops")
    still_alive(client)
    # at the limit, all is well
    for name, type_ in (("subject:Patient.organization.partof.name", "Observation"),
                        ("_has:Observation:subject:_has:Observation:has-member:_has:Observation:derived-from:code",
                         "Patient"),
                        ("_has:Observation:subject:performer:PractitionerRole.organization.name", "Patient")):
        assert client.get(f"/{type_}", params={name: "x"}).status_code == 200, name


@pytest.mark.parametrize("name", ["code", "_id", "subject", "date", "value-quantity", "code:not", "_lastUpdated"])
def test_a_thousand_values_are_searched_and_more_are_400(client, name):
    value = {"code": "c{}", "_id": "i{}", "subject": "Patient/p{}", "date": "ge20{:02}", "value-quantity": "{}",
             "code:not": "c{}", "_lastUpdated": "ge20{:02}"}[name]
    values = [value.format(i % 100 if "20" in value else i) for i in range(MAX_VALUES)]
    assert client.get("/Observation", params={name: ",".join(values)}).status_code == 200
    assert client.post("/Observation/_search", data={name: ",".join(values), "_total": "accurate"}
                       ).status_code == 200
    too_many = ",".join(values + ["one-more"])
    refused(client.get("/Observation", params={name: too_many}), 400, name, f"at most {MAX_VALUES}")
    refused(client.post("/Observation/_search", data={name: too_many}), 400, name, f"at most {MAX_VALUES}")
    still_alive(client)


def test_too_many_parameters_are_400(client):
    params = [("code", f"c{i}") for i in range(MAX_PARAMETERS + 1)]
    refused(client.get("/Observation", params=params), 400, None, f"at most {MAX_PARAMETERS}")
    assert client.get("/Observation", params=params[:MAX_PARAMETERS]).status_code == 200


def post_raw(client, body: bytes, url: str = "/Observation"):
    return client.post(url, content=body, headers={"Content-Type": "application/fhir+json"})


def observation_with(value: bytes) -> bytes:
    return (b'{"resourceType":"Observation","status":"final","code":{"text":"n"},"subject":{"reference":"Patient/'
            + PID.encode() + b'"},"valueQuantity":{"value":' + value + b'}}')


def test_numbers_keep_their_digits_up_to_the_limit(client):
    for text in (b"123456789012345678901234567890", b"0.123456789012345678901234567890", b"72.50", b"-1.0e-5"):
        r = post_raw(client, observation_with(text))
        assert r.status_code == 201, (text, r.text)
        read = client.get(f"/Observation/{r.json()['id']}")
        value = jsonio.loads(read.content)["valueQuantity"]["value"]
        assert Decimal(str(value)) == Decimal(text.decode()), read.content
        if b"e" not in text:
            assert b'"value":' + text + b"}" in read.content, read.content       # digit for digit
    big = "1" + "0" * 29
    found = client.get("/Observation", params={"value-quantity": f"ge{big}", "subject": f"Patient/{PID}"}).json()
    assert len(found["entry"]) == 1


@pytest.mark.parametrize("text, words", [
    (b"1" + b"0" * MAX_NUMBER_DIGITS, f"at most {MAX_NUMBER_DIGITS}"),
    (b"1" * 5000, "5,000 digits"),
    (b"0." + b"9" * 5000, "5,001 digits"),
    (b"1e400", "out of range"), (b"-1E309", "out of range"), (b"1e-400", "out of range"),
])
def test_numbers_beyond_the_limits_are_400(client, text, words):
    refused(post_raw(client, observation_with(text)), 400, "body", words)
    bundle = b'{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"POST","url":"Observation"},' \
             b'"resource":' + observation_with(text) + b'}]}'
    refused(post_raw(client, bundle, "/"), 400, "body", words)
    refused(client.get("/Observation", params={"value-quantity": text.decode()}), 400, "value-quantity",
            "digits" if b"e" not in text.lower() else "out of range")
    still_alive(client)


@pytest.mark.parametrize("body", [
    b'{"resourceType":"Observation","status":"final","code":{"text":"\\ud800"}}',
    b'{"resourceType":"Observation","status":"final","code":{"text":"\\udfff x"},"valueQuantity":{"value":1.50}}',
    b'{"resourceType":"Observation","status":"final","code":{"text":"\xed\xa0\x80"}}',
])
def test_a_lone_surrogate_is_400(client, body):
    refused(post_raw(client, body), 400, "body", "not valid JSON")


@pytest.mark.parametrize("method", [{}, [], 5, None, True, "post"])
def test_an_entry_method_that_is_no_method_is_400(client, method):
    for kind in ("transaction", "batch"):
        bundle = {"resourceType": "Bundle", "type": kind, "entry": [
            {"request": {"method": method, "url": "Patient"}, "resource": {"resourceType": "Patient"}}]}
        r = client.post("/", json=bundle)
        if kind == "transaction":
            refused(r, 400, "Bundle.entry[0].request.method", "request.method")
        else:
            assert r.status_code == 200 and r.json()["entry"][0]["response"]["status"] == "400", r.text
    still_alive(client)


def test_a_transaction_with_two_entries_of_one_fullurl_is_400(client):
    entry = {"fullUrl": "urn:uuid:0b0a9e12-5d6b-4a87-9d60-3c4f1d0e1c11", "request": {"method": "POST", "url": "Patient"},
             "resource": {"resourceType": "Patient", "name": [{"family": "Dobbel"}]}}
    r = client.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry, entry]})
    refused(r, 400, "Bundle.entry[1].fullUrl", "is used by entry 0 and entry 1")
    assert not client.get("/Patient", params={"family": "Dobbel"}).json().get("entry")


@pytest.mark.parametrize("id_", ["..", ".", "..."])
def test_an_id_of_dots_is_400(client, server, id_):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    body = json.dumps({"resourceType": "Patient", "id": id_})
    conn.request("PUT", f"/Patient/{id_}", body=body, headers={**server.auth, "Content-Type": "application/fhir+json"})
    r = conn.getresponse()
    payload = json.loads(r.read())
    assert r.status == 400 and payload["issue"][0]["expression"] == ["Patient.id"], payload
    conn.close()


@pytest.mark.parametrize("name, url", [("_count", "/Patient"), ("_offset", "/Patient"),
                                       ("_count", f"/Patient/{PID}/_history"), ("_offset", "/_history"),
                                       ("_count", f"/Patient/{PID}/$everything"), ("_count", "/AuditEvent")])
def test_negative_paging_is_400_not_clamped(client, name, url):
    refused(client.get(url, params={name: "-1"}), 400, name, "0 or more")


def test_a_url_beyond_the_limit_is_414_in_fhir(client, server):
    long_search = client.get("/Patient", params={"name": "z" * 60_000})
    assert long_search.status_code == 200
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    for size in (MAX_URL_BYTES + 10, 100_000):
        conn.request("GET", "/Patient?name=" + "a" * size, headers=server.auth)
        r = conn.getresponse()
        payload = json.loads(r.read())
        assert r.status == 414 and r.getheader("content-type").startswith("application/fhir+json")
        assert payload["resourceType"] == "OperationOutcome" and "POST" in payload["issue"][0]["diagnostics"]
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.close()


def test_a_request_the_http_server_cannot_read_is_answered_in_fhir(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("GET", "/metadata", skip_host=True)
    conn.putheader("Host", "x\x01y")
    conn.endheaders()
    r = conn.getresponse()
    payload = json.loads(r.read())
    assert r.status == 400 and payload["resourceType"] == "OperationOutcome"
    conn.close()


def test_an_unexpected_error_is_a_500_outcome_and_keeps_the_connection(client, server, monkeypatch):
    resources = server.platform.resources

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")
    for where in ("read", "search"):           # the plain-read fast path, and Starlette's routes
        monkeypatch.setattr(resources, where, broken)
        r = client.get(f"/Patient/{PID}") if where == "read" else client.get("/Patient", params={"name": "x"})
        assert r.status_code == 500, r.text
        assert r.json()["resourceType"] == "OperationOutcome" and "a bug" not in r.text
        assert r.headers.get("connection") != "close"
        monkeypatch.undo()
        still_alive(client)


@pytest.mark.parametrize("query", [{}, {"active:missing": "true"}, {"_id": "x"}, {"name": "a,b"}])
def test_a_citizen_without_a_record_finds_nothing(client, server, query):
    """Bound to no patient (no Patient has their fødselsnummer): every search is empty, on
    PostgreSQL as on SQLite (an empty id list is no SQL syntax error)."""
    headers = {"Authorization": f"Bearer {server.token('hakon')}"}
    for response in (client.get("/Patient", params=query, headers=headers),
                     client.post("/Patient/_search", data=query, headers=headers),
                     client.get("/Observation", params={"_id": "x"} if query else {}, headers=headers)):
        assert response.status_code == 200, response.text
        assert response.json().get("total", 0) == 0 and not response.json().get("entry")
