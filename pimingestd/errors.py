"""The error tree. One root; a subclass wherever a caller must act differently.

- ConfigError: refuse to start (exit code 78, EX_CONFIG).
- StateError: the state database cannot be trusted or opened; refuse to start.
- SourceError / ParseError: the input file is bad; fail the ingestion, send nothing more.
- ChunkError: a record cannot be chunked (too large, not encodable); fail the ingestion.
- FileChangedError: the source file is gone or differs from what was ingested.
- DeliveryError: PIM-Core did not take a chunk; Rejected and AckTimeout refine it.
- SpoolError: spooled bytes do not match their recorded checksum.
"""

from __future__ import annotations


class PimIngestError(Exception):
    """Root of every error pimingestd raises on purpose."""


class ConfigError(PimIngestError):
    """The configuration is invalid; the message names the key."""


class StateError(PimIngestError):
    """The state database is unusable (corrupt, locked by another daemon, wrong schema)."""


class SourceError(PimIngestError):
    """The source file cannot be read as the requested format."""


class ParseError(SourceError):
    """The source file is malformed; the message says where."""


class NotRegularFile(SourceError):
    """The source is a symlink, FIFO, socket, device or folder: only regular files are read."""


class UnsupportedFormat(SourceError):
    """The file's format is not one pimingestd reads."""


class ChunkError(PimIngestError):
    """A record cannot be placed into a chunk."""


class FileChangedError(PimIngestError):
    """The source file vanished or its bytes changed since the ingestion began."""


class SpoolError(PimIngestError):
    """The spool is damaged: bytes do not match the recorded checksum."""


class DeliveryError(PimIngestError):
    """PIM-Core did not take a chunk or completion (after all attempts when final)."""


class Rejected(DeliveryError):
    """PIM-Core refused a chunk, by HTTP status or by a reject callback."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class AckTimeout(DeliveryError):
    """No ACK arrived within ack_timeout for one attempt."""
