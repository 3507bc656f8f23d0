"""Ways in over HTTP: ``POST /api/ingest`` (a path the daemon can read) and ``PUT /api/files/{name}``
(an upload, streamed to disk in constant memory, then handed to the inbox lifecycle)."""

from __future__ import annotations

import asyncio
from pathlib import Path, PurePath, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from ..errors import Draining, FileChangedError, UploadTooLarge
from ..intake import upload as upload_mod
from ..intake.upload import check_relative_name
from ..intake.writers import Writers, writers
from ..locations.remote import check_allowed
from ..model import IngestRequest, Status
from ..names import readable
from ..records import rules as record_rules
from ..sources import detect_format
from .keys import CONFIG, INBOX, SCHEDULER
from .middleware import ApiError, json_response
from .params import check_options, field, json_body, query_int, query_options, query_rules, resolve_allowed

log = structlog.get_logger("pimingestd.http")

_INGEST_KEYS = {
    "path",
    "url",
    "format",
    "chunk_records",
    "chunk_bytes",
    "re_ingestion",
}  # the rest: the format's options
_UPLOAD_PARAMS = {"format": str, "chunk_records": int, "chunk_bytes": int}  # and re_ingestion; the rest: options


async def ingest(request: web.Request) -> web.Response:
    data = await json_body(request)
    raw_path, url = data.get("path"), data.get("url")
    if (raw_path is None) == (url is None):
        raise ApiError(400, "give exactly one of `path` (a file the daemon can read) and `url` (a remote object)")
    records, size = field(data, "chunk_records", int), field(data, "chunk_bytes", int)
    rules = {k: v for k, v in data.items() if k in record_rules.NAMES and v is not None}
    options = {k: v for k, v in data.items() if k not in _INGEST_KEYS and k not in rules and v is not None}
    re_ingestion = data.get("re_ingestion", False)
    if not isinstance(re_ingestion, bool):
        raise ApiError(400, "`re_ingestion` must be true or false")
    fmt = field(data, "format", str)
    target: dict[str, Any]
    if url is not None:
        if not isinstance(url, str) or not url:
            raise ApiError(400, "`url` must be a non-empty string")
        await asyncio.to_thread(check_allowed, url, request.app[CONFIG].remote.allowed_urls)  # 400 before any I/O
        named: PurePath = PurePosixPath(urlsplit(url).path)
        target = {"url": url}
    else:
        if not isinstance(raw_path, str) or not raw_path:
            raise ApiError(400, "`path` must be a non-empty string")
        # realpath and stat touch the filesystem (maybe a slow network one): off the event loop.
        path = await asyncio.to_thread(resolve_allowed, request.app[CONFIG], raw_path)
        if not await asyncio.to_thread(path.is_file):
            raise ApiError(404, "no such file", raw_path)
        await _not_being_written(path, raw_path)
        named, target = path, {"path": path}
    check_options(detect_format(named, fmt), options, records, size)
    record_rules.parse(rules)  # 400 naming the rule before any work
    req = IngestRequest(
        **target,
        format=fmt,
        chunk_records=records,
        chunk_bytes=size,
        re_ingestion=re_ingestion,
        source="api",
        options=options,
        rules=rules,
    )
    try:
        submitted = await request.app[SCHEDULER].submit(req)
    except FileNotFoundError:  # a file removed between the check above and the hashing
        raise ApiError(404, "no such file", raw_path) from None
    return _accepted(submitted.ingestion.id, submitted.ingestion.file_id, submitted.ingestion.status)


async def _not_being_written(path: Path, given: str) -> None:
    """A file another process still has open for writing is not complete yet: 409, as the inbox waits for
    its writer to close it (intake/writers.py). Where the lease cannot tell, the checks at completion
    (size, mtime and hash) remain."""
    try:
        answer = await asyncio.to_thread(writers, path)
    except FileNotFoundError:
        raise ApiError(404, "no such file", given) from None
    if answer.writers == Writers.OPEN:
        raise FileChangedError(
            f"{readable(given)} is still open for writing by another process; ingest it once its writer closed it"
        )


def _accepted(ingestion_id: str, file_id: str, status: Status) -> web.Response:
    return json_response(
        {"ingestion_id": ingestion_id, "file_id": file_id or None, "status": status},
        200 if status == Status.COMPLETED else 202,
    )


async def upload(request: web.Request) -> web.Response:
    """Stream the body to a temporary file (constant memory), then hand it to the inbox lifecycle."""
    try:
        rel = check_relative_name(request.match_info["name"])
    except ValueError as exc:
        raise ApiError(400, "bad file name", str(exc)) from None
    overrides: dict[str, Any] = {}
    for key, kind in _UPLOAD_PARAMS.items():
        if key in request.query:
            overrides[key] = query_int(request, key, 0, 1, 2**62) if kind is int else request.query[key]
    if "re_ingestion" in request.query:
        overrides["re_ingestion"] = request.query["re_ingestion"].lower() in ("1", "true", "yes")
    options = query_options(request, {*_UPLOAD_PARAMS, "re_ingestion", *record_rules.NAMES})
    fmt = detect_format(Path(rel), overrides.get("format"))  # 415 before the body is read
    check_options(fmt, options, overrides.get("chunk_records"), overrides.get("chunk_bytes"))  # 400 likewise
    overrides["options"] = options
    overrides["rules"] = query_rules(request)
    inbox = request.app[INBOX]
    if request.app[SCHEDULER].draining:
        raise Draining("the daemon is shutting down; try again after it restarts")
    limit = request.app[CONFIG].http.max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise UploadTooLarge(f"{request.content_length} bytes announced; [http] max_upload_bytes = {limit}")
    folder = await upload_mod.receive(inbox, rel, request.content, limit)
    try:
        submitted = await inbox.admit(folder, rel, "upload", overrides)
    except Draining:
        await inbox.discard(folder)  # 503: not taken; the client sends it again after the restart
        raise
    return _accepted(submitted.ingestion.id, submitted.ingestion.file_id, submitted.ingestion.status)
