"""The benchmark suite: the raw limits and the real daemon in the same run, one table out.

    python -m bench            # quick: about a minute
    python -m bench --full     # adds the 1 GB file and the 1 GB upload

Every target is a ratio measured in this run, or a memory bound (RSS sampled
from outside with psutil, summed over the daemon and its children: the parse
worker too, as a container's memory limit counts it). Writes bench/out/results.json and bench/out/rss.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from pimingestd.sources import parse_workers
from pimingestd.testing import Cluster

from . import data

OUT = Path(__file__).resolve().parent / "out"
MiB = 1 << 20


@dataclass
class Row:
    case: str
    records: int
    seconds: float
    peak_rss_mib: float | None = None
    ratio: float | None = None
    target: str = ""
    ok: bool | None = None
    note: str = ""
    mb: float = 0.0

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


@dataclass
class Sampler:
    """Samples the RSS of a process and all its descendants (the daemon and its parse worker: what a container's
    memory limit or systemd's MemoryMax counts), summed, every few milliseconds from a thread; ``tree=False``:
    the process alone (to show the daemon's own share beside the tree)."""

    pid: int
    every: float = 0.02
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    tree: bool = True
    own: list[int] = field(default_factory=list)  # the daemon's own RSS at each sample, beside the tree's

    def __post_init__(self) -> None:
        self._proc = psutil.Process(self.pid)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        rss = self._proc.memory_info().rss
        self.own.append(rss)
        if self.tree:
            for child in self._proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # it ended meanwhile
                    rss += child.memory_info().rss
        return rss

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            try:
                rss = self._rss()
            except psutil.Error:
                return
            self.samples.append((time.monotonic() - start, rss))
            time.sleep(self.every)

    def peak_between(self, t0: float = 0.0, t1: float = float("inf")) -> int:
        return max((r for t, r in self.samples if t0 <= t <= t1), default=0)

    def split(self) -> str:
        """Where the tree's peak was: the daemon's own RSS and its children's at that sample."""
        if not self.samples:
            return "no samples"
        i = max(range(len(self.samples)), key=lambda k: self.samples[k][1])
        own = self.own[i] if i < len(self.own) else 0
        return f"at the peak: daemon {own / MiB:.0f} + children {(self.samples[i][1] - own) / MiB:.0f} MiB"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def limit(kind: str, path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.limit", kind, str(path)], capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout))


def floor(body_bytes: int, count: int = 200) -> dict[str, float]:
    """The delivery floor in this run: a bare loopback POST + callback, and one FULL commit (bench/floor.py)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.floor", str(body_bytes), str(count)], capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout))


def floor_note(fl: dict[str, float]) -> str:
    return f"floor: bare round trip {fl['round_trip_median_ms']:.2f} + FULL commit {fl['commit_median_ms']:.2f} ms"


def limit_row(case: str, n: int, before: dict[str, Any], after: dict[str, Any], mb: float) -> tuple[Row, float]:
    """The yardstick row from a limit run just before and just after the daemon's; and its rate (the mean)."""
    rates = [lim["records"] / lim["seconds"] for lim in (before, after)]
    rate = statistics.mean(rates)
    note = f"the yardstick (before {rates[0]:,.0f}, after {rates[1]:,.0f} rec/s)"
    peak = max(before["peak_rss"], after["peak_rss"]) / MiB
    return Row(case, n, n / rate, peak, 1.0, "", None, note, mb), rate


class Stack(Cluster):
    """The shared harness (pimingestd/testing.py) as the bench runs it: the receiver in count mode
    (checks framing and order, parses no records), the daemon logging at info, 1,000-record chunks."""

    def __init__(
        self, root: Path, chunking: str = "records = 1000", receiver_mode: str = "count", **sections: Any
    ) -> None:
        key, _, value = chunking.partition(" = ")
        inbox = {
            f: f.removesuffix("_dir") if f != "dir" else "inbox"
            for f in ("dir", "processing_dir", "done_dir", "failed_dir")
        }
        sections.setdefault("daemon", {"max_concurrent": 2})
        sections.setdefault("delivery", {"ack_timeout": 30.0, "backoff": 0.05})
        super().__init__(
            root,
            receiver_mode=receiver_mode,
            env={"PYTHONUNBUFFERED": "1"},
            http={"allowed_roots": [str(root.parent)], "max_body_bytes": 1048576},
            chunking={key: int(value), "max_record_bytes": 16777216},
            inbox={**inbox, "settle_seconds": 0.2},
            logging={"level": "info"},
            **sections,
        )
        self.url = self.durl

    async def __aenter__(self) -> Stack:
        await self.start_receiver()
        await self.start_daemon()
        return self

    async def end_to_end(self, src: Path, records: int, case: str, base_rate: float, target: str, least: float) -> Row:
        """Ingest ``src`` and rate the whole ingestion against ``base_rate`` (records/s of a limit)."""
        st = await self.ingest_and_wait(src)
        total = self.phases(st["ingestion_id"])["total"]
        ratio = records / total / base_rate
        return Row(case, records, total, None, ratio, target, ratio >= least, "", src.stat().st_size / 1e6)

    async def ingest_and_wait(
        self, path: Path | str, timeout: float = 3600, re_ingestion: bool = True, **rules: Any
    ) -> dict[str, Any]:
        body = {"url": path} if isinstance(path, str) else {"path": str(path)}
        async with aiohttp.ClientSession() as s:
            async with s.post(self.url + "/api/ingest", json={**body, "re_ingestion": re_ingestion, **rules}) as r:
                answer = await r.json()
                if r.status >= 300:
                    raise RuntimeError(f"ingest refused: {r.status} {answer}")
                ing = answer["ingestion_id"]
            return await self.wait(s, ing, timeout)

    async def wait(self, s: aiohttp.ClientSession, ing: str, timeout: float = 3600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            async with s.get(f"{self.url}/api/ingestions/{ing}") as r:
                st = dict(await r.json())
            if st["status"] in ("completed", "failed"):
                if st["status"] != "completed":
                    raise RuntimeError(f"ingestion failed: {st['error']}")
                return st
            if time.monotonic() > deadline:
                raise RuntimeError("timed out")
            await asyncio.sleep(0.25)  # an operator's pace: phases are timed by the daemon itself

    def chunk_latencies(self, ing: str) -> list[float]:
        rows = self.read_state("SELECT acked_at - sent_at FROM chunks WHERE ingestion_id = ? ORDER BY n", (ing,))
        return [r[0] for r in rows]

    def close(self) -> None:
        """SIGTERM both, so the daemon drains and exits as in production; kill what does not."""
        for p in (self.daemon, self.receiver):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (self.daemon, self.receiver):
            if p is None:
                continue
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def _ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def json_cases(
    tmp: Path, size: int, rows: list[Row], label: str, chart: dict[str, Any] | None = None
) -> tuple[int, float]:
    """The raw limit and the daemon on one generated JSON file; returns (peak RSS of the tree MiB, limit records/s).

    The limit runs just before and just after the daemon, and its rate is the mean of the
    two: on a shared machine the speed drifts between runs, and this way the daemon is
    compared with the limit as it was around it."""
    src = tmp / f"products-{label}.json"
    n = data.write_json(src, size)
    before = limit("json", src)
    async with Stack(tmp / f"json-{label}") as stack:
        sampler = Sampler(stack.daemon.pid)
        t0 = time.monotonic()
        ing = (await stack.ingest_and_wait(src))["ingestion_id"]
        sampler.stop()
        ph = stack.phases(ing)
    after = limit("json", src)
    mb = src.stat().st_size / 1e6
    yardstick, lim_rate = limit_row(f"raw limit: ijson -> canonical -> sha256 ({label})", n, before, after, mb)
    rows.append(yardstick)
    peak = sampler.peak_between() / MiB
    e2e = n / ph["total"] / lim_rate
    rows.append(
        Row(
            f"JSON end to end: spool + delivery ({label})",
            n,
            ph["total"],
            peak,
            e2e,
            ">= 0.80 x limit",
            e2e >= 0.80,
            f"spool pass {n / ph['spool'] / lim_rate:.2f} x limit",
            mb,
        )
    )
    if label == "100 MB":  # with a window of 8 (protocol v2, strict); then streaming it (preflight = false)
        for preflight in (True, False):
            delivery = {"ack_timeout": 30.0, "backoff": 0.05, "preflight": preflight}
            async with Stack(
                tmp / f"json-{label}-window-{preflight}", pimcore={"window": 8}, delivery=delivery
            ) as stack:
                sampler = Sampler(stack.daemon.pid)
                ph8 = stack.phases((await stack.ingest_and_wait(src))["ingestion_id"])
                sampler.stop()
            e2e8 = n / ph8["total"] / lim_rate
            how = "spool + delivery" if preflight else "streamed, preflight = false"
            rows.append(
                Row(
                    f"JSON end to end, window 8, {how} ({label})",
                    n,
                    ph8["total"],
                    sampler.peak_between() / MiB,
                    e2e8,
                    ">= 0.80 x limit",
                    e2e8 >= 0.80,
                    f"spool pass {n / ph8['spool'] / lim_rate:.2f} x limit, delivery {ph8['delivery']:.2f} s"
                    if preflight
                    else "read and sent in one pass",
                    mb,
                )
            )
    dl = n / ph["delivery"] / lim_rate
    chunks = max(1, -(-n // 1000))
    fl = floor(src.stat().st_size // chunks)
    rows.append(
        Row(
            f"JSON delivery phase from the spool ({label})",
            n,
            ph["delivery"],
            None,
            dl,
            ">= 5 x limit",
            dl >= 5.0,
            f"{ph['delivery'] / chunks * 1000:.2f} ms per 1000-record chunk; {floor_note(fl)}",
            mb,
        )
    )
    if chart is not None:
        chart.update({"samples": sampler.samples, "t0": t0, "records": n, "phases": ph, "label": label})
    return int(peak), lim_rate


async def upload_case(tmp: Path, src: Path, rows: list[Row]) -> None:
    """A 1 GB upload (PUT /api/files/...) streamed from disk; the daemon's RSS sampled throughout."""
    async with Stack(tmp / "upload") as stack:
        sampler = Sampler(stack.daemon.pid)
        t0 = time.monotonic()
        with open(src, "rb") as body:
            async with aiohttp.ClientSession() as s:
                async with s.put(stack.url + "/api/files/upload.json", data=body) as r:
                    if r.status >= 300:
                        raise RuntimeError(f"upload refused: {r.status} {await r.text()}")
                    ing = (await r.json())["ingestion_id"]
                took = time.monotonic() - t0
                await stack.wait(s, ing)
        sampler.stop()
        peak = sampler.peak_between() / MiB
        rows.append(
            Row(
                "1 GB upload, then its ingestion: peak RSS of the tree",
                0,
                took,
                peak,
                None,
                "tree < 100 MiB",
                peak < 100,
                f"upload {src.stat().st_size / 1e6 / took:.0f} MB/s",
                src.stat().st_size / 1e6,
            )
        )


async def remote_case(tmp: Path, rows: list[Row]) -> None:
    """A 100 MB JSON Lines object over S3 (moto's server) and over SFTP (OpenSSH's sshd), against the same
    file read locally, in one daemon: each end to end (spool pass and delivery), with the daemon's peak RSS."""
    from tests.servers import start_s3, start_sshd

    src = tmp / "remote.jsonl"
    n = data.write_jsonl(src, 100 * MiB)
    mb = src.stat().st_size / 1e6
    s3 = start_s3(tmp / "moto.log")
    sshd = start_sshd(tmp / "sshd")
    try:
        s3.client().create_bucket(Bucket="bench")
        s3.client().upload_file(str(src), "bench", "remote.jsonl")
        (sshd.root / "remote.jsonl").symlink_to(src)
        remote = {
            "allowed_urls": ["s3://bench/", f"sftp://127.0.0.1:{sshd.port}/"],
            "s3": s3.config(),
            "sftp": sshd.config(),
        }
        # One daemon per backend, as a deployment reading from one of them runs (each backend's libraries
        # are imported when first used), each reading the local file first: the yardstick in the same run.
        for label, url in (("S3 (moto)", "s3://bench/remote.jsonl"), ("SFTP (sshd)", sshd.url("remote.jsonl"))):
            async with Stack(tmp / f"remote-{url[:4]}", remote=remote) as stack:
                sampler = Sampler(stack.daemon.pid, tree=False)
                whole = Sampler(stack.daemon.pid)
                t0 = time.monotonic()
                local = await stack.ingest_and_wait(src)
                local_s = stack.phases(local["ingestion_id"])["total"]
                local_peak = whole.peak_between() / MiB
                t1 = time.monotonic() - t0
                st = await stack.ingest_and_wait(url)
                took = stack.phases(st["ingestion_id"])["total"]
                sampler.stop()
                whole.stop()
                peak = whole.peak_between(t1) / MiB
                alone = sampler.peak_between(t1) / MiB
            rows.append(
                Row(f"  the same file, local (yardstick for {label})", n, local_s, local_peak, 1.0, "", None, "", mb)
            )
            same = "same file_id as local" if st["file_id"] == local["file_id"] else "file_id DIFFERS"
            rows.append(
                Row(
                    f"JSON Lines 100 MB over {label}",
                    n,
                    took,
                    peak,
                    local_s / took,
                    "tree peak < 80 MiB; ratio = local/remote",
                    peak < 80,
                    f"{same}; the daemon alone {alone:.0f} MiB, its children {peak - alone:.0f} MiB",
                    mb,
                )
            )
            if url.startswith("s3://"):
                _s3_clients(s3, src, rows)
    finally:
        s3.stop()
        sshd.stop()


def _s3_clients(s3: Any, src: Path, rows: list[Row]) -> None:
    """s3fs's own files, the daemon's read path and obstore on the same object, each in a fresh process
    (bench/s3clients.py)."""
    s3.client().put_bucket_versioning(Bucket="bench", VersioningConfiguration={"Status": "Enabled"})
    s3.client().upload_file(str(src), "bench", "versioned.jsonl")
    cfg = s3.config()
    for client in ("s3fs-import", "daemon-import", "obstore-import", "s3fs", "daemon", "obstore", "obstore-ranged"):
        out = subprocess.run(
            [sys.executable, "-m", "bench.s3clients", cfg["endpoint_url"], "bench", "versioned.jsonl", cfg["key"],
             cfg["secret"], str(src), client],
            capture_output=True, text=True, check=True, timeout=600,
        )  # fmt: skip
        f = json.loads(out.stdout)
        if "missing" in f:
            rows.append(
                Row(f"  S3 client alone: {client}", 0, 0, None, None, "", None, f"not installed: {f['missing']}")
            )
            continue
        reads = not client.endswith("-import")
        rows.append(
            Row(
                f"  S3 client alone: {client}" + (" (whole, then resume at half)" if reads else " (import + client)"),
                0,
                f["seconds"] if reads else 0,
                f["peak_rss_mib"],
                None,
                "",
                None,
                f"{f['mb_per_s']} MB/s; digests {'match' if f['whole_ok'] and f['resume_ok'] else 'DIFFER'}"
                if reads
                else f"{f['peak_rss_mib'] - f['rss_before_mib']:+.1f} MiB over a bare interpreter",
                src.stat().st_size * 1.5 / 1e6 if reads else 0,
            )
        )


async def bundle_case(tmp: Path, rows: list[Row]) -> None:
    """The Pimcore bundle's `table` applier on MariaDB (its test application: php -S and Messenger workers
    started as the systemd unit starts them, with --sleep=0.2): one 50,000-record file with 1 worker, then 4
    such files at once with 4 workers; beside the same file through the reference receiver (count mode)."""
    from tests.servers import start_mariadb
    from tests.test_pimcore_bundle import PhpApp, source

    n = 50_000
    mariadb = start_mariadb(tmp / "mariadb")
    try:
        async with Stack(tmp / "bundle-ref") as ref:
            src = ref.data / "p.jsonl"
            source(src, n)
            st = await ref.ingest_and_wait(src)
            took = ref.phases(st["ingestion_id"])["total"]
            chunks = st["total_chunks"]
            rows.append(
                Row(
                    "reference receiver (count mode), 1 file",
                    n,
                    took,
                    None,
                    1.0,
                    "",
                    None,
                    f"{chunks / took:.1f} chunks/s",
                    0,
                )
            )
        for workers in (1, 4):
            app = PhpApp(tmp / f"php-{workers}", mariadb.url(f"bench_{workers}"))
            stack = Stack(
                tmp / f"bundle-{workers}",
                daemon={"max_concurrent": 4},
                pimcore={
                    "chunk_url": app.url + "/pimingest/chunks",
                    "complete_url": app.url + "/pimingest/complete",
                    "secret": app.env["PIMINGEST_SECRET"],
                },
            )
            app.point_at(stack)
            try:
                await app.start(workers=0)
                for _ in range(workers):
                    app.start_worker("--sleep=0.2")
                await stack.start_daemon()
                files = []
                for i in range(workers):
                    f = stack.data / f"p{i}.jsonl"
                    source(f, n)
                    with open(f, "a") as out:
                        out.write(f'{{"file": {i}}}\n')  # different bytes per file
                    files.append(f)
                t0 = time.monotonic()
                done = await asyncio.gather(*(stack.ingest_and_wait(f) for f in files))
                took = time.monotonic() - t0
                chunks = sum(d["total_chunks"] for d in done)
                records = sum(d["total_records"] for d in done)
                many = "s" if workers > 1 else ""
                label = f"bundle table applier on MariaDB, {workers} worker{many}, {workers} file{many}"
                rows.append(Row(label, records, took, None, None, "", None, f"{chunks / took:.1f} chunks/s", 0))
            finally:
                stack.close()
                app.stop()
    finally:
        mariadb.stop()


async def delta_case(tmp: Path, full: bool, rows: list[Row]) -> None:
    """Delta on a 1,000,000-record catalogue: the first full file, then the next day's (1% changed, 0.5% new,
    0.5% removed, deletions = "send"), which must send exactly those 2% and take at most 0.3x the first's time.
    The key -> version table is on disk: the daemon's peak RSS is printed for both.

    Twice: against the reference receiver in store mode, which parses every record and applies it durably
    (what delta saves is PIM-Core's work, so this is the target), and in count mode, which applies nothing:
    there the ratio is the daemon's own costs alone, printed beside it."""
    n = 1_000_000
    day1, day2 = tmp / "catalogue-day1.jsonl", tmp / "catalogue-day2.jsonl"
    counts = data.write_catalogue(day1, day2, n)
    want = counts["changed"] + counts["new"] + counts["removed"]
    rules = {"key": "sku", "delta": True, "deletions": "send", "delta_scope": "catalogue"}
    for mode in ("store", "count"):
        async with Stack(tmp / f"delta-{mode}", chunking="records = 1000", receiver_mode=mode) as stack:
            measured = []
            for src in (day1, day2):
                sampler = Sampler(stack.daemon.pid)
                st = await stack.ingest_and_wait(src, re_ingestion=False, **rules)
                sampler.stop()
                measured.append((st, stack.phases(st["ingestion_id"]), sampler.peak_between() / MiB))
        (st1, ph1, peak1), (st2, ph2, peak2) = measured
        sent = st2["records_acked"]
        exact = sent == want and st2["records_deleted"] == counts["removed"]
        receiver = "receiver applies (store)" if mode == "store" else "receiver counts only"
        rows.append(
            Row(
                f"delta: first full catalogue, {receiver}",
                n,
                ph1["total"],
                peak1,
                None,
                "tree < 100 MiB",
                peak1 < 100 and st1["records_acked"] == n,
                f"spool pass {ph1['spool']:.1f} s, delivery {ph1['delivery']:.1f} s; 1,000,000 keys stored",
                day1.stat().st_size / 1e6,
            )
        )
        ratio = ph2["total"] / ph1["total"]
        target = "time <= 0.3 x first; sends exactly the 2%" if mode == "store" else "(the daemon's own costs)"
        rows.append(
            Row(
                f"delta: next day (1% changed, 0.5% new, 0.5% gone), {receiver}",
                st2["total_records"] or 0,
                ph2["total"],
                peak2,
                ratio,
                target,
                (ratio <= 0.3 if mode == "store" else True) and exact and peak2 < 100,
                f"sent {sent} of which {st2['records_deleted']} tombstones (want {want}),"
                f" {st2['records_unchanged']} unchanged; spool pass {ph2['spool']:.1f} s",
                day2.stat().st_size / 1e6,
            )
        )


async def window_case(tmp: Path, rows: list[Row]) -> None:
    """Protocol v2 into a modeled PIM-Core: the receiver (count mode) takes 2 ms of one of its K workers per
    record, and announces 2K. With a window of 2K, by_key and 100-record chunks, on a file whose keys are
    unique, the daemon must keep the K workers busy: records applied per second >= 0.9 x K x 500. Printed
    beside: the v1 figure (a window of one: at most one worker, 500/s), and a file where a tenth of the
    records repeat an earlier key. Then the memory bound: a window of 32 with 1,000-record chunks."""
    r_ms = 2.0
    per_worker = 1000 / r_ms

    async def measure(k: int, window: int, n: int, repeat: float, chunk: int = 100) -> tuple[float, float, int]:
        src = tmp / f"keyed-{n}-{repeat}.jsonl"
        if not src.exists():
            data.write_keyed(src, n, repeat)
        announced = max(2 * k, window)  # the receiver's limit never caps the window asked for
        args = ["--workers", str(k), "--window", str(announced), "--apply-ms-per-record", str(r_ms)]
        stack = Stack(tmp / f"window-{k}-{window}-{repeat}-{chunk}", chunking=f"records = {chunk}")
        stack.receiver_args = args
        async with stack:
            sampler = Sampler(stack.daemon.pid)
            st = await stack.ingest_and_wait(src, key="sku", window=window, order="by_key")
            sampler.stop()
            ph = stack.phases(st["ingestion_id"])
        return n / ph["delivery"], ph["delivery"], int(sampler.peak_between() / MiB)

    for k in (1, 4, 8):
        n = 5000 * k
        rate, seconds, _ = await measure(k, 2 * k, n, 0.0)
        want = 0.9 * k * per_worker
        rows.append(
            Row(
                f"window {2 * k}, by_key, into {k} worker(s) at {r_ms:g} ms/record",
                n,
                seconds,
                None,
                rate / (k * per_worker),
                f">= 0.90 x {k} x {per_worker:.0f}/s",
                rate >= want,
                f"{rate:,.0f} records applied/s (delivery phase)",
            )
        )
    rate, seconds, _ = await measure(8, 1, 4000, 0.0)
    rows.append(
        Row(
            f"protocol v1 (window 1) into 8 workers at {r_ms:g} ms/record",
            4000,
            seconds,
            None,
            rate / (8 * per_worker),
            f"(at most 1 x {per_worker:.0f}/s)",
            None,
            f"{rate:,.0f} records applied/s",
        )
    )
    rate, seconds, _ = await measure(8, 16, 40_000, 0.1)
    rows.append(
        Row(
            "window 16, by_key, 8 workers, 10% of records repeat a key",
            40_000,
            seconds,
            None,
            rate / (8 * per_worker),
            "(printed: chunks wait for a shared key)",
            None,
            f"{rate:,.0f} records applied/s",
        )
    )
    rate, seconds, peak = await measure(8, 32, 200_000, 0.0, chunk=1000)
    rows.append(
        Row(
            "window 32, 1,000-record chunks: peak RSS of the tree",
            200_000,
            seconds,
            peak,
            None,
            "tree < 100 MiB",
            peak < 100,
            f"{rate:,.0f} records applied/s",
        )
    )


async def mixed_cases(tmp: Path, full: bool, rows: list[Row]) -> None:
    """Real-world data against the raw limit on the same file, in the same run: product records with hard
    values (30-digit integers, 25-digit decimals, exponents; with 17-digit floats, escapes, astral and RTL
    text) in 0.1%, 1% and 10% of them, and a catalogue shaped like Magento 2, Shopify and Google Merchant
    exports (1% hard). Then the process tree's RSS with the daemon idle after all of them."""
    n = 300_000 if full else 100_000
    files = [
        (f"mixed, {share:.1%} hard records", lambda p, share=share: data.write_mixed_json(p, n, share))
        for share in (0.001, 0.01, 0.1)
    ]
    files.append(("catalogue: Magento 2, Shopify, Google Merchant", lambda p: data.write_export_json(p, n // 3)))
    async with Stack(tmp / "mixed") as stack:
        for label, write in files:
            src = tmp / f"{label.split(':')[0].replace(' ', '-').replace(',', '').replace('%', '')}.json"
            count = write(src)
            mb = src.stat().st_size / 1e6
            before = limit("json", src)
            sampler = Sampler(stack.daemon.pid)
            ph = stack.phases((await stack.ingest_and_wait(src))["ingestion_id"])
            sampler.stop()
            after = limit("json", src)
            yardstick, rate = limit_row(f"raw limit ({label})", count, before, after, mb)
            rows.append(yardstick)
            e2e, spool = count / ph["total"] / rate, count / ph["spool"] / rate
            target = label.startswith(("mixed, 1.0%", "catalogue"))
            peak = sampler.peak_between() / MiB
            rows.append(
                Row(
                    f"JSON end to end ({label})",
                    count,
                    ph["total"],
                    peak,
                    e2e,
                    ("spool >= 0.9, e2e >= 0.80 x limit; " if target else "") + "tree < 100 MiB",
                    (spool >= 0.9 and e2e >= 0.80 and peak < 100) if target else peak < 100,
                    f"spool pass {spool:.2f} x limit, delivery {ph['delivery']:.2f} s; {sampler.split()}",
                    mb,
                )
            )
        await asyncio.sleep(parse_workers.IDLE_SECONDS + 2.0)  # the parse worker stops once idle
        sampler = Sampler(stack.daemon.pid)
        await asyncio.sleep(3.0)
        sampler.stop()
        idle = sampler.peak_between() / MiB
        workers = len(psutil.Process(stack.daemon.pid).children(recursive=True))
        rows.append(
            Row(
                "idle after those files: peak RSS of the tree",
                0,
                0,
                idle,
                None,
                "tree < 80 MiB",
                idle < 80,
                f"daemon + {workers} child process(es)",
            )
        )


@dataclass
class SoakPlan:
    """The long soak's knobs (``--only soak``): its length, file mix, kills and faults, and the daemon's env."""

    minutes: float = 30.0
    formats: tuple[str, ...] = ("json", "jsonl", "csv", "xml", "jsonl.gz", "excel")
    kill_share: float = 0.0
    faults: bool = False
    warm_up: float = 180.0
    env: dict[str, str] = field(default_factory=dict)


SOAK_SLOPE = 0.05  # MiB a minute, least squares over the samples after the warm-up
SOAK_GROWTH = 2.0  # MiB from the end of the warm-up to the end


async def soak_case(tmp: Path, plan: SoakPlan, rows: list[Row]) -> None:
    """The long soak (tests/soak.py's long mode) as a benchmark: many small files of the mix, one after
    another, by the API and through the inbox, with kills and receiver faults in the first ``kill_share`` of
    the run if asked; after a warm-up of the last daemon, the RSS slope (least squares) and growth of the whole
    process tree (the daemon and the parse worker), its fds and threads,
    the state database and the spool. The samples go to bench/out/soak.csv, and to soak-SEED.csv."""
    import random

    from tests.soak import long_soak

    seed = random.randrange(1 << 30)
    (tmp / "soak").mkdir()
    f = await long_soak(
        plan.minutes,
        seed,
        tmp / "soak",
        plan.kill_share,
        formats=plan.formats,
        faults=plan.faults,
        warm_up=plan.warm_up,
        env=plan.env,
        bounds=False,
    )
    OUT.mkdir(exist_ok=True)
    samples = "seconds,tree_rss_bytes\n" + "".join(f"{t},{r}\n" for t, r in f["samples"])
    (OUT / "soak.csv").write_text(samples)  # the last run's
    (OUT / f"soak-{seed}.csv").write_text(samples)  # each run's, when several run at once
    growth = f["rss_mib"][1] - f["rss_mib"][0]
    what = (
        f"{plan.minutes:g} min, {'/'.join(plan.formats)}"
        + (f", kills in the first {plan.kill_share:.0%}" if plan.kill_share else ", no kills")
        + (", faults" if plan.faults else "")
        + "".join(f", {k}={v}" for k, v in plan.env.items())
    )
    rows.append(
        Row(
            f"soak ({what}): tree RSS slope, MiB/min",
            f["files"],
            f["measured_min"] * 60,
            f["rss_peak_mib"],
            f["slope_mib_per_min"],
            f"slope <= {SOAK_SLOPE} and growth <= {SOAK_GROWTH:g} MiB",
            f["slope_mib_per_min"] <= SOAK_SLOPE and growth <= SOAK_GROWTH,
            f"seed {seed}, {f['kills']} kills; after {plan.warm_up:g} s warm-up: RSS {f['rss_mib'][0]}->"
            f"{f['rss_mib'][1]} MiB ({growth:+.1f}), fds {f['fds'][0]}->{f['fds'][1]}, threads"
            f" {f['threads'][0]}->{f['threads'][1]}, database {f['db_kib'][0]}->{f['db_kib'][1]} KiB,"
            f" spool {f['spool_kib'][0]}->{f['spool_kib'][1]} KiB",
        )
    )


CASES = ("json", "mixed", "jsonl", "excel", "bytes", "overhead", "many", "remote", "bundle", "delta", "window", "soak")
DEFAULT = tuple(c for c in CASES if c != "soak")  # the soak runs for half an hour: only when asked for


async def run(full: bool, only: tuple[str, ...] = DEFAULT, soak: SoakPlan | None = None) -> list[Row]:
    rows: list[Row] = []
    chart: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pimingestd-bench-") as t:
        tmp = Path(t)
        quick_size = 100 * MiB
        main_json = tmp / "products-100 MB.json"
        lim_rate = 0.0
        if "json" in only:
            # JSON, end to end and delivery alone, against the raw limit on the same file.
            peak_small, _ = await json_cases(tmp, 10 * MiB, rows, "10 MB")
            peak_main, lim_rate = await json_cases(tmp, quick_size, rows, "100 MB", chart)
        if "json" in only and full:
            peak_big, _ = await json_cases(tmp, 1 << 30, rows, "1 GB", chart)
            await upload_case(tmp, tmp / "products-1 GB.json", rows)
            rows.append(
                Row(
                    "JSON 1 GB: peak RSS of the tree",
                    0,
                    0,
                    peak_big,
                    None,
                    "tree < 100 MiB, <= 10 MB peak + 15",
                    peak_big < 100 and peak_big <= peak_small + 15,
                )
            )
        elif "json" in only:
            rows.append(
                Row(
                    "JSON 100 MB: peak RSS of the tree",
                    0,
                    0,
                    peak_main,
                    None,
                    "tree < 100 MiB, <= 10 MB peak + 15",
                    peak_main < 100 and peak_main <= peak_small + 15,
                    "quick run; --full measures 1 GB",
                )
            )
        if not main_json.exists():
            data.write_json(main_json, quick_size)
        if not lim_rate and ("jsonl" in only):
            lim = limit("json", main_json)
            lim_rate = lim["records"] / lim["seconds"]
        if "mixed" in only:
            await mixed_cases(tmp, full, rows)
        if "jsonl" in only:
            await jsonl_cases(tmp, quick_size, lim_rate, rows)
        if "excel" in only:
            await excel_case(tmp, full, rows)
        if "bytes" in only:
            await bytes_case(tmp, main_json, rows)
        if "overhead" in only:
            await overhead_case(tmp, rows)
        if "many" in only:
            await many_case(tmp, full, rows)
        if "remote" in only:
            await remote_case(tmp, rows)
        if "bundle" in only:
            await bundle_case(tmp, rows)
        if "delta" in only:
            await delta_case(tmp, full, rows)
        if "window" in only:
            await window_case(tmp, rows)
        if "soak" in only:
            await soak_case(tmp, soak or SoakPlan(), rows)
    _chart(chart)
    return rows


async def jsonl_cases(tmp: Path, quick_size: int, lim_rate: float, rows: list[Row]) -> None:
    """JSON Lines against the ijson limit of the 100 MB JSON file: the same record generator.
    Two readings of the target: the fast path on its own (the daemon's reader and chunker
    in a subprocess, no daemon), and end to end through the daemon (spool pass + delivery)."""
    src = tmp / "products.jsonl"
    n = data.write_jsonl(src, quick_size // 2)
    ints = tmp / "integers.jsonl"
    n_ints = data.write_jsonl(ints, quick_size // 2, integers=True)  # cents and grams
    for path, what in ((src, "decimal prices"), (ints, "integers only")):
        got = limit("daemon", path)
        ratio = got["records"] / got["seconds"] / lim_rate
        rows.append(
            Row(
                f"JSON Lines fast path, no daemon ({what})",
                got["records"],
                got["seconds"],
                got["peak_rss"] / MiB,
                ratio,
                ">= 1.5 x limit",
                ratio >= 1.5,
                "reader + chunker + sha256 in a subprocess",
                path.stat().st_size / 1e6,
            )
        )
    async with Stack(tmp / "jsonl") as stack:
        rows.append(
            await stack.end_to_end(src, n, "JSON Lines end to end (decimal prices)", lim_rate, ">= 1.5 x limit", 1.5)
        )
        rows.append(
            await stack.end_to_end(
                ints, n_ints, "JSON Lines end to end (integers only)", lim_rate, ">= 1.5 x limit", 1.5
            )
        )


async def excel_case(tmp: Path, full: bool, rows: list[Row]) -> None:
    """Excel against bare openpyxl iteration of the same sheet."""
    xlsx = tmp / "products.xlsx"
    n = data.write_xlsx(xlsx, 60_000 if not full else 300_000)
    before = limit("excel", xlsx)
    async with Stack(tmp / "excel") as stack:
        st = await stack.ingest_and_wait(xlsx)
        total = stack.phases(st["ingestion_id"])["total"]
    after = limit("excel", xlsx)
    mb = xlsx.stat().st_size / 1e6
    yardstick, lim_rate = limit_row("bare openpyxl read-only iteration", n, before, after, mb)
    rows.append(yardstick)
    ratio = n / total / lim_rate
    rows.append(Row("Excel end to end", n, total, None, ratio, ">= 0.90 x openpyxl", ratio >= 0.90, "", mb))


async def bytes_case(tmp: Path, src: Path, rows: list[Row]) -> None:
    """8 MiB chunks: memory."""
    async with Stack(tmp / "bytes", chunking=f"bytes = {8 * MiB}") as stack:
        sampler = Sampler(stack.daemon.pid)
        st = await stack.ingest_and_wait(src)
        sampler.stop()
        peak = sampler.peak_between() / MiB
        rows.append(
            Row("JSON 100 MB in 8 MiB chunks: peak RSS", st["records_acked"], 0, peak, None, "< 120 MiB", peak < 120)
        )


async def overhead_case(tmp: Path, rows: list[Row]) -> None:
    """Per-chunk overhead: one-record chunks, so the time is the send, the callback and the commit."""
    async with Stack(tmp / "overhead", chunking="records = 1") as stack:
        src = tmp / "small.json"
        n = data.write_json(src, 2000 * 420)
        st = await stack.ingest_and_wait(src)
        lat = sorted(stack.chunk_latencies(st["ingestion_id"]))
        med, p99 = statistics.median(lat) * 1000, lat[int(len(lat) * 0.99)] * 1000
        ph = stack.phases(st["ingestion_id"])
        fl = floor(src.stat().st_size // n, count=500)
        rows.append(
            Row(
                "per-chunk overhead: POST + ACK callback + commit",
                n,
                ph["delivery"],
                None,
                None,
                "median < 1.5 ms",
                med < 1.5,
                f"median {med:.2f} ms, p99 {p99:.2f} ms; {floor_note(fl)}",
            )
        )


async def many_case(tmp: Path, full: bool, rows: list[Row]) -> None:
    """Many small files dropped into the inbox at once."""
    async with Stack(tmp / "many", chunking="records = 1000") as stack:
        count = 1000 if full else 300
        staging = tmp / "many" / "staging"
        staging.mkdir()
        for i in range(count):
            (staging / f"f{i:04d}.json").write_text(json.dumps([{"sku": f"S{i}-{j}", "n": j} for j in range(20)]))
        t0 = time.monotonic()
        for i in range(count):
            os.rename(staging / f"f{i:04d}.json", tmp / "many" / "inbox" / f"f{i:04d}.json")
        async with aiohttp.ClientSession() as s:
            while True:
                async with s.get(stack.url + "/api/ingestions?limit=1000&status=completed") as r:
                    done = len((await r.json())["ingestions"])
                if done >= count or time.monotonic() - t0 > 600:
                    break
                await asyncio.sleep(0.1)
            async with s.get(stack.url + "/api/ingestions?limit=1000") as r:
                all_rows = (await r.json())["ingestions"]
        took = time.monotonic() - t0
        waits = [_ts(x["updated_at"]) - _ts(x["created_at"]) for x in all_rows]
        rows.append(
            Row(
                f"{count} small files dropped at once",
                count,
                took,
                None,
                None,
                "all complete, none starved",
                done >= count,
                f"{count / took:.1f} files/s, longest {max(waits):.1f} s",
            )
        )


def _chart(chart: dict[str, Any]) -> None:
    if not chart:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    ts = [t for t, _ in chart["samples"]]
    rss = [r / MiB for _, r in chart["samples"]]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(ts, rss, color="tab:blue")
    ax.set_xlabel("seconds")
    ax.set_ylabel("daemon RSS (MiB)", color="tab:blue")
    ph = chart["phases"]
    ax.axvspan(
        0, ph["spool"], color="tab:orange", alpha=0.15, label=f"spool pass {chart['records'] / ph['spool']:,.0f} rec/s"
    )
    ax.axvspan(
        ph["spool"],
        ph["total"],
        color="tab:green",
        alpha=0.15,
        label=f"delivery {chart['records'] / max(ph['delivery'], 1e-9):,.0f} rec/s",
    )
    ax.set_ylim(0, max(rss) * 1.3)
    ax.legend(loc="upper right")
    ax.set_title(f"pimingestd: {chart['label']} JSON, {chart['records']:,} records")
    fig.tight_layout()
    fig.savefig(OUT / "rss.png", dpi=100)


def table(rows: list[Row]) -> str:
    head = (
        f"{'case':<52} {'records':>9} {'seconds':>8} {'records/s':>10} {'MB/s':>7} {'ratio':>6} {'peak RSS':>9}"
        f"  {'target':<32} result"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        mbs = f"{r.mb / r.seconds:.1f}" if r.mb and r.seconds else ""
        lines.append(
            f"{r.case:<52} {r.records or '':>9} {f'{r.seconds:.2f}' if r.seconds else '':>8} "
            f"{f'{r.rate:,.0f}' if r.seconds and r.records else '':>10} {mbs:>7} "
            f"{f'{r.ratio:.2f}' if r.ratio is not None else '':>6} "
            f"{f'{r.peak_rss_mib:.0f} MiB' if r.peak_rss_mib else '':>9}  {r.target:<32} "
            f"{'' if r.ok is None else ('PASS' if r.ok else 'MISS')} {r.note}".rstrip()
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="include the 1 GB file")
    p.add_argument("--only", action="append", choices=CASES, help="run only these cases (repeatable)")
    soak = p.add_argument_group("the long soak (--only soak)")
    soak.add_argument("--minutes", type=float, default=SoakPlan.minutes, help="its length")
    soak.add_argument("--formats", default=",".join(SoakPlan.formats), help="the file mix, comma-separated")
    soak.add_argument("--kills", type=float, default=0.0, help="share of the run with daemon SIGKILLs (0: none)")
    soak.add_argument("--faults", action="store_true", help="receiver faults (500s, lost and doubled ACKs)")
    soak.add_argument("--warm-up", type=float, default=SoakPlan.warm_up, help="seconds of the last daemon first")
    soak.add_argument("--env", action="append", default=[], help="KEY=VALUE for the daemon (repeatable)")
    args = p.parse_args()
    OUT.mkdir(exist_ok=True)
    plan = SoakPlan(
        args.minutes,
        tuple(args.formats.split(",")),
        args.kills,
        args.faults,
        args.warm_up,
        dict(e.split("=", 1) for e in args.env),
    )
    rows = asyncio.run(run(args.full, tuple(args.only or DEFAULT), plan))
    text = table(rows)
    print(text)
    (OUT / "results.json").write_text(json.dumps([asdict(r) | {"records_per_second": r.rate} for r in rows], indent=2))
    (OUT / "results.txt").write_text(text + "\n")
    return 0
