"""One ingestion's loop, and the scheduler that runs several.

``Engine.submit`` is the single entry point for starting an ingestion (API
trigger, upload, inbox). For each ingestion: check the file, spool it (preflight)
or stream it, then for each chunk after the last committed one: register the
ACK Future, persist the attempt as sent, POST, await the ACK (committed by the
callback handler before it answers), and only then go on. Exactly one chunk of
an ingestion is in flight. After the last chunk, send the completion.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import structlog

from ..config import ChunkPolicy, DeliveryConfig
from ..crashpoints import crash_point
from ..errors import (
    DeliveryError,
    Draining,
    FileChangedError,
    NotAllowed,
    Paused,
    PimIngestError,
    Rejected,
    SourceError,
    SpoolError,
    StateError,
    UnknownIngestion,
)
from ..metrics import Metrics
from ..model import UNFINISHED, AckOutcome, ChunkRow, Ingestion, IngestRequest, SpooledChunk, Status, Submitted
from ..names import readable
from ..protocol.acks import AckRegistry, AckResult
from ..protocol.v1 import ChunkHeaders, PimcoreClient
from ..sources import SourceSpec, detect_format, format_options, read_records
from ..sources.fileid import identify, stat_identity
from ..state.sqlite import Store
from . import canonical, spool
from .chunking import Chunk, cut
from .threads import iterate_in_thread

log = structlog.get_logger("pimingestd.core")

_PAGE = 1000  # chunk rows read or written per store call: memory stays flat in the number of chunks


class Engine:
    def __init__(
        self,
        store: Store,
        client: PimcoreClient,
        acks: AckRegistry,
        *,
        delivery: DeliveryConfig,
        chunking: ChunkPolicy,
        spool_dir: Path,
        max_concurrent: int,
        metrics: Metrics | None = None,
        max_record_bytes: int = 16 << 20,
    ) -> None:
        self._store = store
        self._client = client
        self._acks = acks
        self._delivery = delivery
        self._chunking = chunking
        self._spool_dir = spool_dir
        self._max_record_bytes = max_record_bytes
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._submit_lock = asyncio.Lock()
        self._draining = asyncio.Event()
        self.metrics = metrics or Metrics()
        self._listeners: list[Callable[[Ingestion], Awaitable[None]]] = []
        self._rates: dict[str, tuple[float, int]] = {}  # ingestion -> (run start, records acked then)
        self.started = False  # True once start() resumed what was unfinished

    # ---- lifecycle ------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    @property
    def running(self) -> int:
        return len(self._tasks)

    @property
    def in_flight(self) -> int:
        return len(self._acks)

    async def start(self) -> int:
        """Resume every queued or running ingestion; returns how many."""
        unfinished = await self._store.with_status(UNFINISHED)
        for ing in unfinished:
            self._schedule(ing.id, resumed=True)
        self.started = True
        return len(unfinished)

    async def drain(self, seconds: float) -> bool:
        """Stop sending new chunks; wait up to ``seconds`` for in-flight chunks to be ACKed."""
        self._draining.set()
        tasks = list(self._tasks.values())
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=seconds)
        return not pending

    async def close(self) -> None:
        """Cancel whatever still runs; its state stays resumable."""
        self._draining.set()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._acks.cancel_all()

    def add_listener(self, listener: Callable[[Ingestion], Awaitable[None]]) -> None:
        """Call ``listener`` with the ingestion whenever one ends (completed, failed, cancelled)."""
        self._listeners.append(listener)

    async def _ended(self, ingestion_id: str) -> None:
        ing = await self._get(ingestion_id)
        for listener in self._listeners:
            try:
                await listener(ing)
            except Exception:
                log.exception("listener failed", ingestion_id=ingestion_id)

    def rate(self, ingestion_id: str, records_acked: int) -> float | None:
        """Records/s of the current run of a running ingestion; None when it is not running."""
        start = self._rates.get(ingestion_id)
        if start is None:
            return None
        elapsed = time.monotonic() - start[0]
        return (records_acked - start[1]) / elapsed if elapsed > 0 else 0.0

    # ---- entry points -------------------------------------------------------------

    async def submit(self, req: IngestRequest) -> Submitted:
        """Start (or find) the ingestion of a file. The one way in for every source."""
        if self.draining:
            raise Draining("the daemon is shutting down; try again after it restarts")
        fmt = detect_format(req.path, req.format)
        options = format_options(fmt, req.options)
        if req.chunk_records is not None or req.chunk_bytes is not None:
            policy = ChunkPolicy(records=req.chunk_records, bytes=req.chunk_bytes)
        else:
            policy = self._chunking
        name = readable(req.name or req.path.name)
        try:
            ident = await asyncio.to_thread(identify, req.path)
        except (FileNotFoundError, PimIngestError):
            raise
        except OSError as exc:  # EACCES, EISDIR...: the file cannot be read; say so, not "internal error"
            raise SourceError(f"{name}: cannot read the file: {exc.strerror or exc}") from None
        async with self._submit_lock:
            existing = None if req.re_ingestion else await self._store.latest_for_file(ident.file_id)
            if existing is not None:
                if existing.status == Status.COMPLETED:
                    return Submitted(existing, created=False)
                if existing.id in self._tasks:
                    return Submitted(existing, created=False)
                # Not running (failed, or queued by a crash): it resumes, reading this copy, which has
                # the same bytes (same file_id). The copy it read before may be gone by now.
                if await self._store.adopt_copy(existing.id, str(req.path), name, ident.size, ident.mtime_ns):
                    try:
                        return Submitted(await self._requeue(existing), created=False, adopted=True)
                    except NotAllowed:
                        pass  # cancelled meanwhile: cancelling is final, so this copy starts a new ingestion
            ing = await self._store.create_ingestion(
                file_id=ident.file_id,
                path=str(req.path),
                file_name=name,
                size=ident.size,
                mtime_ns=ident.mtime_ns,
                format=fmt,
                chunk_records=policy.records,
                chunk_bytes=policy.bytes,
                preflight=self._delivery.preflight,
                source=req.source,
                options=options,
            )
        log.info(
            "ingestion queued",
            ingestion_id=ing.id,
            file_id=ing.file_id,
            file=ing.file_name,
            format=fmt,
            chunking=policy.describe(),
            source=req.source,
        )
        self._schedule(ing.id, resumed=False)
        return Submitted(ing, created=True)

    async def resume(self, ingestion_id: str) -> Ingestion:
        if self.draining:
            raise Draining("the daemon is shutting down; try again after it restarts")
        async with self._submit_lock:
            ing = await self._get(ingestion_id)
            if ing.id in self._tasks and ing.status in UNFINISHED:
                return ing
            return await self._requeue(ing)

    async def cancel(self, ingestion_id: str) -> Ingestion:
        """Cancel for good. The store decides, atomically: a cancel wins over a resume or a
        same-bytes submit that comes after it, and loses to a completion already claimed."""
        await self._get(ingestion_id)
        if not await self._store.transition(ingestion_id, Status.CANCELLED, "cancelled by the operator"):
            ing = await self._get(ingestion_id)
            if ing.status not in (Status.COMPLETED, Status.CANCELLED) and ing.completing:
                raise NotAllowed(
                    f"ingestion {ingestion_id}: its completion was already sent to PIM-Core; it can no longer be cancelled"
                )
            raise NotAllowed(f"ingestion {ingestion_id} is already {ing.status}")
        task = self._tasks.get(ingestion_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._discard_spool(ingestion_id)
        log.info("ingestion cancelled", ingestion_id=ingestion_id)
        await self._ended(ingestion_id)
        return await self._get(ingestion_id)

    async def handle_ack(
        self, ingestion_id: str, n: int, checksum: str, status: str, reason: str, retryable: bool
    ) -> AckOutcome:
        """Commit (or note) a callback, then wake the waiting chunk loop, if any."""
        key = (ingestion_id, n)
        if status == "ack":
            outcome = await self._store.commit_ack(ingestion_id, n, checksum)
            crash_point("ack.after-commit")
            if outcome in ("accepted", "duplicate"):
                self._acks.resolve(key, AckResult("ack"))
        else:
            outcome = await self._store.record_reject(ingestion_id, n, checksum, reason)
            if outcome == "accepted":
                self._acks.resolve(key, AckResult("reject", reason, retryable))
        return outcome

    # ---- scheduling -----------------------------------------------------------------

    async def _get(self, ingestion_id: str) -> Ingestion:
        ing = await self._store.get(ingestion_id)
        if ing is None:
            raise UnknownIngestion(f"no ingestion {ingestion_id}")
        return ing

    async def _requeue(self, ing: Ingestion) -> Ingestion:
        if not await self._store.transition(ing.id, Status.QUEUED):
            current = await self._get(ing.id)
            raise NotAllowed(f"ingestion {ing.id} is {current.status}; only failed or stalled ingestions resume")
        self._schedule(ing.id, resumed=True)
        return await self._get(ing.id)

    def _schedule(self, ingestion_id: str, *, resumed: bool) -> None:
        if ingestion_id in self._tasks:
            return
        task = asyncio.create_task(self._run(ingestion_id, resumed), name=f"ingestion-{ingestion_id}")
        self._tasks[ingestion_id] = task
        task.add_done_callback(
            lambda t: self._tasks.pop(ingestion_id, None) if self._tasks.get(ingestion_id) is t else None
        )

    async def _run(self, ingestion_id: str, resumed: bool) -> None:
        async with self._slots:
            if self.draining:
                return
            ing = await self._get(ingestion_id)
            if not await self._store.transition(ing.id, Status.RUNNING):
                return  # cancelled (or finished) while it waited for a slot
            with structlog.contextvars.bound_contextvars(ingestion_id=ing.id, file_id=ing.file_id, file=ing.file_name):
                self._rates[ing.id] = (time.monotonic(), (await self._store.progress(ing.id))[1])
                try:
                    await self._ingest(ing, resumed)
                except Paused:
                    log.info("ingestion paused for shutdown; it resumes at the next start")
                except PimIngestError as exc:
                    await self._fail(ing, exc)
                except Exception as exc:
                    log.exception("internal error")
                    await self._fail(ing, exc)
                finally:
                    self._rates.pop(ing.id, None)
                if (await self._get(ing.id)).status in (Status.COMPLETED, Status.FAILED):
                    await self._ended(ing.id)

    async def _fail(self, ing: Ingestion, exc: BaseException) -> None:
        message = str(exc) if isinstance(exc, PimIngestError) else f"internal error: {type(exc).__name__}: {exc}"
        if not await self._store.transition(ing.id, Status.FAILED, message):
            return  # cancelled meanwhile: the cancel stands
        if not isinstance(exc, DeliveryError | StateError):
            await self._discard_spool(ing.id)  # a bad or changed file, or a damaged spool: spool again on resume
        log.error("ingestion failed", error=message)

    async def _discard_spool(self, ingestion_id: str) -> None:
        await asyncio.to_thread(spool.remove, spool.spool_file(self._spool_dir, ingestion_id))
        await self._store.drop_spool(ingestion_id)

    # ---- one ingestion --------------------------------------------------------------

    async def _ingest(self, ing: Ingestion, resumed: bool) -> None:
        started = time.monotonic()
        path = Path(ing.path)
        await self._check_file(ing, full=resumed)
        log.info("ingestion started", resumed=resumed, preflight=ing.preflight)
        if ing.preflight:
            ing = await self._ensure_spool(ing, path)
            await self._deliver_spooled(ing)
        else:
            await self._deliver_streaming(ing, path)
        # The file may have grown or changed since it was read (a writer that paused longer than
        # the inbox's settle time): then what was delivered is not the file, and it must not complete.
        await self._check_file(ing, full=True)
        if not await self._store.claim_completion(ing.id):
            return  # cancelled meanwhile
        crash_point("engine.before-complete")
        await self._complete(ing)
        crash_point("engine.after-complete")
        await self._store.transition(ing.id, Status.COMPLETED)
        await self._discard_spool(ing.id)
        chunks, records = await self._store.progress(ing.id)
        elapsed = time.monotonic() - started
        log.info(
            "ingestion completed",
            chunks=chunks,
            records=records,
            seconds=round(elapsed, 3),
            records_per_second=round(records / elapsed, 1) if elapsed > 0 else None,
        )

    async def _check_file(self, ing: Ingestion, *, full: bool) -> None:
        """The file is still the one submitted: same size and mtime (and, when ``full``, same bytes)."""
        path = Path(ing.path)
        try:
            now = await asyncio.to_thread(stat_identity, path)
        except FileNotFoundError:
            raise FileChangedError(
                f"{ing.file_name}: the source file {readable(str(path))} is gone; nothing more is sent"
            ) from None
        _check_identity(ing, now)
        if full:
            ident = await asyncio.to_thread(identify, path)
            if ident.file_id != ing.file_id:
                raise FileChangedError(
                    f"{ing.file_name}: the source file's bytes changed ({ident.file_id} != {ing.file_id}); nothing more is sent"
                )

    def _policy(self, ing: Ingestion) -> ChunkPolicy:
        return ChunkPolicy(records=ing.chunk_records, bytes=ing.chunk_bytes)

    def _spec(self, ing: Ingestion) -> SourceSpec:
        return SourceSpec(ing.format, ing.options, self._max_record_bytes)

    async def _ensure_spool(self, ing: Ingestion, path: Path) -> Ingestion:
        target = spool.spool_file(self._spool_dir, ing.id)
        if ing.spooled and await asyncio.to_thread(target.is_file):
            return ing
        if ing.spooled:
            log.warning("spool file missing; spooling the file again", spool=str(target))
        log.info("spool pass started")
        await self._store.start_spool(ing.id)
        chunks = records = 0
        spec, policy, identity = self._spec(ing), self._policy(ing), (ing.size, ing.mtime_ns)
        page: list[SpooledChunk]
        async for page in iterate_in_thread(
            lambda stop: spool.write_spool(path, spec, policy, target, identity, stop, _PAGE)
        ):
            # Chunks sent before (by an earlier spool pass) must be cut identically.
            differ = await self._store.add_spooled(ing.id, page)
            if differ:
                raise StateError(f"chunk {differ[0]}: a new spool pass cut different bytes than were sent before")
            chunks, records = page[-1].n, records + sum(c.records for c in page)
        if not await self._store.finish_spool(ing.id, chunks, records):
            raise StateError(f"a new spool pass cut {chunks} chunks; more were sent before")
        log.info("spool pass done", chunks=chunks, records=records)
        return await self._get(ing.id)

    async def _deliver_spooled(self, ing: Ingestion) -> None:
        target = spool.spool_file(self._spool_dir, ing.id)
        fd = await asyncio.to_thread(os.open, target, os.O_RDONLY | os.O_CLOEXEC)
        # One chunk ahead: the next chunk is read and hashed (in a thread) while this one
        # waits for its ACK. Rows come a page at a time, so memory stays flat.
        pending: tuple[ChunkRow, asyncio.Task[tuple[bytes, bytes]]] | None = None
        try:
            async for row in self._store.chunk_pages(ing.id, _PAGE):
                if row.state == "acked":
                    continue
                previous, pending = pending, (row, asyncio.create_task(self._read_spooled(fd, row)))
                if previous is not None:
                    await self._deliver_spooled_chunk(ing, target, previous[0], await previous[1])
            if pending is not None:
                await self._deliver_spooled_chunk(ing, target, pending[0], await pending[1])
        finally:
            if pending is not None:  # let a read in flight finish before its fd is closed
                await asyncio.gather(pending[1], return_exceptions=True)
            os.close(fd)

    @staticmethod
    async def _read_spooled(fd: int, row: ChunkRow) -> tuple[bytes, bytes]:
        assert row.spool_offset is not None and row.spool_length is not None
        return await asyncio.to_thread(spool.read_chunk, fd, row.spool_offset, row.spool_length)

    async def _deliver_spooled_chunk(
        self, ing: Ingestion, target: Path, row: ChunkRow, read: tuple[bytes, bytes]
    ) -> None:
        body, digest = read
        if canonical.checksum(digest) != row.checksum or len(body) != row.spool_length:
            raise SpoolError(
                f"chunk {row.n}: spool bytes at offset {row.spool_offset} do not match the recorded checksum"
                f" {row.checksum}; the spool file {target} is damaged. Resume re-spools from the source."
            )
        meta = ChunkHeaders(ing.id, ing.file_id, row.n, ing.total_chunks, row.records, row.first_record)
        await self._deliver_chunk(meta, body, digest)

    async def _deliver_streaming(self, ing: Ingestion, path: Path) -> None:
        """Parse and send in one pass. Reads stop at the size recorded at submit, and the file's
        identity is checked before each chunk is sent: bytes appended later are never read, and
        a file that changes stops the ingestion at the next chunk (the reader runs a few chunks
        ahead, so checking when a chunk is cut would be too early)."""
        known = _Known(self._store.chunk_pages(ing.id, _PAGE))
        spec, policy = self._spec(ing), self._policy(ing)
        chunks = 0
        records = 0
        chunk: Chunk
        async for chunk in iterate_in_thread(lambda stop: cut(read_records(path, spec, size=ing.size), policy)):
            _check_identity(ing, await asyncio.to_thread(stat_identity, path))
            chunks, records = chunk.n, records + chunk.records
            row = await known.get(chunk.n)
            if row is not None and row.checksum != chunk.checksum:
                raise FileChangedError(
                    f"chunk {chunk.n}: the file re-read on resume gives different bytes than were sent before"
                )
            if row is not None and row.state == "acked":
                continue
            meta = ChunkHeaders(ing.id, ing.file_id, chunk.n, None, chunk.records, chunk.first_record)
            await self._deliver_chunk(meta, chunk.body, chunk.digest)
        await known.close()
        await self._store.set_totals(ing.id, chunks, records)
        now = await asyncio.to_thread(stat_identity, path)
        if now != (ing.size, ing.mtime_ns):
            raise FileChangedError(f"{ing.file_name}: the file changed while it was being sent")

    async def _deliver_chunk(self, meta: ChunkHeaders, body: bytes, digest: bytes) -> None:
        """One chunk, up to max_attempts; returns once its ACK is committed."""
        if self.draining:
            raise Paused()
        checksum = canonical.checksum(digest)
        cfg = self._delivery
        m = self.metrics
        last_error = ""
        for attempt in range(1, cfg.max_attempts + 1):
            with structlog.contextvars.bound_contextvars(chunk=meta.n, attempt=attempt):
                fut = self._acks.expect((meta.ingestion_id, meta.n))
                try:
                    state = await self._store.mark_sent(
                        meta.ingestion_id, meta.n, meta.first_record, meta.records, checksum
                    )
                    if state == "acked":
                        m.acked(meta.records, None)
                        return
                    crash_point("engine.after-mark-sent")
                    if attempt > 1:
                        m.chunks_retried.inc()
                    m.chunks_sent.inc()
                    m.bytes_sent.inc(len(body))
                    sent_at = time.monotonic()
                    try:
                        await self._client.send_chunk(meta, body, digest)
                        crash_point("engine.after-post")
                        async with asyncio.timeout(cfg.ack_timeout):
                            result = await fut
                    except Rejected as exc:
                        m.chunks_rejected.inc()
                        raise Rejected(f"chunk {meta.n} (attempt {attempt}): {exc}", retryable=False) from None
                    except DeliveryError as exc:
                        last_error = str(exc)
                    except TimeoutError:
                        last_error = f"chunk {meta.n}: no ACK within {cfg.ack_timeout:g}s"
                    else:
                        if result.status == "ack":
                            m.acked(meta.records, time.monotonic() - sent_at)
                            log.debug("chunk acked", records=meta.records)
                            return
                        m.chunks_rejected.inc()
                        if not result.retryable:
                            raise Rejected(f"chunk {meta.n} rejected by PIM-Core: {result.reason}", retryable=False)
                        last_error = f"chunk {meta.n} rejected (retryable): {result.reason}"
                finally:
                    if not fut.done():
                        fut.cancel()
                log.warning("chunk attempt failed", error=last_error)
            if attempt < cfg.max_attempts:
                await self._backoff(attempt)
        raise DeliveryError(f"chunk {meta.n}: not ACKed after {cfg.max_attempts} attempts; last error: {last_error}")

    async def _backoff(self, attempt: int) -> None:
        """Exponential backoff with jitter; cut short (and stop) when the daemon drains."""
        delay = self._delivery.backoff * (2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
        try:
            async with asyncio.timeout(delay):
                await self._draining.wait()
        except TimeoutError:
            return
        raise Paused()

    async def _complete(self, ing: Ingestion) -> None:
        manifest = canonical.Manifest()  # a page of chunk rows at a time, never all of them
        async for row in self._store.chunk_pages(ing.id, _PAGE):
            if row.state == "acked":
                manifest.add(row.checksum)
        _, records = await self._store.progress(ing.id)
        payload: dict[str, object] = {
            "ingestion_id": ing.id,
            "file_id": ing.file_id,
            "file_name": ing.file_name,
            "chunks": manifest.count,
            "records": records,
            "manifest": manifest.value(),
        }
        cfg = self._delivery
        last_error = ""
        for attempt in range(1, cfg.max_attempts + 1):
            try:
                await self._client.send_complete(payload)
                return
            except Rejected:
                await self._store.release_completion(ing.id)  # refused outright: it did not complete
                raise
            except DeliveryError as exc:
                last_error = str(exc)
                log.warning("completion attempt failed", attempt=attempt, error=last_error)
            if attempt < cfg.max_attempts:
                await self._backoff(attempt)
        raise DeliveryError(f"completion not taken after {cfg.max_attempts} attempts; last error: {last_error}")


def _check_identity(ing: Ingestion, now: tuple[int, int]) -> None:
    if now != (ing.size, ing.mtime_ns):
        raise FileChangedError(
            f"{ing.file_name}: the source file changed since the ingestion began (it was {ing.size} bytes,"
            f" now {now[0]}; or its mtime changed); nothing more is sent. Drop it again once it is complete."
        )


class _Known:
    """Chunk rows recorded before, looked up in increasing order from a paged iterator."""

    def __init__(self, rows: AsyncIterator[ChunkRow]) -> None:
        self._rows = rows
        self._next: ChunkRow | None = None
        self._done = False

    async def get(self, n: int) -> ChunkRow | None:
        while not self._done and (self._next is None or self._next.n < n):
            try:
                self._next = await anext(self._rows)
            except StopAsyncIteration:
                self._done, self._next = True, None
        return self._next if self._next is not None and self._next.n == n else None

    async def close(self) -> None:
        aclose = getattr(self._rows, "aclose", None)
        if aclose is not None:
            await aclose()
