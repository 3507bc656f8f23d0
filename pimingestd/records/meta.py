"""What a chunk row keeps of its records, for the moment its ACK commits.

A chunk of an ingestion with record rules holds records that need not be contiguous in the file (invalid
and unchanged ones are skipped), so the row keeps each record's 0-based position in the file (for the
reject file), its key and the hash of its canonical bytes (stored as the scope's version when the ACK
commits). A chunk of tombstones has keys only. Rows of plain ingestions keep nothing: a record's position
is then the chunk's first_record plus its index.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

HASH_BYTES = 16  # of a record's SHA-256: a change detector, never a security boundary


@dataclass(frozen=True, slots=True)
class ChunkMeta:
    positions: list[int] | None  # None: a chunk of tombstones
    keys: list[str] | None  # stored keys (records/keys.py); None when records have no key
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
