"""The state database: durable settings, schema checks and migration, corruption refused, atomic operations."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pimingestd.errors import StateError
from pimingestd.model import Ingestion, SpooledChunk, Status
from pimingestd.names import from_text, readable, to_text
from pimingestd.protocol import canonical
from pimingestd.sources.fileid import identify
from pimingestd.state.sqlite import Store

from .helpers import product, report, write_json

FIXTURES = Path(__file__).parent / "fixtures"


async def _new_ingestion(store: Store, file_id: str) -> Ingestion:
    return await store.create_ingestion(
        file_id=file_id,
        path="/x",
        file_name="x",
        size=1,
        mtime_ns=1,
        format="json",
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
        assert await store.pragma("user_version") == 6  # schema 6: keys are text
    finally:
        await store.close()


async def test_the_page_cache_is_bounded_before_the_first_read(tmp_path: Path) -> None:
    """The store's page cache is CACHE_KIB (issue 29: SQLite's 2 MB default, filled a page at a time from
    glibc's heap as the database grew, was the soak's RSS creep), set before the integrity check reads the
    whole file, also on a database that was opened before."""
    from pimingestd.state.sqlite import CACHE_KIB

    assert CACHE_KIB <= 1024
    prepare = Store._prepare
    statements: list[str] = []

    async def traced(db: Any, path: Path) -> None:
        await db.set_trace_callback(statements.append)
        await prepare(db, path)

    for _ in range(2):
        statements.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Store, "_prepare", staticmethod(traced))
            store = await Store.open(tmp_path / "s.db")
        try:
            assert await store.pragma("cache_size") == -CACHE_KIB
        finally:
            await store.close()
        pragmas = [s.split()[1].split("=")[0].split("(")[0] for s in statements if s.startswith("PRAGMA")]
        assert pragmas.index("cache_size") < pragmas.index("quick_check"), statements


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


# ---- every operation completes or rolls back as a unit, whatever happens to its caller ----------


def _committed(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """What a second connection sees: only what is committed."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [tuple(r) for r in con.execute(sql, params).fetchall()]
    finally:
        con.close()


CHECK = "sha256:" + "c" * 64


def _operations(ing: str) -> dict[str, Callable[[Store], Awaitable[object]]]:
    page = [SpooledChunk(n, (n - 1) * 2, 2, CHECK, (n - 1) * 10, 10) for n in range(1, 40)]
    return {
        "mark_sent": lambda s: s.mark_sent(ing, 50, 0, 1, CHECK),
        "commit_ack": lambda s: s.commit_ack(ing, 1, CHECK),
        "record_spool": lambda s: s.record_spool(ing, page),
        "transition": lambda s: s.transition(ing, Status.RUNNING),
        "record_reject": lambda s: s.record_reject(ing, 1, CHECK, "no"),
        "drop_spool": lambda s: s.drop_spool(ing),
        "set_path": lambda s: s.set_path(ing, "/y"),
    }


@pytest.mark.parametrize("name", list(_operations("x")))
async def test_a_cancelled_caller_never_splits_a_store_operation(tmp_path: Path, name: str) -> None:
    """Cancel the caller after k event-loop steps, for every k until the operation finishes on its own:
    each time the connection is left outside any transaction, at the synchronous level the store
    believes, and a following ACK is really committed (a second connection sees it)."""
    db = tmp_path / "s.db"
    cancelled_at = 0
    for k in range(5000):
        db.unlink(missing_ok=True)
        store = await Store.open(db)
        try:
            ing = await _new_ingestion(store, "sha256:" + "1" * 64)
            await store.mark_sent(ing.id, 1, 0, 1, CHECK)
            op = asyncio.ensure_future(_operations(ing.id)[name](store))
            for _ in range(k):
                await asyncio.sleep(0)
            finished = op.done()
            op.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await op
            await asyncio.gather(*list(store._ops), return_exceptions=True)  # what the caller started goes on
            assert not store._db.in_transaction, f"{name}: left inside a transaction when cancelled after {k} steps"
            level = {"FULL": 2, "NORMAL": 1}[store._sync]
            assert await store.pragma("synchronous") == level, f"{name}: synchronous level drifted"
            await store.mark_sent(ing.id, 2, 1, 1, CHECK)
            assert await store.commit_ack(ing.id, 2, CHECK) == "accepted"
            assert ("acked",) in _committed(db, "SELECT state FROM chunks WHERE ingestion_id = ? AND n = 2", (ing.id,))
            if name == "record_spool":  # all of it or none of it
                spooled = _committed(db, "SELECT count(*) FROM chunks WHERE state = 'spooled'")[0][0]
                assert spooled in (0, 37), spooled  # 39 chunks, 2 of them sent before
        finally:
            await store.close()
        if finished:
            break
        cancelled_at += 1
    assert finished, f"{name} did not finish within 5000 event-loop steps"
    assert cancelled_at > 0, "the operation finished before any cancellation could land"
    report(f"store {name}: cancelled at each of {cancelled_at} awaits, never split")


