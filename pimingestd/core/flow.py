"""How many chunks may be in flight to PIM-Core: the window (protocol v2), shared by every ingestion.

One ``Flow`` per receiver. It knows:

- what the receiver announced in its last chunk answer (``Pimingest-Window``; None for a v1 receiver,
  and until its first answer): an ingestion sends ``min(its window, the announced one)`` chunks at once,
  so one chunk at a time until a receiver says more;
- the congestion window: additive increase (+1 per window of ACKs), multiplicative decrease (halved) when
  the receiver answers 429, or when the ACK latency grows past ``LATENCY_GROWTH`` times the lowest of the
  recent ones (a receiver whose queue grows); at most one decrease per smoothed latency;
- a pause: a 429 or 503 with Retry-After stops every send to the receiver until it ends.

Permits go out first come, first served. Each ingestion asks for one permit at a time (its next chunk),
so the queue is a round robin across running ingestions: none starves. An ingestion at its own limit
does not hold up the others behind it.

With no window announced, the budget is not shared (each ingestion its one chunk), which is protocol
v1's behaviour exactly.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

LATENCY_GROWTH = 3.0  # smoothed ACK latency above this many times the recent lowest: the receiver is queueing
_SAMPLES = 64  # recent ACK latencies the lowest is taken over
_SMOOTHING = 0.2  # weight of a new latency in the smoothed one


@dataclass(slots=True)
class Lane:
    """One ingestion's share: its chunks in flight and the most it may have."""

    wanted: int  # the ingestion's own window (1: protocol v1)
    in_flight: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set when one of its chunks ends
    sending: set[int] = field(default_factory=set)  # the numbers of its chunks in flight

    def waits_on_earlier(self, n: int) -> bool:
        """Whether a chunk before ``n`` is still in flight: then a 425 for ``n`` (strict) is expected."""
        return bool(self.sending) and min(self.sending) < n


class Flow:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.announced: int | None = None
        self.cwnd = 1.0
        self.in_flight = 0  # chunks of lanes that share the budget (the receiver announced a window)
        self.paused_until = 0.0
        self._queue: deque[tuple[Lane, asyncio.Future[None]]] = deque()
        self._latencies: deque[float] = deque(maxlen=_SAMPLES)
        self.srtt: float | None = None
        self._last_cut = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        self.decreases = 0  # multiplicative decreases so far (for the metrics and the tests)

    # ---- what the receiver says ------------------------------------------------------------------

    def answered(self, window: int | None) -> None:
        """A chunk was taken (2xx); ``window`` is what the answer announced (None: v1)."""
        if window != self.announced:
            if self.announced is None and window is not None:
                self.cwnd = float(window)  # the first announcement: start at the receiver's limit
            self.announced = window
            if window is not None:
                self.cwnd = min(self.cwnd, float(window))
            self._grant()

    def acked(self, latency: float | None) -> None:
        """A chunk's ACK committed, ``latency`` seconds after its POST went out."""
        if latency is None or self.announced is None:
            return
        self._latencies.append(latency)
        self.srtt = latency if self.srtt is None else (1 - _SMOOTHING) * self.srtt + _SMOOTHING * latency
        if self.srtt > LATENCY_GROWTH * min(self._latencies) and self._cut():
            return
        self.cwnd = min(float(self.announced), self.cwnd + 1.0 / self.cwnd)
        self._grant()

    def busy(self, seconds: float, status: int) -> None:
        """A 429 (or 503 with Retry-After): nothing goes out for ``seconds``; a 429 also halves the window."""
        self.paused_until = max(self.paused_until, self._clock() + seconds)
        if status == 429:
            self._cut()
        self._wake_at(self.paused_until)

    def _cut(self) -> bool:
        now = self._clock()
        if now - self._last_cut < (self.srtt or 0.0):
            return False
        self._last_cut = now
        self.cwnd = max(1.0, self.cwnd / 2)
        self.decreases += 1
        return True

    # ---- permits ----------------------------------------------------------------------------------

    @property
    def window(self) -> int | None:
        """The chunks that may be in flight across lanes now; None: not shared (no window announced)."""
        return None if self.announced is None else max(1, int(self.cwnd))

    def limit(self, lane: Lane) -> int:
        """The most chunks ``lane`` may have in flight now."""
        return max(1, min(lane.wanted, self.announced or 1, self.window or lane.wanted))

    async def acquire(self, lane: Lane) -> None:
        """Wait for a permit for one more chunk of ``lane``: first come, first served, after any pause."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((lane, fut))
        self._grant()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(lane)  # granted just as it was cancelled: hand it back
            else:
                self._queue = deque(e for e in self._queue if e[1] is not fut)
            raise

    def release(self, lane: Lane) -> None:
        """A chunk of ``lane`` ended (ACKed, or its attempts ended)."""
        lane.in_flight -= 1
        self.in_flight -= 1
        lane.changed.set()
        self._grant()

    def _grant(self) -> None:
        now = self._clock()
        if now < self.paused_until:
            self._wake_at(self.paused_until)
            return
        kept: deque[tuple[Lane, asyncio.Future[None]]] = deque()
        while self._queue:
            lane, fut = self._queue.popleft()
            if fut.done():
                continue
            budget = self.window
            if lane.in_flight >= self.limit(lane) or (budget is not None and self.in_flight >= budget):
                kept.append((lane, fut))
                continue
            lane.in_flight += 1
            self.in_flight += 1
            fut.set_result(None)
        self._queue = kept

    def _wake_at(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(max(when - self._clock(), 0.0), self._grant)

    def paused_for(self) -> float:
        """Seconds left of a receiver's pause (0: none)."""
        return max(self.paused_until - self._clock(), 0.0)


class KeyOrder:
    """by_key's rule: a chunk may go only once every earlier chunk not yet ended that shares one of its keys
    has ended (been ACKed). Chunks join in file order; each key has the chunk holding it first and, rarely,
    a queue of later ones, so a chunk is free when it holds each of its keys first. Keys are the hashes of
    the stored keys (a collision only makes a chunk wait longer). Memory: an entry per key of the chunks
    in flight or held back (a queue object per key would cost 600 bytes each: 20 MiB at 32 chunks of 1,000)."""

    def __init__(self) -> None:
        self._first: dict[int, int] = {}  # key -> the earliest chunk holding it
        self._later: dict[int, deque[int]] = {}  # key -> the chunks after that one, in file order

    def __len__(self) -> int:
        return len(self._first)

    def join(self, n: int, keys: frozenset[int]) -> None:
        for k in keys:
            if k in self._first:
                self._later.setdefault(k, deque()).append(n)
            else:
                self._first[k] = n

    def free(self, n: int, keys: frozenset[int]) -> bool:
        first = self._first
        return all(first[k] == n for k in keys)

    def leave(self, n: int, keys: frozenset[int]) -> None:
        for k in keys:
            if self._first.get(k) != n:  # (only a chunk that went leaves, and it held its keys first)
                continue
            queue = self._later.get(k)
            if queue:
                self._first[k] = queue.popleft()
                if not queue:
                    del self._later[k]
            else:
                del self._first[k]
