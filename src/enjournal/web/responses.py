"""FHIR JSON over HTTP: content negotiation, request bodies, resource responses and errors.

Only JSON is served (``application/fhir+json``); XML is refused with 406/415 and an
OperationOutcome, as https://hl7.org/fhir/R4/http.html#mime-type allows.
"""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .. import errors
from ..fhir import dates, jsonio
from ..fhir.outcome import operation_outcome
from ..store import Stored

FHIR_JSON = "application/fhir+json; charset=utf-8"
_JSON_TYPES = ("application/fhir+json", "application/json", "application/json-patch+json", "text/json")
_XML_HINTS = ("xml",)


def wants_pretty(request: Request) -> bool:
    return request.query_params.get("_pretty") == "true"


def check_accept(request: Request) -> None:
    fmt = request.query_params.get("_format")
    if fmt is not None and fmt not in ("json", "application/json", "application/fhir+json"):
        raise _not_acceptable(f"_format={fmt} is not served: this server speaks FHIR JSON only")
    accept = request.headers.get("accept")
    if not accept or fmt is not None:
        return
    kinds = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    if any(k in _JSON_TYPES or k in ("*/*", "application/*", "text/html") for k in kinds):
        return
    raise _not_acceptable(f"Accept: {accept} cannot be served: this server speaks application/fhir+json only")


def _not_acceptable(message: str) -> errors.FhirError:
    exc = errors.NotSupported(message, "Accept")
    exc.status = 406
    return exc


async def read_json(request: Request, max_bytes: int) -> object:
    """The request body parsed as JSON, with the size limit enforced while reading."""
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype and ctype not in _JSON_TYPES:
        raise errors.UnsupportedMediaType(
            f"Content-Type {ctype} is not accepted: send application/fhir+json", "Content-Type")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise errors.TooLarge(f"the body has {length} bytes; at most {max_bytes} are accepted", "body")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise errors.TooLarge(f"the body is larger than {max_bytes} bytes", "body")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise errors.Invalid("the request has no body", "body")
    try:
        return jsonio.loads(body)
    except jsonio.NumberOutOfRange as exc:
        raise errors.Invalid(f"the body cannot be accepted: {exc}", "body") from None
    except jsonio.JSONDecodeError as exc:
        raise errors.Invalid(f"the body is not valid JSON: {exc}", "body") from None


def json_response(content: object, status: int = 200, headers: dict | None = None, pretty: bool = False) -> Response:
    if isinstance(content, bytes):
        body = jsonio.dumps(jsonio.loads(content), pretty=True) if pretty else content
    else:
        body = jsonio.dumps(content, pretty)
    return Response(body, status_code=status, headers=headers, media_type=FHIR_JSON)


def resource_headers(stored: Stored, location: str | None = None) -> dict:
    headers = {"ETag": f'W/"{stored.version}"', "Last-Modified": dates.http_date(stored.updated)}
    if location:
        headers["Location"] = location
    return headers


def resource_response(stored: Stored, status: int = 200, location: str | None = None,
                      prefer: str | None = None, pretty: bool = False, summary: str | None = None,
                      elements: tuple | None = None) -> Response:
    """A stored resource as the response, honouring ``Prefer: return=`` on writes."""
    headers = resource_headers(stored, location)
    ret = _prefer_return(prefer)
    if ret == "minimal":
        return Response(b"", status_code=status, headers=headers)
    if ret == "OperationOutcome":
        from ..fhir.outcome import information
        return json_response(information(f"{stored.type}/{stored.id} version {stored.version} stored"),
                             status, headers, pretty)
    body = stored.body
    if summary or elements or pretty:
        from ..fhir.summary import apply_summary
        resource = apply_summary(jsonio.loads(body), summary, elements)
        return json_response(resource, status, headers, pretty)
    return Response(body, status_code=status, headers=headers, media_type=FHIR_JSON)


def _prefer_return(prefer: str | None) -> str:
    if not prefer:
        return "representation"
    for part in prefer.split(","):
        part = part.strip()
        if part.startswith("return="):
            return part[len("return="):].strip('"')
    return "representation"


def prefer_handling(request: Request) -> bool:
    """True for ``Prefer: handling=lenient`` (unknown search parameters are then dropped)."""
    prefer = request.headers.get("prefer") or ""
    return "handling=lenient" in prefer.replace(" ", "")


def error_response(exc: errors.FhirError, pretty: bool = False) -> Response:
    return json_response(operation_outcome(exc), exc.status, exc.headers or None, pretty)
