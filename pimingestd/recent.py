"""The last hour in memory, for the status page: records ACKed and chunk attempts that failed, per minute.

A ring of 60 one-minute buckets, advanced lazily when counted or read: no task, no history database, and
nothing kept beyond the hour. The time of the last ACK and of the last failure (with its reason, cut
short) come with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

MINUTES = 60


@dataclass
class Recent:
    records: list[int] = field(default_factory=lambda: [0] * MINUTES)
    failures: list[int] = field(default_factory=lambda: [0] * MINUTES)
    minute: int = field(default_factory=lambda: int(time.time() // 60))
    last_ack_at: float | None = None
    last_failure_at: float | None = None
    last_failure: str | None = None

    def _advance(self, now: float) -> int:
        current = int(now // 60)
        gap = current - self.minute
        if gap > 0:
            for step in range(1, min(gap, MINUTES) + 1):
                slot = (self.minute + step) % MINUTES
                self.records[slot] = self.failures[slot] = 0
            self.minute = current
        return current % MINUTES

    def acked(self, records: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.records[self._advance(now)] += records
        self.last_ack_at = now

    def failed(self, reason: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.failures[self._advance(now)] += 1
        self.last_failure_at, self.last_failure = now, reason[:300]

    def series(self, now: float | None = None) -> dict[str, list[int]]:
        """Per minute, oldest first, the current (partial) minute last."""
        slot = self._advance(time.time() if now is None else now)
        order = [(slot + 1 + i) % MINUTES for i in range(MINUTES)]
        return {"records": [self.records[i] for i in order], "failures": [self.failures[i] for i in order]}
