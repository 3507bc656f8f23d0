"""Hostile callers: floods, oversized and malformed bodies, forged ACKs. 4xx JSON answers, no state change,
no memory growth, and nothing a caller sends makes the daemon skip, repeat or falsely complete a chunk."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import aiohttp
import psutil

from pimingestd.protocol import canonical

from .conftest import MakeCluster, MakeDaemon
from .helpers import Receiver, committed_state, daemon_process, product, write_json
from .test_inbox import inbox_config


async def test_ack_flood_for_unknown_chunks(make_cluster: MakeCluster) -> None:
    """Thousands of ACKs for unknown ingestions or chunks: all 404, and the real daemon's memory does not grow."""
    c = make_cluster()
    await c.start_daemon()
    assert c.daemon is not None
    proc = psutil.Process(c.daemon.pid)
    codes: dict[int, int] = {}
    async with aiohttp.ClientSession() as s:

        async def burst(start: int) -> None:
            for i in range(start, start + 500):
                body = {
                    "ingestion_id": f"forged-{i}",
                    "chunk": i % 50 + 1,
                    "checksum": "sha256:" + "a" * 64,
                    "status": "ack",
                }
                async with s.post(c.durl + "/callbacks/ack", json=body) as r:
                    codes[r.status] = codes.get(r.status, 0) + 1

        await asyncio.gather(*(burst(k * 500) for k in range(4)))  # warm-up: allocator settles
        before = proc.memory_info().rss
        await asyncio.gather(*(burst(k * 500) for k in range(4, 12)))
        after = proc.memory_info().rss
    assert codes == {404: 6000}
    assert after - before < 8 << 20, f"RSS grew {(after - before) >> 10} KiB over 4000 forged ACKs"


async def test_oversized_and_malformed_bodies(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    """Every route that takes a body answers oversized (413) and malformed (400) bodies with a JSON error."""
    d = await make_daemon(inbox=inbox_config(tmp_path, watch="off"))
    big = b"{" + b'"a":1,' * 400_000 + b'"b":2}'  # 2.4 MB, over max_body_bytes (1 MiB)
    for path in ("/api/ingest", "/callbacks/ack"):
        for body, expected in (
            (big, 413),
            (b"{", 400),
            (b"\xff\xfe", 400),
            (b"[]", 400),
            (b"null", 400),
            (b'"x"', 400),
        ):
            code, answer = await d.request(
                "POST", path, data=io.BytesIO(body), headers={"Content-Type": "application/json"}
            )
            assert code == expected, (path, body[:10], code, answer)
            assert isinstance(answer, dict) and answer["error"], answer
    for path in ("/api/ingestions/x/resume", "/api/ingestions/x/cancel"):
        code, answer = await d.request("POST", path, data=io.BytesIO(big))
        assert code in (404, 413) and answer["error"]
    code, answer = await d.request("DELETE", "/api/ingest")
    assert code == 405 and answer["error"]


async def test_forged_acks_change_nothing(
    make_daemon: MakeDaemon, receiver: Receiver, tmp_path: Path, data_dir: Path
) -> None:
    """ACKs for a chunk not yet sent, with a wrong checksum, or rejects after the fact, cannot skip or mark chunks."""
    await receiver.faults([{"action": "drop_ack", "chunk": 1, "times": 1}])
    records = [product(i) for i in range(30)]
    src = write_json(data_dir / "p.json", records)
    d = await make_daemon(delivery={"ack_timeout": 1.5, "backoff": 0.05})
    _, body = await d.ingest(path=str(src))
    ing = body["ingestion_id"]
    db = tmp_path / "daemon" / "state" / "ingestion_state.db"
    while committed_state(db, ing).get(1) != "sent":
        await asyncio.sleep(0.01)
    chunk2 = canonical.checksum(canonical.sha256(canonical.encode(records[10:20])))
    assert (await d.ack({"ingestion_id": ing, "chunk": 2, "checksum": chunk2, "status": "ack"}))[0] == 404
    assert (await d.ack({"ingestion_id": ing, "chunk": 1, "checksum": chunk2, "status": "ack"}))[0] == 409
    assert committed_state(db, ing) == {1: "sent", 2: "spooled", 3: "spooled"}
    st = await d.wait(ing)
    assert st["status"] == "completed"
    assert [json.loads(a["record"]) for a in await receiver.records(ing)] == records
    row = await d.store.chunk(ing, 3)
    code, answer = await d.ack(
        {"ingestion_id": ing, "chunk": 3, "checksum": row.checksum, "status": "reject", "reason": "late"}
    )
    assert (code, answer) == (200, {"result": "duplicate"})
    assert (await d.status(ing))["status"] == "completed"


async def test_corrupt_state_database_refused_by_process(make_cluster: MakeCluster) -> None:
    """A corrupt or truncated state database stops the real daemon at start (exit 74), never recreated."""
    c = make_cluster()
    await c.start_daemon()
    assert c.daemon is not None
    c.daemon.terminate()
    assert await c.exit_code(10) == 0
    original = c.state_db.read_bytes()
    for damage in (lambda b: b"garbage!" * 2 + b[16:], lambda b: b[: len(b) // 3]):
        c.state_db.write_bytes(damage(original))
        proc = await daemon_process(c.cfg)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 74, err
        assert b"state database" in err and str(c.state_db).encode() in err
        assert c.state_db.read_bytes() == damage(original), "the damaged database was left as it was"


MALFORMED_SIGNATURES = [
    "t=\u00b2,v1=" + "0" * 64,  # a superscript two: str.isdigit() says yes, int() says no
    "t=" + "9" * 5000 + ",v1=" + "0" * 64,  # more digits than int() converts
    "t=1700000000,v1=" + "\u00fc" * 64,  # non-ASCII where hex belongs
    "t=1700000000,v1=" + "g" * 64,
    "t=-5,v1=" + "0" * 64,
    "t=\u0661\u0662,v1=" + "0" * 64,  # Arabic-Indic digits
    "v1=" + "0" * 64,
    "x" * 5_000,  # under aiohttp's own 8 KiB header limit, over ours
    ",,,=,=",
]


async def test_malformed_signature_headers_get_401_and_one_log_line(make_cluster: MakeCluster) -> None:
    """Every malformed Pimingest-Signature on the unauthenticated callback is a 401, never a 500, and counted;
    the log says so in one line each, throttled when they repeat (issue 18), so a burst shows at least one."""
    c = make_cluster(pimcore={"secret": "s3cret"})
    await c.start_daemon()
    body = json.dumps({"ingestion_id": "x", "chunk": 1, "checksum": "sha256:" + "0" * 64, "status": "ack"}).encode()
    for header in MALFORMED_SIGNATURES:
        async with (
            aiohttp.ClientSession() as s,
            s.post(c.durl + "/callbacks/ack", data=body, headers={"Pimingest-Signature": header}) as r,
        ):
            assert r.status == 401, (header[:40], r.status, await r.text())
    log = c.log.read_text()
    assert 1 <= log.count('"ack callback refused"') <= len(MALFORMED_SIGNATURES)
    assert "Traceback" not in log and '"level": "error"' not in log
    _, metrics = await c.call("GET", c.durl + "/metrics")
    assert f"pimingestd_callbacks_refused_total {float(len(MALFORMED_SIGNATURES))}" in metrics
