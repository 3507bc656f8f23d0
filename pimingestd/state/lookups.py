"""Blocking, read-only views of the state database, for worker threads (the spool pass, the reject file).

The spool pass of an ingestion with record rules looks up a batch of keys at a time, so memory stays flat
whatever the scope's size; the keys a file holds go to a scratch database beside its spool (a full file's
deletions are the scope's keys it does not hold). Each view opens its own connection: the state database is
in WAL mode, so these reads never wait for the daemon's writes, nor block them. Writes stay in sqlite.Store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

import orjson

_IN = "SELECT value FROM json_each(?)"  # one statement text whatever the batch's size


def _uri(path: Path, query: str = "") -> str:
    """A file URI for SQLite (a name holding ? or # must not end the path)."""
    return "file:" + quote(str(path)) + query


class ScopeView:
    """A delta scope's stored versions, and (with ``seen``) the keys this file holds."""

    def __init__(self, state: Path, scope: str, writer: int, seen: Path | None) -> None:
        self._scope = scope
        self._writer = writer  # this ingestion's rowid: versions it wrote itself were sent by it
        if seen is not None:
            seen.parent.mkdir(parents=True, exist_ok=True)
        main = _uri(seen) if seen is not None else "file::memory:"
        self._con = sqlite3.connect(main, uri=True, isolation_level=None, check_same_thread=False)
        if seen is not None:
            self._con.executescript(
                "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
                " DROP TABLE IF EXISTS seen; CREATE TABLE seen (key TEXT PRIMARY KEY) WITHOUT ROWID;"
            )
        self._con.execute("ATTACH ? AS st", (_uri(state, "?mode=ro"),))
        self._seen = seen is not None

    def close(self) -> None:
        self._con.close()

    def changed(self, keys: Sequence[str], hashes: Sequence[bytes]) -> list[bool]:
        """For each key: whether its record must be sent (new in the scope, a different version, or a version
        this ingestion wrote itself, so a second spool pass decides as the first did)."""
        rows = self._con.execute(
            f"SELECT key, hash, writer FROM st.delta_versions WHERE scope = ? AND key IN ({_IN})",
            (self._scope, orjson.dumps(list(keys)).decode()),
        ).fetchall()
        stored = {r[0]: (bytes(r[1]), r[2]) for r in rows}
        out = []
        for key, digest in zip(keys, hashes, strict=True):
            known = stored.get(key)
            out.append(known is None or known[0] != digest or known[1] == self._writer)
        return out

    def seen_before(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` an earlier batch of this file held."""
        rows = self._con.execute(f"SELECT key FROM seen WHERE key IN ({_IN})", (orjson.dumps(list(keys)).decode(),))
        return {r[0] for r in rows}

    def hold(self, keys: Sequence[str]) -> None:
        if self._seen and keys:
            self._con.execute("BEGIN")
            self._con.executemany("INSERT OR IGNORE INTO seen (key) VALUES (?)", [(k,) for k in keys])
            self._con.execute("COMMIT")

    def scope_size(self) -> int:
        row = self._con.execute("SELECT count(*) FROM st.delta_versions WHERE scope = ?", (self._scope,)).fetchone()
        return int(row[0])

    _ABSENT = (
        "SELECT key FROM st.delta_versions v WHERE scope = ? AND NOT EXISTS (SELECT 1 FROM seen s WHERE s.key = v.key)"
        " UNION SELECT key FROM st.deletions WHERE ingestion_id = ? AND state = 'deleted'"
    )

    def absent_count(self, ingestion_id: str) -> int:
        row = self._con.execute(f"SELECT count(*) FROM ({self._ABSENT})", (self._scope, ingestion_id)).fetchone()
        return int(row[0])

    def absent(self, ingestion_id: str, page: int = 1000) -> Iterator[list[str]]:
        """The scope's keys this file does not hold, in key order, a page at a time; with the keys this
        ingestion's tombstones removed already (a second spool pass cuts the same tombstones)."""
        cur = self._con.execute(self._ABSENT + " ORDER BY 1", (self._scope, ingestion_id))
        while rows := cur.fetchmany(page):
            yield [r[0] for r in rows]


def writer_of(state: Path, ingestion_id: str) -> int:
    """An ingestion's rowid: the short name its versions are written under."""
    con = sqlite3.connect(_uri(state, "?mode=ro"), uri=True)
    try:
        row = con.execute("SELECT rowid FROM ingestions WHERE id = ?", (ingestion_id,)).fetchone()
    finally:
        con.close()
    if row is None:
        raise LookupError(ingestion_id)
    return int(row[0])


def rejects(state: Path, ingestion_id: str) -> Iterator[tuple[int, str, str | None]]:
    """(position, reason, field) of every record in an ingestion's reject file, in file order."""
    con = sqlite3.connect(_uri(state, "?mode=ro"), uri=True, check_same_thread=False)
    try:
        cur = con.execute(
            "SELECT position, reason, field FROM record_rejects WHERE ingestion_id = ? ORDER BY position",
            (ingestion_id,),
        )
        while rows := cur.fetchmany(1000):
            for r in rows:
                yield int(r[0]), str(r[1]), r[2]
    finally:
        con.close()
