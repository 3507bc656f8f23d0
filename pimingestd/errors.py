"""The error tree. One root; a subclass wherever a caller must act differently.

Each class carries the HTTP status and the short title an API answer gives it;
the error middleware (api.errors_middleware) is the one place that maps them,
so no handler repeats (or contradicts) the mapping.

- ConfigError: refuse to start (exit code 78, EX_CONFIG); a bad option in a request (400).
- StateError: the state database cannot be trusted or opened; refuse to start (exit 74).
- SourceError / ParseError / NotRegularFile / UnsupportedFormat: the input file is bad;
  fail the ingestion, send nothing more.
- InvalidRecord / TooManyDeletions: a record-level rule refused the file before anything was sent.
- ChunkError: a record cannot be chunked (too large, not encodable); fail the ingestion.
- FileChangedError: the source file is gone or differs from what was ingested.
- DeliveryError: PIM-Core did not take a chunk or completion; Rejected refines it.
- SpoolError: spooled bytes do not match their recorded checksum.
- NotAllowed / Draining / UnknownIngestion: an operation refused (409, 503, 404).
- UploadTooLarge / UploadAborted: an upload not taken (413, 400); nothing of it is kept.
- DaemonUnreachable: the CLI could not reach the daemon (exit 3).
- Paused: not an error: a run stopped at a chunk boundary because the daemon drains.
"""

from __future__ import annotations

from typing import ClassVar


class PimIngestError(Exception):
    """Root of every error pimingestd raises on purpose."""

    http_status: ClassVar[int] = 500
    title: ClassVar[str] = "internal error"


class ConfigError(PimIngestError):
    """The configuration (or a request's options) is invalid; the message names the key."""

    http_status = 400
    title = "bad configuration"


class StateError(PimIngestError):
    """The state database is unusable (corrupt, locked by another daemon, wrong schema)."""

    http_status = 503
    title = "state database unusable"


class DiskFull(StateError):
    """A write found no space (ENOSPC, EDQUOT, SQLITE_FULL); the message names the path and its free space.
    What was being written did not happen, whole: nothing is half-committed."""

    http_status = 507
    title = "disk full"

    def __init__(self, message: str, area: str = "") -> None:
        super().__init__(message)
        self.area = area  # "state", "spool", "inbox"


class SourceError(PimIngestError):
    """The source file cannot be read as the requested format."""

    http_status = 400
    title = "cannot read the file"


class ParseError(SourceError):
    """The source file is malformed; the message says where."""

    http_status = 422
    title = "malformed file"


class NotRegularFile(SourceError):
    """The source is a symlink, FIFO, socket, device or folder: only regular files are read."""

    title = "not a regular file"


class UrlNotAllowed(SourceError):
    """A remote URL that ``[remote] allowed_urls`` does not allow (or that carries credentials)."""

    title = "URL not allowed"


class RemoteError(SourceError):
    """A remote object cannot be reached or read (connection, host key, credentials, a cut transfer)."""

    http_status = 502
    title = "cannot read the remote object"


class RemoteNotFound(RemoteError):
    """No object at the URL."""

    http_status = 404
    title = "no such remote object"


class InvalidRecord(SourceError):
    """A record failed the ingestion's validation (schema, required fields, key) under ``on_invalid = "fail"``;
    the message names the record and, for the schema, the failing keyword's path. Nothing was sent."""

    title = "invalid record"


class TooManyDeletions(SourceError):
    """A full file would delete more of its delta scope than ``max_deletions`` allows; nothing was sent."""

    title = "too many deletions"


class UnsupportedFormat(SourceError):
    """The file's format is not one pimingestd reads."""

    http_status = 415
    title = "unsupported format"


class ChunkError(PimIngestError):
    """A record cannot be placed into a chunk."""

    http_status = 422
    title = "record cannot be chunked"


class FileChangedError(PimIngestError):
    """The source file vanished or its bytes changed since the ingestion began."""

    http_status = 409
    title = "file is changing"


class SpoolError(PimIngestError):
    """The spool is damaged: bytes do not match the recorded checksum."""

    title = "spool damaged"


class DeliveryError(PimIngestError):
    """PIM-Core did not take a chunk or completion (after all attempts when final)."""

    http_status = 502
    title = "PIM-Core did not take it"


class Rejected(DeliveryError):
    """PIM-Core refused a chunk, by HTTP status or by a reject callback."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class TooEarly(DeliveryError):
    """v2, strict order: the receiver answered 425; the chunk came ahead of its turn. Sent again shortly,
    not counted as a failed attempt (up to a bound)."""


class Busy(DeliveryError):
    """v2 back-pressure: the receiver answered 429 (or 503 with Retry-After); nothing is sent to it for
    ``seconds``, and the attempt does not count as failed."""

    def __init__(self, message: str, *, seconds: float, status: int) -> None:
        super().__init__(message)
        self.seconds = seconds
        self.status = status


class NotAllowed(PimIngestError):
    """The operation does not apply to the ingestion in its current status."""

    http_status = 409
    title = "not allowed in the ingestion's status"


class Draining(PimIngestError):
    """The daemon is shutting down and takes no new work."""

    http_status = 503
    title = "draining"


class UnknownIngestion(PimIngestError):
    """No ingestion has this id."""

    http_status = 404
    title = "unknown ingestion"


class UploadTooLarge(PimIngestError):
    """An upload over [http] max_upload_bytes; nothing of it is kept."""

    http_status = 413
    title = "upload too large"


class UploadAborted(PimIngestError):
    """The client stopped sending before the upload was complete; nothing of it is kept."""

    http_status = 400
    title = "upload aborted"


class DaemonUnreachable(PimIngestError):
    """The CLI did not get an answer from the daemon."""


class Duplicate(Exception):
    """A remote object whose bytes, known once read, were ingested already: the run ends, nothing
    is sent (an outcome, not an error: the ingestion ends as cancelled, saying which one it repeats)."""


class Paused(Exception):
    """A run stopped at a chunk boundary because the daemon drains; it resumes at the next start."""
