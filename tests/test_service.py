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
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from pimingestd.testing import Cluster

from .conftest import MakeCluster
from .helpers import REPO, product, write_json

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


class Stack(Cluster):
    """A cluster whose daemon reports to a real notify socket, with a generated file to ingest."""

    def __init__(self, root: Path, records: int = 200, **kw: Any) -> None:
        self.sock_path = root / "notify.sock"
        super().__init__(root, env={"NOTIFY_SOCKET": str(self.sock_path), "WATCHDOG_USEC": "1000000"}, **kw)
        self.src = write_json(self.data / "p.json", [product(i) for i in range(records)])
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.sock_path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    async def start(self) -> None:
        if self.receiver is None:
            await self.start_receiver()
        await self.start_daemon()

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

    def signal(self, sig: int) -> None:
        assert self.daemon is not None
        self.daemon.send_signal(sig)

    def close(self) -> None:
        super().close()
        self.sock.close()


@pytest.fixture
def stack(make_cluster: MakeCluster) -> Callable[..., Stack]:
    return lambda **kw: cast(Stack, make_cluster(Stack, **kw))


async def test_sd_notify_lifecycle(stack: Any) -> None:
    """The real process says READY=1 once serving, pings WATCHDOG=1, refreshes STATUS=, and says STOPPING=1."""
    s = stack()
    await s.start()
    ready = await s.wait_message("READY=1")
    assert s.daemon is not None
    assert "STATUS=" in ready and f"MAINPID={s.daemon.pid}" in ready
    await s.wait_message("WATCHDOG=1", timeout=3)
    before = len([m for m in s.drain_messages() if m == "WATCHDOG=1"])
    await asyncio.sleep(1.2)
    assert len([m for m in s.drain_messages() if m == "WATCHDOG=1"]) >= before + 2  # every 0.5 s for WATCHDOG_USEC=1s
    status = await s.wait_message("STATUS=0 ingestion(s) running", timeout=8)
    assert "records/s" in status and not status.startswith("READY")
    s.signal(signal.SIGTERM)
    await s.wait_message("STOPPING=1")
    assert await s.exit_code(10) == 0


async def test_sigterm_drains_in_flight_then_resumes(stack: Any) -> None:
    """SIGTERM: 503 for new work, the server stays up while the chunk in flight gets its ACK, exit 0, exact resume."""
    s = stack(records=100, daemon={"drain_seconds": 8.0}, delivery={"ack_timeout": 10.0})
    await s.start()
    await s.faults([{"action": "delay_ack", "chunk": 3, "seconds": 1.5}])
    ing = await s.ingest(s.src)
    deadline = time.monotonic() + 10
    while (await s.status(ing))["chunks_acked"] < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # chunk 3 is in flight, its ACK 1.5 s away
    started = time.monotonic()
    s.signal(signal.SIGTERM)
    await s.wait_message("STOPPING=1")
    code, body = await s.call("POST", s.durl + "/api/ingest", json={"path": str(s.src), "re_ingestion": True})
    assert code == 503 and body["error"] == "draining"
    code, _ = await s.call("GET", s.durl + "/healthz")
    assert code == 503
    assert await s.exit_code(10) == 0
    took = time.monotonic() - started
    assert 0.8 < took < 6, took  # waited for the delayed ACK, not for the whole drain window
    # Chunk 3's ACK arrived during the drain and was committed; nothing after it was sent.
    _, summary = await s.call("GET", f"{s.rurl}/ingestions/{ing}")
    assert summary["chunks_applied"] == 3
    await s.start()
    st = await s.settle(ing, timeout=30)
    assert st["status"] == "completed" and st["records_acked"] == 100
    assert await s.applied(ing) == [product(i) for i in range(100)]


async def test_second_signal_skips_drain(stack: Any) -> None:
    """A second SIGTERM ends the drain at once."""
    s = stack(records=50, daemon={"drain_seconds": 30.0}, delivery={"ack_timeout": 60.0})
    await s.start()
    await s.faults([{"action": "drop_ack", "times": 100}])
    ing = await s.ingest(s.src)
    deadline = time.monotonic() + 10
    while (await s.status(ing))["status"] != "running":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    started = time.monotonic()
    s.signal(signal.SIGTERM)
    await s.wait_message("STOPPING=1")
    await asyncio.sleep(0.3)
    assert s.daemon is not None and s.daemon.poll() is None, "still draining"
    s.signal(signal.SIGTERM)
    assert await s.exit_code(5) == 0
    assert time.monotonic() - started < 4


async def test_logs_carry_context_and_never_secrets(stack: Any) -> None:
    """A signed run with a token: JSON lines, ISO UTC times, ingestion context on every event, no secret or token."""
    secret, token = "pimcore-hmac-secret-7f3a", "api-token-91c2"
    s = stack(records=60, receiver_secret=secret, http={"api_token": token}, pimcore={"secret": secret})
    await s.start()
    auth = {"Authorization": f"Bearer {token}"}
    ing = await s.ingest(s.src, headers=auth)
    code, _ = await s.call(
        "POST", s.durl + "/api/ingest", json={"path": str(s.src)}, headers={"Authorization": "Bearer " + secret}
    )
    assert code == 401
    assert (await s.settle(ing, timeout=20, headers=auth))["status"] == "completed"
    s.signal(signal.SIGTERM)
    assert await s.exit_code(10) == 0
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
    ing = await s.ingest(s.src)
    assert (await s.settle(ing, timeout=30))["status"] == "completed"
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
    code, health = await s.call("GET", s.durl + "/healthz")
    assert code == 200 and health["ready"] is True and health["live"] is True
