"""Compressed sources: every codec under every streamed format, bombs and damage refused, the file_id of the bytes on disk."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from pimingestd.errors import ParseError, UnsupportedFormat
from pimingestd.protocol import canonical
from pimingestd.sources import SourceSpec, compression, detect_format, read_records

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
    """It looks at the first window, declines, and seeks back to the start for the exact reader."""
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
