"""The data_object applier end to end: the real daemon, the bundle's test application with the Pimcore
stand-ins (tests/Stubs/: Pimcore's own save transaction and deadlock retry, typed setters, validation, on
MariaDB with Pimcore's collation), four Messenger workers under by_key, records Pimcore refuses, real
deadlocks from a second connection, and worker and daemon SIGKILLs. The objects must end as the last
accepted record of each key in file order, every refused record must be in the reject file, and no chunk
may be left unapplied. Reuses tests/test_pimcore_bundle.py's harness (PhpApp, daemon_for, MariaDB)."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from . import test_pimcore_bundle as bundle
from .helpers import report
from .servers import MariaDb
from .test_pimcore_bundle import APP, PhpApp, Platform, daemon_for

pytestmark = pytest.mark.timeout(600)

# The bundle suite's fixtures: each platform (host, trixie, sid; an absent one skipped, saying why), its
# MariaDB, and the check after each test that no PHP process is left behind.
platform = bundle.platform
mariadb = bundle.mariadb
_no_process_left_behind = bundle._no_process_left_behind

KEYS = 300
RECORDS = 1200


def contend(app: PhpApp, log: Path) -> subprocess.Popen[bytes]:
    """bin/contend: a second connection locking the product rows in the reverse order of a save, until killed
    (its own process group, like every PHP process of the app)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            app.platform.argv("php", str(APP / "bin" / "contend")),
            env=app.env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )


