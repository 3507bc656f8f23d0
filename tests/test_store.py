"""The state database: durable settings, schema checks, corruption refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pimingestd.errors import StateError
from pimingestd.store import Ingestion, Store


async def _new_ingestion(store: Store, file_id: str) -> Ingestion:
    return await store.create_ingestion(
        file_id=file_id,
        path="/x",
        file_name="x",
        size=1,
        mtime_ns=1,
        format="json",
        json_path=None,
        sheet=None,
        chunk_records=1,
        chunk_bytes=None,
        preflight=False,
        source="api",
    )


async def test_wal_and_full_sync(tmp_path: Path) -> None:
    """The connection runs WAL with synchronous=FULL, so an answered ACK survives power loss."""
    store = await Store.open(tmp_path / "s.db")
    try:
        assert await store.pragma("journal_mode") == "wal"
        assert await store.pragma("synchronous") == 2  # FULL
        assert await store.pragma("foreign_keys") == 1
        assert await store.pragma("user_version") == 2  # schema 2: options, completion claim
    finally:
        await store.close()


async def test_corrupt_database_refused(tmp_path: Path) -> None:
    """A damaged state database is an error at start, never silently recreated."""
    db = tmp_path / "s.db"
    store = await Store.open(db)
    await store.close()
    data = bytearray(db.read_bytes())
    data[:16] = b"garbage garbage!"
    db.write_bytes(bytes(data))
    with pytest.raises(StateError, match=r"unreadable|corrupt"):
        await Store.open(db)
    assert db.read_bytes()[:16] == b"garbage garbage!"


async def test_truncated_database_refused(tmp_path: Path) -> None:
    """A truncated state database is refused with a clear error."""
    db = tmp_path / "s.db"
    store = await Store.open(db)
    for i in range(200):
        await _new_ingestion(store, f"sha256:{i:064x}")
    await store.close()
    size = db.stat().st_size
    assert size > 8192
    with open(db, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(StateError):
        await Store.open(db)


async def test_foreign_database_refused(tmp_path: Path) -> None:
    """Pointing state_db at some other SQLite database is refused, not written into."""
    db = tmp_path / "other.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(StateError, match="not a pimingestd state database"):
        await Store.open(db)


async def test_ack_outcomes(tmp_path: Path) -> None:
    """commit_ack distinguishes unknown, never sent, mismatch, accepted and duplicate."""
    store = await Store.open(tmp_path / "s.db")
    try:
        ing = await _new_ingestion(store, "sha256:" + "1" * 64)
        good, bad = "sha256:" + "a" * 64, "sha256:" + "b" * 64
        assert await store.commit_ack("nope", 1, good) == "unknown_ingestion"
        assert await store.commit_ack(ing.id, 1, good) == "never_sent"
        assert await store.mark_sent(ing.id, 1, 0, 1, good) == "sent"
        assert await store.commit_ack(ing.id, 1, bad) == "mismatch"
        assert await store.commit_ack(ing.id, 1, good) == "accepted"
        assert await store.commit_ack(ing.id, 1, good) == "duplicate"
        assert await store.mark_sent(ing.id, 1, 0, 1, good) == "acked"
        assert (await store.chunk(ing.id, 1)).attempts == 1
        with pytest.raises(StateError, match="differs"):
            await store.mark_sent(ing.id, 1, 0, 1, bad)
        assert await store.progress(ing.id) == (1, 1)
        # Bookkeeping ran at NORMAL; an ACK commit always runs at FULL.
        await store.mark_sent(ing.id, 2, 1, 1, good)
        assert await store.pragma("synchronous") == 1
        assert await store.commit_ack(ing.id, 2, good) == "accepted"
        assert await store.pragma("synchronous") == 2
    finally:
        await store.close()
