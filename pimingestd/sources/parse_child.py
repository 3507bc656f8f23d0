"""The JSON parse worker's own process (see parse_workers.py): started as ``python -m
pimingestd.sources.parse_child FD PATH DAEMON`` with the pipe's end as FD, it imports exact.py and the
standard library only. No forkserver and no resource tracker: a plain child process, about the size of an
interpreter with orjson (it was three processes and 30 MiB more, run from a forkserver)."""

from __future__ import annotations

import gc
import mmap
import os
import select
import struct
import sys
import threading
import time
from multiprocessing.connection import Connection

from . import exact

ASK = struct.Struct("<qqq")  # slot offset (-1: the window follows by pipe), window length, room for records
ANSWER = struct.Struct("<q")  # records' length in the slot; DECLINED; PIPED: they follow by pipe
DECLINED = -1
PIPED = -2


def _serve(conn: Connection, path: str | None, daemon: int) -> None:
    """The worker: parse each window it is sent, in order, until the pipe ends."""
    _follow(daemon)
    gc.collect()  # what the forkserver preloaded lives as long as the worker: out of the collector's way
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)  # a dict per record, freed by reference counting (as app.tune_gc)
    shared = None
    if path is not None:
        try:
            fd = os.open(path, os.O_RDWR)
            try:
                shared = mmap.mmap(fd, 0)
            finally:
                os.close(fd)
        except OSError:
            shared = None
    conn.send_bytes(ANSWER.pack(1 if shared is not None else 0))
    while True:
        try:
            at, size, room = ASK.unpack(conn.recv_bytes())
            body = conn.recv_bytes() if at < 0 else shared[at : at + size]  # type: ignore[index]
        except EOFError:
            return
        lines = exact.window_lines(body)
        if lines is None:
            conn.send_bytes(ANSWER.pack(DECLINED))
        elif at >= 0 and len(lines) <= room:
            shared[at : at + len(lines)] = lines  # type: ignore[index]
            conn.send_bytes(ANSWER.pack(len(lines)))
        else:
            conn.send_bytes(ANSWER.pack(PIPED))
            conn.send_bytes(lines)


def _follow(daemon: int) -> None:
    """In the worker, first thing: exit as soon as the daemon that started it is gone, a SIGKILL included.
    Otherwise a worker could outlive its daemon, and with it the forkserver: an orphaned pair per killed
    daemon."""

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


def main() -> None:
    fd, path, daemon = sys.argv[1:4]
    _serve(Connection(int(fd)), path or None, int(daemon))


if __name__ == "__main__":
    main()
