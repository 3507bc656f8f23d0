"""The inbox: complete files only, atomic moves, names kept and never colliding, profiles, failures explained."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pimingestd.intake.profiles import glob_match
from pimingestd.intake.upload import check_relative_name
from pimingestd.testing import wait_http

from .conftest import MakeDaemon
from .helpers import Daemon, Receiver, product


def inbox_config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    base = tmp_path / "daemon"
    cfg: dict[str, Any] = {
        "dir": str(base / "inbox"),
        "processing_dir": str(base / "processing"),
        "done_dir": str(base / "done"),
        "failed_dir": str(base / "failed"),
        "settle_seconds": 0.5,
        "poll_interval": 0.1,
    }
    cfg.update(extra)
    return cfg


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


async def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def all_ingestions(d: Daemon) -> list[dict[str, Any]]:
    code, body = await d.request("GET", "/api/ingestions?limit=1000")
    assert code == 200, body
    return list(body["ingestions"])


async def wait_all_done(d: Daemon, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    async def ready() -> bool:
        rows = await all_ingestions(d)
        return len(rows) == count and all(r["status"] in ("completed", "failed") for r in rows)

    await wait_for(ready, timeout, f"{count} finished ingestions")
    return await all_ingestions(d)


def write_records(path: Path, records: list[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))


@pytest.mark.parametrize("watch", ["auto", "poll"])
async def test_atomic_rename_taken_at_once(make_daemon: MakeDaemon, tmp_path: Path, watch: str) -> None:
    """A file renamed into the inbox is complete: taken well before settle_seconds (inotify), then done."""
    cfg = inbox_config(tmp_path, settle_seconds=30.0 if watch == "auto" else 0.3, watch=watch)
    d = await make_daemon(inbox=cfg)
    inbox = Path(cfg["dir"])
    write_records(inbox / ".p.json.tmp", [product(i) for i in range(12)])
    started = time.monotonic()
    os.rename(inbox / ".p.json.tmp", inbox / "p.json")
    [row] = await wait_all_done(d, 1)
    if watch == "auto":
        assert time.monotonic() - started < 10, "taken at once, not after settle_seconds"
    assert row["status"] == "completed" and row["source"] == "inbox" and row["file_name"] == "p.json"
    await wait_for(lambda: _count(Path(cfg["done_dir"]), 1), what="the file in done")
    done = files_under(Path(cfg["done_dir"]))
    assert len(done) == 1 and done[0].endswith("/p.json")
    await wait_for(lambda: _path_is(d, row["ingestion_id"], str(Path(cfg["done_dir"]) / done[0])), what="path updated")
    assert files_under(inbox) == [] and files_under(Path(cfg["processing_dir"])) == []


@pytest.mark.parametrize("watch", ["auto", "poll"])
async def test_slow_writer_not_taken_early(
    make_daemon: MakeDaemon, receiver: Receiver, tmp_path: Path, watch: str
) -> None:
    """A file growing in steps over several seconds is taken only after it stopped changing."""
    cfg = inbox_config(tmp_path, settle_seconds=1.0, watch=watch)
    d = await make_daemon(inbox=cfg)
    target = Path(cfg["dir"]) / "slow.json"
    text = json.dumps([product(i) for i in range(300)])
    steps = 8
    size = len(text) // steps + 1
    with open(target, "w") as f:
        for i in range(steps):
            f.write(text[i * size : (i + 1) * size])
            f.flush()
            await asyncio.sleep(0.5)
            assert target.exists(), f"taken while still being written (step {i})"
            assert await all_ingestions(d) == []
    [row] = await wait_all_done(d, 1)
    assert row["status"] == "completed" and row["records_acked"] == 300
    applied = await receiver.records(row["ingestion_id"])
    assert [json.loads(a["record"]) for a in applied] == [product(i) for i in range(300)]


async def test_subfolders_and_profiles(make_daemon: MakeDaemon, receiver: Receiver, tmp_path: Path) -> None:
    """Subfolder paths are kept; the first matching profile picks json_path, format and chunking."""
    cfg = inbox_config(
        tmp_path,
        profiles=[],
    )
    del cfg["profiles"]
    d = await make_daemon(inbox=cfg)
    await d.stop()
    # Profiles are arrays of tables: write them into the config file directly.
    config_path = d.config.path
    config_path.write_text(
        config_path.read_text()
        + '\n[[inbox.profiles]]\nmatch = "products/*.json"\njson_path = "catalog.item"\nchunk_records = 3\n'
        + '\n[[inbox.profiles]]\nmatch = "assets/**"\nformat = "jsonl"\n'
    )
    d = await Daemon(config_path).start()
    try:
        inbox = Path(cfg["dir"])
        write_records(inbox / "tmp" / "x", [])
        (inbox / "products").mkdir(parents=True, exist_ok=True)
        (inbox / "products" / "p.json").write_text(json.dumps({"catalog": [product(i) for i in range(10)]}))
        (inbox / "assets" / "deep").mkdir(parents=True, exist_ok=True)
        (inbox / "assets" / "deep" / "a.data").write_text("\n".join(json.dumps(product(i)) for i in range(4)))
        (inbox / "tmp" / "x").unlink()
        rows = await wait_all_done(d, 2)
        await wait_for(lambda: _count(Path(cfg["done_dir"]), 2), what="both in done")
        by_name = {r["file_name"]: r for r in rows}
        p, a = by_name["products/p.json"], by_name["assets/deep/a.data"]
        assert p["status"] == "completed" and p["total_chunks"] == 4 and p["records_acked"] == 10
        assert a["status"] == "completed" and a["format"] == "jsonl" and a["records_acked"] == 4
        done = files_under(Path(cfg["done_dir"]))
        assert any(f.endswith("/products/p.json") for f in done) and any(
            f.endswith("/assets/deep/a.data") for f in done
        )
    finally:
        await d.stop()


async def test_names_never_collide(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    """Two files called products.json dropped one after the other both survive in done_dir."""
    cfg = inbox_config(tmp_path)
    d = await make_daemon(inbox=cfg)
    inbox = Path(cfg["dir"])
    for n in (1, 2):
        write_records(inbox / ".tmp", [product(i) for i in range(n * 5)])
        os.rename(inbox / ".tmp", inbox / "products.json")
        await wait_all_done(d, n)
        await wait_for(lambda n=n: _count(Path(cfg["done_dir"]), n), what=f"{n} in done")
    done = files_under(Path(cfg["done_dir"]))
    assert len(done) == 2 and all(f.endswith("/products.json") for f in done)
    sizes = sorted(len(json.loads((Path(cfg["done_dir"]) / f).read_text())) for f in done)
    assert sizes == [5, 10]


async def test_same_bytes_again(make_daemon: MakeDaemon, receiver: Receiver, tmp_path: Path) -> None:
    """The same bytes dropped again make no new ingestion and go to done."""
    cfg = inbox_config(tmp_path)
    d = await make_daemon(inbox=cfg)
    inbox = Path(cfg["dir"])
    for _ in range(2):
        write_records(inbox / ".tmp", [product(i) for i in range(7)])
        os.rename(inbox / ".tmp", inbox / "again.json")
        await wait_for(lambda: _empty(inbox), what="inbox emptied")
        await wait_all_done(d, 1)
    await wait_for(lambda: _count(Path(cfg["done_dir"]), 2), what="both in done")
    assert (await receiver.stats())["chunks_received"] == 1


async def _path_is(d: Daemon, ingestion_id: str, path: str) -> bool:
    return (await d.status(ingestion_id))["path"] == path


async def test_profile_re_ingestion(make_daemon: MakeDaemon, receiver: Receiver, tmp_path: Path) -> None:
    """A profile with re_ingestion = true ingests the same bytes again under a new ingestion id."""
    d = await make_daemon(inbox=inbox_config(tmp_path))
    await d.stop()
    config_path = d.config.path
    config_path.write_text(config_path.read_text() + '\n[[inbox.profiles]]\nmatch = "daily/*"\nre_ingestion = true\n')
    d = await Daemon(config_path).start()
    try:
        inbox = Path(d.config.inbox.dir)
        (inbox / "daily").mkdir(parents=True, exist_ok=True)
        for n in (1, 2):
            write_records(inbox / "daily" / ".tmp", [product(i) for i in range(4)])
            os.rename(inbox / "daily" / ".tmp", inbox / "daily" / "feed.json")
            rows = await wait_all_done(d, n)
        assert len({r["ingestion_id"] for r in rows}) == 2 and all(r["status"] == "completed" for r in rows)
        assert (await receiver.stats())["chunks_applied"] == 2
    finally:
        await d.stop()


async def _empty(folder: Path) -> bool:
    return files_under(folder) == []


async def _count(folder: Path, n: int) -> bool:
    return len(files_under(folder)) == n


async def test_malformed_file_lands_in_failed_with_reason(
    make_daemon: MakeDaemon, receiver: Receiver, tmp_path: Path
) -> None:
    """A malformed file sends nothing and lands in failed_dir, its token folder beside a <token>.error.json saying where."""
    cfg = inbox_config(tmp_path)
    d = await make_daemon(inbox=cfg)
    inbox = Path(cfg["dir"])
    (inbox / ".tmp").write_text('[{"a": 1}, {"a": ')
    os.rename(inbox / ".tmp", inbox / "bad.json")
    [row] = await wait_all_done(d, 1)
    assert row["status"] == "failed"
    await wait_for(lambda: _count(Path(cfg["failed_dir"]), 2), what="file and report in failed")
    failed = files_under(Path(cfg["failed_dir"]))
    [source] = [f for f in failed if f.endswith("/bad.json")]
    report_name = source.split("/")[0] + ".error.json"  # beside the token folder, never inside it
    assert sorted(failed) == sorted([source, report_name])
    report = json.loads((Path(cfg["failed_dir"]) / report_name).read_text())
    assert report["ingestion_id"] == row["ingestion_id"] and "byte" in report["error"]
    assert report["stopped_at_chunk"] == 1 and report["file"] == "bad.json" and report["time"].endswith("Z")
    assert (await receiver.stats()).get("chunks_received", 0) == 0


async def test_unsupported_format_refused_into_failed(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    """A file of no known format is refused into failed_dir with the reason; no ingestion."""
    cfg = inbox_config(tmp_path)
    d = await make_daemon(inbox=cfg)
    inbox = Path(cfg["dir"])
    (inbox / ".tmp").write_text("a,b\n1,2\n")
    os.rename(inbox / ".tmp", inbox / "notes.parquet")  # a format pimingestd does not read
    await wait_for(lambda: _count(Path(cfg["failed_dir"]), 2), what="refused file in failed")
    report = next(p for p in Path(cfg["failed_dir"]).glob("*.error.json"))
    assert "cannot tell the format" in json.loads(report.read_text())["error"]
    assert await all_ingestions(d) == []


async def test_ignored_names_stay(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    """Hidden files, partial uploads and Office lock files are never taken."""
    cfg = inbox_config(tmp_path, settle_seconds=0.2)
    d = await make_daemon(inbox=cfg)
    inbox = Path(cfg["dir"])
    for name in (".hidden.json", "x.json.part", "y.tmp", "~$book.xlsx", ".sub/z.json"):
        write_records(inbox / name, [product(1)])
    write_records(inbox / "real.json", [product(1)])
    await wait_all_done(d, 1)
    await asyncio.sleep(0.5)
    assert files_under(inbox) == sorted([".hidden.json", ".sub/z.json", "x.json.part", "y.tmp", "~$book.xlsx"])


def test_glob_and_names() -> None:
    """Profile globs: * within one folder, ** across any; upload names must be safe relative paths."""
    assert glob_match("products/*.json", "products/a.json")
    assert not glob_match("products/*.json", "products/x/a.json")
    assert glob_match("products/**/*.json", "products/x/y/a.json")
    assert glob_match("**", "a/b/c")
    assert not glob_match("*.json", "a/b.json")
    for bad in ("", "../x.json", "a/../x.json", "/etc/passwd", "a//b", "a\x00b", ".hidden", "a\\b"):
        with pytest.raises(ValueError):
            check_relative_name(bad)
    assert check_relative_name("products/p.json") == "products/p.json"


async def test_folders_must_share_a_filesystem(tmp_path: Path, make_daemon: MakeDaemon) -> None:
    """Inbox folders on different filesystems are refused at start with a clear error."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem (/dev/shm) on this machine")
    other = shm / f"pimingestd-test-{os.getpid()}"
    from pimingestd.errors import ConfigError

    try:
        with pytest.raises(ConfigError, match="one filesystem"):
            await make_daemon(inbox=inbox_config(tmp_path, done_dir=str(other)))
    finally:
        import shutil

        shutil.rmtree(other, ignore_errors=True)


