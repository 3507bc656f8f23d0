"""Retention: what a daemon that runs for years removes, and the disk use it reports.

Each step is opt-in (``[retention]``, 0 days = keep):

- chunk rows of ingestions completed or cancelled more than ``chunk_rows_days`` ago are removed, with
  their refused records, deletions and reject files (the copy placed in done/ goes with its folder); the
  ingestion's row stays as its summary (counts ACKed and rejected, manifest, error, times), so the API
  still answers for it;
- token folders in done/ and failed/ older than ``files_days`` are removed, with their reports, unless an
  ingestion still needs them: never the file of an ingestion that is queued or running (a failed file that
  was resumed is delivered from failed/), nor of a failed one (resumable: ``resume`` reads that file; cancel
  the ingestion to let its file go), and a completed or cancelled ingestion's file only ``files_days`` after
  it ended. A folder with no ingestion (a refused file, a copy of bytes ingested already) goes by its mtime.
  The check is made for each folder right before it is removed, against the state database, so it holds
  for ``pimingestd prune`` run beside the daemon too;
- after a prune the database gives its freed pages back (incremental vacuum; a database made before
  schema 4 is switched over once by a VACUUM), so the file shrinks.

Every ``interval_minutes`` it runs, and measures the disk use behind /metrics: the database's bytes,
bytes and files per inbox folder, spool bytes. ``pimingestd prune --dry-run`` shows the same plan
without removing anything. The walks and removals run in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from .config import Config
from .metrics import Metrics
from .model import FINAL
from .state import StateStore

log = structlog.get_logger("pimingestd.retention")

DAY = 86400.0


@dataclass
class Plan:
    ingestions: int = 0  # whose chunk rows go
    chunk_rows: int = 0
    folders: int = 0  # token folders in done/ and failed/
    kept: int = 0  # old folders kept: their ingestion is running, resumable (failed) or ended recently
    files: int = 0
    bytes: int = 0
    vacuumed_bytes: int = 0
    paths: list[str] = field(default_factory=list)  # the folders, for --dry-run

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Usage:
    state_bytes: int
    spool_bytes: int
    folders: dict[str, tuple[int, int]]  # folder -> (files, bytes)


def _walk(folder: Path) -> tuple[int, int]:
    files = size = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            try:
                size += os.lstat(os.path.join(root, name)).st_size
                files += 1
            except FileNotFoundError:
                pass
    return files, size


def _old_folders(folders: list[Path], before: float) -> list[tuple[Path, list[Path], int, int]]:
    """Token folders (and their reports) last changed before ``before``: (folder, reports, files, bytes)."""
    out = []
    for base in folders:
        if not base.is_dir():
            continue
        for entry in base.iterdir():
            if not entry.is_dir() or entry.is_symlink():
                continue
            try:
                changed = entry.lstat().st_mtime
            except FileNotFoundError:
                continue
            if changed >= before:
                continue
            report = base / f"{entry.name}.error.json"
            reports = [report] if report.exists() else []
            files, size = _walk(entry)
            out.append((entry, reports, files + len(reports), size + sum(r.stat().st_size for r in reports)))
    return out


class Retention:
    def __init__(self, config: Config, store: StateStore, metrics: Metrics) -> None:
        self.cfg = config.retention
        self.inbox = config.inbox
        self.spool_dir = config.daemon.state_db.parent / "spool"
        self.rejects_dir = config.daemon.state_db.parent / "rejects"
        self._store = store
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None

    async def plan(self, now: float | None = None) -> Plan:
        """What a run would remove now."""
        now = time.time() if now is None else now
        plan = Plan()
        if self.cfg.chunk_rows_days > 0:
            plan.ingestions, plan.chunk_rows = await self._store.prunable(now - self.cfg.chunk_rows_days * DAY)
        if self.cfg.files_days > 0:
            cutoff = now - self.cfg.files_days * DAY
            old = await asyncio.to_thread(_old_folders, [self.inbox.done_dir, self.inbox.failed_dir], cutoff)
            for folder, _reports, files, size in old:
                if await self._needed(folder.name, cutoff):
                    plan.kept += 1
                    continue
                plan.folders += 1
                plan.files += files
                plan.bytes += size
                plan.paths.append(str(folder))
        return plan

    def _roots(self) -> list[Path]:
        """Where an ingestion's recorded path can name a token folder (blocking: realpath): processing, done
        and failed as configured (the inbox records them so) and as real paths (the API records the real
        path of the file it is given, and the configured folders may lie behind a symlink)."""
        configured = [self.inbox.processing_dir, self.inbox.done_dir, self.inbox.failed_dir]
        return list(dict.fromkeys([*configured, *(root.resolve() for root in configured)]))

    async def _needed(self, token: str, cutoff: float) -> bool:
        """Whether an ingestion still needs the token folder ``token``: one recorded under it (in processing,
        done or failed: a path left stale by a crash counts too) is not completed or cancelled, or ended
        after ``cutoff``."""
        for root in await asyncio.to_thread(self._roots):
            for ing in await self._store.under(str(root / token)):
                if ing.status not in FINAL or ing.updated_at >= cutoff:
                    return True
        return False

    async def run(self, now: float | None = None) -> Plan:
        """Remove what the plan names; vacuum when rows went."""
        now = time.time() if now is None else now
        plan = Plan()
        if self.cfg.chunk_rows_days > 0:
            plan.ingestions, plan.chunk_rows = await self._store.prune_chunks(now - self.cfg.chunk_rows_days * DAY)
            self._metrics.pruned_rows.inc(plan.chunk_rows)
            if plan.ingestions:
                plan.files += await self._prune_reject_files()
            if plan.chunk_rows and self.cfg.vacuum:
                plan.vacuumed_bytes = await self._store.vacuum()
        if self.cfg.files_days > 0:
            cutoff = now - self.cfg.files_days * DAY
            old = await asyncio.to_thread(_old_folders, [self.inbox.done_dir, self.inbox.failed_dir], cutoff)
            for folder, reports, files, size in old:
                if await self._needed(folder.name, cutoff):  # checked now, not when the list was made
                    plan.kept += 1
                    continue
                await asyncio.to_thread(_remove, folder, reports)
                plan.folders += 1
                plan.files += files
                plan.bytes += size
            self._metrics.pruned_files.inc(plan.files)
        if plan.chunk_rows or plan.folders:
            log.info("retention pruned", **{k: v for k, v in plan.as_dict().items() if k != "paths"})
        return plan

    async def _prune_reject_files(self) -> int:
        """Remove the reject files of ingestions whose rows were pruned (or that no longer exist)."""
        names = await asyncio.to_thread(
            lambda: sorted(self.rejects_dir.glob("*.*")) if self.rejects_dir.is_dir() else []
        )
        removed = 0
        for path in names:
            ing = await self._store.get(path.name.partition(".")[0])
            if ing is None or ing.pruned_at is not None:
                await asyncio.to_thread(path.unlink, missing_ok=True)
                removed += 1
        return removed

    async def usage(self) -> Usage:
        folders = {
            "inbox": self.inbox.dir,
            "processing": self.inbox.processing_dir,
            "done": self.inbox.done_dir,
            "failed": self.inbox.failed_dir,
        }
        walked = {name: await asyncio.to_thread(_walk, path) for name, path in folders.items()}
        spool = await asyncio.to_thread(_walk, self.spool_dir)
        return Usage(await self._store.size(), spool[1], walked)

    async def measure(self) -> Usage:
        u = await self.usage()
        m = self._metrics
        m.state_bytes.set(u.state_bytes)
        m.spool_bytes.set(u.spool_bytes)
        for name, (files, size) in u.folders.items():
            m.folder_files.labels(name).set(files)
            m.folder_bytes.labels(name).set(size)
        return u

    def start(self) -> None:
        self._task = asyncio.create_task(self._forever(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _forever(self) -> None:
        while True:
            try:
                await self.run()
                await self.measure()
            except Exception as exc:  # a full disk, a folder that vanished: try again next time
                log.warning("retention run failed; trying again at the next interval", error=str(exc))
            await asyncio.sleep(self.cfg.interval_minutes * 60)


def _remove(folder: Path, reports: list[Path]) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    for report in reports:
        report.unlink(missing_ok=True)
