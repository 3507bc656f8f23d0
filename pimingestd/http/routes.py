"""HTTP routes: validate, call the engine or the store, shape JSON. Nothing else.

Every error is JSON ``{"error": ..., "detail": ...}`` with its status code. An error
from the tree in errors.py becomes its class's status and title, with the message
as detail, in one place: errors_middleware.
``/api/*`` needs ``Authorization: Bearer <api_token>`` when a token is set.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiofiles
import orjson
import structlog
from aiohttp import web

from ..config import ChunkPolicy, Config
from ..core.scheduler import Scheduler
from ..errors import ConfigError, Draining, PimIngestError
from ..intake.lifecycle import Inbox, check_relative_name
from ..metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ..model import STATUSES, UNFINISHED, Ingestion, IngestRequest
from ..names import readable
from ..protocol import signing
from ..sources import all_option_names, detect_format, format_options
from ..state.sqlite import Store

log = structlog.get_logger("pimingestd.http")

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
SCHEDULER = web.AppKey("engine", Scheduler)
INBOX = web.AppKey("inbox", Inbox)

OPENAPI = Path(__file__).resolve().parent / "openapi.yaml"

_CHECKSUM = re.compile(r"^sha256:[0-9a-f]{64}$")
_INGEST_KEYS = {"path", "format", "chunk_records", "chunk_bytes", "re_ingestion"}  # the rest: the format's options
_DIGITS = re.compile(r"[0-9]{1,15}")  # a query integer: ASCII digits only (int() would take '١٢' or ' 5')

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(web.HTTPException):
    """An HTTP error with a JSON body."""

    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        self.status_code = status
        super().__init__(
            text=orjson.dumps({"error": error, "detail": detail}).decode(), content_type="application/json"
        )


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


async def ingestion_view(store: Store, ing: Ingestion, engine: Scheduler | None = None) -> dict[str, Any]:
    chunks, records = await store.progress(ing.id)
    rate = engine.rate(ing.id, records) if engine is not None else None
    eta = None
    if rate and ing.total_records is not None:
        eta = round(max(ing.total_records - records, 0) / rate, 1)
    in_flight = await store.chunk(ing.id, chunks + 1) if ing.status in UNFINISHED else None
    last_ack = await store.last_activity(ing.id)
    return {
        "ingestion_id": ing.id,
        "file_id": ing.file_id,
        "path": readable(ing.path),
        "file_name": ing.file_name,
        "format": ing.format,
        "status": ing.status,
        "chunks_acked": chunks,
        "records_acked": records,
        "total_chunks": ing.total_chunks,
        "total_records": ing.total_records,
        "error": ing.error,
        "source": ing.source,
        "records_per_second": None if rate is None else round(rate, 1),
        "eta_seconds": eta,
        "attempts": in_flight.attempts if in_flight is not None and in_flight.state == "sent" else 0,
        "created_at": _iso(ing.created_at),
        "updated_at": _iso(max(ing.updated_at, last_ack or 0.0)),
    }


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError:
        raise
    except PimIngestError as exc:
        raise ApiError(exc.http_status, exc.title, str(exc)) from None
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


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "request body too large") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "body is not valid JSON", str(exc)) from None
    if not isinstance(data, dict):
        raise ApiError(400, "body must be a JSON object")
    return data


def _opt(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if value is None:
        return None
    if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ApiError(400, f"`{key}` must be a positive integer")
    if kind is not int and not isinstance(value, kind):
        raise ApiError(400, f"`{key}` must be a {kind.__name__}")
    return value


def _options(fmt: str, options: dict[str, Any], records: int | None, size: int | None) -> None:
    """Refuse (400) what would only fail later: a format option that is unknown or bad (a json_path
    that cannot be parsed), chunk sizes out of range."""
    unknown = sorted(set(options) - all_option_names())
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(unknown)}")
    try:
        format_options(fmt, options)
    except ConfigError as exc:
        raise ApiError(400, "bad option", str(exc)) from None
    if records is not None and size is not None:
        raise ApiError(400, "give at most one of `chunk_records` and `chunk_bytes`")
    if records is not None or size is not None:
        try:
            ChunkPolicy(records=records, bytes=size)
        except ConfigError as exc:
            raise ApiError(400, "bad chunking", str(exc)) from None


def resolve_allowed(config: Config, raw: str) -> Path:
    """The real path of ``raw`` (relative to the config's folder) if it lies under an allowed root."""
    if "\x00" in raw:
        raise ApiError(400, "`path` contains a NUL byte")
    p = Path(raw)
    if not p.is_absolute():
        p = config.path.parent / p
    real = p.resolve()
    for root in config.http.allowed_roots:
        if real.is_relative_to(root.resolve()):
            return real
    raise ApiError(403, "path is outside the allowed roots", "see [http] allowed_roots")


async def ingest(request: web.Request) -> web.Response:
    data = await _body(request)
    raw_path = data.get("path")
    if not isinstance(raw_path, str) or not raw_path:
        raise ApiError(400, "`path` is required and must be a string")
    records, size = _opt(data, "chunk_records", int), _opt(data, "chunk_bytes", int)
    options = {k: v for k, v in data.items() if k not in _INGEST_KEYS and v is not None}
    re_ingestion = data.get("re_ingestion", False)
    if not isinstance(re_ingestion, bool):
        raise ApiError(400, "`re_ingestion` must be true or false")
    config = request.app[CONFIG]
    # realpath and stat touch the filesystem (maybe a slow network one): off the event loop.
    path = await asyncio.to_thread(resolve_allowed, config, raw_path)
    if not await asyncio.to_thread(path.is_file):
        raise ApiError(404, "no such file", raw_path)
    fmt = _opt(data, "format", str)
    _options(detect_format(path, fmt), options, records, size)
    req = IngestRequest(
        path=path,
        format=fmt,
        chunk_records=records,
        chunk_bytes=size,
        re_ingestion=re_ingestion,
        source="api",
        options=options,
    )
    try:
        submitted = await request.app[SCHEDULER].submit(req)
    except FileNotFoundError:  # removed between the check above and the hashing
        raise ApiError(404, "no such file", raw_path) from None
    ing = submitted.ingestion
    status = 200 if ing.status == "completed" else 202
    return _json({"ingestion_id": ing.id, "file_id": ing.file_id, "status": ing.status}, status)


async def _ingestion(request: web.Request) -> Ingestion:
    ing = await request.app[STORE].get(request.match_info["id"])
    if ing is None:
        raise ApiError(404, "unknown ingestion", request.match_info["id"])
    return ing


async def get_ingestion(request: web.Request) -> web.Response:
    return _json(await ingestion_view(request.app[STORE], await _ingestion(request), request.app[SCHEDULER]))


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw):
        raise ApiError(400, f"`{name}` must be a whole number (ASCII digits)")
    value = int(raw)
    if not lo <= value <= hi:
        raise ApiError(400, f"`{name}` must be between {lo} and {hi}")
    return value


