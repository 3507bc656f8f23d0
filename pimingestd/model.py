"""Values that cross module boundaries: ingestion states and the transitions allowed between them.

The state machine is the single source of truth for status changes: the store
applies a change only when the row's current status is one the target may be
reached from (``UPDATE ... WHERE status IN (...)``), so a cancel cannot be
overwritten by a concurrent resume, and a completion cannot be recorded for a
cancelled ingestion, whatever order the callers run in.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


STATUSES: tuple[Status, ...] = tuple(Status)
UNFINISHED: tuple[Status, ...] = (Status.QUEUED, Status.RUNNING)
FINAL: tuple[Status, ...] = (Status.COMPLETED, Status.CANCELLED)

# target -> the statuses it may be reached from
TRANSITIONS: dict[Status, tuple[Status, ...]] = {
    Status.QUEUED: (Status.QUEUED, Status.RUNNING, Status.FAILED),  # submitted again, resumed
    Status.RUNNING: (Status.QUEUED, Status.RUNNING),  # a run starts (running: after a restart)
    Status.COMPLETED: (Status.RUNNING,),  # and only once its completion was claimed
    Status.FAILED: (Status.QUEUED, Status.RUNNING),
    Status.CANCELLED: (Status.QUEUED, Status.RUNNING, Status.FAILED),  # and only before completion was claimed
}
