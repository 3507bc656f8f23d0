"""Running as a service: the systemd unit, sd_notify, drain on SIGTERM, logs and metrics."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .helpers import REPO, free_port, product, spawn, wait_http, write_config, write_json

UNIT = REPO / "systemd" / "pimingestd.service"
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (.ci/run installs it)"
)


def _unit_for_here(tmp_path: Path) -> Path:
    """The shipped unit with ExecStart pointing at this environment's entry point (verify checks it exists)."""
    exe = Path(sys.executable).parent / "pimingestd"
    assert exe.exists(), exe
    text = UNIT.read_text()
    assert "ExecStart=/opt/pimingestd/bin/pimingestd run --config /etc/pimingestd/config.toml" in text
    unit = tmp_path / "pimingestd.service"
    unit.write_text(text.replace("/opt/pimingestd/bin/pimingestd", str(exe)))
    return unit


@needs_systemd_analyze
def test_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze verify accepts the unit."""
    out = subprocess.run(["systemd-analyze", "verify", str(_unit_for_here(tmp_path))], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "pimingestd.service" not in out.stderr, out.stderr


@needs_systemd_analyze
def test_unit_exposure_score(tmp_path: Path) -> None:
    """systemd-analyze security rates the unit's exposure 2.0 or lower."""
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(_unit_for_here(tmp_path))],
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for pimingestd\.service: (\d+\.\d+)", out.stdout)
    assert match, out.stdout + out.stderr
    assert float(match.group(1)) <= 2.0, out.stdout


def test_unit_settings() -> None:
    """The unit asks for what the daemon provides: notify, watchdog, credential, no restart on bad config."""
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "RestartPreventExitStatus=74 78",
        "LoadCredential=pimcore-secret:/etc/pimingestd/pimcore.secret",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ):
        assert line in text, line
    stop = int(re.search(r"TimeoutStopSec=(\d+)s", text).group(1))  # type: ignore[union-attr]
    assert stop > 10 + 5, "TimeoutStopSec must exceed the default drain_seconds with room for clean-up"


