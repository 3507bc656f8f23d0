"""Is a local inbox file still open for writing? The watcher never takes one that is.

A writer that pauses longer than ``settle_seconds`` with the file open looks complete by size and
mtime alone. On Linux the kernel can say more:

- a read lease (``fcntl(F_SETLEASE, F_RDLCK)``) is refused with EAGAIN while any process has the
  file open for writing. The daemon may take a lease only on a file it owns, or with CAP_LEASE;
  otherwise the answer is EACCES, and a filesystem without leases (NFS, SMB/CIFS, most FUSE)
  answers EINVAL: then the lease cannot tell;
- inotify reports IN_MODIFY for every write, IN_CREATE then IN_OPEN for a file created by an open
  (before anything is written), and IN_CLOSE_WRITE when a writer closes the file (also when its
  process dies). The watcher keeps the files written since their last IN_CLOSE_WRITE, so
  with inotify it still knows a writer holds a file open where the lease cannot tell. It does not
  know of a writer that wrote nothing since the watch began, nor of writes from another machine.

The lease is held for the time of two fcntl calls. A writer that opens the file in between
breaks it: its open waits until the lease is given back (at once), and the kernel signals the
lease holder. That signal is set to SIGURG, whose default action is to ignore it, so the break
can never end the daemon (SIGIO, the default, would).
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class Writers(StrEnum):
    OPEN = "open"  # someone has the file open for writing
    CLOSED = "closed"  # no one has
    UNKNOWN = "unknown"  # the lease cannot tell (see ``Answer.why``)


@dataclass(frozen=True, slots=True)
class Answer:
    writers: Writers
    why: str = ""  # for UNKNOWN: why the lease could not tell


_CANNOT = {
    errno.EACCES: "the daemon neither owns the file nor has CAP_LEASE",
    errno.EPERM: "the daemon neither owns the file nor has CAP_LEASE",
    errno.EINVAL: "the filesystem has no leases (NFS, SMB, FUSE...)",
    errno.ENOSYS: "the filesystem has no leases (NFS, SMB, FUSE...)",
}


def writers(path: Path) -> Answer:
    """Whether ``path`` is open for writing, by a read lease taken and given back at once.

    Only a regular file is opened (never a link, FIFO or device: intake refuses those unopened).
    Raises FileNotFoundError when the file is gone."""
    if not stat.S_ISREG(os.lstat(path).st_mode):
        return Answer(Writers.CLOSED)  # a link, FIFO or device: intake refuses it unopened, so take it
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except BlockingIOError:
        return Answer(Writers.OPEN)  # another process holds a write lease on it (a file server's client)
    except OSError as exc:
        return Answer(Writers.UNKNOWN, f"cannot open it: {exc.strerror or exc}")
    try:
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)  # a lease break must never be SIGIO (it would end us)
        try:
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return Answer(Writers.OPEN)
            return Answer(Writers.UNKNOWN, _CANNOT.get(exc.errno or 0, f"F_SETLEASE: {exc.strerror or exc}"))
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return Answer(Writers.CLOSED)
    finally:
        os.close(fd)
