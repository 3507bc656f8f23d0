"""The long soak (tests/soak.py --long), in CI: about 4 minutes of many files of every format, inbox drops and
API triggers, receiver faults and daemon SIGKILLs, with retention on. Every file arrives exactly once, and
after a warm-up the RSS, fds and threads of the daemon's process tree stay within their bounds and the database
does not grow with the number of completed ingestions. PIMINGESTD_SOAK_MINUTES sets the length.

And the soak's check itself (Cluster.verify): exact for each state an ingestion can be in when the soak
looks, its chunk rows pruned by retention included, and a failure shows the ingestion's history."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pimingestd.protocol import canonical
from pimingestd.testing import Cluster

from .helpers import product, report, write_json
from .soak import long_soak


@pytest.mark.timeout(1200)
async def test_the_long_soak_keeps_every_figure_flat(tmp_path: Path) -> None:
    minutes = float(os.environ.get("PIMINGESTD_SOAK_MINUTES", "4"))
    seed = random.randrange(1 << 30)
    f = await long_soak(minutes, seed, tmp_path)
    report(
        f"soak (long, {minutes:g} min, seed {seed}): {f['files']} files, {f['kills']} daemon kills, all exactly once"
        f" ({f['pruned_first']} checked against their summary);"
        f" after warm-up the process tree's RSS {f['rss_mib'][0]}->{f['rss_mib'][1]} MiB"
        f" ({f['slope_mib_per_min']:+.3f} MiB/min), fds {f['fds'][0]}->{f['fds'][1]},"
        f" threads {f['threads'][0]}->{f['threads'][1]}, database {f['db_kib'][0]}->{f['db_kib'][1]} KiB,"
        f" spool {f['spool_kib'][0]}->{f['spool_kib'][1]} KiB"
    )


PRUNE_FAST = {"chunk_rows_days": 1 / 86400, "interval_minutes": 0.01}  # rows go 1 s after the end; a pass per 0.6 s


async def _pruned(c: Cluster, ing: str) -> None:
    """Until retention has pruned the chunk rows of ``ing`` (a wait, not a timed assertion)."""
    for _ in range(1200):
        if c.read_state("SELECT 1 FROM ingestions WHERE id = ? AND pruned_at IS NOT NULL", (ing,)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"retention did not prune {ing}")


async def _two_chunks(c: Cluster) -> tuple[str, list[dict[str, Any]]]:
    records = [product(i) for i in range(30)]
    ing = await c.ingest(write_json(c.data / "two-chunks.json", records))
    assert (await c.settle(ing))["status"] == "completed"
    return ing, records


async def test_a_completed_ingestion_whose_chunk_rows_were_pruned_is_checked_against_its_summary(
    tmp_path: Path,
) -> None:
    """Issue 27 item 25: the long soak runs retention with chunk_rows_days of one second, so a completed
    ingestion's chunk rows may be gone before the soak looks (at once after a restart). That is legitimate;
    the check then holds the receiver's applied chunks against what the daemon kept (chunks and records
    ACKed, the manifest), and says it did."""
    async with Cluster(tmp_path, chunking={"records": 20}, retention=PRUNE_FAST) as c:
        ing, records = await _two_chunks(c)
        await _pruned(c, ing)
        counts = await c.verify(ing, records)
        # The soak finds a file's ingestion in the newest 1000, or, while waiting for the last files, in all.
        later = await c.ingest(write_json(c.data / "later.json", [product(99)]))
        assert [i["ingestion_id"] for i in await c.ingestions(page=1)] == [later]
        assert [i["ingestion_id"] for i in await c.ingestions(every=True, page=1)] == [later, ing]
    assert (counts["records"], counts["pruned"]) == (30, 1), counts


@pytest.mark.parametrize("pruned", [False, True], ids=["rows-kept", "rows-pruned"])
async def test_a_chunk_applied_but_not_committed_still_fails_the_check_with_the_ingestions_history(
    tmp_path: Path, pruned: bool
) -> None:
    """The check stays exact: chunk 2 applied by the receiver but not committed by the daemon (its row set
    back to "sent", or, pruned, a summary of one chunk) fails it, naming the state it checked, followed by
    the ingestion's history (status, chunk rows, what the receiver saw, the daemon's events)."""
    async with Cluster(tmp_path, chunking={"records": 20}, **({"retention": PRUNE_FAST} if pruned else {})) as c:
        ing, records = await _two_chunks(c)
        if pruned:
            await _pruned(c, ing)
        await c.kill_daemon()
        con = sqlite3.connect(c.state_db)
        with con:
            if pruned:
                checksum = next(r["checksum"] for r in await _received(c, ing) if r["chunk"] == 1)
                con.execute(
                    "UPDATE ingestions SET pruned_chunks = 1, pruned_records = 20, manifest = ? WHERE id = ?",
                    (canonical.manifest([checksum]), ing),
                )
            else:
                con.execute("UPDATE chunks SET state = 'sent' WHERE ingestion_id = ? AND n = 2", (ing,))
        con.close()
        await c.start_daemon()
        with pytest.raises(AssertionError) as failed:
            await c.verify(ing, records)
    message = str(failed.value)
    if pruned:
        assert "completed, its chunk rows pruned by retention: committed chunks != applied chunks" in message
        assert "summary counts 1 chunks ACKed (1..1), the receiver applied [1, 2]" in message, message
        assert "chunk rows pruned by retention at" in message, message
    else:
        assert "completed, its chunk rows kept: committed chunks != applied chunks: only applied [2]" in message
        assert "\n  2 sent " in message, message  # the chunk row, as the history lists it
    assert f"--- history of ingestion {ing}" in message, message
    assert "applied chunks [1, 2] (30 records)" in message, message
    assert "ingestion completed" in message, message  # the daemon's own event


async def _received(c: Cluster, ing: str) -> list[dict[str, Any]]:
    code, rows = await c.call("GET", f"{c.rurl}/ingestions/{ing}/received")
    assert code == 200, rows
    return list(rows)
