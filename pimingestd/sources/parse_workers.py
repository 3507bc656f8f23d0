"""A second core for the JSON fast path: one worker process parses a window while the reader parses the next.

The JSON fast path (exact.py) is CPU-bound Python work that holds the GIL, so a second thread would not
help; a process does. The worker is started when the daemon starts (or on first use), from a forkserver
that preloads exact.py only (so it inherits neither the daemon's threads nor its modules), and it is shared
by every spool pass; it holds nothing between windows. Anything wrong with it (it cannot start, it died)
makes the reader parse every window itself from then on: the worker only ever makes reading faster, never
different (tests/test_exact.py compares the two).

``PIMINGESTD_PARSE_WORKERS=0`` turns it off; so does a machine with one CPU.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor

import structlog

from . import exact

log = structlog.get_logger("pimingestd.sources")

ENV = "PIMINGESTD_PARSE_WORKERS"
_WARM = b'{"a":1.5}'


class _Worker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self.off = False  # set for good once the worker failed to start or to answer

    def enabled(self) -> bool:
        return not self.off and os.environ.get(ENV, "1") != "0" and (os.cpu_count() or 1) > 1

    def submit(self, body: bytes) -> Future[bytes | None] | None:
        if not self.enabled():
            return None
        with self._lock:
            try:
                if self._pool is None:
                    context = multiprocessing.get_context("forkserver")
                    context.set_forkserver_preload(["pimingestd.sources.exact"])  # not the whole daemon
                    self._pool = ProcessPoolExecutor(
                        max_workers=1, mp_context=context, initializer=_follow, initargs=(os.getpid(),)
                    )
                return self._pool.submit(exact.array_lines, body)
            except Exception as exc:  # no worker can start here (a sandbox without fork, a broken pool)
                self.off = True
                log.warning("JSON parse worker unavailable; parsing on one core", error=f"{type(exc).__name__}: {exc}")
                return None

    def result(self, fut: Future[bytes | None], body: bytes) -> bytes | None:
        try:
            return fut.result()
        except Exception as exc:
            self.off = True
            log.warning("JSON parse worker failed; parsing on one core", error=f"{type(exc).__name__}: {exc}")
            return exact.array_lines(body)

    def shutdown(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


_worker = _Worker()


def _follow(daemon: int) -> None:
    """In the worker, first thing: exit as soon as the daemon that started it is gone, a SIGKILL included.
    The worker holds both ends of its pool's pipes itself, so it would otherwise wait for work forever, and
    with it the forkserver and the resource tracker: one orphaned trio per killed daemon."""

    def watch() -> None:
        try:
            fd = os.pidfd_open(daemon)  # readable once the process has exited
        except ProcessLookupError:
            os._exit(0)
        except (AttributeError, OSError):  # no pidfd here (an old kernel): look every second
            while True:
                time.sleep(1.0)
                try:
                    os.kill(daemon, 0)
                except ProcessLookupError:
                    os._exit(0)
                except PermissionError:
                    continue
        select.select([fd], [], [])
        os._exit(0)

    threading.Thread(target=watch, name="follow-daemon", daemon=True).start()


def submit(body: bytes) -> Future[bytes | None] | None:
    """``exact.array_lines(body)`` on the worker; None when there is no worker (parse it here)."""
    return _worker.submit(body)


def result(fut: Future[bytes | None], body: bytes) -> bytes | None:
    """The worker's answer, or the same work done here when the worker failed."""
    return _worker.result(fut, body)


def warm() -> None:
    """Start the worker now (blocking; from a thread at the daemon's start), so the first file does not wait
    for it."""
    fut = submit(_WARM)
    if fut is not None:
        result(fut, _WARM)


def shutdown() -> None:
    _worker.shutdown()
