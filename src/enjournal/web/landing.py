"""``GET /``: a short page for people (what this is, where to go); FHIR clients asking
for JSON get the CapabilityStatement's address instead."""
from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from .. import FHIR_VERSION, __version__


def landing_page(repo: Any, base_of) -> Any:
    env = Environment(loader=PackageLoader("enjournal.web", "templates"), autoescape=select_autoescape())
    template = env.get_template("index.html")

    async def page(request: Request) -> Response:
        counts = sorted(repo.type_counts().items())
        html = template.render(base=base_of(request), version=__version__, fhir_version=FHIR_VERSION, counts=counts)
        return HTMLResponse(html)
    return page