# ---- regressions from the reliability review (issue 11) ---------------------------------------------


async def test_a_source_named_like_a_report_is_delivered_and_kept(
    make_daemon: MakeDaemon, receiver: Receiver, tmp_path: Path
) -> None:
    """A file named x.error.json is an ordinary source: it completes and lands in done/ with its bytes."""
    cfg = inbox_config(tmp_path)
    d = await make_daemon(inbox=cfg)
    inbox = Path(cfg["dir"])
    write_records(inbox / ".tmp", [product(i) for i in range(5)])
    data = (inbox / ".tmp").read_bytes()
    os.rename(inbox / ".tmp", inbox / "prices.error.json")
    [row] = await wait_all_done(d, 1)
    assert row["status"] == "completed" and row["records_acked"] == 5
    await wait_for(lambda: _count(Path(cfg["done_dir"]), 1), what="the file in done")
    [done] = files_under(Path(cfg["done_dir"]))
    assert done.endswith("/prices.error.json") and (Path(cfg["done_dir"]) / done).read_bytes() == data


async def test_links_and_fifos_are_refused_into_failed(make_cluster: Any, tmp_path: Path) -> None:
    """A symlink (to a file outside allowed_roots) and a FIFO named like a source are moved to failed/ with
    a report saying what they are; nothing is read or sent, the watcher goes on, and SIGTERM exits promptly."""
    cfg = inbox_config(tmp_path, settle_seconds=0.2)
    c = make_cluster(inbox=cfg)
    await c.start_receiver()
    await c.start_daemon()
    secret = tmp_path / "outside" / "secret.json"
    write_records(secret, [{"sku": "SECRET"}])
    inbox = Path(cfg["dir"])
    os.symlink(secret, inbox / "link.json")
    os.mkfifo(inbox / "pipe.json")
    os.symlink(secret.parent, inbox / "linked-folder")
    write_records(inbox / ".tmp", [product(1)])
    os.rename(inbox / ".tmp", inbox / "good.json")
    failed = Path(cfg["failed_dir"])

    async def refused() -> bool:
        return len(list(failed.glob("*.error.json"))) == 3

    await wait_for(refused, what="three refusals in failed/")
    reports = {
        json.loads(p.read_text())["file"]: json.loads(p.read_text())["error"] for p in failed.glob("*.error.json")
    }
    assert "a symbolic link" in reports["link.json"] and "a FIFO" in reports["pipe.json"]
    assert "a symbolic link" in reports["linked-folder"]
    rows = [r for r in await c.ingestions() if r["status"] in ("completed", "failed")]
    assert [r["file_name"] for r in rows] == ["good.json"] and rows[0]["status"] == "completed"
    _, applied = await c.call("GET", f"{c.rurl}/ingestions/{rows[0]['ingestion_id']}/records")
    assert "SECRET" not in json.dumps(applied)
    assert os.listdir(inbox) == []
    assert c.daemon is not None
    c.daemon.send_signal(signal.SIGTERM)
    assert await c.exit_code(10) == 0


