"""Correct under concurrency, over real HTTP, on PostgreSQL (and on SQLite alike).

Two servers share one database: ``enjournal serve --workers 2`` (two uvicorn processes) and
the test's own in-process server, so every race here runs across three processes. Racing
requests each have their own HTTP connection, opened before a ``threading.Barrier`` releases
them together, and each race runs for several rounds. The promises
(https://hl7.org/fhir/R4/http.html):

- racing conditional creates make one resource (#ccreate), racing conditional updates too;
- concurrent updates with If-Match: exactly one wins, the rest get 412 (#concurrency);
- no lost updates among 32 concurrent writers; versions, history and the change feed are
  complete and contiguous;
- a transaction is atomic: a failing entry leaves nothing, and readers never see a part;
- paging is stable while others write: no duplicates, nothing skipped, a steady total.

What makes each hold is the store's write lock (``store/postgres/repository.py``: a
transaction-scoped advisory lock; SQLite: ``BEGIN IMMEDIATE``): a conditional create's
search and insert, and If-Match's comparison and write, happen under it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKENDS, free_port, new_pg_database, start_server

ENJOURNAL = str(Path(sys.executable).with_name("enjournal"))
SYS = "urn:enjournal:test:race"
TAG_SYS = "urn:enjournal:test:run"
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


# -- two servers on one database ------------------------------------------------------------

@dataclass
class Endpoint:
    base: str
    auth: dict

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=120,
                            headers={"Accept": "application/fhir+json", **self.auth})


class WorkerServer:
    """``enjournal serve --workers N`` in a subprocess of its own session (stopped by its id)."""

    def __init__(self, database: str, workers: int, log: Path):
        self.port = free_port()
        self.common = ["--database", database, "--host", "127.0.0.1", "--port", str(self.port),
                       "--builtin-idp", "on"]
        self.log = open(log, "wb")
        self.proc = subprocess.Popen([ENJOURNAL, "serve", "--workers", str(workers)] + self.common,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.base = f"http://127.0.0.1:{self.port}"
        # the token command reads the signing key the in-process server already created
        token = subprocess.run([ENJOURNAL, "token", "system"] + self.common, capture_output=True, text=True)
        deadline = time.time() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"enjournal serve exited: {log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{self.base}/metadata", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                self.stop()
                raise RuntimeError("enjournal serve did not start")
            time.sleep(0.05)
        if token.returncode != 0:
            self.stop()
            raise RuntimeError(f"enjournal token failed: {token.stderr}")
        self.auth = {"Authorization": f"Bearer {token.stdout.strip()}"}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)     # uvicorn's supervisor stops its workers
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the session this test started
                self.proc.wait()
        self.log.close()


class Servers:
    """The endpoints racing requests alternate between, and the in-process server's raw store
    (for the change feed, which has no HTTP interface)."""

    def __init__(self, backend: str, endpoints: list[Endpoint], store):
        self.backend = backend
        self.endpoints = endpoints
        self.store = store

    def scale(self, postgres: int, sqlite: int) -> int:
        """How big a race is: PostgreSQL is the point; SQLite runs a smaller one."""
        return postgres if self.backend == "postgres" else sqlite

    def client(self, i: int) -> httpx.Client:
        return self.endpoints[i % len(self.endpoints)].client()


@pytest.fixture(scope="module", params=BACKENDS)
def servers(request, tmp_path_factory):
    backend = request.param
    tmp = tmp_path_factory.mktemp(f"race-{backend}")
    url = new_pg_database("race") if backend == "postgres" else f"sqlite:///{tmp}/race.db"
    inproc = start_server(tmp, backend, database=url)    # first: it creates the schema and keys
    try:
        workers = WorkerServer(url, 2, tmp / "serve.log")
    except BaseException:
        inproc.stop()
        raise
    yield Servers(backend, [Endpoint(workers.base, workers.auth), Endpoint(inproc.base, inproc.auth)],
                  inproc.platform.store)
    inproc.stop()
    workers.stop()


@pytest.fixture
def http(servers):
    with servers.client(1) as c:
        yield c


# -- racing ---------------------------------------------------------------------------------

def race(servers: Servers, n: int, rounds: int, action) -> list[list]:
    """Run ``action(client, i, round)`` in ``n`` threads, thread i on endpoint i % 2 over a
    connection of its own, opened before the race; a barrier releases each round's requests
    together. Returns each round's results in thread order."""
    barrier = threading.Barrier(n)
    results = [[None] * n for _ in range(rounds)]
    failures: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with servers.client(i) as c:
                assert c.get("/Patient/warm-up").status_code == 404     # connected before the race
                for r in range(rounds):
                    barrier.wait(timeout=60)
                    results[r][i] = action(c, i, r)
        except threading.BrokenBarrierError:
            pass
        except BaseException as exc:        # noqa: BLE001 - reported in the main thread
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    return results


