"""``GET /``: the landing page for people (bokmål): the two front doors (``/innbygger/`` and
``/helsepersonell/``) and, for developers, the FHIR API with examples that work as printed
(how to get a token from the built-in provider, when it runs). FHIR clients asking for JSON
get the CapabilityStatement instead (app.py)."""
from __future__ import annotations

from importlib.resources import files
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from .. import FHIR_VERSION, __version__


def _static(path: str) -> bool:
    """Whether ``web/static/PATH`` is shipped (Designsystemet is vendored there)."""
    return files("enjournal.web").joinpath("static", *path.split("/")).is_file()


def landing_page(repo: Any, base_of) -> Any:
    env = Environment(loader=PackageLoader("enjournal.web", "templates"), autoescape=select_autoescape())
    template = env.get_template("index.html")
    designsystemet = _static("designsystemet/designsystemet.css") and _static("designsystemet/theme-digdir.css")
    layout = _static("doors/layout.css")

    async def page(request: Request) -> Response:
        counts = sorted(repo.type_counts().items())
        platform = getattr(request.app.state, "platform", None)
        provider = getattr(platform, "provider", None) is not None
        html = template.render(base=base_of(request), version=__version__, fhir_version=FHIR_VERSION, counts=counts,
                               provider=provider, designsystemet=designsystemet, layout=layout)
        return HTMLResponse(html)
    return page
