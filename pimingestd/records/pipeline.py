"""The spool pass of an ingestion with record rules (blocking: it runs in the spool thread).

Records come in file order, a batch at a time: each is validated (records/validate.py), keyed, encoded
canonically and hashed; a batch's keys are looked up on disk at once (state/lookups.py), so memory stays
flat whatever the scope's size. Then each record is:

- invalid: under ``on_invalid = "fail"`` the pass fails (nothing was sent: delivery starts after it), else it
  goes to the reject file with its reason;
- unchanged (delta): its canonical bytes hash to the version PIM-Core last ACKed for its key: not sent;
- sent: cut into chunks as any other ingestion's, each chunk carrying its records' file positions, keys and
  hashes (model.ChunkMeta) for the moment its ACK commits.

After the last record of a full file, the scope's keys it did not hold are its deletions: listed, or sent
as tombstones in chunks of their own at the end. A key is absent only when no record of the file holds it:
the keys of records that are not sent (invalid, or a repeat under ``unique_key``) are marked found too, and
so is each key's other spelling (``"1"`` for ``1``: one object in PIM-Core, see protocol/keys.py). A
record whose key cannot be read at all could be any of the absent keys, so then none is sent as a tombstone:
the file fails before anything is sent, as with too many deletions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import orjson

from ..config import ChunkPolicy
from ..errors import ChunkError, InvalidRecord, TooManyDeletions
from ..model import HASH_BYTES, ChunkMeta, Invalid
from ..protocol import canonical, keys
from ..protocol.chunk import Chunk
from ..sources import Record
from ..sources.exact import Exact
from ..state.lookups import ScopeView
from .rules import RecordRules
from .validate import Validator, as_written

BATCH = 1000  # records looked up together
_Kept = tuple[int, bytes, "str | None"]  # a record to send (unless unchanged): file position, canonical bytes, key


@dataclass(frozen=True, slots=True)
class Absent:
    """A page of the scope's keys this full file does not hold."""

    keys: list[str]


@dataclass(frozen=True, slots=True)
class Unchanged:
    count: int


Item = Chunk | Invalid | Absent | Unchanged


