"""Remote inboxes: ``[[remote.watch]]`` folders on SFTP and prefixes on S3, polled; each new object taken once.

Every ``poll_interval`` the folder is listed (not recursively: ``done_prefix``
and ``failed_prefix`` may lie inside it). An object is new when its (URL,
version, size) is not in the ledger, a table of the state database, so a
restart takes nothing twice, and a new version of an object (a corrected file
uploaded under the same name) is taken again. With done and failed prefixes,
an object put back after it was moved away is taken again too (the same
version is then answered by the ingestion that took it, and moved to done). An SFTP file must list the same
size and mtime on two polls in a row before it is taken, since it may still
be being written; an S3 object appears whole. Names that the local inbox
ignores (hidden files, ``*.part``, ``*.tmp``) are ignored here too. A name
with ``?`` or ``#`` (literal in S3 and SFTP, but the end of a URL's path) is
left in place with a warning: its URL would name another object.

When the ingestion ends, the object is moved when a prefix is configured, but
only if the object at its URL is still the version that was ingested (same
size and version; S3 moves that very version, SFTP checks the renamed file):
a new version uploaded under the same name meanwhile is left in place, said in
the log, and taken at the next poll as a new object. Otherwise it goes
completed (or ingested already by another ingestion) to ``done_prefix``,
failed or cancelled to ``failed_prefix`` with ``<name>.error.json`` beside it,
saying why. A rename on SFTP, a copy and delete on S3. A failed ingestion that
is resumed and completes later is moved on from ``failed_prefix`` to
``done_prefix``. Moves that a crash interrupted are done at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import structlog

from .. import redaction
from ..config import RemoteConfig, RemoteWatch
from ..core.scheduler import Scheduler
from ..errors import FileChangedError, PimIngestError
from ..locations.remote import Listed, ObjectIdentity, Remote, name_of, redact
from ..model import DUPLICATE, FINAL, Ingestion, IngestRequest, Status
from ..state import StateStore
from .profiles import glob_match

log = structlog.get_logger("pimingestd.intake")

IGNORE = (".*", "*.part", "*.tmp", "~$*", "*.error.json")


class RemoteInboxes:
    def __init__(self, cfg: RemoteConfig, scheduler: Scheduler, store: StateStore, remote: Remote) -> None:
        self._cfg = cfg
        self._scheduler = scheduler
        self._store = store
        self._remote = remote
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: dict[str, tuple[int, str]] = {}  # SFTP: url -> (size, version) at the last poll
        self._unnamable: set[str] = set()  # objects whose name a URL cannot carry, said once each
        scheduler.add_listener(self._ended)

    async def start(self) -> None:
        if not self._cfg.watch:
            return
        await self._finish_interrupted_moves()
        for i, watch in enumerate(self._cfg.watch):
            self._tasks.append(asyncio.create_task(self._poll_forever(watch), name=f"remote-watch-{i}"))
        log.info("watching remote inboxes", urls=[redact(w.url) for w in self._cfg.watch])

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def poll(self, watch: RemoteWatch) -> int:
        """One listing; returns how many objects were taken."""
        try:
            listed = await asyncio.to_thread(self._remote.list, watch.url)
        except PimIngestError as exc:
            log.warning("remote inbox not listed; trying again at the next poll", url=redact(watch.url), error=str(exc))
            return 0
        taken = 0
        for obj in sorted(listed, key=lambda o: o.url):
            if self._scheduler.draining:
                break
            if "?" in obj.url or "#" in obj.url:
                self._cannot_name(obj.url)
                continue
            name = name_of(obj.url)
            if any(glob_match(pattern, name) for pattern in IGNORE):
                continue
            ident = obj.identity
            seen = await self._store.remote_seen(obj.url, ident.version, ident.size)
            if seen is not None and (seen[1] == "taken" or not (watch.done_prefix or watch.failed_prefix)):
                continue  # under way, or ended and left in place; moved away and back again: taken again
            if obj.url.startswith("sftp://") and self._pending.get(obj.url) != (ident.size, ident.version):
                self._pending[obj.url] = (ident.size, ident.version)  # taken once it lists the same again
                continue
            self._pending.pop(obj.url, None)
            taken += await self._take(watch, obj)
        return taken

    def _cannot_name(self, url: str) -> None:
        """An S3 key or SFTP name holding ``?`` or ``#``: both are literal there, but end a URL's path, so its
        URL would name another object (``in/Export #2.jsonl`` is ``in/Export ``), to be read and moved in its
        place. It is left where it is, and said once."""
        if url in self._unnamable:
            return
        if len(self._unnamable) > 10_000:
            self._unnamable.clear()
        self._unnamable.add(url)
        base, _, name = url.rpartition("/")
        log.warning(
            "remote object left in place: its name cannot be named by a URL ('?' and '#' end a URL's path);"
            " rename it without them to have it taken",
            folder=redact(base + "/"),
            name=name,
        )

    async def _poll_forever(self, watch: RemoteWatch) -> None:
        while True:
            try:
                await self.poll(watch)
            except Exception:
                log.exception("remote inbox poll failed", url=redact(watch.url))
            await asyncio.sleep(watch.poll_interval)

    async def _take(self, watch: RemoteWatch, obj: Listed) -> int:
        ident = obj.identity
        req = IngestRequest(
            url=obj.url,
            format=watch.format,
            chunk_records=watch.chunk_records,
            chunk_bytes=watch.chunk_bytes,
            re_ingestion=watch.re_ingestion,
            source="remote_inbox",
            options=watch.options,
            rules=watch.rules,
            scope=watch.url,
        )
        try:
            submitted = await self._scheduler.submit(req)
        except PimIngestError as exc:  # refused before it began (an unknown format, say): it never will
            log.error("remote object refused", url=redact(obj.url), error=str(exc))
            await self._store.remember_remote(obj.url, ident.version, ident.size, None, "taken")
            await self._move(watch, obj.url, ident.version, ident.size, watch.failed_prefix, str(exc), None)
            return 0
        ing = submitted.ingestion
        await self._store.remember_remote(obj.url, ident.version, ident.size, ing.id, "taken")
        log.info("remote object taken", url=redact(obj.url), ingestion_id=ing.id, size=ident.size)
        if ing.status in FINAL or ing.status == Status.FAILED:
            await self._ended(ing)  # answered by an ingestion that ended before: move it now
        return 1

    def _watch_for(self, url: str) -> RemoteWatch | None:
        for watch in self._cfg.watch:
            base = watch.url.rstrip("/") + "/"
            failed = (watch.failed_prefix or "").rstrip("/") + "/"
            if url.startswith(base) or (watch.failed_prefix and url.startswith(failed)):
                return watch
        return None

    async def _ended(self, ing: Ingestion) -> None:
        if ing.source != "remote_inbox":  # a URL sent through the API stays where it is
            return
        watch = self._watch_for(ing.path)
        if watch is None:
            return
        if ing.status == Status.COMPLETED or (ing.error or "").startswith(DUPLICATE):
            await self._move(watch, ing.path, ing.version, ing.size, watch.done_prefix, None, ing.id)
        else:
            await self._move(watch, ing.path, ing.version, ing.size, watch.failed_prefix, ing.error, ing.id)

    async def _move(
        self,
        watch: RemoteWatch,
        url: str,
        version: str,
        size: int,
        prefix: str | None,
        error: str | None,
        ingestion_id: str | None,
    ) -> None:
        if prefix is None:
            await self._store.remember_remote(url, version, size, ingestion_id, "moved")
            return
        name = name_of(url)
        sources = [url]
        if watch.failed_prefix and prefix != watch.failed_prefix:  # resumed after it was moved to failed
            sources.append(watch.failed_prefix.rstrip("/") + "/" + name)
        last: PimIngestError | None = None
        for source in sources:
            # The object at the inbox URL is moved only if it is still the version that was ingested: an
            # exporter may have uploaded a corrected one under the same name meanwhile, which must be taken.
            # (The copy in failed_prefix is the daemon's own.) Without a known version (refused at submit),
            # whatever is there is moved.
            expected = ObjectIdentity(size, version) if source == url and ingestion_id is not None else None
            try:
                target = await asyncio.to_thread(self._remote.move, source, prefix, expected)
            except FileChangedError as exc:
                await self._store.remember_remote(url, version, size, ingestion_id, "moved")  # that one has ended
                log.warning(
                    "remote object not moved: a new version is at its URL; it is taken at the next poll",
                    url=redact(url),
                    ingestion_id=ingestion_id,
                    error=str(exc),
                )
                return
            except PimIngestError as exc:
                last = exc
                continue
            if error is not None:
                report = {"error": redaction.text(error), "ingestion_id": ingestion_id, "url": redact(url)}
                with contextlib.suppress(PimIngestError):
                    await asyncio.to_thread(self._write_report, target + ".error.json", report)
            await self._store.remember_remote(url, version, size, ingestion_id, "moved")
            log.info("remote object moved", url=redact(source), to=redact(target))
            return
        log.warning("remote object not moved", url=redact(url), to=redact(prefix), error=str(last))

    def _write_report(self, url: str, report: dict[str, Any]) -> None:
        self._remote.write(url, json.dumps(report, indent=2).encode() + b"\n")

    async def _finish_interrupted_moves(self) -> None:
        """Objects whose ingestion ended while their move did not happen (a crash in between)."""
        for url, _version, _size, ingestion_id in await self._store.remote_taken():
            if ingestion_id is None:
                continue
            ing = await self._store.get(ingestion_id)
            if ing is not None and (ing.status in FINAL or ing.status == Status.FAILED) and ing.path == url:
                await self._ended(ing)
