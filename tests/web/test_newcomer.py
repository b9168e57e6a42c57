"""The newcomer's path (issue 13), as a new user walks it: `enjournal demo` and `enjournal serve`
on a port that is not the default, then the README's tour (unchanged but for ``B``) and the
landing page's examples run with bash exactly as printed, `enjournal token` signing for the
port the server runs on, the landing page's links giving pages, and the CapabilityStatement's
``cors`` saying what the server sends."""
from __future__ import annotations

import base64
import html
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
README = ROOT / "README.md"


def _env() -> dict:
    """The environment of a shell a newcomer opens: no ENJOURNAL_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ENJOURNAL_")}


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`enjournal demo` then `enjournal serve --port P` in a folder that looks like the project
    (``.venv`` there, the default database ``enjournal.db``), as `make serve PORT=P` does."""
    folder = tmp_path_factory.mktemp("newcomer")
    (folder / ".venv").symlink_to(VENV_BIN.parent)
    enjournal = str(VENV_BIN / "enjournal")
    demo = _run([enjournal, "demo", "--if-empty", "--people", "30"], folder)
    assert demo.returncode == 0, demo.stderr
    port = free_port()
    server = subprocess.Popen([enjournal, "serve", "--port", str(port)], cwd=folder, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.time() > deadline:
            server.kill()
            pytest.fail(f"enjournal serve did not start: {server.stdout.read()}")
        time.sleep(0.2)
    yield folder, base
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def readme_tour() -> str:
    """The README's tour: the first ```sh block after "## A short tour of the API"."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## A short tour of the API", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def test_the_readme_tour_passes_on_another_port(served):
    folder, base = served
    tour = readme_tour()
    assert re.search(r"^B=http://127\.0\.0\.1:8080$", tour, re.M), "the tour's first line sets B"
    script = re.sub(r"^B=.*$", f"B={base}", tour, count=1, flags=re.M)
    done = subprocess.run(["bash", "-e", "-c", script], cwd=folder, env=_env(),
                          capture_output=True, text=True, timeout=300)
    out = done.stdout
    assert done.returncode == 0, f"the tour stopped (exit {done.returncode}):\n{done.stderr}\n{out[-3000:]}"
    assert '"resourceType":"CapabilityStatement"' in out
    assert "HTTP/1.1 201" in out                        # the patient was created
    # every token of the tour was accepted: signed for this port, not the default 8080
    assert "is not trusted here" not in out and "is not accepted here" not in out, out[-3000:]
    assert re.search(r'"resourceType":"Bundle"', out)
    # the export's NDJSON files were downloaded and hold resources
    files = sorted(folder.glob("*.ndjson"))
    assert {f.name.split("-")[0] for f in files} >= {"Patient", "Immunization"}, files
    first = json.loads(next(f for f in files if f.name.startswith("Patient")).read_text().splitlines()[0])
    assert first["resourceType"] == "Patient"
    # the doors answer with a redirect towards the login, not an error
    doors = re.findall(r"^(\d{3}) (\S*)$", out, re.M)
    assert len(doors) >= 2 and all(code in ("302", "303", "307") for code, _ in doors[-2:]), doors


def test_token_signs_for_the_port_the_server_was_started_with(served):
    folder, base = served
    done = _run([str(VENV_BIN / "enjournal"), "token", "gp"], folder)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert _claims(token)["iss"] == base and base in str(_claims(token)["aud"])
    r = httpx.get(f"{base}/Patient", params={"_count": 1}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code != 401, r.text         # accepted (the GP still has to attest: 403)
    # an explicit base wins, for a server elsewhere
    other = _run([str(VENV_BIN / "enjournal"), "token", "system", "--base", "http://127.0.0.1:1"], folder)
    assert other.returncode == 0 and _claims(other.stdout.strip())["iss"] == "http://127.0.0.1:1"


def _landing(base: str) -> str:
    r = httpx.get(base + "/", headers={"Accept": "text/html"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    return r.text


def test_the_landing_page_examples_work_as_printed(served):
    folder, base = served
    page = _landing(base)
    examples = [html.unescape(block) for block in re.findall(r"<pre[^>]*><code>(.*?)</code></pre>", page, re.S)]
    assert len(examples) >= 2, "the landing page shows how to get a token"
    for example in examples:
        assert f"B={base}" in example, "the examples use the address the page was served at"
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", example], cwd=folder, env=_env(),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{example}\n{done.stderr}"
        body = json.loads(done.stdout)
        assert body["resourceType"] == "Bundle" and body.get("entry"), done.stdout[:500]


def test_the_landing_page_leads_to_the_doors_and_its_links_give_pages(served):
    _, base = served
    page = _landing(base)
    links = set(re.findall(r'href="([^"#]+)"', page))
    assert {"/innbygger/", "/helsepersonell/"} <= links
    with httpx.Client(base_url=base, follow_redirects=True, timeout=30) as browser:
        for link in links:
            r = browser.get(html.unescape(link), headers={"Accept": "text/html,*/*"})
            assert r.status_code == 200, f"{link}: {r.status_code} {r.text[:300]}"


FHIR_ROUTES = ("/metadata", "/Patient", "/Patient?_count=1", "/_history")


def test_capability_cors_matches_what_the_server_sends(served):
    """``rest.security.cors`` says whether the FHIR API answers cross-origin requests with
    CORS headers: checked over HTTP, with and without a token, and for a preflight."""
    folder, base = served
    token = _run([str(VENV_BIN / "enjournal"), "token", "system"], folder).stdout.strip()
    capability = httpx.get(f"{base}/metadata", headers={"Accept": "application/fhir+json"}).json()
    cors = capability["rest"][0]["security"]["cors"]
    origin = {"Origin": "https://app.example.org"}
    seen = []
    for path in FHIR_ROUTES:
        for auth in ({}, {"Authorization": f"Bearer {token}"}):
            r = httpx.get(base + path, headers={**origin, **auth, "Accept": "application/fhir+json"})
            seen.append((path, bool(auth), r.headers.get("access-control-allow-origin")))
    preflight = httpx.options(f"{base}/Patient", headers={**origin, "Access-Control-Request-Method": "GET",
                                                          "Access-Control-Request-Headers": "authorization"})
    seen.append(("OPTIONS /Patient", False, preflight.headers.get("access-control-allow-origin")))
    if cors:
        assert all(allowed for *_, allowed in seen), seen
    else:
        assert not any(allowed for *_, allowed in seen), seen
