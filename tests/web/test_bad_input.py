"""Hostile and malformed input: every answer is a 4xx OperationOutcome (or a success),
never a 500, and the connection stays usable (a 500 makes the server drop keep-alive)."""
from __future__ import annotations

import pytest

PID = "fuzz-target"
REQUESTS = [
 ("GET", "/Patient?_count=-1"), ("GET", "/Patient?_count=abc"), ("GET", "/Patient?_count=99999999999999999999"),
 ("GET", "/Patient/" + "a"*100), ("GET", "/Patient/a%00b"), ("GET", "/Patient?name=%00"), ("GET", "/Patient?_sort=name;DROP"),
 ("GET", "/Patient?_sort="), ("GET", "/Patient?name="), ("GET", "/Patient?birthdate="), ("GET", "/Patient?birthdate=ge"),
 ("GET", "/Patient?_include=Patient"), ("GET", "/Patient?_include=Patient:name"), ("GET", "/Patient?_revinclude=Foo:bar"),
 ("GET", "/Patient?_has=x"), ("GET", "/Patient?_has:Observation:subject"), ("GET", "/Patient?_has:Observation:subject:code=1"),
 ("GET", "/Patient?general-practitioner.name=x"), ("GET", "/Patient?general-practitioner:Foo.name=x"), ("GET", "/Patient?name.x=1"),
 ("GET", "/Observation?value-quantity=5.4|a|b|c"), ("GET", "/Observation?value-quantity=1e999"), ("GET", "/Observation?value-quantity=nan"),
 ("GET", "/Observation?code-value-quantity=a$b$c"), ("GET", "/Observation?date=2020-13"), ("GET", "/Observation?date=ap2020"),
 ("GET", "/Observation?_lastUpdated=gt2020&_lastUpdated=lt1999"), ("GET", "/_history?_at=xx"), ("GET", "/_history?_count=-5"),
 ("GET", "/Patient/{PID}/_history/abc"), ("GET", "/Patient/{PID}/_history/99999999999999999999999"),
 ("GET", "/?_type=Foo"), ("GET", "/?name=x"), ("GET", "/?_type=Patient&name=x"), ("GET", "/Patient?_summary=bogus"),
 ("GET", "/Patient?_elements="), ("GET", "/Patient?_total=x"), ("GET", "/Patient?_id=" + "x"*70),
 ("GET", "/Patient?identifier=" + "|"*5), ("GET", "/Patient?name=" + "a"*8000), ("GET", "/Patient?_offset=99999999999999999999"),
 ("GET", "/Patient/{PID}/Observation?code=1"), ("GET", "/Patient/{PID}/Foo"), ("GET", "/Foo/1/Observation"),
 ("GET", "/Observation?subject=Patient/" + "x"*70), ("GET", "/Observation?subject=Foo/1"), ("GET", "/Observation?subject:identifier=a|b"),
 ("GET", "/Patient?gender:of-type=a|b|c"), ("GET", "/Patient?identifier:of-type=a|b"), ("GET", "/Patient?name:missing=maybe"),
 ("GET", "/Patient?_tag=a,b,,"), ("GET", "/Patient?_profile:below=http://x"), ("GET", "/ValueSet?url:above=http://x/y"),
 ("DELETE", "/Patient"), ("DELETE", "/Patient?"), ("DELETE", "/Patient?_count=5"), ("PUT", "/Patient"), ("PATCH", "/Patient/nope"),
 ("GET", "/metadata?_format=xml"), ("GET", "/Patient?_format=json"), ("POST", "/Patient/_search"), ("GET", "/$everything"),
 ("GET", "/Patient/$everything"), ("POST", "/$validate"), ("GET", "/Patient/x/$foo"), ("GET", "/Observation?value-quantity=gt1e308"),
 ("GET", "/Observation?date=ap0001"), ("GET", "/Observation?date=ap9999"), ("GET", "/Patient?birthdate=sa9999-12-31"),
 ("GET", "/Patient/{PID}"), ("GET", "/Patient?_snapshot=99999999999999999999"), ("GET", "/_history?_offset=99999999999999999999"),
]
BODIES = [b"", b"null", b"1", b'"x"', b"[]", b"{}", b'{"resourceType":"Patient","id":5}', b'{"resourceType":"Patient","name":"x"}',
 b'{"resourceType":"Patient","_birthDate":{"extension":[{"url":"x","valueString":"y"}]}}', b'{"resourceType":"Patient","meta":{"versionId":5}}',
 b'{"resourceType":"Patient","birthDate":1e999}', b'{"resourceType":"Patient","multipleBirthInteger":99999999999999999999999}',
 b'{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1e999}}',
 b'{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":123456789012345678901234567890}}',
 b'{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST","url":"Patient"},"resource":{"resourceType":"Patient"}, "fullUrl":5}]}',
 b'{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"PUT","url":"Patient/x"},"resource":{"resourceType":"Observation"}}]}',
 b'{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST","url":"Patient","ifNoneExist":"garbage"},"resource":{"resourceType":"Patient"}}]}',
 b'{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"DELETE","url":"Patient?"}}]}',
 b'{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"GET","url":"Patient?name=x"}}]}',
 b'{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"PATCH","url":"Patient/x"},"resource":{"resourceType":"Binary","data":"!!"}}]}',
 b'{"resourceType":"Bundle","type":"batch","entry":[5, null, {"request":5}]}', b'{"resourceType":"Bundle","type":"transaction","entry":{}}',
 b'{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"PUT","url":"Patient/' + b"y"*80 + b'"},"resource":{"resourceType":"Patient","id":"' + b"y"*80 + b'"}}]}',
 b'{"resourceType":"Patient","contained":[{"resourceType":"Organization","id":"o"}],"managingOrganization":{"reference":"#o"}}',
 b'{"resourceType":"Patient","managingOrganization":{"reference":"#nope"}}', b'{"resourceType":"Patient","managingOrganization":{"reference":5}}',
 b'{"resourceType":"Patient","extension":[{"url":"http://x","valueReference":{"reference":"Patient/nope"}}]}',
 b'[{"op":"replace","path":"/x/y/z","value":1}]', b'[{"op":"bogus"}]', b'[{"op":"remove","path":"/resourceType"}]',
 b'[{"op":"add","path":"","value":"a"}]', b'[{"op":"replace","path":"","value":[]}]',
 b'{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Patient","ifMatch":1}}]}',
 b'{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"PUT","url":"Patient/x","ifMatch":["1"]},"resource":{"resourceType":"Patient","id":"x"}}]}',
]



