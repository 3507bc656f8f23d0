"""Deterministic crash points: the real daemon dies at each step (os._exit), restarts, and nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pimingestd.crashpoints import ENV, EXIT_CODE
from pimingestd.testing import Cluster

from .helpers import product
from .test_inbox import files_under, inbox_config

RECORDS = 45


class Rig(Cluster):
    """A cluster whose daemon watches an inbox, and stops itself at a crash point when asked."""

    def __init__(self, root: Path) -> None:
        self.inbox = inbox_config(root, settle_seconds=0.3, poll_interval=0.1)
        super().__init__(root, inbox=self.inbox, delivery={"ack_timeout": 2.0, "backoff": 0.05, "max_attempts": 20})

    async def start(self, crash_at: str | None = None) -> None:
        if self.receiver is None:
            await self.start_receiver()
        await self.start_daemon(env={ENV: crash_at or ""})

    async def wait_crash(self, timeout: float = 20) -> None:
        code = await self.exit_code(timeout)
        assert code == EXIT_CODE, (code, self.log.read_text()[-2000:])

    async def settled(self, timeout: float = 30) -> list[dict[str, Any]]:
        """Every ingestion ended and every file out of the inbox and processing (paths updated)."""
        processing = self.inbox["processing_dir"]
        deadline = time.monotonic() + timeout
        while True:
            rows = await self.ingestions()
            if (
                rows
                and all(r["status"] in ("completed", "failed") and not r["path"].startswith(processing) for r in rows)
                and not files_under(Path(processing))
                and not files_under(Path(self.inbox["dir"]))
            ):
                return rows
            assert time.monotonic() < deadline, rows
            await asyncio.sleep(0.05)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
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
    assert await rig.applied(row["ingestion_id"]) == [product(i) for i in range(RECORDS)]
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
    [source] = [f for f in failed if f.endswith("/bad.json")]
    assert sorted(failed) == sorted([source, source.split("/")[0] + ".error.json"])  # the report beside its folder
    _, stats = await rig.call("GET", rig.rurl + "/stats")
    assert stats.get("chunks_received", 0) == 0


async def test_a_source_named_like_a_report_survives_a_crash_mid_ingestion(rig: Rig) -> None:
    """The daemon stops itself while it ingests x.error.json; at the restart reconcile keeps the file (it used
    to remove the processing folder, taking the name for a report) and the ingestion completes exactly once."""
    await rig.start(crash_at="engine.after-post")
    drop(rig.inbox, "x.error.json", GOOD)
    await rig.wait_crash()
    await rig.start()
    [row] = await rig.settled()
    assert row["status"] == "completed" and row["records_acked"] == RECORDS
    done = files_under(Path(rig.inbox["done_dir"]))
    assert len(done) == 1 and done[0].endswith("/x.error.json")
    assert await rig.applied(row["ingestion_id"]) == json.loads(GOOD)


class DeltaRig(Rig):
    """The rig with an inbox profile that keys records, sends only changes and tombstones what left."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.inbox["profiles"] = [
            {"match": "*.json", "key": "sku", "delta": True, "deletions": "send", "max_deletions": 50}
        ]
        write_config_again(self)


def write_config_again(rig: Rig) -> None:
    from pimingestd.testing import write_config

    rig.cfg = write_config(
        rig.root / "d",
        daemon_port=rig.dport,
        receiver_port=rig.rport,
        inbox=rig.inbox,
        delivery={"ack_timeout": 2.0, "backoff": 0.05, "max_attempts": 20},
    )


