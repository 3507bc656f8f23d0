"""The reference receiver on its own: verification, order, dedup across its restarts, completion."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pimingestd.protocol import canonical, signing

from .helpers import Receiver, free_port


def chunk_request(
    ing: str, n: int, records: list[dict[str, Any]], first: int, callback: str
) -> tuple[bytes, dict[str, str]]:
    body = canonical.encode(records)
    digest = hashlib.sha256(body).digest()
    headers = {
        "Content-Type": "application/json",
        "Content-Digest": "sha-256=:" + base64.b64encode(digest).decode() + ":",
        "Idempotency-Key": f"{ing}:{n}",
        "Pimingest-Ingestion": ing,
        "Pimingest-File": "sha256:" + "f" * 64,
        "Pimingest-Chunk": str(n),
        "Pimingest-Records": str(len(records)),
        "Pimingest-Offset": str(first),
        "Pimingest-Callback": callback,
    }
    return body, headers


@pytest.mark.parametrize("mode", ["store", "count"])
async def test_dedup_survives_restart_and_order_is_enforced(tmp_path: Path, mode: str) -> None:
    """A chunk re-sent after the receiver restarts is re-ACKed, not re-applied; gaps get 409 expected_chunk.
    The same in count mode (the benchmark's), which keeps no records but the same order and dedup state."""
    acks: list[dict[str, Any]] = []

    async def on_ack(request: web.Request) -> web.Response:
        acks.append(await request.json())
        return web.json_response({"result": "accepted"})

    app = web.Application()
    app.router.add_post("/callbacks/ack", on_ack)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    callback = f"http://127.0.0.1:{port}/callbacks/ack"
    try:
        recv = await Receiver(tmp_path / "r", mode=mode).start()
        async with aiohttp.ClientSession() as s:
            body, headers = chunk_request("ing1", 1, [{"a": 1}, {"a": 2}], 0, callback)
            async with s.post(recv.url + "/ingest/chunks", data=body, headers=headers) as r:
                assert r.status == 202
            await recv.stop()
            recv = await Receiver(tmp_path / "r", mode=mode).start()
            async with s.post(recv.url + "/ingest/chunks", data=body, headers=headers) as r:
                assert r.status == 202
            gap_body, gap_headers = chunk_request("ing1", 3, [{"a": 5}], 4, callback)
            async with s.post(recv.url + "/ingest/chunks", data=gap_body, headers=gap_headers) as r:
                assert r.status == 409 and (await r.json())["expected_chunk"] == 2
            bad_headers = {**headers, "Content-Digest": "sha-256=:AAAA:"}
            async with s.post(recv.url + "/ingest/chunks", data=body, headers=bad_headers) as r:
                assert r.status == 400
        applied = await recv.records("ing1")
        stored = [{"a": 1}, {"a": 2}] if mode == "store" else []  # count mode keeps no records
        assert [json.loads(a["record"]) for a in applied] == stored
        summary = await recv.get("/ingestions/ing1")
        assert (summary["chunks_applied"], summary["records_applied"]) == (1, 2)
        assert (await recv.stats())["duplicates"] == 1
        await recv.stop()
    finally:
        await runner.cleanup()
    assert len(acks) == 2 and all(
        a["status"] == "ack" and a["checksum"] == canonical.checksum(hashlib.sha256(body).digest()) for a in acks
    )


async def test_completion_checks_manifest(tmp_path: Path) -> None:
    """Completion is accepted only with the right counts and manifest."""
    recv = await Receiver(tmp_path / "r", secret="k").start()
    try:
        payload = {
            "ingestion_id": "x",
            "file_id": "sha256:" + "0" * 64,
            "file_name": "f",
            "chunks": 0,
            "records": 0,
            "manifest": canonical.manifest([]),
        }
        async with aiohttp.ClientSession() as s:
            for mutate, expected in (({}, 200), ({"chunks": 1}, 409), ({"manifest": "sha256:" + "1" * 64}, 409)):
                raw = json.dumps({**payload, **mutate}).encode()
                headers = {"Idempotency-Key": "x:complete", signing.HEADER: signing.sign("k", raw, key="x:complete")}
                async with s.post(recv.url + "/ingest/complete", data=raw, headers=headers) as r:
                    assert r.status == expected, await r.text()
            async with s.post(
                recv.url + "/ingest/complete", data=b"{}", headers={"Idempotency-Key": "x:complete"}
            ) as r:
                assert r.status == 401
    finally:
        await recv.stop()
