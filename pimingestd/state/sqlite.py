"""The state database: the only code that writes it (state/lookups.py holds the read-only views that worker
threads use; no other module speaks SQL to it).

One SQLite file in WAL mode with ``synchronous=FULL``: a chunk reported ACKed
has reached the disk, so it survives power loss, not only a crash. The schema
version lives in ``PRAGMA user_version``. A database that fails its integrity
check is refused, never recreated: a fresh one would re-send everything.

Writes go through one connection and one lock, so a multi-statement change is
one transaction and commits only when complete. Every operation runs as its own
task behind ``asyncio.shield``: a caller cancelled at any await (a cancelled
ingestion, a client that hung up) cannot split it; it completes, or rolls back,
as a unit, and the connection is never left inside a transaction or at a
synchronous level the store does not know of.

Status changes follow ``model.TRANSITIONS``, enforced by the UPDATE itself.
Paths are stored with ``names.to_text`` (lossless for names that are not UTF-8).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import aiosqlite
import orjson

from ..diskspace import Conditions, disk_full, is_full
from ..errors import StateError
from ..model import (
    TRANSITIONS,
    AckOutcome,
    ChunkMeta,
    ChunkRow,
    Ingestion,
    Progress,
    RecordReject,
    SpooledChunk,
    SpoolPage,
    Status,
)
from ..names import from_text, to_text

__all__ = ["Store"]

SCHEMA_VERSION = 6

# Record-level outcomes (schema 5): refused and invalid records, keys a full file no longer holds, and each
# delta scope's ACKed versions.
_RECORD_TABLES = """
CREATE TABLE record_rejects (
    ingestion_id  TEXT NOT NULL REFERENCES ingestions (id) ON DELETE CASCADE,
    position      INTEGER NOT NULL,
    chunk         INTEGER,
    idx           INTEGER,
    reason        TEXT NOT NULL,
    field         TEXT,
    PRIMARY KEY (ingestion_id, position)
) WITHOUT ROWID;
CREATE TABLE deletions (
    ingestion_id  TEXT NOT NULL REFERENCES ingestions (id) ON DELETE CASCADE,
    key           TEXT NOT NULL,
    state         TEXT NOT NULL,
    reason        TEXT,
    PRIMARY KEY (ingestion_id, key),
    CHECK (state IN ('absent', 'deleted', 'refused'))
) WITHOUT ROWID;
CREATE TABLE delta_versions (
    id            INTEGER PRIMARY KEY,
    scope         TEXT NOT NULL,
    key           TEXT NOT NULL,
    hash          BLOB NOT NULL,
    writer        INTEGER NOT NULL
);
CREATE UNIQUE INDEX delta_versions_by_key ON delta_versions (scope, key);
CREATE INDEX ingestions_by_created ON ingestions (created_at);
"""

_SCHEMA = """
CREATE TABLE ingestions (
    id            TEXT PRIMARY KEY,
    file_id       TEXT NOT NULL,
    path          TEXT NOT NULL,
    file_name     TEXT NOT NULL,
    size          INTEGER NOT NULL,
    mtime_ns      INTEGER NOT NULL,
    format        TEXT NOT NULL,
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
    options       TEXT NOT NULL DEFAULT '{}',
    completing    INTEGER NOT NULL DEFAULT 0,
    version       TEXT NOT NULL DEFAULT '',
    dedup         INTEGER NOT NULL DEFAULT 1,
    manifest      TEXT,
    pruned_at     REAL,
    pruned_chunks INTEGER NOT NULL DEFAULT 0,
    pruned_records INTEGER NOT NULL DEFAULT 0,
    rules         TEXT NOT NULL DEFAULT '{}',
    scope         TEXT NOT NULL DEFAULT '',
    records_rejected  INTEGER NOT NULL DEFAULT 0,
    records_invalid   INTEGER NOT NULL DEFAULT 0,
    records_unchanged INTEGER NOT NULL DEFAULT 0,
    refused       INTEGER NOT NULL DEFAULT 0,
    deletions     INTEGER NOT NULL DEFAULT 0,
    deleted       INTEGER NOT NULL DEFAULT 0,
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
    meta          BLOB,
    PRIMARY KEY (ingestion_id, n),
    CHECK (state IN ('spooled', 'sent', 'acked'))
) WITHOUT ROWID;
CREATE INDEX ingestions_by_path ON ingestions (path, created_at);
CREATE TABLE remote_seen (
    url           TEXT NOT NULL,
    version       TEXT NOT NULL,
    size          INTEGER NOT NULL,
    ingestion_id  TEXT,
    state         TEXT NOT NULL,
    seen_at       REAL NOT NULL,
    PRIMARY KEY (url, version, size),
    CHECK (state IN ('taken', 'moved'))
) WITHOUT ROWID;
"""
_SCHEMA += _RECORD_TABLES


# Each step takes a database of the version before it to the next one, in one transaction.
_MIGRATIONS: dict[int, str] = {
    # 1 -> 2: format options as one JSON column (json_path and sheet move into it; json_patch drops
    # the nulls); the completion claim (a cancel cannot undo a completion already sent); paths stored
    # losslessly (names.to_text: a backslash is doubled).
    1: "ALTER TABLE ingestions ADD COLUMN options TEXT NOT NULL DEFAULT '{}';"
    "UPDATE ingestions SET options = json_patch('{}', json_object('json_path', json_path, 'sheet', sheet));"
    "ALTER TABLE ingestions DROP COLUMN json_path;"
    "ALTER TABLE ingestions DROP COLUMN sheet;"
    "ALTER TABLE ingestions ADD COLUMN completing INTEGER NOT NULL DEFAULT 0;"
    "UPDATE ingestions SET path = replace(path, '\\', '\\\\');",
    # 2 -> 3: remote objects (a URL as the path, the object's version, whether to dedup once the
    # file_id is known after the spool pass) and the remote inboxes' ledger.
    2: "ALTER TABLE ingestions ADD COLUMN version TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE ingestions ADD COLUMN dedup INTEGER NOT NULL DEFAULT 1;"
    "CREATE INDEX ingestions_by_path ON ingestions (path, created_at);"
    "CREATE TABLE remote_seen (url TEXT NOT NULL, version TEXT NOT NULL, size INTEGER NOT NULL,"
    " ingestion_id TEXT, state TEXT NOT NULL, seen_at REAL NOT NULL, PRIMARY KEY (url, version, size),"
    " CHECK (state IN ('taken', 'moved'))) WITHOUT ROWID;",
    # 3 -> 4: retention. An ingestion's summary outlives its chunk rows: the manifest, and the ACKed counts
    # at the time its rows were pruned.
    3: "ALTER TABLE ingestions ADD COLUMN manifest TEXT;"
    "ALTER TABLE ingestions ADD COLUMN pruned_at REAL;"
    "ALTER TABLE ingestions ADD COLUMN pruned_chunks INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE ingestions ADD COLUMN pruned_records INTEGER NOT NULL DEFAULT 0;",
    # 4 -> 5: record-level outcomes (issue 15): the rules, the records refused and skipped, the delta scope's
    # stored versions, the keys a full file no longer holds, and what a chunk row keeps of its records.
    4: "ALTER TABLE ingestions ADD COLUMN rules TEXT NOT NULL DEFAULT '{}';"
    "ALTER TABLE ingestions ADD COLUMN scope TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE ingestions ADD COLUMN records_rejected INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE ingestions ADD COLUMN records_invalid INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE ingestions ADD COLUMN records_unchanged INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE ingestions ADD COLUMN refused INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE ingestions ADD COLUMN deletions INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE ingestions ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE chunks ADD COLUMN meta BLOB;" + _RECORD_TABLES,
    # 5 -> 6: keys are text (protocol/keys.py): an integer key stored as its JSON number becomes its JSON
    # string. Where a scope held both forms of one key, the text one stays (the next file re-sends it if
    # it differs); the same for the keys an ingestion listed as absent or deleted.
    5: "DELETE FROM delta_versions WHERE substr(key, 1, 1) <> '\"' AND EXISTS (SELECT 1 FROM delta_versions t"
    " WHERE t.scope = delta_versions.scope AND t.key = '\"' || delta_versions.key || '\"');"
    "UPDATE delta_versions SET key = '\"' || key || '\"' WHERE substr(key, 1, 1) <> '\"';"
    "DELETE FROM deletions WHERE substr(key, 1, 1) <> '\"' AND EXISTS (SELECT 1 FROM deletions t"
    " WHERE t.ingestion_id = deletions.ingestion_id AND t.key = '\"' || deletions.key || '\"');"
    "UPDATE deletions SET key = '\"' || key || '\"' WHERE substr(key, 1, 1) <> '\"';",
}


P = ParamSpec("P")
T = TypeVar("T")


def _ingestion(row: sqlite3.Row) -> Ingestion:
    values = dict(zip(row.keys(), tuple(row), strict=True))
    values["path"] = from_text(values["path"])
    values["preflight"] = bool(values["preflight"])
    values["spooled"] = bool(values["spooled"])
    values["completing"] = bool(values["completing"])
    values["dedup"] = bool(values["dedup"])
    values["options"] = orjson.loads(values["options"])
    values["rules"] = orjson.loads(values["rules"])
    values["status"] = Status(values["status"])
    return Ingestion(**values)


_CHUNK_COLS = ", ".join(f.name for f in dataclasses.fields(ChunkRow))
_ACK_BATCH = 256  # ACKs committed together at most (three parameters each)


def _retrieved(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _chunk(row: sqlite3.Row) -> ChunkRow:
    return ChunkRow(**dict(zip(row.keys(), tuple(row), strict=True)))


def _atomic(
    fn: Callable[Concatenate[Store, P], Awaitable[T]],
) -> Callable[Concatenate[Store, P], Coroutine[Any, Any, T]]:
    """Run a store operation as its own task, shielded from the caller's cancellation."""

    @functools.wraps(fn)
    async def run(self: Store, /, *args: P.args, **kwargs: P.kwargs) -> T:
        async def op() -> T:
            return await fn(self, *args, **kwargs)

        task = asyncio.ensure_future(op())
        self._ops.add(task)
        task.add_done_callback(self._ops.discard)
        return await asyncio.shield(task)

    return run


