"""Watching the inbox folder: which files are complete, and when.

A file renamed into the inbox (inotify's IN_MOVED_TO) is complete and taken at
once. Any other file is taken once its size and mtime have held still for
``settle_seconds``: one settle loop decides that, fed by inotify events or, with
``watch = "poll"`` (or no inotify), by a scan every ``poll_interval``. Entries
are seen by lstat, so links, FIFOs and the like are handed over too (intake
refuses them). Ignored names (hidden files, partial uploads, lock files) are
never handed over.
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
from .inotify import Inotify, InotifyUnavailable

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
                    del self._pending[path]
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
                if not await asyncio.to_thread(os.path.isdir, path) or await asyncio.to_thread(os.path.islink, path):
                    await self._take(path)
            else:
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
            self._pending.pop(path, None)
            return
        self._pending[path] = (signature, time.monotonic())
        self._wake.set()

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
                    self._pending.pop(path, None)
                    continue
                if current != signature:
                    self._pending[path] = (current, time.monotonic())
                    continue
                self._pending.pop(path, None)
                await self._take(path)
