"""The spool: one file per ingestion holding its chunks' canonical bytes back to back.

The spool pass (blocking; run it in a thread) streams the source once, cuts the
chunks, writes their bytes, fsyncs, and returns where each chunk lies. Delivery
then reads chunk bytes from here, so a re-send is byte-identical by
construction and resume seeks straight to the next chunk.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..diskspace import disk_full, is_full
from ..errors import DiskFull, FileChangedError
from ..locations.remote import ObjectIdentity, Remote, stage
from ..model import Invalid, SpooledChunk, SpoolPage
from ..names import readable
from ..protocol.chunk import Chunk
from ..records.pipeline import Absent, Unchanged
from ..sources import Record, SourceSpec, read_records, read_stream
from ..sources.fileid import stat_identity

_PAGE_META = 2 << 20  # a page's chunk metadata (keys, hashes, positions) is bounded by bytes too


def spool_file(spool_dir: Path, ingestion_id: str) -> Path:
    return spool_dir / f"{ingestion_id}.spool"


def write_spool(
    items: Iterator[Chunk | Invalid | Absent | Unchanged],
    target: Path,
    finish: Callable[[], None],
    stop: threading.Event,
    page: int = 1000,
) -> Iterator[SpoolPage]:
    """Spool every chunk among ``items`` (``cut(records, policy)``, or a record pipeline's output), yielding
    where they lie, with the pipeline's other findings, a page at a time (so memory stays flat in the number
    of chunks and of invalid records). The last page comes only after the spool is fsynced and ``finish``
    (which checks that the source did not change, raising if it did) has returned; bad input raises.
    ``stop`` ends the pass early (the spool is then incomplete)."""
    chunks: list[SpooledChunk] = []
    invalid: list[Invalid] = []
    deletions: list[str] = []
    unchanged = 0
    offset = 0
    held = 0  # bytes of chunk metadata in the page: a keyed chunk's row carries its records' keys and hashes
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        out = open(target, "wb")  # noqa: SIM115 - closed below, around the yields
    except OSError as exc:
        raise _no_space(exc, target) from None
    with out:
        for item in items:
            if stop.is_set():
                return
            if isinstance(item, Invalid):
                invalid.append(item)
            elif isinstance(item, Absent):
                deletions.extend(item.keys)
            elif isinstance(item, Unchanged):
                unchanged += item.count
            else:
                try:
                    out.write(item.body)
                except OSError as exc:
                    raise _no_space(exc, target) from None
                chunks.append(
                    SpooledChunk(
                        item.n, item.first_record, item.records, item.checksum, offset, len(item.body), item.meta
                    )
                )
                offset += len(item.body)
                held += len(item.meta or b"")
            # One chunk held back: the last page waits for the fsync and the check below.
            full = len(chunks) > page or (held > _PAGE_META and len(chunks) > 1)
            if full or len(invalid) >= page or len(deletions) >= page:
                yield SpoolPage(chunks[:-1], invalid, deletions, unchanged)
                chunks, invalid, deletions, unchanged = chunks[-1:], [], [], 0
                held = len(chunks[0].meta or b"") if chunks else 0
        try:
            out.flush()
            os.fsync(out.fileno())
        except OSError as exc:
            raise _no_space(exc, target) from None
    finish()
    yield SpoolPage(chunks, invalid, deletions, unchanged)


def _no_space(exc: OSError, target: Path) -> OSError | DiskFull:
    return disk_full("the spool", target, "spool") if is_full(exc) else exc


def local_records(source: Path, spec: SourceSpec, identity: tuple[int, int]) -> Iterator[Record]:
    """A local file's records, read up to the size recorded at submit."""
    return read_records(source, spec, size=identity[0])


def local_unchanged(source: Path, identity: tuple[int, int]) -> Callable[[], None]:
    """A ``finish`` for a local file: its size and mtime are still those recorded at submit."""

    def check() -> None:
        try:
            now = stat_identity(source)
        except FileNotFoundError:
            now = (-1, -1)
        if now != identity:
            raise FileChangedError(
                f"{readable(source.name)}: the file changed while it was being read; drop it again once it is complete"
            )

    return check


class RemoteSource:
    """A remote object as the spool pass reads it: streamed (Excel: staged to a local file first,
    since a workbook needs random access), hashed as it is read. ``file_id`` is set once every
    byte has been read; ``finish`` checks that the object did not change meanwhile."""

    def __init__(
        self, remote: Remote, url: str, identity: ObjectIdentity, spec: SourceSpec, stage_path: Path, name: str
    ) -> None:
        self._remote = remote
        self._url = url
        self._identity = identity
        self._spec = spec
        self._stage_path = stage_path
        self._name = name
        self.file_id: str | None = None

    def records(self) -> Iterator[Record]:
        stream = self._remote.open(self._url, self._identity)
        try:
            if self._spec.format == "excel":
                stage(stream, self._stage_path, self._remote.cfg.stage_max_bytes, self._name)
                self.file_id = stream.file_id
                yield from read_records(self._stage_path, self._spec)
            else:
                with io.BufferedReader(stream, 1 << 16) as fh:
                    yield from read_stream(fh, self._name, self._spec)
                    stream.drain()  # what the parser left unread (trailing whitespace, say) is hashed too
                    self.file_id = stream.file_id
        finally:
            stream.close()
            self._stage_path.unlink(missing_ok=True)

    def finish(self) -> None:
        self._remote.check_unchanged(self._url, self._identity)


