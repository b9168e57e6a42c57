"""Correct under concurrency, on SQLite and PostgreSQL, against `enjournal serve --workers 2`
(two processes racing is the real case): racing conditional creates make one resource,
concurrent If-Match updates have exactly one winner, 32 writers lose no update, transactions
are atomic and never seen in part, and paging stays consistent while writes happen."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKENDS, free_port, new_pg_database

ENJOURNAL = str(Path(sys.executable).with_name("enjournal"))


@pytest.fixture(scope="module", params=BACKENDS)
def served(request, tmp_path_factory):
    """``enjournal serve --workers 2`` on a fresh database; yields (base URL, auth headers)."""
    tmp = tmp_path_factory.mktemp("conc")
    url = new_pg_database("conc") if request.param == "postgres" else f"sqlite:///{tmp}/conc.db"
    port = free_port()
    env = dict(os.environ, ENJOURNAL_BUILTIN_IDP="on", ENJOURNAL_EXPORT_DIR=str(tmp / "exports"))
    subprocess.run([ENJOURNAL, "migrate", "--database", url], check=True, capture_output=True, env=env)
    proc = subprocess.Popen([ENJOURNAL, "serve", "--workers", "2", "--host", "127.0.0.1", "--port", str(port),
                             "--database", url], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(f"server did not start: {proc.stderr.read().decode()[-2000:] if proc.poll() else ''}")
            time.sleep(0.2)
        token = subprocess.run([ENJOURNAL, "token", "system", "--database", url, "--host", "127.0.0.1",
                                "--port", str(port)], check=True, capture_output=True, text=True, env=env).stdout.strip()
        yield base, {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def race(n: int, work) -> list:
    """Run ``work(i, client)`` in ``n`` threads that start together, each with its own
    connection; returns the results in thread order."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i: int) -> None:
        with httpx.Client(timeout=60) as client:
            barrier.wait()
            try:
                results[i] = work(i, client)
            except Exception as exc:       # surfaced by the assertions
                results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def count(base, auth, type_: str, **params) -> int:
    r = httpx.get(f"{base}/{type_}", params={**params, "_summary": "count"}, headers=auth)
    assert r.status_code == 200, r.text
    return r.json()["total"]


def patient(identifier: str, family: str = "Race", **extra) -> dict:
    return {"resourceType": "Patient", "identifier": [{"system": "urn:test:race", "value": identifier}],
            "name": [{"family": family}], **extra}


def test_racing_conditional_creates_make_one_resource(served):
    base, auth = served
    for _round in range(3):
        key = uuid.uuid4().hex
        results = race(16, lambda i, c: c.post(f"{base}/Patient", json=patient(key),
                                                headers={**auth, "If-None-Exist": f"identifier=urn:test:race|{key}"}))
        statuses = sorted(r.status_code for r in results)
        assert statuses == [200] * 15 + [201], statuses
        assert count(base, auth, "Patient", identifier=f"urn:test:race|{key}") == 1
        locations = {r.headers.get("Location", r.headers.get("Content-Location", "")).split("/_history")[0]
                     for r in results}
        ids = {r.json()["id"] for r in results if r.status_code in (200, 201) and r.content}
        assert len(ids) == 1 and len(locations - {""}) <= 1


def test_racing_conditional_updates_make_one_resource(served):
    base, auth = served
    key = uuid.uuid4().hex
    results = race(16, lambda i, c: c.put(f"{base}/Patient", params={"identifier": f"urn:test:race|{key}"},
                                           json=patient(key, family=f"U{i}"), headers=auth))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] * 15 + [201], statuses
    assert count(base, auth, "Patient", identifier=f"urn:test:race|{key}") == 1
    pid = next(r.json()["id"] for r in results if r.status_code == 201)
    assert httpx.get(f"{base}/Patient/{pid}", headers=auth).json()["meta"]["versionId"] == "16"


def test_if_match_has_exactly_one_winner(served):
    base, auth = served
    for _round in range(3):
        created = httpx.post(f"{base}/Patient", json=patient(uuid.uuid4().hex), headers=auth).json()
        pid = created["id"]
        results = race(16, lambda i, c: c.put(f"{base}/Patient/{pid}", json={**created, "gender": "female",
                                                                            "name": [{"family": f"W{i}"}]},
                                               headers={**auth, "If-Match": 'W/"1"'}))
        statuses = sorted(r.status_code for r in results)
        assert statuses == [200] + [412] * 15, statuses
        winner = next(i for i, r in enumerate(results) if r.status_code == 200)
        now = httpx.get(f"{base}/Patient/{pid}", headers=auth).json()
        assert now["meta"]["versionId"] == "2" and now["name"][0]["family"] == f"W{winner}"
        assert all(r.json()["resourceType"] == "OperationOutcome" for r in results if r.status_code == 412)