async def test_status_changes_follow_the_state_machine(tmp_path: Path) -> None:
    """A cancel stands against a later resume; completion needs the claim, and the claim blocks a cancel."""
    store = await Store.open(tmp_path / "s.db")
    try:
        a = await _new_ingestion(store, "sha256:" + "a" * 64)
        assert await store.transition(a.id, Status.CANCELLED, "by the operator")
        assert not await store.transition(a.id, Status.QUEUED)  # a resume after the cancel changes nothing
        assert not await store.transition(a.id, Status.RUNNING)
        assert (await store.get(a.id)).status == Status.CANCELLED  # type: ignore[union-attr]

        b = await _new_ingestion(store, "sha256:" + "b" * 64)
        assert await store.transition(b.id, Status.RUNNING)
        assert not await store.transition(b.id, Status.COMPLETED)  # not claimed
        assert await store.claim_completion(b.id)
        assert not await store.transition(b.id, Status.CANCELLED)  # the completion was sent
        assert await store.transition(b.id, Status.COMPLETED)
        assert not await store.transition(b.id, Status.FAILED)  # final

        c = await _new_ingestion(store, "sha256:" + "d" * 64)
        assert await store.transition(c.id, Status.RUNNING)
        assert await store.transition(c.id, Status.CANCELLED)
        assert not await store.claim_completion(c.id)  # a cancelled ingestion never claims its completion
    finally:
        await store.close()


