"""Liveness, readiness, metrics, and the OpenAPI description."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from ..metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .keys import SCHEDULER, STORE
from .middleware import json_response

OPENAPI = Path(__file__).resolve().parent / "openapi.yaml"


async def healthz(request: web.Request) -> web.Response:
    """Live: the process answers. Ready: the state is open, work has started, and it is not draining."""
    scheduler = request.app[SCHEDULER]
    store_open = STORE in request.app
    ready = store_open and scheduler.started and not scheduler.draining
    full = request.app[STORE].conditions.report() if store_open else {}
    body = {
        "live": True,
        "ready": ready and not full,
        "store": "open" if store_open else "closed",
        "draining": scheduler.draining,
        "running": scheduler.running,
        "in_flight": scheduler.in_flight,
        "disk_full": full,  # area (state, spool, inbox) -> the error and since when; {} when there is space
    }
    return json_response(body, 200 if ready and not full else 503)


async def metrics(request: web.Request) -> web.Response:
    scheduler = request.app[SCHEDULER]
    body = scheduler.metrics.render(
        await request.app[STORE].count_by_status(), scheduler.in_flight, scheduler.flow.window
    )
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=await asyncio.to_thread(OPENAPI.read_bytes), content_type="application/yaml")
