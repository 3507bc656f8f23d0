"""Prometheus metrics, in a registry per daemon (so tests can run several in one process).

Counters are bumped by the core as things happen; gauges that mirror the
state database (ingestions by status) are refreshed when /metrics is scraped.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from .model import STATUSES
from .recent import Recent

__all__ = ["CONTENT_TYPE", "Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.records_total = 0  # plain mirror of records_acked, for the sd_notify STATUS rate
        self.recent = Recent()  # the last hour per minute, for the status page
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.chunks_sent = Counter("pimingestd_chunks_sent", "Chunk POSTs sent to PIM-Core (every attempt)", registry=r)
        self.chunks_acked = Counter("pimingestd_chunks_acked", "Chunks whose ACK was committed", registry=r)
        self.chunks_rejected = Counter(
            "pimingestd_chunks_rejected", "Chunks refused by PIM-Core (reject callback or 4xx)", registry=r
        )
        self.chunks_retried = Counter("pimingestd_chunks_retried", "Chunk attempts after the first", registry=r)
        self.records_acked = Counter(
            "pimingestd_records_acked", "Records in chunks whose ACK was committed", registry=r
        )
        self.records_rejected = Counter(
            "pimingestd_records_rejected",
            "Records in reject files: refused by PIM-Core in an ACK (by=pimcore) or invalid and skipped (by=validation)",
            ["by"],
            registry=r,
        )
        self.records_unchanged = Counter(
            "pimingestd_records_unchanged", "Records not sent: unchanged since their ACKed version (delta)", registry=r
        )
        self.chunks_too_early = Counter(
            "pimingestd_chunks_too_early",
            "Chunk POSTs answered 425: ahead of their turn under strict order (v2); sent again, not failures",
            registry=r,
        )
        self.receiver_busy = Counter(
            "pimingestd_receiver_busy",
            "Chunk POSTs answered 429, or 503 with Retry-After: sending to PIM-Core paused (v2), not failures",
            ["status"],
            registry=r,
        )
        self.window = Gauge(
            "pimingestd_window",
            "Chunks that may be in flight to PIM-Core now (the adaptive window; 0: none announced, v1)",
            registry=r,
        )
        self.bytes_sent = Counter("pimingestd_bytes_sent", "Chunk body bytes sent (every attempt)", registry=r)
        self.ack_latency = Histogram(
            "pimingestd_ack_latency_seconds",
            "From the chunk POST to its committed ACK",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ingestions = Gauge(
            "pimingestd_ingestions", "Ingestions in the state database by status", ["status"], registry=r
        )
        self.in_flight = Gauge("pimingestd_chunks_in_flight", "Chunks sent and waiting for their ACK", registry=r)
        self.last_ack = Gauge(
            "pimingestd_last_ack_timestamp_seconds", "Unix time of the last committed ACK (0: none yet)", registry=r
        )
        # Disk use, measured by the retention task (pimingestd/retention.py) every interval.
        self.state_bytes = Gauge(
            "pimingestd_state_database_bytes", "Bytes of the state database and its WAL", registry=r
        )
        self.folder_bytes = Gauge(
            "pimingestd_inbox_folder_bytes", "Bytes of the files in each inbox folder", ["folder"], registry=r
        )
        self.folder_files = Gauge("pimingestd_inbox_folder_files", "Files in each inbox folder", ["folder"], registry=r)
        self.spool_bytes = Gauge(
            "pimingestd_spool_bytes", "Bytes of the spool files of unfinished ingestions", registry=r
        )
        self.callbacks_refused = Counter(
            "pimingestd_callbacks_refused",
            "ACK callbacks refused for their signature (each one; the log is throttled)",
            registry=r,
        )
        self.pruned_rows = Counter("pimingestd_pruned_chunk_rows", "Chunk rows removed by retention", registry=r)
        self.pruned_files = Counter(
            "pimingestd_pruned_files", "Files removed from done/ and failed/ by retention", registry=r
        )

    def acked(self, records: int, latency: float | None) -> None:
        self.recent.acked(records)
        self.records_total += records
        self.chunks_acked.inc()
        self.records_acked.inc(records)
        self.last_ack.set(time.time())
        if latency is not None:
            self.ack_latency.observe(latency)

    def render(self, by_status: dict[str, int], in_flight: int, window: int | None = None) -> bytes:
        for status in STATUSES:
            self.ingestions.labels(status).set(by_status.get(status, 0))
        self.in_flight.set(in_flight)
        self.window.set(window or 0)
        return generate_latest(self.registry)
