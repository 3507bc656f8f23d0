"""Opening a local source file: regular files only, never following a link, reads bounded.

Every read of a source goes through ``open_source``:

- ``O_NOFOLLOW | O_NONBLOCK`` then ``fstat``: a symlink is refused (it could
  point anywhere the daemon may read, outside ``allowed_roots``), and so is a
  FIFO, socket or device (opening a FIFO for reading would block a worker
  thread until a writer appears; with O_NONBLOCK the open returns at once and
  fstat tells what it is).
- ``limit``: reads end at that many bytes, the size recorded when the
  ingestion was submitted, so bytes appended later are never read.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path

from ..errors import NotRegularFile
from ..names import readable

_BUFFER = 1 << 16


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def refuse_reason(path: Path) -> str | None:
    """What ``path`` is when it is not a regular file ("a symbolic link; ...") by lstat (links are
    not followed), or None for a regular file."""
    st = os.lstat(path)
    if stat.S_ISREG(st.st_mode):
        return None
    return f"{_kind(st.st_mode)}; only regular files are read"


class _Bounded(io.RawIOBase):
    """The first ``limit`` bytes of an open file, by positioned reads (seekable)."""

    def __init__(self, fd: int, limit: int) -> None:
        super().__init__()
        self._fd = fd
        self._limit = limit
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._limit - self._pos)
        if want <= 0:
            return 0
        n = os.preadv(self._fd, [memoryview(buffer)[:want]], self._pos)
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._limit}[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def open_source(path: Path, limit: int | None = None) -> io.BufferedReader:
    """Open a regular file for reading (blocking: call from a thread); NotRegularFile otherwise.
    With ``limit``, reading stops after that many bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFile(f"{readable(str(path))} is a symbolic link; only regular files are read") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(f"{readable(str(path))} is {_kind(st.st_mode)}; only regular files are read")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    if limit is None:
        return io.BufferedReader(io.FileIO(fd, "rb", closefd=True), _BUFFER)
    return io.BufferedReader(_Bounded(fd, limit), _BUFFER)


def stat_identity(path: Path) -> tuple[int, int]:
    """(size, mtime_ns) of the file itself (a link is not followed)."""
    st = os.lstat(path)
    return st.st_size, st.st_mtime_ns