def catalogue(path: Path) -> tuple[dict[str, tuple[int, str, float]], dict[int, str]]:
    """Write RECORDS records of KEYS products, each key four times in a shuffled file order; every 37th record
    has an EAN longer than its column (Pimcore's validation refuses it), every 53rd a stock that is no number
    (the field map refuses it). Returns what each product must end as (the last accepted record of its key:
    stock, German title, price) and the refused records' positions with their sku."""
    rng = random.Random(26)
    order = [f"SKU-{k:04d}" for k in range(KEYS) for _ in range(RECORDS // KEYS)]
    rng.shuffle(order)
    final: dict[str, tuple[int, str, float]] = {}
    refused: dict[int, str] = {}
    with open(path, "w", encoding="utf-8") as f:
        for i, sku in enumerate(order):
            record: dict[str, Any] = {"sku": sku, "stock": i, "title": f"Produkt {i} \u2013 gr\u00fcn", "price": i / 4}
            if i % 37 == 36:
                record["ean"] = "4" * 20
                refused[i] = sku
            elif i % 53 == 52:
                record["stock"] = "x"
                refused[i] = sku
            else:
                final[sku] = (i, record["title"], i / 4)
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return final, refused


def products(server: MariaDb, db: str) -> dict[str, tuple[int, str, float, bool]]:
    rows = server.sql(
        "SELECT s.sku, s.stock, l.name, s.price, o.published FROM object_store_prod s JOIN objects o ON o.id = s.oo_id"
        " LEFT JOIN object_localized_data_prod l ON l.ooo_id = s.oo_id AND l.language = 'de' ORDER BY s.sku",
        db,
    )
    out = {}
    for line in rows.splitlines():
        sku, stock, name, price, published = line.split("\t")
        out[sku] = (int(stock), name, float(price), published == "1")
    return out


def deadlocks(server: MariaDb) -> int:
    return int(server.sql("SHOW GLOBAL STATUS LIKE 'Innodb_deadlocks'").split()[1])


async def test_objects_end_as_each_keys_last_record_through_refusals_deadlocks_kills_and_four_workers(
    make_cluster: Any, platform: Platform, mariadb: MariaDb, tmp_path: Path
) -> None:
    """1,200 records of 300 products (each key four times), by_key with a window of 8 on four workers, 20
    records a chunk. A second connection keeps locking the product rows in the reverse order of Pimcore's
    save (real deadlocks, which Pimcore's retry loop resolves); two workers and the daemon are SIGKILLed
    mid-file and restarted. Every product ends as its key's last accepted record in file order, the records
    Pimcore or the field map refused are exactly the reject file's, every chunk is applied, no per-record
    mark is left. The next full file, without ten keys, unpublishes those ten by tombstones."""
    db = "pimingest_objects"
    app = PhpApp(platform, tmp_path / "php", mariadb.url(db))
    app.env["PIMINGEST_STAND_INS"] = "1"
    subprocess.run(
        platform.argv("php", str(APP / "bin" / "stand-ins"), "install"), env=app.env, check=True, capture_output=True
    )
    c = daemon_for(make_cluster, app, 20)
    app.point_at(c)
    contender: subprocess.Popen[bytes] | None = None
    before = deadlocks(mariadb)
    try:
        await app.start(workers=4)
        await c.start_daemon()
        contender = contend(app, tmp_path / "contend.log")
        src = c.data / "products-objects.jsonl"
        final, refused = catalogue(src)
        rules = {"key": "sku", "window": 8, "order": "by_key", "delta": True, "delta_scope": "objects"}
        t0 = time.monotonic()
        ing = await c.ingest(src, deletions="send", **rules)
        worker_kills = daemon_kills = 0
        while True:
            try:
                st = await c.status(ing)
            except Exception:
                st = {"status": "unreachable", "chunks_acked": -1}
            if st["status"] in ("completed", "failed"):
                break
            assert time.monotonic() - t0 < 400, st
            acked = st.get("chunks_acked", 0)
            if worker_kills < 2 and acked >= 10 + worker_kills * 15:
                await asyncio.sleep(0.2)  # inside a record's save or right after it, most likely
                app.kill_worker()
                worker_kills += 1
                app.start_worker()
            if daemon_kills == 0 and acked >= 30:
                await c.kill_daemon()
                daemon_kills += 1
                await c.start_daemon()
            await asyncio.sleep(0.1)
        took = time.monotonic() - t0
        assert st["status"] == "completed", st
        assert (worker_kills, daemon_kills) == (2, 1)
        assert st["records_rejected"] == len(refused), st
        rejects = [json.loads(line) for line in (await c.rejects(ing)).splitlines()]
        assert sorted((r["sku"], r["stock"]) for r in rejects) == sorted(
            (sku, "x" if i % 53 == 52 and i % 37 != 36 else i) for i, sku in refused.items()
        )
        fields = {r["_reject"].get("field") for r in rejects}
        assert fields == {"ean", "stock"}, fields
        got = products(mariadb, db)
        assert {k: v[:3] for k, v in got.items()} == final  # each key's last accepted record, value for value
        assert all(published for *_, published in got.values())
        ledger = mariadb.sql(
            f"SELECT COUNT(*), SUM(state = 'applied') FROM pimingest_chunk WHERE ingestion_id = '{ing}'", db
        ).split()
        assert ledger == ["60", "60"], ledger
        assert mariadb.sql("SELECT COUNT(*) FROM pimingest_mark", db).strip() == "0"
        seen = deadlocks(mariadb) - before
        assert seen > 0, "no deadlock happened: the contention was not real"

        # The next full file: ten products gone (tombstones unpublish them), the rest unchanged.
        gone = sorted(final)[:10]
        kept = [line for line in src.read_text(encoding="utf-8").splitlines() if json.loads(line)["sku"] not in gone]
        src2 = c.data / "products-objects-2.jsonl"
        src2.write_text("\n".join(kept) + "\n", encoding="utf-8")
        ing2 = await c.ingest(src2, deletions="send", max_deletions=50, **rules)
        st2 = await c.settle(ing2, timeout=200)
        assert st2["status"] == "completed" and st2["records_deleted"] == 10, st2
        after = products(mariadb, db)
        assert sorted(k for k, v in after.items() if not v[3]) == gone
        assert {k: v[:3] for k, v in after.items()} == final
        report(
            f"data_object end to end on {platform.name}: {RECORDS:,} records of {KEYS} products, by_key on 4 workers,"
            f" {len(refused)} refused,"
            f" {seen} deadlocks, {worker_kills} worker and {daemon_kills} daemon kills: every product its key's last"
            f" record, in {took:.1f}s"
        )
    finally:
        if contender is not None:
            PhpApp._kill(contender)
        app.stop()
