"""One ingestion's run, from its file to its completion.

For an ingestion: check the file, spool it (preflight) or stream it, then for
each chunk not ACKed yet: take a permit from the window (core/flow.py), register
the ACK Future, persist the attempt as sent, POST, await the ACK (committed by
the callback handler before it answers). With a window of one (protocol v1) one
chunk is in flight; with more (v2) up to that many, and under ``by_key`` never
two that share a key. When every chunk is ACKed: check the file again, claim the
completion, and send it. Retries go through core/retry.py; the scheduler decides
when a run starts and what its outcome means.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import structlog

from ..config import ChunkPolicy, DeliveryConfig
from ..crashpoints import crash_point
from ..errors import (
    Busy,
    DeliveryError,
    DiskFull,
    Duplicate,
    FileChangedError,
    NotAllowed,
    Paused,
    Rejected,
    SpoolError,
    StateError,
    TooEarly,
    UnknownIngestion,
)
from ..locations.local import open_source
from ..locations.remote import ObjectIdentity, Remote
from ..metrics import Metrics
from ..model import DUPLICATE, ChunkRow, Ingestion, SpoolPage, Status
from ..names import readable
from ..protocol import canonical
from ..protocol.acks import AckRegistry
from ..protocol.chunk import Chunk
from ..protocol.v1 import ChunkHeaders, PimcoreClient
from ..records import reject_file
from ..records import rules as record_rules
from ..records.pipeline import Pipeline
from ..sources import SourceSpec, read_records
from ..sources.fileid import FileIdentity, identify, stat_identity
from ..state import StateStore, lookups
from . import spool
from .chunking import cut
from .flow import Flow, KeyOrder, Lane
from .retry import RetryPolicy, TryAgain, pause, retrying
from .threads import iterate_in_thread

log = structlog.get_logger("pimingestd.core")

_PAGE = 1000  # chunk rows read or written per store call: memory stays flat in the number of chunks
_SPOOL_PASSES = 4  # spool passes at most while late ACKs keep changing the scope (see _ensure_spool)
_EARLY_BACKOFF = 0.02  # seconds before a chunk answered 425 goes again; doubling, at most 1 s


class Runner:
    """Runs ingestions; one instance serves every run the scheduler starts."""

    def __init__(
        self,
        store: StateStore,
        client: PimcoreClient,
        acks: AckRegistry,
        *,
        delivery: DeliveryConfig,
        spool_dir: Path,
        max_record_bytes: int,
        metrics: Metrics,
        draining: asyncio.Event,
        remote: Remote | None = None,
        progress_seconds: float = 30.0,
    ) -> None:
        self._remote = remote
        self._progress_every = progress_seconds
        self._last_progress: dict[str, float] = {}  # ingestion -> time.monotonic() of its last progress line
        self._retries: dict[str, int] = {}  # ingestion -> chunk attempts after the first, for its last line
        self._store = store
        self._client = client
        self._acks = acks
        self._delivery = delivery
        self._retry = RetryPolicy(delivery.max_attempts, delivery.backoff)
        self._spool_dir = spool_dir
        self.rejects_dir = spool_dir.parent / "rejects"  # reject files, one per ingestion that has any
        self._scopes: dict[str, asyncio.Lock] = {}  # delta scope -> its lock: one ingestion of a scope at a time
        self._max_record_bytes = max_record_bytes
        self.metrics = metrics
        self._draining = draining
        self.flow = Flow()  # the window toward PIM-Core, shared by every run

    async def _get(self, ingestion_id: str) -> Ingestion:
        ing = await self._store.get(ingestion_id)
        if ing is None:
            raise UnknownIngestion(f"no ingestion {ingestion_id}")
        return ing

    async def discard_spool(self, ingestion_id: str) -> None:
        await asyncio.to_thread(spool.remove, spool.spool_file(self._spool_dir, ingestion_id))
        await self._store.drop_spool(ingestion_id)

    async def run(self, ing: Ingestion, resumed: bool) -> None:
        """Check the file, spool it (preflight) or stream it, deliver every chunk after the last ACKed
        one, write the reject file, check the file again, claim and send the completion. Raises Paused when
        the daemon drains. Ingestions of one delta scope run one after another (in the order they asked)."""
        try:
            await self._in_scope_order(ing, resumed)
        finally:  # failed, paused or cancelled as well: nothing kept per ingestion outlives its run
            self._last_progress.pop(ing.id, None)
            self._retries.pop(ing.id, None)

    async def _in_scope_order(self, ing: Ingestion, resumed: bool) -> None:
        if not ing.scope:
            return await self._run(ing, resumed)
        lock = self._scopes.setdefault(ing.scope, asyncio.Lock())
        try:
            async with lock:
                await self._run(await self._get(ing.id), resumed)
        finally:
            if not lock.locked() and self._scopes.get(ing.scope) is lock:
                del self._scopes[ing.scope]

    def reject_file(self, ing: Ingestion) -> Path:
        return self.rejects_dir / f"{ing.id}{reject_file.suffix(ing.format, ing.file_name)}"

    async def superseded(self, ing: Ingestion) -> NotAllowed | None:
        """Why ``ing`` must not run: an ingestion of its delta scope submitted after it delivered records (its
        spool, or a new spool pass, would send older values, and tombstones for keys the newer file holds).
        A delta computed again is no way out: chunks already ACKed must be cut identically."""
        newer = await self._store.newer_delivered(ing.id) if ing.scope else None
        if newer is None:
            return None
        what = "completed" if newer.status == Status.COMPLETED else f"{newer.status}, with chunks ACKed"
        return NotAllowed(
            f"ingestion {ing.id} ({ing.file_name}) cannot run: ingestion {newer.id} ({newer.file_name}) of the same"
            f" delta scope {ing.scope!r}, submitted after it, delivered records since ({what}); this one would send"
            " older values and deletions over them. Drop the file again if its content is still wanted: a new"
            " ingestion compares it with what PIM-Core holds now"
        )

    async def _run(self, ing: Ingestion, resumed: bool) -> None:
        path = Path(ing.path)
        rules = record_rules.stored(ing.rules)
        stale = await self.superseded(ing)  # checked under the scope's lock: the newer one may just have ended
        if stale is not None:
            raise stale
        await self._check_file(ing, full=resumed)
        # Lifecycle events carry a stable ``phase`` (started, spooled, completed) and the completed one
        # the durations measured here: tools (the bench) read those fields, never the wording.
        started = time.monotonic()
        log.info("ingestion started", phase="started", resumed=resumed, preflight=ing.preflight)
        spooled = started
        # A remote object is always spooled (nothing is sent before it is read whole), and so is a file with
        # record rules (validation and delta decide over the whole file before anything is sent). A window
        # without them streams too (preflight = false): its chunks in flight keep their bodies until ACKed.
        hashing: asyncio.Task[FileIdentity] | None = None
        try:
            if ing.preflight or ing.remote or rules.active:
                ing = await self._ensure_spool(ing, path, rules)
                spooled = time.monotonic()
                hashing = None if ing.remote else asyncio.create_task(asyncio.to_thread(identify, path))
                await self._deliver_spooled(ing)
            else:
                hashing = asyncio.create_task(asyncio.to_thread(identify, path))
                await self._deliver_streaming(ing, path)
            ing = await self._get(ing.id)
            if ing.records_rejected:
                await self._reject_report(ing)
            # The file may have grown or changed since it was read (a writer that paused longer than
            # the inbox's settle time): then what was delivered is not the file, and it must not complete.
            # Its bytes are hashed again while the chunks are delivered (hashing holds no GIL: it takes the
            # core that delivery leaves idle), and its size and mtime are looked at once more after that.
            # (A remote object was checked when its spool pass ended: the spool holds that version.)
            if hashing is not None:
                await self._check_file(ing, full=True, hashing=hashing)
        finally:
            if hashing is not None and not hashing.done():
                hashing.cancel()  # the run failed or paused: the thread's result is not wanted
                await asyncio.gather(hashing, return_exceptions=True)
        if not await self._store.claim_completion(ing.id):
            return  # cancelled meanwhile
        crash_point("engine.before-complete")
        await self._complete(ing)
        crash_point("engine.after-complete")
        await self._store.transition(ing.id, Status.COMPLETED)
        await self.discard_spool(ing.id)
        chunks, records = await self._store.progress(ing.id)
        ended = time.monotonic()
        elapsed = ended - started
        log.info(
            "ingestion completed",
            phase="completed",
            chunks=chunks,
            records=records,
            seconds=round(elapsed, 3),
            records_per_second=round(records / elapsed, 1) if elapsed > 0 else None,
            retries=self._retries.pop(ing.id, 0),  # every failed attempt, also those whose lines were throttled
            spool_seconds=round(spooled - started, 6),
            delivery_seconds=round(ended - spooled, 6),
            total_seconds=round(elapsed, 6),
            **_record_counts(await self._get(ing.id)),
        )

    async def _check_file(
        self, ing: Ingestion, *, full: bool, hashing: asyncio.Task[FileIdentity] | None = None
    ) -> None:
        """The file is still the one submitted: same size and mtime (and, when ``full``, same bytes: hashed
        now, or by ``hashing`` when given, which was started earlier). A remote object: same size and
        version, unless its spool is complete (it is not read again)."""
        if ing.remote:
            if not (ing.spooled and await asyncio.to_thread(spool.spool_file(self._spool_dir, ing.id).is_file)):
                remote = self._need_remote(ing)
                await asyncio.to_thread(remote.check_unchanged, ing.path, ObjectIdentity(ing.size, ing.version))
            return
        path = Path(ing.path)
        gone = FileChangedError(f"{ing.file_name}: the source file {readable(str(path))} is gone; nothing more is sent")
        try:
            now = await asyncio.to_thread(stat_identity, path)
        except FileNotFoundError:
            raise gone from None
        _check_identity(ing, now)
        if full:
            try:
                ident = await (hashing or asyncio.to_thread(identify, path))
            except FileNotFoundError:
                raise gone from None
            if ident.file_id != ing.file_id:
                raise FileChangedError(
                    f"{ing.file_name}: the source file's bytes changed ({ident.file_id} != {ing.file_id}); nothing more is sent"
                )

    def _policy(self, ing: Ingestion) -> ChunkPolicy:
        return ChunkPolicy(records=ing.chunk_records, bytes=ing.chunk_bytes)

    def _spec(self, ing: Ingestion) -> SourceSpec:
        return SourceSpec(ing.format, ing.options, self._max_record_bytes)

    async def _ensure_spool(self, ing: Ingestion, path: Path, rules: record_rules.RecordRules) -> Ingestion:
        """Spool the file unless its spool is there. A pass during which a late ACK (of a failed ingestion of
        the scope) changed the scope's versions decided on versions that are no longer PIM-Core's: it is done
        again (nothing was sent from it yet), up to a few times."""
        target = spool.spool_file(self._spool_dir, ing.id)
        if ing.spooled and await asyncio.to_thread(target.is_file):
            return ing
        if ing.spooled:
            log.warning("spool file missing; spooling the file again", spool=str(target))
        for _ in range(_SPOOL_PASSES - 1):
            late = self._store.late_acks(ing.scope) if rules.versions else 0
            done = await self._spool_pass(ing, path, rules, target)
            if not rules.versions or (self._store.late_acks(ing.scope) == late and late % 2 == 0):
                return done  # no late ACK committed during the pass, nor was one under way at its start
            log.warning(
                "late ACKs of another ingestion changed the delta scope during the spool pass; spooling again",
                delta_scope=ing.scope,
            )
            ing = done
        return await self._spool_pass(ing, path, rules, target)  # the last try stands (the next full file heals)

    async def _spool_pass(self, ing: Ingestion, path: Path, rules: record_rules.RecordRules, target: Path) -> Ingestion:
        log.info("spool pass started")
        await self._store.start_spool(ing.id)
        chunks = records = 0
        spec, policy, identity = self._spec(ing), self._policy(ing), (ing.size, ing.mtime_ns)
        if rules.active:  # the pipeline takes a fast path's parsed objects too: a key without a second parse
            spec = dataclasses.replace(spec, exact_values=True)
        source: spool.RemoteSource | None = None
        if ing.remote:
            stage = self._spool_dir / f"{ing.id}.stage"
            ident = ObjectIdentity(ing.size, ing.version)
            source = spool.RemoteSource(self._need_remote(ing), ing.path, ident, spec, stage, ing.file_name)
            records_of, finish = source.records, source.finish
        else:
            records_of, finish = (
                lambda: spool.local_records(path, spec, identity),
                spool.local_unchanged(path, identity),
            )
        # A scratch database beside the spool: the keys held (unique_key), a full file's new keys as PIM-Core
        # compares them (deletions); on disk, so that memory stays flat whatever the file's size.
        seen = self._spool_dir / f"{ing.id}.seen" if rules.unique_key or rules.deletions != "off" else None
        view: lookups.ScopeView | None = None
        if rules.versions:
            writer = await asyncio.to_thread(lookups.writer_of, self._store.path, ing.id)
            view = await asyncio.to_thread(lookups.ScopeView, self._store.path, ing.scope, writer, seen)

        def items() -> Iterator[Chunk | Any]:
            if not rules.active:
                return cut(records_of(), policy)
            pipeline = Pipeline(
                rules,
                policy,
                view,
                ingestion_id=ing.id,
                name=ing.file_name,
                full_file=not record_rules.is_reject_file(ing.file_name),
                dedup=ing.dedup,
            )
            return pipeline.run(records_of())

        page: SpoolPage
        try:
            async for page in iterate_in_thread(lambda stop: spool.write_spool(items(), target, finish, stop, _PAGE)):
                # Chunks sent before (by an earlier spool pass) must be cut identically.
                differ = await self._store.add_spooled(ing.id, page)
                if differ:
                    raise StateError(f"chunk {differ[0]}: a new spool pass cut different bytes than were sent before")
                if page.chunks:
                    chunks, records = page.chunks[-1].n, records + sum(c.records for c in page.chunks)
                if page.invalid:
                    self.metrics.records_rejected.labels(by="validation").inc(len(page.invalid))
                if page.unchanged:
                    self.metrics.records_unchanged.inc(page.unchanged)
        except DiskFull as exc:
            self._store.conditions.full(exc.area, str(exc))
            raise
        finally:
            if view is not None:
                await asyncio.to_thread(view.close)
            if seen is not None:
                await asyncio.to_thread(seen.unlink, missing_ok=True)
        self._store.conditions.cleared("spool")
        if source is not None:
            await self._identified(ing, source)
        if not await self._store.finish_spool(ing.id, chunks, records):
            raise StateError(f"a new spool pass cut {chunks} chunks; more were sent before")
        ing = await self._get(ing.id)
        log.info(
            "spool pass done",
            phase="spooled",
            chunks=chunks,
            records=records,
            **_record_counts(ing),
        )
        return ing

    async def _reject_report(self, ing: Ingestion) -> None:
        """Write the reject file; one that cannot be written is logged and the run goes on. It is a report of
        what PIM-Core refused, kept in the state too (GET .../rejects says it is missing): every chunk is ACKed
        by now, and nothing about the report may keep the completion from being sent."""
        try:
            await self._write_rejects(ing)
        except Paused:
            raise
        except Exception as exc:
            log.error(
                "reject file not written; the ingestion completes without it",
                error=f"{type(exc).__name__}: {exc}",
                path=str(self.reject_file(ing)),
                records_rejected=ing.records_rejected,
            )

    async def _write_rejects(self, ing: Ingestion) -> None:
        """Write the reject file (again, after a crash: it is replaced whole) from a second read of the source,
        checked against the bytes that were delivered (spool.SecondRead). If the source was replaced since, no
        reject file is written (the refused records are not those of the source now), a warning says so, and
        the run goes on: every chunk is ACKed, and the completion must be sent."""
        spec = SourceSpec(ing.format, _raw_options(ing), self._max_record_bytes)
        target = self.reject_file(ing)
        pending = target.with_name(f"{ing.id}.unverified{target.suffix}")  # renamed once the source is checked
        src = spool.SecondRead(
            ing.path,
            size=ing.size,
            file_id=ing.file_id,
            spec=spec,
            name=ing.file_name,
            remote=self._need_remote(ing) if ing.remote else None,
            version=ing.version,
            stage_path=self._spool_dir / f"{ing.id}.stage",
        )
        options = dict(ing.options)
        if ing.format == "csv":

            def head() -> reject_file.CsvHead:
                """The delimiter the reader took and the source's BOM, which the reject file keeps. This reads
                the header line once more; a source changed since delivery is caught by ``src.verify`` before
                the file is kept."""
                fh: BinaryIO
                if ing.remote:
                    ident = ObjectIdentity(ing.size, ing.version)
                    fh = io.BufferedReader(self._need_remote(ing).open(ing.path, ident), 1 << 16)
                else:
                    fh = open_source(Path(ing.path), ing.size)
                with fh:
                    return reject_file.csv_head(fh, ing.file_name, options.get("encoding", "utf-8"))

            found = await asyncio.to_thread(head)
            if options.get("delimiter", "auto") == "auto":
                options["delimiter"] = found.delimiter
            options["bom"] = found.bom

        def write() -> int:
            try:
                written = reject_file.write(
                    src.records(), lookups.rejects(self._store.path, ing.id), ing.format, options, pending
                )
                src.verify()
                os.replace(pending, target)
                return written
            finally:
                src.close()
                pending.unlink(missing_ok=True)

        try:
            written = await asyncio.to_thread(write)
        except FileChangedError as exc:
            log.warning("reject file not written: the source changed after delivery", error=str(exc))
            return
        log.info("reject file written", records=written, path=str(target))

    async def _identified(self, ing: Ingestion, source: spool.RemoteSource) -> None:
        """A remote object was read whole: record its file_id (a resume that re-reads must find the same
        bytes), and end here if those bytes were ingested already (unless re_ingestion was asked for)."""
        file_id = source.file_id
        if file_id is None:
            raise StateError("the spool pass ended without reading the whole object")
        if ing.file_id and ing.file_id != file_id:
            raise FileChangedError(
                f"{ing.file_name}: the remote object's bytes changed ({file_id} != {ing.file_id}); nothing more is sent"
            )
        if not ing.file_id:
            await self._store.set_file_id(ing.id, file_id)
            structlog.contextvars.bind_contextvars(file_id=file_id)  # the run's later events carry it
            log.info("remote object identified", file_id=file_id)
        if ing.dedup:
            other = await self._store.latest_for_file(file_id, exclude=ing.id)
            if other is not None and other.status in (Status.COMPLETED, Status.QUEUED, Status.RUNNING):
                raise Duplicate(
                    f"{DUPLICATE}{other.id} ({other.status}): the same bytes ({file_id}); nothing is sent."
                    " Submit with re_ingestion = true to send them again"
                )

    def _need_remote(self, ing: Ingestion) -> Remote:
        if self._remote is None:
            raise StateError(f"{ing.file_name}: a remote object, but this daemon has no [remote] configuration")
        return self._remote

    async def _deliver_spooled(self, ing: Ingestion) -> None:
        """Send every chunk not ACKed yet, up to the window at once (one: protocol v1). Under ``by_key`` a chunk
        that shares a key with an earlier chunk not yet ACKed waits for it (core/flow.py's KeyOrder), and up
        to a window's worth of later chunks without a shared key may go past it; otherwise chunks go in
        chunk order. A chunk's spool bytes are read (in a thread) while it waits for a permit. The first
        chunk that fails ends the delivery: the others are cancelled (their state stays resumable), or,
        when the daemon drains, allowed to finish."""
        rules = record_rules.stored(ing.rules)
        target = spool.spool_file(self._spool_dir, ing.id)
        fd = await asyncio.to_thread(os.open, target, os.O_RDONLY | os.O_CLOEXEC)
        lane = Lane(rules.window)
        by_key = rules.order == "by_key" and rules.window > 1
        order = KeyOrder()
        waiting: deque[tuple[ChunkRow, frozenset[int]]] = deque()  # pulled, not started (by_key: held back)
        flight = _InFlight()
        read: asyncio.Task[tuple[bytes, bytes]] | None = None

        async def send(row: ChunkRow, read: asyncio.Task[tuple[bytes, bytes]], held: frozenset[int]) -> None:
            lane.sending.add(row.n)
            try:
                await self._deliver_spooled_chunk(ing, rules, lane, (fd, target), row, await read)
            finally:
                lane.sending.discard(row.n)
                order.leave(row.n, held)
                self.flow.release(lane)

        async def start_free(block: bool) -> None:
            """Start the waiting chunks that are free, first first. Without ``block``, return when none is
            free and there is room to look further ahead; with it, until none waits."""
            nonlocal read
            while waiting:
                at = next((i for i, (row, held) in enumerate(waiting) if order.free(row.n, held)), None)
                if at is None:
                    if not block and len(waiting) < lane.wanted:
                        return
                    lane.changed.clear()
                    await lane.changed.wait()
                    flight.check()
                    continue
                row, held = waiting[at]
                del waiting[at]
                read = asyncio.create_task(self._read_spooled(fd, row))
                await self._permit(lane, flight)
                flight.start(send(row, read, held))
                read = None

        try:
            async for row in self._store.chunk_pages(ing.id, _PAGE):
                if row.state == "acked":
                    continue
                flight.check()
                held = (
                    frozenset(hash(k) for k in await self._store.chunk_keys(ing.id, row.n)) if by_key else frozenset()
                )
                order.join(row.n, held)
                waiting.append((row, held))
                await start_free(block=False)
            await start_free(block=True)
            await flight.finish()
        except Paused:
            await flight.settle()  # the drain lets chunks in flight finish
            raise
        finally:
            await flight.cancel(*([read] if read is not None else []))  # no read in flight when its fd closes
            os.close(fd)

    @staticmethod
    async def _read_spooled(fd: int, row: ChunkRow) -> tuple[bytes, bytes]:
        assert row.spool_offset is not None and row.spool_length is not None
        return await asyncio.to_thread(spool.read_chunk, fd, row.spool_offset, row.spool_length)

    async def _deliver_spooled_chunk(
        self,
        ing: Ingestion,
        rules: record_rules.RecordRules,
        lane: Lane,
        spooled: tuple[int, Path],
        row: ChunkRow,
        read: tuple[bytes, bytes],
    ) -> None:
        fd, target = spooled

        def checked(read: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
            body, digest = read
            if canonical.checksum(digest) != row.checksum or len(body) != row.spool_length:
                raise SpoolError(
                    f"chunk {row.n}: spool bytes at offset {row.spool_offset} do not match the recorded checksum"
                    f" {row.checksum}; the spool file {target} is damaged. Resume re-spools from the source."
                )
            return read

        async def again() -> tuple[bytes, bytes]:
            return checked(await self._read_spooled(fd, row))

        body, digest = checked(read)
        meta = _headers(ing, rules, row.n, ing.total_chunks, row.records, row.first_record)
        await self._deliver_chunk(meta, _Bytes(body, digest, again), lane)

    async def _deliver_streaming(self, ing: Ingestion, path: Path) -> None:
        """Parse and send in one pass. Reads stop at the size recorded at submit, and the file's
        identity is checked before each chunk is sent: bytes appended later are never read, and
        a file that changes stops the ingestion at the next chunk (the reader runs a few chunks
        ahead, so checking when a chunk is cut would be too early)."""
        known = _Known(self._store.chunk_pages(ing.id, _PAGE))
        spec, policy = self._spec(ing), self._policy(ing)
        rules = record_rules.stored(ing.rules)
        lane = Lane(rules.window)  # (by_key needs a key, and keyed records are spooled: strict order here)
        flight = _InFlight()
        chunks = 0
        records = 0

        async def send(meta: ChunkHeaders, chunk: Chunk) -> None:
            lane.sending.add(meta.n)
            try:  # the body is kept until the ACK: there is no spool to read it again from
                await self._deliver_chunk(meta, _Bytes(chunk.body, chunk.digest), lane)
            finally:
                lane.sending.discard(meta.n)
                self.flow.release(lane)

        chunk: Chunk
        try:
            async for chunk in iterate_in_thread(lambda stop: cut(read_records(path, spec, size=ing.size), policy)):
                flight.check()
                _check_identity(ing, await asyncio.to_thread(stat_identity, path))
                chunks, records = chunk.n, records + chunk.records
                row = await known.get(chunk.n)
                if row is not None and row.checksum != chunk.checksum:
                    raise FileChangedError(
                        f"chunk {chunk.n}: the file re-read on resume gives different bytes than were sent before"
                    )
                if row is not None and row.state == "acked":
                    continue
                meta = _headers(ing, rules, chunk.n, None, chunk.records, chunk.first_record)
                await self._permit(lane, flight)  # the window, counted in the shared budget
                flight.start(send(meta, chunk))
            await flight.finish()
        except Paused:
            await flight.settle()  # the drain lets chunks in flight finish
            raise
        finally:
            await flight.cancel()
        await known.close()
        await self._store.set_totals(ing.id, chunks, records)
        now = await asyncio.to_thread(stat_identity, path)
        if now != (ing.size, ing.mtime_ns):
            raise FileChangedError(f"{ing.file_name}: the file changed while it was being sent")

    async def _permit(self, lane: Lane, flight: _InFlight) -> None:
        """A permit for one more chunk of ``lane``; the first failure among its chunks in flight instead."""
        await self.flow.acquire(lane)
        if flight.failed:
            self.flow.release(lane)
            flight.check()

    async def _deliver_chunk(self, meta: ChunkHeaders, data: _Bytes, lane: Lane) -> None:
        """One chunk, up to max_attempts; returns once its ACK is committed."""
        if self._draining.is_set():
            raise Paused()
        checksum = canonical.checksum(data.digest)
        with structlog.contextvars.bound_contextvars(chunk=meta.n):
            await retrying(
                lambda attempt: self._chunk_attempt(meta, data, checksum, attempt, lane),
                self._retry,
                self._draining,
                what="chunk",
                exhausted=lambda n, last: f"chunk {meta.n}: not ACKed after {n} attempts; last error: {last}",
            )
        self._progress(meta)

    def _progress(self, meta: ChunkHeaders) -> None:
        """At info, one line per ingestion at most every ``[logging] progress_seconds`` (chunks are debug)."""
        now = time.monotonic()
        last = self._last_progress.setdefault(meta.ingestion_id, now)
        if now - last < self._progress_every:
            return
        self._last_progress[meta.ingestion_id] = now
        log.info(
            "ingestion progress",
            phase="delivering",
            chunks_done=meta.n,
            chunks_total=meta.total,
            records_done=meta.first_record + meta.records,
        )

    async def _chunk_attempt(self, meta: ChunkHeaders, data: _Bytes, checksum: str, attempt: int, lane: Lane) -> None:
        """Register the ACK Future, persist the attempt as sent, POST, await the ACK (committed by the
        callback handler before it answers). TryAgain for what another attempt may fix."""
        cfg, m = self._delivery, self.metrics
        with structlog.contextvars.bound_contextvars(attempt=attempt):
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
                try:
                    body = await data.get()
                    m.bytes_sent.inc(len(body))
                    sent_at = await self._post(meta, body, data.digest, lane)
                    body = b""  # not held while the ACK is awaited (a window holds many): a retry reads it again
                    data.release()
                    crash_point("engine.after-post")
                    async with asyncio.timeout(cfg.ack_timeout):
                        result = await fut
                except Rejected as exc:
                    m.chunks_rejected.inc()
                    m.recent.failed(str(exc))
                    raise Rejected(f"chunk {meta.n} (attempt {attempt}): {exc}", retryable=False) from None
                except DeliveryError as exc:
                    m.recent.failed(str(exc))
                    raise TryAgain(str(exc)) from None
                except TimeoutError:
                    m.recent.failed(f"chunk {meta.n}: no ACK within {cfg.ack_timeout:g}s")
                    raise TryAgain(f"chunk {meta.n}: no ACK within {cfg.ack_timeout:g}s") from None
                if result.status == "ack":
                    latency = time.monotonic() - sent_at
                    m.acked(meta.records, latency)
                    self.flow.acked(latency)
                    log.debug("chunk acked", records=meta.records)
                    return
                m.chunks_rejected.inc()
                m.recent.failed(f"chunk {meta.n} rejected: {result.reason}")
                if not result.retryable:
                    raise Rejected(f"chunk {meta.n} rejected by PIM-Core: {result.reason}", retryable=False)
                raise TryAgain(f"chunk {meta.n} rejected (retryable): {result.reason}")
            finally:
                if not fut.done():
                    fut.cancel()

    async def _post(self, meta: ChunkHeaders, body: bytes, digest: bytes, lane: Lane) -> float:
        """POST the chunk until the receiver takes it; returns when (time.monotonic()) the POST that was taken
        went out. Neither a 425 (v2 strict: ahead of its turn; sent again after a short backoff) nor a 429 /
        503 with Retry-After (every send to the receiver pauses) counts as a failed attempt. A 425 is expected
        while an earlier chunk is still in flight (it may be retrying); with none left, 425s for longer than
        ack_timeout make one failed attempt. Anything else the client raises is the attempt's outcome."""
        early = 0
        first_early = 0.0
        while True:
            await self._receiver_ready()
            sent_at = time.monotonic()
            try:
                self.flow.answered(await self._client.send_chunk(meta, body, digest))
                return sent_at
            except TooEarly as exc:
                self.metrics.chunks_too_early.inc()
                early += 1
                first_early = 0.0 if lane.waits_on_earlier(meta.n) else (first_early or sent_at)
                if first_early and time.monotonic() - first_early > self._delivery.ack_timeout:
                    raise DeliveryError(f"{exc} (still ahead of its turn after {early} tries)") from None
                await pause(min(_EARLY_BACKOFF * 2 ** min(early - 1, 6), 1.0), self._draining)
            except Busy as exc:
                self.metrics.receiver_busy.labels(status=str(exc.status)).inc()
                log.info("PIM-Core asked to wait", status=exc.status, seconds=round(exc.seconds, 3))
                self.flow.busy(exc.seconds, exc.status)

    async def _receiver_ready(self) -> None:
        """Wait out a pause the receiver asked for (Retry-After); Paused when the daemon drains meanwhile."""
        while (left := self.flow.paused_for()) > 0:
            await pause(left, self._draining)

    async def _complete(self, ing: Ingestion) -> None:
        manifest = canonical.Manifest()  # a page of chunk rows at a time, never all of them
        self._retries[ing.id] = 0
        async for row in self._store.chunk_pages(ing.id, _PAGE):
            if row.state == "acked":
                manifest.add(row.checksum)
            self._retries[ing.id] += max(row.attempts - 1, 0)
        _, records = await self._store.progress(ing.id)
        await self._store.set_manifest(ing.id, manifest.value())  # kept after retention prunes the chunk rows
        ing = await self._get(ing.id)
        tombstones = ing.deletions if record_rules.stored(ing.rules).deletions == "send" else 0
        payload: dict[str, object] = {
            "ingestion_id": ing.id,
            "file_id": ing.file_id,
            "file_name": ing.file_name,
            "chunks": manifest.count,
            "records": records - tombstones,  # every record sent, refused ones included; tombstones apart
            "manifest": manifest.value(),
        }
        # v1.1: present only when not zero, so an exchange without them is byte for byte a v1 one.
        if ing.refused:
            payload["rejected"] = ing.refused
        if tombstones:
            payload["deleted"] = tombstones

        async def attempt(_: int) -> None:
            try:
                await self._client.send_complete(payload)
            except Rejected:
                await self._store.release_completion(ing.id)  # refused outright: it did not complete
                raise
            except DeliveryError as exc:
                raise TryAgain(str(exc)) from None

        await retrying(
            attempt,
            self._retry,
            self._draining,
            what="completion",
            exhausted=lambda n, last: f"completion not taken after {n} attempts; last error: {last}",
        )


def _record_counts(ing: Ingestion) -> dict[str, int]:
    """The record-level counts worth a log field (those not zero)."""
    counts = {
        "records_rejected": ing.records_rejected,
        "records_invalid": ing.records_invalid,
        "records_unchanged": ing.records_unchanged,
        "deletions": ing.deletions,
    }
    return {k: v for k, v in counts.items() if v}


def _raw_options(ing: Ingestion) -> dict[str, Any]:
    """The format options for reading records exactly as they are in the file (CSV: without ``types``)."""
    return {k: v for k, v in ing.options.items() if not (ing.format == "csv" and k == "types")}


def _sent_name(ing: Ingestion) -> str:
    """The file's own name (its last path segment; the inbox records the path inside the inbox), for
    PIM-Core's choice of applier."""
    return ing.file_name.rsplit("/", 1)[-1]


def _headers(
    ing: Ingestion, rules: record_rules.RecordRules, n: int, total: int | None, records: int, first_record: int
) -> ChunkHeaders:
    """A chunk's protocol headers: v1, or v2 with the ingestion's window and order (and key, under by_key)."""
    return ChunkHeaders(
        ing.id,
        ing.file_id,
        n,
        total,
        records,
        first_record,
        _sent_name(ing),
        protocol=2 if rules.window > 1 else 1,
        window=rules.window,
        order=rules.order,
        key=rules.key if rules.order == "by_key" else None,
    )


def _check_identity(ing: Ingestion, now: tuple[int, int]) -> None:
    if now != (ing.size, ing.mtime_ns):
        raise FileChangedError(
            f"{ing.file_name}: the source file changed since the ingestion began (it was {ing.size} bytes,"
            f" now {now[0]}; or its mtime changed); nothing more is sent. Drop it again once it is complete."
        )


class _InFlight:
    """The chunks of one delivery in flight (spooled or streamed): their tasks, and the first failure among
    them, which ends the delivery."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self.failed: list[BaseException] = []

    def check(self) -> None:
        if self.failed:
            raise self.failed[0]

    def start(self, send: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._run(send))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, send: Coroutine[Any, Any, None]) -> None:
        try:
            await send
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self.failed.append(exc)
            raise

    async def finish(self) -> None:
        """Until every chunk ended; the first failure as soon as there is one."""
        while self.tasks:
            await asyncio.wait(list(self.tasks), return_when=asyncio.FIRST_COMPLETED)
            self.check()

    async def settle(self) -> None:
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def cancel(self, *more: asyncio.Task[Any]) -> None:
        pending: list[asyncio.Task[Any]] = [*self.tasks, *more]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


class _Bytes:
    """A chunk's bytes, held only while a POST needs them when ``again`` can read them once more (from the
    spool): with a window, many chunks await their ACKs at once, and none of them needs its body meanwhile."""

    def __init__(
        self, body: bytes, digest: bytes, again: Callable[[], Awaitable[tuple[bytes, bytes]]] | None = None
    ) -> None:
        self._body: bytes | None = body
        self.digest = digest
        self._again = again

    async def get(self) -> bytes:
        if self._body is None:
            assert self._again is not None
            self._body, digest = await self._again()
            assert digest == self.digest
        return self._body

    def release(self) -> None:
        if self._again is not None:
            self._body = None


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
