"""Compressed sources: ``.gz``, ``.zst``, ``.bz2`` or ``.xz`` after a format's suffix, decompressed as a stream.

``products.jsonl.gz`` is JSON Lines, gzip-compressed. The file_id stays the
SHA-256 of the bytes on disk (the compressed ones), and reads of them stop at
the size recorded at submit, as for any source. A decompression bomb is
refused: past ``RATIO_FROM`` decompressed bytes, the output may be at most
``MAX_RATIO`` times the compressed input read so far, and no read decompresses
more than the caller's buffer, so memory stays flat while that is checked.

A file may hold streams one after another (gzip members, xz and bzip2 streams,
zstd frames), and must hold one: an empty file (0 bytes) is refused whatever the
codec, as its tool's test refuses it (a stream of no data is a file of no data).
After each stream, what follows is another stream or the NUL padding its
format allows; anything else (a damaged later stream, trailing garbage) is
refused, never taken for the end of the file. Excel is not read from a
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
# The decoder's memory (its dictionary, the window it keeps) is bounded as zstd bounds it by default (a 128 MiB
# window, ZSTD_WINDOWLOG_LIMIT_DEFAULT): xz declares its dictionary up to 1.5 GiB and liblzma takes it unasked;
# every xz preset (-9: 64 MiB) fits.
DECODER_MEMORY = 128 << 20


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

    return (gzip.BadGzipFile, EOFError, lzma.LZMAError, zlib.error, OSError, zstandard.ZstdError, _Damaged)


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
        elif self._codec in ("bzip2", "xz"):
            self._stream = _Streams(self._raw, self._codec)
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
            if not n and not self._pos and self._codec == "gzip" and self._raw.tell() == 0:
                raise EOFError("the file holds no gzip stream")  # GzipFile reads an empty file as empty data
        except _errors() as exc:
            if self._codec == "zstd" and "too much memory" in str(exc):  # libzstd's limit: a 128 MiB window
                exc = _Damaged(
                    f"a frame declares a window over {DECODER_MEMORY >> 20} MiB (written with --long above 27, or"
                    " damaged), refused so that memory stays bounded: recompress it without --long"
                )
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


class _Damaged(ValueError):
    """What follows a stream is neither another stream nor padding the format allows, or a frame is cut short."""


class _Streams:
    """xz or bzip2 streams one after another, each decoded with at most the caller's buffer of output per call.

    Not LZMAFile or BZ2File: the standard library's reader takes a stream that fails to decode at its start for
    trailing garbage and ends there without a word (CPython 3.11, Lib/_compression.py, DecompressReader.read:
    ``except self._trailing_error: break``), so a damaged later stream, or xz stream padding between two
    streams, lost every record after it. Here, after a stream ends, what follows must be another stream of
    the codec or NUL bytes (xz's stream padding, a multiple of four bytes; the NUL blocking bzip2 tools leave):
    anything else is refused, naming where it starts."""

    def __init__(self, raw: BinaryIO, codec: str) -> None:
        self._raw = raw
        self._codec = codec
        self._new: Any = (
            (lambda: lzma.LZMADecompressor(memlimit=DECODER_MEMORY)) if codec == "xz" else bz2.BZ2Decompressor
        )
        self._error: type[Exception] = lzma.LZMAError if codec == "xz" else OSError
        self._dec: Any = None  # the stream being decoded; None between streams
        self._input = b""  # bytes read and not yet given to a decoder
        self._read = 0  # compressed bytes read
        self._streams = 0
        self._start = 0  # compressed offset where the current stream (or the padding after one) starts
        self._padding = 0  # NUL bytes since the last stream ended

    def _more(self) -> bytes:
        data = self._raw.read(1 << 16)
        self._read += len(data)
        return data

    def readinto(self, buffer: memoryview) -> int:
        size = len(buffer)
        while True:
            dec = self._dec
            if dec is None:  # between streams: another one, padding, or the end of the file
                data = self._input or self._more()
                self._input = b""
                if not data:
                    self._finish()
                    return 0
                rest = data.lstrip(b"\0")
                self._padding += len(data) - len(rest)
                if rest:
                    self._begin(rest)
                continue
            if dec.eof:
                self._input = dec.unused_data
                self._dec = None
                self._start = self._read - len(self._input)
                continue
            data, self._input = self._input, b""
            if not data and dec.needs_input:
                data = self._more()
                if not data:
                    raise EOFError(
                        f"the {self._codec} stream from compressed byte {self._start} ends early: the file is truncated"
                    )
            try:
                out = dec.decompress(data, size)
            except self._error as exc:
                if self._codec == "xz" and "Memory usage limit" in str(exc):
                    raise _Damaged(
                        f"the xz stream from compressed byte {self._start} needs more than {DECODER_MEMORY >> 20} MiB of"
                        " memory to decompress (its dictionary size); recompress it with a preset up to -9"
                    ) from None
                raise _Damaged(
                    f"the {self._codec} stream from compressed byte {self._start} is damaged ({exc})"
                ) from None
            if out:
                n = len(out)
                buffer[:n] = out
                return n

    def _begin(self, data: bytes) -> None:
        at = self._read - len(data)  # compressed offset of data[0]
        if self._streams and self._padding % 4 and self._codec == "xz":
            raise _Damaged(
                f"{self._padding} NUL bytes before compressed byte {at}: xz stream padding is a multiple of four"
            )
        if not self._streams and self._padding:
            raise _Damaged(f"the file starts with {self._padding} NUL bytes: no {self._codec} stream starts there")
        self._streams += 1
        self._padding = 0
        self._start = at
        self._dec = self._new()
        self._input = data

    def _finish(self) -> None:
        if not self._streams:
            raise EOFError(f"the file holds no {self._codec} stream")
        if self._padding % 4 and self._codec == "xz":
            raise _Damaged(f"{self._padding} NUL bytes at the end: xz stream padding is a multiple of four")

    def close(self) -> None:
        pass  # the raw file belongs to the caller


class _ZstdFrames:
    """Walks the frames of a zstd file (RFC 8878, section 3.1) over its compressed bytes, without decoding them,
    to know whether the input ended where a frame ends: zstandard's stream_reader ends quietly on a truncated
    frame. It reads frame headers, block headers (3 bytes: last flag, type, size) and skippable frames, and
    skips block contents and checksums; it refuses what is no frame at all, naming the compressed offset."""

    _MAGIC = 0xFD2FB528
    _SKIPPABLE = 0x184D2A50  # to 0x184D2A5F

    def __init__(self) -> None:
        self._state = "magic"
        self._need = 4  # header bytes the state wants
        self._head = b""
        self._skip = 0  # bytes to pass over before the next header
        self._checksum = False
        self._at = 0  # compressed offset of the next byte fed
        self._frame = 0  # compressed offset of the current frame

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                take = min(self._skip, end - pos)
                self._skip -= take
                pos += take
                continue
            take = min(self._need - len(self._head), end - pos)
            self._head += data[pos : pos + take]
            pos += take
            if len(self._head) == self._need:
                self._header(self._at + pos - self._need)
                self._head = b""
        self._at += end

    def _header(self, at: int) -> None:
        value = int.from_bytes(self._head, "little")
        if self._state == "magic":
            self._frame = at
            if value == self._MAGIC:
                self._state, self._need = "descriptor", 1
            elif value & 0xFFFFFFF0 == self._SKIPPABLE:
                self._state, self._need = "skippable", 4
            else:
                raise _Damaged(f"no zstd frame starts at compressed byte {at}")
        elif self._state == "descriptor":  # the rest of the frame header: window, dictionary id, content size
            single = value >> 5 & 1
            self._checksum = bool(value >> 2 & 1)
            self._skip = (0 if single else 1) + (0, 1, 2, 4)[value & 3] + (single, 2, 4, 8)[value >> 6]
            self._state, self._need = "block", 3
        elif self._state == "block":
            kind, size = value >> 1 & 3, value >> 3
            if kind == 3:
                raise _Damaged(f"the zstd frame from compressed byte {self._frame} has a reserved block type")
            self._skip = 1 if kind == 1 else size  # an RLE block holds one byte
            if value & 1:  # the last block: then the checksum, if any, and the next frame
                self._skip += 4 if self._checksum else 0
                self._state, self._need = "magic", 4
        else:  # a skippable frame's size
            self._skip = value
            self._state, self._need = "magic", 4

    def finish(self) -> None:
        if not self._at:  # zstandard reads an empty file as empty data; `zstd -t` calls it truncated
            raise EOFError("the file holds no zstd stream")
        if self._state != "magic" or self._head or self._skip:
            raise EOFError(f"the zstd frame from compressed byte {self._frame} ends early: the file is truncated")


class _Zstd:
    """zstd frames one after another, through zstandard's stream_reader: it decompresses into the caller's buffer,
    so each read holds at most that much output (its decompressobj returns everything a block of input holds, a
    GiB from 32 KiB of a bomb). The frame walker, fed the same compressed bytes, says whether the file ended at the
    end of a frame; a damaged frame or bytes that are no frame fail the decoder or the walker."""

    def __init__(self, raw: BinaryIO) -> None:
        import zstandard  # a dependency for this one codec: the standard library has none before 3.14

        self._raw = raw
        self._frames = _ZstdFrames()
        source: Any = self  # anything with read(size); the stubs name IO[bytes]
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            source, read_size=1 << 16, read_across_frames=True, closefd=False
        )

    def read(self, size: int) -> bytes:
        """The compressed bytes, for the stream reader; the walker sees each block first."""
        data = self._raw.read(size)
        self._frames.feed(data)
        return data

    def readinto(self, buffer: memoryview) -> int:
        n = int(self._reader.readinto(buffer))
        if not n:
            self._frames.finish()
        return n

    def close(self) -> None:
        self._reader.close()  # type: ignore[no-untyped-call] # closefd=False: the raw file belongs to the caller


def decompressed(fh: BinaryIO, codec: str, name: str) -> io.BufferedReader:
    return io.BufferedReader(Decompressed(fh, codec, name), 1 << 16)
