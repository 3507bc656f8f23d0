"""Errors as JSON, and the API token. The one place where the error tree meets HTTP.

Every error answer is ``{"error": ..., "detail": ...}``. An exception from
errors.py becomes its class's ``http_status`` and ``title``, with its message as
the detail; a handler raises, it never maps.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

from .. import redaction
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
