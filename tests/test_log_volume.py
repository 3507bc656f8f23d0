"""Log volume and the clock: at info an ingestion writes a bounded number of lines whatever its size, a
failure that repeats is logged but throttled, and a wall-clock jump neither stalls nor fails chunks in flight."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import MakeCluster, MakeDaemon
from .helpers import Receiver, product, report, write_json


def _lines(log: Path, ingestion_id: str) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text().splitlines():
        if ingestion_id in line:
            out.append(json.loads(line))
    return out


async def test_an_ingestion_logs_a_bounded_number_of_lines_at_info(make_cluster: MakeCluster) -> None:
    c = make_cluster(chunking={"records": 100}, logging={"level": "info", "progress_seconds": 1.0})
    c.rules = [{"action": "delay_ack", "seconds": 0.004, "times": 10**6}]
    await c.start_receiver()
    await c.start_daemon()
    src = c.data / "big.jsonl"
    src.write_text("".join(json.dumps(product(i)) + "\n" for i in range(60_000)))
    t0 = time.monotonic()
    ing = await c.ingest(src)
    st = await c.settle(ing, timeout=300)
    took = time.monotonic() - t0
    assert st["status"] == "completed" and st["total_chunks"] == 600
    await asyncio.sleep(0.3)
    lines = _lines(c.log, ing)
    events = [line["event"] for line in lines]
    progress = events.count("ingestion progress")
    assert "chunk acked" not in events  # per-chunk lines are debug
    assert 1 <= progress <= took / 1.0 + 1, (progress, took)
    assert len(lines) <= 8 + progress, events
    size = sum(len(json.dumps(line)) + 1 for line in lines)
    report(f"log volume at info: 600 chunks, {len(lines)} lines ({progress} progress), {size} bytes in {took:.1f}s")


async def test_a_repeating_failure_is_logged_throttled(make_cluster: MakeCluster) -> None:
    """PIM-Core answering 500 to every attempt: every failure counts, but the log says so about once per 10 s."""
    c = make_cluster(chunking={"records": 10}, delivery={"max_attempts": 400, "backoff": 0.0, "ack_timeout": 5.0})
    c.rules = [{"action": "http_500", "times": 300}]
    await c.start_receiver()
    await c.start_daemon()
    src = write_json(c.data / "p.json", [product(i) for i in range(30)])
    ing = await c.ingest(src)
    st = await c.settle(ing, timeout=300)
    assert st["status"] == "completed"
    _, stats = await c.call("GET", c.rurl + "/stats")
    assert stats["faults_http_500"] == 300
    failed = [line for line in _lines(c.log, ing) if line["event"] == "chunk attempt failed"]
    assert 1 <= len(failed) <= 3, len(failed)  # the 300 failures come within a few seconds
    (done,) = [line for line in _lines(c.log, ing) if line["event"] == "ingestion completed"]
    assert done["retries"] == 300  # what was held back is still counted


async def test_a_wall_clock_jump_neither_stalls_nor_fails_chunks_in_flight(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wall clock jumps an hour forward, then two hours back, mid-ingestion: ACK timeouts and backoff
    run on the monotonic clock, so no chunk is retried and the ingestion completes."""
    d = await make_daemon(chunking={"records": 5}, delivery={"ack_timeout": 3.0, "max_attempts": 2, "backoff": 0.05})
    await receiver.faults([{"action": "delay_ack", "seconds": 0.05, "times": 1000}])
    src = write_json(data_dir / "p.json", [product(i) for i in range(200)])
    real = time.time
    _, answer = await d.ingest(path=str(src))
    ing = answer["ingestion_id"]
    jumps = 0
    while (st := await d.status(ing))["status"] not in ("completed", "failed"):
        if jumps == 0 and st["chunks_acked"] >= 5:
            monkeypatch.setattr(time, "time", lambda: real() + 3600)
            jumps = 1
        elif jumps == 1 and st["chunks_acked"] >= 20:
            monkeypatch.setattr(time, "time", lambda: real() - 3600)
            jumps = 2
        await asyncio.sleep(0.02)
    assert jumps == 2 and st["status"] == "completed", st
    code, chunks = await d.request("GET", f"/api/ingestions/{ing}/chunks?limit=100")
    assert code == 200 and all(c["attempts"] == 1 for c in chunks["chunks"]), chunks