def run_threads(*targets) -> None:
    """Run callables in threads of their own; re-raise the first failure."""
    failures: list[BaseException] = []

    def wrap(target):
        try:
            target()
        except BaseException as exc:        # noqa: BLE001
            failures.append(exc)

    threads = [threading.Thread(target=wrap, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]


def patient(family: str, tag: str | None = None, **extra) -> dict:
    body = {"resourceType": "Patient", "name": [{"family": family}], **extra}
    if tag:
        body["meta"] = {"tag": [{"system": TAG_SYS, "code": tag}]}
    return body


def created(c: httpx.Client, body: dict) -> dict:
    resp = c.post(f"/{body['resourceType']}", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def total(c: httpx.Client, query: str) -> int:
    resp = c.get(query + ("&" if "?" in query else "?") + "_summary=count")
    assert resp.status_code == 200, resp.text
    return resp.json()["total"]


def history_versions(c: httpx.Client, path: str) -> tuple[int, list[int]]:
    resp = c.get(f"{path}/_history", params={"_count": 1000})
    assert resp.status_code == 200, resp.text
    bundle = resp.json()
    return bundle["total"], [int(e["response"]["etag"].split('"')[1]) for e in bundle.get("entry", [])]


def ident(value: str) -> list:
    return [{"system": SYS, "value": value}]


# -- conditional create and update --------------------------------------------------------------

def test_racing_conditional_creates_make_one_resource(servers, http):
    """16 racing POSTs with the same If-None-Exist, several rounds: one 201, fifteen 200
    with that resource (https://hl7.org/fhir/R4/http.html#ccreate)."""
    run = uuid.uuid4().hex[:8]

    def create(c, i, r):
        resp = c.post("/Patient", json=patient(f"racer{i}", identifier=ident(f"{run}-{r}")),
                      headers={"If-None-Exist": f"identifier={SYS}|{run}-{r}"})
        return resp.status_code, resp.json().get("id")

    for r, outcomes in enumerate(race(servers, 16, servers.scale(5, 3), create)):
        statuses = sorted(s for s, _ in outcomes)
        assert statuses == [200] * 15 + [201], outcomes
        ids = {id_ for _, id_ in outcomes}
        assert len(ids) == 1
        found = http.get("/Patient", params={"identifier": f"{SYS}|{run}-{r}"}).json()
        assert found["total"] == 1 and found["entry"][0]["resource"]["id"] in ids


def test_conditional_create_matching_several_is_412_and_creates_nothing(servers, http):
    run = uuid.uuid4().hex[:8]
    for _ in range(2):
        created(http, patient("Twin", identifier=ident(run)))
    resp = http.post("/Patient", json=patient("Third", identifier=ident(run)),
                     headers={"If-None-Exist": f"identifier={SYS}|{run}"})
    assert resp.status_code == 412, resp.text
    assert total(http, f"/Patient?identifier={SYS}|{run}") == 2


def test_racing_conditional_updates_make_one_resource(servers, http):
    """16 racing ``PUT Patient?identifier=X`` with different bodies, several rounds: one creates
    (201), the others update it in turn (200); one resource with 16 versions."""
    run = uuid.uuid4().hex[:8]

    def update(c, i, r):
        resp = c.put("/Patient", params={"identifier": f"{SYS}|{run}-{r}"},
                     json=patient(f"writer{i}", identifier=ident(f"{run}-{r}")))
        return resp.status_code, resp.json().get("id")

    for r, outcomes in enumerate(race(servers, 16, servers.scale(3, 2), update)):
        assert sorted(s for s, _ in outcomes) == [200] * 15 + [201], outcomes
        ids = {id_ for _, id_ in outcomes}
        assert len(ids) == 1
        (id_,) = ids
        assert total(http, f"/Patient?identifier={SYS}|{run}-{r}") == 1
        assert http.get(f"/Patient/{id_}").json()["meta"]["versionId"] == "16"
        assert history_versions(http, f"/Patient/{id_}") == (16, list(range(16, 0, -1)))


# -- If-Match -------------------------------------------------------------------------------

def test_racing_if_match_has_exactly_one_winner(servers, http):
    """16 racing writes with ``If-Match: W/"1"`` (PUTs and PATCHes), several rounds on fresh
    resources: one succeeds, fifteen get 412; the resource ends at version 2, the winner's
    (https://hl7.org/fhir/R4/http.html#concurrency)."""
    ids = [created(http, patient(f"Contended{r}"))["id"] for r in range(servers.scale(5, 3))]

    def write(c, i, r):
        headers = {"If-Match": 'W/"1"'}
        if i % 2:
            resp = c.patch(f"/Patient/{ids[r]}", headers={**headers, **JSON_PATCH},
                           json=[{"op": "replace", "path": "/name/0/family", "value": f"patched{i}"}])
        else:
            resp = c.put(f"/Patient/{ids[r]}", json=patient(f"put{i}", id=ids[r]), headers=headers)
        return resp.status_code, i

    for r, outcomes in enumerate(race(servers, 16, len(ids), write)):
        winners = [i for status, i in outcomes if status == 200]
        assert len(winners) == 1 and sorted(s for s, _ in outcomes) == [200] + [412] * 15, outcomes
        current = http.get(f"/Patient/{ids[r]}").json()
        assert current["meta"]["versionId"] == "2"
        assert current["name"][0]["family"] == (f"patched{winners[0]}" if winners[0] % 2 else f"put{winners[0]}")
        assert history_versions(http, f"/Patient/{ids[r]}") == (2, [2, 1])


def test_racing_deletes_with_if_match_have_one_winner(servers, http, request):
    """16 racing ``DELETE`` with ``If-Match: W/"1"``: one deletes (204), the others find no
    version 1 any more: 412 (RFC 9110 13.1.1: a DELETE of a deleted resource succeeds
    without the condition, so the condition must be evaluated)."""
    ids = [created(http, patient(f"Doomed{r}"))["id"] for r in range(2)]

    def remove(c, i, r):
        return c.delete(f"/Patient/{ids[r]}", headers={"If-Match": 'W/"1"'}).status_code

    for r, statuses in enumerate(race(servers, 16, len(ids), remove)):
        assert history_versions(http, f"/Patient/{ids[r]}") == (2, [2, 1])
        assert sorted(statuses) == [204] + [412] * 15, statuses


def test_no_lost_update_with_32_read_modify_write_writers(servers, http):
    """32 writers each add 1 to a counter (read, add, PUT with If-Match, again on 412): the
    count is 32, and every version is the one before plus one."""
    n = servers.scale(32, 16)
    counter = created(http, patient("Counter", multipleBirthInteger=0))["id"]
    attempts = [0] * n

    def bump(c, i, r):
        while True:
            current = c.get(f"/Patient/{counter}")
            assert current.status_code == 200, current.text
            body = current.json()
            body["multipleBirthInteger"] += 1
            attempts[i] += 1
            resp = c.put(f"/Patient/{counter}", json=body, headers={"If-Match": current.headers["ETag"]})
            if resp.status_code == 200:
                return
            assert resp.status_code == 412, resp.text

    race(servers, n, 1, bump)
    final = http.get(f"/Patient/{counter}").json()
    assert final["multipleBirthInteger"] == n
    assert final["meta"]["versionId"] == str(n + 1)
    assert sum(attempts) > n          # the writers did collide
    count, versions = history_versions(http, f"/Patient/{counter}")
    assert count == n + 1 and versions == list(range(n + 1, 0, -1))
    bodies = http.get(f"/Patient/{counter}/_history", params={"_count": 1000}).json()["entry"]
    assert [e["resource"]["multipleBirthInteger"] for e in bodies] == list(range(n, -1, -1))


def test_32_blind_writers_lose_nothing(servers, http):
    """32 writers at once, each: a PATCH adding its own name to one shared resource, two
    PUTs of its own resource and two POSTs. Everything is there, versions and
    history are complete, and the change feed holds every write once, in contiguous order."""
    run, n = uuid.uuid4().hex[:8], servers.scale(32, 16)
    shared = created(http, patient("Shared"))["id"]
    start = servers.store.feed(0, 1_000_000)
    start_seq = start[-1].seq if start else 0

    def write(c, i, r):
        for step in range(2):
            resp = c.put(f"/Patient/{run}-w{i}", json=patient(f"own{step}", id=f"{run}-w{i}"))
            assert resp.status_code == (201 if step == 0 else 200), resp.text
            if step == 0:
                resp = c.patch(f"/Patient/{shared}", headers=JSON_PATCH, json=[
                    {"op": "add", "path": "/name/-", "value": {"family": f"{run}-w{i}"}}])
                assert resp.status_code == 200, resp.text
            assert created(c, patient(f"new{i}.{step}", tag=run))

    race(servers, n, 1, write)
    final = http.get(f"/Patient/{shared}").json()
    assert sorted(name["family"] for name in final["name"][1:]) == sorted(f"{run}-w{i}" for i in range(n))
    assert final["meta"]["versionId"] == str(n + 1)
    assert history_versions(http, f"/Patient/{shared}") == (n + 1, list(range(n + 1, 0, -1)))
    for i in range(n):
        assert history_versions(http, f"/Patient/{run}-w{i}") == (2, [2, 1])
    assert total(http, f"/Patient?_tag={TAG_SYS}|{run}") == 2 * n

    feed = servers.store.feed(start_seq, 1_000_000)
    assert [e.seq for e in feed] == list(range(start_seq + 1, start_seq + 1 + len(feed)))
    assert len(feed) == n + 2 * n + 2 * n               # each write once, nothing else
    assert len({e.tx for e in feed}) == len(feed)       # one request, one transaction
    versions: dict[str, list[int]] = {}
    for e in feed:
        versions.setdefault(e.id, []).append(e.version)
    assert versions.pop(shared) == list(range(2, n + 2))
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values())
    assert sorted(len(v) for v in versions.values()) == [1] * (2 * n) + [2] * n


# -- transactions ----------------------------------------------------------------------------

def _tx(entries: list) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _post(resource: dict) -> dict:
    return {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}


def _put(resource: dict, if_match: str | None = None) -> dict:
    request = {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
    if if_match:
        request["ifMatch"] = if_match
    return {"resource": resource, "request": request}


@pytest.mark.parametrize("failure", ["if-match", "invalid", "dangling-reference"])
def test_transaction_with_a_failing_last_entry_leaves_nothing(servers, http, failure):
    run = uuid.uuid4().hex[:8]
    kept = created(http, patient("Untouched"))
    other = created(http, patient("Other"))
    feed_before = servers.store.feed(0, 1_000_000)
    history_before = http.get("/Patient/_history", params={"_count": 1}).json()["total"]
    entries = [_post(patient(f"New{k}", tag=run)) for k in range(3)]
    entries.append(_put(patient("Changed", tag=run, id=kept["id"])))
    if failure == "if-match":
        entries.append(_put(patient("Late", id=other["id"]), if_match='W/"7"'))
    elif failure == "invalid":
        entries.append(_put(patient("Late", id=other["id"], birthDate="yesterday")))
    else:
        entries.append(_put(patient("Late", id=other["id"],
                                    generalPractitioner=[{"reference": f"Practitioner/{run}-missing"}])))
    resp = http.post("/", json=_tx(entries))
    assert resp.status_code in ((412,) if failure == "if-match" else (400, 404, 409, 412, 422)), resp.text
    assert total(http, f"/Patient?_tag={TAG_SYS}|{run}") == 0
    for stored in (kept, other):
        assert history_versions(http, f"/Patient/{stored['id']}") == (1, [1])
    assert http.get("/Patient/_history", params={"_count": 1}).json()["total"] == history_before
    assert servers.store.feed(0, 1_000_000) == feed_before


def test_readers_never_see_part_of_a_transaction(servers, http):
    """Two writers run transactions that each update the same ten resources (to one new
    family) and create ten more; readers meanwhile always see the ten in one state and a
    multiple of ten created."""
    run, n, rounds = uuid.uuid4().hex[:8], 10, servers.scale(6, 3)
    group = [f"{run}-g{k}" for k in range(n)]
    http.post("/", json=_tx([_put(patient("gen-start", tag=f"{run}-group", id=g)) for g in group])
              ).raise_for_status()
    done = threading.Event()
    reads = [0]

    def writer(w: int):
        with servers.client(w) as c:
            for j in range(rounds):
                entries = [_put(patient(f"gen-{w}-{j}", tag=f"{run}-group", id=g)) for g in group]
                entries += [_post(patient(f"made-{w}-{j}", tag=f"{run}-new")) for _ in range(n)]
                resp = c.post("/", json=_tx(entries))
                assert resp.status_code == 200, resp.text

    def reader(k: int):
        with servers.client(k) as c:
            while not done.is_set() or reads[0] < 20:
                bundle = c.get("/Patient", params={"_tag": f"{TAG_SYS}|{run}-group", "_count": 100}).json()
                families = {e["resource"]["name"][0]["family"] for e in bundle["entry"]}
                assert len(bundle["entry"]) == n and len(families) == 1, families
                made = total(c, f"/Patient?_tag={TAG_SYS}|{run}-new")
                assert made % n == 0, made
                page = c.get("/Patient", params={"_tag": f"{TAG_SYS}|{run}-new", "_count": 1000}).json()
                assert len(page.get("entry", [])) % n == 0
                family = c.get("/Patient", params={"family": "gen-1-", "_tag": f"{TAG_SYS}|{run}-group",
                                                   "_summary": "count"}).json()["total"]
                assert family in (0, n), family
                reads[0] += 1

    def writers():
        try:
            run_threads(lambda: writer(0), lambda: writer(1))
        finally:
            done.set()

    run_threads(writers, *(lambda k=k: reader(k) for k in range(3)))
    assert total(http, f"/Patient?_tag={TAG_SYS}|{run}-new") == 2 * rounds * n
    assert all(history_versions(http, f"/Patient/{g}")[0] == 2 * rounds + 1 for g in group)


# -- paging while others write -------------------------------------------------------------------

def test_paging_is_stable_while_others_write(servers, http):
    """Page through ``Observation?code=X&_count=10&_total=accurate`` by its next links while
    others create matching Observations and update existing ones (moving them between
    patients): no duplicates, nothing that existed before the first page is skipped, nothing
    created after it appears, and every page states the same, right total."""
    run = uuid.uuid4().hex[:8]
    code = {"coding": [{"system": SYS, "code": run}]}
    pa, pb = (created(http, patient(name))["id"] for name in ("Pa", "Pb"))

    def observation(subject: str, value: int, id_: str | None = None) -> dict:
        body = {"resourceType": "Observation", "status": "final", "code": code,
                "subject": {"reference": f"Patient/{subject}"},
                "valueQuantity": {"value": value, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}}
        if id_:
            body["id"] = id_
        return body

    bundle = _tx([_post(observation(pa if k % 2 else pb, k)) for k in range(45)])
    initial = [e["response"]["location"].split("/")[1] for e in http.post("/", json=bundle).json()["entry"]]
    born: dict[str, float] = {id_: 0.0 for id_ in initial}   # id -> when its POST was sent
    done = threading.Event()

    def creator(w: int):
        with servers.client(w) as c:
            for k in range(15):
                sent = time.monotonic()
                born[created(c, observation(pa, 1000 + k))["id"]] = sent

    def updater(w: int):
        with servers.client(w) as c:
            for k in range(20):
                id_ = initial[(7 * k + w) % len(initial)]
                resp = c.put(f"/Observation/{id_}", json=observation(pa if (k + w) % 2 else pb, k, id_))
                assert resp.status_code == 200, resp.text

    passes = []

    def pager(w: int):
        with servers.client(w) as c:
            while not done.is_set() or len(passes) < 4:
                before = {id_ for id_, sent in list(born.items())}
                seen, totals = [], []
                resp = c.get("/Observation", params={"code": f"{SYS}|{run}", "_count": 10, "_total": "accurate"})
                first_page_at = time.monotonic()
                while True:
                    assert resp.status_code == 200, resp.text
                    page = resp.json()
                    totals.append(page["total"])
                    seen += [e["resource"]["id"] for e in page.get("entry", [])]
                    nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
                    if not nxt:
                        break
                    resp = c.get(nxt[0])
                assert len(seen) == len(set(seen)), "a resource appeared twice"
                assert before <= set(seen), f"skipped: {before - set(seen)}"
                late = {id_ for id_ in seen if born.get(id_, 0.0) > first_page_at}
                assert not late, f"created after the first page, yet listed: {late}"
                assert set(totals) == {len(seen)}, (totals, len(seen))
                passes.append(len(seen))

    def writers():
        try:
            run_threads(lambda: creator(0), lambda: creator(1), lambda: updater(0), lambda: updater(1))
        finally:
            done.set()

    run_threads(writers, lambda: pager(0), lambda: pager(1))
    assert total(http, f"/Observation?code={SYS}|{run}") == 45 + 30
    assert max(passes) >= 45
