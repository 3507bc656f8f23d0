"""The identity of a source file: ``sha256:<hex>`` of its bytes, with size and mtime."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import FileChangedError
from ..locations.local import open_source, stat_identity
from ..names import readable

__all__ = ["FileIdentity", "identify", "stat_identity"]

_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class FileIdentity:
    file_id: str
    size: int
    mtime_ns: int


def identify(path: Path) -> FileIdentity:
    """Hash the whole file (blocking; call from a thread). Detects a file changing meanwhile.
    Only a regular file is opened (NotRegularFile otherwise)."""
    before = stat_identity(path)
    h = hashlib.sha256()
    buf = bytearray(_BLOCK)
    view = memoryview(buf)
    with open_source(path) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    after = stat_identity(path)
    if before != after:
        raise FileChangedError(
            f"{readable(str(path))}: the file changed while it was being hashed; is it still being written?"
        )
    return FileIdentity("sha256:" + h.hexdigest(), after[0], after[1])
