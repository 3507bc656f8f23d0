"""The real daemon process and real signals: SIGTERM drains, SIGKILL loses nothing, one daemon per state."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .helpers import free_port, product, report, spawn, wait_http, write_config, write_json


class Proc:
    def __init__(self, tmp_path: Path, records: int, **sections: Any) -> None:
        self.tmp = tmp_path
        self.rport, self.dport = free_port(), free_port()
        self.cfg = write_config(tmp_path / "d", daemon_port=self.dport, receiver_port=self.rport, **sections)
        self.src = write_json(tmp_path / "d" / "data" / "p.json", [product(i) for i in range(records)])
        self.log = tmp_path / "daemon.log"
        self.daemon: subprocess.Popen[bytes] | None = None
        self.receiver = spawn(
            ["receiver", "--port", str(self.rport), "--data", str(tmp_path / "recv")], log=tmp_path / "receiver.log"
        )
        self.rurl = f"http://127.0.0.1:{self.rport}"
        self.durl = f"http://127.0.0.1:{self.dport}"

    async def start_daemon(self) -> None:
        self.daemon = spawn(["run", "--config", str(self.cfg)], log=self.log)
        await wait_http(self.durl + "/healthz", ok=lambda s: s == 200)

    async def call(self, method: str, url: str, **kw: Any) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s, s.request(method, url, **kw) as r:
            return r.status, await r.json()

    async def status(self, ing: str) -> dict[str, Any]:
        code, body = await self.call("GET", f"{self.durl}/api/ingestions/{ing}")
        assert code == 200, body
        return dict(body)

    def close(self) -> None:
        for p in (self.daemon, self.receiver):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
async def proc(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[Proc] = []

    def make(records: int, **sections: Any) -> Proc:
        p = Proc(tmp_path, records, **sections)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


async def _wait_exit(p: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while p.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"process {p.pid} still running after {timeout}s")
        await asyncio.sleep(0.02)
    return int(p.returncode)


async def test_sigterm_drains_and_resumes_exactly(proc: Any) -> None:
    """SIGTERM mid-ingestion exits 0 within seconds; the next start resumes and applies each record once."""
    p = proc(600, chunking={"records": 20}, delivery={"ack_timeout": 10.0})
    await wait_http(p.rurl + "/stats")
    await p.call("PUT", p.rurl + "/_faults", json=[{"action": "delay_ack", "seconds": 0.05, "times": 10000}])
    await p.start_daemon()
    _, body = await p.call("POST", p.durl + "/api/ingest", json={"path": str(p.src)})
    ing = body["ingestion_id"]
    while (await p.status(ing))["chunks_acked"] < 5:
        await asyncio.sleep(0.02)
    started = time.monotonic()
    p.daemon.send_signal(signal.SIGTERM)
    assert await _wait_exit(p.daemon, 10) == 0
    assert time.monotonic() - started < 5
    logs = p.log.read_text()
    assert "shutting down" in logs and "drain finished" in logs
    await p.start_daemon()
    while (st := await p.status(ing))["status"] not in ("completed", "failed"):
        await asyncio.sleep(0.05)
    assert st["status"] == "completed"
    _, applied = await p.call("GET", f"{p.rurl}/ingestions/{ing}/records")
    assert [json.loads(a["record"]) for a in applied] == [product(i) for i in range(600)]


async def test_second_daemon_refuses_same_state(proc: Any) -> None:
    """A second daemon on the same state_db refuses to start with a clear error (exit 74)."""
    p = proc(1)
    await p.start_daemon()
    other = subprocess.run(
        [sys.executable, "-m", "pimingestd", "run", "--config", str(p.cfg)], capture_output=True, text=True, timeout=30
    )
    assert other.returncode == 74
    assert "another pimingestd is running" in other.stderr
    assert p.daemon.poll() is None


@pytest.mark.slow
async def test_sigkill_crash_loop_applies_everything_once(proc: Any) -> None:
    """SIGKILL the daemon at random instants, restart it each time: every record applied once, in order."""
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    total = 3000
    p = proc(total, chunking={"records": 25}, delivery={"ack_timeout": 2.0, "backoff": 0.05, "max_attempts": 50})
    await wait_http(p.rurl + "/stats")
    await p.call("PUT", p.rurl + "/_faults", json=[{"action": "delay_ack", "seconds": 0.01, "times": 100000}])
    await p.start_daemon()
    _, body = await p.call("POST", p.durl + "/api/ingest", json={"path": str(p.src)})
    ing = body["ingestion_id"]
    kills = 0
    for _ in range(8):
        await asyncio.sleep(rng.uniform(0.05, 0.6))
        if p.daemon.poll() is None:
            p.daemon.send_signal(signal.SIGKILL)
            p.daemon.wait()
            kills += 1
        await p.start_daemon()
        if (await p.status(ing))["status"] == "completed":
            break
    deadline = time.monotonic() + 60
    while (st := await p.status(ing))["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, f"seed {seed}: stuck at {st}"
        await asyncio.sleep(0.05)
    assert st["status"] == "completed", f"seed {seed}: {st}"
    _, applied = await p.call("GET", f"{p.rurl}/ingestions/{ing}/records")
    got = [json.loads(a["record"]) for a in applied]
    assert len(got) == total, f"seed {seed}: {len(got)} applied"
    assert got == [product(i) for i in range(total)], f"seed {seed}"
    _, stats = await p.call("GET", p.rurl + "/stats")
    report(
        f"SIGKILL loop seed {seed}: {kills} kills, {total} records, 0 lost, 0 applied twice,"
        f" {stats.get('duplicates', 0)} re-sends re-ACKed"
    )
    assert kills >= 1
