"""Compressed sources: ``.gz``, ``.zst``, ``.bz2`` or ``.xz`` after a format's suffix, decompressed as a stream.

``products.jsonl.gz`` is JSON Lines, gzip-compressed. The file_id stays the
SHA-256 of the bytes on disk (the compressed ones), and reads of them stop at
the size recorded at submit, as for any source. A decompression bomb is
refused: past ``RATIO_FROM`` decompressed bytes, the output may be at most
``MAX_RATIO`` times the compressed input read so far. Excel is not read from a
compressed file: an .xlsx is a zip already.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import zlib
from pathlib import PurePath
from typing import Any, BinaryIO

from ..errors import ParseError

CODECS = {".gz": "gzip", ".zst": "zstd", ".bz2": "bzip2", ".xz": "xz"}
MAX_RATIO = 100
RATIO_FROM = 64 << 20


def codec_of(path: PurePath) -> str | None:
    """The compression named by the file's last suffix, or None."""
    return CODECS.get(path.suffix.lower())


def format_suffix(path: PurePath) -> str:
    """The suffix that names the format: the last one, or the one before a compression suffix."""
    if codec_of(path) is not None:
        return PurePath(path.stem).suffix
    return path.suffix


def _errors() -> tuple[type[BaseException], ...]:
    import zstandard

    return (gzip.BadGzipFile, EOFError, lzma.LZMAError, zlib.error, OSError, zstandard.ZstdError)


class Decompressed(io.RawIOBase):
    """The decompressed bytes of a compressed file, read forward; ``seek(0)`` starts over when the file
    itself is seekable."""

    def __init__(self, raw: BinaryIO, codec: str, name: str) -> None:
        super().__init__()
        self._raw = raw
        self._codec = codec
        self._name = name
        self._stream: Any = None
        self._pos = 0
        self._open()

    def _open(self) -> None:
        if self._raw.seekable():  # a remote stream is read once, from its start
            self._raw.seek(0)
        if self._codec == "gzip":
            self._stream = gzip.GzipFile(fileobj=self._raw, mode="rb")
        elif self._codec == "bzip2":
            self._stream = bz2.BZ2File(self._raw, mode="rb")
        elif self._codec == "xz":
            self._stream = lzma.LZMAFile(self._raw, mode="rb")  # noqa: SIM115 - closed by close()
        else:
            self._stream = _Zstd(self._raw)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return bool(self._raw.seekable())

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            n = self._stream.readinto(buffer)
        except _errors() as exc:
            raise ParseError(
                f"{self._name}: not a valid {self._codec} stream after {self._pos} decompressed bytes: {exc}"
            ) from None
        self._pos += n
        if self._pos > RATIO_FROM and self._pos > MAX_RATIO * max(self._raw.tell(), 1):
            raise ParseError(
                f"{self._name}: decompresses more than {MAX_RATIO} times its compressed size (past"
                f" {RATIO_FROM >> 20} MiB); refused as a decompression bomb"
            )
        return int(n)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if (offset, whence) in ((0, os.SEEK_CUR), (self._pos, os.SEEK_SET)):
            return self._pos
        if (offset, whence) != (0, os.SEEK_SET):
            raise io.UnsupportedOperation("a decompressed stream seeks only back to its start")
        self._stream.close()
        self._open()
        return 0

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if self._stream is not None and not self.closed:
            self._stream.close()
        super().close()


class _Zstd:
    """zstd frames one after another. zstandard's stream_reader ends quietly on a truncated frame,
    which would lose the rest of the file; a decompressobj says whether its frame ended."""

    def __init__(self, raw: BinaryIO) -> None:
        import zstandard  # a dependency for this one codec: the standard library has none before 3.14

        self._zstd = zstandard
        self._raw = raw
        self._frame = zstandard.ZstdDecompressor().decompressobj()
        self._fed = False  # the current frame has been given input
        self._out = b""
        self._done = False

    def readinto(self, buffer: memoryview) -> int:
        while not self._out and not self._done:
            data = self._raw.read(1 << 16)
            if not data:
                if self._fed and not self._frame.eof:
                    raise EOFError("the last zstd frame ends early: the file is truncated")
                self._done = True
                break
            self._fed = True
            self._out = self._frame.decompress(data)
            while self._frame.eof and self._frame.unused_data:  # the next frame starts in this block
                rest = self._frame.unused_data
                self._frame = self._zstd.ZstdDecompressor().decompressobj()
                self._out += self._frame.decompress(rest)
            if self._frame.eof:
                self._frame = self._zstd.ZstdDecompressor().decompressobj()
                self._fed = False
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def close(self) -> None:
        pass  # the raw file belongs to the caller


def decompressed(fh: BinaryIO, codec: str, name: str) -> io.BufferedReader:
    return io.BufferedReader(Decompressed(fh, codec, name), 1 << 16)