async def list_ingestions(request: web.Request) -> web.Response:
    status = request.query.get("status") or None
    if status is not None and status not in STATUSES:
        raise ApiError(400, f"`status` must be one of {', '.join(STATUSES)}")
    limit = _int_param(request, "limit", 50, 1, 1000)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    store, engine = request.app[STORE], request.app[SCHEDULER]
    rows = await store.list_ingestions(status, limit, offset)
    return _json(
        {"ingestions": [await ingestion_view(store, ing, engine) for ing in rows], "limit": limit, "offset": offset}
    )


async def list_chunks(request: web.Request) -> web.Response:
    ing = await _ingestion(request)
    start = _int_param(request, "from", 1, 1, 10**12)
    limit = _int_param(request, "limit", 100, 1, 1000)
    rows = await request.app[STORE].chunks(ing.id, start, limit)
    return _json(
        {
            "ingestion_id": ing.id,
            "chunks": [
                {
                    "chunk": r.n,
                    "first_record": r.first_record,
                    "records": r.records,
                    "checksum": r.checksum,
                    "state": r.state,
                    "attempts": r.attempts,
                    "sent_at": _iso(r.sent_at),
                    "acked_at": _iso(r.acked_at),
                    "reject_reason": r.reject_reason,
                }
                for r in rows
            ],
        }
    )


_UPLOAD_PARAMS = {"format": str, "chunk_records": int, "chunk_bytes": int}  # and re_ingestion; the rest: format options


