"""The ingestions: list, show, their chunks, resume and cancel."""

from __future__ import annotations

from aiohttp import web

from ..errors import UnknownIngestion
from ..model import STATUSES, Ingestion
from . import views
from .keys import SCHEDULER, STORE
from .middleware import ApiError, json_response
from .params import query_int


async def _ingestion(request: web.Request) -> Ingestion:
    ing = await request.app[STORE].get(request.match_info["id"])
    if ing is None:
        raise UnknownIngestion(request.match_info["id"])
    return ing


async def list_ingestions(request: web.Request) -> web.Response:
    status = request.query.get("status") or None
    if status is not None and status not in STATUSES:
        raise ApiError(400, f"`status` must be one of {', '.join(STATUSES)}")
    limit = query_int(request, "limit", 50, 1, 1000)
    offset = query_int(request, "offset", 0, 0, 10**9)
    store = request.app[STORE]
    rows = await store.list_ingestions(status, limit, offset)
    page = await views.ingestions(store, request.app[SCHEDULER], rows)
    return json_response({"ingestions": page, "limit": limit, "offset": offset})


async def get_ingestion(request: web.Request) -> web.Response:
    return json_response(await views.ingestion(request.app[STORE], request.app[SCHEDULER], await _ingestion(request)))


async def list_chunks(request: web.Request) -> web.Response:
    ing = await _ingestion(request)
    start = query_int(request, "from", 1, 1, 10**12)
    limit = query_int(request, "limit", 100, 1, 1000)
    rows = await request.app[STORE].chunks(ing.id, start, limit)
    return json_response({"ingestion_id": ing.id, "chunks": [views.chunk(r) for r in rows]})


async def resume(request: web.Request) -> web.Response:
    ing = await request.app[SCHEDULER].resume((await _ingestion(request)).id)
    return json_response(await views.ingestion(request.app[STORE], request.app[SCHEDULER], ing), 202)


async def cancel(request: web.Request) -> web.Response:
    ing = await request.app[SCHEDULER].cancel((await _ingestion(request)).id)
    return json_response(await views.ingestion(request.app[STORE], request.app[SCHEDULER], ing))
