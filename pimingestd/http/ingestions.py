"""The ingestions: list, show, their chunks, reject file and deletions, resume and cancel."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web

from ..errors import UnknownIngestion
from ..model import STATUSES, UNFINISHED, Ingestion, Status
from ..records import reject_file
from ..records import rules as record_rules
from . import views
from .keys import SCHEDULER, STORE
from .middleware import ApiError, json_response
from .params import query_int
from .streamed import json_with_list


async def _ingestion(request: web.Request) -> Ingestion:
    ing = await request.app[STORE].get(request.match_info["id"])
    if ing is None:
        raise UnknownIngestion(request.match_info["id"])
    return ing


async def list_ingestions(request: web.Request) -> web.StreamResponse:
    status = request.query.get("status") or None
    if status is not None and status not in STATUSES:
        raise ApiError(400, f"`status` must be one of {', '.join(STATUSES)}")
    limit = query_int(request, "limit", 50, 1, 1000)
    offset = query_int(request, "offset", 0, 0, 10**9)
    name = request.query.get("q", "")[:200]  # a part of the file name
    store = request.app[STORE]
    rows = await store.list_ingestions(status, limit, offset, name)
    shape = await views.ingestions(store, request.app[SCHEDULER], rows)
    total = await store.count_ingestions(status, name)
    return json_with_list({}, "ingestions", rows, shape, {"limit": limit, "offset": offset, "total": total})


async def get_ingestion(request: web.Request) -> web.Response:
    return json_response(await views.ingestion(request.app[STORE], request.app[SCHEDULER], await _ingestion(request)))


async def list_chunks(request: web.Request) -> web.StreamResponse:
    ing = await _ingestion(request)
    start = query_int(request, "from", 1, 1, 10**12)
    limit = query_int(request, "limit", 100, 1, 1000)
    rows = await request.app[STORE].chunks(ing.id, start, limit)
    return json_with_list({"ingestion_id": ing.id}, "chunks", rows, lambda part: list(map(views.chunk, part)))


async def timeline(request: web.Request) -> web.Response:
    """The chunks as at most ``cells`` cells (aggregated when there are more chunks), and ACK latencies."""
    ing = await _ingestion(request)
    cells = query_int(request, "cells", 120, 1, 2000)
    return json_response({"ingestion_id": ing.id, **await request.app[STORE].timeline(ing.id, cells)})


async def rejects(request: web.Request) -> web.StreamResponse:
    """The reject file, streamed from disk: the refused records in the source's own format."""
    ing = await _ingestion(request)
    if not ing.records_rejected:
        raise ApiError(404, "no records were rejected", {"ingestion_id": ing.id})
    path = request.app[SCHEDULER].reject_file(ing)
    if not await asyncio.to_thread(path.is_file):
        if ing.status in UNFINISHED or ing.status == Status.FAILED:
            raise ApiError(409, "the reject file is written once every chunk is ACKed", {"status": ing.status})
        raise ApiError(
            410,
            "the reject file is gone (removed by retention), or it could not be written (the daemon's log says why)",
            {"ingestion_id": ing.id},
        )
    name = reject_file.download_name(ing.file_name, ing.format)
    return web.FileResponse(
        path,
        headers={
            "Content-Type": reject_file.MEDIA_TYPES[path.suffix],
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}",
        },
    )


async def deletions(request: web.Request) -> web.StreamResponse:
    """The keys of the delta scope that this full file no longer holds, a page at a time."""
    ing = await _ingestion(request)
    limit = query_int(request, "limit", 1000, 1, 10000)
    offset = query_int(request, "offset", 0, 0, 10**12)
    mode = record_rules.stored(ing.rules).deletions
    rows = await request.app[STORE].deletion_rows(ing.id, limit, offset)
    page = {
        "ingestion_id": ing.id,
        "delta_scope": ing.scope or None,
        "deletions_mode": mode,
        "total": ing.deletions,
        "limit": limit,
        "offset": offset,
    }
    return json_with_list(page, "deletions", rows, _deletions)


def _deletions(rows: Sequence[tuple[str, str, str | None]]) -> list[dict[str, Any]]:
    """Deletion rows as the API shows them: the key as JSON again (it is stored canonical), and a reason
    only when there is one."""
    return [
        {"key": orjson.loads(key), "state": state, **({"reason": reason} if reason else {})}
        for key, state, reason in rows
    ]


async def resume(request: web.Request) -> web.Response:
    ing = await request.app[SCHEDULER].resume((await _ingestion(request)).id)
    return json_response(await views.ingestion(request.app[STORE], request.app[SCHEDULER], ing), 202)


async def cancel(request: web.Request) -> web.Response:
    ing = await request.app[SCHEDULER].cancel((await _ingestion(request)).id)
    return json_response(await views.ingestion(request.app[STORE], request.app[SCHEDULER], ing))
