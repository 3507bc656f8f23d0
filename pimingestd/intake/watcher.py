"""Watching the inbox folder: which files are complete, and when.

A file renamed into the inbox (inotify's IN_MOVED_TO) is complete and taken at
once. Any other file is taken once its size and mtime have held still for
``settle_seconds``: one settle loop decides that, fed by inotify events or, with
``watch = "poll"`` (or no inotify), by a scan every ``poll_interval``. Entries
are seen by lstat, so links, FIFOs and the like are handed over too (intake
refuses them). Ignored names (hidden files, partial uploads, lock files) are
never handed over.

A file still open for writing is never taken, however long it has held still
(writers.py): not when it settled, not when it was renamed in while its writer
still holds it. It is looked at again after another ``settle_seconds`` (and at
once when inotify reports its IN_CLOSE_WRITE). Where the lease cannot tell, the
watcher knows a writer holds the file from inotify: written (IN_MODIFY), or
created and opened at once (IN_CREATE, IN_OPEN: its creator, before a first
write), and not closed since (IN_CLOSE_WRITE). Polling has only the lease; on a network
filesystem neither sees another machine's writer, and only the writer can say
when a file is complete (write then rename, see docs/operate/inbox.md).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from ..config import InboxConfig
from ..locations.local import stat_identity
from ..names import readable
from .inotify import Inotify, InotifyUnavailable
from .writers import Writers, writers

log = structlog.get_logger("pimingestd.intake")

Signature = tuple[int, int]  # (size, mtime_ns)


class Watcher:
    def __init__(
        self, cfg: InboxConfig, take: Callable[[Path], Awaitable[None]], ignored: Callable[[str], bool]
    ) -> None:
        self.cfg = cfg
        self._take = take
        self._ignored = ignored
        self._pending: dict[Path, tuple[Signature, float]] = {}  # path -> (signature, unchanged since)
        self._written: set[Path] = set()  # inotify: written (IN_MODIFY) and not closed (IN_CLOSE_WRITE) since
        self._created: set[Path] = set()  # inotify: created (IN_CREATE), not opened nor looked at since
        self._waiting: set[Path] = set()  # held back because a writer has them open (logged once each)
        self._blind = ""  # why the lease could not tell (logged once)
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()  # set once events (or polling) cover the inbox
        self._tasks: set[asyncio.Task[Any]] = set()
        self.watching = "off"

    async def start(self) -> None:
        """Start watching; return once the watch is in place, so a file renamed in right after the
        start is taken at once, not found later by a rescan and made to wait out settle_seconds."""
        main = self._spawn(self._run(), "inbox-watch")
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({ready, main}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self) -> None:
        ino: Inotify | None = None
        if self.cfg.watch == "auto":
            try:
                ino = Inotify()
            except (InotifyUnavailable, OSError) as exc:
                log.warning("inotify unavailable; polling the inbox", error=str(exc))
        try:
            self._spawn(self._settle(), "inbox-settle")
            if ino is not None:
                self.watching = "inotify"
                await self._events(ino)
            else:
                self.watching = "poll"
                self._ready.set()
                await self._poll()
        finally:
            if ino is not None:
                ino.close()

    def _scan(self) -> dict[Path, Signature]:
        """Every entry that is not a real folder (files, and links, FIFOs... to be refused), by lstat."""
        found: dict[Path, Signature] = {}
        root = self.cfg.dir
        for current, dirs, files in os.walk(root):
            base = Path(current)
            links = [d for d in dirs if os.path.islink(base / d)]  # a link to a folder: refused like a file
            dirs[:] = [d for d in dirs if not self._ignored(d) and d not in links]
            for name in (*files, *links):
                path = base / name
                if self._ignored(path.relative_to(root).as_posix()):
                    continue
                try:
                    found[path] = stat_identity(path)
                except FileNotFoundError:
                    continue
        return found

    async def _poll(self) -> None:
        while True:
            found = await asyncio.to_thread(self._scan)
            for path in list(self._pending):
                if path not in found:
                    self._forget(path)
            now = time.monotonic()
            for path, signature in found.items():
                seen = self._pending.get(path)
                if seen is None or seen[0] != signature:
                    self._pending[path] = (signature, now)
            self._wake.set()
            await asyncio.sleep(self.cfg.poll_interval)

    async def _events(self, ino: Inotify) -> None:
        skip = frozenset(d for d in os.listdir(self.cfg.dir) if self._ignored(d))
        await asyncio.to_thread(ino.watch_tree, self.cfg.dir, skip)
        self._ready.set()
        await self._note_all()
        async for kind, path in ino.events():
            if kind == "overflow":
                self._written.clear()  # closes may be among the lost events: only the lease can tell now
                self._created.clear()
                await self._note_all()
                continue
            if not path.is_relative_to(self.cfg.dir):
                continue
            rel = path.relative_to(self.cfg.dir).as_posix()
            if self._ignored(rel):
                continue
            if kind == "dir":
                await self._note_all()
            elif kind == "moved_in":
                self._pending.pop(path, None)
                self._written.discard(path)
                self._created.discard(path)
                if not await asyncio.to_thread(os.path.isdir, path) or await asyncio.to_thread(os.path.islink, path):
                    if await self._held_open(path):
                        await self._note(path)  # renamed in by a writer that still holds it: wait for it
                    else:
                        await self._hand_over(path)
            elif kind == "opened":
                # Opened right after it was created: by its creator (`exporter > file`: open(O_CREAT), then
                # maybe nothing written for a while), so open for writing until its IN_CLOSE_WRITE. A file
                # linked in (link(2): created, never opened) is not. Any later open (a reader's, the lease's
                # own) changes nothing, and neither does the settle time.
                if path in self._created:
                    self._created.discard(path)
                    self._written.add(path)
            else:
                if kind == "written":
                    self._written.add(path)
                elif kind == "closed":
                    self._written.discard(path)
                elif kind == "created":
                    self._created.add(path)
                await self._note(path)

    async def _note_all(self) -> None:
        for path, signature in (await asyncio.to_thread(self._scan)).items():
            if path not in self._pending:
                self._pending[path] = (signature, time.monotonic())
        self._wake.set()

    async def _note(self, path: Path) -> None:
        try:
            signature = await asyncio.to_thread(stat_identity, path)
        except FileNotFoundError:
            self._forget(path)
            return
        self._pending[path] = (signature, time.monotonic())
        self._wake.set()

    async def again(self, path: Path) -> None:
        """Look at ``path`` again (a take that failed for want of space): taken, as any file, once it has
        settled and no writer has it open."""
        await self._note(path)

    def _forget(self, path: Path) -> None:
        self._pending.pop(path, None)
        self._written.discard(path)
        self._created.discard(path)
        self._waiting.discard(path)

    async def _hand_over(self, path: Path) -> None:
        self._forget(path)
        await self._take(path)

    async def _held_open(self, path: Path) -> bool:
        """Whether a writer still has ``path`` open: the lease's answer, else inotify's (written, not
        closed since). Logged once per file, and once when the lease cannot tell."""
        self._created.discard(path)  # the lease opens it: that open is not its creator's
        try:
            answer = await asyncio.to_thread(writers, path)
        except FileNotFoundError:
            return False  # the take finds it gone
        if answer.writers == Writers.UNKNOWN:
            if answer.why != self._blind:
                self._blind = answer.why
                log.warning(
                    "cannot tell from a lease whether inbox files are still open for writing; "
                    + ("using inotify's close events" if self.watching == "inotify" else "only settle_seconds counts"),
                    reason=answer.why,
                    file=readable(str(path)),
                )
            held = path in self._written
        else:
            held = answer.writers == Writers.OPEN
            if not held:
                self._written.discard(path)  # the lease knows better (a truncate(2) by path, say)
        if held and path not in self._waiting:
            self._waiting.add(path)
            log.info("inbox file still open for writing; waiting for its writer to close it", file=readable(str(path)))
        return held

    async def _settle(self) -> None:
        """Take pending files once their size and mtime held still for settle_seconds (both modes)."""
        settle = self.cfg.settle_seconds
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            due = min(since for _, since in self._pending.values()) + settle
            delay = due - time.monotonic()
            if delay > 0:
                self._wake.clear()
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                continue
            now = time.monotonic()
            for path, (signature, since) in list(self._pending.items()):
                if now - since < settle:
                    continue
                try:
                    current = await asyncio.to_thread(stat_identity, path)
                except FileNotFoundError:
                    self._forget(path)
                    continue
                if current != signature or await self._held_open(path):
                    self._pending[path] = (current, time.monotonic())  # again after settle_seconds
                    continue
                await self._hand_over(path)
