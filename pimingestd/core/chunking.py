"""Cutting records into numbered chunks, one strategy at a time.

By record count: a chunk holds ``records`` records (the last one fewer). By
bytes: a chunk is flushed when the next record would push its body over
``bytes``; a single record that cannot fit alone is an error. Chunk bodies are
canonical JSON arrays (see protocol/canonical.py), so the same records always give the
same chunk bytes and the same checksum.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ..config import ChunkPolicy
from ..errors import ChunkError
from ..protocol import canonical
from ..protocol.chunk import Chunk
from ..sources import Record


def _make(n: int, first: int, count: int, body: bytes) -> Chunk:
    return Chunk(n, first, count, body, canonical.sha256(body))


def _encode_one(record: Any, index: int) -> bytes:
    try:
        return canonical.encode(record)
    except canonical.EncodeError as exc:
        raise ChunkError(f"record {index} cannot be written as JSON: {exc}") from None


def cut(records: Iterable[Record], policy: ChunkPolicy) -> Iterator[Chunk]:
    """Yield the chunks of ``records`` in order."""
    if policy.records is not None:
        return _by_count(records, policy.records)
    assert policy.bytes is not None
    return _by_bytes(records, policy.bytes)


def _by_count(records: Iterable[Record], size: int) -> Iterator[Chunk]:
    batch: list[Record] = []
    n = 0
    first = 0
    for record in records:
        batch.append(record)
        if len(batch) == size:
            n += 1
            yield _make(n, first, size, _encode_batch(batch, first))
            first += size
            batch = []
    if batch:
        yield _make(n + 1, first, len(batch), _encode_batch(batch, first))


def _encode_batch(batch: list[Record], first: int) -> bytes:
    try:
        return canonical.encode(batch)
    except canonical.EncodeError:
        # Name the culprit: encode one by one (only on the error path).
        return canonical.join_array([_encode_one(r, first + i) for i, r in enumerate(batch)])


def _by_bytes(records: Iterable[Record], limit: int) -> Iterator[Chunk]:
    # Records go straight into one growing buffer: orjson hands back each record's bytes in a
    # buffer several times larger than the text, so a list of them would hold ~10x the chunk.
    body = bytearray(b"[")
    count = 0
    n = 0
    first = 0
    for index, record in enumerate(records):
        encoded = _encode_one(record, index)
        if len(encoded) + 2 > limit:
            raise ChunkError(
                f"record {index} is {len(encoded)} bytes as JSON; it cannot fit a chunk of at most {limit} bytes"
            )
        if count and len(body) + 1 + len(encoded) + 1 > limit:
            body += b"]"
            n += 1
            yield _make(n, first, count, bytes(body))
            first += count
            body = bytearray(b"[")
            count = 0
        if count:
            body += b","
        body += encoded
        count += 1
    if count:
        body += b"]"
        yield _make(n + 1, first, count, bytes(body))
