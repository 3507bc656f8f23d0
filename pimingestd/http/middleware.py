"""Errors as JSON, the API token, and the browser guard. The one place where the error tree meets HTTP.

Every error answer is ``{"error": ..., "detail": ...}``. An exception from
errors.py becomes its class's ``http_status`` and ``title``, with its message as
the detail; a handler raises, it never maps.

The browser guard (``origin_middleware``) keeps other web pages away from a
daemon that has no API token (the example config), where the browser is the
only gate:

- DNS rebinding: a page on ``evil.example`` whose name is made to resolve to
  127.0.0.1 reaches the daemon as same-origin, but its requests carry
  ``Host: evil.example``. The Host must be an IP address (a rebinding page
  always comes by a name), ``localhost``, the name in ``[http] host`` or
  ``public_url``, or one of ``[http] allowed_hosts``; else 403. /healthz and
  /metrics (no data, no action) answer any Host, for probes and scrapers.
- CSRF: a state-changing request (not GET/HEAD/OPTIONS) whose
  ``Sec-Fetch-Site`` says another site or origin, or whose ``Origin`` is not the
  Host it was sent to (nor an allowed name), is 403. A cross-origin browser
  request always carries one of them.
- The content types an HTML form can send without a CORS preflight
  (``text/plain``, ``application/x-www-form-urlencoded``,
  ``multipart/form-data``) are 415 on every state-changing /api/ route, even
  from a browser that sends neither header; a JSON body must come as
  ``application/json``. ``POST /callbacks/ack`` keeps the content type its
  PIM-Core sends (PHP's curl says urlencoded unless told): a forged ACK is
  refused by its checksum anyway.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
import structlog
from aiohttp import web

from .. import redaction
from ..config import HttpConfig
from ..errors import PimIngestError
from .keys import CONFIG

log = structlog.get_logger("pimingestd.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(web.HTTPException):
    """An HTTP error with a JSON body."""

    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        self.status_code = status
        super().__init__(
            text=orjson.dumps({"error": error, "detail": detail}).decode(), content_type="application/json"
        )


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError:
        raise
    except PimIngestError as exc:
        raise ApiError(exc.http_status, exc.title, redaction.text(str(exc))) from None
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        raise ApiError(exc.status, exc.reason) from None
    except Exception:
        log.exception("unhandled error in request", path=request.path)
        raise ApiError(500, "internal error") from None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[CONFIG].http.api_token
    if token and request.path.startswith("/api/"):
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {token}"
        if not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8")):
            raise ApiError(401, "missing or wrong API token", "send Authorization: Bearer <api_token>")
    return await handler(request)


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ANY_HOST = frozenset({"/healthz", "/metrics"})  # for probes and scrapers: no data, no action
FORM_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
JSON_BODY = frozenset({"/api/ingest"})  # the state-changing routes whose body is JSON


def _hostname(netloc: str) -> str:
    """The host of ``host[:port]`` (an IPv6 address in brackets), lower case, without a trailing dot; "" for
    what is no authority (an unclosed bracket, a port that is no port): a name the daemon never answers to."""
    try:
        parts = urlsplit("//" + netloc)
        parts.port  # noqa: B018 (raises ValueError for a port out of range or not a number)
    except ValueError:
        return ""
    return (parts.hostname or "").rstrip(".").lower()


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def known_host(host: str, allowed: frozenset[str]) -> bool:
    """Whether a request naming ``host`` can come from the operator's own browser or tools, not from a
    page whose DNS name was rebound to this machine: an IP address, localhost, or a configured name."""
    return _is_address(host) or host == "localhost" or host.endswith(".localhost") or host in allowed


def allowed_hosts(http: HttpConfig) -> frozenset[str]:
    """The names the daemon answers to: ``[http] allowed_hosts``, the ``host`` it listens on, and the
    host of ``public_url`` (PIM-Core's callbacks come there)."""
    names = {n.rstrip(".").lower() for n in http.allowed_hosts}
    names.add(http.host.rstrip(".").lower())
    names.add(_hostname(urlsplit(http.public_url).netloc))
    return frozenset(n for n in names if n)


def _own_origin(origin: str, host: str, http: HttpConfig) -> bool:
    """Whether a page at ``origin`` is the daemon's own: the host (and port) the request was sent to,
    ``public_url``'s origin, or a name in ``[http] allowed_hosts`` (a proxy's). Only the port tells
    another page on the same machine apart: 127.0.0.1 is not enough."""
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False  # no URL at all (an unclosed IPv6 bracket)
    if parts.scheme not in ("http", "https"):
        return False  # "null" (a sandboxed frame, a file), or worse
    public = urlsplit(http.public_url)
    return (
        parts.netloc.lower() == host.lower()
        or (parts.scheme, parts.netloc.lower()) == (public.scheme, public.netloc.lower())
        or _hostname(parts.netloc) in {n.rstrip(".").lower() for n in http.allowed_hosts}
    )


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    http = request.app[CONFIG].http
    allowed = allowed_hosts(http)
    given = request.headers.get("Host", "")
    if "Host" in request.headers and request.path not in ANY_HOST and not known_host(_hostname(given), allowed):
        raise ApiError(
            403,
            "unknown Host",
            f"this daemon does not answer to {given[:200]!r} (a page whose DNS name points here?); an operator's"
            " name for it goes in [http] allowed_hosts",
        )
    if request.method in SAFE_METHODS:
        return await handler(request)
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        raise ApiError(403, "cross-origin request refused", f"Sec-Fetch-Site: {site[:50]}")
    origin = request.headers.get("Origin")
    if origin is not None and not _own_origin(origin, given, http):
        raise ApiError(403, "cross-origin request refused", f"Origin: {origin[:200]}")
    if request.path.startswith("/api/") and request.match_info.http_exception is None:  # else 404/405 says it
        ctype = request.content_type  # without its parameters, lower case
        if ctype in FORM_TYPES:
            wanted = "application/octet-stream" if request.method == "PUT" else "application/json"
            raise ApiError(415, "form content types are refused", f"{ctype}; send {wanted}")
        if request.path in JSON_BODY and ctype != "application/json":
            raise ApiError(415, "the body must be JSON", "send Content-Type: application/json")
    return await handler(request)
