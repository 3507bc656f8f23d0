"""Linux inotify through ctypes, read on the event loop (no thread, no dependency).

Watches a folder tree: subfolders created or moved in get their own watch.
Yields (kind, path) events: "moved_in" (renamed into a watched folder: the file
is complete now), "written" (IN_MODIFY: data written, so a writer has it open),
"closed" (IN_CLOSE_WRITE: a writer closed it), "created" (IN_CREATE: by an
open, or a link), "opened" (IN_OPEN, for reading or writing: right after
"created", its creator's open), "dir" (a folder appeared: rescan it),
"overflow" (events were lost: rescan everything).

Why not watchfiles or asyncinotify: watchfiles reports a file renamed into the
folder as "added", like one being created and written, and batches events
behind a debounce (1.6 s by default), so "a rename-in is complete, take it at
once" could not hold; asyncinotify is a ctypes binding of the same calls as
this module, so it would add a dependency and change nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import struct
from collections.abc import AsyncIterator
from pathlib import Path

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_OPEN = 0x00000020
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE_SELF = 0x00000400
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

_MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_OPEN | IN_MOVED_TO | IN_CREATE | IN_DELETE_SELF
_HEADER = struct.Struct("iIII")


class InotifyUnavailable(OSError):
    pass


def _libc() -> ctypes.CDLL:
    name = ctypes.util.find_library("c")
    if name is None:
        raise InotifyUnavailable("no libc found")
    libc = ctypes.CDLL(name, use_errno=True)
    if not hasattr(libc, "inotify_init1"):
        raise InotifyUnavailable("this libc has no inotify")
    return libc


class Inotify:
    def __init__(self) -> None:
        self._libc = _libc()
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise InotifyUnavailable(err, f"inotify_init1: {os.strerror(err)}")
        self.fd: int = fd
        self._paths: dict[int, Path] = {}
        self._queue: asyncio.Queue[tuple[str, Path]] = asyncio.Queue()

    def watch_tree(self, root: Path, skip: frozenset[str] = frozenset()) -> None:
        """Watch ``root`` and every folder below it (names in ``skip`` are not entered)."""
        self._add(root)
        for current, dirs, _ in os.walk(root):
            dirs[:] = [d for d in dirs if d not in skip]
            for d in dirs:
                self._add(Path(current) / d)

    def _add(self, path: Path) -> None:
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), _MASK)
        if wd < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOENT, errno.ENOTDIR):
                return  # vanished meanwhile
            raise InotifyUnavailable(err, f"inotify_add_watch {path}: {os.strerror(err)}")
        self._paths[wd] = path

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        offset = 0
        while offset < len(data):
            wd, mask, _, length = _HEADER.unpack_from(data, offset)
            raw = data[offset + _HEADER.size : offset + _HEADER.size + length].rstrip(b"\0")
            offset += _HEADER.size + length
            if mask & IN_Q_OVERFLOW:
                self._queue.put_nowait(("overflow", Path()))
                continue
            if mask & IN_IGNORED:
                self._paths.pop(wd, None)
                continue
            folder = self._paths.get(wd)
            if folder is None or not raw:
                continue
            path = folder / os.fsdecode(raw)
            if mask & IN_ISDIR:
                if mask & (IN_CREATE | IN_MOVED_TO):
                    self._add(path)
                    self._queue.put_nowait(("dir", path))
            elif mask & IN_MOVED_TO:
                self._queue.put_nowait(("moved_in", path))
            elif mask & IN_CLOSE_WRITE:
                self._queue.put_nowait(("closed", path))
            elif mask & IN_MODIFY:
                self._queue.put_nowait(("written", path))
            elif mask & IN_OPEN:
                self._queue.put_nowait(("opened", path))
            elif mask & IN_CREATE:
                self._queue.put_nowait(("created", path))

    async def events(self) -> AsyncIterator[tuple[str, Path]]:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.fd, self._on_readable)
        try:
            while True:
                yield await self._queue.get()
        finally:
            loop.remove_reader(self.fd)

    def close(self) -> None:
        os.close(self.fd)
