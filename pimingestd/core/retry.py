"""The one retry loop, for chunks and completions alike.

An attempt returns its result, raises ``TryAgain`` (a failure another attempt may
fix: a timeout, a 5xx, a retryable reject), or raises anything else to stop at
once (a final reject). Between attempts it backs off exponentially with jitter;
the wait is cut short when the daemon drains, and the run then stops with
``Paused`` at this boundary, to resume at the next start.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from ..errors import DeliveryError, Paused
from ..logs import Throttle, shape

log = structlog.get_logger("pimingestd.core")
THROTTLE = Throttle()  # failures are always logged, but one that repeats at most once per 10 s
MAX_DELAY = 60.0  # seconds between two attempts, at most (before jitter)

T = TypeVar("T")


class TryAgain(Exception):
    """This attempt failed in a way another one may fix; the message says how."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int
    backoff: float  # seconds before the second attempt; doubles each time, with jitter

    def delay(self, attempt: int) -> float:
        """Doubling from ``backoff``, with jitter, and at most MAX_DELAY: with many attempts allowed, the
        doubling alone would soon wait for hours."""
        return min(self.backoff * 2.0 ** min(attempt - 1, 32), MAX_DELAY) * random.uniform(0.5, 1.5)


async def pause(seconds: float, draining: asyncio.Event) -> None:
    """Wait ``seconds``; raise Paused at once when the daemon drains meanwhile."""
    try:
        async with asyncio.timeout(seconds):
            await draining.wait()
    except TimeoutError:
        return
    raise Paused()


async def retrying(
    attempt: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    draining: asyncio.Event,
    *,
    what: str,
    exhausted: Callable[[int, str], str],
) -> T:
    """``attempt(1)``, ``attempt(2)``... until one succeeds; DeliveryError(``exhausted(attempts, last
    error)``) when none did. Logs "<what> attempt failed" for each failure."""
    last = ""
    for n in range(1, policy.attempts + 1):
        try:
            return await attempt(n)
        except TryAgain as exc:
            last = str(exc)
            held = THROTTLE.allow((what, shape(last)))
            if held is not None:  # the same failure again and again: a line every THROTTLE.seconds
                log.warning(f"{what} attempt failed", attempt=n, error=last, **({"repeated": held} if held else {}))
        if n < policy.attempts:
            await pause(policy.delay(n), draining)
    raise DeliveryError(exhausted(policy.attempts, last))
