"""HTTP side of the reference receiver (PIM-Core's end of protocol v1).

Routes:
- ``POST /ingest/chunks``: a chunk. Checks signature, Content-Digest, headers and
  order; applies it once; answers 202 and calls back on ``Pimingest-Callback``.
  A chunk already applied with the same checksum is re-ACKed, never re-applied.
  A chunk ahead of the next expected one gets 409 ``{"expected_chunk": k}``.
- ``POST /ingest/complete``: checks chunk and record counts and the manifest.
- ``GET /ingestions/{id}``, ``GET /ingestions/{id}/records``: what was applied;
  ``GET /ingestions/{id}/received``: every verified chunk POST, in arrival order.
- ``GET /catalogue?key=F``: each key's record as applied last, across ingestions (tombstones remove).
- ``GET /stats``; ``PUT /_faults``: fault rules (see faults.py).

Protocol v1.1: refused records (fault rule ``reject_records``) are listed in the ACK's ``rejected``, the
same list in every re-ACK of the chunk; tombstones (``"_deleted": true``) are applied as deletions; the
completion's ``rejected`` and ``deleted`` must match what it refused and took.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web

from ..core import canonical
from ..model import RecordReject
from ..protocol import signing, v1
from ..records import keys
from .faults import Faults, Rule
from .store import ReceiverStore

log = structlog.get_logger("pimingestd.receiver")

STORE = web.AppKey("receiver_store", ReceiverStore)
SESSION = web.AppKey("receiver_session", aiohttp.ClientSession)
FAULTS = web.AppKey("receiver_faults", Faults)
STATS: web.AppKey[Counter[str]] = web.AppKey("receiver_stats")
TASKS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("receiver_tasks")

_CALLBACK_ATTEMPTS = 6


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_records(body: bytes, expected: int) -> list[dict[str, Any]]:
    value = json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise ValueError("chunk body is not an array of objects")
    if len(value) != expected:
        raise ValueError(f"chunk holds {len(value)} records, Pimingest-Records says {expected}")
    return value


def _sort(records: list[dict[str, Any]], rules: list[Rule]) -> tuple[list[str | None], list[RecordReject], int]:
    """Each record's canonical text (None: refused), the refusals (v1.1 ``rejected``), and the tombstones
    received (refused or not: the completion's ``deleted`` counts every one sent)."""
    texts: list[str | None] = []
    refused: list[RecordReject] = []
    tombstones = 0
    for i, record in enumerate(records):
        tombstones += record.get(keys.DELETED) is True
        rule = next((r for r in rules if keys.lookup(record, r.field) in r.values), None)
        if rule is not None:
            refused.append(RecordReject(i, rule.reason, rule.field))
            texts.append(None)
            continue
        texts.append(canonical.encode(record).decode("utf-8"))
    return texts, refused, tombstones


class _Receiver:
    def __init__(self, app: web.Application, secret: str, mode: str) -> None:
        self.app = app
        self.secret = secret
        self.mode = mode

    # ---- callbacks -----------------------------------------------------------------

    async def _callback(self, url: str, payload: dict[str, Any], delay: float = 0.0) -> int | None:
        if delay:
            await asyncio.sleep(delay)
        body = orjson.dumps(payload)
        for attempt in range(_CALLBACK_ATTEMPTS):
            headers = {"Content-Type": "application/json"}
            if self.secret:
                headers[signing.HEADER] = signing.sign(self.secret, body)
            try:
                async with self.app[SESSION].post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    self.app[STATS]["callbacks_sent"] += 1
                    if resp.status < 500:
                        return resp.status
            except (TimeoutError, aiohttp.ClientError, OSError):
                self.app[STATS]["callback_errors"] += 1
            await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
        return None

    def _spawn(self, url: str, payload: dict[str, Any], delay: float = 0.0) -> None:
        task = asyncio.create_task(self._callback(url, payload, delay))
        self.app[TASKS].add(task)
        task.add_done_callback(self.app[TASKS].discard)

    # ---- chunk ------------------------------------------------------------------------

    async def chunk(self, request: web.Request) -> web.Response:
        stats = self.app[STATS]
        stats["chunks_received"] += 1
        body = await request.read()
        h = request.headers
        key = h.get(v1.IDEMPOTENCY_KEY, "")
        if self.secret:
            why = signing.verify(self.secret, h.get(signing.HEADER), body, key=key)
            if why:
                return _error(401, why)
        digest = hashlib.sha256(body).digest()
        if h.get(v1.CONTENT_DIGEST) != canonical.content_digest(digest):
            return _error(400, "Content-Digest missing or does not match the body")
        try:
            meta, callback = v1.ChunkHeaders.parse(h)
        except v1.BadMessage as exc:
            return _error(400, f"missing or malformed protocol header: {exc}")
        ingestion_id, file_id, n, count, first = (
            meta.ingestion_id,
            meta.file_id,
            meta.n,
            meta.records,
            meta.first_record,
        )
        checksum = canonical.checksum(digest)
        if self.mode == "store":  # the arrival log serves the tests' order checks, not the fast mode
            await self.app[STORE].note_received(ingestion_id, n, checksum, time.time(), meta.file_name)
        rule = self.app[FAULTS].take(n)
        if rule is not None and rule.action == "slow_response":
            await asyncio.sleep(rule.seconds)
            rule = None
        if rule is not None and rule.action == "http_500":
            stats["faults_http_500"] += 1
            return _error(500, "injected fault")
        ack = v1.Ack(ingestion_id, n, checksum, "ack").body()
        store = self.app[STORE]
        async with store.lock:
            state = await store.state(ingestion_id)
            next_chunk, next_record, _ = state if state is not None else (1, 0, False)
            if rule is not None and rule.action in ("reject_retryable", "reject_final") and n == next_chunk:
                # A reject refuses a chunk not yet applied; one already applied is re-ACKed like any duplicate.
                retryable = rule.action == "reject_retryable"
                stats["rejects_sent"] += 1
                reject = v1.Ack(ingestion_id, n, checksum, "reject", f"injected {rule.action}", retryable)
                self._spawn(callback, reject.body())
                return web.json_response({"status": "received"}, status=202)
            if n < next_chunk:
                if await store.checksum(ingestion_id, n) != checksum:
                    return _error(409, f"chunk {n} was applied with different bytes")
                stats["duplicates"] += 1
            elif n > next_chunk:
                stats["out_of_order"] += 1
                return _error(409, f"chunk {n} arrived before chunk {next_chunk}", expected_chunk=next_chunk)
            else:
                if first != next_record:
                    return _error(
                        409, f"Pimingest-Offset {first} but {next_record} records were applied", expected_chunk=n
                    )
                records: list[str | None] = []
                refused: list[RecordReject] = []
                tombstones = 0
                if self.mode == "store":
                    try:
                        parsed = _parse_records(body, count)
                        records, refused, tombstones = _sort(parsed, self.app[FAULTS].refusals())
                    except (ValueError, RecursionError, canonical.EncodeError) as exc:
                        return _error(400, f"chunk {n}: {exc}")
                await store.apply(ingestion_id, file_id, n, checksum, first, records, count, refused, tombstones)
                stats["chunks_applied"] += 1
                stats["records_applied"] += count - len(refused)
                stats["records_refused"] += len(refused)
            refusals = await store.refused(ingestion_id, n)  # a duplicate is answered as its first ACK was
            if refusals:
                ack = v1.Ack(ingestion_id, n, checksum, "ack", rejected=tuple(refusals)).body()
        await self._ack(callback, ack, rule)
        return web.json_response({"status": "received"}, status=202)

    async def _ack(self, callback: str, ack: dict[str, Any], rule: Rule | None) -> None:
        action = rule.action if rule is not None else None
        if action == "drop_ack":
            self.app[STATS]["acks_dropped"] += 1
            return
        if action == "ack_before_response":
            await self._callback(callback, ack)
            return
        self._spawn(callback, ack, rule.seconds if action == "delay_ack" and rule is not None else 0.0)
        if action == "duplicate_ack":
            self._spawn(callback, ack)

    # ---- completion -------------------------------------------------------------------

    async def complete(self, request: web.Request) -> web.Response:
        rule = self.app[FAULTS].take_completion()
        if rule is not None:
            await asyncio.sleep(rule.seconds)
        body = await request.read()
        key = request.headers.get(v1.IDEMPOTENCY_KEY, "")
        if self.secret:
            why = signing.verify(self.secret, request.headers.get(signing.HEADER), body, key=key)
            if why:
                return _error(401, why)
        try:
            payload = json.loads(body)
            ingestion_id = str(payload["ingestion_id"])
            chunks, records, manifest = int(payload["chunks"]), int(payload["records"]), str(payload["manifest"])
            rejected, deleted = int(payload.get("rejected", 0)), int(payload.get("deleted", 0))  # v1.1
        except (ValueError, KeyError, TypeError) as exc:
            return _error(400, f"malformed completion: {exc}")
        if key != v1.completion_key(ingestion_id):
            return _error(400, "Idempotency-Key must be <ingestion>:complete")
        store = self.app[STORE]
        async with store.lock:
            state = await store.state(ingestion_id)
            next_chunk, next_record, _ = state if state is not None else (1, 0, False)
            if chunks != next_chunk - 1 or records + deleted != next_record:
                return _error(
                    409,
                    f"completion says {chunks} chunks / {records} records and {deleted} tombstones;"
                    f" received {next_chunk - 1} / {next_record}",
                )
            counted = await store.outcomes(ingestion_id)
            if self.mode == "store" and (rejected, deleted) != counted:
                return _error(
                    409,
                    f"completion says {rejected} records rejected and {deleted} deleted;"
                    f" this receiver refused {counted[0]} and received {counted[1]} tombstones",
                )
            expected = canonical.manifest(await store.checksums(ingestion_id))
            if manifest != expected:
                return _error(409, f"manifest {manifest} does not match the applied chunks ({expected})")
            if state is not None:
                await store.complete(ingestion_id, manifest)
        self.app[STATS]["completions"] += 1
        return web.json_response({"status": "completed"})

    # ---- inspection -------------------------------------------------------------------

    async def ingestion(self, request: web.Request) -> web.Response:
        summary = await self.app[STORE].summary(request.match_info["id"])
        if summary is None:
            return _error(404, "unknown ingestion")
        return web.json_response(summary)

    async def records(self, request: web.Request) -> web.Response:
        rows = await self.app[STORE].applied(request.match_info["id"])
        return web.json_response([{"chunk": c, "index": i, "record": d} for c, i, d in rows])

    async def current(self, request: web.Request) -> web.Response:
        """Every key's record as applied last, across ingestions (a tombstone removes it): what the catalogue
        holds, for the delta proofs. ``?key=sku`` names the key field."""
        field = request.query.get("key", "")
        if not field:
            return _error(400, "?key= names the key field")
        return web.json_response(await self.app[STORE].current(field))

    async def received(self, request: web.Request) -> web.Response:
        rows = await self.app[STORE].received(request.match_info["id"])
        return web.json_response([{"chunk": n, "checksum": c, "at": at, "file_name": f} for n, c, at, f in rows])

    async def stats(self, request: web.Request) -> web.Response:
        stats: Counter[str] = self.app[STATS]
        # Callbacks still being sent (or retried): a test that restarts the daemon waits for none.
        return web.json_response({**stats, "callbacks_pending": len(self.app[TASKS])})

    async def faults(self, request: web.Request) -> web.Response:
        try:
            self.app[FAULTS].set(await request.json())
        except ValueError as exc:
            return _error(400, str(exc))
        return web.json_response({"rules": len(self.app[FAULTS].rules)})


def create_app(data_dir: Path, *, secret: str = "", mode: str = "store") -> web.Application:
    """The receiver as an aiohttp app. ``mode``: "store" parses and stores every record;
    "count" checks framing and order only (the fastest acknowledging mode)."""
    if mode not in ("store", "count"):
        raise ValueError("mode must be 'store' or 'count'")
    app = web.Application(client_max_size=1 << 30)
    app[FAULTS] = Faults()
    app[STATS] = Counter[str]()
    app[TASKS] = set[asyncio.Task[Any]]()
    recv = _Receiver(app, secret, mode)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        app[STORE] = await ReceiverStore.open(data_dir, durable=mode == "store")
        app[SESSION] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        yield
        tasks: set[asyncio.Task[Any]] = app[TASKS]
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await app[SESSION].close()
        await app[STORE].close()

    app.cleanup_ctx.append(resources)
    app.router.add_post("/ingest/chunks", recv.chunk)
    app.router.add_post("/ingest/complete", recv.complete)
    app.router.add_get("/ingestions/{id}", recv.ingestion)
    app.router.add_get("/ingestions/{id}/records", recv.records)
    app.router.add_get("/ingestions/{id}/received", recv.received)
    app.router.add_get("/catalogue", recv.current)
    app.router.add_get("/stats", recv.stats)
    app.router.add_put("/_faults", recv.faults)
    return app


async def serve(host: str, port: int, data_dir: Path, secret: str = "", mode: str = "store") -> None:
    """Run the receiver until cancelled (``pimingestd receiver``)."""
    runner = web.AppRunner(create_app(data_dir, secret=secret, mode=mode), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("reference receiver listening", url=f"http://{host}:{port}", data=str(data_dir), mode=mode)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def data_path(value: str) -> Path:
    return Path(value).expanduser().resolve()
