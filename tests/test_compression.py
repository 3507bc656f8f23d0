"""Compressed sources: every codec under every streamed format, bombs and damage refused, the file_id of the bytes on disk."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from pimingestd.errors import ParseError, UnsupportedFormat
from pimingestd.protocol import canonical
from pimingestd.sources import SourceSpec, compression, detect_format, read_records, read_stream

CODECS: dict[str, Callable[[bytes], bytes]] = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zst": lambda b: zstandard.ZstdCompressor().compress(b),
}
RECORDS = [{"sku": f"S{i}", "price": f"{i}.50", "name": f"Produkt {i} ü"} for i in range(3000)]
PLAIN = {
    ".json": json.dumps(RECORDS).encode(),
    ".jsonl": "".join(json.dumps(r) + "\n" for r in RECORDS).encode(),
    ".csv": ("sku,price,name\n" + "".join(f"{r['sku']},{r['price']},{r['name']}\n" for r in RECORDS)).encode(),
}


def _read(path: Path, **options: Any) -> list[bytes]:
    return [canonical.encode(r) for r in read_records(path, SourceSpec(detect_format(path), options))]


@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize("suffix", list(PLAIN))
def test_a_compressed_file_delivers_what_the_plain_one_does(tmp_path: Path, suffix: str, codec: str) -> None:
    plain = tmp_path / f"p{suffix}"
    plain.write_bytes(PLAIN[suffix])
    packed = tmp_path / f"p{suffix}{codec}"
    packed.write_bytes(CODECS[codec](PLAIN[suffix]))
    assert compression.codec_of(packed) is not None and detect_format(packed) == detect_format(plain)
    assert _read(packed) == _read(plain) and len(_read(plain)) == 3000


def test_zstd_frames_one_after_another_are_one_file(tmp_path: Path) -> None:
    """Two frames (zstdcat reads such a file as the two concatenated): every record of both."""
    half = len(PLAIN[".jsonl"]) // 2
    cut = PLAIN[".jsonl"].rindex(b"\n", 0, half) + 1
    two = CODECS[".zst"](PLAIN[".jsonl"][:cut]) + CODECS[".zst"](PLAIN[".jsonl"][cut:])
    path = tmp_path / "two.jsonl.zst"
    path.write_bytes(two)
    plain = tmp_path / "two.jsonl"
    plain.write_bytes(PLAIN[".jsonl"])
    assert _read(path) == _read(plain)


def test_the_json_fast_path_can_start_over_in_a_compressed_file(tmp_path: Path) -> None:
    """It looks at the first window, declines, and hands the bytes it read to the exact reader."""
    path = tmp_path / "o.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"p": RECORDS[:5]}).encode()))
    assert len(_read(path, json_path="p.item")) == 5
    with pytest.raises(ParseError, match="the top-level value is not an array"):
        _read(path)


def test_a_decompression_bomb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.jsonl.gz"
    with gzip.open(path, "wb", compresslevel=9) as out:
        block = b"\n" * (1 << 20)
        for _ in range(80):  # 80 MiB of blank lines, about 80 kB on disk
            out.write(block)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(ParseError, match=r"decompresses more than 100 times its compressed size.*decompression bomb"):
        _read(path)


@pytest.mark.parametrize("codec", list(CODECS))
def test_a_truncated_stream_names_its_codec(tmp_path: Path, codec: str) -> None:
    data = CODECS[codec](PLAIN[".jsonl"])
    path = tmp_path / f"t.jsonl{codec}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ParseError, match=rf"t\.jsonl\{codec}: not a valid {compression.CODECS[codec]} stream"):
        _read(path)


def test_names_and_excel(tmp_path: Path) -> None:
    assert detect_format(Path("export.csv.bz2")) == "csv" and detect_format(Path("feed.JSONL.ZST")) == "jsonl"
    with pytest.raises(UnsupportedFormat, match=r"cannot tell the format from 'no extension'"):
        detect_format(Path("archive.gz"))
    path = tmp_path / "book.xlsx.gz"
    path.write_bytes(gzip.compress(b"PK"))
    with pytest.raises(UnsupportedFormat, match="an Excel workbook is a zip already"):
        list(read_records(path, SourceSpec("excel")))


async def test_through_the_daemon_the_file_id_is_of_the_compressed_bytes(
    make_daemon: Any, receiver: Any, data_dir: Path
) -> None:
    path = data_dir / "feed.jsonl.zst"
    path.write_bytes(CODECS[".zst"](PLAIN[".jsonl"]))
    d = await make_daemon()
    code, body = await d.ingest(path=str(path))
    assert code == 202, body
    assert body["file_id"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    st = await d.wait(body["ingestion_id"], timeout=60)
    assert st["status"] == "completed" and st["records_acked"] == 3000, st
    applied = [a["record"].encode() for a in await receiver.records(body["ingestion_id"])]
    plain = data_dir / "feed.jsonl"
    plain.write_bytes(PLAIN[".jsonl"])
    assert applied == _read(plain)


# ---- streams one after another: a damaged later one, bytes after the last one ----------------------

LINES = [f'{{"sku": "S{i}", "n": {i}}}\n'.encode() for i in range(100)]
CHECKED: dict[str, Callable[[bytes], bytes]] = {  # zstd with its content checksum, as the zstd tool writes it
    **CODECS,
    ".zst": lambda b: zstandard.ZstdCompressor(write_checksum=True).compress(b),
}


def _two_streams(codec: str) -> tuple[bytes, bytes]:
    return CHECKED[codec](b"".join(LINES[:50])), CHECKED[codec](b"".join(LINES[50:]))


@pytest.mark.parametrize("codec", list(CODECS))
def test_a_damaged_later_stream_is_refused_never_dropped(tmp_path: Path, codec: str) -> None:
    """Two streams, the second with one flipped bit, wherever it is: refused, or (a bit no check covers, such as
    gzip's mtime) read whole. Never fewer records: xz and bz2 through the standard library ended quietly at a
    later stream that failed to decode, taking it for trailing garbage."""
    first, second = _two_streams(codec)
    path = tmp_path / f"two.jsonl{codec}"
    whole = [canonical.encode(json.loads(line)) for line in LINES]
    refused = 0
    for at in range(len(second)):
        for bit in (0, 5):
            damaged = bytearray(second)
            damaged[at] ^= 1 << bit
            path.write_bytes(first + bytes(damaged))
            try:
                records = _read(path)
            except ParseError as exc:
                assert f"two.jsonl{codec}: not a valid {compression.CODECS[codec]} stream" in str(exc)
                refused += 1
            else:
                assert records == whole, (at, bit, len(records))
    assert refused > len(second)  # most flips are caught (a test that caught none would prove nothing)


@pytest.mark.parametrize("codec", list(CODECS))
def test_bytes_after_the_last_stream_are_refused(tmp_path: Path, codec: str) -> None:
    first, second = _two_streams(codec)
    path = tmp_path / f"t.jsonl{codec}"
    path.write_bytes(first + second)
    assert len(list(read_records(path, SourceSpec("jsonl")))) == 100
    for tail in (b"garbage!", b"\x00\x00\x00\x00garbage!", second[:-1]):
        path.write_bytes(first + second + tail)
        with pytest.raises(ParseError, match=rf"t\.jsonl\{codec}: not a valid {compression.CODECS[codec]} stream"):
            list(read_records(path, SourceSpec("jsonl")))


@pytest.mark.parametrize("codec", list(CODECS))
def test_a_file_cut_anywhere_but_between_streams_is_refused(tmp_path: Path, codec: str) -> None:
    """Cut at every byte of two streams: refused, unless the cut falls where a stream ends (nothing can tell that
    file from a shorter one). For zstd this walks every state of the frame walker (frame header, block headers,
    block contents, the checksum)."""
    first, second = _two_streams(codec)
    whole = first + second
    path = tmp_path / f"c.jsonl{codec}"
    for cut in range(1, len(whole)):
        path.write_bytes(whole[:cut])
        if cut == len(first):
            assert len(_read(path)) == 50
            continue
        with pytest.raises(ParseError, match=rf"not a valid {compression.CODECS[codec]} stream"):
            _read(path)


def test_zstd_skippable_frames_are_passed_over(tmp_path: Path) -> None:
    """pzstd and seekable zstd write skippable frames (magic 0x184D2A5?, a size, that many bytes) between frames."""
    first, second = _two_streams(".zst")
    skippable = (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"\x28\xb5\x2f\xfd\x00"
    path = tmp_path / "s.jsonl.zst"
    path.write_bytes(skippable + first + skippable + second + skippable)
    assert len(_read(path)) == 100
    path.write_bytes(first + skippable[:-1])
    with pytest.raises(ParseError, match=r"the zstd frame from compressed byte \d+ ends early"):
        _read(path)


@pytest.mark.parametrize(("codec", "padding", "accepted"), [(".xz", 4, True), (".xz", 8, True), (".xz", 3, False),
    (".gz", 3, True), (".bz2", 3, True), (".zst", 4, False)])  # fmt: skip
def test_padding_after_a_stream_is_what_the_format_allows(
    tmp_path: Path, codec: str, padding: int, accepted: bool
) -> None:
    """NUL bytes after a stream: xz's stream padding (a multiple of four bytes), and the NUL blocking gzip and bzip2
    tools pass over; zstd has no padding."""
    first, second = _two_streams(codec)
    path = tmp_path / f"p.jsonl{codec}"
    path.write_bytes(first + b"\x00" * padding + second + b"\x00" * padding)
    if accepted:
        assert len(list(read_records(path, SourceSpec("jsonl")))) == 100
    else:
        with pytest.raises(ParseError, match=rf"not a valid {compression.CODECS[codec]} stream"):
            list(read_records(path, SourceSpec("jsonl")))


# ---- bombs: memory bounded while decompressing, whatever the codec ------------------------------------

_BOMB_CHILD = """
import resource, sys
from pathlib import Path
from pimingestd.errors import ParseError
from pimingestd.sources import compression

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10  # MiB

path = Path(sys.argv[1])
before = peak()
with path.open("rb") as fh, compression.decompressed(fh, compression.codec_of(path), path.name) as stream:
    assert stream.read(1 << 16) == b"\\n" * (1 << 16)
    first = peak()
    if first - before >= 32:
        sys.exit(f"the first 64 KiB of output took {first - before} MiB")
    try:
        while stream.read(1 << 16):
            pass
    except ParseError as exc:
        print(exc, file=sys.stderr)
    else:
        print("not refused", file=sys.stderr)
print(first - before, peak() - before)
"""


def _bomb(path: Path, codec: str, mib: int) -> None:
    """``mib`` MiB of newlines, compressed a MiB at a time."""
    makers: dict[str, Callable[[], Any]] = {
        ".gz": lambda: zlib.compressobj(9, zlib.DEFLATED, 31),  # wbits 31: the gzip format
        ".bz2": bz2.BZ2Compressor,
        ".xz": lambda: lzma.LZMACompressor(preset=1),
        ".zst": lambda: zstandard.ZstdCompressor(level=19).compressobj(),
    }
    packer = makers[codec]()
    block = b"\n" * (1 << 20)
    with path.open("wb") as out:
        for _ in range(mib):
            out.write(packer.compress(block))
        out.write(packer.flush())


@pytest.mark.parametrize("codec", list(CODECS))
def test_a_decompression_bomb_is_refused_in_bounded_memory(tmp_path: Path, codec: str) -> None:
    """128 MiB of newlines in a few KiB: the first read decompresses at most a bounded amount, and the whole read
    is refused by the ratio check, the process growing by tens of MiB, not by the bomb. (zstd decompressed each
    64 KiB of input whole, all 128 MiB at once here, and copied what was left on every read.) Measured as the
    peak RSS of a child process reading it."""
    path = tmp_path / f"bomb.jsonl{codec}"
    _bomb(path, codec, 128)
    assert path.stat().st_size < 1 << 20
    done = subprocess.run(
        [sys.executable, "-c", _BOMB_CHILD, str(path)], capture_output=True, text=True, timeout=110, check=False
    )
    assert done.returncode == 0 and "refused as a decompression bomb" in done.stderr, done.stderr
    first, whole = map(int, done.stdout.split())
    assert first < 32 and whole < 32, f"{first} MiB after the first read, {whole} MiB until the bomb was refused"


@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_an_empty_file_is_refused_an_empty_stream_is_read(tmp_path: Path, codec: str, suffix: str) -> None:
    """A 0-byte .gz or .zst (a transfer cut before its first byte) was read as a file of no records, where
    `gzip -t` and `zstd -t` say "unexpected end of file" and the xz and bzip2 paths refused it: with deletions
    on, a full file of nothing asks for every key of the scope to be deleted. A stream that holds nothing (the
    codec's own encoding of zero bytes) is a file of no records, as before; so is a file of zstd skippable
    frames only, which `zstd -t` passes."""
    path = tmp_path / f"e{suffix}{codec}"
    path.write_bytes(b"")
    with pytest.raises(ParseError, match=rf"e\{suffix}\{codec}: .*no {compression.CODECS[codec]} stream"):
        _read(path)
    with pytest.raises(ParseError, match=rf"no {compression.CODECS[codec]} stream"):
        list(read_stream(io.BytesIO(b""), f"e{suffix}{codec}", SourceSpec(detect_format(path))))
    if suffix == ".json":
        return  # no text is no JSON document: the JSON reader's error, as for a plain empty file
    path.write_bytes(CODECS[codec](b""))
    assert _read(path) == []
    if codec == ".zst":
        path.write_bytes((0x184D2A50).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc")
        assert _read(path) == []


def test_an_xz_stream_whose_dictionary_outgrows_the_memory_bound_is_refused(tmp_path: Path) -> None:
    """liblzma allocates the dictionary an xz block declares, up to 1.5 GiB, and fills it as it decompresses, so
    the memory of a file of incompressible data (which the ratio check passes) grows with its output up to that
    size, where zstd refuses a window over 128 MiB by default. The same bound holds for xz now; every preset (-9:
    64 MiB) stays under it."""
    data = b"".join(b'{"sku":"S%d"}\n' % i for i in range(10))
    path = tmp_path / "d.jsonl.xz"
    for dict_size, accepted in ((64 << 20, True), (128 << 20, False), (1536 << 20, False)):
        filters = [{"id": lzma.FILTER_LZMA2, "dict_size": dict_size, "mf": lzma.MF_HC3, "mode": lzma.MODE_FAST}]
        path.write_bytes(lzma.compress(data, filters=filters) * 2)  # the second stream's header is checked too
        if accepted:
            assert len(_read(path)) == 20
            continue
        with pytest.raises(ParseError, match=r"d\.jsonl\.xz: .*compressed byte 0 needs more than 128 MiB of memory"):
            _read(path)


def test_a_zstd_window_over_the_memory_bound_is_refused_saying_why(tmp_path: Path) -> None:
    """A frame written with --long=30 (a 1 GiB window, no content size): libzstd refuses it past its default
    128 MiB window, as `zstd -t` does without --long; the error says so and what to do, where it only quoted
    "Frame requires too much memory for decoding". A 128 MiB window (--long=27) is read."""
    data = b"".join(b'{"sku":"S%d"}\n' % i for i in range(10))
    path = tmp_path / "w.jsonl.zst"
    for window_log, accepted in ((27, True), (30, False)):
        params = zstandard.ZstdCompressionParameters(window_log=window_log)
        out = io.BytesIO()
        with zstandard.ZstdCompressor(compression_params=params).stream_writer(out, closefd=False) as writer:
            writer.write(data)  # streamed: the frame names no content size, so its window is what it declares
        path.write_bytes(out.getvalue())
        if accepted:
            assert len(_read(path)) == 10
            continue
        message = r"w\.jsonl\.zst: not a valid zstd stream .*: a frame declares a window over 128 MiB .*--long"
        with pytest.raises(ParseError, match=message):
            _read(path)