async def test_a_name_that_is_not_utf8_is_ingested_and_survives_a_restart(make_cluster: Any, tmp_path: Path) -> None:
    """A Latin-1 name (März.json from an SMB share) completes, keeps its exact bytes in done/, is shown
    readably, and a restart with it in the state database starts normally."""
    cfg = inbox_config(tmp_path, settle_seconds=0.2)
    c = make_cluster(inbox=cfg)
    await c.start_receiver()
    await c.start_daemon()
    inbox = os.fsencode(cfg["dir"])
    name = b"M\xe4rz.json"
    with open(os.path.join(inbox, b".tmp"), "w") as f:
        json.dump([product(i) for i in range(3)], f)
    os.rename(os.path.join(inbox, b".tmp"), os.path.join(inbox, name))

    async def one_done() -> bool:
        rows = await c.ingestions()
        return len(rows) == 1 and rows[0]["status"] == "completed"

    await wait_for(one_done, what="the Latin-1 file completed")
    [row] = await c.ingestions()
    assert row["file_name"] == "M\\xe4rz.json"
    done = os.fsencode(cfg["done_dir"])

    async def in_done() -> bool:
        return any(name in os.listdir(os.path.join(done, t)) for t in os.listdir(done))

    await wait_for(in_done, what="the file in done/ under its own bytes")
    await c.kill_daemon()
    await c.start_daemon()  # reconcile reads the stored path back: no crash loop
    [again] = await c.ingestions()
    assert again["status"] == "completed" and again["path"].endswith("M\\xe4rz.json")


