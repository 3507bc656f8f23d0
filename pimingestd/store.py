"""The state database: the only code that speaks SQL.

One SQLite file in WAL mode with ``synchronous=FULL``: a chunk reported ACKed
has reached the disk, so it survives power loss, not only a crash. The schema
version lives in ``PRAGMA user_version``. A database that fails its integrity
check is refused, never recreated: a fresh one would re-send everything.

Writes go through one connection and one lock, so a multi-statement change is
one transaction and commits only when complete.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from .errors import StateError

SCHEMA_VERSION = 1
STATUSES = ("queued", "running", "completed", "failed", "cancelled")
UNFINISHED = ("queued", "running")

_SCHEMA = """
CREATE TABLE ingestions (
    id            TEXT PRIMARY KEY,
    file_id       TEXT NOT NULL,
    path          TEXT NOT NULL,
    file_name     TEXT NOT NULL,
    size          INTEGER NOT NULL,
    mtime_ns      INTEGER NOT NULL,
    format        TEXT NOT NULL,
    json_path     TEXT,
    sheet         TEXT,
    chunk_records INTEGER,
    chunk_bytes   INTEGER,
    preflight     INTEGER NOT NULL,
    source        TEXT NOT NULL,
    status        TEXT NOT NULL,
    error         TEXT,
    spooled       INTEGER NOT NULL DEFAULT 0,
    total_chunks  INTEGER,
    total_records INTEGER,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    CHECK ((chunk_records IS NULL) <> (chunk_bytes IS NULL))
);
CREATE INDEX ingestions_by_file ON ingestions (file_id, created_at);
CREATE INDEX ingestions_by_status ON ingestions (status, created_at);
CREATE TABLE chunks (
    ingestion_id  TEXT NOT NULL REFERENCES ingestions (id) ON DELETE CASCADE,
    n             INTEGER NOT NULL,
    first_record  INTEGER NOT NULL,
    records       INTEGER NOT NULL,
    checksum      TEXT NOT NULL,
    spool_offset  INTEGER,
    spool_length  INTEGER,
    state         TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    sent_at       REAL,
    acked_at      REAL,
    reject_reason TEXT,
    PRIMARY KEY (ingestion_id, n),
    CHECK (state IN ('spooled', 'sent', 'acked'))
) WITHOUT ROWID;
"""

AckOutcome = Literal["accepted", "duplicate", "unknown_ingestion", "never_sent", "mismatch"]


@dataclass(frozen=True, slots=True)
class Ingestion:
    id: str
    file_id: str
    path: str
    file_name: str
    size: int
    mtime_ns: int
    format: str
    json_path: str | None
    sheet: str | None
    chunk_records: int | None
    chunk_bytes: int | None
    preflight: bool
    source: str
    status: str
    error: str | None
    spooled: bool
    total_chunks: int | None
    total_records: int | None
    created_at: float
    updated_at: float


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


_ING_COLS = ", ".join(Ingestion.__dataclass_fields__)
_CHUNK_COLS = ", ".join(ChunkRow.__dataclass_fields__)


def _ingestion(row: Sequence[Any]) -> Ingestion:
    values = list(row)
    values[11] = bool(values[11])
    values[15] = bool(values[15])
    return Ingestion(*values)


class Store:
    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._lock = asyncio.Lock()
        self._sync = "FULL"

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating when absent) and check the database; raise StateError if unusable."""
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StateError(f"cannot open state database {path}: {exc}") from None
        try:
            await cls._prepare(db, path)
        except BaseException:
            await db.close()
            raise
        return cls(db, path)

    @staticmethod
    async def _prepare(db: aiosqlite.Connection, path: Path) -> None:
        hint = "restore it from a backup or move it away to start empty (every unfinished ingestion is then forgotten)"
        try:
            async with db.execute("PRAGMA quick_check") as cur:
                rows = [r[0] for r in await cur.fetchall()]
            if rows != ["ok"]:
                raise StateError(f"state database {path} is corrupt ({'; '.join(rows[:3])}); {hint}")
            async with db.execute("PRAGMA journal_mode=WAL") as cur:
                mode = (await cur.fetchone() or ("?",))[0]
            if mode != "wal":
                raise StateError(f"state database {path}: cannot switch to WAL mode (got {mode})")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA busy_timeout=5000")
            async with db.execute("PRAGMA user_version") as cur:
                version = (await cur.fetchone() or (0,))[0]
            if version == 0:
                async with db.execute("SELECT count(*) FROM sqlite_master") as cur:
                    objects = (await cur.fetchone() or (0,))[0]
                if objects:
                    raise StateError(f"{path} is an SQLite database but not a pimingestd state database; {hint}")
                await db.executescript("BEGIN;" + _SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
            elif version != SCHEMA_VERSION:
                raise StateError(
                    f"state database {path} has schema version {version}; this pimingestd reads version {SCHEMA_VERSION}"
                )
        except sqlite3.DatabaseError as exc:
            raise StateError(f"state database {path} is unreadable ({exc}); {hint}") from None

    async def close(self) -> None:
        await self._db.close()

    async def pragma(self, name: str) -> Any:
        async with self._db.execute(f"PRAGMA {name}") as cur:
            row = await cur.fetchone()
        return None if row is None else row[0]

    @asynccontextmanager
    async def _tx(self, *, durable: bool = True) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction. ``durable``: the commit reaches the disk (synchronous=FULL)
        before this returns. Bookkeeping that a power cut may lose harmlessly (a chunk's
        "sent" mark: it is simply sent again, and PIM-Core dedups it) commits with
        synchronous=NORMAL; in WAL mode the next FULL commit makes it durable too."""
        async with self._lock:
            mode = "FULL" if durable else "NORMAL"
            if mode != self._sync:
                await self._db.execute(f"PRAGMA synchronous={mode}")
                self._sync = mode
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                with suppress(sqlite3.OperationalError):  # no transaction left to roll back
                    await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    # ---- ingestions -------------------------------------------------------

    async def create_ingestion(
        self,
        *,
        file_id: str,
        path: str,
        file_name: str,
        size: int,
        mtime_ns: int,
        format: str,
        json_path: str | None,
        sheet: str | None,
        chunk_records: int | None,
        chunk_bytes: int | None,
        preflight: bool,
        source: str,
    ) -> Ingestion:
        now = time.time()
        ing_id = uuid.uuid4().hex
        async with self._tx() as db:
            await db.execute(
                f"INSERT INTO ingestions ({_ING_COLS}) VALUES ({', '.join('?' * 20)})",
                (
                    ing_id,
                    file_id,
                    path,
                    file_name,
                    size,
                    mtime_ns,
                    format,
                    json_path,
                    sheet,
                    chunk_records,
                    chunk_bytes,
                    int(preflight),
                    source,
                    "queued",
                    None,
                    0,
                    None,
                    None,
                    now,
                    now,
                ),
            )
        ing = await self.get(ing_id)
        assert ing is not None
        return ing

    async def get(self, ingestion_id: str) -> Ingestion | None:
        async with self._db.execute(f"SELECT {_ING_COLS} FROM ingestions WHERE id = ?", (ingestion_id,)) as cur:
            row = await cur.fetchone()
        return None if row is None else _ingestion(row)

    async def latest_for_file(self, file_id: str) -> Ingestion | None:
        """The newest ingestion of these bytes that was not cancelled."""
        async with self._db.execute(
            f"SELECT {_ING_COLS} FROM ingestions WHERE file_id = ? AND status != 'cancelled'"
            " ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (file_id,),
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else _ingestion(row)

    async def by_path(self, path: str) -> Ingestion | None:
        """The newest ingestion recorded for exactly this path."""
        async with self._db.execute(
            f"SELECT {_ING_COLS} FROM ingestions WHERE path = ? ORDER BY created_at DESC, rowid DESC LIMIT 1", (path,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else _ingestion(row)

    async def under(self, folder: str) -> list[Ingestion]:
        """Ingestions whose recorded path lies under ``folder``."""
        prefix = folder.rstrip("/") + "/"
        async with self._db.execute(
            f"SELECT {_ING_COLS} FROM ingestions WHERE substr(path, 1, ?) = ? ORDER BY created_at, rowid",
            (len(prefix), prefix),
        ) as cur:
            return [_ingestion(r) for r in await cur.fetchall()]

    async def with_status(self, statuses: Iterable[str]) -> list[Ingestion]:
        wanted = list(statuses)
        async with self._db.execute(
            f"SELECT {_ING_COLS} FROM ingestions WHERE status IN ({', '.join('?' * len(wanted))})"
            " ORDER BY created_at, rowid",
            wanted,
        ) as cur:
            return [_ingestion(r) for r in await cur.fetchall()]

    async def list_ingestions(self, status: str | None, limit: int, offset: int) -> list[Ingestion]:
        where, args = ("WHERE status = ?", [status]) if status else ("", [])
        async with self._db.execute(
            f"SELECT {_ING_COLS} FROM ingestions {where} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ) as cur:
            return [_ingestion(r) for r in await cur.fetchall()]

    async def count_by_status(self) -> dict[str, int]:
        async with self._db.execute("SELECT status, count(*) FROM ingestions GROUP BY status") as cur:
            return {s: c for s, c in await cur.fetchall()}

    async def set_status(self, ingestion_id: str, status: str, error: str | None = None) -> None:
        async with self._tx() as db:
            await db.execute(
                "UPDATE ingestions SET status = ?, error = ?, updated_at = ? WHERE id = ?",
                (status, error, time.time(), ingestion_id),
            )

    async def set_path(self, ingestion_id: str, path: str) -> None:
        async with self._tx(durable=False) as db:
            await db.execute(
                "UPDATE ingestions SET path = ?, updated_at = ? WHERE id = ?", (path, time.time(), ingestion_id)
            )

    # ---- the spool ---------------------------------------------------------

    async def record_spool(self, ingestion_id: str, chunks: list[SpooledChunk]) -> None:
        """Record a finished spool pass: every chunk and the totals, in one transaction."""
        total_records = sum(c.records for c in chunks)
        async with self._tx(durable=False) as db:
            await db.execute("DELETE FROM chunks WHERE ingestion_id = ? AND state = 'spooled'", (ingestion_id,))
            await db.executemany(
                "INSERT INTO chunks (ingestion_id, n, first_record, records, checksum, spool_offset, spool_length, state)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'spooled')"
                " ON CONFLICT (ingestion_id, n) DO UPDATE SET spool_offset = excluded.spool_offset,"
                " spool_length = excluded.spool_length",
                [(ingestion_id, c.n, c.first_record, c.records, c.checksum, c.offset, c.length) for c in chunks],
            )
            await db.execute(
                "UPDATE ingestions SET spooled = 1, total_chunks = ?, total_records = ?, updated_at = ? WHERE id = ?",
                (len(chunks), total_records, time.time(), ingestion_id),
            )

    async def drop_spool(self, ingestion_id: str) -> None:
        """Forget spool positions (the spool file is gone); sent and acked history stays."""
        async with self._tx(durable=False) as db:
            await db.execute("DELETE FROM chunks WHERE ingestion_id = ? AND state = 'spooled'", (ingestion_id,))
            await db.execute(
                "UPDATE chunks SET spool_offset = NULL, spool_length = NULL WHERE ingestion_id = ?", (ingestion_id,)
            )
            await db.execute(
                "UPDATE ingestions SET spooled = 0, updated_at = ? WHERE id = ?", (time.time(), ingestion_id)
            )

    async def set_totals(self, ingestion_id: str, total_chunks: int, total_records: int) -> None:
        async with self._tx(durable=False) as db:
            await db.execute(
                "UPDATE ingestions SET total_chunks = ?, total_records = ?, updated_at = ? WHERE id = ?",
                (total_chunks, total_records, time.time(), ingestion_id),
            )

    # ---- chunks --------------------------------------------------------------

    async def chunk(self, ingestion_id: str, n: int) -> ChunkRow | None:
        async with self._db.execute(
            f"SELECT {_CHUNK_COLS} FROM chunks WHERE ingestion_id = ? AND n = ?", (ingestion_id, n)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else ChunkRow(*row)

    async def chunks(self, ingestion_id: str, start: int = 1, limit: int = -1) -> list[ChunkRow]:
        async with self._db.execute(
            f"SELECT {_CHUNK_COLS} FROM chunks WHERE ingestion_id = ? AND n >= ? ORDER BY n LIMIT ?",
            (ingestion_id, start, limit),
        ) as cur:
            return [ChunkRow(*r) for r in await cur.fetchall()]

    async def progress(self, ingestion_id: str) -> tuple[int, int]:
        """(chunks ACKed, records ACKed)."""
        async with self._db.execute(
            "SELECT count(*), coalesce(sum(records), 0) FROM chunks WHERE ingestion_id = ? AND state = 'acked'",
            (ingestion_id,),
        ) as cur:
            row = await cur.fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    async def acked_checksums(self, ingestion_id: str) -> list[str]:
        async with self._db.execute(
            "SELECT checksum FROM chunks WHERE ingestion_id = ? AND state = 'acked' ORDER BY n", (ingestion_id,)
        ) as cur:
            return [r[0] for r in await cur.fetchall()]

    async def _statement(self, sql: str, params: Sequence[Any], *, durable: bool) -> list[Any]:
        """One write statement as its own transaction: a single round trip to the database thread
        (two when the synchronous level changes). Holds the write lock like _tx."""
        async with self._lock:
            mode = "FULL" if durable else "NORMAL"
            if mode != self._sync:
                await self._db.execute(f"PRAGMA synchronous={mode}")
                self._sync = mode
            return list(await self._db.execute_fetchall(sql, params))

    async def mark_sent(self, ingestion_id: str, n: int, first_record: int, records: int, checksum: str) -> str:
        """Persist an attempt before its POST goes out. Returns the chunk's state after:
        'sent', or 'acked' when an ACK was already committed (then nothing is to be sent)."""
        rows = await self._statement(
            "INSERT INTO chunks (ingestion_id, n, first_record, records, checksum, state, attempts, sent_at)"
            " VALUES (?, ?, ?, ?, ?, 'sent', 1, ?)"
            " ON CONFLICT (ingestion_id, n) DO UPDATE SET"
            "  attempts = attempts + (state != 'acked'),"
            "  sent_at = CASE WHEN state = 'acked' THEN sent_at ELSE excluded.sent_at END,"
            "  state = CASE WHEN state = 'acked' THEN 'acked' ELSE 'sent' END"
            " RETURNING state, checksum",
            (ingestion_id, n, first_record, records, checksum, time.time()),
            durable=False,
        )
        row = rows[0]
        if row[1] != checksum:
            raise StateError(
                f"chunk {n}: recorded checksum {row[1]} differs from the bytes about to be sent {checksum}"
            )
        return str(row[0])

    @staticmethod
    async def _classify(db: aiosqlite.Connection, ingestion_id: str, n: int, checksum: str) -> AckOutcome | None:
        """Why a callback about chunk ``n`` cannot change it, or None when it is sent and matches."""
        async with db.execute("SELECT 1 FROM ingestions WHERE id = ?", (ingestion_id,)) as cur:
            if await cur.fetchone() is None:
                return "unknown_ingestion"
        async with db.execute(
            "SELECT state, checksum FROM chunks WHERE ingestion_id = ? AND n = ?", (ingestion_id, n)
        ) as cur:
            row = await cur.fetchone()
        if row is None or row[0] == "spooled":
            return "never_sent"
        if row[1] != checksum:
            return "mismatch"
        if row[0] == "acked":
            return "duplicate"
        return None

    async def commit_ack(self, ingestion_id: str, n: int, checksum: str) -> AckOutcome:
        """Commit an ACK durably when it matches a chunk that was sent: one statement, one fsync.
        The reasons for refusing are looked up only when it matched nothing."""
        for _ in range(2):  # the second round covers a "sent" mark committed between update and lookup
            updated = await self._statement(
                "UPDATE chunks SET state = 'acked', acked_at = ?, reject_reason = NULL"
                " WHERE ingestion_id = ? AND n = ? AND state = 'sent' AND checksum = ? RETURNING n",
                (time.time(), ingestion_id, n, checksum),
                durable=True,
            )
            if updated:
                return "accepted"
            refused = await self._classify(self._db, ingestion_id, n, checksum)
            if refused is not None:
                return refused
        return "never_sent"

    async def last_activity(self, ingestion_id: str) -> float | None:
        """The time of the last ACK committed (ACKs do not touch the ingestion row, to stay one statement)."""
        async with self._db.execute(
            "SELECT max(acked_at) FROM chunks WHERE ingestion_id = ? AND state = 'acked'", (ingestion_id,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None or row[0] is None else float(row[0])

    async def record_reject(self, ingestion_id: str, n: int, checksum: str, reason: str) -> AckOutcome:
        """Note a reject against a sent chunk; same outcomes as commit_ack, nothing is marked done."""
        async with self._tx(durable=False) as db:
            refused = await self._classify(db, ingestion_id, n, checksum)
            if refused is not None:
                return refused
            await db.execute(
                "UPDATE chunks SET reject_reason = ? WHERE ingestion_id = ? AND n = ?", (reason, ingestion_id, n)
            )
        return "accepted"
