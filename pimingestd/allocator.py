"""glibc's allocator, set for a daemon that runs for years (issue 29; figures in docs/performance.md).

- ``start_without_thread_caches``: the ``run`` command, before anything else, starts itself again (``exec``:
  the same process, pid and arguments) with glibc's per-thread caches off, a tunable glibc reads only when a
  program starts. Each thread that frees a block of up to about 1 KB parks it in a cache of its own, 7 per
  size, where no other thread can use it: up to some 240 KB a thread, and the daemon has eight (the loop,
  the state database's, the executor's). They filled over the first quarter hour of a daemon's life, so its
  heap rose by 1.0-1.7 MiB after the warm-up, the settling the long soak measured; with them off the heap is
  that much smaller and flat (the parse worker, which inherits the setting, is 0.4 MiB smaller too).
- ``tune_malloc``: one arena, and a fixed mmap threshold, set by ``mallopt`` at start.

An operator's own ``glibc.malloc.tcache_count`` in ``GLIBC_TUNABLES`` stands (no second start; ``=7`` is
glibc's default), and other tunables are kept. The second start takes back the process name the first had
(``pimingestd`` for the console script, where ``exec`` of the interpreter would make it ``python3``) and
never starts a third time, whatever glibc made of the tunable: a privileged start (setuid, or an interpreter
given file capabilities) drops it, and is not tried at all. Not glibc (musl): nothing is done."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Mapping
from contextlib import suppress

TUNABLES = "GLIBC_TUNABLES"
THREAD_CACHES = "glibc.malloc.tcache_count"
THREAD_CACHES_OFF = f"{THREAD_CACHES}=0"
AGAIN = "PIMINGESTD_STARTED_AGAIN"  # set for the second start only: the process name the first one had
_AT_SECURE = 23  # getauxval: a privileged exec, where glibc drops most tunables
_PR_SET_NAME = 15


def without_thread_caches(environ: Mapping[str, str]) -> dict[str, str] | None:
    """``environ`` with the thread caches off added to its tunables; None when it sets their count already."""
    current = environ.get(TUNABLES, "")
    if any(t.partition("=")[0] == THREAD_CACHES for t in current.split(":")):
        return None
    return {**environ, TUNABLES: f"{current}:{THREAD_CACHES_OFF}" if current else THREAD_CACHES_OFF}


def glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        return False


def start_without_thread_caches() -> None:
    """Replace this process with the same command, its thread caches off; returns when none is needed, when
    this is that second start, or when the ``exec`` fails (the daemon then runs with them, the same but for
    its heap)."""
    name = os.environ.pop(AGAIN, None)  # gone before any child (the parse worker) inherits it
    if name is not None:
        _set_name(name)
        return
    env = without_thread_caches(os.environ)
    if env is None or not glibc() or _privileged() or not sys.executable or not sys.orig_argv:
        return
    env[AGAIN] = _name()
    for stream in (sys.stdout, sys.stderr):  # None when that descriptor is closed
        if stream is not None:
            with suppress(OSError, ValueError):
                stream.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError:
        return


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _privileged() -> bool:
    try:
        getauxval = _libc().getauxval
    except (OSError, AttributeError):
        return False
    getauxval.restype = ctypes.c_ulong
    getauxval.argtypes = [ctypes.c_ulong]
    return bool(getauxval(_AT_SECURE))


def _name() -> str:
    try:
        with open("/proc/self/comm", encoding="utf-8", errors="replace") as f:
            return f.read().rstrip("\n")
    except OSError:
        return ""


def _set_name(name: str) -> None:
    if not name:
        return
    with suppress(OSError, AttributeError):
        _libc().prctl(_PR_SET_NAME, ctypes.create_string_buffer(name.encode()[:15]), 0, 0, 0)


def tune_malloc(arenas: int = 1, mmap_threshold: int = 1 << 20) -> None:
    """Keep glibc from holding memory it no longer needs (RSS, not leaks):
    - one arena for every thread: worker threads (parsing, hashing, the state database's, fsspec's loop)
      would each grow one. With two, which threads shared the second one varied from run to run, and a run
      in three or so held 5-7 MiB more (the S3 row of ``bench --only remote``: 85 MiB against 78); with one,
      the tree's peak on the mixed files is 83-86 MiB instead of 84-92, and 56 MiB at idle instead of 60-62,
      for end-to-end speeds within the runs' spread (docs/performance.md, issue 29);
    - fix the mmap threshold: by default it rises after a large block is freed, so later
      chunk-sized buffers (up to [chunking] bytes) come from the heap and stay there."""
    try:
        libc = _libc()
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
        libc.mallopt(-3, mmap_threshold)  # M_MMAP_THRESHOLD (also turns the dynamic threshold off)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune
