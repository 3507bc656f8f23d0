"""A second core for the JSON fast path: a worker process parses windows while the reader parses others.

The JSON fast path (exact.py) is CPU-bound Python work that holds the GIL, so a second thread would not
help; a process does. The worker is started when the daemon starts (or on first use, and stopped again
once idle for IDLE_SECONDS: the next lease starts another) as a plain child
process that imports exact.py only (parse_child.py: it inherits neither the daemon's threads nor its
modules, and needs neither a forkserver nor a resource tracker, which cost 30 MiB more). One spool pass
at a time leases it (``lease``); another pass meanwhile parses on its own core. Anything wrong with the
worker (it cannot start, it died) makes the readers parse every window themselves from then on: the worker
only ever makes reading faster, never different (tests/test_exact.py compares the two).

How a window travels. The reader thread talks to the worker itself, over one pipe, with no helper thread:
a pool's feeder and result threads each needed the GIL back from the reader (up to a switch interval each
time), and the worker spent much of its time waiting on them. The window itself goes through shared memory
(a memfd the daemon creates and the worker maps through /proc/<daemon>/fd): the reader copies it into a
slot, the worker writes the window's records back over it, and the pipe carries three integers each way.
A window larger than a slot, or a worker that cannot map the memory, goes through the pipe instead, and
only when nothing else is at the worker: both sides then never write large messages at once.

``PIMINGESTD_PARSE_WORKERS=0`` turns it off; so does a daemon allowed only one CPU (its affinity, as a
container's cpuset or systemd's CPUAffinity sets it, not the machine's count).
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing.connection
import os
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

import structlog

from . import exact, parse_child

log = structlog.get_logger("pimingestd.sources")

ENV = "PIMINGESTD_PARSE_WORKERS"
SLOTS = 2  # windows at the worker at once
_SLOT = 3 << 19  # 1.5 MiB: a window (about a quarter of a MiB, more when a record straddles a read) and its records
_ASK, _ANSWER, _DECLINED, _PIPED = parse_child.ASK, parse_child.ANSWER, parse_child.DECLINED, parse_child.PIPED
_WARM = b'{"a":1.5}'
# glibc in the worker: one arena (its second thread only waits on the daemon). A fixed mmap threshold below a
# window's size kept it at 24 MiB after four files instead of 38, but slowed the worker on friendly data (each
# window's buffers faulted in afresh): not used; the worker is stopped once idle instead.
_MALLOC = {"MALLOC_ARENA_MAX": "1"}
IDLE_SECONDS = 30.0  # a worker idle this long is stopped: 18-25 MiB less at idle, 0.1-0.6 s to start again
IDLE_ENV = "PIMINGESTD_PARSE_WORKER_IDLE"  # seconds, instead of IDLE_SECONDS
_PATIENCE = 60.0  # seconds for one window's answer (it takes milliseconds): a worker that hangs is given up


class Worker:
    """The worker as one lease holder sees it: windows go in with ``submit`` and come back, in the same
    order, from ``result``. Not thread-safe: one reader thread holds a lease."""

    def __init__(self, conn: Connection, shared: mmap.mmap | None) -> None:
        self._conn = conn
        self._shared = shared
        self._out: deque[tuple[int, bytes]] = deque()  # (slot or -1, window) submitted, not yet answered
        self._free = list(range(SLOTS)) if shared is not None else []
        self.broken = False

    def submit(self, body: bytes) -> bool:
        """Send the window to the worker; False when it takes no more now (parse it here)."""
        if self.broken or len(self._out) >= SLOTS or any(slot < 0 for slot, _ in self._out):
            return False
        try:
            if self._free and len(body) <= _SLOT:
                slot = self._free.pop()
                at = slot * _SLOT
                assert self._shared is not None
                self._shared[at : at + len(body)] = body
                self._conn.send_bytes(_ASK.pack(at, len(body), _SLOT))
            elif self._out:
                return False  # by pipe only when nothing else is at the worker
            else:
                slot = -1
                self._conn.send_bytes(_ASK.pack(-1, len(body), 0))
                self._conn.send_bytes(body)
        except OSError as exc:
            self._broke(exc)
            return False
        self._out.append((slot, body))
        return True

    def ready(self) -> bool:
        """The oldest window's answer has come (``result`` will not wait)."""
        try:
            return self.broken or self._conn.poll(0)
        except OSError:
            return True

    def result(self) -> bytes | None:
        """The oldest window's records (one per line), None when the fast path declines it; parsed here when
        the worker failed."""
        slot, body = self._out.popleft()
        if slot >= 0:
            self._free.append(slot)
        if self.broken:
            return exact.window_lines(body)
        try:
            if not self._conn.poll(_PATIENCE):
                raise TimeoutError(f"no answer within {_PATIENCE:g} s")
            (got,) = _ANSWER.unpack(self._conn.recv_bytes())
            if got == _PIPED:
                return self._conn.recv_bytes()
        except (OSError, EOFError, struct.error, TimeoutError) as exc:
            self._broke(exc)
            return exact.window_lines(body)
        if got == _DECLINED:
            return None
        assert self._shared is not None and slot >= 0
        at = slot * _SLOT
        return self._shared[at : at + got]

    def drain(self) -> None:
        """Wait out what the worker still has (the reader stopped early), so the next lease starts clean."""
        while self._out:
            self.result()

    def _broke(self, exc: BaseException) -> None:
        if not self.broken:
            log.warning("JSON parse worker failed; parsing on one core", error=f"{type(exc).__name__}: {exc}")
        self.broken = True
        _pool.failed()