async def test_an_inbox_copy_of_an_api_ingestion_is_finished(make_cluster: Any, tmp_path: Path) -> None:
    """The same bytes dropped in the inbox while the API ingestion runs follow it, and go to done/ when it ends."""
    cfg = inbox_config(tmp_path, settle_seconds=0.2)
    c = make_cluster(inbox=cfg)
    await c.start_receiver()
    await c.start_daemon()
    await c.faults([{"action": "delay_ack", "seconds": 0.4, "times": 3}])
    records = [product(i) for i in range(30)]
    api_copy = c.data / "feed.json"
    write_records(api_copy, records)
    ing = await c.ingest(api_copy)
    inbox = Path(cfg["dir"])
    (inbox / ".tmp").write_bytes(api_copy.read_bytes())
    os.rename(inbox / ".tmp", inbox / "feed.json")
    assert (await c.settle(ing))["status"] == "completed"
    await wait_for(lambda: _count(Path(cfg["done_dir"]), 1), what="the inbox copy in done/")
    assert files_under(Path(cfg["processing_dir"])) == [] and len(await c.ingestions()) == 1


async def test_same_bytes_again_resume_from_the_new_copy(
    make_daemon: MakeDaemon, receiver: Receiver, tmp_path: Path
) -> None:
    """A failed ingestion whose file was cleaned away from failed/ resumes from a new drop of the same
    bytes, after the last ACKed chunk: every record applied exactly once."""
    cfg = inbox_config(tmp_path)
    d = await make_daemon(inbox=cfg)
    await receiver.faults([{"action": "reject_final", "chunk": 2}])
    records = [product(i) for i in range(25)]
    inbox = Path(cfg["dir"])
    write_records(inbox / ".tmp", records)
    data = (inbox / ".tmp").read_bytes()
    os.rename(inbox / ".tmp", inbox / "daily.json")
    [row] = await wait_all_done(d, 1)
    assert row["status"] == "failed" and row["chunks_acked"] == 1
    await wait_for(lambda: _count(Path(cfg["failed_dir"]), 2), what="the file and its report in failed/")
    import shutil

    shutil.rmtree(cfg["failed_dir"])  # an operator's clean-up
    os.mkdir(cfg["failed_dir"])
    await receiver.faults([])
    (inbox / ".tmp").write_bytes(data)
    os.rename(inbox / ".tmp", inbox / "daily-again.json")
    st = await d.wait(row["ingestion_id"], ("completed",))
    assert st["file_name"] == "daily-again.json" and st["records_acked"] == 25
    applied = [json.loads(a["record"]) for a in await receiver.records(row["ingestion_id"])]
    assert applied == records
    await wait_for(lambda: _count(Path(cfg["done_dir"]), 1), what="the new copy in done/")


