"""A direct path for the hottest request, ``GET /Type/id`` with no query and no conditional
headers: answered from raw ASGI without Starlette's request and routing machinery.

It calls the same service (``ResourceService.read``) as the regular route and sends the same
bytes and headers; anything else, including every error, goes to the full application,
which answers it as usual.
"""
from __future__ import annotations

import re
from typing import Any

from .. import errors
from ..fhir import dates

_PATH = re.compile(r"^/([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})$")
_SKIP = {b"if-none-match", b"if-modified-since", b"prefer"}
_CONTENT_TYPE = b"application/fhir+json; charset=utf-8"


def _acceptable(accept: bytes) -> bool:
    return b"json" in accept or b"*/*" in accept


class FastRead:
    def __init__(self, app: Any, resources: Any):
        self.app = app
        self.resources = resources
        self.state = app.state      # the wrapped application's state (its Platform)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]:
            match = _PATH.match(scope["path"])
            if match is not None and self._plain(scope["headers"]):
                try:
                    stored = self.resources.read(match.group(1), match.group(2))
                except errors.FhirError:
                    stored = None          # the full application explains the error
                if stored is not None:
                    await send({"type": "http.response.start", "status": 200, "headers": [
                        (b"content-type", _CONTENT_TYPE),
                        (b"content-length", str(len(stored.body)).encode()),
                        (b"etag", f'W/"{stored.version}"'.encode()),
                        (b"last-modified", dates.http_date(stored.updated).encode()),
                    ]})
                    await send({"type": "http.response.body", "body": stored.body})
                    return
        await self.app(scope, receive, send)

    @staticmethod
    def _plain(headers: list) -> bool:
        for name, value in headers:
            if name in _SKIP:
                return False
            if name == b"accept" and not _acceptable(value):
                return False
        return True