async def test_a_schema_1_database_migrates_and_its_unfinished_ingestion_resumes(tmp_path: Path) -> None:
    """tests/fixtures/state-v1.db was made by the schema-1 store: it opens, migrates to 6 (through 2 to 5), keeps its
    rows, and ends with the same tables, columns and indexes as a database created new."""
    db = tmp_path / "state.db"
    shutil.copy(FIXTURES / "state-v1.db", db)
    con = sqlite3.connect(db)  # schema 1 stored paths as they were: a backslash is one character
    con.execute(
        "UPDATE ingestions SET path = ? WHERE id = '82f5088205c5459787387c2fa8633ae9'", ("/srv/in\\box/\\x41.json",)
    )
    con.commit()
    con.close()
    store = await Store.open(db)
    try:
        assert await store.pragma("user_version") == 6
        assert (await store.get("82f5088205c5459787387c2fa8633ae9")).path == "/srv/in\\box/\\x41.json"  # type: ignore[union-attr]
        done = await store.get("82f5088205c5459787387c2fa8633ae9")
        run = await store.get("7cf74c8381994e84961d0fe787dddeb3")
        assert done is not None and run is not None
        assert done.status == Status.COMPLETED and done.options == {"json_path": "products.item"}
        assert run.status == Status.RUNNING and run.chunk_bytes == 4096 and not run.preflight
        assert await store.progress(run.id) == (1, 3)
        assert [r.state for r in await store.chunks(run.id)] == ["acked", "sent"]
        assert [i.id for i in await store.with_status(("queued", "running"))] == [run.id]
        assert (run.version, run.dedup) == ("", True)
        assert (run.rules, run.scope, run.records_rejected) == ({}, "", 0)  # schema 5: no rules, nothing refused
    finally:
        await store.close()
    fresh = await Store.open(tmp_path / "fresh.db")
    await fresh.close()

    def shape(path: Path) -> dict[str, Any]:
        con = sqlite3.connect(path)
        try:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            indexes = sorted(r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'"))
            columns = {t: sorted(r[1:4] for r in con.execute(f"PRAGMA table_info({t})")) for t in tables}
            return {"tables": tables, "indexes": indexes, "columns": columns}
        finally:
            con.close()

    assert shape(db) == shape(tmp_path / "fresh.db")


async def test_an_unfinished_schema_1_ingestion_resumes_after_the_upgrade(
    make_daemon: Any, receiver: Any, data_dir: Path, tmp_path: Path
) -> None:
    """The real daemon on a migrated database: an ingestion left unfinished by the old version completes."""
    records = [product(i) for i in range(25)]
    src = write_json(data_dir / "old.json", records)
    state = tmp_path / "daemon" / "state"
    state.mkdir(parents=True)
    db = state / "ingestion_state.db"
    shutil.copy(FIXTURES / "state-v1.db", db)
    con = sqlite3.connect(db)  # point the fixture's unfinished ingestion at a real file, as schema 1 stored it
    ident = identify(src)
    con.execute(
        "UPDATE ingestions SET path = ?, file_name = 'old.json', size = ?, mtime_ns = ?, file_id = ?, format = 'json',"
        " chunk_bytes = NULL, chunk_records = 10, preflight = 1 WHERE id = '7cf74c8381994e84961d0fe787dddeb3'",
        (str(src), ident.size, ident.mtime_ns, ident.file_id),
    )
    con.execute("DELETE FROM chunks WHERE ingestion_id = '7cf74c8381994e84961d0fe787dddeb3'")
    con.commit()
    con.close()
    d = await make_daemon()
    st = await d.wait("7cf74c8381994e84961d0fe787dddeb3")
    assert st["status"] == "completed", st
    assert [a["record"] for a in await receiver.records(st["ingestion_id"])] == [
        canonical.encode(r).decode() for r in records
    ]


def test_names_that_are_not_utf8_round_trip() -> None:
    """A Latin-1 file name (lone surrogates in Python) is stored as text and read back unchanged."""
    for name in ("/in/M\udce4rz.json", "/in/a\\b.json", "/in/plain.json", "/in/\\x41.json", "/in/ü\udcff\\.json"):
        text = to_text(name)
        text.encode("utf-8")  # storable
        assert from_text(text) == name
    assert readable("/in/M\udce4rz.json") == "/in/M\\xe4rz.json"


async def test_acks_that_arrive_together_commit_together_and_each_as_before(tmp_path: Path) -> None:
    """A window's ACKs arriving at once: each is answered as it would be on its own (accepted; a second ACK of
    the same chunk a duplicate; a wrong checksum a mismatch; a chunk never sent never_sent), every accepted one
    is committed when its answer comes (a second connection sees it), and they took fewer commits than ACKs."""
    db = tmp_path / "s.db"
    store = await Store.open(db)
    try:
        ing = await _new_ingestion(store, "sha256:" + "1" * 64)
        for n in range(1, 21):
            await store.mark_sent(ing.id, n, n - 1, 1, CHECK)
        statements = 0
        real = store._statement

        async def counting(sql: str, params: Any, *, durable: bool) -> list[Any]:
            nonlocal statements
            statements += "acked_at" in sql
            return await real(sql, params, durable=durable)

        store._statement = counting  # type: ignore[method-assign]
        wrong = "sha256:" + "d" * 64

        async def ack(n: int, checksum: str = CHECK) -> tuple[int, str, list[tuple[object, ...]]]:
            outcome = await store.commit_ack(ing.id, n, checksum)
            seen = _committed(db, "SELECT state FROM chunks WHERE ingestion_id = ? AND n = ?", (ing.id, n))
            return n, outcome, seen

        calls = [ack(n) for n in range(1, 19)] + [ack(5), ack(19, wrong), ack(30)]
        results = await asyncio.gather(*calls)
        outcomes = [outcome for _, outcome, _ in results]
        assert outcomes[:18] == ["accepted"] * 18
        assert outcomes[18:] == ["duplicate", "mismatch", "never_sent"]
        assert all(seen == [("acked",)] for n, outcome, seen in results if outcome == "accepted")
        assert _committed(db, "SELECT state FROM chunks WHERE ingestion_id = ? AND n = 19", (ing.id,)) == [("sent",)]
        assert 1 <= statements < 10, statements  # 18 accepted ACKs, in a few commits
        assert not store._acking and store._ack_flush is None
    finally:
        await store.close()


async def test_a_schema_5_database_keeps_its_integer_keys_as_their_text(tmp_path: Path) -> None:
    """Schema 5 stored an integer key as its JSON number (100234), a text key as its JSON string: keys are text
    now, so the number becomes the string ("100234"), and where a scope held both forms of one key the text
    one stays. Keys an ingestion listed as absent move alike. Nothing else changes."""
    db = tmp_path / "state.db"
    store = await Store.open(db)
    await store.close()
    con = sqlite3.connect(db)
    con.executemany(
        "INSERT INTO delta_versions (scope, key, hash, writer) VALUES (?, ?, ?, 1)",
        [("p", "100234", b"n"), ("p", '"A-1"', b"a"), ("p", "7", b"number"), ("p", '"7"', b"text"), ("q", "-5", b"q")],
    )
    con.execute("PRAGMA user_version = 5")
    con.commit()
    con.close()
    store = await Store.open(db)
    try:
        assert await store.pragma("user_version") == 6
    finally:
        await store.close()
    con = sqlite3.connect(db)
    rows = sorted(con.execute("SELECT scope, key, hash FROM delta_versions").fetchall())
    con.close()
    assert rows == [("p", '"100234"', b"n"), ("p", '"7"', b"text"), ("p", '"A-1"', b"a"), ("q", '"-5"', b"q")]
