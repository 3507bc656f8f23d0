"""The inbox: complete files only, atomic moves, names kept and never colliding, profiles, failures explained."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from pimingestd.inbox import check_relative_name, glob_match

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
    os.rename(inbox / ".tmp", inbox / "notes.csv")
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