async def upload(request: web.Request) -> web.Response:
    """Stream the body to a temporary file (constant memory), then hand it to the inbox lifecycle."""
    try:
        rel = check_relative_name(request.match_info["name"])
    except ValueError as exc:
        raise ApiError(400, "bad file name", str(exc)) from None
    overrides: dict[str, Any] = {}
    for key, kind in _UPLOAD_PARAMS.items():
        if key in request.query:
            value = request.query[key]
            if kind is int:
                overrides[key] = _int_param(request, key, 0, 1, 2**62)
            else:
                overrides[key] = value
    if "re_ingestion" in request.query:
        overrides["re_ingestion"] = request.query["re_ingestion"].lower() in ("1", "true", "yes")
    options = {k: v for k, v in request.query.items() if k not in _UPLOAD_PARAMS and k != "re_ingestion"}
    fmt = detect_format(Path(rel), overrides.get("format"))  # 415 before the body is read
    _options(fmt, options, overrides.get("chunk_records"), overrides.get("chunk_bytes"))  # 400 likewise
    overrides["options"] = options
    engine, inbox = request.app[SCHEDULER], request.app[INBOX]
    if engine.draining:
        raise Draining("the daemon is shutting down; try again after it restarts")
    limit = request.app[CONFIG].http.max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "upload too large", {"max_upload_bytes": limit})
    temp = inbox.upload_temp()
    size = 0
    try:
        async with aiofiles.open(temp, "wb") as out:
            async for block in request.content.iter_chunked(1 << 20):
                size += len(block)
                if size > limit:
                    raise ApiError(413, "upload too large", {"max_upload_bytes": limit})
                await out.write(block)
            await out.flush()
            await asyncio.to_thread(os.fsync, out.fileno())
        folder = await inbox.place_upload(temp, rel)
    except (ConnectionError, web.HTTPBadRequest) as exc:
        log.warning("upload aborted by the client; nothing kept", file=rel, received=size, error=str(exc))
        raise ApiError(400, "upload aborted", str(exc)) from None
    finally:
        await asyncio.to_thread(temp.unlink, missing_ok=True)
    log.info("upload received", file=rel, bytes=size)
    try:
        submitted = await inbox.admit(folder, rel, "upload", overrides)
    except Draining:
        await inbox.discard(folder)  # 503: not taken; the client sends it again after the restart
        raise
    ing = submitted.ingestion
    return _json(
        {"ingestion_id": ing.id, "file_id": ing.file_id, "status": ing.status},
        200 if ing.status == "completed" else 202,
    )


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=await asyncio.to_thread(OPENAPI.read_bytes), content_type="application/yaml")


async def resume(request: web.Request) -> web.Response:
    ing = await request.app[SCHEDULER].resume((await _ingestion(request)).id)
    return _json(await ingestion_view(request.app[STORE], ing, request.app[SCHEDULER]), 202)


async def cancel(request: web.Request) -> web.Response:
    ing = await request.app[SCHEDULER].cancel((await _ingestion(request)).id)
    return _json(await ingestion_view(request.app[STORE], ing, request.app[SCHEDULER]))


async def ack_callback(request: web.Request) -> web.Response:
    body = await request.read()
    secret = request.app[CONFIG].pimcore.secret
    if secret:
        why = signing.verify(secret, request.headers.get(signing.HEADER), body)
        if why:
            log.warning("ack callback refused", reason=why, peer=request.remote)
            raise ApiError(401, "bad signature", why)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "body is not valid JSON", str(exc)) from None
    if not isinstance(data, dict):
        raise ApiError(400, "body must be a JSON object")
    ingestion_id, n, checksum = data.get("ingestion_id"), data.get("chunk"), data.get("checksum")
    status, reason, retryable = data.get("status"), data.get("reason", ""), data.get("retryable", False)
    if not isinstance(ingestion_id, str) or not ingestion_id:
        raise ApiError(400, "`ingestion_id` must be a non-empty string")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ApiError(400, "`chunk` must be a positive integer")
    if not isinstance(checksum, str) or not _CHECKSUM.match(checksum):
        raise ApiError(400, "`checksum` must be sha256:<64 hex digits>")
    if status not in ("ack", "reject"):
        raise ApiError(400, "`status` must be 'ack' or 'reject'")
    if not isinstance(reason, str) or not isinstance(retryable, bool):
        raise ApiError(400, "`reason` must be a string and `retryable` a boolean")
    outcome = await request.app[SCHEDULER].handle_ack(ingestion_id, n, checksum, status, reason[:2000], retryable)
    if outcome == "accepted":
        return _json({"result": "accepted"})
    if outcome == "duplicate":
        return _json({"result": "duplicate"})
    if outcome == "mismatch":
        raise ApiError(409, "checksum differs from the chunk that was sent", {"chunk": n})
    what = "unknown ingestion" if outcome == "unknown_ingestion" else "chunk was never sent"
    raise ApiError(404, what, {"ingestion_id": ingestion_id, "chunk": n})


async def healthz(request: web.Request) -> web.Response:
    """Live: the process answers. Ready: the state is open, work has started, and it is not draining."""
    engine = request.app[SCHEDULER]
    store_open = STORE in request.app
    ready = store_open and engine.started and not engine.draining
    body = {
        "live": True,
        "ready": ready,
        "store": "open" if store_open else "closed",
        "draining": engine.draining,
        "running": engine.running,
        "in_flight": engine.in_flight,
    }
    return _json(body, 200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    engine = request.app[SCHEDULER]
    body = engine.metrics.render(await request.app[STORE].count_by_status(), engine.in_flight)
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/ingest", ingest)
    app.router.add_put("/api/files/{name:.+}", upload)
    app.router.add_get("/api/ingestions", list_ingestions)
    app.router.add_get("/api/ingestions/{id}", get_ingestion)
    app.router.add_get("/api/ingestions/{id}/chunks", list_chunks)
    app.router.add_get("/api/openapi.yaml", openapi)
    app.router.add_post("/api/ingestions/{id}/resume", resume)
    app.router.add_post("/api/ingestions/{id}/cancel", cancel)
    app.router.add_post("/callbacks/ack", ack_callback)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