def _cores() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


class _Child:
    """The worker's process, as the pool uses it."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    def kill(self) -> None:
        self._popen.kill()

    def join(self, timeout: float | None = None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout)


class _Pool:
    """The daemon's one worker: started once, leased to one spool pass at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leased = threading.Lock()
        self._process: Any = None
        self._worker: Worker | None = None
        self._memory: tuple[int, mmap.mmap] | None = None
        self.off = False  # set for good once the worker failed to start or to answer
        self._idle_since = 0.0  # when the worker was last given back (time.monotonic)

    def enabled(self) -> bool:
        return not self.off and os.environ.get(ENV, "1") != "0" and _cores() > 1

    def lease(self) -> Worker | None:
        """The worker for the caller alone (give it back with ``give_back``), or None: parse on this core."""
        if not self.enabled() or not self._leased.acquire(blocking=False):
            return None
        worker = self._started()
        if worker is None or worker.broken:
            self._leased.release()
            return None
        return worker

    def give_back(self, worker: Worker) -> None:
        worker.drain()
        self._idle_since = time.monotonic()
        self._leased.release()

    def _reap(self) -> None:
        """While a worker runs: stop it once it was idle for IDLE_SECONDS, or the seconds in IDLE_ENV (the next
        lease starts another)."""
        idle = float(os.environ.get(IDLE_ENV) or IDLE_SECONDS)
        while True:
            time.sleep(min(idle / 4, 5.0))
            if self._worker is None:
                return
            if time.monotonic() - self._idle_since < idle or not self._leased.acquire(blocking=False):
                continue
            try:
                if time.monotonic() - self._idle_since >= idle:
                    self.shutdown()
                    return
            finally:
                self._leased.release()

    def _started(self) -> Worker | None:
        with self._lock:
            if self._worker is not None or self.off:
                return self._worker
            try:
                self._worker = self._start()
                self._idle_since = time.monotonic()
                threading.Thread(target=self._reap, name="parse-worker-reaper", daemon=True).start()
            except Exception as exc:  # no worker can start here (a sandbox without fork, say)
                self.off = True
                log.warning("JSON parse worker unavailable; parsing on one core", error=f"{type(exc).__name__}: {exc}")
            return self._worker

    def _start(self) -> Worker:
        path = None
        try:
            fd = os.memfd_create("pimingestd-parse", os.MFD_CLOEXEC)
            os.ftruncate(fd, _SLOT * SLOTS)
            self._memory = (fd, mmap.mmap(fd, _SLOT * SLOTS))
            path = f"/proc/{os.getpid()}/fd/{fd}"
        except (OSError, AttributeError) as exc:  # no memfd here: windows go by pipe
            log.info("JSON parse worker without shared memory", error=f"{type(exc).__name__}: {exc}")
        mine, theirs = multiprocessing.connection.Pipe()
        process = _Child(
            subprocess.Popen(  # a plain interpreter with exact.py: no forkserver, no resource tracker
                [
                    sys.executable,
                    "-m",
                    "pimingestd.sources.parse_child",
                    str(theirs.fileno()),
                    path or "",
                    str(os.getpid()),
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env={**os.environ, **_MALLOC},
            )
        )
        theirs.close()
        self._process = process
        if not mine.poll(30.0):
            raise TimeoutError("the worker did not start within 30 s")
        (mapped,) = _ANSWER.unpack(mine.recv_bytes())
        if not mapped and self._memory is not None:
            log.info("JSON parse worker cannot map the shared memory; windows go by pipe")
        return Worker(mine, self._memory[1] if mapped and self._memory else None)

    def failed(self) -> None:
        """The worker failed: never again (a hung one is killed; its pipe is out of step anyway)."""
        self.off = True
        if self._process is not None and self._process.is_alive():
            self._process.kill()

    def shutdown(self) -> None:
        with self._lock:
            worker, process, self._worker, self._process = self._worker, self._process, None, None
            memory, self._memory = self._memory, None
        if worker is not None:
            worker._conn.close()  # the worker sees the end of its pipe and exits
        if process is not None:
            process.join(5.0)
            if process.is_alive():
                process.kill()
                process.join(5.0)
        if memory is not None:  # (the worker is gone: nothing writes into it any more)
            memory[1].close()
            os.close(memory[0])


_pool = _Pool()


def lease() -> Worker | None:
    """The worker for one reader (None: parse on this core); give it back with ``give_back``."""
    return _pool.lease()


def give_back(worker: Worker) -> None:
    _pool.give_back(worker)


def enabled() -> bool:
    return _pool.enabled()


def warm() -> None:
    """Start the worker now (blocking), so the next file does not wait for it. The daemon does not call it at
    its start: a worker started there held 18 MiB for its first 30 s whatever the daemon then read, and
    JSON Lines, CSV, XML and Excel never use it; the first JSON file starts it (0.1-0.6 s here)."""
    worker = lease()
    if worker is not None:
        try:
            if worker.submit(_WARM):
                worker.result()
        finally:
            give_back(worker)


def shutdown() -> None:
    _pool.shutdown()
