"""Running a blocking iterator in a worker thread, consumed from the event loop.

A bounded queue gives backpressure (the thread parses at most ``maxsize``
items ahead). The factory gets a ``stop`` event, set when the consumer goes
away (done, failed or cancelled): the thread ends promptly, and a long step
inside the iterator may check it too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_ITEM, _DONE, _ERROR = 0, 1, 2


async def iterate_in_thread(factory: Callable[[threading.Event], Iterator[T]], maxsize: int = 4) -> AsyncIterator[T]:
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue(maxsize)

    def put(item: tuple[int, Any]) -> bool:
        fut = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        while True:
            try:
                fut.result(timeout=0.2)
                return True
            except concurrent.futures.TimeoutError:
                if stop.is_set():
                    fut.cancel()
                    return False

    def work() -> None:
        try:
            for item in factory(stop):
                if stop.is_set() or not put((_ITEM, item)):
                    return
            put((_DONE, None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put((_ERROR, exc))

    worker = loop.run_in_executor(None, work)
    try:
        while True:
            kind, value = await queue.get()
            if kind == _ITEM:
                yield value
            elif kind == _DONE:
                break
            else:
                raise value
    finally:
        stop.set()
        if worker.done():
            worker.result()
