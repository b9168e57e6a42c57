"""Server time of the clinician's summary page (issue 13: "the summary page rendered for a
clinician: p95 under 100 ms server time").

    .venv/bin/python -m bench.summary_page [--calls 200] [--database sqlite|postgresql://...]

One Synthea patient (the largest of ``dataset_dir(1)``: a few thousand resources) and the
demo population go into a fresh database through the normal transaction path. The served
application (``build_asgi``: doors layer, authentication, audit on) runs in-process behind
httpx's ASGI transport, so the figures are the server's own time without sockets. The GP
persona logs in at /helsepersonell/ with the built-in provider (the real authorization code
flow), states TREAT for the patient, and then ``GET /helsepersonell/pasient`` is timed
``--calls`` times after a warm-up. In the same run, two baselines for the same patient and
token: the FHIR operation ``GET /Patient/{id}/$summary`` over the same transport, and
``platform.summary.summary(id)`` called directly under the same access context (no HTTP, no
session, no template). Printed: p50/p95/p99 of each and the ratios page / baseline. Results
go to bench/out/summary_page.json.
"""
from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import orjson

from .common import bundle_files, dataset_dir, fmt_ms, in_system_context, log, machine, save_result, summarize_ms

WS = "/helsepersonell"
BASE = "http://127.0.0.1:8080"


def largest_bundle(directory: Path) -> dict:
    files = sorted(bundle_files(directory), key=lambda p: p.stat().st_size, reverse=True)
    return orjson.loads(files[0].read_bytes())


def build(database: str) -> tuple:
    from enjournal.app import build_asgi
    from enjournal.services.bundles import BundleService
    from enjournal.services.demo import load_demo
    from enjournal.settings import Settings

    app = build_asgi(Settings(database=database, host="127.0.0.1", port=8080, builtin_idp="on"))
    platform = app.state.platform
    with in_system_context("bench summary_page"):
        load_demo(platform.resources, people=12)
    bundle = largest_bundle(dataset_dir(1))
    with in_system_context("bench summary_page"):
        result = BundleService(platform.resources).process(bundle, 1_000_000)
    patient = next(e["response"]["location"].split("/")[1] for e in result["entry"]
                   if e["response"]["location"].startswith("Patient/"))
    return app, platform, patient, len(bundle["entry"])


async def login(client: httpx.AsyncClient, persona: str) -> None:
    r = await client.get(f"{WS}/")
    params = dict(parse_qsl(urlsplit(str(r.url)).query))
    r = await client.post("/oidc/authorize", data={**params, "persona": persona})
    assert str(r.url).endswith(f"{WS}/"), r.url


def csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


async def timed(fn, calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - start)
    return samples


def authenticate_of(app):
    """The authentication middleware inside the served stack (it builds access contexts)."""
    layer = app
    while layer is not None and not hasattr(layer, "subject"):
        layer = getattr(layer, "app", None)
    return layer


async def run(database: str, calls: int) -> dict:
    from enjournal.access.context import AccessContext, use

    app, platform, patient, size = build(database)
    log(f"Synthea patient {patient}: {size} resources in its Bundle")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE, follow_redirects=True, timeout=60) as client:
        await login(client, "gp")
        home = await client.get(f"{WS}/")
        token = csrf(home.text)
        r = await client.post(f"{WS}/velg", data={"csrf_token": token, "patient": patient, "label": "bench"})
        r = await client.post(f"{WS}/formal", data={"csrf_token": token, "purpose": "TREAT"})
        assert r.status_code == 200 and str(r.url).endswith("/pasient"), (r.status_code, r.url)

        async def page() -> None:
            response = await client.get(f"{WS}/pasient")
            assert response.status_code == 200

        bearer = platform.provider.issue("gp")
        headers = {"Authorization": f"Bearer {bearer}", "X-Purpose-Of-Use": "TREAT", "X-Patient": f"Patient/{patient}",
                   "Accept": "application/fhir+json"}

        async def api() -> None:
            response = await client.get(f"/Patient/{patient}/$summary", headers=headers)
            assert response.status_code == 200, response.text[:300]

        auth = authenticate_of(app)
        subject = auth.subject({k.lower(): v for k, v in headers.items()})

        async def direct() -> None:
            with use(AccessContext(subject, "GET", f"/Patient/{patient}/$summary", "", "operation")):
                platform.summary.summary(patient)

        for fn in (page, api, direct):
            await timed(fn, 10)                                   # warm-up
        results = {}
        for rnd in range(2):        # interleave, so drift (cache, load) hits all three alike
            for name, fn in (("page", page), ("api", api), ("direct", direct)):
                results.setdefault(name, []).extend(await timed(fn, calls // 2))
    platform.close()
    stats = {name: summarize_ms(samples) for name, samples in results.items()}
    return {"patient_resources": size, "calls": calls, "database": database.split(":")[0], **stats,
            "ratio_page_api_p50": stats["page"]["p50"] / stats["api"]["p50"],
            "ratio_page_direct_p50": stats["page"]["p50"] / stats["direct"]["p50"],
            "ratio_page_direct_p95": stats["page"]["p95"] / stats["direct"]["p95"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--database", default="sqlite", help="sqlite (a temporary file) or a postgresql:// URL "
                                                             "of an empty database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        database = f"sqlite:///{tmp}/bench.db" if args.database == "sqlite" else args.database
        out = asyncio.run(run(database, args.calls))
    log(machine())
    log(f"summary page (GET {WS}/pasient, GP, TREAT): {fmt_ms(out['page'])}")
    log(f"baseline GET /Patient/{{id}}/$summary:          {fmt_ms(out['api'])}")
    log(f"baseline platform.summary.summary() direct:    {fmt_ms(out['direct'])}")
    log(f"ratio page/$summary p50 {out['ratio_page_api_p50']:.2f}; page/direct p50 "
        f"{out['ratio_page_direct_p50']:.2f}, p95 {out['ratio_page_direct_p95']:.2f}; target: page p95 < 100 ms")
    save_result("summary_page", out)


if __name__ == "__main__":
    main()
