"""Retention: old chunk rows and old done/failed folders go (each step opt-in), summaries stay, the database
file shrinks back, `pimingestd prune --dry-run` shows the plan, and /metrics reports disk use."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from pimingestd import config as config_mod
from pimingestd.metrics import Metrics
from pimingestd.model import Status
from pimingestd.retention import Retention
from pimingestd.state.sqlite import Store

from .conftest import MakeDaemon
from .helpers import Receiver, product, report, write_json
from .test_inbox import inbox_config

DAY = 86400.0


async def _ingestion(store: Store, i: int, chunks: int, status: Status) -> str:
    ing = await store.create_ingestion(
        file_id=f"sha256:{i:064x}",
        path=f"/in/{i}.json",
        file_name=f"{i}.json",
        size=1,
        mtime_ns=1,
        format="json",
        chunk_records=10,
        chunk_bytes=None,
        preflight=False,
        source="api",
    )
    checksum = "sha256:" + "c" * 64
    for n in range(1, chunks + 1):
        await store.mark_sent(ing.id, n, (n - 1) * 10, 10, checksum)
        await store.commit_ack(ing.id, n, checksum)
    if status != Status.QUEUED:
        await store.transition(ing.id, Status.RUNNING)
        if status == Status.COMPLETED:
            assert await store.claim_completion(ing.id)
            await store.set_manifest(ing.id, "sha256:" + "d" * 64)
        await store.transition(ing.id, status)
    return ing.id


def _age(db: Path, ingestion_id: str, days: float) -> None:
    con = sqlite3.connect(db)
    con.execute("UPDATE ingestions SET updated_at = ? WHERE id = ?", (time.time() - days * DAY, ingestion_id))
    con.commit()
    con.close()


def _config(tmp_path: Path, **retention: Any) -> config_mod.Config:
    cfg_path = tmp_path / "c.toml"
    lines = [f"{k} = {json.dumps(v)}" for k, v in retention.items()]
    cfg_path.write_text(
        '[chunking]\nrecords = 10\n[daemon]\nstate_db = "s.db"\n[inbox]\n'
        'dir = "in"\nprocessing_dir = "proc"\ndone_dir = "done"\nfailed_dir = "failed"\n[retention]\n'
        + "\n".join(lines)
    )
    return config_mod.load(cfg_path, env={})


async def test_old_chunk_rows_go_their_summaries_stay_and_the_file_shrinks(tmp_path: Path) -> None:
    cfg = _config(tmp_path, chunk_rows_days=30)
    store = await Store.open(cfg.daemon.state_db)
    try:
        old_done = await _ingestion(store, 1, 400, Status.COMPLETED)
        old_cancelled = await _ingestion(store, 2, 400, Status.CANCELLED)
        old_failed = await _ingestion(store, 3, 400, Status.FAILED)  # may still be resumed: kept
        recent = await _ingestion(store, 4, 400, Status.COMPLETED)
        unfinished = await _ingestion(store, 5, 400, Status.QUEUED)
        many = [await _ingestion(store, 10 + i, 300, Status.COMPLETED) for i in range(20)]
        for ing in (old_done, old_cancelled, old_failed, unfinished, *many):
            _age(cfg.daemon.state_db, ing, 40)
        retention = Retention(cfg, store, Metrics())
        plan = await retention.plan()
        assert (plan.ingestions, plan.chunk_rows) == (22, 800 + 20 * 300)
        await store.vacuum()  # a new database is incremental already; measure from a compact file
        before = await store.size()
        done = await retention.run()
        assert (done.ingestions, done.chunk_rows) == (22, 800 + 20 * 300)
        after = await store.size()
        assert after < 0.5 * before, (before, after)
        for ing in (old_done, old_cancelled, *many):
            assert await store.chunks(ing) == []
        for ing in (old_failed, recent, unfinished):
            assert len(await store.chunks(ing)) == 400
        kept = await store.get(old_done)
        assert kept is not None and kept.status == Status.COMPLETED and kept.manifest == "sha256:" + "d" * 64
        assert (kept.pruned_chunks, kept.pruned_records) == (400, 4000) and kept.pruned_at is not None
        again = await retention.run()
        assert (again.ingestions, again.chunk_rows) == (0, 0)
        report(f"retention: 6,800 chunk rows pruned, database {before >> 10} KiB -> {after >> 10} KiB")
    finally:
        await store.close()


async def test_the_api_still_answers_for_a_pruned_ingestion(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path, tmp_path: Path
) -> None:
    d = await make_daemon(retention={"chunk_rows_days": 1})
    src = write_json(data_dir / "p.json", [product(i) for i in range(35)])
    code, answer = await d.ingest(path=str(src))
    st = await d.wait(answer["ingestion_id"])
    assert st["status"] == "completed"
    while d.scheduler.running:  # its run ends after the status is written (the spool is dropped then)
        await asyncio.sleep(0.01)
    _age(d.config.daemon.state_db, st["ingestion_id"], 2)
    plan = await Retention(d.config, d.store, Metrics()).run()
    assert plan.chunk_rows == 4
    after = await d.status(st["ingestion_id"])
    assert (after["status"], after["chunks_acked"], after["records_acked"]) == ("completed", 4, 35)
    code, rows = await d.request("GET", f"/api/ingestions/{st['ingestion_id']}/chunks")
    assert code == 200 and rows["chunks"] == []


async def test_a_pruned_ingestions_reject_file_and_refused_records_go_with_its_chunk_rows(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    await receiver.faults([{"action": "reject_records", "field": "sku", "values": ["SKU-000001"]}])
    d = await make_daemon(retention={"chunk_rows_days": 1})
    src = write_json(data_dir / "p.json", [product(i) for i in range(5)])
    _, answer = await d.ingest(path=str(src))
    st = await d.wait(answer["ingestion_id"])
    assert st["status"] == "completed" and st["records_rejected"] == 1
    while d.scheduler.running:
        await asyncio.sleep(0.01)
    reject_file = d.scheduler.reject_file(await d.store.get(st["ingestion_id"]))
    assert reject_file.is_file()
    assert (await d.request("GET", f"/api/ingestions/{st['ingestion_id']}/rejects"))[0] == 200
    _age(d.config.daemon.state_db, st["ingestion_id"], 2)
    plan = await Retention(d.config, d.store, Metrics()).run()
    assert plan.ingestions == 1 and plan.files == 1 and not reject_file.exists()
    code, answer = await d.request("GET", f"/api/ingestions/{st['ingestion_id']}/rejects")
    assert code == 410 and "retention" in answer["error"], answer
    assert (await d.status(st["ingestion_id"]))["records_rejected"] == 1  # the count stays on the summary
    con = sqlite3.connect(d.config.daemon.state_db)
    assert con.execute("SELECT count(*) FROM record_rejects").fetchone()[0] == 0
    con.close()


async def test_old_done_and_failed_folders_go_with_their_reports_and_prune_dry_run_shows_them(tmp_path: Path) -> None:
    cfg = _config(tmp_path, files_days=7)
    inbox = cfg.inbox
    old_time = time.time() - 10 * DAY
    made = {}
    for base, token, old in (
        (inbox.done_dir, "i-old", True),
        (inbox.done_dir, "i-new", False),
        (inbox.failed_dir, "u-old", True),
    ):
        folder = base / token
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "p.json").write_bytes(b"x" * 1000)
        if base == inbox.failed_dir:
            (base / f"{token}.error.json").write_text("{}")
        if old:
            os.utime(folder, (old_time, old_time))
        made[token] = folder
    store = await Store.open(cfg.daemon.state_db)
    await store.close()

    async def cli(*args: str) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pimingestd", "prune", "--config", str(cfg.path), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return dict(json.loads(out))

    dry = await cli("--dry-run")
    assert dry["dry_run"] and (dry["folders"], dry["files"], dry["bytes"]) == (2, 3, 2002)
    assert sorted(Path(p).name for p in dry["paths"]) == ["i-old", "u-old"]
    assert all(f.exists() for f in made.values())  # a dry run removes nothing
    done = await cli()
    assert (done["folders"], done["files"]) == (2, 3)
    assert not made["i-old"].exists() and not made["u-old"].exists() and made["i-new"].exists()
    assert not (inbox.failed_dir / "u-old.error.json").exists()


async def test_metrics_report_disk_use(make_daemon: MakeDaemon, receiver: Receiver, tmp_path: Path) -> None:
    d = await make_daemon(inbox=inbox_config(tmp_path, watch="off"), retention={"interval_minutes": 0.001})
    (Path(d.config.inbox.dir) / "waiting.json").write_bytes(b"[]" * 50)
    for _ in range(100):
        _, text = await d.request("GET", "/metrics")
        if 'pimingestd_inbox_folder_bytes{folder="inbox"} 100.0' in text:
            break
        await asyncio.sleep(0.05)
    assert 'pimingestd_inbox_folder_files{folder="inbox"} 1.0' in text
    size = float(
        next(line.split()[1] for line in text.splitlines() if line.startswith("pimingestd_state_database_bytes "))
    )
    assert size > 0
    assert "pimingestd_spool_bytes 0.0" in text


async def test_retention_never_removes_the_file_of_a_running_or_resumable_ingestion(
    make_cluster: Any, tmp_path: Path
) -> None:
    """files_days = 1 and every folder ten days old, retention running all the time in the daemon and
    `pimingestd prune` beside it: a failed inbox file resumed from failed/ is delivered whole (not removed
    mid-delivery), a failed one stays (resumable), a cancelled one goes only files_days after its cancel, and
    a refused file (no ingestion) goes by its age."""
    cfg = inbox_config(tmp_path, settle_seconds=0.2)
    c = make_cluster(inbox=cfg, retention={"files_days": 1, "interval_minutes": 0.001})
    await c.start_receiver()
    await c.start_daemon()
    inbox, failed = Path(cfg["dir"]), Path(cfg["failed_dir"])
    await c.faults([{"action": "reject_final", "chunk": 2, "times": 1000}])
    ids = {}
    for name in ("resumed", "kept", "cancelled"):
        write_json(inbox / f".{name}.tmp", [product(i) for i in range(30)] + [{"sku": name}])
        os.rename(inbox / f".{name}.tmp", inbox / f"{name}.json")
        for _ in range(400):
            rows = {r["file_name"]: r for r in await c.ingestions()}
            if (
                rows.get(f"{name}.json", {}).get("status") == "failed"
                and len(list(failed.glob("*.error.json"))) == len(ids) + 1
            ):
                break
            await asyncio.sleep(0.05)
        ids[name] = rows[f"{name}.json"]["ingestion_id"]
    (inbox / "refused.parquet").write_bytes(b"PAR1")  # a format the daemon does not read: failed/, no ingestion
    for _ in range(400):
        if len(list(failed.glob("*.error.json"))) == 4:
            break
        await asyncio.sleep(0.05)
    folders = {p.name: p for p in failed.iterdir() if p.is_dir()}
    assert len(folders) == 4, sorted(folders)
    ten_days = time.time() - 10 * DAY
    for folder in folders.values():
        os.utime(folder, (ten_days, ten_days))
    code, _ = await c.call("POST", f"{c.durl}/api/ingestions/{ids['cancelled']}/cancel")
    assert code == 200
    await c.faults([{"action": "delay_ack", "seconds": 0.1, "times": 1000}])
    code, _ = await c.call("POST", f"{c.durl}/api/ingestions/{ids['resumed']}/resume")
    assert code == 202

    async def prune() -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pimingestd", "prune", "--config", str(c.cfg),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return dict(json.loads(out))

    while (await c.status(ids["resumed"]))["status"] in ("queued", "running"):
        await prune()  # beside the daemon's own retention, every 0.06 s
    st = await c.settle(ids["resumed"])
    assert st["status"] == "completed" and st["records_acked"] == 31, st
    assert await c.applied(ids["resumed"]) == [product(i) for i in range(30)] + [{"sku": "resumed"}]
    assert (await c.status(ids["kept"]))["status"] == "failed"
    kept = [f for f in folders.values() if (f / "kept.json").exists()]
    assert len(kept) == 1, "the failed (resumable) file was removed"
    assert [f for f in folders.values() if (f / "cancelled.json").exists()], "removed right after its cancel"
    assert not [f for f in folders.values() if (f / "refused.parquet").exists()], "an old refused file stays"
    # Cancelled ten days ago: now it goes, with its report; the resumable one still stays.
    _age(c.state_db, ids["cancelled"], 10)
    plan = await prune()
    assert plan["kept"] >= 1 and not [f for f in folders.values() if (f / "cancelled.json").exists()]
    assert (kept[0] / "kept.json").exists() and (failed / f"{kept[0].name}.error.json").exists()
    code, _ = await c.call("POST", f"{c.durl}/api/ingestions/{ids['kept']}/resume")
    assert code == 202
    assert (await c.settle(ids["kept"]))["status"] == "completed"


async def test_an_api_ingestion_of_an_archived_file_keeps_its_folder_when_the_inbox_lies_behind_a_symlink(
    tmp_path: Path,
) -> None:
    """The inbox's folders configured through a symlink (/srv/pim -> /data/pim), as operators do: an API
    ingestion of a file in done/ or failed/ records the file's real path (the API resolves it), which is not
    under the folders as configured. Still retention keeps the folder while that ingestion is queued, running
    or failed (resumable), and removes it once it ended long ago."""
    real = tmp_path / "data"
    (real / "done").mkdir(parents=True)
    (real / "failed").mkdir()
    link = tmp_path / "srv"
    link.symlink_to(real)
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(
        f'[chunking]\nrecords = 10\n[daemon]\nstate_db = "s.db"\n[inbox]\ndir = "{link}/in"\nprocessing_dir = "{link}/proc"\n'
        f'done_dir = "{link}/done"\nfailed_dir = "{link}/failed"\n[retention]\nfiles_days = 1\n'
    )
    cfg = config_mod.load(cfg_path, env={})
    assert cfg.inbox.done_dir == link / "done"  # as configured, not resolved
    store = await Store.open(cfg.daemon.state_db)
    try:
        ids = {}
        for i, (base, status) in enumerate(
            [("done", Status.QUEUED), ("done", Status.RUNNING), ("failed", Status.FAILED), ("done", Status.COMPLETED)]
        ):
            folder = real / base / f"i2026120{i}T000000Z-0000000{i}"
            folder.mkdir()
            (folder / "p.json").write_text("[]")
            ten_days = time.time() - 10 * DAY
            os.utime(folder, (ten_days, ten_days))
            ing = await store.create_ingestion(
                file_id=f"sha256:{i:064x}",
                path=str(folder / "p.json"),  # what POST /api/ingest records: the real path
                file_name="p.json",
                size=2,
                mtime_ns=1,
                format="json",
                chunk_records=10,
                chunk_bytes=None,
                preflight=False,
                source="api",
            )
            if status != Status.QUEUED:
                await store.transition(ing.id, Status.RUNNING)
                if status == Status.COMPLETED:
                    assert await store.claim_completion(ing.id)
                if status != Status.RUNNING:
                    await store.transition(ing.id, status)
            ids[status] = folder
        _age(cfg.daemon.state_db, (await store.under(str(real / "done" / ids[Status.COMPLETED].name)))[0].id, 10)
        plan = await Retention(cfg, store, Metrics()).run()
        for status in (Status.QUEUED, Status.RUNNING, Status.FAILED):
            assert (ids[status] / "p.json").exists(), f"the folder of a {status} ingestion was removed"
        assert not ids[Status.COMPLETED].exists(), "a folder whose ingestion ended ten days ago stays"
        assert (plan.folders, plan.kept) == (1, 3), plan
    finally:
        await store.close()
