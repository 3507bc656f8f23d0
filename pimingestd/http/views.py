"""Shaping ingestions and chunks as the API shows them.

A page of ingestions costs one query for their rows and one for their
progress (state.summaries), whatever its length; rate and ETA come from the
scheduler's record of the current run, read with the progress. Shaping then
reads nothing more, so a long page can be shaped and written a slice at a time
(http/streamed.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from .. import redaction
from ..core.scheduler import Scheduler
from ..locations.remote import redact
from ..model import UNFINISHED, ChunkRow, Ingestion, Progress, Status
from ..names import readable
from ..state import StateStore
from ..timestamps import iso, iso_or_none


async def ingestions(
    store: StateStore, scheduler: Scheduler, rows: Sequence[Ingestion]
) -> Callable[[Sequence[Ingestion]], list[dict[str, Any]]]:
    """Read the progress of ``rows`` (one query) and what the scheduler knows of them now, and return what
    shapes any slice of them from that alone: a long page is written a slice at a time (http/streamed.py),
    after the handler, and a slice shaped later must not mix this progress with a run started since."""
    progress = await store.summaries([ing.id for ing in rows])
    now = time.monotonic()
    started = {ing.id: at for ing in rows if (at := scheduler.run_started(ing.id)) is not None}
    unrecorded = {ing.id: why for ing in rows if (why := scheduler.unrecorded.get(ing.id)) is not None}
    return lambda part: [
        _ingestion(ing, progress.get(ing.id, Progress()), now, started.get(ing.id), unrecorded.get(ing.id))
        for ing in part
    ]


async def ingestion(store: StateStore, scheduler: Scheduler, ing: Ingestion) -> dict[str, Any]:
    return (await ingestions(store, scheduler, [ing]))([ing])[0]


def _ingestion(
    ing: Ingestion, p: Progress, now: float, started: tuple[float, int] | None, unrecorded: str | None
) -> dict[str, Any]:
    """``started``: the current run's start (Scheduler.run_started); ``unrecorded``: why it failed, when the
    state disk could not record that (Scheduler.unrecorded); both as they were at ``now``."""
    if ing.pruned_at is not None:  # its chunk rows are gone (retention): the counts kept when they went
        p = Progress(p.chunks_acked + ing.pruned_chunks, p.records_acked + ing.pruned_records, p.last_ack, 0)
    rate = None
    if started is not None:
        elapsed = now - started[0]
        rate = (p.records_acked - started[1]) / elapsed if elapsed > 0 else 0.0
    eta = None
    if rate and ing.total_records is not None:
        eta = round(max(ing.total_records - p.records_acked, 0) / rate, 1)
    status, error = ing.status, ing.error
    if unrecorded is not None and status in UNFINISHED:  # failed, but the state disk could not record it
        status, error = Status.FAILED, unrecorded
    return {
        "ingestion_id": ing.id,
        "file_id": ing.file_id or None,  # a remote object's is known once its spool pass has read it
        "path": redact(ing.path) if ing.remote else readable(ing.path),
        "version": ing.version or None,
        "file_name": ing.file_name,
        "format": ing.format,
        "status": status,
        "chunks_acked": p.chunks_acked,
        "records_acked": p.records_acked,
        "total_chunks": ing.total_chunks,
        "total_records": ing.total_records,
        "error": redaction.text(error) if error else error,  # also an error recorded before redaction
        "source": ing.source,
        "records_per_second": None if rate is None else round(rate, 1),
        "eta_seconds": eta,
        "attempts": p.attempts_in_flight if ing.status in UNFINISHED else 0,
        "records_rejected": ing.records_rejected,  # in the reject file: refused by PIM-Core, or invalid
        "records_invalid": ing.records_invalid,
        "records_unchanged": ing.records_unchanged,
        "deletions": ing.deletions,
        "records_deleted": ing.deleted,
        "delta_scope": ing.scope or None,
        "created_at": iso(ing.created_at),
        "updated_at": iso(max(ing.updated_at, p.last_ack or 0.0)),
    }


def chunk(r: ChunkRow) -> dict[str, Any]:
    return {
        "chunk": r.n,
        "first_record": r.first_record,
        "records": r.records,
        "checksum": r.checksum,
        "state": r.state,
        "attempts": r.attempts,
        "sent_at": iso_or_none(r.sent_at),
        "acked_at": iso_or_none(r.acked_at),
        "reject_reason": r.reject_reason,
    }