class Pipeline:
    def __init__(
        self,
        rules: RecordRules,
        policy: ChunkPolicy,
        view: ScopeView | None,
        *,
        ingestion_id: str,
        name: str,
        full_file: bool,
        dedup: bool,
    ) -> None:
        self._rules = rules
        self._view = view
        self._validator = Validator(rules)
        self._cutter = _Cutter(policy)
        self._id = ingestion_id
        self._name = name
        self._full = full_file  # False: a reject file (never a whole catalogue), so it deletes nothing
        self._delta = rules.delta and dedup  # re_ingestion sends everything (versions are still recorded)
        self._full_deletions = rules.deletions != "off" and full_file
        self._keyless: tuple[int, str] | None = None  # the first record whose key cannot be read, and why
        self._fold: bool | None = None  # whether new keys are noted as PIM-Core compares them (_folding)
        key = rules.key
        self._key_of = (lambda value: keys.extract(value, key)) if key is not None else None
        self._digit_keys = keys.DigitKeys()  # per pass: each pass reads the file in the same order

    def run(self, records: Iterator[Record]) -> Iterator[Item]:
        numbered = enumerate(records)
        while batch := list(islice(numbered, BATCH)):
            kept = yield from self._prepare(batch)
            sha = hashlib.sha256
            hashes = [sha(body).digest()[:HASH_BYTES] for _, body, _ in kept]
            yield from self._emit(kept, hashes, self._lookup(kept, hashes))
        yield from self._cutter.flush()
        if self._full_deletions and self._view is not None:
            yield from self._deletions()

    def _prepare(self, batch: list[tuple[int, Record]]) -> Generator[Item, None, list[_Kept]]:
        """Encode, validate and key each record of the batch; invalid ones are yielded, the rest returned."""
        rules = self._rules
        kept: list[_Kept] = []
        held_back: list[str] = []  # keys of records not sent, which the file holds all the same
        check = self._validator.check if rules.schema is not None or rules.required else None
        key_of, loads, dumps, forms = self._key_of, orjson.loads, orjson.dumps, self._digit_keys
        top = rules.key if rules.key is not None and "." not in rules.key else None
        key_field = rules.key or ""
        for position, record in batch:
            # The hot loop of a delta pass: the common case (a fast path's canonical bytes, a top-level string
            # key, no schema) is written out inline; anything else takes the general calls.
            if type(record) is Exact:  # the fast path's bytes, and its object (numbers with fractions marked)
                body = record.body
                value: Any = record.value if check is None else loads(body)
            elif type(record) is dict:
                body = _encode(record, position)
                value = record
            else:
                body = bytes(memoryview(dumps(record)))  # canonical already; out of orjson's 4 KiB buffer
                value = loads(body)
            # Checked on what is sent, numbers as written (Decimals from the canonical bytes): never on binary
            # floats (19.90 is no multiple of 0.01 as a float), whichever reader gave the record.
            bad = check(as_written(body)) if check is not None else None
            key = None
            if bad is None and key_of is not None:
                found = value.get(top) if top is not None else None
                if type(found) is str and found and "\x7f" not in found:  # a DEL: a marked number, not a string
                    key = dumps(found).decode()
                    if found[-1] in _DIGITS and (form := forms.check(found, position)) is not None:
                        bad = (form, rules.key)
                        held_back.append(key)  # refused for its form, but the file holds the key
                else:
                    try:
                        plain = loads(body) if type(record) is Exact else value
                        key = key_of(plain)
                        if (form := forms.check(keys.lookup(plain, key_field), position)) is not None:
                            bad = (form, rules.key)
                            held_back.append(key)
                    except keys.NoKey as exc:
                        bad = (str(exc), rules.key)
                        self._keyless = self._keyless or (position, str(exc))
            elif bad is not None and key_of is not None:
                try:
                    held_back.append(key_of(value))
                except keys.NoKey as exc:
                    self._keyless = self._keyless or (position, str(exc))
            if bad is not None:
                yield from self._invalid(position, *bad)
                continue
            kept.append((position, body, key))
        if rules.unique_key and self._view is not None:
            before = self._view.seen_before([k for _, _, k in kept if k is not None])
            unique: list[_Kept] = []
            held: set[str] = set()
            for position, body, key in kept:
                assert key is not None
                if key in before or key in held:
                    yield from self._invalid(position, f"the key {key} appears earlier in this file", rules.key)
                    continue
                held.add(key)
                unique.append((position, body, key))
            kept = unique
            self._view.hold([k for _, _, k in kept if k is not None])
        if self._full_deletions and self._view is not None:
            self._view.mark(held_back)
            if self._folding():
                self._view.hold_folds([keys.text_fold(k) for k in held_back])
        return kept

    def _lookup(self, kept: list[_Kept], hashes: list[bytes]) -> list[bool] | None:
        """Whether each record is new or changed in the scope (marking the keys found); None: not looked up.
        (Running this in a second thread while the next batch is parsed gained nothing: building the rows
        holds the GIL longer than SQLite's own step lets go of it.)"""
        view = self._view
        if view is None or not kept or not (self._delta or self._full_deletions):
            return None
        changed = view.changed([k for _, _, k in kept if k is not None], hashes)
        if self._full_deletions and view.last_new and self._folding():
            view.hold_folds([keys.text_fold(k) for k in view.last_new])
        return changed

    def _folding(self) -> bool:
        """Whether this full file's new keys are noted as PIM-Core compares them (``keys.text_fold``): only when
        the scope held keys as the pass began (an empty scope, a first load, has none to delete)."""
        if self._fold is None:
            assert self._view is not None
            self._fold = self._view.scope_size() > 0
        return self._fold

    def _spare_respelled(self) -> None:
        """Mark found each absent key whose fold a key of this file has: PIM-Core's collation takes them for
        one object (``ABC`` yesterday, ``abc`` today), which the upsert has just updated, so a tombstone would
        delete a product the file holds. Errs towards keeping: a fold is wider than either collation."""
        view = self._view
        assert view is not None
        for page in view.absent(self._id):
            folds = [keys.text_fold(k) for k in page]
            held = view.folds_held(folds)
            if held:
                view.mark([k for k, f in zip(page, folds, strict=True) if f in held])

    def _emit(self, kept: list[_Kept], hashes: list[bytes], changed: list[bool] | None) -> Iterator[Item]:
        if self._rules.key is None:
            for position, body, _ in kept:
                yield from self._cutter.add(body, position, None, None)
            return
        send = changed if changed is not None and self._delta else [True] * len(kept)
        skipped = 0
        for (position, body, key), digest, wanted in zip(kept, hashes, send, strict=True):
            if wanted:
                yield from self._cutter.add(body, position, key, digest)
            else:
                skipped += 1
        if skipped:
            yield Unchanged(skipped)

    def _invalid(self, position: int, reason: str, field: str | None) -> Iterator[Invalid]:
        if self._rules.on_invalid == "fail":
            raise InvalidRecord(f"{self._name}: record {position} is invalid: {reason}; nothing was sent")
        yield Invalid(position, reason[:2000], field)

    def _deletions(self) -> Iterator[Item]:
        view, rules = self._view, self._rules
        assert view is not None and rules.key is not None
        if self._fold and view.holds_folds:
            self._spare_respelled()
        total, size = view.absent_count(self._id), view.scope_size()
        if total and self._keyless is not None and rules.deletions == "send":
            position, why = self._keyless
            raise TooManyDeletions(
                f"{self._name}: record {position} has no usable key ({why}), so this full file cannot say which"
                f" of the {total} keys of delta scope {rules.delta_scope!r} it no longer holds; nothing was sent."
                ' Give that record its key, or use deletions = "report"'
            )
        if total and size and 100.0 * total / size > rules.max_deletions:
            raise TooManyDeletions(
                f"{self._name}: {total} of the {size} keys of delta scope {rules.delta_scope!r} are absent from this"
                f" file ({100.0 * total / size:.1f}%), more than max_deletions = {rules.max_deletions:g}%; nothing was"
                ' sent. Check that the file is whole, or raise max_deletions, or use deletions = "report"'
            )
        for page in view.absent(self._id):
            yield Absent(page)
            if rules.deletions == "send":
                for key in page:
                    yield from self._cutter.add(_encode(keys.tombstone(rules.key, key), -1), None, key, None)
        if rules.deletions == "send":
            yield from self._cutter.flush()


