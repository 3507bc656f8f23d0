"""A full disk, for real: small tmpfs mounts for the state folder, the spool and the inbox, filled and freed
while the real daemon runs. At each point the ingestion concerned fails or waits with a message naming the
disk, nothing is corrupted, no ACK is answered 200 unless committed, /healthz says so, and after space is
freed a resume (or the next try) completes exactly once. Needs root (mount); `.ci/run` runs as root."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pimingestd.testing import Cluster

from .conftest import MakeCluster
from .helpers import product, report

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (.ci/run runs as root)")


@contextlib.contextmanager
def tmpfs(where: Path, size: str, inodes: int | None = None) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (f",nr_inodes={inodes}" if inodes else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path) -> Path:
    """Write a filler file until the filesystem has no space left."""
    filler = folder / "filler"
    block = b"\0" * (64 << 10)
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError:
            pass
    return filler


def jsonl(path: Path, n: int) -> list[dict[str, Any]]:
    records = [product(i) for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


async def health(c: Cluster) -> tuple[int, dict[str, Any]]:
    code, body = await c.call("GET", c.durl + "/healthz")
    return code, body


async def until(predicate: Any, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.1)


def assert_clean_log(c: Cluster) -> None:
    log = c.log.read_text()
    for bad in ("Task exception was never retrieved", "Traceback", "unhandled error in request"):
        assert bad not in log, f"{bad!r} in the daemon's log"


async def test_the_state_disk_fills_mid_ingestion_and_a_resume_completes_exactly_once(
    make_cluster: MakeCluster, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "state", "8m") as state:
        c = make_cluster(
            daemon={"state_db": str(state / "ingestion_state.db")},
            chunking={"records": 20},
            delivery={"ack_timeout": 2.0, "max_attempts": 3, "backoff": 0.05, "preflight": True},
        )
        c.state_db = state / "ingestion_state.db"
        c.rules = [{"action": "delay_ack", "seconds": 0.05, "times": 100000}]
        await c.start_receiver()
        await c.start_daemon()
        expected = jsonl(c.data / "p.jsonl", 3000)
        ing = await c.ingest(c.data / "p.jsonl")

        async def some_acked() -> bool:
            return int((await c.status(ing))["chunks_acked"]) >= 10

        await until(some_acked)
        filler = fill(state)

        async def shown_failed() -> bool:
            return (await c.status(ing))["status"] == "failed"

        await until(shown_failed)
        st = await c.status(ing)
        assert "the state database: the disk is full at" in st["error"] and str(state) in st["error"], st
        code, body = await health(c)
        assert code == 503 and "state" in body["disk_full"] and body["live"], body
        acked_while_full = st["chunks_acked"]
        filler.unlink()  # space again
        code, answer = await c.call("POST", f"{c.durl}/api/ingestions/{ing}/resume")
        assert code == 202, answer
        st = await c.settle(ing, timeout=120)
        assert st["status"] == "completed", st
        counts = await c.verify(ing, expected)  # exactly once, in order; committed chunks = applied chunks
        assert (await health(c))[1]["disk_full"] == {}
        assert_clean_log(c)
        report(f"state disk full at chunk {acked_while_full}: shown failed, resumed, exactly once ({counts})")


async def test_a_full_spool_fails_the_spool_pass_naming_it_and_a_resume_respools(
    make_cluster: MakeCluster, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    with tmpfs(state / "spool", "512k") as spool:  # the spool alone on a small disk; the database has room
        c = make_cluster(daemon={"state_db": str(state / "ingestion_state.db")}, chunking={"records": 100})
        c.state_db = state / "ingestion_state.db"
        await c.start_receiver()
        await c.start_daemon()
        expected = jsonl(c.data / "big.jsonl", 30000)  # about 1.5 MB of spool
        ing = await c.ingest(c.data / "big.jsonl")
        st = await c.settle(ing, timeout=60)
        assert st["status"] == "failed" and "the spool: the disk is full at" in st["error"], st
        _, received = await c.call("GET", c.rurl + "/stats")
        assert received.get("chunks_received", 0) == 0  # nothing is sent before the spool pass completes
        code, body = await health(c)
        assert code == 503 and "spool" in body["disk_full"], body
        assert not list(spool.glob("*.spool")), "the partial spool is removed"
        subprocess.run(["mount", "-o", "remount,size=16m", str(spool)], check=True)
        code, _ = await c.call("POST", f"{c.durl}/api/ingestions/{ing}/resume")
        assert code == 202
        assert (await c.settle(ing, timeout=120))["status"] == "completed"
        await c.verify(ing, expected)
        assert (await health(c))[1]["disk_full"] == {}
        assert_clean_log(c)


async def test_an_upload_onto_a_full_inbox_is_507_and_leaves_nothing(make_cluster: MakeCluster, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "inbox-fs", "1m") as fs:
        folders = {k: str(fs / k) for k in ("dir", "processing_dir", "done_dir", "failed_dir")}
        c = make_cluster(inbox={**folders, "watch": "off"})
        await c.start_receiver()
        await c.start_daemon()
        body = b"".join(json.dumps(product(i)).encode() + b"\n" for i in range(20000))  # about 4 MB
        code, answer = await c.call("PUT", c.durl + "/api/files/big.jsonl", data=io.BytesIO(body))
        assert code == 507 and "the upload: the disk is full at" in answer["detail"], answer
        left = [p for p in fs.rglob("*") if p.is_file()]
        assert left == [], left
        code, body_h = await health(c)
        assert code == 503 and "inbox" in body_h["disk_full"]
        small = b"".join(json.dumps(product(i)).encode() + b"\n" for i in range(10))
        code, answer = await c.call("PUT", c.durl + "/api/files/small.jsonl", data=small)
        assert code == 202, answer
        assert (await c.settle(answer["ingestion_id"]))["status"] == "completed"
        assert (await health(c))[1]["disk_full"] == {}
        assert_clean_log(c)


async def test_an_inbox_without_inodes_keeps_the_file_and_takes_it_once_there_are(
    make_cluster: MakeCluster, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "inbox-fs", "8m", inodes=64) as fs:
        folders = {k: str(fs / k) for k in ("dir", "processing_dir", "done_dir", "failed_dir")}
        c = make_cluster(inbox={**folders, "watch": "poll", "poll_interval": 0.2, "settle_seconds": 1.5})
        await c.start_receiver()
        await c.start_daemon()
        expected = jsonl(fs / "dir" / "p.jsonl", 50)  # written in place: taken once it settles
        fillers = []
        with contextlib.suppress(OSError):
            for i in range(1000):  # meanwhile, use up the inodes: its token folder cannot be made
                (fs / f"f{i}").touch()
                fillers.append(fs / f"f{i}")

        async def complained() -> bool:
            return "inbox file not taken: the disk is full" in c.log.read_text()

        await until(complained, 30)
        assert (fs / "dir" / "p.jsonl").exists()
        code, body = await health(c)
        assert code == 503 and "inbox" in body["disk_full"]
        for f in fillers:
            f.unlink()

        async def done() -> bool:
            return (fs / "done_dir").exists() and any((fs / "done_dir").rglob("p.jsonl"))

        await until(done, 60)
        ingestions = await c.ingestions()
        assert [i["status"] for i in ingestions] == ["completed"]
        await c.verify(ingestions[0]["ingestion_id"], expected)
        assert_clean_log(c)


async def test_an_inbox_file_retried_after_a_full_disk_is_not_taken_while_reopened_for_writing(
    make_cluster: MakeCluster, tmp_path: Path
) -> None:
    """The retry of a file that could not be taken for want of inodes goes through the same checks as a first
    take: the exporter opened it again meanwhile and appends in bursts, so it waits for the close, then all
    150 records are delivered (the retry five seconds later, and the watcher, take it only once closed)."""
    with tmpfs(tmp_path / "inbox-fs", "8m", inodes=64) as fs:
        folders = {k: str(fs / k) for k in ("dir", "processing_dir", "done_dir", "failed_dir")}
        c = make_cluster(inbox={**folders, "settle_seconds": 1.5})
        await c.start_receiver()
        await c.start_daemon()
        target = fs / "dir" / "p.jsonl"
        expected = jsonl(target, 50)  # written in place and closed: taken once it settles
        fillers = []
        with contextlib.suppress(OSError):
            for i in range(1000):  # meanwhile no inodes are left: its token folder cannot be made
                (fs / f"f{i}").touch()
                fillers.append(fs / f"f{i}")

        async def complained() -> bool:
            return "inbox file not taken: the disk is full" in c.log.read_text()

        await until(complained, 30)
        with open(target, "a") as f:  # the exporter again, before the retry
            for burst in (1, 2):
                records = [product(i) for i in range(burst * 50, burst * 50 + 50)]
                f.write("".join(json.dumps(r) + "\n" for r in records))
                f.flush()
                expected += records
                if burst == 1:
                    for filler in fillers:
                        filler.unlink()
                await asyncio.sleep(6)  # past the retry (5 s) and several settle times
                assert target.exists() and await c.ingestions() == [], "taken while its writer had it open"

        async def done() -> bool:
            return any((fs / "done_dir").rglob("p.jsonl"))

        await until(done, 60)
        [row] = await c.ingestions()
        assert row["status"] == "completed" and row["records_acked"] == 150
        await c.verify(row["ingestion_id"], expected)
        assert_clean_log(c)
