"""The receiver's SQLite state: what it applied, so dedup survives its restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiosqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ingestions (
    id          TEXT PRIMARY KEY,
    file_id     TEXT NOT NULL,
    next_chunk  INTEGER NOT NULL DEFAULT 1,
    next_record INTEGER NOT NULL DEFAULT 0,
    completed   INTEGER NOT NULL DEFAULT 0,
    manifest    TEXT
);
CREATE TABLE IF NOT EXISTS chunks (
    ingestion_id TEXT NOT NULL,
    n            INTEGER NOT NULL,
    checksum     TEXT NOT NULL,
    records      INTEGER NOT NULL,
    PRIMARY KEY (ingestion_id, n)
);
-- Every chunk POST that passed verification, in arrival order (for order checks).
CREATE TABLE IF NOT EXISTS received (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    ingestion_id TEXT NOT NULL,
    n            INTEGER NOT NULL,
    checksum     TEXT NOT NULL,
    at           REAL NOT NULL
);
-- Append-only on purpose: a chunk applied twice would show up twice here.
CREATE TABLE IF NOT EXISTS applied (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    ingestion_id TEXT NOT NULL,
    chunk        INTEGER NOT NULL,
    record_index INTEGER NOT NULL,
    data         TEXT
);
"""


class ReceiverStore:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self.lock = asyncio.Lock()

    @classmethod
    async def open(cls, data_dir: Path, durable: bool = True) -> ReceiverStore:
        """``durable=False`` (the benchmark's count mode) commits without fsync."""
        await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
        db = await aiosqlite.connect(data_dir / "receiver.db", isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        await db.executescript(_SCHEMA)
        return cls(db)

    async def close(self) -> None:
        await self._db.close()

    async def state(self, ingestion_id: str) -> tuple[int, int, bool] | None:
        async with self._db.execute(
            "SELECT next_chunk, next_record, completed FROM ingestions WHERE id = ?", (ingestion_id,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else (int(row[0]), int(row[1]), bool(row[2]))

    async def checksum(self, ingestion_id: str, n: int) -> str | None:
        async with self._db.execute(
            "SELECT checksum FROM chunks WHERE ingestion_id = ? AND n = ?", (ingestion_id, n)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def apply(
        self,
        ingestion_id: str,
        file_id: str,
        n: int,
        checksum: str,
        first_record: int,
        records: Iterable[str | None],
        count: int,
    ) -> None:
        """Apply chunk ``n`` in one transaction (caller holds ``lock`` and checked the order)."""
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            await self._db.execute(
                "INSERT INTO ingestions (id, file_id, next_chunk, next_record) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET next_chunk = excluded.next_chunk, next_record = excluded.next_record",
                (ingestion_id, file_id, n + 1, first_record + count),
            )
            await self._db.execute(
                "INSERT INTO chunks (ingestion_id, n, checksum, records) VALUES (?, ?, ?, ?)",
                (ingestion_id, n, checksum, count),
            )
            rows = [(ingestion_id, n, first_record + i, data) for i, data in enumerate(records)]
            if rows:
                await self._db.executemany(
                    "INSERT INTO applied (ingestion_id, chunk, record_index, data) VALUES (?, ?, ?, ?)", rows
                )
            await self._db.execute("COMMIT")
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise

    async def note_received(self, ingestion_id: str, n: int, checksum: str, at: float) -> None:
        await self._db.execute(
            "INSERT INTO received (ingestion_id, n, checksum, at) VALUES (?, ?, ?, ?)", (ingestion_id, n, checksum, at)
        )

    async def received(self, ingestion_id: str) -> list[tuple[int, str, float]]:
        async with self._db.execute(
            "SELECT n, checksum, at FROM received WHERE ingestion_id = ? ORDER BY seq", (ingestion_id,)
        ) as cur:
            return [(int(r[0]), str(r[1]), float(r[2])) for r in await cur.fetchall()]

    async def checksums(self, ingestion_id: str) -> list[str]:
        async with self._db.execute(
            "SELECT checksum FROM chunks WHERE ingestion_id = ? ORDER BY n", (ingestion_id,)
        ) as cur:
            return [str(r[0]) for r in await cur.fetchall()]

    async def complete(self, ingestion_id: str, manifest: str) -> None:
        await self._db.execute(
            "UPDATE ingestions SET completed = 1, manifest = ? WHERE id = ?", (manifest, ingestion_id)
        )

    async def summary(self, ingestion_id: str) -> dict[str, Any] | None:
        async with self._db.execute(
            "SELECT id, file_id, next_chunk, next_record, completed, manifest FROM ingestions WHERE id = ?",
            (ingestion_id,),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        return {
            "ingestion_id": row[0],
            "file_id": row[1],
            "chunks_applied": row[2] - 1,
            "records_applied": row[3],
            "completed": bool(row[4]),
            "manifest": row[5],
        }

    async def applied(self, ingestion_id: str) -> list[tuple[int, int, str | None]]:
        """(chunk, record_index, canonical record) in the order they were applied."""
        async with self._db.execute(
            "SELECT chunk, record_index, data FROM applied WHERE ingestion_id = ? ORDER BY seq", (ingestion_id,)
        ) as cur:
            return [(int(r[0]), int(r[1]), r[2]) for r in await cur.fetchall()]