_DIGITS = frozenset("0123456789")


def _encode(record: Any, position: int) -> bytes:
    try:
        return canonical.encode_compact(record)  # held a batch at a time
    except canonical.EncodeError as exc:
        raise ChunkError(f"record {position} cannot be written as JSON: {exc}") from None


class _Cutter:
    """Chunks of pre-encoded records, by count or by bytes, numbered on across records and tombstones
    (a tombstone's position is None; a chunk holds records or tombstones, never both)."""

    def __init__(self, policy: ChunkPolicy) -> None:
        self._policy = policy
        self._n = 0
        self._first = 0
        self._bodies: list[bytes] = []
        self._size = 1
        self._positions: list[int] = []
        self._keys: list[str] = []
        self._hashes: list[bytes] = []
        self._tombstones = False

    def add(self, body: bytes, position: int | None, key: str | None, digest: bytes | None) -> Iterator[Chunk]:
        policy, tombstone = self._policy, position is None
        if self._bodies and tombstone != self._tombstones:
            yield from self.flush()
        if policy.bytes is not None:
            if len(body) + 2 > policy.bytes:
                raise ChunkError(
                    f"record {position} is {len(body)} bytes as JSON; it cannot fit a chunk of at most {policy.bytes} bytes"
                )
            if self._bodies and self._size + 1 + len(body) + 1 > policy.bytes:
                yield from self.flush()
        self._tombstones = tombstone
        self._bodies.append(body)
        self._size += len(body) + (1 if len(self._bodies) > 1 else 0)
        if position is not None:
            self._positions.append(position)
        if key is not None:
            self._keys.append(key)
        if digest is not None:
            self._hashes.append(digest)
        if policy.records is not None and len(self._bodies) == policy.records:
            yield from self.flush()

    def flush(self) -> Iterator[Chunk]:
        if not self._bodies:
            return
        body = canonical.join_array(self._bodies)
        meta = ChunkMeta(
            None if self._tombstones else self._positions,
            self._keys or None,
            b"".join(self._hashes) if self._hashes else None,
            self._tombstones,
        )
        self._n += 1
        count = len(self._bodies)
        yield Chunk(self._n, self._first, count, body, canonical.sha256(body), meta.encode())
        self._first += count
        self._bodies, self._positions, self._keys, self._hashes, self._size = [], [], [], [], 1
