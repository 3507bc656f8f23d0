"""Soak: loop random daemon kills over a large generated file; print what happened.

    python -m tests.soak --minutes 10 --seed 7
    python -m tests.soak --long --minutes 30      # the long mode: many small files, resources sampled

Each round ingests a fresh file through a real daemon and a real reference
receiver, SIGKILLing the daemon at random instants, then checks the same
invariants as the chaos tests. Prints, at the end:
``N kills, M records, 0 lost, 0 applied twice, K re-sends``.

The long mode mixes many small files of every format (JSON, JSON Lines, CSV,
XML, Excel), dropped into the inbox or triggered through the API, with receiver
faults (500s, lost and duplicated ACKs) and daemon SIGKILLs in its first 40%,
retention on. It samples the RSS, open file descriptors and threads of the
daemon's whole process tree (the daemon, its parse worker, the worker's
forkserver and multiprocessing's resource tracker: what systemd's MemoryMax
counts), the state database's size and the spool folder, and prints each as a
start→end figure, with the RSS slope after the warm-up (least squares). Its
knobs (the file mix, gzip'd JSON Lines included, kills, faults, the inbox's
share, the warm-up, the daemon's environment) serve the benchmark
``python -m bench --only soak`` (bench/run.py) and bisections. Targets, checked after a 30 s warm-up of the last daemon
(which then runs the remaining 60% unkilled): RSS grows by at most 8 MiB, fds by at
most 8, threads by at most 4; the database grows by less than 2 KiB per
completed ingestion (their summaries; chunk rows are pruned).

Retention prunes a completed ingestion's chunk rows a second after it ends, and
a restarted daemon's first pass comes at once: ``Cluster.verify`` then checks
the receiver against the summary the daemon keeps, and the closing line counts
those. A broken invariant prints the ingestion's history before it is raised.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gzip
import json
import os
import random
import stat
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pimingestd.testing import Cluster

from .helpers import product, write_json


async def _verified(c: Cluster, ing: str, expected: list[Any], what: str) -> dict[str, int]:
    """``c.verify``; a broken invariant is printed at once, with the ingestion's history, then raised."""
    try:
        return await c.verify(ing, expected)
    except AssertionError as exc:
        print(f"CHECK FAILED: {what}, ingestion {ing}: {exc}", flush=True)
        raise


async def soak(minutes: float, seed: int, records: int) -> int:
    rng = random.Random(seed)
    deadline = time.monotonic() + minutes * 60
    kills = total = lost = doubled = resends = rounds = 0
    with tempfile.TemporaryDirectory(prefix="pimingestd-soak-") as tmp:
        async with Cluster(
            Path(tmp),
            chunking={"records": 100},
            daemon={"drain_seconds": 0.5},
            delivery={"ack_timeout": 1.0, "backoff": 0.05, "max_attempts": 100},
        ) as c:
            await c.faults([{"action": "delay_ack", "seconds": 0.002, "times": 10**9}])
            while time.monotonic() < deadline:
                rounds += 1
                expected = [{**product(i), "round": rounds} for i in range(records)]
                ing = await c.ingest(write_json(c.data / f"round-{rounds}.json", expected))
                while (await c.status(ing))["status"] not in ("completed", "failed") and time.monotonic() < deadline:
                    await asyncio.sleep(rng.uniform(0.2, 2.0))
                    await c.kill_daemon()
                    await c.start_daemon()
                await c.settle(ing, timeout=600)
                counts = await _verified(c, ing, expected, f"round {rounds}")
                _, applied = await c.call("GET", f"{c.rurl}/ingestions/{ing}/records")
                seen = Counter(a["index"] for a in applied)
                lost += sum(1 for i in range(records) if seen[i] == 0)
                doubled += sum(n - 1 for n in seen.values() if n > 1)
                total += counts["records"]
                resends += counts["resends"]
                print(
                    f"round {rounds}: {counts['records']} records, {c.kills - kills} kills, {counts['resends']} re-sends",
                    flush=True,
                )
                kills = c.kills
    print(f"{kills} kills, {total} records, {lost} lost, {doubled} applied twice, {resends} re-sends (seed {seed})")
    return 0 if lost == doubled == 0 else 1


WARM_UP = 30.0
RSS_GROWTH = 8 << 20
FD_GROWTH = 8
THREAD_GROWTH = 4
DB_BYTES_PER_INGESTION = 2048


