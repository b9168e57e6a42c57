"""The outermost layer of what is served: every request is answered in FHIR, whatever happens
below it.

- A request whose path and query exceed ``limits.MAX_URL_BYTES`` is a 414 OperationOutcome
  (a longer search goes as ``POST [type]/_search``).
- An exception that escapes the application is never the client's problem twice: when no
  response has started, the client gets a 500 OperationOutcome; either way the exception
  stops here, so the HTTP server keeps the connection (a 500 must not cost the client its
  keep-alive connection and fail its next request). Starlette's own error handler has
  already logged and answered what it caught (``app.py``); what reaches here unanswered is
  logged here.
- ``FhirHttpToolsProtocol`` answers what the HTTP server itself cannot parse (a URL beyond
  the 64 KB its parser can address, a malformed request line) with an OperationOutcome too.
"""
from __future__ import annotations

import logging
from typing import Any

import orjson

from ..fhir.limits import MAX_URL_BYTES

log = logging.getLogger("enjournal")

_JSON = (b"content-type", b"application/fhir+json; charset=utf-8")


def outcome_bytes(code: str, diagnostics: str, expression: str | None = None) -> bytes:
    issue: dict = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return orjson.dumps({"resourceType": "OperationOutcome", "issue": [issue]})


class Shield:
    def __init__(self, app: Any):
        self.app = app
        self.state = getattr(app, "state", None)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = len(scope.get("raw_path") or scope["path"].encode()) + len(scope["query_string"])
        if size > MAX_URL_BYTES:
            await _answer(send, 414, outcome_bytes(
                "too-costly", f"the URL has {size:,} bytes; at most {MAX_URL_BYTES:,} are accepted: send a long "
                "search as POST [type]/_search with the parameters in the body", "url"))
            return
        started = False

        async def watch(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            if started:
                return          # answered (Starlette's handler re-raises after its 500)
            log.exception("unexpected error on %s %s", scope["method"], scope["path"])
            await _answer(send, 500, outcome_bytes(
                "exception", "internal error: the request was not completed; nothing was stored"))


async def _answer(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [_JSON, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:                 # pragma: no cover - httptools comes with uvicorn[standard]
    HttpToolsProtocol = None


def http_protocol() -> Any:
    """The HTTP protocol for uvicorn: ``FhirHttpToolsProtocol`` where httptools is installed
    (it is with ``uvicorn[standard]``), else uvicorn's own choice."""
    return FhirHttpToolsProtocol if HttpToolsProtocol is not None else "auto"


if HttpToolsProtocol is not None:
    class FhirHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol, answering a request it cannot parse with an
        OperationOutcome instead of plain text (414 for a URL beyond the limit)."""

        def send_400_response(self, msg: str) -> None:
            url = getattr(self, "url", b"") or b""
            if len(url) > MAX_URL_BYTES:
                status, reason, body = 414, b"URI Too Long", outcome_bytes(
                    "too-costly", f"the URL has {len(url):,} bytes; at most {MAX_URL_BYTES:,} are accepted: send a "
                    "long search as POST [type]/_search with the parameters in the body", "url")
            else:
                status, reason, body = 400, b"Bad Request", outcome_bytes(
                    "structure", "the request is not valid HTTP/1.1 (its request line or headers cannot be read)")
            head = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            head += [_JSON[0], b": ", _JSON[1], b"\r\n", b"content-length: ", str(len(body)).encode(), b"\r\n",
                     b"connection: close\r\n\r\n", body]
            self.transport.write(b"".join(head))
            self.transport.close()
