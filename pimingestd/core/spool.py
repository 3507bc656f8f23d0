"""The spool: one file per ingestion holding its chunks' canonical bytes back to back.

The spool pass (blocking; run it in a thread) streams the source once, cuts the
chunks, writes their bytes, fsyncs, and returns where each chunk lies. Delivery
then reads chunk bytes from here, so a re-send is byte-identical by
construction and resume seeks straight to the next chunk.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from ..config import ChunkPolicy
from ..errors import FileChangedError
from ..model import SpooledChunk
from ..names import readable
from ..sources import SourceSpec, read_records
from ..sources.fileid import stat_identity
from .chunking import cut


def spool_file(spool_dir: Path, ingestion_id: str) -> Path:
    return spool_dir / f"{ingestion_id}.spool"


def write_spool(
    source: Path,
    spec: SourceSpec,
    policy: ChunkPolicy,
    target: Path,
    identity: tuple[int, int],
    stop: threading.Event,
    page: int = 1000,
) -> Iterator[list[SpooledChunk]]:
    """Spool every chunk of ``source``, yielding where they lie a page at a time (so memory stays
    flat in the number of chunks). The last page comes only after the spool is fsynced and the
    source was found unchanged; raise on bad input or a changed file. Reads stop at the size
    recorded at submit (``identity``); ``stop`` ends the pass early (the spool is then incomplete)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    batch: list[SpooledChunk] = []
    offset = 0
    with open(target, "wb") as out:
        for chunk in cut(read_records(source, spec, size=identity[0]), policy):
            if stop.is_set():
                return
            out.write(chunk.body)
            batch.append(
                SpooledChunk(chunk.n, chunk.first_record, chunk.records, chunk.checksum, offset, len(chunk.body))
            )
            offset += len(chunk.body)
            if len(batch) > page:  # one held back: the last page waits for the fsync and the check below
                yield batch[:-1]
                batch = batch[-1:]
        out.flush()
        os.fsync(out.fileno())
    try:
        now = stat_identity(source)
    except FileNotFoundError:
        now = (-1, -1)
    if now != identity:
        raise FileChangedError(
            f"{readable(source.name)}: the file changed while it was being read; drop it again once it is complete"
        )
    if batch:
        yield batch


def read_chunk(fd: int, offset: int, length: int) -> tuple[bytes, bytes]:
    """A chunk's bytes and their SHA-256 (blocking: one thread hop does both)."""
    body = os.pread(fd, length, offset)
    return body, hashlib.sha256(body).digest()


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
