"""One chunk as the wire carries it: its number, where its records start, its canonical body and digest.

Chunks are cut by the core (plain ingestions) and by the record pipeline (ingestions with rules), and sent
by the protocol; so the value lives here, below both. ``meta`` is the opaque form of what the chunk's row
keeps of its records (``model.ChunkMeta``); the wire never carries it.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import canonical


@dataclass(frozen=True, slots=True)
class Chunk:
    n: int  # 1-based, contiguous
    first_record: int  # 0-based index in the file of its first record
    records: int
    body: bytes
    digest: bytes  # SHA-256 of body
    meta: bytes | None = None  # what its row keeps of its records (model.ChunkMeta); None for plain ingestions

    @property
    def checksum(self) -> str:
        return canonical.checksum(self.digest)