def _write(folder: Path, name: str, fmt: str, records: list[dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
    """A file of ``records`` in ``fmt``, and the options it needs."""
    path = folder / f"{name}.{ {'excel': 'xlsx'}.get(fmt, fmt) }"
    if fmt == "jsonl.gz":
        path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode(), 1))
    elif fmt == "json":
        path.write_text(json.dumps(records))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif fmt == "csv":
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(records[0]))
            w.writeheader()
            w.writerows(records)
    elif fmt == "xml":
        items = "".join("<p>" + "".join(f"<{k}>{v}</{k}>" for k, v in r.items()) + "</p>" for r in records)
        path.write_text(f"<feed>{items}</feed>")
        return path, {"record_path": "feed/p"}
    else:
        from openpyxl import Workbook

        wb = Workbook()
        ws = wb.active
        assert ws is not None
        ws.append(list(records[0]))
        for r in records:
            ws.append(list(r.values()))
        wb.save(path)
    return path, {}


def _flat(i: int, rnd: int, fmt: str) -> dict[str, Any]:
    """A record that every format carries alike (CSV and XML give text; Excel gives numbers back as numbers)."""
    if fmt in ("csv", "xml"):
        return {"sku": f"S{rnd}-{i}", "name": f"Product {i}", "round": str(rnd)}
    return {"sku": f"S{rnd}-{i}", "name": f"Product {i}", "round": rnd}


FORMATS = ("json", "jsonl", "csv", "xml", "excel", "jsonl.gz")


def tree(pid: int) -> tuple[int, int, int, int, int]:
    """RSS, fds and threads summed over a process and its children (the parse worker): what systemd's
    MemoryMax counts; how many processes; and the RSS of the process alone."""
    import psutil

    rss = fds = threads = n = own = 0
    top = psutil.Process(pid)
    for proc in [top, *top.children(recursive=True)]:
        try:
            with proc.oneshot():
                own = own or proc.memory_info().rss
                rss, fds, threads, n = (
                    rss + proc.memory_info().rss,
                    fds + proc.num_fds(),
                    threads + proc.num_threads(),
                    n + 1,
                )
        except psutil.Error:  # it ended between the listing and the look
            continue
    return rss, fds, threads, n, own


