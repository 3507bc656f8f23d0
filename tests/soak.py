"""Soak: loop random daemon kills over a large generated file; print what happened.

    python -m tests.soak --minutes 10 --seed 7

Each round ingests a fresh file through a real daemon and a real reference
receiver, SIGKILLing the daemon at random instants, then checks the same
invariants as the chaos tests. Prints, at the end:
``N kills, M records, 0 lost, 0 applied twice, K re-sends``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

from pimingestd.testing import Cluster

from .helpers import product, write_json


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
                counts = await c.verify(ing, expected)
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


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--records", type=int, default=200_000, help="records per generated file")
    args = p.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    return asyncio.run(soak(args.minutes, seed, args.records))


if __name__ == "__main__":
    raise SystemExit(main())
