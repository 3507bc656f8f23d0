"""``POST /callbacks/ack``: PIM-Core's ACK or reject for a chunk (protocol v1, protocol/v1.py).

The signature is checked first (a refusal is a 401 and one log line, never a
500); the ACK is committed before the answer, so a 200 means durable.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from ..logs import Throttle
from ..protocol import signing, v1
from .keys import CONFIG, SCHEDULER
from .middleware import ApiError, json_response

log = structlog.get_logger("pimingestd.http")
_REFUSED = Throttle()


async def ack_callback(request: web.Request) -> web.Response:
    body = await request.read()
    secret = request.app[CONFIG].pimcore.secret
    if secret:
        why = signing.verify(secret, request.headers.get(signing.HEADER), body)
        if why:
            request.app[SCHEDULER].metrics.callbacks_refused.inc()  # every one; the log line is throttled
            held = _REFUSED.allow((why, request.remote))
            if held is not None:  # a misconfigured PIM-Core repeats this for every chunk: a line per 10 s
                log.warning(
                    "ack callback refused", reason=why, peer=request.remote, **({"repeated": held} if held else {})
                )
            raise ApiError(401, "bad signature", why)
    try:
        ack = v1.parse_ack(body)
    except v1.BadMessage as exc:
        message = str(exc)
        error, _, detail = (
            message.partition(": ") if message.startswith("body is not valid JSON") else (message, "", "")
        )
        raise ApiError(400, error, detail or None) from None
    outcome = await request.app[SCHEDULER].handle_ack(
        ack.ingestion_id, ack.n, ack.checksum, ack.status, ack.reason, ack.retryable, ack.rejected
    )
    if outcome in ("accepted", "duplicate"):
        return json_response({"result": outcome})
    if outcome == "bad_rejected":
        raise ApiError(400, "`rejected` lists an index outside the chunk", {"chunk": ack.n})
    if outcome == "mismatch":
        raise ApiError(409, "checksum differs from the chunk that was sent", {"chunk": ack.n})
    what = "unknown ingestion" if outcome == "unknown_ingestion" else "chunk was never sent"
    raise ApiError(404, what, {"ingestion_id": ack.ingestion_id, "chunk": ack.n})
