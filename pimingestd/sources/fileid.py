"""The identity of a source file: ``sha256:<hex>`` of its bytes, with size and mtime."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import FileChangedError

_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class FileIdentity:
    file_id: str
    size: int
    mtime_ns: int


def stat_identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def identify(path: Path) -> FileIdentity:
    """Hash the whole file (blocking; call from a thread). Detects a file changing meanwhile."""
    before = stat_identity(path)
    h = hashlib.sha256()
    buf = bytearray(_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    after = stat_identity(path)
    if before != after:
        raise FileChangedError(f"{path}: the file changed while it was being hashed; is it still being written?")
    return FileIdentity("sha256:" + h.hexdigest(), after[0], after[1])
