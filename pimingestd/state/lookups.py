"""Blocking, read-only views of the state database, for worker threads (the spool pass, the reject file).

The spool pass of an ingestion with record rules looks up a batch of keys at a time, so memory stays flat
whatever the scope's size; the keys a file holds go to a scratch database beside its spool (a full file's
deletions are the scope's keys it does not hold). Each view opens its own connection: the state database is
in WAL mode, so these reads never wait for the daemon's writes, nor block them. Writes stay in sqlite.Store.
"""

from __future__ import annotations

import heapq
import itertools
import sqlite3
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

_IN = "SELECT value FROM json_each(?)"  # one statement text whatever the batch's size
_RUN = 50_000  # absent keys read sorted per statement (their runs are merged)


def _uri(path: Path, query: str = "") -> str:
    """A file URI for SQLite (a name holding ? or # must not end the path)."""
    return "file:" + quote(str(path)) + query


class ScopeView:
    """A delta scope's stored versions, looked up a batch of keys at a time. Every stored key a lookup finds
    is marked in a bitmap of row ids (an eighth of a byte per row: a million keys cost 125 KB), so a full
    file's deletions are the scope's unmarked keys, without writing down the keys the file holds. ``seen``
    (a scratch database beside the spool) is kept only for ``unique_key``: which keys this file held."""

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
        self._con.executescript("DROP TABLE IF EXISTS folds; CREATE TABLE folds (fold TEXT PRIMARY KEY) WITHOUT ROWID;")
        self._con.execute("ATTACH ? AS st", (_uri(state, "?mode=ro"),))
        self._seen = seen is not None
        self._found = bytearray()
        self._sent = bytearray()  # stored keys a record of this file was sent for (a bit per row id, as found)
        self.last_new: list[str] = []  # the keys of the last ``changed`` batch that the scope does not hold
        self._folds = False  # whether any fold was held

    def close(self) -> None:
        self._con.close()

    def changed(self, keys: Sequence[str], hashes: Sequence[bytes]) -> list[bool]:
        """For each key: whether its record must be sent (new in the scope, a different version, or a version
        this ingestion wrote itself, so a second spool pass decides as the first did). Marks the keys found.

        A batch whose keys come in order (catalogue exports mostly do) reads the stored keys of its range in
        one sequential index scan, about four times cheaper than a probe per key; when the range holds many
        more stored keys than the batch, or the batch is not in order, each key is probed."""
        rows = self._in_range(keys) if len(keys) > 16 else None
        if rows is None:
            rows = self._con.execute(
                f"SELECT key, hash, writer, id FROM st.delta_versions WHERE scope = ? AND key IN ({_IN})",
                (self._scope, orjson.dumps(list(keys)).decode()),
            ).fetchall()
        stored: dict[str, tuple[bytes | None, int]] = {}
        found, sent, me = self._found, self._sent, self._writer
        top = max((r[3] for r in rows), default=0) >> 3
        if top >= len(found):
            found.extend(bytes(top + 1 - len(found) + (len(found) >> 1)))
        if len(sent) < len(found):
            sent.extend(bytes(len(found) - len(sent)))
        for key, digest, writer, rowid in rows:
            # a version it wrote itself (None): sent by it, send again
            stored[key] = (digest if writer != me else None, rowid)
            found[rowid >> 3] |= 1 << (rowid & 7)
        # A key repeated in the file: once one of its records is sent, PIM-Core no longer holds the stored
        # version, so every later record of that key is sent too, and the key ends as its last record.
        out = []
        new: list[str] = []
        for key, digest in zip(keys, hashes, strict=True):
            known = stored.get(key)
            if known is None:
                new.append(key)
                out.append(True)  # new in the scope
                continue
            version, rowid = known
            byte, bit = rowid >> 3, 1 << (rowid & 7)
            if version is None or version != digest or sent[byte] & bit:
                sent[byte] |= bit
                out.append(True)
            else:
                out.append(False)
        self.last_new = new
        return out

    def mark(self, keys: Sequence[str]) -> None:
        """Mark ``keys`` found without deciding anything about them: records the file holds that are not sent
        (invalid, refused by the rules): absent means "not in the file", never "not looked up"."""
        if not keys:
            return
        rows = self._con.execute(
            f"SELECT id FROM st.delta_versions WHERE scope = ? AND key IN ({_IN})",
            (self._scope, orjson.dumps(list(keys)).decode()),
        ).fetchall()
        found = self._found
        top = max((r[0] for r in rows), default=0) >> 3
        if top >= len(found):
            found.extend(bytes(top + 1 - len(found) + (len(found) >> 1)))
        for (rowid,) in rows:
            found[rowid >> 3] |= 1 << (rowid & 7)

    def hold_folds(self, folds: Sequence[str]) -> None:
        """Note ``folds`` (keys as PIM-Core compares them, records/pipeline.py) as held by this file."""
        if folds:
            self._folds = True
            self._con.execute("BEGIN")
            self._con.executemany("INSERT OR IGNORE INTO folds (fold) VALUES (?)", [(f,) for f in folds])
            self._con.execute("COMMIT")

    @property
    def holds_folds(self) -> bool:
        return self._folds

    def folds_held(self, folds: Sequence[str]) -> set[str]:
        """Which of ``folds`` this file held (``hold_folds``); nothing to look up when none was held."""
        if not self._folds or not folds:
            return set()
        rows = self._con.execute(f"SELECT fold FROM folds WHERE fold IN ({_IN})", (orjson.dumps(list(folds)).decode(),))
        return {r[0] for r in rows}

    def _in_range(self, keys: Sequence[str]) -> list[Any] | None:
        """The stored rows of the batch's keys by one range scan, or None (not in order, or a sparse range)."""
        if any(a > b for a, b in itertools.pairwise(keys)):  # str order is SQLite's BINARY order for UTF-8 text
            return None
        limit = 2 * len(keys) + 64
        rows = self._con.execute(
            "SELECT key, hash, writer, id FROM st.delta_versions WHERE scope = ? AND key >= ? AND key <= ? LIMIT ?",
            (self._scope, keys[0], keys[-1], limit),
        ).fetchall()
        if len(rows) >= limit:
            return None
        wanted = set(keys)
        return [r for r in rows if r[0] in wanted]  # only the keys this file holds are marked found

    def _marked(self, rowid: int) -> bool:
        byte = rowid >> 3
        return byte < len(self._found) and bool(self._found[byte] & (1 << (rowid & 7)))

    def seen_before(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` an earlier batch of this file held (``unique_key``)."""
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

    def absent(self, ingestion_id: str, page: int = 1000) -> Iterator[list[str]]:
        """The scope's keys no lookup found, in key order, a page at a time; with the keys this ingestion's
        tombstones removed already (a second spool pass cuts the same tombstones). The scope's row ids are
        scanned against the bitmap (8 bytes per absent key are held), then the absent keys are read sorted,
        in runs merged together."""
        unmarked = array("q")
        found = self._found
        ids = self._con.execute("SELECT id FROM st.delta_versions WHERE scope = ?", (self._scope,))
        while rows := ids.fetchmany(10_000):
            for (rowid,) in rows:
                byte = rowid >> 3
                if byte >= len(found) or not found[byte] & (1 << (rowid & 7)):
                    unmarked.append(rowid)
        runs = [
            self._con.execute(
                f"SELECT key FROM st.delta_versions WHERE id IN ({_IN}) ORDER BY key",
                (orjson.dumps(unmarked[i : i + _RUN].tolist()).decode(),),
            )
            for i in range(0, len(unmarked), _RUN)
        ]
        runs.append(
            self._con.execute(
                "SELECT key FROM st.deletions WHERE ingestion_id = ? AND state = 'deleted' ORDER BY key",
                (ingestion_id,),
            )
        )
        out: list[str] = []
        for key in heapq.merge(*(_keys(c) for c in runs)):
            out.append(key)
            if len(out) == page:
                yield out
                out = []
        if out:
            yield out

    def absent_count(self, ingestion_id: str) -> int:
        """How many keys ``absent`` gives, without reading them: every marked row is one of the scope's."""
        found = int.from_bytes(self._found, "little").bit_count()
        mine = self._con.execute(
            "SELECT count(*) FROM st.deletions WHERE ingestion_id = ? AND state = 'deleted'", (ingestion_id,)
        ).fetchone()[0]
        return self.scope_size() - found + int(mine)


def _keys(cur: sqlite3.Cursor) -> Iterator[str]:
    while rows := cur.fetchmany(1000):
        for (key,) in rows:
            yield key


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