def _size(path: Path) -> int:
    """A file's size; 0 when it went between the listing and the look (a spool file deleted as its ingestion
    ended: a 10-minute soak met one), or when it is not a file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def slope(points: list[tuple[float, float]]) -> float:
    """Least squares: the slope of y over x (0 for fewer than two distinct x)."""
    if len({x for x, _ in points}) < 2:
        return 0.0
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


async def long_soak(
    minutes: float,
    seed: int,
    root: Path | None = None,
    kill_share: float = 0.4,
    *,
    formats: tuple[str, ...] | None = None,
    faults: bool = True,
    inbox_share: float = 0.5,
    warm_up: float = WARM_UP,
    env: dict[str, str] | None = None,
    bounds: bool = True,
) -> dict[str, Any]:
    """The long mode; returns its figures (and prints them). Raises AssertionError on a broken invariant.

    ``formats``: the file mix, each equally often (default: the CI mix, Excel one round in ten, no gzip);
    ``kill_share``: the share of the run with daemon SIGKILLs (0: none); ``faults``: receiver faults;
    ``inbox_share``: files dropped into the inbox rather than triggered by the API; ``warm_up``: seconds of
    the last daemon before the baseline; ``env``: added to the daemon's environment (a bisection's knob);
    ``bounds``: check the CI bounds. Memory, fds and threads are the whole process tree's (``tree``)."""

    rng = random.Random(seed)
    start = time.monotonic()
    deadline = start + minutes * 60
    kill_until = start + minutes * 60 * kill_share
    with contextlib.ExitStack() as stack:
        tmp = root or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pimingestd-soak-")))
        inbox = {k: str(tmp / k) for k in ("dir", "processing_dir", "done_dir", "failed_dir")}
        c = Cluster(
            tmp / "cluster",
            chunking={"records": 20},
            daemon={"drain_seconds": 0.5, "max_concurrent": 3},
            delivery={"ack_timeout": 1.0, "backoff": 0.05, "max_attempts": 1000},
            inbox={**inbox, "watch": "auto", "settle_seconds": 0.2},
            retention={"chunk_rows_days": 1 / 86400, "files_days": 1 / 86400, "interval_minutes": 0.05},
            logging={"level": "info"},
            env=env,
        )
        stack.callback(c.close)
        await c.start_receiver()
        await c.start_daemon()
        samples: list[tuple[float, int, int, int, int, int, int]] = []  # t, pid, and the rest: tree's
        alone: list[int] = []  # the daemon's own RSS, per sample
        expected: dict[str, list[dict[str, Any]]] = {}  # file name -> records
        done: set[str] = set()
        rnd = kills = pruned = 0

        def sample() -> None:
            assert c.daemon is not None
            rss, fds, threads, _, own = tree(c.daemon.pid)
            alone.append(own)
            db = sum(map(_size, c.state_db.parent.glob(c.state_db.name + "*")))
            spool = sum(map(_size, (c.state_db.parent / "spool").glob("*")))
            samples.append((time.monotonic() - start, c.daemon.pid, rss, fds, threads, db, spool))

        async def settle_all(every: bool = False) -> None:
            """Verify each file whose ingestion completed since the last call. The newest 1000 ingestions are
            looked at (a file completes within seconds, while it is among them); ``every``: all of them."""
            nonlocal pruned
            for ing in await c.ingestions(every):
                name = ing["file_name"]
                if name in expected and name not in done and ing["status"] == "completed":
                    # Retention prunes its chunk rows a second after it completed (sooner after a restart, whose
                    # first pass comes at once): verify then checks it against the summary the daemon kept.
                    counts = await _verified(c, ing["ingestion_id"], expected[name], name)
                    pruned += counts["pruned"]
                    done.add(name)

        next_fault = time.monotonic()
        mix = formats
        formats = formats or ("json", "jsonl", "csv", "xml", "excel")
        first_use: dict[int, dict[str, float]] = {}  # daemon pid -> format -> when it was first given one
        while time.monotonic() < deadline:
            rnd += 1
            if mix:
                fmt = rng.choice(mix)
            else:
                fmt = rng.choice(["json", "jsonl", "csv", "xml", "json", "jsonl", "excel" if rnd % 10 == 0 else "csv"])
            seen = first_use.setdefault(c.daemon.pid if c.daemon else 0, {})
            if time.monotonic() >= kill_until and len(seen) < len(formats):
                fmt = next(f for f in formats if f not in seen)  # the last daemon meets every format early
            records = [_flat(i, rnd, fmt) for i in range(rng.randint(1, 120))]
            name = f"r{rnd}"
            path, options = _write(c.data, name, fmt, records)
            expected[path.name] = records
            seen.setdefault(fmt, time.monotonic() - start)
            if rng.random() < inbox_share and not options:
                os.rename(path, Path(inbox["dir"]) / path.name)  # a drop into the inbox, whole at once
            else:
                code, body = await c.call("POST", c.durl + "/api/ingest", json={"path": str(path), **options})
                assert code in (200, 202), body
            if faults and time.monotonic() >= next_fault:
                action = rng.choice(["http_500", "drop_ack", "duplicate_ack", "delay_ack"])
                await c.faults([{"action": action, "times": rng.randint(1, 3), "seconds": 0.3}])
                next_fault = time.monotonic() + rng.uniform(1, 4)
            if time.monotonic() < kill_until and rng.random() < 0.05:
                await c.kill_daemon()
                await c.start_daemon()
                kills += 1
            sample()
            await settle_all()
            await asyncio.sleep(rng.uniform(0.05, 0.3))
        await c.faults([])
        for i in range(600):  # everything completes (every 2 s, an older file too: past the newest 1000)
            await settle_all(every=i % 20 == 19)
            if len(done) == len(expected):
                break
            await asyncio.sleep(0.1)
        pending = sorted(set(expected) - done)
        if pending:
            for ing in [i for i in await c.ingestions(every=True) if i["file_name"] in pending][:3]:
                print(await c.history(ing["ingestion_id"]), flush=True)
        assert not pending, f"{len(pending)} files not completed exactly once: {pending[:5]}"
        await asyncio.sleep(4)  # one more retention pass over the last ingestions
        sample()
        last_pid = samples[-1][1]
        mine = [s for s in samples if s[1] == last_pid]
        # Warm-up: 30 s of the last daemon, and 5 s past the first file of each format it was given (a reader's
        # first use imports it: openpyxl's first workbook alone is a step of some 15 MiB), so each one-time
        # cost (those, the first retention pass, the first vacuum) is behind the baseline.
        met = first_use.get(last_pid, {})
        assert len(met) == len(formats), f"the last daemon was not given every format: {sorted(met)}"
        ready = max(mine[0][0] + warm_up, max(met.values()) + 5.0)
        warm = next((s for s in mine if s[0] >= ready), mine[-1])
        end = samples[-1]
        after = [s for s in mine if s[0] >= warm[0]]
        per_minute = slope([(s[0] / 60, s[2] / 2**20) for s in after])
        if os.environ.get("PIMINGESTD_SOAK_TRACE"):
            for t, _pid, rss, fds, threads, db, _spool in mine[:: max(len(mine) // 20, 1)]:
                print(f"  t={t:6.1f}s rss={rss / 2**20:6.1f} MiB fds={fds} threads={threads} db={db >> 10} KiB")
        completed_since = sum(1 for _ in done)  # every file, one ingestion each
        figures = {
            "seed": seed,
            "minutes": minutes,
            "files": len(expected),
            "kills": kills,
            "pruned_first": pruned,  # completed ingestions verified against their summary (chunk rows pruned)
            "rss_mib": (round(warm[2] / 2**20, 1), round(end[2] / 2**20, 1)),
            "rss_peak_mib": round(max(s[2] for s in after) / 2**20, 1),
            "slope_mib_per_min": round(per_minute, 3),
            "measured_min": round((end[0] - warm[0]) / 60, 1),
            "fds": (warm[3], end[3]),
            "threads": (warm[4], end[4]),
            "db_kib": (round(warm[5] / 1024), round(end[5] / 1024)),
            "spool_kib": (round(warm[6] / 1024), round(end[6] / 1024)),
            "daemon_rss_mib": (round(alone[samples.index(warm)] / 2**20, 1), round(alone[-1] / 2**20, 1)),
            "samples": [(round(s[0], 1), s[2]) for s in after],  # seconds, the tree's RSS
        }
        print(
            f"soak (long, seed {seed}): {len(expected)} files ({', '.join(formats)}), {kills} daemon kills, all exactly once"
            f" ({pruned} checked against their summary: retention had pruned their chunk rows);"
            f" after warm-up, over {figures['measured_min']} min, the process tree's RSS"
            f" {figures['rss_mib'][0]}->{figures['rss_mib'][1]} MiB (slope {per_minute:+.3f} MiB/min;"
            f" the daemon alone {figures['daemon_rss_mib']}), fds {warm[3]}->{end[3]},"
            f" threads {warm[4]}->{end[4]}, database {figures['db_kib'][0]}->{figures['db_kib'][1]} KiB,"
            f" spool {figures['spool_kib'][0]}->{figures['spool_kib'][1]} KiB",
            flush=True,
        )
        if not bounds:
            return figures
        assert end[2] - warm[2] <= RSS_GROWTH, figures
        assert end[3] - warm[3] <= FD_GROWTH, figures
        assert end[4] - warm[4] <= THREAD_GROWTH, figures
        assert end[5] - warm[5] <= DB_BYTES_PER_INGESTION * max(completed_since, 1), figures
        return figures


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--records", type=int, default=200_000, help="records per generated file")
    p.add_argument("--long", action="store_true", help="the long mode: many small files, resources sampled")
    p.add_argument("--formats", help=f"long mode: comma-separated file mix, of {','.join(FORMATS)}")
    p.add_argument("--kill-share", type=float, default=0.4, help="long mode: share of the run with kills")
    p.add_argument("--no-faults", action="store_true", help="long mode: no receiver faults")
    p.add_argument("--inbox-share", type=float, default=0.5, help="long mode: share of files dropped in the inbox")
    p.add_argument("--warm-up", type=float, default=WARM_UP, help="long mode: seconds before the baseline")
    p.add_argument("--env", action="append", default=[], help="long mode: KEY=VALUE for the daemon (repeatable)")
    args = p.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    if args.long:
        asyncio.run(
            long_soak(
                args.minutes,
                seed,
                kill_share=args.kill_share,
                formats=tuple(args.formats.split(",")) if args.formats else None,
                faults=not args.no_faults,
                inbox_share=args.inbox_share,
                warm_up=args.warm_up,
                env=dict(e.split("=", 1) for e in args.env),
                bounds=False,
            )
        )
        return 0
    return asyncio.run(soak(args.minutes, seed, args.records))


if __name__ == "__main__":
    raise SystemExit(main())
