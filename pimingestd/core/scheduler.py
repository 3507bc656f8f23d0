"""The scheduler: which ingestions run, and the operations on them.

``Scheduler.submit`` is the single entry point for starting an ingestion (API
trigger, upload, inbox): it dedups by file_id, adopts a new copy of the same
bytes, or creates an ingestion, and schedules a run (core/ingestion.py) in a
slot. Resume and cancel change the status through the store's state machine;
ACK callbacks are committed here and wake the waiting chunk. On shutdown it
stops taking work, lets in-flight chunks finish within the drain, and cancels
what is left (its state stays resumable).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import structlog

from .. import redaction
from ..config import ChunkPolicy, DeliveryConfig
from ..crashpoints import crash_point
from ..errors import (
    DeliveryError,
    DiskFull,
    Draining,
    Duplicate,
    NotAllowed,
    Paused,
    PimIngestError,
    SourceError,
    StateError,
    UnknownIngestion,
    UrlNotAllowed,
)
from ..locations.remote import Remote, check_allowed, name_of, redact
from ..metrics import Metrics
from ..model import UNFINISHED, AckOutcome, Ingestion, IngestRequest, RecordReject, Status, Submitted
from ..names import readable
from ..protocol.acks import AckRegistry, AckResult
from ..protocol.v1 import PimcoreClient
from ..records import rules as record_rules
from ..records.rules import RecordRules
from ..sources import detect_format, format_options
from ..sources.fileid import identify
from ..state import StateStore
from .flow import Flow
from .ingestion import Runner

log = structlog.get_logger("pimingestd.core")


def _own_copy_intact(ing: Ingestion) -> bool:
    """Whether the local file an ingestion reads is still where it was recorded, as it was (size and mtime)
    (blocking: stat)."""
    if ing.remote:
        return False
    try:
        st = os.stat(ing.path)
    except OSError:
        return False
    return st.st_size == ing.size and st.st_mtime_ns == ing.mtime_ns


class Scheduler:
    """The ingestions: the task table, submit / resume / cancel, ACK callbacks, and the drain."""

    def __init__(
        self,
        store: StateStore,
        client: PimcoreClient,
        acks: AckRegistry,
        *,
        delivery: DeliveryConfig,
        chunking: ChunkPolicy,
        spool_dir: Path,
        max_concurrent: int,
        metrics: Metrics | None = None,
        max_record_bytes: int = 16 << 20,
        remote: Remote | None = None,
        progress_seconds: float = 30.0,
        window: int = 1,
        order: str = "strict",
    ) -> None:
        self._remote = remote
        self._window, self._order = window, order  # [pimcore]'s defaults for an ingestion's delivery rules
        self._store = store
        self._draining = asyncio.Event()
        self.metrics = metrics or Metrics()
        self._client = client
        self._acks = acks
        self._delivery = delivery
        self._chunking = chunking
        self._spool_dir = spool_dir
        self._max_record_bytes = max_record_bytes
        self._runner = Runner(
            store,
            client,
            acks,
            delivery=delivery,
            spool_dir=spool_dir,
            max_record_bytes=max_record_bytes,
            metrics=self.metrics,
            draining=self._draining,
            remote=remote,
            progress_seconds=progress_seconds,
        )
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._submit_lock = asyncio.Lock()

        self._listeners: list[Callable[[Ingestion], Awaitable[None]]] = []
        # Ingestions whose failure could not be written (the state disk was full): id -> the error shown.
        self.unrecorded: dict[str, str] = {}
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

    @property
    def flow(self) -> Flow:
        """The window toward PIM-Core (core/flow.py)."""
        return self._runner.flow

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

    def reject_file(self, ing: Ingestion) -> Path:
        """Where an ingestion's reject file is (once every chunk is ACKed)."""
        return self._runner.reject_file(ing)

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

    def run_started(self, ingestion_id: str) -> tuple[float, int] | None:
        """(time.monotonic() at the start of the current run, records ACKed then); None when not running."""
        return self._rates.get(ingestion_id)

    # ---- entry points -------------------------------------------------------------

    async def submit(self, req: IngestRequest) -> Submitted:
        """Start (or find) the ingestion of a file. The one way in for every source."""
        if self.draining:
            raise Draining("the daemon is shutting down; try again after it restarts")
        if req.url is not None:
            return await self._submit_remote(req, req.url)
        if req.path is None:
            raise SourceError("an ingestion needs a path or a url")
        path = req.path
        fmt = detect_format(path, req.format)
        options = format_options(fmt, req.options)
        policy = self._policy(req)
        name = readable(req.name or path.name)
        rules = self._rules(req, name)
        try:
            ident = await asyncio.to_thread(identify, path)
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
                if existing.status in UNFINISHED and await asyncio.to_thread(_own_copy_intact, existing):
                    # Queued or running when the daemon stopped, not resumed yet (the inbox admits the copies
                    # left in processing/ before the runs start again): it resumes from its own copy, and this
                    # one follows it. Adopting this one would leave that copy in processing/ with no ingestion.
                    return Submitted(existing, created=False)
                # Not running (failed, or queued by a crash): it resumes, reading this copy, which has
                # the same bytes (same file_id). The copy it read before may be gone by now. Unless a newer
                # file of its delta scope was delivered since: then this copy is a new ingestion, whose delta
                # is computed against what PIM-Core holds now.
                superseded = await self._runner.superseded(existing) is not None
                if not superseded and await self._store.adopt_copy(
                    existing.id, str(path), name, ident.size, ident.mtime_ns
                ):
                    try:
                        return Submitted(await self._requeue(existing), created=False, adopted=True)
                    except NotAllowed:
                        pass  # cancelled meanwhile: cancelling is final, so this copy starts a new ingestion
            ing = await self._store.create_ingestion(
                file_id=ident.file_id,
                path=str(path),
                file_name=name,
                size=ident.size,
                mtime_ns=ident.mtime_ns,
                format=fmt,
                chunk_records=policy.records,
                chunk_bytes=policy.bytes,
                preflight=self._delivery.preflight,
                source=req.source,
                options=options,
                dedup=not req.re_ingestion,  # also: delta sends everything again
                rules=rules.as_json(),
                scope=rules.delta_scope,
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

    def _rules(self, req: IngestRequest, name: str) -> RecordRules:
        """The request's record rules, checked, with the delta scope filled in (when records have a key) and
        [pimcore]'s window and order where the request does not set them."""
        rules = record_rules.parse(req.rules).with_delivery(self._window, self._order, req.rules)
        return rules.with_scope(req.scope or record_rules.default_scope(name))

    def _policy(self, req: IngestRequest) -> ChunkPolicy:
        if req.chunk_records is not None or req.chunk_bytes is not None:
            return ChunkPolicy(records=req.chunk_records, bytes=req.chunk_bytes)
        return self._chunking

    async def _submit_remote(self, req: IngestRequest, url: str) -> Submitted:
        """A remote object: its size and version are recorded now, its file_id during the spool pass
        (where the dedup by bytes happens). The same object at the same version is answered by the
        ingestion that took it, as the same bytes are for a local file."""
        remote = self._remote
        if remote is None:
            raise UrlNotAllowed(f"{redact(url)}: this daemon has no [remote] configuration; no URL is allowed")
        await asyncio.to_thread(check_allowed, url, remote.cfg.allowed_urls)
        fmt = detect_format(PurePosixPath(urlsplit(url).path), req.format)
        options = format_options(fmt, req.options)
        policy = self._policy(req)
        rules = self._rules(req, readable(req.name or name_of(url)))
        ident = await asyncio.to_thread(remote.stat, url)
        async with self._submit_lock:
            if not req.re_ingestion and ident.version:
                existing = await self._store.latest_for_object(url, ident.size, ident.version)
                if existing is not None and (existing.status == Status.COMPLETED or existing.id in self._tasks):
                    return Submitted(existing, created=False)
            ing = await self._store.create_ingestion(
                file_id="",
                path=url,
                file_name=readable(req.name or name_of(url)),
                size=ident.size,
                mtime_ns=0,
                format=fmt,
                chunk_records=policy.records,
                chunk_bytes=policy.bytes,
                preflight=True,
                source=req.source,
                options=options,
                version=ident.version,
                dedup=not req.re_ingestion,
                rules=rules.as_json(),
                scope=rules.delta_scope,
            )
        log.info(
            "ingestion queued",
            ingestion_id=ing.id,
            url=redact(url),
            size=ident.size,
            version=ident.version,
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
            if ing.id in self._tasks and ing.status in UNFINISHED and ing.id not in self.unrecorded:
                return ing
            stale = await self._runner.superseded(ing)
            if stale is not None and ing.status not in (Status.COMPLETED, Status.CANCELLED):
                raise stale
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
        await self._runner.discard_spool(ingestion_id)
        log.info("ingestion cancelled", ingestion_id=ingestion_id)
        await self._ended(ingestion_id)
        return await self._get(ingestion_id)

    async def handle_ack(
        self,
        ingestion_id: str,
        n: int,
        checksum: str,
        status: str,
        reason: str,
        retryable: bool,
        rejected: Sequence[RecordReject] = (),
    ) -> AckOutcome:
        """Commit (or note) a callback, then wake the waiting chunk loop, if any. An ACK's refused records
        commit with it."""
        key = (ingestion_id, n)
        if status == "ack":
            outcome = await self._store.commit_ack(ingestion_id, n, checksum, rejected)
            crash_point("ack.after-commit")
            if outcome == "accepted" and rejected:
                self.metrics.records_rejected.labels(by="pimcore").inc(len(rejected))
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
        if ing.id in self._tasks and ing.id in self.unrecorded:
            await asyncio.gather(self._tasks[ing.id], return_exceptions=True)  # its run is ending
        if not await self._store.transition(ing.id, Status.QUEUED):
            current = await self._get(ing.id)
            raise NotAllowed(f"ingestion {ing.id} is {current.status}; only failed or stalled ingestions resume")
        self.unrecorded.pop(ing.id, None)
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
        try:
            await self._run_in_slot(ingestion_id, resumed)
        except StateError as exc:  # the store itself failed outside the run (a full disk at its start or end)
            self.unrecorded.setdefault(ingestion_id, f"the run could not start or end: {exc}")
            log.error("ingestion run stopped by the state database", ingestion_id=ingestion_id, error=str(exc))

    async def _run_in_slot(self, ingestion_id: str, resumed: bool) -> None:
        async with self._slots:
            if self.draining:
                return
            ing = await self._get(ingestion_id)
            if not await self._store.transition(ing.id, Status.RUNNING):
                return  # cancelled (or finished) while it waited for a slot
            with structlog.contextvars.bound_contextvars(ingestion_id=ing.id, file_id=ing.file_id, file=ing.file_name):
                self._rates[ing.id] = (time.monotonic(), (await self._store.progress(ing.id))[1])
                try:
                    await self._runner.run(ing, resumed)
                except Paused:
                    log.info("ingestion paused for shutdown; it resumes at the next start")
                except Duplicate as exc:
                    if await self._store.transition(ing.id, Status.CANCELLED, str(exc)):
                        await self._runner.discard_spool(ing.id)
                        log.info("ingestion ended: the same bytes were ingested already", error=str(exc))
                        await self._ended(ing.id)
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
        message = redaction.text(message)  # a library's text may quote a presigned URL, signature and all
        try:
            if not await self._store.transition(ing.id, Status.FAILED, message):
                return  # cancelled meanwhile: the cancel stands
        except StateError as store_exc:
            # The failure cannot be written (the state disk is full, say). The ingestion stays "running" in
            # the database, so a restart resumes it; until then the API shows it failed, and a resume works.
            self.unrecorded[ing.id] = f"{message} (not recorded: {store_exc})"
            log.error("ingestion failed; its status could not be written", error=message, store_error=str(store_exc))
            return
        spool_full = isinstance(exc, DiskFull) and exc.area == "spool"
        if spool_full or not isinstance(exc, DeliveryError | StateError):
            await self._runner.discard_spool(ing.id)  # a bad or changed file, or a damaged spool: spool again on resume
        log.error("ingestion failed", error=message)
