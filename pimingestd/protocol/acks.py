"""The registry of Futures waiting for ACK callbacks.

``expect(key)`` creates the Future before the chunk is sent (an ACK may beat
the POST's own response); a done-callback removes the entry, so a timeout or a
cancellation leaks nothing. ``resolve`` ignores Futures already done and tells
the caller whether anyone was waiting.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

AckKey = tuple[str, int]  # (ingestion_id, chunk)


@dataclass(frozen=True, slots=True)
class AckResult:
    status: str  # "ack" | "reject"
    reason: str = ""
    retryable: bool = False


class AckRegistry:
    def __init__(self) -> None:
        self._waiting: dict[AckKey, asyncio.Future[AckResult]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def expect(self, key: AckKey) -> asyncio.Future[AckResult]:
        if key in self._waiting:
            raise RuntimeError(f"already waiting for the ACK of {key}")
        fut: asyncio.Future[AckResult] = asyncio.get_running_loop().create_future()
        self._waiting[key] = fut
        fut.add_done_callback(lambda f: self._forget(key, f))
        return fut

    def _forget(self, key: AckKey, fut: asyncio.Future[AckResult]) -> None:
        if self._waiting.get(key) is fut:
            del self._waiting[key]

    def resolve(self, key: AckKey, result: AckResult) -> bool:
        fut = self._waiting.get(key)
        if fut is None or fut.done():
            return False
        fut.set_result(result)
        return True

    def cancel_all(self) -> None:
        for fut in list(self._waiting.values()):
            fut.cancel()
