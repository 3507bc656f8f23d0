"""A second core for the JSON fast path: one worker process parses a window while the reader parses the next.

The JSON fast path (exact.py) is CPU-bound Python work that holds the GIL, so a second thread would not
help; a process does. The worker is started on first use, from a forkserver (so it does not inherit the
daemon's threads), and shared by every spool pass; it holds nothing between windows. Anything wrong with
it (it cannot start, it died) makes the reader parse every window itself from then on: the worker only
ever makes reading faster, never different (tests/test_exact.py compares the two).

``PIMINGESTD_PARSE_WORKERS=0`` turns it off; so does a machine with one CPU.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor

import structlog

from . import exact

log = structlog.get_logger("pimingestd.sources")

ENV = "PIMINGESTD_PARSE_WORKERS"

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_off = False


def enabled() -> bool:
    return not _off and os.environ.get(ENV, "1") != "0" and (os.cpu_count() or 1) > 1


def submit(body: bytes) -> Future[bytes | None] | None:
    """``exact.array_lines(body)`` on the worker; None when there is no worker (parse it here)."""
    global _pool, _off
    if not enabled():
        return None
    with _lock:
        try:
            if _pool is None:
                _pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("forkserver"))
            return _pool.submit(exact.array_lines, body)
        except Exception as exc:  # no worker can start here (a sandbox without fork, a broken pool)
            _off = True
            log.warning("JSON parse worker unavailable; parsing on one core", error=f"{type(exc).__name__}: {exc}")
            return None


def result(fut: Future[bytes | None], body: bytes) -> bytes | None:
    """The worker's answer, or the same work done here when the worker failed."""
    global _off
    try:
        return fut.result()
    except Exception as exc:
        _off = True
        log.warning("JSON parse worker failed; parsing on one core", error=f"{type(exc).__name__}: {exc}")
        return exact.array_lines(body)


def shutdown() -> None:
    global _pool
    with _lock:
        if _pool is not None:
            _pool.shutdown(wait=False, cancel_futures=True)
            _pool = None
