"""Values that cross module boundaries: ingestion states, the transitions allowed between them, and the
records the store, the core and the API hand each other (frozen, slotted).

The state machine is the single source of truth for status changes: the store
applies a change only when the row's current status is one the target may be
reached from (``UPDATE ... WHERE status IN (...)``), so a cancel cannot be
overwritten by a concurrent resume, and a completion cannot be recorded for a
cancelled ingestion, whatever order the callers run in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import orjson


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


AckOutcome = Literal["accepted", "duplicate", "unknown_ingestion", "never_sent", "mismatch", "bad_rejected"]


REMOTE_SCHEMES = ("s3", "sftp", "http", "https")
# The error of a remote ingestion ended because its bytes (known after the spool pass) were ingested already.
DUPLICATE = "duplicate of "


@dataclass(frozen=True, slots=True)
class Ingestion:
    id: str
    file_id: str
    path: str
    file_name: str
    size: int
    mtime_ns: int
    format: str
    chunk_records: int | None
    chunk_bytes: int | None
    preflight: bool
    source: str
    status: Status
    error: str | None
    spooled: bool
    total_chunks: int | None
    total_records: int | None
    created_at: float
    updated_at: float
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # the format's options (sources/)
    completing: bool = False  # the completion was (or is being) sent: it can no longer be cancelled
    version: str = ""  # a remote object's version (ETag, version id, mtime); "" for local files
    dedup: bool = True  # False: re_ingestion was asked for (remote: checked once the file_id is known)
    manifest: str | None = None  # the completion's manifest, kept after the chunk rows are pruned
    pruned_at: float | None = None  # when retention removed its chunk rows
    pruned_chunks: int = 0  # chunks and records ACKed, as counted when the rows were removed
    pruned_records: int = 0
    rules: dict[str, Any] = dataclasses.field(default_factory=dict)  # record rules (records/rules.py), as JSON
    scope: str = ""  # the delta scope whose versions its ACKs record ("" when records have no key)
    records_rejected: int = 0  # in the reject file: refused by PIM-Core, or invalid and skipped
    records_invalid: int = 0  # of those, refused by validation (never sent)
    records_unchanged: int = 0  # not sent: unchanged since the scope's ACKed version (delta)
    refused: int = 0  # records (tombstones included) PIM-Core refused in its ACKs: the completion's "rejected"
    deletions: int = 0  # keys of the scope absent from this full file (listed, or sent as tombstones)
    deleted: int = 0  # tombstones ACKed and not refused

    @property
    def remote(self) -> bool:
        """Whether ``path`` is a remote object's URL (a local path is absolute: it starts with /)."""
        return self.path.partition("://")[0] in REMOTE_SCHEMES


@dataclass(frozen=True, slots=True)
class ChunkRow:
    n: int
    first_record: int
    records: int
    checksum: str
    spool_offset: int | None
    spool_length: int | None
    state: str
    attempts: int
    sent_at: float | None
    acked_at: float | None
    reject_reason: str | None


@dataclass(frozen=True, slots=True)
class SpooledChunk:
    n: int
    first_record: int
    records: int
    checksum: str
    offset: int
    length: int
    meta: bytes | None = None  # what the chunk row keeps of its records (ChunkMeta, below)


@dataclass(frozen=True, slots=True)
class Invalid:
    """A record that failed validation and was skipped: its 0-based position in the file, and why."""

    position: int
    reason: str
    field: str | None = None


@dataclass(frozen=True, slots=True)
class SpoolPage:
    """What one step of a spool pass hands the store: chunks, invalid records, absent keys, skipped counts."""

    chunks: list[SpooledChunk] = dataclasses.field(default_factory=list)
    invalid: list[Invalid] = dataclasses.field(default_factory=list)
    deletions: list[str] = dataclasses.field(default_factory=list)  # stored keys absent from the file
    unchanged: int = 0


@dataclass(frozen=True, slots=True)
class RecordReject:
    """One entry of an ACK's ``rejected`` list (protocol v1.1)."""

    index: int  # 0-based position in the chunk body
    reason: str
    field: str | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """How far an ingestion got, from its chunk rows."""

    chunks_acked: int = 0
    records_acked: int = 0
    last_ack: float | None = None  # time of the last committed ACK
    attempts_in_flight: int = 0  # attempts of the chunk sent and not yet ACKed (0: none)


@dataclass(frozen=True, slots=True)
class IngestRequest:
    path: Path | None = None  # absolute, already checked against allowed roots; or
    url: str | None = None  # a remote object (s3://, sftp://, https://), checked against [remote] allowed_urls
    format: str | None = None
    chunk_records: int | None = None
    chunk_bytes: int | None = None
    re_ingestion: bool = False
    source: str = "api"
    name: str | None = None  # shown as file_name; the inbox passes the path relative to the inbox
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the format's options (sources/)
    rules: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # record rules (records/rules.py)
    scope: str | None = None  # the delta scope when the rules name none (a profile's match); else the file's name


@dataclass(frozen=True, slots=True)
class Submitted:
    ingestion: Ingestion
    created: bool  # False: an existing ingestion of the same bytes answered
    adopted: bool = False  # an existing ingestion of the same bytes now reads this copy


# ---- what a chunk row keeps of its records ----------------------------------------------------------
# What a chunk row keeps of its records, for the moment its ACK commits.
#
# A chunk of an ingestion with record rules holds records that need not be contiguous in the file (invalid
# and unchanged ones are skipped), so the row keeps each record's 0-based position in the file (for the
# reject file), its key and the hash of its canonical bytes (stored as the scope's version when the ACK
# commits). A chunk of tombstones has keys only. Rows of plain ingestions keep nothing: a record's position
# is then the chunk's first_record plus its index.

HASH_BYTES = 16  # of a record's SHA-256: a change detector, never a security boundary


@dataclass(frozen=True, slots=True)
class ChunkMeta:
    positions: list[int] | None  # None: a chunk of tombstones
    keys: list[str] | None  # stored keys (protocol/keys.py); None when records have no key
    hashes: bytes | None  # HASH_BYTES per record, in order; None when no version is recorded
    tombstones: bool = False

    def encode(self) -> bytes:
        raw = orjson.dumps(
            {"p": self.positions, "k": self.keys, "h": self.hashes.hex() if self.hashes else None, "t": self.tombstones}
        )
        return bytes(memoryview(raw))  # orjson's buffer can be 8 times the text; a page holds many of these

    @classmethod
    def decode(cls, raw: bytes) -> ChunkMeta:
        data = orjson.loads(raw)
        hashes = bytes.fromhex(data["h"]) if data["h"] else None
        return cls(data["p"], data["k"], hashes, bool(data["t"]))

    def hash(self, index: int) -> bytes:
        assert self.hashes is not None
        return self.hashes[index * HASH_BYTES : (index + 1) * HASH_BYTES]