class _Tap(io.RawIOBase):
    """Reads through to ``raw`` (at most ``size`` bytes), hashing them. Closing it (as a parser does) leaves
    ``raw`` open: ``rest`` then reads what the parser left, so that the whole source is hashed."""

    def __init__(self, raw: Any, size: int) -> None:
        super().__init__()
        self._raw = raw
        self._size = size
        self._pos = 0
        self._hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        view = memoryview(buffer)[:want]
        n = self._raw.readinto(view) or 0
        self._hash.update(view[:n])
        self._pos += n
        return n

    def rest(self) -> str:
        """Read (and hash) the rest; the SHA-256 of every byte, as a file_id."""
        buf = bytearray(1 << 20)
        while self._pos < self._size:
            n = self._raw.readinto(memoryview(buf)[: self._size - self._pos]) or 0
            if not n:
                break
            self._hash.update(memoryview(buf)[:n])
            self._pos += n
        return "sha256:" + self._hash.hexdigest()


class SecondRead:
    """A source read again after delivery (the reject file's records), checked against the bytes the spool
    pass read: every byte is hashed and compared with the ingestion's ``file_id``, and ``verify`` raises
    FileChangedError if they differ. The exporter may have replaced the object (or file) meanwhile; its
    records must never be written as the refused ones. What the records were written to is to be kept only
    once ``verify`` has returned.

    Reads are also pinned where the store can: an S3 object by its version id, a local file by the one open
    descriptor. A remote object whose version is seen to have changed is not downloaded at all. Excel (random
    access) is hashed whole before it is parsed: staged, for a remote object; a local workbook is read from
    the same open descriptor that was hashed (a rename cannot reach it), and hashed again by ``verify`` once
    it is read (a rewrite in place can)."""

    def __init__(
        self,
        source: str,
        *,
        size: int,
        file_id: str,
        spec: SourceSpec,
        name: str,
        remote: Remote | None = None,
        version: str = "",
        stage_path: Path | None = None,
    ) -> None:
        self._source = source
        self._size = size
        self._file_id = file_id
        self._spec = spec
        self._name = name
        self._remote = remote
        self._identity = ObjectIdentity(size, version)
        self._stage_path = stage_path
        self._handles: list[Any] = []  # closed by close()
        self._staged = False
        self._records: Iterator[Record] | None = None
        self._tap: _Tap | None = None
        self._rehash: Any = None  # a local workbook's descriptor, hashed before the parse and again after it

    def _changed(self, now: str) -> FileChangedError:
        return FileChangedError(
            f"{self._name}: the source is not the one delivered any more ({now} != {self._file_id}): it was"
            " replaced or rewritten since it was read"
        )

    def records(self) -> Iterator[Record]:
        if not self._file_id:
            raise FileChangedError(f"{self._name}: its bytes were never identified, so a second read cannot be checked")
        self._records = self._open()
        return self._records

    def _open(self) -> Iterator[Record]:
        if self._remote is not None:
            if not self._identity.version.startswith("version:"):  # not pinned: one that changed is not read
                self._remote.check_unchanged(self._source, self._identity)
            stream = self._remote.open(self._source, self._identity)
            self._handles.append(stream)
            if self._spec.format == "excel":
                assert self._stage_path is not None
                self._staged = True
                stage(stream, self._stage_path, self._remote.cfg.stage_max_bytes, self._name)
                if stream.file_id != self._file_id:
                    raise self._changed(stream.file_id)
                return read_records(self._stage_path, self._spec)
            raw: Any = stream
        else:
            from ..locations.local import open_source

            raw = open_source(Path(self._source), self._size)
            self._handles.append(raw)
            if self._spec.format == "excel":
                now = _Tap(raw, self._size).rest()
                if now != self._file_id:
                    raise self._changed(now)
                raw.seek(0)
                self._rehash = raw  # hashed again by verify: a rewrite in place reaches this descriptor too
                return read_stream(raw, readable(self._name), self._spec)
        self._tap = _Tap(raw, self._size)
        return read_stream(io.BufferedReader(self._tap, 1 << 16), self._name, self._spec)

    def verify(self) -> None:
        """FileChangedError unless every byte of the source (read now, to the end) is the one delivered."""
        if self._records is not None:
            close = getattr(self._records, "close", None)
            if close is not None:
                close()  # the parser is done: what it left unread is read (and hashed) below
        if self._tap is not None:
            now = self._tap.rest()
            if now != self._file_id:
                raise self._changed(now)
        if self._rehash is not None:
            self._rehash.seek(0)
            now = _Tap(self._rehash, self._size).rest()
            if now != self._file_id:
                raise self._changed(now)

    def close(self) -> None:
        if self._records is not None:
            close = getattr(self._records, "close", None)
            if close is not None:
                close()
        for handle in self._handles:
            with contextlib.suppress(Exception):
                handle.close()
        self._handles.clear()
        if self._staged and self._stage_path is not None:
            self._stage_path.unlink(missing_ok=True)


def read_chunk(fd: int, offset: int, length: int) -> tuple[bytes, bytes]:
    """A chunk's bytes and their SHA-256 (blocking: one thread hop does both)."""
    body = os.pread(fd, length, offset)
    return body, hashlib.sha256(body).digest()


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
