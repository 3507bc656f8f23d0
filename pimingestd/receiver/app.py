"""HTTP side of the reference receiver (PIM-Core's end of protocol v1, and of v2 when it is asked for).

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

Protocol v2 (a chunk with ``Pimingest-Protocol: 2``, unless started with ``protocol=1``): every chunk
answer announces ``Pimingest-Window``. Under ``strict`` a chunk ahead of its turn is held until its
predecessor is applied (up to ``HOLD_SECONDS``), then answered 425. Under ``by_key`` chunks are applied in
any order, ``workers`` at a time; a key applied out of file order, or by two chunks at once, is recorded
as a violation (``GET /violations``). ``apply_ms`` models PIM-Core's cost: each record takes that many
milliseconds of a worker (benchmarks; the correctness tests keep the real apply).

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
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web

from ..model import RecordReject
from ..protocol import canonical, keys, signing, v1
from .faults import Faults, Rule
from .store import ReceiverStore

log = structlog.get_logger("pimingestd.receiver")

STORE = web.AppKey("receiver_store", ReceiverStore)
SESSION = web.AppKey("receiver_session", aiohttp.ClientSession)
FAULTS = web.AppKey("receiver_faults", Faults)
STATS: web.AppKey[Counter[str]] = web.AppKey("receiver_stats")
TASKS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("receiver_tasks")

_CALLBACK_ATTEMPTS = 6
HOLD_SECONDS = 2.0  # v2 strict: how long a chunk ahead of its turn waits for it before a 425


@dataclass(frozen=True, slots=True)
class Options:
    """How the receiver behaves. ``mode``: "store" parses and stores every record; "count" checks framing and
    order only. ``protocol``: the highest it speaks (1: a v1 receiver, which announces no window and takes
    v2 chunks as v1 ones). ``window``: the chunks in flight it announces. ``workers`` and ``apply_ms``:
    the applier model (see the module's docstring)."""

    mode: str = "store"
    protocol: int = 2
    window: int = 16
    workers: int = 1
    apply_ms: float = 0.0
    hold: float = HOLD_SECONDS  # strict: how long an early chunk waits for its turn before its 425

    def __post_init__(self) -> None:
        if self.mode not in ("store", "count"):
            raise ValueError("mode must be 'store' or 'count'")
        if self.protocol not in (1, 2) or self.window < 1 or self.workers < 1 or self.apply_ms < 0:
            raise ValueError("protocol is 1 or 2; window and workers at least 1; apply_ms not negative")


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
    def __init__(self, app: web.Application, secret: str, options: Options) -> None:
        self.app = app
        self.secret = secret
        self.options = options
        self.mode = options.mode
        self.workers = asyncio.Semaphore(options.workers)  # the appliers: by_key chunks apply this many at once
        self.turn = asyncio.Condition()  # notified after every apply: strict chunks held for their turn wait on it
        self.applying: dict[tuple[str, int], asyncio.Event] = {}  # by_key chunks being applied now
        self.keys_busy: dict[tuple[str, str], int] = {}  # (ingestion, key) -> the chunk applying it now
        self.last_position: dict[tuple[str, str], tuple[int, int]] = {}  # (ingestion, key) -> (chunk, index)
        self.order_violations: list[str] = []  # order violations seen (by_key: per key; strict: per chunk)
        self.posts = 0
        self.applies = 0
        self._in_order: dict[str, asyncio.Lock] = {}  # v1 and strict: an ingestion's chunks decide one at a time

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
        self.posts += 1  # chunk POSTs being handled now: the tests read the most there ever were
        stats["max_concurrent_posts"] = max(stats["max_concurrent_posts"], self.posts)
        try:
            response = await self._chunk(request)
        finally:
            self.posts -= 1
        if self.options.protocol >= 2:  # v2: every chunk answer announces the window (a v1 sender ignores it)
            response.headers[v1.WINDOW] = str(self.options.window)
        return response

    async def _chunk(self, request: web.Request) -> web.Response:
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
        by_key = meta.protocol == 2 and self.options.protocol >= 2 and meta.order == "by_key"
        v2 = meta.protocol == 2 and self.options.protocol >= 2
        checksum = canonical.checksum(digest)
        if self.mode == "store":  # the arrival log serves the tests' order checks, not the fast mode
            await self.app[STORE].note_received(meta.ingestion_id, meta.n, checksum, time.time(), meta.file_name)
        rule = self.app[FAULTS].take(meta.n)
        if rule is not None and rule.action == "slow_response":
            await asyncio.sleep(rule.seconds)
            rule = None
        if rule is not None and rule.action == "http_500":
            stats["faults_http_500"] += 1
            return _error(500, "injected fault")
        if rule is not None and rule.action == "http_425":
            stats["faults_http_425"] += 1
            return _error(425, "injected fault: too early")
        if rule is not None and rule.action == "http_429":
            stats["faults_http_429"] += 1
            response = _error(429, "injected fault: busy")
            response.headers["Retry-After"] = str(max(int(rule.seconds), 0))
            return response
        if by_key:
            outcome = await self._apply_by_key(meta, body, checksum, callback, rule)
        else:
            outcome = await self._apply_in_order(meta, body, checksum, callback, rule, v2)
        if isinstance(outcome, web.Response):
            return outcome
        if outcome is not None:
            await self._ack(callback, outcome, rule)
        return web.json_response({"status": "received"}, status=202)

    def _refuse(self, meta: v1.ChunkHeaders, checksum: str, callback: str, rule: Rule | None) -> bool:
        """A reject fault rule: call back ``reject`` for a chunk not applied yet; True when it did."""
        if rule is None or rule.action not in ("reject_retryable", "reject_final"):
            return False
        retryable = rule.action == "reject_retryable"
        self.app[STATS]["rejects_sent"] += 1
        reject = v1.Ack(meta.ingestion_id, meta.n, checksum, "reject", f"injected {rule.action}", retryable)
        self._spawn(callback, reject.body())
        return True

    async def _apply_in_order(
        self, meta: v1.ChunkHeaders, body: bytes, checksum: str, callback: str, rule: Rule | None, v2: bool
    ) -> dict[str, Any] | web.Response:
        """v1, and v2 strict: chunk n is applied only after chunk n-1. Returns the ACK to send, or the answer."""
        stats, store = self.app[STATS], self.app[STORE]
        ingestion_id, n = meta.ingestion_id, meta.n
        if v2:  # hold a chunk ahead of its turn until its predecessor is applied, for a while
            await store.state(ingestion_id)  # (cached: the wait reads it)
            try:
                async with self.turn:
                    await asyncio.wait_for(self.turn.wait_for(lambda: self._next(ingestion_id) >= n), self.options.hold)
            except TimeoutError:
                pass
        async with self._in_order.setdefault(ingestion_id, asyncio.Lock()):  # one chunk of it at a time
            state = await store.state(ingestion_id)
            next_chunk, next_record, _ = state if state is not None else (1, 0, False)
            if n == next_chunk and self._refuse(meta, checksum, callback, rule):
                # A reject refuses a chunk not yet applied; one already applied is re-ACKed like any duplicate.
                return web.json_response({"status": "received"}, status=202)
            if n < next_chunk:
                if await store.checksum(ingestion_id, n) != checksum:
                    return _error(409, f"chunk {n} was applied with different bytes")
                stats["duplicates"] += 1
            elif n > next_chunk:
                stats["out_of_order"] += 1
                if v2:
                    stats["too_early"] += 1
                    return _error(425, f"chunk {n} arrived before chunk {next_chunk}", expected_chunk=next_chunk)
                return _error(409, f"chunk {n} arrived before chunk {next_chunk}", expected_chunk=next_chunk)
            else:
                if meta.first_record != next_record:
                    return _error(
                        409,
                        f"Pimingest-Offset {meta.first_record} but {next_record} records were applied",
                        expected_chunk=n,
                    )
                if self.options.apply_ms:  # the model: one worker, for this chunk's records
                    async with self.workers:
                        await asyncio.sleep(self.options.apply_ms * meta.records / 1000)
                async with store.lock:
                    failed = await self._apply(meta, body, checksum, state)
                if failed is not None:
                    return failed
            ack = await self._ack_body(meta, checksum)
        async with self.turn:
            self.turn.notify_all()
        return ack

    def _next(self, ingestion_id: str) -> int:
        cached = self.app[STORE].cached_state(ingestion_id)
        return cached[0] if cached is not None else 1

    async def _apply_by_key(
        self,
        meta: v1.ChunkHeaders,
        body: bytes,
        checksum: str,
        callback: str,
        rule: Rule | None,
    ) -> dict[str, Any] | web.Response | None:
        """v2 by_key: chunks apply in any order, ``workers`` at a time. A chunk is applied once: a re-send while
        it is being applied waits for that, then is answered as a duplicate. None: taken, and the ACK follows
        from its worker."""
        stats, store = self.app[STATS], self.app[STORE]
        slot = (meta.ingestion_id, meta.n)
        while (running := self.applying.get(slot)) is not None:
            await running.wait()
        applied = await store.checksum(meta.ingestion_id, meta.n)
        if applied is not None:
            if applied != checksum:
                return _error(409, f"chunk {meta.n} was applied with different bytes")
            stats["duplicates"] += 1
            return await self._ack_body(meta, checksum)
        if self._refuse(meta, checksum, callback, rule):
            return web.json_response({"status": "received"}, status=202)
        records = None
        if self.mode == "store":
            try:
                records = _parse_records(body, meta.records)
            except (ValueError, RecursionError) as exc:
                return _error(400, f"chunk {meta.n}: {exc}")
        # Taken: answered 202 now, applied by a worker, ACKed once applied (as a queue-backed PIM-Core does).
        done = self.applying[slot] = asyncio.Event()
        task = asyncio.create_task(self._apply_taken(meta, body, checksum, callback, rule, records, done))
        self.app[TASKS].add(task)
        task.add_done_callback(self.app[TASKS].discard)
        if rule is not None and rule.action == "ack_before_response":
            await asyncio.shield(task)
        return None

    async def _apply_taken(
        self,
        meta: v1.ChunkHeaders,
        body: bytes,
        checksum: str,
        callback: str,
        rule: Rule | None,
        records: list[dict[str, Any]] | None,
        done: asyncio.Event,
    ) -> None:
        """A by_key chunk's worker: wait for a free applier, apply, send the ACK."""
        stats, store = self.app[STATS], self.app[STORE]
        try:
            held = self._hold_keys(meta, records, meta.key)
            try:
                async with self.workers:
                    self.applies += 1
                    stats["max_concurrent_applies"] = max(stats["max_concurrent_applies"], self.applies)
                    try:
                        if self.options.apply_ms:
                            await asyncio.sleep(self.options.apply_ms * meta.records / 1000)
                    finally:
                        self.applies -= 1
                    async with store.lock:
                        state = await store.state(meta.ingestion_id)
                        failed = await self._apply(meta, body, checksum, state, records)
                        ack = None if failed is not None else await self._ack_body(meta, checksum)
            finally:
                for k in held:
                    del self.keys_busy[k]
        finally:
            done.set()
            del self.applying[(meta.ingestion_id, meta.n)]
        if ack is None:
            stats["apply_errors"] += 1  # its records could not be applied: no ACK, the daemon sends it again
            return
        await self._ack(callback, ack, rule)

    def _hold_keys(
        self, meta: v1.ChunkHeaders, records: list[dict[str, Any]] | None, key_field: str | None
    ) -> list[tuple[str, str]]:
        """by_key's order checks: a key already being applied by another chunk, or applied before at a later
        place in the file, is a violation. Returns the keys this chunk now holds."""
        if records is None or not key_field:
            return []
        held: list[tuple[str, str]] = []
        for i, record in enumerate(records):
            try:
                k = (meta.ingestion_id, keys.extract(record, key_field))
            except keys.NoKey:
                continue
            busy = self.keys_busy.get(k)
            if busy is not None and busy != meta.n:
                self.order_violations.append(f"{k[0]}: key {k[1]} applied by chunks {busy} and {meta.n} at once")
            last = self.last_position.get(k)
            if last is not None and last > (meta.n, i):
                self.order_violations.append(
                    f"{k[0]}: key {k[1]} at chunk {meta.n} record {i} applied after chunk {last[0]} record {last[1]}"
                )
            self.last_position[k] = (meta.n, i)
            if busy is None:
                self.keys_busy[k] = meta.n
                held.append(k)
        return held

    async def _apply(
        self,
        meta: v1.ChunkHeaders,
        body: bytes,
        checksum: str,
        state: tuple[int, int, bool] | None,
        parsed: list[dict[str, Any]] | None = None,
    ) -> web.Response | None:
        """Apply a chunk whose turn it is (the caller holds the store's lock); an error answer when its records
        cannot be read."""
        stats, store = self.app[STATS], self.app[STORE]
        records: list[str | None] = []
        refused: list[RecordReject] = []
        tombstones = 0
        if self.mode == "store":
            try:
                parsed = parsed if parsed is not None else _parse_records(body, meta.records)
                records, refused, tombstones = _sort(parsed, self.app[FAULTS].refusals())
            except (ValueError, RecursionError, canonical.EncodeError) as exc:
                return _error(400, f"chunk {meta.n}: {exc}")
        await store.apply(
            meta.ingestion_id,
            meta.file_id,
            meta.n,
            checksum,
            meta.first_record,
            records,
            meta.records,
            refused,
            tombstones,
            state,
        )
        stats["chunks_applied"] += 1
        stats["records_applied"] += meta.records - len(refused)
        stats["records_refused"] += len(refused)
        return None

    async def _ack_body(self, meta: v1.ChunkHeaders, checksum: str) -> dict[str, Any]:
        """The chunk's ACK: the same refused records every time (a duplicate is answered as its first ACK was)."""
        refusals = await self.app[STORE].refused(meta.ingestion_id, meta.n)
        return v1.Ack(meta.ingestion_id, meta.n, checksum, "ack", rejected=tuple(refusals)).body()

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

    async def violations(self, request: web.Request) -> web.Response:
        """The order violations this receiver saw (by_key: a key out of file order or applied by two chunks
        at once); empty is the only good answer."""
        return web.json_response(self.order_violations)

    async def faults(self, request: web.Request) -> web.Response:
        try:
            self.app[FAULTS].set(await request.json())
        except ValueError as exc:
            return _error(400, str(exc))
        return web.json_response({"rules": len(self.app[FAULTS].rules)})


def create_app(
    data_dir: Path,
    *,
    secret: str = "",
    mode: str = "store",
    options: Options | None = None,
    faults: Any = None,
) -> web.Application:
    """The receiver as an aiohttp app. ``mode``: "store" parses and stores every record;
    "count" checks framing and order only (the fastest acknowledging mode). ``options`` (which carry their
    own mode) say the rest (see Options). ``faults``: rules (as PUT /_faults takes) held from the start."""
    options = options if options is not None else Options(mode=mode)
    app = web.Application(client_max_size=1 << 30)
    app[FAULTS] = Faults()
    if faults is not None:
        app[FAULTS].set(faults)
    app[STATS] = Counter[str]()
    app[TASKS] = set[asyncio.Task[Any]]()
    recv = _Receiver(app, secret, options)
    mode = options.mode

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
    app.router.add_get("/violations", recv.violations)
    app.router.add_put("/_faults", recv.faults)
    return app


async def serve(
    host: str, port: int, data_dir: Path, secret: str = "", options: Options | None = None, faults: Any = None
) -> None:
    """Run the receiver until cancelled (``pimingestd receiver``)."""
    options = options or Options()
    runner = web.AppRunner(create_app(data_dir, secret=secret, options=options, faults=faults), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info(
            "reference receiver listening",
            url=f"http://{host}:{port}",
            data=str(data_dir),
            mode=options.mode,
            protocol=options.protocol,
            window=options.window,
            workers=options.workers,
            apply_ms=options.apply_ms,
        )
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def data_path(value: str) -> Path:
    return Path(value).expanduser().resolve()
