"""HTTP upload: streamed to disk in constant memory, safe names, size cap, aborted uploads leave nothing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from yarl import URL

from .conftest import MakeCluster, MakeDaemon
from .helpers import Receiver, product, report
from .test_inbox import files_under, inbox_config, wait_for


async def put(url: str, body: Any, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.put(url, data=body, **kw) as r:
        return r.status, await r.json(content_type=None)


async def test_upload_is_ingested(make_daemon: MakeDaemon, receiver: Receiver, tmp_path: Path) -> None:
    """PUT /api/files/{name} answers 202 like /api/ingest; subfolders pick profiles; the file ends in done."""
    cfg = inbox_config(tmp_path, watch="off")
    d = await make_daemon(inbox=cfg)
    body = json.dumps([product(i) for i in range(23)]).encode()
    code, answer = await put(d.url + "/api/files/products/p.json?chunk_records=5", body)
    assert code == 202 and set(answer) == {"ingestion_id", "file_id", "status"}
    st = await d.wait(answer["ingestion_id"])
    assert st["status"] == "completed" and st["source"] == "upload" and st["total_chunks"] == 5
    await wait_for(lambda: _done_has(Path(cfg["done_dir"]), "products/p.json"), what="upload in done")
    assert [json.loads(a["record"]) for a in await receiver.records(answer["ingestion_id"])] == [
        product(i) for i in range(23)
    ]
    code, again = await put(d.url + "/api/files/other.json", body)
    assert code == 200 and again["ingestion_id"] == answer["ingestion_id"] and again["status"] == "completed"


async def _done_has(folder: Path, suffix: str) -> bool:
    return any(f.endswith("/" + suffix) for f in files_under(folder))


@pytest.mark.parametrize(
    ("raw_path", "status"),
    [
        ("/api/files/a%2F..%2Fx.json", 400),
        ("/api/files/..%2Fx.json", 400),
        ("/api/files/x%00.json", 400),
        ("/api/files/%2Fetc%2Fpasswd.json", 400),
        ("/api/files/.hidden.json", 400),
        ("/api/files/notes.parquet", 415),  # a format pimingestd does not read
    ],
)
async def test_bad_upload_names(make_daemon: MakeDaemon, tmp_path: Path, raw_path: str, status: int) -> None:
    """Names with '..', NUL bytes, absolute or hidden paths are refused before any byte is stored."""
    cfg = inbox_config(tmp_path, watch="off")
    d = await make_daemon(inbox=cfg)
    async with aiohttp.ClientSession() as s, s.put(URL(d.url + raw_path, encoded=True), data=b"[]") as r:
        assert r.status == status, await r.text()
        assert (await r.json())["error"]
    assert files_under(Path(cfg["processing_dir"])) == [] and files_under(Path(cfg["failed_dir"])) == []


async def test_upload_size_cap(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    """Over max_upload_bytes: 413, whether announced by Content-Length or streamed; nothing is left behind."""
    cfg = inbox_config(tmp_path, watch="off")
    d = await make_daemon(inbox=cfg, http={"max_upload_bytes": 1000})
    code, _ = await put(d.url + "/api/files/big.json", b"[" + b" " * 5000 + b"]")
    assert code == 413

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 500

    code, answer = await put(d.url + "/api/files/big.json", chunked())
    assert code == 413 and answer["error"] == "upload too large"
    assert files_under(Path(cfg["processing_dir"])) == []
    code, body = await d.request("GET", "/api/ingestions")
    assert code == 200 and body["ingestions"] == []


async def test_aborted_upload_leaves_nothing(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    """A client that disconnects mid-body leaves no file and starts nothing."""
    cfg = inbox_config(tmp_path, watch="off")
    d = await make_daemon(inbox=cfg)
    port = d.config.http.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"PUT /api/files/p.json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: 10000000\r\n\r\n" + b"[" + b" " * 1_000_000
    )
    await writer.drain()
    await wait_for(lambda: _has_partial(Path(cfg["processing_dir"])), what="partial upload on disk")
    writer.transport.abort()
    await wait_for(lambda: _nothing(Path(cfg["processing_dir"])), what="partial upload removed")
    del reader
    code, body = await d.request("GET", "/api/ingestions")
    assert code == 200 and body["ingestions"] == []


async def _has_partial(folder: Path) -> bool:
    return any(p.suffix == ".part" for p in (folder / ".uploads").iterdir())


async def _nothing(folder: Path) -> bool:
    return files_under(folder) == []


@pytest.mark.slow
async def test_one_gigabyte_upload_streams_in_bounded_memory(make_cluster: MakeCluster, tmp_path: Path) -> None:
    """The real daemon's RSS stays bounded while a 1 GB body streams in, and the file is then ingested."""
    c = make_cluster(inbox=inbox_config(tmp_path / "x", watch="off"))
    await c.start_receiver()
    await c.start_daemon()
    assert c.daemon is not None
    proc = psutil.Process(c.daemon.pid)
    baseline = proc.memory_info().rss
    size = 1 << 30
    block = b" " * (1 << 20)
    peak = baseline
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent, peak
        yield b"["
        while sent < size - 2:
            n = min(len(block), size - 2 - sent)
            sent += n
            yield block[:n]
            if sent % (32 << 20) == 0:
                peak = max(peak, proc.memory_info().rss)
        yield b"]"

    started = time.monotonic()
    code, answer = await put(c.durl + "/api/files/huge.json", body(), headers={"Content-Length": str(size)})
    took = time.monotonic() - started
    peak = max(peak, proc.memory_info().rss)
    assert code == 202, answer
    report(f"1 GiB upload: {took:.1f}s, daemon RSS baseline {baseline >> 20} MiB, peak {peak >> 20} MiB")
    assert peak - baseline < 64 << 20, f"RSS grew {(peak - baseline) >> 20} MiB"
    st = await c.settle(answer["ingestion_id"], timeout=120)
    assert st["status"] == "completed" and st["total_records"] == 0