# The page cache of the daemon's own connection, in KiB. SQLite's default (2,000 KiB) is allocated a page at
# a time (4,384-byte chunks) from glibc's main heap as more of a growing database is read, between
# short-lived buffers. In the soak (issue 29) a walk of the daemon's heap (python -m bench.heap) found those
# pages to be nearly all of the live growth (54 -> 319 pages, +1.1 MiB, in 9 minutes), with as much again
# free in the holes around them; capped here they stop at about 120 pages, and the soak's RSS slope fell from
# +0.36 to +0.22 MiB/min in the same sitting. The store's statements touch a few hot pages (the newest
# ingestions' rows and their indexes), and the operating system's page cache serves the rest.
CACHE_KIB = 512


class Store:
    def __init__(self, db: aiosqlite.Connection, path: Path, conditions: Conditions | None = None) -> None:
        self._db = db
        self.path = path
        self.conditions = conditions or Conditions()  # a full disk, for /healthz
        self._lock = asyncio.Lock()
        self._sync = "FULL"
        self._ops: set[asyncio.Future[Any]] = set()  # operations under way (each shielded)
        self._acking: list[tuple[str, int, str, asyncio.Future[bool]]] = []  # plain ACKs for the next commit
        self._ack_flush: asyncio.Task[None] | None = None  # the task committing them
        # Per delta scope: how many ACKs of an ingestion that was not running (a late ACK of a failed one)
        # changed its versions. A spool pass of the scope compares it before and after (core/ingestion.py).
        self._late_acks: dict[str, int] = {}

    @classmethod
    async def open(cls, path: Path, conditions: Conditions | None = None) -> Store:
        """Open (creating when absent) and check the database; raise StateError if unusable."""
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StateError(f"cannot open state database {path}: {exc}") from None
        db.row_factory = sqlite3.Row
        try:
            await cls._prepare(db, path)
        except BaseException:
            await db.close()
            raise
        return cls(db, path, conditions)

    @staticmethod
    async def _prepare(db: aiosqlite.Connection, path: Path) -> None:
        hint = "restore it from a backup or move it away to start empty (every unfinished ingestion is then forgotten)"
        try:
            # First, so that the check below reads the whole file through the small cache: see CACHE_KIB.
            await db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            # Before anything writes the file: a new database then gives pruned pages back (retention). On an
            # existing one this changes nothing until a VACUUM, which Store.vacuum runs once.
            await db.execute_fetchall("PRAGMA auto_vacuum=INCREMENTAL")
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
                version = SCHEMA_VERSION
            elif version > SCHEMA_VERSION or (version < SCHEMA_VERSION and version not in _MIGRATIONS):
                raise StateError(
                    f"state database {path} has schema version {version}; this pimingestd reads version {SCHEMA_VERSION}"
                    " (and migrates from 1, 2, 3 and 4)"
                )
            while version < SCHEMA_VERSION:
                await db.executescript(
                    "BEGIN IMMEDIATE;" + _MIGRATIONS[version] + f"PRAGMA user_version={version + 1}; COMMIT;"
                )
                version += 1
        except sqlite3.DatabaseError as exc:
            raise StateError(f"state database {path} is unreadable ({exc}); {hint}") from None

    async def close(self) -> None:
        """Close once every operation under way has finished (none is cut short)."""
        while self._ops:
            await asyncio.gather(*list(self._ops), return_exceptions=True)
        await self._db.close()

    async def pragma(self, name: str) -> Any:
        async with self._db.execute(f"PRAGMA {name}") as cur:
            row = await cur.fetchone()
        return None if row is None else row[0]

    @asynccontextmanager
    async def _tx(self, *, durable: bool = True) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction (use inside an ``_atomic`` operation). ``durable``: the commit
        reaches the disk (synchronous=FULL) before this returns. Bookkeeping that a power cut
        may lose harmlessly (a chunk's "sent" mark: it is simply sent again, and PIM-Core
        dedups it) commits with synchronous=NORMAL; in WAL mode the next FULL commit makes it
        durable too."""
        async with self._lock:
            try:
                await self._synchronous(durable)
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    await self._db.execute("COMMIT")
                except BaseException:
                    with suppress(sqlite3.Error):  # no transaction left to roll back
                        await self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:  # nothing of this transaction was committed
                raise self._failed(exc) from None
            self.conditions.cleared("state")

    def _failed(self, exc: sqlite3.Error) -> StateError:
        """A write that failed, as the error tree names it: a full disk (remembered for /healthz), or else
        the database's own message."""
        if is_full(exc):
            error = disk_full("the state database", self.path, "state")
            self.conditions.full("state", str(error))
            return error
        return StateError(f"state database {self.path}: {exc}")

    async def _synchronous(self, durable: bool) -> None:
        mode = "FULL" if durable else "NORMAL"
        if mode != self._sync:
            self._sync = "?"  # unknown until the switch is confirmed
            await self._db.execute(f"PRAGMA synchronous={mode}")
            self._sync = mode

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return list(await self._db.execute_fetchall(sql, params))

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = await self._rows(sql, params)
        return rows[0] if rows else None

    # ---- ingestions -------------------------------------------------------

    @_atomic
    async def create_ingestion(
        self,
        *,
        file_id: str,
        path: str,
        file_name: str,
        size: int,
        mtime_ns: int,
        format: str,
        chunk_records: int | None,
        chunk_bytes: int | None,
        preflight: bool,
        source: str,
        options: dict[str, Any] | None = None,
        version: str = "",
        dedup: bool = True,
        rules: dict[str, Any] | None = None,
        scope: str = "",
    ) -> Ingestion:
        now = time.time()
        ing = Ingestion(
            id=uuid.uuid4().hex,
            file_id=file_id,
            path=path,
            file_name=file_name,
            size=size,
            mtime_ns=mtime_ns,
            format=format,
            chunk_records=chunk_records,
            chunk_bytes=chunk_bytes,
            preflight=preflight,
            source=source,
            status=Status.QUEUED,
            error=None,
            spooled=False,
            total_chunks=None,
            total_records=None,
            created_at=now,
            updated_at=now,
            options=dict(options or {}),
            version=version,
            dedup=dedup,
            rules=dict(rules or {}),
            scope=scope,
        )
        row = dataclasses.asdict(ing)
        row["path"] = to_text(path)
        row["options"] = orjson.dumps(row["options"]).decode()
        row["rules"] = orjson.dumps(row["rules"]).decode()
        async with self._tx() as db:
            await db.execute(
                f"INSERT INTO ingestions ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})", row
            )
        return ing

    async def get(self, ingestion_id: str) -> Ingestion | None:
        row = await self._one("SELECT * FROM ingestions WHERE id = ?", (ingestion_id,))
        return None if row is None else _ingestion(row)

    async def latest_for_file(self, file_id: str, exclude: str = "") -> Ingestion | None:
        """The newest ingestion of these bytes that was not cancelled (other than ``exclude``)."""
        row = await self._one(
            "SELECT * FROM ingestions WHERE file_id = ? AND status != 'cancelled' AND id != ?"
            " ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (file_id, exclude),
        )
        return None if row is None else _ingestion(row)

    async def newer_delivered(self, ingestion_id: str) -> Ingestion | None:
        """The newest ingestion of the same delta scope submitted after this one that delivered anything (it
        completed, or PIM-Core ACKed some of its chunks): then what this one would send is older than what
        PIM-Core holds. None when there is none, or the ingestion has no scope."""
        row = await self._one(
            "SELECT n.* FROM ingestions o JOIN ingestions n ON n.scope = o.scope AND n.rowid > o.rowid"
            " WHERE o.id = ? AND o.scope != '' AND (n.status = 'completed' OR n.pruned_chunks > 0"
            " OR EXISTS (SELECT 1 FROM chunks c WHERE c.ingestion_id = n.id AND c.state = 'acked'))"
            " ORDER BY n.rowid DESC LIMIT 1",
            (ingestion_id,),
        )
        return None if row is None else _ingestion(row)

    def late_acks(self, scope: str) -> int:
        """A count that moves twice for each ACK of an ingestion that was not running and changes ``scope``'s
        versions: before its commit and once the commit is over. Odd while such a commit is under way."""
        return self._late_acks.get(scope, 0)

    async def latest_for_object(self, url: str, size: int, version: str) -> Ingestion | None:
        """The newest ingestion of this remote object, at this size and version, that was not cancelled."""
        row = await self._one(
            "SELECT * FROM ingestions WHERE path = ? AND size = ? AND version = ? AND version != ''"
            " AND status != 'cancelled' ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (to_text(url), size, version),
        )
        return None if row is None else _ingestion(row)

    @_atomic
    async def set_file_id(self, ingestion_id: str, file_id: str) -> None:
        """A remote object's file_id, known once the spool pass has read it whole."""
        async with self._tx() as db:
            await db.execute(
                "UPDATE ingestions SET file_id = ?, updated_at = ? WHERE id = ?", (file_id, time.time(), ingestion_id)
            )

    @_atomic
    async def set_manifest(self, ingestion_id: str, manifest: str) -> None:
        async with self._tx(durable=False) as db:
            await db.execute("UPDATE ingestions SET manifest = ? WHERE id = ?", (manifest, ingestion_id))

    # ---- retention ---------------------------------------------------------------

    _ENDED_BEFORE = "status IN ('completed', 'cancelled') AND pruned_at IS NULL AND updated_at < ?"

    async def prunable(self, before: float) -> tuple[int, int]:
        """(ingestions, chunk rows) that prune_chunks(before) would remove."""
        row = await self._one(
            f"SELECT count(*), coalesce(sum((SELECT count(*) FROM chunks WHERE ingestion_id = ingestions.id)), 0)"
            f" FROM ingestions WHERE {self._ENDED_BEFORE}",
            (before,),
        )
        assert row is not None
        return int(row[0]), int(row[1])

    async def prune_chunks(self, before: float, batch: int = 200) -> tuple[int, int]:
        """Remove the chunk rows of ingestions completed or cancelled before ``before``, a batch of
        ingestions per transaction; each keeps its summary (counts ACKed, manifest, error, times)."""
        ingestions = rows = 0
        while True:
            done = await self._prune_batch(before, batch)
            if done is None:
                return ingestions, rows
            ingestions, rows = ingestions + done[0], rows + done[1]

    @_atomic
    async def _prune_batch(self, before: float, batch: int) -> tuple[int, int] | None:
        async with self._tx() as db:
            async with db.execute(
                f"SELECT id FROM ingestions WHERE {self._ENDED_BEFORE} LIMIT ?", (before, batch)
            ) as cur:
                ids = [r[0] for r in await cur.fetchall()]
            if not ids:
                return None
            # One statement text whatever the batch's size (json_each): sqlite3 caches a prepared statement per
            # text, and a text per length of an IN (?, ?, ...) list cached 128 large ones (the soak saw RSS creep).
            marks = "SELECT value FROM json_each(?)"
            listed = orjson.dumps(ids).decode()
            now = time.time()
            await db.execute(
                "UPDATE ingestions SET pruned_at = ?,"
                " pruned_chunks = pruned_chunks"
                " + (SELECT count(*) FROM chunks WHERE ingestion_id = ingestions.id AND state = 'acked'),"
                " pruned_records = pruned_records + (SELECT coalesce(sum(records), 0) FROM chunks"
                " WHERE ingestion_id = ingestions.id AND state = 'acked')"
                f" WHERE id IN ({marks})",
                (now, listed),
            )
            cur2 = await db.execute(f"DELETE FROM chunks WHERE ingestion_id IN ({marks})", (listed,))
            # Its refused records and deletions go with them (the counts stay on the ingestion's row).
            await db.execute(f"DELETE FROM record_rejects WHERE ingestion_id IN ({marks})", (listed,))
            await db.execute(f"DELETE FROM deletions WHERE ingestion_id IN ({marks})", (listed,))
            return len(ids), cur2.rowcount

    async def vacuum(self) -> int:
        """Give freed pages back to the filesystem; returns the bytes the file shrank by. Incremental
        where the database allows it (new databases); otherwise it is switched over once, by a VACUUM."""
        before = await self.size()
        async with self._lock:
            try:
                mode = await self.pragma("auto_vacuum")
                # executescript steps each statement to its end (sqlite3_exec). Through a cursor, Python stops
                # after the first step: incremental_vacuum would free one page, and a pragma left open makes
                # the next statement find the table locked.
                if mode != 2:
                    await self._db.executescript("PRAGMA auto_vacuum=INCREMENTAL; VACUUM;")
                else:
                    await self._db.executescript("PRAGMA incremental_vacuum;")
                await self._db.executescript("PRAGMA wal_checkpoint(TRUNCATE);")
            except sqlite3.Error as exc:
                raise self._failed(exc) from None
        return max(before - await self.size(), 0)

    async def size(self) -> int:
        """Bytes of the database file and its WAL."""

        def measure() -> int:
            total = 0
            for suffix in ("", "-wal"):
                with suppress(FileNotFoundError):
                    total += os.stat(f"{self.path}{suffix}").st_size
            return total

        return await asyncio.to_thread(measure)

    # ---- the remote inboxes' ledger ----------------------------------------------

    async def remote_seen(self, url: str, version: str, size: int) -> tuple[str | None, str] | None:
        """(ingestion_id, state) if this object at this version and size was taken before."""
        row = await self._one(
            "SELECT ingestion_id, state FROM remote_seen WHERE url = ? AND version = ? AND size = ?",
            (url, version, size),
        )
        return None if row is None else (row[0], row[1])

    @_atomic
    async def remember_remote(self, url: str, version: str, size: int, ingestion_id: str | None, state: str) -> None:
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO remote_seen (url, version, size, ingestion_id, state, seen_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (url, version, size) DO UPDATE SET ingestion_id = excluded.ingestion_id,"
                " state = excluded.state, seen_at = excluded.seen_at",
                (url, version, size, ingestion_id, state, time.time()),
            )

    async def remote_taken(self) -> list[tuple[str, str, int, str | None]]:
        """(url, version, size, ingestion_id) of objects taken and not yet moved."""
        rows = await self._rows("SELECT url, version, size, ingestion_id FROM remote_seen WHERE state = 'taken'")
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def by_path(self, path: str) -> Ingestion | None:
        """The newest ingestion recorded for exactly this path."""
        row = await self._one(
            "SELECT * FROM ingestions WHERE path = ? ORDER BY created_at DESC, rowid DESC LIMIT 1", (to_text(path),)
        )
        return None if row is None else _ingestion(row)

    async def under(self, folder: str) -> list[Ingestion]:
        """Ingestions whose recorded path lies under ``folder``."""
        prefix = to_text(folder.rstrip("/") + "/")
        rows = await self._rows(
            "SELECT * FROM ingestions WHERE substr(path, 1, ?) = ? ORDER BY created_at, rowid", (len(prefix), prefix)
        )
        return [_ingestion(r) for r in rows]

    async def with_status(self, statuses: Iterable[str]) -> list[Ingestion]:
        wanted = list(statuses)
        rows = await self._rows(
            f"SELECT * FROM ingestions WHERE status IN ({', '.join('?' * len(wanted))}) ORDER BY created_at, rowid",
            wanted,
        )
        return [_ingestion(r) for r in rows]

    @staticmethod
    def _filter(status: str | None, name: str) -> tuple[str, list[Any]]:
        clauses, args = [], []
        if status:
            clauses.append("status = ?")
            args.append(status)
        if name:  # a substring of the file name (LIKE: ASCII letters match either case)
            clauses.append("file_name LIKE ? ESCAPE '\\'")
            args.append("%" + name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), args

    async def list_ingestions(self, status: str | None, limit: int, offset: int, name: str = "") -> list[Ingestion]:
        where, args = self._filter(status, name)
        rows = await self._rows(
            f"SELECT * FROM ingestions {where} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        )
        return [_ingestion(r) for r in rows]

    async def count_ingestions(self, status: str | None, name: str = "") -> int:
        where, args = self._filter(status, name)
        row = await self._one(f"SELECT count(*) FROM ingestions {where}", args)
        return int(row[0]) if row is not None else 0

    async def timeline(self, ingestion_id: str, cells: int) -> dict[str, Any]:
        """An ingestion's chunks in at most ``cells`` cells (one per chunk when there are fewer): each with its
        chunk range and how many are ACKed, sent, spooled, retried (more than one attempt) and rejected
        (a chunk reject, or records refused in its ACK); and the ACK latency percentiles, in milliseconds."""
        row = await self._one(
            "SELECT count(*), coalesce(max(n), 0) FROM chunks WHERE ingestion_id = ?", (ingestion_id,)
        )
        assert row is not None
        count, top = int(row[0]), int(row[1])
        if not count:
            return {"chunks": 0, "cells": [], "latency_ms": None}
        width = max(1, -(-top // cells))
        rows = await self._rows(
            "SELECT (n - 1) / ? AS cell, min(n), max(n), count(*) FILTER (WHERE state = 'acked'),"
            " count(*) FILTER (WHERE state = 'sent'), count(*) FILTER (WHERE state = 'spooled'),"
            " count(*) FILTER (WHERE attempts > 1), count(*) FILTER (WHERE reject_reason IS NOT NULL)"
            " FROM chunks WHERE ingestion_id = ? GROUP BY cell ORDER BY cell",
            (width, ingestion_id),
        )
        refused = {
            r[0]: r[1]
            for r in await self._rows(
                "SELECT (chunk - 1) / ?, count(*) FROM record_rejects WHERE ingestion_id = ? AND chunk IS NOT NULL"
                " GROUP BY 1",
                (width, ingestion_id),
            )
        }
        out = [
            {
                "first": r[1],
                "last": r[2],
                "acked": r[3],
                "sent": r[4],
                "spooled": r[5],
                "retried": r[6],
                "rejected": r[7],
                "records_refused": refused.get(r[0], 0),
            }
            for r in rows
        ]
        return {"chunks": count, "cells": out, "latency_ms": await self._latencies(ingestion_id)}

    async def _latencies(self, ingestion_id: str) -> dict[str, float] | None:
        """p50, p90, p99 and max of acked_at - sent_at over ACKed chunks, one row read per figure."""
        where = "FROM chunks WHERE ingestion_id = ? AND state = 'acked' AND sent_at IS NOT NULL"
        row = await self._one(f"SELECT count(*) {where}", (ingestion_id,))
        total = int(row[0]) if row is not None else 0
        if not total:
            return None
        out = {}
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)):
            at = await self._one(
                f"SELECT acked_at - sent_at {where} ORDER BY 1 LIMIT 1 OFFSET ?",
                (ingestion_id, min(total - 1, int(q * total))),
            )
            out[name] = round(max(float(at[0]), 0.0) * 1000, 1) if at is not None else 0.0
        return out

    async def count_by_status(self) -> dict[str, int]:
        return {r[0]: r[1] for r in await self._rows("SELECT status, count(*) FROM ingestions GROUP BY status")}

    @_atomic
    async def transition(self, ingestion_id: str, to: Status, error: str | None = None) -> bool:
        """Change the status if ``model.TRANSITIONS`` allows it from the current one; False if not.
        Completed needs the completion claimed; cancelled needs it not claimed."""
        allowed = TRANSITIONS[to]
        guard = {Status.COMPLETED: " AND completing = 1", Status.CANCELLED: " AND completing = 0"}.get(to, "")
        async with self._tx() as db:
            cur = await db.execute(
                f"UPDATE ingestions SET status = ?, error = ?, updated_at = ?"
                f" WHERE id = ? AND status IN ({', '.join('?' * len(allowed))}){guard}",
                (to, error, time.time(), ingestion_id, *allowed),
            )
            return cur.rowcount == 1

    @_atomic
    async def claim_completion(self, ingestion_id: str) -> bool:
        """Mark a running ingestion as sending its completion (from then on it cannot be
        cancelled); False when it is no longer running (cancelled meanwhile)."""
        async with self._tx() as db:
            cur = await db.execute(
                "UPDATE ingestions SET completing = 1, updated_at = ? WHERE id = ? AND status = 'running'",
                (time.time(), ingestion_id),
            )
            return cur.rowcount == 1

    @_atomic
    async def release_completion(self, ingestion_id: str) -> None:
        """PIM-Core refused the completion outright: it did not complete, so a cancel is possible again."""
        async with self._tx() as db:
            await db.execute("UPDATE ingestions SET completing = 0 WHERE id = ?", (ingestion_id,))

    @_atomic
    async def set_path(self, ingestion_id: str, path: str) -> None:
        async with self._tx(durable=False) as db:
            await db.execute(
                "UPDATE ingestions SET path = ?, updated_at = ? WHERE id = ?",
                (to_text(path), time.time(), ingestion_id),
            )

    @_atomic
    async def adopt_copy(self, ingestion_id: str, path: str, file_name: str, size: int, mtime_ns: int) -> bool:
        """Point an ingestion that is not running at a new copy of the same bytes (its file_id
        was checked by the caller); False when the ingestion is no longer resumable."""
        async with self._tx() as db:
            cur = await db.execute(
                "UPDATE ingestions SET path = ?, file_name = ?, size = ?, mtime_ns = ?, updated_at = ?"
                " WHERE id = ? AND status IN ('queued', 'running', 'failed')",
                (to_text(path), file_name, size, mtime_ns, time.time(), ingestion_id),
            )
            return cur.rowcount == 1

    # ---- the spool ---------------------------------------------------------

    @_atomic
    async def start_spool(self, ingestion_id: str) -> None:
        """A spool pass begins: forget positions of an earlier, unfinished pass."""
        async with self._tx(durable=False) as db:
            await db.execute("DELETE FROM chunks WHERE ingestion_id = ? AND state = 'spooled'", (ingestion_id,))
            # What the earlier pass found is found again by this one (refused records stay: they were ACKed).
            await db.execute("DELETE FROM record_rejects WHERE ingestion_id = ? AND chunk IS NULL", (ingestion_id,))
            await db.execute("DELETE FROM deletions WHERE ingestion_id = ? AND state = 'absent'", (ingestion_id,))
            await db.execute(
                "UPDATE ingestions SET spooled = 0, records_rejected = records_rejected - records_invalid,"
                " records_invalid = 0, records_unchanged = 0 WHERE id = ?",
                (ingestion_id,),
            )

    @_atomic
    async def add_spooled(self, ingestion_id: str, page: SpoolPage | Sequence[SpooledChunk]) -> list[int]:
        """Record one page of a spool pass: its chunks, invalid records, absent keys and skipped count, in one
        transaction. Chunks sent before (by an earlier pass) keep their state and get their new spool position;
        returns the numbers of those whose recorded checksum differs from the new cut (the caller fails the
        ingestion on any; nothing of the page is recorded then)."""
        if not isinstance(page, SpoolPage):
            page = SpoolPage(chunks=list(page))
        chunks = page.chunks
        async with self._tx(durable=False) as db:
            if chunks:
                async with db.execute(
                    "SELECT n, checksum FROM chunks WHERE ingestion_id = ? AND n BETWEEN ? AND ?",
                    (ingestion_id, chunks[0].n, chunks[-1].n),
                ) as cur:
                    before = {r[0]: r[1] for r in await cur.fetchall()}
                differ = [c.n for c in chunks if c.n in before and before[c.n] != c.checksum]
                if differ:
                    return differ
                await db.executemany(
                    "INSERT INTO chunks (ingestion_id, n, first_record, records, checksum, spool_offset, spool_length,"
                    " state, meta) VALUES (?, ?, ?, ?, ?, ?, ?, 'spooled', ?)"
                    " ON CONFLICT (ingestion_id, n) DO UPDATE SET spool_offset = excluded.spool_offset,"
                    " spool_length = excluded.spool_length, meta = excluded.meta",
                    [
                        (ingestion_id, c.n, c.first_record, c.records, c.checksum, c.offset, c.length, c.meta)
                        for c in chunks
                    ],
                )
            if page.invalid:
                await db.executemany(
                    "INSERT OR REPLACE INTO record_rejects (ingestion_id, position, reason, field) VALUES (?, ?, ?, ?)",
                    [(ingestion_id, r.position, r.reason, r.field) for r in page.invalid],
                )
            if page.deletions:
                await db.executemany(
                    "INSERT OR IGNORE INTO deletions (ingestion_id, key, state) VALUES (?, ?, 'absent')",
                    [(ingestion_id, key) for key in page.deletions],
                )
            if page.invalid or page.unchanged:
                await db.execute(
                    "UPDATE ingestions SET records_invalid = records_invalid + ?,"
                    " records_rejected = records_rejected + ?, records_unchanged = records_unchanged + ? WHERE id = ?",
                    (len(page.invalid), len(page.invalid), page.unchanged, ingestion_id),
                )
        return []

    @_atomic
    async def finish_spool(self, ingestion_id: str, total_chunks: int, total_records: int) -> bool:
        """The pass is complete: record the totals and mark the spool usable. False (and nothing
        changed) when chunks beyond the new total were sent before."""
        async with self._tx(durable=False) as db:
            async with db.execute(
                "SELECT count(*) FROM chunks WHERE ingestion_id = ? AND n > ?", (ingestion_id, total_chunks)
            ) as cur:
                beyond = (await cur.fetchone() or (0,))[0]
            if beyond:
                return False
            await db.execute(
                "UPDATE ingestions SET spooled = 1, total_chunks = ?, total_records = ?, updated_at = ?,"
                " deletions = (SELECT count(*) FROM deletions WHERE ingestion_id = ingestions.id) WHERE id = ?",
                (total_chunks, total_records, time.time(), ingestion_id),
            )
        return True

    async def record_spool(self, ingestion_id: str, chunks: list[SpooledChunk]) -> None:
        """A whole spool pass at once (tests and small callers): start, one page, finish."""
        await self.start_spool(ingestion_id)
        if await self.add_spooled(ingestion_id, chunks):
            raise StateError("a new spool pass cut different bytes than were sent before")
        if not await self.finish_spool(ingestion_id, len(chunks), sum(c.records for c in chunks)):
            raise StateError("a new spool pass cut fewer chunks than were sent before")

    @_atomic
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

    @_atomic
    async def set_totals(self, ingestion_id: str, total_chunks: int, total_records: int) -> None:
        async with self._tx(durable=False) as db:
            await db.execute(
                "UPDATE ingestions SET total_chunks = ?, total_records = ?, updated_at = ? WHERE id = ?",
                (total_chunks, total_records, time.time(), ingestion_id),
            )

    # ---- chunks --------------------------------------------------------------

    async def chunk(self, ingestion_id: str, n: int) -> ChunkRow | None:
        row = await self._one(f"SELECT {_CHUNK_COLS} FROM chunks WHERE ingestion_id = ? AND n = ?", (ingestion_id, n))
        return None if row is None else _chunk(row)

    async def chunks(self, ingestion_id: str, start: int = 1, limit: int = -1) -> list[ChunkRow]:
        rows = await self._rows(
            f"SELECT {_CHUNK_COLS} FROM chunks WHERE ingestion_id = ? AND n >= ? ORDER BY n LIMIT ?",
            (ingestion_id, start, limit),
        )
        return [_chunk(r) for r in rows]

    async def chunk_keys(self, ingestion_id: str, n: int) -> list[str]:
        """The stored keys of chunk ``n``'s records (from its metadata, written by the spool pass); empty when
        its records have no key."""

        row = await self._one("SELECT meta FROM chunks WHERE ingestion_id = ? AND n = ?", (ingestion_id, n))
        if row is None or row[0] is None:
            return []
        return ChunkMeta.decode(row[0]).keys or []

    async def chunk_pages(self, ingestion_id: str, page: int = 1000) -> AsyncIterator[ChunkRow]:
        """Every chunk row in order, read a page at a time (memory flat in the number of chunks)."""
        start = 1
        while rows := await self.chunks(ingestion_id, start, page):
            for row in rows:
                yield row
            start = rows[-1].n + 1

    async def summaries(self, ingestion_ids: Sequence[str]) -> dict[str, Progress]:
        """The progress of several ingestions in one query (an API page of them); absent: no chunks."""
        if not ingestion_ids:
            return {}
        rows = await self._rows(
            "SELECT ingestion_id, count(*) FILTER (WHERE state = 'acked'),"
            " coalesce(sum(records) FILTER (WHERE state = 'acked'), 0),"
            " max(acked_at) FILTER (WHERE state = 'acked'), coalesce(max(attempts) FILTER (WHERE state = 'sent'), 0)"
            " FROM chunks WHERE ingestion_id IN (SELECT value FROM json_each(?)) GROUP BY ingestion_id",
            (orjson.dumps(list(ingestion_ids)).decode(),),
        )
        return {r[0]: Progress(int(r[1]), int(r[2]), r[3], int(r[4])) for r in rows}

    async def deletion_rows(self, ingestion_id: str, limit: int, offset: int) -> list[tuple[str, str, str | None]]:
        """(stored key, state, reason) of an ingestion's deletions, in key order."""
        rows = await self._rows(
            "SELECT key, state, reason FROM deletions WHERE ingestion_id = ? ORDER BY key LIMIT ? OFFSET ?",
            (ingestion_id, limit, offset),
        )
        return [(r[0], r[1], r[2]) for r in rows]

    async def progress(self, ingestion_id: str) -> tuple[int, int]:
        """(chunks ACKed, records ACKed)."""
        row = await self._one(
            "SELECT count(*), coalesce(sum(records), 0) FROM chunks WHERE ingestion_id = ? AND state = 'acked'",
            (ingestion_id,),
        )
        assert row is not None
        return int(row[0]), int(row[1])

    @_atomic
    async def _statement(self, sql: str, params: Sequence[Any], *, durable: bool) -> list[Any]:
        """One write statement as its own transaction: a single round trip to the database thread
        (two when the synchronous level changes). Holds the write lock like _tx."""
        async with self._lock:
            try:
                await self._synchronous(durable)
                rows = list(await self._db.execute_fetchall(sql, params))
            except sqlite3.Error as exc:  # autocommit: the statement took effect whole, or not at all
                raise self._failed(exc) from None
        self.conditions.cleared("state")
        return rows

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

    async def commit_ack(
        self, ingestion_id: str, n: int, checksum: str, rejected: Sequence[RecordReject] = ()
    ) -> AckOutcome:
        """Commit an ACK durably when it matches a chunk that was sent. A chunk of a plain ingestion without
        refused records takes one statement and one fsync; otherwise the refused records, the versions of the
        accepted ones and the tombstones' effect commit in the same transaction as the ACK. The reasons for
        refusing are looked up only when it matched nothing. A late ACK (its ingestion no longer running) that
        changed a scope's versions is counted for that scope (``late_acks``): it is what PIM-Core applied, so it
        commits all the same."""
        if not rejected and await self._commit_plain_ack(ingestion_id, n, checksum):
            return "accepted"
        return await self._commit_ack_records(ingestion_id, n, checksum, rejected)

    async def _commit_plain_ack(self, ingestion_id: str, n: int, checksum: str) -> bool:
        """Group commit: True once the ACK of a sent chunk of a plain ingestion, with this checksum, is durably
        committed; False when it matched no such chunk (the caller then classifies it). ACKs that arrive while
        a commit is under way go together in the next one: one statement, one fsync, and each is answered
        only after it (a window's ACKs come close together, and the store's one connection would otherwise
        take them one fsync at a time). An ACK on its own goes at once, as before."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieved)  # a failed commit whose caller was cancelled logs nothing more
        self._acking.append((ingestion_id, n, checksum, done))
        if self._ack_flush is None:
            self._ack_flush = asyncio.ensure_future(self._flush_acks())
            self._ops.add(self._ack_flush)
            self._ack_flush.add_done_callback(self._ops.discard)
        return await asyncio.shield(done)  # a caller cancelled meanwhile never splits the commit

    async def _flush_acks(self) -> None:
        try:
            while self._acking:
                batch, self._acking = self._acking[:_ACK_BATCH], self._acking[_ACK_BATCH:]
                chunks = {(i, n): c for i, n, c, _ in reversed(batch)}  # each chunk once (its first ACK)
                values = ", ".join(["(?, ?, ?)"] * len(chunks))
                try:
                    updated = await self._statement(
                        "UPDATE chunks SET state = 'acked', acked_at = ?, reject_reason = NULL"
                        f" FROM (VALUES {values}) AS b WHERE chunks.ingestion_id = b.column1 AND chunks.n = b.column2"
                        " AND chunks.checksum = b.column3 AND chunks.state = 'sent' AND chunks.meta IS NULL"
                        " RETURNING chunks.ingestion_id, chunks.n",
                        (time.time(), *(v for (i, n), c in chunks.items() for v in (i, n, c))),
                        durable=True,
                    )
                except BaseException as exc:  # nothing of this batch was committed
                    for *_, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                acked = {(row[0], row[1]) for row in updated}
                for i, n, _, fut in batch:  # a second ACK of the same chunk in the batch: a duplicate, classified
                    if not fut.done():
                        fut.set_result((i, n) in acked)
                    acked.discard((i, n))
        finally:
            self._ack_flush = None

    @_atomic
    async def _commit_ack_records(
        self, ingestion_id: str, n: int, checksum: str, rejected: Sequence[RecordReject]
    ) -> AckOutcome:
        began: list[str] = []
        try:
            return await self._commit_ack_in_tx(ingestion_id, n, checksum, rejected, began)
        finally:  # committed or not, it is over (still under the shield of _atomic): the count is even again
            for scope in began:
                self._late_acks[scope] += 1

    async def _commit_ack_in_tx(
        self, ingestion_id: str, n: int, checksum: str, rejected: Sequence[RecordReject], began: list[str]
    ) -> AckOutcome:
        """The outcome. A late ACK that changes its scope's versions moves the scope's count before it commits
        (appending the scope to ``began``; the caller moves it again once the commit is over): a spool pass
        compared while the commit was under way, or just after, sees the count move (core/ingestion.py)."""

        async with self._tx() as db:
            refused = await self._classify(db, ingestion_id, n, checksum)
            if refused is not None:
                return refused
            async with db.execute(
                "SELECT c.first_record, c.records, c.meta, i.scope, i.rowid, i.status FROM chunks c"
                " JOIN ingestions i ON i.id = c.ingestion_id WHERE c.ingestion_id = ? AND c.n = ?",
                (ingestion_id, n),
            ) as cur:
                row = await cur.fetchone()
            assert row is not None
            first, count, raw, scope, writer = row[0], row[1], row[2], row[3], row[4]
            late = scope if scope and row[5] != Status.RUNNING else ""
            if any(r.index >= count for r in rejected):
                return "bad_rejected"
            meta = ChunkMeta.decode(raw) if raw is not None else None
            refused_at = {r.index: r for r in rejected}
            await db.execute(
                "UPDATE chunks SET state = 'acked', acked_at = ?, reject_reason = NULL WHERE ingestion_id = ? AND n = ?",
                (time.time(), ingestion_id, n),
            )
            if late and meta is not None and (meta.tombstones or meta.keys is not None):
                self._late_acks[late] = self._late_acks.get(late, 0) + 1  # odd: a late ACK's commit under way
                began.append(late)
            if meta is not None and meta.tombstones:
                await self._ack_tombstones(db, ingestion_id, scope, meta, refused_at)
                return "accepted"
            if rejected:
                positions = meta.positions if meta is not None else None
                await db.executemany(
                    "INSERT OR REPLACE INTO record_rejects (ingestion_id, position, chunk, idx, reason, field)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (
                            ingestion_id,
                            positions[r.index] if positions else first + r.index,
                            n,
                            r.index,
                            r.reason,
                            r.field,
                        )
                        for r in rejected
                    ],
                )
                await db.execute(
                    "UPDATE ingestions SET records_rejected = records_rejected + ?, refused = refused + ? WHERE id = ?",
                    (len(rejected), len(rejected), ingestion_id),
                )
            if meta is not None and meta.keys is not None and meta.hashes is not None and scope:
                await db.executemany(
                    "INSERT INTO delta_versions (scope, key, hash, writer) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (scope, key) DO UPDATE SET hash = excluded.hash, writer = excluded.writer",
                    [(scope, key, meta.hash(i), writer) for i, key in enumerate(meta.keys) if i not in refused_at],
                )
        return "accepted"

    @staticmethod
    async def _ack_tombstones(
        db: aiosqlite.Connection, ingestion_id: str, scope: str, meta: Any, refused_at: dict[int, RecordReject]
    ) -> None:
        """A chunk of tombstones ACKed: each accepted one removes its key from the scope; a refused one leaves
        it (the next full file sends it again)."""
        keys: list[str] = meta.keys
        gone = [key for i, key in enumerate(keys) if i not in refused_at]
        await db.executemany("DELETE FROM delta_versions WHERE scope = ? AND key = ?", [(scope, k) for k in gone])
        await db.executemany(
            "UPDATE deletions SET state = 'deleted' WHERE ingestion_id = ? AND key = ?",
            [(ingestion_id, k) for k in gone],
        )
        await db.executemany(
            "UPDATE deletions SET state = 'refused', reason = ? WHERE ingestion_id = ? AND key = ?",
            [(r.reason, ingestion_id, keys[i]) for i, r in refused_at.items()],
        )
        await db.execute(
            "UPDATE ingestions SET deleted = deleted + ?, refused = refused + ? WHERE id = ?",
            (len(gone), len(refused_at), ingestion_id),
        )

    @_atomic
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
