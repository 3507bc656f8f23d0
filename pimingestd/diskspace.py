"""A full disk (ENOSPC, EDQUOT, SQLite's SQLITE_FULL), recognised wherever it strikes, and named.

Every place that writes (the state database, the spool, uploads, inbox moves) turns such an error into
``DiskFull``, whose message names the path and the free space on its filesystem, so the operator knows
which disk to clean. ``Conditions`` remembers the latest one for /healthz until a write succeeds again.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from pathlib import Path

from .errors import DiskFull

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_SQLITE_FULL = 13


def is_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in NO_SPACE:
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return (code is not None and code & 0xFF == _SQLITE_FULL) or "disk is full" in str(exc).lower()
    return False


def free_bytes(path: Path) -> int | None:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def disk_full(what: str, path: Path, area: str) -> DiskFull:
    """The error for ``what`` (e.g. "the state database") at ``path``, with the free space there."""
    free = free_bytes(path)
    left = f"{free} bytes free on its filesystem" if free is not None else "free space unknown"
    return DiskFull(f"{what}: the disk is full at {path} ({left}); free space there, then resume", area)


class Conditions:
    """The latest disk-full condition per area ("state", "spool", "inbox"), for /healthz."""

    def __init__(self) -> None:
        self._full: dict[str, tuple[str, float]] = {}

    def full(self, area: str, message: str) -> None:
        self._full.setdefault(area, (message, time.time()))

    def cleared(self, area: str) -> None:
        self._full.pop(area, None)

    def report(self) -> dict[str, dict[str, object]]:
        return {area: {"error": message, "since": at} for area, (message, at) in self._full.items()}

    @property
    def any(self) -> bool:
        return bool(self._full)
