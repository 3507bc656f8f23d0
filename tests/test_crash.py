"""Deterministic crash points: the real daemon dies at each step (os._exit), restarts, and nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pimingestd.crashpoints import ENV, EXIT_CODE

from .helpers import free_port, product, spawn, wait_http, write_config
from .test_inbox import files_under, inbox_config

RECORDS = 45


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        rport, dport = free_port(), free_port()
        self.inbox = inbox_config(tmp_path, settle_seconds=0.3, poll_interval=0.1)
        self.cfg = write_config(
            tmp_path / "daemon",
            daemon_port=dport,
            receiver_port=rport,
            inbox=self.inbox,
            delivery={"ack_timeout": 2.0, "backoff": 0.05, "max_attempts": 20},
        )
        self.rurl, self.durl = f"http://127.0.0.1:{rport}", f"http://127.0.0.1:{dport}"
        self.receiver = spawn(["receiver", "--port", str(rport), "--data", str(tmp_path / "recv")])
        self.daemon: Any = None
        self.log = tmp_path / "daemon.log"

    async def start(self, crash_at: str | None = None) -> None:
        await wait_http(self.rurl + "/stats")
        env = {ENV: crash_at} if crash_at else {ENV: ""}
        self.daemon = spawn(["run", "--config", str(self.cfg)], env=env, log=self.log)
        await wait_http(self.durl + "/healthz", ok=lambda s: s == 200)

    async def call(self, method: str, url: str, **kw: Any) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s, s.request(method, url, **kw) as r:
            return r.status, await r.json(content_type=None)

    async def wait_crash(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.daemon.poll() is None:
            assert time.monotonic() < deadline, "the crash point was never reached"
            await asyncio.sleep(0.02)
        assert self.daemon.returncode == EXIT_CODE, (self.daemon.returncode, self.log.read_text()[-2000:])

    async def ingestions(self) -> list[dict[str, Any]]:
        _, body = await self.call("GET", self.durl + "/api/ingestions?limit=100")
        return list(body["ingestions"])

    async def settled(self, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            rows = await self.ingestions()
            processing = self.inbox["processing_dir"]
            if (
                rows
                and all(r["status"] in ("completed", "failed") and not r["path"].startswith(processing) for r in rows)
                and not files_under(Path(processing))
                and not files_under(Path(self.inbox["dir"]))
            ):
                return rows
            assert time.monotonic() < deadline, rows
            await asyncio.sleep(0.05)

    def close(self) -> None:
        for p in (self.daemon, self.receiver):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def rig(tmp_path: Path) -> Any:
    r = Rig(tmp_path)
    yield r
    r.close()


def drop(inbox: dict[str, Any], name: str, text: str) -> None:
    folder = Path(inbox["dir"])
    (folder / ".incoming").write_text(text)
    os.rename(folder / ".incoming", folder / name)


GOOD = json.dumps([product(i) for i in range(RECORDS)])

ENGINE_STEPS = [
    "engine.after-mark-sent",
    "engine.after-post",
    "ack.after-commit",
    "engine.before-complete",
    "engine.after-complete",
]
INBOX_STEPS = ["inbox.after-take", "inbox.after-submit", "inbox.before-finish", "inbox.after-finish"]


@pytest.mark.parametrize("step", ENGINE_STEPS + INBOX_STEPS)
async def test_crash_then_restart_applies_once(rig: Rig, step: str) -> None:
    """Crash at the step, restart: one ingestion, completed, every record applied exactly once in order, file in done."""
    await rig.start(crash_at=step)
    drop(rig.inbox, "products.json", GOOD)
    await rig.wait_crash()
    await rig.start()
    [row] = await rig.settled()
    assert row["status"] == "completed", row
    _, applied = await rig.call("GET", f"{rig.rurl}/ingestions/{row['ingestion_id']}/records")
    assert [json.loads(a["record"]) for a in applied] == [product(i) for i in range(RECORDS)]
    done = files_under(Path(rig.inbox["done_dir"]))
    assert len(done) == 1 and done[0].endswith("/products.json")
    assert row["path"] == str(Path(rig.inbox["done_dir"]) / done[0])
    _, summary = await rig.call("GET", f"{rig.rurl}/ingestions/{row['ingestion_id']}")
    assert summary["completed"] is True


@pytest.mark.parametrize("step", ["inbox.before-finish", "inbox.after-finish"])
async def test_crash_on_the_failure_path(rig: Rig, step: str) -> None:
    """A malformed file whose move to failed_dir is interrupted still ends there with its report, sending nothing."""
    await rig.start(crash_at=step)
    drop(rig.inbox, "bad.json", GOOD[:-40])
    await rig.wait_crash()
    await rig.start()
    [row] = await rig.settled()
    assert row["status"] == "failed"
    failed = files_under(Path(rig.inbox["failed_dir"]))
    assert len(failed) == 2 and any(f.endswith("/bad.json.error.json") for f in failed)
    _, stats = await rig.call("GET", rig.rurl + "/stats")
    assert stats.get("chunks_received", 0) == 0