@pytest.mark.parametrize("step", ENGINE_STEPS)
async def test_a_crash_at_each_step_leaves_the_stored_versions_equal_to_what_pim_core_holds(
    tmp_path: Path, step: str
) -> None:
    """Two files of one delta scope, the daemon dying at ``step`` in each (an ACK committed and nothing after
    it, among others), with a record refused each time: after the restarts every record to be sent is applied
    once or is in the reject file (placed beside the file in done/), the refused one is sent by the next
    file, and the stored versions equal the receiver's catalogue."""
    rig = DeltaRig(tmp_path)
    try:
        day1 = [product(i) for i in range(RECORDS)]
        await rig.start_receiver()
        await rig.faults([{"action": "reject_records", "field": "sku", "values": ["SKU-000007"], "reason": "no"}])
        await rig.start(crash_at=step)
        drop(rig.inbox, "day1.json", json.dumps(day1))
        await rig.wait_crash()
        await rig.start()
        [row] = await rig.settled()
        assert (await rig.record_outcomes(row["ingestion_id"], day1))["rejected"] == 1
        assert [f for f in files_under(Path(rig.inbox["done_dir"])) if f.endswith("/day1.rejects.json")]

        day2 = [dict(r, stock=1) if i in (3, 4) else r for i, r in enumerate(day1) if i != 9]
        await rig.faults([{"action": "reject_records", "field": "sku", "values": ["SKU-000003"], "reason": "no"}])
        await rig.callbacks_settled()  # a callback retried at the next daemon would meet its crash point first
        await rig.kill_daemon()
        await rig.start(crash_at=step)
        drop(rig.inbox, "day2.json", json.dumps(day2))
        await rig.wait_crash()
        await rig.start()
        rows = await rig.settled()
        [two] = [r for r in rows if r["file_name"] == "day2.json"]
        sent = [day2[3], day2[4], day2[7]]  # the two changed ones, and SKU-000007 refused by day 1
        assert sorted(r["sku"] for r in sent) == ["SKU-000003", "SKU-000004", "SKU-000007"]
        outcome = await rig.record_outcomes(two["ingestion_id"], sent)
        assert outcome == {"applied": 2, "rejected": 1}, outcome
        assert two["records_deleted"] == 1 and two["records_unchanged"] == RECORDS - 1 - 3
    finally:
        rig.close()


WINDOW_RECORDS = [product(i) for i in range(150)]  # 15 chunks: more than a window of 8


class WindowRig(Rig):
    """The rig with a window of 8 chunks (protocol v2) in ``order``; by_key files are keyed by sku."""

    def __init__(self, root: Path, order: str, preflight: bool = True) -> None:
        super().__init__(root)
        if order == "by_key":
            self.inbox["profiles"] = [{"match": "*.json", "key": "sku"}]
        from pimingestd.testing import write_config

        self.cfg = write_config(
            self.root / "d",
            daemon_port=self.dport,
            receiver_port=self.rport,
            inbox=self.inbox,
            delivery={"ack_timeout": 2.0, "backoff": 0.05, "max_attempts": 20, "preflight": preflight},
            pimcore={"window": 8, "order": order},
        )
        self.receiver_args = ["--workers", "4"]


@pytest.mark.parametrize("order", ["strict", "by_key", "strict-streaming"])
@pytest.mark.parametrize("step", ENGINE_STEPS)
async def test_with_a_window_of_8_a_crash_at_each_step_applies_once(tmp_path: Path, step: str, order: str) -> None:
    """Up to 8 chunks in flight when the daemon dies at ``step``: after the restart every chunk not ACKed is
    sent again, every record is applied exactly once, in chunk order (strict, spooled or streamed without
    preflight) or in file order per key (by_key), and the daemon's committed chunks are the receiver's
    applied ones."""
    streaming = order == "strict-streaming"
    order = "strict" if streaming else order
    rig = WindowRig(tmp_path, order, preflight=not streaming)
    try:
        await rig.start(crash_at=step)
        drop(rig.inbox, "products.json", json.dumps(WINDOW_RECORDS))
        await rig.wait_crash()
        await rig.start()
        [row] = await rig.settled()
        assert row["status"] == "completed", row
        await rig.verify(row["ingestion_id"], WINDOW_RECORDS, order=order)
        _, stats = await rig.call("GET", rig.rurl + "/stats")
        assert stats["max_concurrent_posts"] > 1, stats  # the window was used
    finally:
        rig.close()