async def test_a_file_that_grows_after_it_was_read_never_completes(
    make_daemon: MakeDaemon, receiver: Receiver, tmp_path: Path
) -> None:
    """A writer that opens the file again while the daemon delivers it (where it lies now, in processing/) and
    appends: what was there at the spool pass is delivered, but the final check sees the change, the ingestion
    fails saying the file changed, never completes, and the file goes to failed/ with its report."""
    cfg = inbox_config(tmp_path, settle_seconds=0.3)
    d = await make_daemon(inbox=cfg)
    await receiver.faults([{"action": "delay_ack", "seconds": 0.3, "times": 100}])
    target = Path(cfg["dir"]) / "export.jsonl"
    with open(target, "w") as f:
        for i in range(30):
            f.write(json.dumps(product(i)) + "\n")

    async def taken() -> bool:
        return len(await all_ingestions(d)) == 1

    await wait_for(taken, what="the first burst taken")
    await asyncio.sleep(0.5)  # the spool pass has read the first burst; chunks are in flight
    [moved] = Path(cfg["processing_dir"]).glob("*/export.jsonl")
    with open(moved, "a") as f:
        for i in range(30, 60):
            f.write(json.dumps(product(i)) + "\n")  # the writer's second burst, into the moved file
    [row] = await wait_all_done(d, 1, timeout=30)
    assert row["status"] == "failed" and "changed" in row["error"], row
    _, summary = await receiver_summary(receiver, row["ingestion_id"])
    assert summary.get("completed") is not True
    await wait_for(lambda: _count(Path(cfg["failed_dir"]), 2), what="file and report in failed/")
    [report_path] = Path(cfg["failed_dir"]).glob("*.error.json")
    assert "changed" in json.loads(report_path.read_text())["error"]
    assert files_under(Path(cfg["done_dir"])) == []