class Stack:
    """A receiver process and a daemon process with a notify socket."""

    def __init__(self, tmp_path: Path, records: int = 200, **sections: Any) -> None:
        self.tmp = tmp_path
        self.rport, self.dport = free_port(), free_port()
        self.cfg = write_config(tmp_path / "d", daemon_port=self.dport, receiver_port=self.rport, **sections)
        self.src = write_json(tmp_path / "d" / "data" / "p.json", [product(i) for i in range(records)])
        self.rurl, self.durl = f"http://127.0.0.1:{self.rport}", f"http://127.0.0.1:{self.dport}"
        self.receiver = spawn(["receiver", "--port", str(self.rport), "--data", str(tmp_path / "recv")])
        self.sock_path = tmp_path / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.sock_path))
        self.sock.setblocking(False)
        self.messages: list[str] = []
        self.log = tmp_path / "daemon.log"
        self.daemon: subprocess.Popen[bytes] | None = None

    async def start(self, env: dict[str, str] | None = None) -> None:
        await wait_http(self.rurl + "/stats")
        env = {"NOTIFY_SOCKET": str(self.sock_path), "WATCHDOG_USEC": "1000000", **(env or {})}
        self.daemon = spawn(["run", "--config", str(self.cfg)], env=env, log=self.log)
        await wait_http(self.durl + "/healthz", ok=lambda s: s == 200)

    def drain_messages(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    async def wait_message(self, needle: str, timeout: float = 10.0) -> str:
        """The first notification that starts with ``needle``."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.drain_messages():
                if m.startswith(needle):
                    return m
            if time.monotonic() > deadline:
                raise AssertionError(f"no {needle!r} in {self.messages}")
            await asyncio.sleep(0.05)

    async def call(self, method: str, url: str, **kw: Any) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s, s.request(method, url, **kw) as r:
            return r.status, await r.text()

    async def ingest(self) -> str:
        code, text = await self.call("POST", self.durl + "/api/ingest", json={"path": str(self.src)})
        assert code == 202, text
        return str(json.loads(text)["ingestion_id"])

    async def status(self, ing: str) -> dict[str, Any]:
        code, text = await self.call("GET", f"{self.durl}/api/ingestions/{ing}")
        assert code == 200, text
        return dict(json.loads(text))

    async def wait_done(self, ing: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (st := await self.status(ing))["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, st
            await asyncio.sleep(0.05)
        return st

    def close(self) -> None:
        for p in (self.daemon, self.receiver):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        self.sock.close()


@pytest.fixture
def stack(tmp_path: Path) -> Any:
    made: list[Stack] = []

    def make(**kw: Any) -> Stack:
        s = Stack(tmp_path, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


async def _exit_code(p: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while p.poll() is None:
        assert time.monotonic() < deadline, f"still running after {timeout}s"
        await asyncio.sleep(0.02)
    return int(p.returncode)


async def test_sd_notify_lifecycle(stack: Any) -> None:
    """The real process says READY=1 once serving, pings WATCHDOG=1, refreshes STATUS=, and says STOPPING=1."""
    s = stack()
    await s.start()
    ready = await s.wait_message("READY=1")
    assert "STATUS=" in ready and f"MAINPID={s.daemon.pid}" in ready
    await s.wait_message("WATCHDOG=1", timeout=3)
    before = len([m for m in s.drain_messages() if m == "WATCHDOG=1"])
    await asyncio.sleep(1.2)
    assert len([m for m in s.drain_messages() if m == "WATCHDOG=1"]) >= before + 2  # every 0.5 s for WATCHDOG_USEC=1s
    status = await s.wait_message("STATUS=0 ingestion(s) running", timeout=8)
    assert "records/s" in status and not status.startswith("READY")
    s.daemon.send_signal(signal.SIGTERM)
    await s.wait_message("STOPPING=1")
    assert await _exit_code(s.daemon, 10) == 0


async def test_sigterm_drains_in_flight_then_resumes(stack: Any) -> None:
    """SIGTERM: 503 for new work, the server stays up while the chunk in flight gets its ACK, exit 0, exact resume."""
    s = stack(records=100, daemon={"drain_seconds": 8.0}, delivery={"ack_timeout": 10.0})
    await s.start()
    await s.call("PUT", s.rurl + "/_faults", data=json.dumps([{"action": "delay_ack", "chunk": 3, "seconds": 1.5}]))
    ing = await s.ingest()
    deadline = time.monotonic() + 10
    while (await s.status(ing))["chunks_acked"] < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # chunk 3 is in flight, its ACK 1.5 s away
    started = time.monotonic()
    s.daemon.send_signal(signal.SIGTERM)
    await s.wait_message("STOPPING=1")
    code, text = await s.call("POST", s.durl + "/api/ingest", json={"path": str(s.src), "re_ingestion": True})
    assert code == 503 and "draining" in text
    code, _ = await s.call("GET", s.durl + "/healthz")
    assert code == 503
    assert await _exit_code(s.daemon, 10) == 0
    took = time.monotonic() - started
    assert 0.8 < took < 6, took  # waited for the delayed ACK, not for the whole drain window
    # Chunk 3's ACK arrived during the drain and was committed; nothing after it was sent.
    _, summary = await s.call("GET", f"{s.rurl}/ingestions/{ing}")
    assert json.loads(summary)["chunks_applied"] == 3
    await s.start()
    st = await s.wait_done(ing)
    assert st["status"] == "completed" and st["records_acked"] == 100
    _, applied = await s.call("GET", f"{s.rurl}/ingestions/{ing}/records")
    assert [json.loads(a["record"]) for a in json.loads(applied)] == [product(i) for i in range(100)]


async def test_second_signal_skips_drain(stack: Any) -> None:
    """A second SIGTERM ends the drain at once."""
    s = stack(records=50, daemon={"drain_seconds": 30.0}, delivery={"ack_timeout": 60.0})
    await s.start()
    await s.call("PUT", s.rurl + "/_faults", data=json.dumps([{"action": "drop_ack", "times": 100}]))
    ing = await s.ingest()
    deadline = time.monotonic() + 10
    while (await s.status(ing))["status"] != "running":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    started = time.monotonic()
    s.daemon.send_signal(signal.SIGTERM)
    await s.wait_message("STOPPING=1")
    await asyncio.sleep(0.3)
    assert s.daemon.poll() is None, "still draining"
    s.daemon.send_signal(signal.SIGTERM)
    assert await _exit_code(s.daemon, 5) == 0
    assert time.monotonic() - started < 4


async def test_logs_carry_context_and_never_secrets(stack: Any, tmp_path: Path) -> None:
    """A signed run with a token: JSON lines, ISO UTC times, ingestion context on every event, no secret or token."""
    secret, token = "pimcore-hmac-secret-7f3a", "api-token-91c2"
    s = stack(records=60, http={"api_token": token}, pimcore={"secret": secret})
    s.receiver.kill()
    s.receiver.wait()
    s.receiver = spawn(["receiver", "--port", str(s.rport), "--data", str(tmp_path / "recv2"), "--secret", secret])
    await wait_http(s.rurl + "/stats")
    s.daemon = spawn(["run", "--config", str(s.cfg)], env={"NOTIFY_SOCKET": str(s.sock_path)}, log=s.log)
    await wait_http(s.durl + "/healthz", ok=lambda c: c == 200)
    auth = {"Authorization": f"Bearer {token}"}
    code, text = await s.call("POST", s.durl + "/api/ingest", json={"path": str(s.src)}, headers=auth)
    assert code == 202, text
    ing = json.loads(text)["ingestion_id"]
    code, _ = await s.call(
        "POST", s.durl + "/api/ingest", json={"path": str(s.src)}, headers={"Authorization": "Bearer " + secret}
    )
    assert code == 401
    deadline = time.monotonic() + 20
    while True:
        _, text = await s.call("GET", f"{s.durl}/api/ingestions/{ing}", headers=auth)
        if json.loads(text)["status"] == "completed":
            break
        assert time.monotonic() < deadline, text
        await asyncio.sleep(0.05)
    s.daemon.send_signal(signal.SIGTERM)
    assert await _exit_code(s.daemon, 10) == 0
    raw = s.log.read_text()
    assert secret not in raw and token not in raw
    events = [json.loads(line) for line in raw.splitlines() if line.strip()]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", e["timestamp"]) for e in events)
    started = next(e for e in events if e["event"] == "pimingestd started")
    assert started["signed"] is True and started["resuming"] == 0 and "version" in started
    mine = [e for e in events if e.get("ingestion_id") == ing]
    assert {"ingestion queued", "ingestion started", "spool pass done", "chunk acked", "ingestion completed"} <= {
        e["event"] for e in mine
    }
    for e in mine:
        assert e["file_id"].startswith("sha256:") and e["file"] == "p.json", e
    for e in (e for e in mine if e["event"] == "chunk acked"):
        assert isinstance(e["chunk"], int) and e["attempt"] == 1
    assert "SKU-000001" not in raw, "record contents never reach the logs"


async def test_metrics_and_health(stack: Any) -> None:
    """/metrics speaks Prometheus text with the documented metrics; /healthz tells live from ready."""
    s = stack(records=95)
    await s.start()
    ing = await s.ingest()
    assert (await s.wait_done(ing))["status"] == "completed"
    code, text = await s.call("GET", s.durl + "/metrics")
    assert code == 200
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    assert values["pimingestd_chunks_acked_total"] == 10
    assert values["pimingestd_chunks_sent_total"] == 10
    assert values["pimingestd_records_acked_total"] == 95
    assert values["pimingestd_chunks_retried_total"] == 0
    assert values["pimingestd_bytes_sent_total"] > 95 * 40
    assert values["pimingestd_ack_latency_seconds_count"] == 10
    assert values['pimingestd_ingestions{status="completed"}'] == 1
    assert values["pimingestd_chunks_in_flight"] == 0
    assert values["pimingestd_last_ack_timestamp_seconds"] > time.time() - 60
    assert values["process_resident_memory_bytes"] > 0
    code, text = await s.call("GET", s.durl + "/healthz")
    assert code == 200 and json.loads(text)["ready"] is True and json.loads(text)["live"] is True
