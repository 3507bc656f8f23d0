"""Issue 15's proofs under chaos: record rejects and delta against a chaotic PIM-Core (seeded faults,
receiver restarts, daemon SIGKILLs), two files of one scope in a row. After each run every record that was
to be sent is applied exactly once or is in the reject file (never both, never neither), a record rejected
in run k is sent in run k+1, and the scope's stored versions equal what the receiver holds."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Any

import pytest

from pimingestd.protocol import canonical
from pimingestd.testing import Cluster

from .helpers import product, report
from .test_chaos import random_faults

RULES = {"key": "sku", "delta": True, "deletions": "send", "delta_scope": "catalogue", "max_deletions": 50}


def _jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


async def _storm(c: Cluster, rng: random.Random) -> None:
    for _ in range(rng.randint(2, 4)):
        await asyncio.sleep(rng.uniform(0.1, 0.6))
        event = rng.choice(["kill", "kill", "receiver"])
        if event == "kill":
            await c.kill_daemon()
            await c.start_daemon()
        else:
            await c.stop_receiver()
            await asyncio.sleep(rng.uniform(0.1, 0.8))
            await c.start_receiver()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("run", range(2))
async def test_rejects_and_delta_through_chaos(tmp_path: Path, run: int) -> None:
    seed = int(os.environ.get("CHAOS_SEED", random.randrange(1 << 30))) + run
    rng = random.Random(seed)
    print(f"\nrecord chaos seed {seed} (replay with CHAOS_SEED={seed - run})")
    n = rng.randint(300, 600)
    size = rng.choice([10, 25])
    async with Cluster(
        tmp_path,
        chunking={"records": size},
        daemon={"drain_seconds": 0.5},
        delivery={"ack_timeout": 0.4, "backoff": 0.05, "max_attempts": 40},
    ) as c:
        day1 = [product(i) for i in range(n)]
        refused1 = sorted(rng.sample([r["sku"] for r in day1], 8))
        chaos = random_faults(rng, -(-n // size), False)
        await c.faults([*chaos, {"action": "reject_records", "field": "sku", "values": refused1, "reason": "r1"}])
        ing1 = await c.ingest(_jsonl(c.data / "day1.jsonl", day1), **RULES)
        await _storm(c, rng)
        st1 = await c.settle(ing1, timeout=180)
        assert st1["status"] == "completed", f"seed {seed}: {st1}"
        one = await c.record_outcomes(ing1, day1)
        assert one["rejected"] == 8, f"seed {seed}: {one}"

        # Day 2: 5% changed, 2% gone, 2% new; the records refused on day 1 are unchanged, yet sent again.
        day2 = [dict(r) for r in day1]
        changed = set(rng.sample(range(n), n // 20))
        for i in changed:
            day2[i]["stock"] = 10_000 + i
        gone = {day1[i]["sku"] for i in rng.sample(sorted(set(range(n)) - changed), n // 50)} - set(refused1)
        day2 = [r for r in day2 if r["sku"] not in gone] + [product(n + i) for i in range(n // 50)]
        before = {canonical.encode(r) for r in day1 if r["sku"] not in refused1}
        to_send = [r for r in day2 if canonical.encode(r) not in before]
        refused2 = sorted(rng.sample([r["sku"] for r in to_send if r["sku"] not in refused1], 5))
        await c.faults(
            [
                *random_faults(rng, -(-n // size), False),
                {"action": "reject_records", "field": "sku", "values": refused2, "reason": "r2"},
            ]
        )
        ing2 = await c.ingest(_jsonl(c.data / "day2.jsonl", day2), **RULES)
        await _storm(c, rng)
        st2 = await c.settle(ing2, timeout=180)
        assert st2["status"] == "completed", f"seed {seed}: {st2}"
        two = await c.record_outcomes(ing2, to_send)
        assert two["rejected"] == len(refused2), f"seed {seed}: {two}"
        sent2 = {r["sku"] for r in await c.applied(ing2)}
        assert set(refused1) <= sent2, f"seed {seed}: a record rejected in run 1 was not sent in run 2"
        assert st2["records_unchanged"] == len(day2) - len(to_send), f"seed {seed}: {st2}"
        assert st2["deletions"] == len(gone), f"seed {seed}: {st2}"
        report(
            f"record chaos seed {seed}: day 1 {one['applied']} applied + {one['rejected']} rejected; day 2 sent"
            f" {len(to_send)} of {len(day2)} (+{len(gone)} tombstones), {two['rejected']} rejected;"
            f" {c.kills} daemon kills, {c.receiver_restarts} receiver restarts; versions = receiver"
        )
