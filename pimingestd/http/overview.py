"""``GET /api/overview``: what the status page's health view shows, in one answer.

Ready or draining, work in flight, PIM-Core's reachability (the last ACK, chunk attempts that failed in the
last hour and the last reason), the inbox folders' counts (entries at their top level: files waiting,
token folders in processing, done and failed; counted at most every 5 s), ingestions by status, and the
last hour's throughput per minute (a ring in memory, recent.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from aiohttp import web

from ..timestamps import iso_or_none
from .keys import CONFIG, SCHEDULER, STORE
from .middleware import json_response

_COUNT_EVERY = 5.0
_counted: dict[str, tuple[float, dict[str, int]]] = {}


def _entries(folder: Path) -> int:
    try:
        with os.scandir(folder) as it:
            return sum(1 for e in it if not e.name.startswith("."))
    except FileNotFoundError:
        return 0


async def _folders(request: web.Request) -> dict[str, int]:
    inbox = request.app[CONFIG].inbox
    key = str(inbox.dir)
    cached = _counted.get(key)
    if cached is not None and time.monotonic() - cached[0] < _COUNT_EVERY:
        return cached[1]
    folders = {
        "inbox": inbox.dir,
        "processing": inbox.processing_dir,
        "done": inbox.done_dir,
        "failed": inbox.failed_dir,
    }
    counts = {name: await asyncio.to_thread(_entries, path) for name, path in folders.items()}
    _counted[key] = (time.monotonic(), counts)
    return counts


async def overview(request: web.Request) -> web.Response:
    scheduler, store = request.app[SCHEDULER], request.app[STORE]
    recent = scheduler.metrics.recent
    series = recent.series()
    full = store.conditions.report()
    return json_response(
        {
            "ready": scheduler.started and not scheduler.draining and not full,
            "draining": scheduler.draining,
            "running": scheduler.running,
            "in_flight": scheduler.in_flight,
            "disk_full": full,
            "pimcore": {
                "last_ack_at": iso_or_none(recent.last_ack_at),
                "failures_last_hour": sum(series["failures"]),
                "last_failure_at": iso_or_none(recent.last_failure_at),
                "last_failure": recent.last_failure,
                "window": scheduler.flow.window,  # None: no window announced (a v1 receiver, or none yet)
                "paused_seconds": round(scheduler.flow.paused_for(), 3),  # what is left of a Retry-After
            },
            "folders": await _folders(request),
            "by_status": await store.count_by_status(),
            "per_minute": series,  # oldest first; the last is the current minute
        }
    )