async def test_chunk_caps_are_checked_before_the_body_is_read(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    """chunk_records above 100,000 or chunk_bytes above 64 MiB: 400 at once, nothing kept anywhere."""
    cfg = inbox_config(tmp_path, watch="off")
    d = await make_daemon(inbox=cfg)
    for query in ("chunk_records=100001", "chunk_bytes=4611686018427387904", "json_path=a..item", "unknown_cells=zero"):
        code, body = await put(f"{d.url}/api/files/p.json?{query}", json.dumps([product(1)]).encode())
        assert code == 400, (query, body)
    for field, value in (("chunk_records", 100_001), ("chunk_bytes", 2**62)):
        (Path(d.config.http.allowed_roots[0]) / "p.json").write_text(json.dumps([product(1)]))
        code, body = await d.ingest(path=str(Path(d.config.http.allowed_roots[0]) / "p.json"), **{field: value})
        assert code == 400 and body["error"] == "bad chunking", body
    for folder in ("processing_dir", "failed_dir", "done_dir"):
        assert [f for f in files_under(Path(cfg[folder])) if not f.startswith(".uploads")] == [], folder


async def test_an_upload_finished_during_the_drain_is_503_and_not_kept(
    make_cluster: MakeCluster, tmp_path: Path
) -> None:
    """SIGTERM while an upload streams in: it ends 503 (as documented), and no copy of it is left behind."""
    cfg = inbox_config(tmp_path, watch="off")
    c = make_cluster(inbox=cfg, daemon={"drain_seconds": 8.0})
    await c.start_receiver()
    await c.start_daemon()
    await c.faults([{"action": "drop_ack", "times": 100}])  # keeps one chunk in flight, so the drain waits
    busy = c.data / "busy.json"
    busy.write_text(json.dumps([product(i) for i in range(30)]))
    await c.ingest(busy)
    body = json.dumps([product(i) for i in range(10_000)]).encode()  # about 2 s at this pace

    async def slowly() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]
            await asyncio.sleep(0.01)

    upload = asyncio.create_task(put(c.durl + "/api/files/late.json", slowly()))
    await asyncio.sleep(0.3)
    assert c.daemon is not None
    c.daemon.terminate()
    code, answer = await upload
    assert code == 503 and answer["error"] == "draining", answer
    assert await c.exit_code(20) == 0
    for folder in ("processing_dir", "failed_dir", "done_dir"):
        assert not any(f.endswith("late.json") for f in files_under(Path(cfg[folder]))), folder


async def test_an_upload_sent_as_a_form_is_refused_and_says_what_to_send(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    """A body sent with a form's content type (curl --data-binary says urlencoded unless told) is 415, naming
    the type to send, and nothing is kept or started; application/octet-stream is taken."""
    cfg = inbox_config(tmp_path, watch="off")
    d = await make_daemon(inbox=cfg)
    body = json.dumps([product(1)]).encode()
    for ctype in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"):
        code, answer = await put(d.url + "/api/files/p.json", body, headers={"Content-Type": ctype})
        assert code == 415 and "application/octet-stream" in answer["detail"], (ctype, answer)
    assert (
        files_under(Path(cfg["processing_dir"])) == [] and (await d.request("GET", "/api/ingestions"))[1]["total"] == 0
    )
    code, answer = await put(d.url + "/api/files/p.json", body, headers={"Content-Type": "application/octet-stream"})
    assert code == 202, answer
