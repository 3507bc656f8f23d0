"""The receiver's SQLite state: what it applied, so dedup survives its restarts."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from ..model import RecordReject
from ..protocol import keys

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ingestions (
    id          TEXT PRIMARY KEY,
    file_id     TEXT NOT NULL,
    next_chunk  INTEGER NOT NULL DEFAULT 1,
    next_record INTEGER NOT NULL DEFAULT 0,
    completed   INTEGER NOT NULL DEFAULT 0,
    manifest    TEXT,
    rejected    INTEGER NOT NULL DEFAULT 0,
    deleted     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS chunks (
    ingestion_id TEXT NOT NULL,
    n            INTEGER NOT NULL,
    checksum     TEXT NOT NULL,
    records      INTEGER NOT NULL,
    refused      TEXT,
    PRIMARY KEY (ingestion_id, n)
);
-- Every chunk POST that passed verification, in arrival order (for order checks).
CREATE TABLE IF NOT EXISTS received (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    ingestion_id TEXT NOT NULL,
    n            INTEGER NOT NULL,
    checksum     TEXT NOT NULL,
    at           REAL NOT NULL,
    file_name    TEXT
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
    """All SQL runs on one worker thread, each operation in a single hop (one function
    per operation, its statements and commit together). The state of each ingestion
    (next chunk, next record) is also kept in memory: the store is its only writer."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self._con = con
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="receiver-db")
        self._states: dict[str, tuple[int, int, bool]] = {}
        self.lock = asyncio.Lock()

    @classmethod
    async def open(cls, data_dir: Path, durable: bool = True) -> ReceiverStore:
        """``durable=False`` (the benchmark's count mode) commits without fsync."""

        def connect() -> sqlite3.Connection:
            data_dir.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(data_dir / "receiver.db", isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            con.executescript(_SCHEMA)
            columns = {row[1] for row in con.execute("PRAGMA table_info(received)")}
            if "file_name" not in columns:  # a data folder from before the Pimingest-File-Name header
                con.execute("ALTER TABLE received ADD COLUMN file_name TEXT")
            if "refused" not in {row[1] for row in con.execute("PRAGMA table_info(chunks)")}:  # before v1.1
                con.execute("ALTER TABLE chunks ADD COLUMN refused TEXT")
                con.execute("ALTER TABLE ingestions ADD COLUMN rejected INTEGER NOT NULL DEFAULT 0")
                con.execute("ALTER TABLE ingestions ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0")
            return con

        store = cls(await asyncio.to_thread(connect))
        return store

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, self._con)

    async def close(self) -> None:
        await self._run(lambda con: con.close())
        self._thread.shutdown()

    async def state(self, ingestion_id: str) -> tuple[int, int, bool] | None:
        cached = self._states.get(ingestion_id)
        if cached is not None:
            return cached

        def read(con: sqlite3.Connection) -> tuple[int, int, bool] | None:
            row = con.execute(
                "SELECT next_chunk, next_record, completed FROM ingestions WHERE id = ?", (ingestion_id,)
            ).fetchone()
            return None if row is None else (int(row[0]), int(row[1]), bool(row[2]))

        state = await self._run(read)
        if state is not None:
            self._states[ingestion_id] = state
        return state

    def cached_state(self, ingestion_id: str) -> tuple[int, int, bool] | None:
        """The state as last read or written, without a database hop (None: not read yet)."""
        return self._states.get(ingestion_id)

    async def checksum(self, ingestion_id: str, n: int) -> str | None:
        def read(con: sqlite3.Connection) -> str | None:
            row = con.execute(
                "SELECT checksum FROM chunks WHERE ingestion_id = ? AND n = ?", (ingestion_id, n)
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._run(read)

    async def apply(
        self,
        ingestion_id: str,
        file_id: str,
        n: int,
        checksum: str,
        first_record: int,
        records: Iterable[str | None],
        count: int,
        refused: Sequence[RecordReject] = (),
        tombstones: int = 0,
        state: tuple[int, int, bool] | None = None,
    ) -> None:
        """Apply chunk ``n`` in one transaction (caller holds ``lock`` and checked the order). ``records``: each
        one's canonical text, None for one refused (``refused`` says why), or empty (count mode). ``state``:
        the ingestion's state before (None: nothing applied yet). The ingestion's next_chunk counts the chunks
        applied plus one, next_record their records: in order (v1, strict) the next chunk and its offset."""
        gone = {r.index for r in refused}
        rows = [(ingestion_id, n, first_record + i, data) for i, data in enumerate(records) if i not in gone]
        listed = (
            orjson.dumps([{"index": r.index, "reason": r.reason, "field": r.field} for r in refused]).decode()
            if refused
            else None
        )

        def write(con: sqlite3.Connection) -> None:
            con.execute("BEGIN IMMEDIATE")
            try:
                con.execute(
                    "INSERT INTO ingestions (id, file_id, next_chunk, next_record, rejected, deleted)"
                    " VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (id) DO UPDATE SET next_chunk = next_chunk + 1,"
                    " next_record = next_record + excluded.next_record, rejected = rejected + excluded.rejected,"
                    " deleted = deleted + excluded.deleted",
                    (ingestion_id, file_id, 2, count, len(refused), tombstones),
                )
                con.execute(
                    "INSERT INTO chunks (ingestion_id, n, checksum, records, refused) VALUES (?, ?, ?, ?, ?)",
                    (ingestion_id, n, checksum, count, listed),
                )
                if rows:
                    con.executemany(
                        "INSERT INTO applied (ingestion_id, chunk, record_index, data) VALUES (?, ?, ?, ?)", rows
                    )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

        self._states.pop(ingestion_id, None)
        await self._run(write)
        before = state if state is not None else (1, 0, False)
        self._states[ingestion_id] = (before[0] + 1, before[1] + count, False)

    async def refused(self, ingestion_id: str, n: int) -> list[RecordReject]:
        """The records of applied chunk ``n`` that were refused (its ACK's ``rejected``, every time)."""
        row = await self._run(
            lambda con: con.execute(
                "SELECT refused FROM chunks WHERE ingestion_id = ? AND n = ?", (ingestion_id, n)
            ).fetchone()
        )
        if row is None or row[0] is None:
            return []
        return [RecordReject(e["index"], e["reason"], e["field"]) for e in orjson.loads(row[0])]

    async def outcomes(self, ingestion_id: str) -> tuple[int, int]:
        """(records refused, tombstones taken) over the ingestion's applied chunks."""
        row = await self._run(
            lambda con: con.execute("SELECT rejected, deleted FROM ingestions WHERE id = ?", (ingestion_id,)).fetchone()
        )
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    async def current(self, field: str) -> dict[str, str]:
        """Stored key -> canonical record, applying every ingestion's records in the order they were applied
        (a tombstone removes its key). Small catalogues only: the tests' proofs."""

        def read(con: sqlite3.Connection) -> dict[str, str]:
            out: dict[str, str] = {}
            for (data,) in con.execute("SELECT data FROM applied WHERE data IS NOT NULL ORDER BY seq"):
                record = orjson.loads(data)
                try:
                    key = keys.extract(record, field)
                except keys.NoKey:
                    continue
                if record.get(keys.DELETED) is True:
                    out.pop(key, None)
                else:
                    out[key] = data
            return out

        return await self._run(read)

    async def note_received(
        self, ingestion_id: str, n: int, checksum: str, at: float, file_name: str | None = None
    ) -> None:
        await self._run(
            lambda con: con.execute(
                "INSERT INTO received (ingestion_id, n, checksum, at, file_name) VALUES (?, ?, ?, ?, ?)",
                (ingestion_id, n, checksum, at, file_name),
            )
        )

    async def received(self, ingestion_id: str) -> list[tuple[int, str, float, str | None]]:
        rows = await self._run(
            lambda con: con.execute(
                "SELECT n, checksum, at, file_name FROM received WHERE ingestion_id = ? ORDER BY seq", (ingestion_id,)
            ).fetchall()
        )
        return [(int(r[0]), str(r[1]), float(r[2]), r[3]) for r in rows]

    async def checksums(self, ingestion_id: str) -> list[str]:
        rows = await self._run(
            lambda con: con.execute(
                "SELECT checksum FROM chunks WHERE ingestion_id = ? ORDER BY n", (ingestion_id,)
            ).fetchall()
        )
        return [str(r[0]) for r in rows]

    async def complete(self, ingestion_id: str, manifest: str) -> None:
        self._states.pop(ingestion_id, None)
        await self._run(
            lambda con: con.execute(
                "UPDATE ingestions SET completed = 1, manifest = ? WHERE id = ?", (manifest, ingestion_id)
            )
        )

    async def summary(self, ingestion_id: str) -> dict[str, Any] | None:
        row = await self._run(
            lambda con: con.execute(
                "SELECT id, file_id, next_chunk, next_record, completed, manifest FROM ingestions WHERE id = ?",
                (ingestion_id,),
            ).fetchone()
        )
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
        rows = await self._run(
            lambda con: con.execute(
                "SELECT chunk, record_index, data FROM applied WHERE ingestion_id = ? ORDER BY seq", (ingestion_id,)
            ).fetchall()
        )
        return [(int(r[0]), int(r[1]), r[2]) for r in rows]