@pytest.fixture(scope="module", autouse=True)
def target(client):
    client.put(f"/Patient/{PID}", json={"resourceType": "Patient", "id": PID, "name": [{"family": "Fuzz"}]})


def _check(resp):
    assert resp.status_code < 500, (resp.request.method, str(resp.request.url)[:120], resp.text[:300])
    if resp.status_code >= 400:
        assert resp.json()["resourceType"] == "OperationOutcome"
        assert resp.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("method,url", REQUESTS, ids=[f"{m} {u[:60]}" for m, u in REQUESTS])
def test_odd_requests(client, method, url):
    _check(client.request(method, url.replace("{PID}", PID)))


@pytest.mark.parametrize("body", BODIES, ids=[b[:50].decode(errors="replace") for b in BODIES])
@pytest.mark.parametrize("method,url", [("POST", "/Patient"), ("POST", "/"), ("PUT", f"/Patient/{PID}"),
                                        ("PATCH", f"/Patient/{PID}"), ("POST", "/Patient/$validate")])
def test_odd_bodies(client, method, url, body):
    before = client.get(f"/Patient/{PID}").json()["meta"]["versionId"]
    _check(client.request(method, url, content=body, headers={"Content-Type": "application/fhir+json"}))
    after = client.get(f"/Patient/{PID}")
    assert after.status_code == 200
    if method == "PATCH":
        assert after.json()["meta"]["versionId"] == before   # none of these patches is valid