async def receiver_summary(receiver: Receiver, ingestion_id: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(f"{receiver.url}/ingestions/{ingestion_id}") as r:
        return r.status, dict(await r.json())


async def test_the_inbox_folder_is_group_writable_under_a_strict_umask(make_cluster: Any, tmp_path: Path) -> None:
    """Under systemd's UMask=0027 the daemon creates the inbox 0770, so the group can drop files."""
    cfg = inbox_config(tmp_path)
    c = make_cluster(inbox=cfg)
    old = os.umask(0o027)
    try:
        await c.start_receiver()
        await c.start_daemon()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(cfg["dir"]).st_mode) == 0o770


def test_every_rename_is_made_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lifecycle move fsyncs the folder it lands in, the folder it left, and every folder it created."""
    synced: list[str] = []
    real_fsync, real_open = os.fsync, os.open
    opened: dict[int, str] = {}

    def spy_open(path: Any, flags: int, *a: Any) -> int:
        fd = real_open(path, flags, *a)
        opened[fd] = os.fspath(path)
        return fd

    def spy_fsync(fd: int) -> None:
        synced.append(opened.get(fd, "?"))
        real_fsync(fd)

    from pimingestd.intake import lifecycle as inbox_mod

    src = tmp_path / "in" / "a.json"
    src.parent.mkdir()
    src.write_text("[]")
    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "fsync", spy_fsync)
    inbox_mod._move_file(src, tmp_path / "processing" / "tok" / "sub" / "a.json")
    assert set(synced) >= {
        str(tmp_path / "processing" / "tok" / "sub"),
        str(tmp_path / "processing" / "tok"),
        str(tmp_path / "processing"),
        str(tmp_path),
        str(tmp_path / "in"),
    }, synced


def _lines(records: range) -> str:
    return "".join(json.dumps(product(i)) + "\n" for i in records)


async def _one_finished(c: Any) -> dict[str, Any]:
    async def finished() -> bool:
        rows = await c.ingestions()
        return len(rows) == 1 and rows[0]["status"] in ("completed", "failed")

    await wait_for(finished, timeout=40, what="one finished ingestion")
    [row] = await c.ingestions()
    return dict(row)


async def _write_in_bursts(c: Any, target: Path, first: str = "w") -> None:
    """Three bursts of 50 JSON Lines records, 2 s apart, to a file held open; the daemon must not take it
    until it is closed (checked after a last pause, four times settle_seconds)."""
    with open(target, first) as f:
        for burst in range(3):
            if burst:
                await asyncio.sleep(2)
            f.write(_lines(range(burst * 50, burst * 50 + 50)))
            f.flush()
        await asyncio.sleep(2)
        assert target.exists() and await c.ingestions() == [], "taken while its writer still had it open"


async def _all_150_delivered(c: Any, cfg: dict[str, Any]) -> None:
    row = await _one_finished(c)
    assert row["status"] == "completed" and row["records_acked"] == 150, row
    assert await c.applied(row["ingestion_id"]) == [product(i) for i in range(150)]
    await wait_for(lambda: _count(Path(cfg["done_dir"]), 1), what="the file in done/")
    [done] = Path(cfg["done_dir"]).glob("*/export.jsonl")
    assert done.read_text() == _lines(range(150))


@pytest.mark.parametrize("watch", ["auto", "poll"])
async def test_a_file_still_open_for_writing_is_not_taken_during_a_pause(
    make_cluster: Any, tmp_path: Path, watch: str
) -> None:
    """A JSON Lines export written in 3 bursts 2 s apart to a file its writer keeps open (settle_seconds 0.5)
    is taken only once the writer closed it: all 150 records delivered, completed, the whole file in done/.
    The daemon's read lease is refused while the file is open for writing (the real daemon process, root:
    CAP_LEASE), with inotify and with polling alike."""
    cfg = inbox_config(tmp_path, settle_seconds=0.5, watch=watch)
    c = make_cluster(inbox=cfg)
    await c.start_receiver()
    await c.start_daemon()
    await _write_in_bursts(c, Path(cfg["dir"]) / "export.jsonl")
    await _all_150_delivered(c, cfg)


async def test_a_file_renamed_in_while_its_writer_holds_it_waits_for_the_close(
    make_cluster: Any, tmp_path: Path
) -> None:
    """A writer that renames its file into the inbox before it has finished writing (and closing) it: the
    rename is no promise then; the file is taken after the close, whole."""
    cfg = inbox_config(tmp_path, settle_seconds=0.5)
    c = make_cluster(inbox=cfg)
    await c.start_receiver()
    await c.start_daemon()
    inbox = Path(cfg["dir"])
    with open(inbox / ".export.tmp", "w") as f:
        f.write(_lines(range(50)))
        f.flush()
        os.rename(inbox / ".export.tmp", inbox / "export.jsonl")
        await asyncio.sleep(2)
        assert await c.ingestions() == [], "taken at its rename while its writer still had it open"
        f.write(_lines(range(50, 150)))
    await _all_150_delivered(c, cfg)


async def _start_without_lease(c: Any) -> None:
    """The daemon as it usually runs: without CAP_LEASE (setpriv drops it), so it may take a lease only on a
    file it owns (root's), not on the exporter's (nobody's)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv (util-linux) is needed to start the daemon without CAP_LEASE")
    command = [setpriv, "--bounding-set", "-lease", "--inh-caps", "-lease", "--", sys.executable, "-m", "pimingestd"]
    with open(c.log, "ab") as out:  # the child keeps its own descriptor
        c.daemon = daemon = await asyncio.to_thread(
            subprocess.Popen, [*command, "run", "--config", str(c.cfg)], stdout=out, stderr=subprocess.STDOUT
        )
    await wait_http(c.durl + "/healthz", ok=lambda s: s == 200, timeout=30, alive=lambda: daemon.poll() is None)


async def test_without_a_lease_a_file_created_and_not_written_yet_is_not_taken(
    make_cluster: Any, tmp_path: Path
) -> None:
    """`exporter > inbox/export.jsonl`: the shell creates the file, and the exporter writes nothing for a while
    (its query runs). Without a lease the daemon knows from inotify that the file was created by an open (its
    IN_CREATE is followed by the creator's IN_OPEN), so the empty file is not taken; all 150 records are
    delivered once its writer closed it. A file hard-linked into the inbox (IN_CREATE with no open: no writer)
    is still taken once it settled."""
    cfg = inbox_config(tmp_path, settle_seconds=0.5)
    c = make_cluster(inbox=cfg)
    await c.start_receiver()
    await _start_without_lease(c)
    inbox = Path(cfg["dir"])
    fd = os.open(inbox / "export.jsonl", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with open(fd, "w") as f:
        os.fchown(fd, 65534, 65534)  # the exporter's file (nobody's): the daemon has no lease on it
        await asyncio.sleep(3)  # the query runs: nothing written yet, six times settle_seconds
        assert await c.ingestions() == [], "an empty file taken while its writer still had it open"
        f.write(_lines(range(150)))
    await _all_150_delivered(c, cfg)
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text(_lines(range(150, 160)))
    os.chown(outside, 65534, 65534)
    os.link(outside, inbox / "linked.jsonl")

    async def linked_done() -> bool:
        return any(Path(cfg["done_dir"]).glob("*/linked.jsonl"))

    await wait_for(linked_done, timeout=30, what="the hard-linked file in done/")
    rows = {r["file_name"]: r for r in await c.ingestions()}
    assert rows["linked.jsonl"]["status"] == "completed" and rows["linked.jsonl"]["records_acked"] == 10


async def test_without_a_lease_inotify_close_events_keep_an_open_file(make_cluster: Any, tmp_path: Path) -> None:
    """The daemon as it usually runs: the exporter's file is not its own and it has no CAP_LEASE, so the lease
    cannot tell (EACCES). With inotify it still knows the file was written and not closed since: the same
    paused writer is taken only after its close, all 150 records."""
    cfg = inbox_config(tmp_path, settle_seconds=0.5)
    c = make_cluster(inbox=cfg)
    await c.start_receiver()
    await _start_without_lease(c)
    target = Path(cfg["dir"]) / "export.jsonl"
    target.touch()
    os.chown(target, 65534, 65534)  # the exporter's file (nobody's), not the daemon's
    await _write_in_bursts(c, target, first="a")
    await _all_150_delivered(c, cfg)
    assert "neither owns the file nor has CAP_LEASE" in c.log.read_text()


async def test_a_copy_following_a_running_ingestion_still_follows_it_after_a_crash(
    make_cluster: Any, tmp_path: Path
) -> None:
    """The same bytes dropped again while the first file is delivered follow its ingestion. The daemon is killed
    and started again: the ingestion resumes from its own file (still first.jsonl, not the copy), every record
    is applied once, and both files leave processing/ for done/ (none is left there with no ingestion)."""
    cfg = inbox_config(tmp_path, settle_seconds=0.2)
    c = make_cluster(inbox=cfg, chunking={"records": 10})
    await c.start_receiver()
    await c.start_daemon()
    await c.faults([{"action": "delay_ack", "seconds": 0.3, "times": 1000}])
    inbox, processing, done = Path(cfg["dir"]), Path(cfg["processing_dir"]), Path(cfg["done_dir"])
    for taken, name in enumerate(("first.jsonl", "again.jsonl"), 1):
        (inbox / ".export.tmp").write_text(_lines(range(60)))
        os.rename(inbox / ".export.tmp", inbox / name)
        await wait_for(lambda n=taken: _count(processing, n), what=f"{name} taken")

    async def following() -> bool:
        return "same bytes already being ingested; will follow it" in c.log.read_text()

    await wait_for(following, what="the copy following the first file's ingestion")
    [row] = await c.ingestions()
    assert row["status"] == "running", row
    await c.kill_daemon()
    await c.start_daemon()
    st = await c.settle(row["ingestion_id"])
    assert st["status"] == "completed" and st["file_name"] == "first.jsonl" and st["records_acked"] == 60, st
    await c.verify(row["ingestion_id"], [product(i) for i in range(60)])

    async def both_done() -> bool:
        return files_under(done) != [] and len(files_under(done)) == 2 and files_under(processing) == []

    await wait_for(both_done, what="both files in done/ and processing/ empty")
    assert sorted(p.name for p in done.glob("*/*.jsonl")) == ["again.jsonl", "first.jsonl"]
    assert [r["ingestion_id"] for r in await c.ingestions()] == [row["ingestion_id"]]