def test_thirty_two_writers_lose_no_update(served):
    base, auth = served
    created = httpx.post(f"{base}/Patient", json=patient(uuid.uuid4().hex, multipleBirthInteger=0),
                         headers=auth).json()
    pid, per_writer = created["id"], 4

    def bump(i: int, c: httpx.Client) -> int:
        retries = 0
        for _ in range(per_writer):
            while True:
                current = c.get(f"{base}/Patient/{pid}", headers=auth).json()
                current["multipleBirthInteger"] += 1
                r = c.put(f"{base}/Patient/{pid}", json=current,
                          headers={**auth, "If-Match": f'W/"{current["meta"]["versionId"]}"'})
                if r.status_code == 200:
                    break
                assert r.status_code == 412, r.text
                retries += 1
        return retries

    results = race(32, bump)
    assert all(isinstance(r, int) for r in results), results
    final = httpx.get(f"{base}/Patient/{pid}", headers=auth).json()
    assert final["multipleBirthInteger"] == 32 * per_writer
    assert final["meta"]["versionId"] == str(32 * per_writer + 1)
    history = httpx.get(f"{base}/Patient/{pid}/_history", params={"_count": 1}, headers=auth).json()
    assert history["total"] == 32 * per_writer + 1


def test_thirty_two_writers_creating_and_patching_keep_everything(served):
    base, auth = served
    tag = uuid.uuid4().hex

    def work(i: int, c: httpx.Client) -> list:
        ids = []
        for k in range(3):
            r = c.post(f"{base}/Patient", json={**patient(f"{tag}-{i}-{k}"), "meta": {"tag": [
                {"system": "urn:test:tag", "code": tag}]}}, headers=auth)
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        r = c.patch(f"{base}/Patient/{ids[0]}", content=b'[{"op":"add","path":"/gender","value":"male"}]',
                    headers={**auth, "Content-Type": "application/json-patch+json"})
        assert r.status_code == 200, r.text
        return ids

    results = race(32, work)
    assert all(isinstance(r, list) for r in results), [r for r in results if not isinstance(r, list)][:3]
    assert count(base, auth, "Patient", _tag=f"urn:test:tag|{tag}") == 96
    assert count(base, auth, "Patient", _tag=f"urn:test:tag|{tag}", gender="male") == 32
    for ids in results:
        assert httpx.get(f"{base}/Patient/{ids[0]}", headers=auth).json()["meta"]["versionId"] == "2"


def _transaction(tag: str, n: int, fail: bool = False) -> dict:
    entries = [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {**patient(f"{tag}-{k}"), "meta": {
        "tag": [{"system": "urn:test:tx", "code": tag}]}}, "request": {"method": "POST", "url": "Patient"}}
        for k in range(n)]
    if fail:
        entries.append({"resource": {"resourceType": "Patient", "id": "nope", "gender": "unknown"},
                        "request": {"method": "PUT", "url": "Patient/nope", "ifMatch": 'W/"7"'}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def test_a_failing_transaction_leaves_nothing(served):
    base, auth = served
    tag = uuid.uuid4().hex
    before = httpx.get(f"{base}/_history", params={"_count": 1}, headers=auth).json()["total"]
    r = httpx.post(base, json=_transaction(tag, 20, fail=True), headers=auth)
    assert r.status_code in (409, 412), r.text
    assert count(base, auth, "Patient", _tag=f"urn:test:tx|{tag}") == 0
    assert httpx.get(f"{base}/_history", params={"_count": 1}, headers=auth).json()["total"] == before


def test_readers_never_see_part_of_a_transaction(served):
    base, auth = served
    n, rounds = 25, 12
    tags = [uuid.uuid4().hex for _ in range(rounds)]
    seen: list = []
    done = threading.Event()

    def writer() -> None:
        with httpx.Client(timeout=60, headers=auth) as c:
            for tag in tags:
                assert c.post(base, json=_transaction(tag, n)).status_code == 200
        done.set()

    def reader() -> None:
        with httpx.Client(timeout=60, headers=auth) as c:
            while not done.is_set():
                for tag in tags:
                    seen.append(count(base, auth, "Patient", _tag=f"urn:test:tx|{tag}"))

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen and set(seen) <= {0, n}, sorted(set(seen))
    assert n in seen
    assert all(count(base, auth, "Patient", _tag=f"urn:test:tx|{t}") == n for t in tags)


def test_paging_is_consistent_while_writes_happen(served):
    base, auth = served
    family = f"Page{uuid.uuid4().hex[:8]}"
    with httpx.Client(timeout=60, headers=auth) as c:
        existing = []
        for k in range(60):
            existing.append(c.post(f"{base}/Patient", json=patient(f"{family}-{k}", family=family)).json()["id"])
    stop = threading.Event()

    def churn() -> None:
        with httpx.Client(timeout=60, headers=auth) as c:
            k = 0
            while not stop.is_set():
                c.post(f"{base}/Patient", json=patient(f"{family}-new-{k}", family=family))
                victim = c.get(f"{base}/Patient/{existing[k % len(existing)]}").json()
                c.put(f"{base}/Patient/{victim['id']}", json={**victim, "gender": "other"})
                k += 1

    writers = [threading.Thread(target=churn) for _ in range(2)]
    for t in writers:
        t.start()
    try:
        got: list[str] = []
        first = httpx.get(f"{base}/Patient", params={"family": family, "_count": 10, "_total": "accurate"},
                          headers=auth).json()
        total = first["total"]
        page = first
        while True:
            got += [e["resource"]["id"] for e in page.get("entry", [])]
            nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
            if not nxt:
                break
            time.sleep(0.05)
            page = httpx.get(nxt[0], headers=auth).json()
            assert page.get("total", total) == total
    finally:
        stop.set()
        for t in writers:
            t.join()
    assert len(got) == len(set(got)), "a resource came twice"
    assert set(existing) <= set(got), "a resource present before the first page was skipped"
    assert len(got) == total
