"""The inbox folder and the lifecycle of the files that come through it (and through uploads).

    inbox/<rel>  --take-->  processing/<token>/<rel>  --ingestion ends-->  done/<token>/<rel>
                                                                        or failed/<token>/<rel> + failed/<token>.error.json

A token folder holds exactly one file, the source. Its report lies beside the
folder, never inside it, so no name a user gives a file can be taken for a
report (a source named ``x.error.json`` is an ordinary source).

Only regular files are taken. A symlink (which could point anywhere the
daemon may read, outside ``allowed_roots``), FIFO, socket or device found in
the inbox is moved, as it is and without being opened, to failed/ with a
report saying what it is. Any error with one file (a name that is not
UTF-8, EACCES, EXDEV) is that file's alone: it gets a report where one can be
written, and the watcher and the start go on. Every rename is followed by an
fsync of the folders it touched, so a file answered 202 survives a power loss.

A file is taken once complete: at once when it was renamed into the inbox
(inotify's IN_MOVED_TO), else when its size and mtime have not changed for
``settle_seconds``. Taking is one rename into a fresh token folder (the token
is unique, so names never collide, and the relative path, subfolders included,
is kept). Finishing is one rename of the whole token folder. Every step is a
single rename, and ``reconcile`` at start finishes whatever a crash
interrupted: a file in processing with no ingestion is submitted (the scheduler
dedups by file_id, so nothing is ingested twice); one whose ingestion ended is
moved on; a recorded path left stale by a crash is corrected.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
import shutil
from collections import defaultdict
from contextlib import suppress
from pathlib import Path
from typing import Any

import orjson
import structlog

from .. import timestamps
from ..config import InboxConfig
from ..core.scheduler import Scheduler
from ..crashpoints import crash_point
from ..diskspace import disk_full, is_full
from ..errors import ConfigError, Draining, PimIngestError, SourceError
from ..locations.local import refuse_reason, stat_identity
from ..model import UNFINISHED, Ingestion, Status, Submitted
from ..names import readable
from ..records import reject_file
from ..state import StateStore
from . import profiles
from .watcher import Watcher

log = structlog.get_logger("pimingestd.intake")

UPLOADS = ".uploads"  # partial uploads, inside processing_dir (same filesystem, never watched)
ERROR_SUFFIX = ".error.json"  # <token>.error.json beside the token folder
_SOURCES = {"i": "inbox", "u": "upload"}


class Inbox:
    def __init__(self, cfg: InboxConfig, engine: Scheduler, store: StateStore) -> None:
        self.cfg = cfg
        self._engine = engine
        self._store = store
        # Copies of the same bytes waiting for an ingestion to end: (token folder, size, mtime_ns).
        self._followers: dict[str, list[tuple[Path, tuple[int, int]]]] = defaultdict(list)
        self._refused: dict[Path, tuple[int, int]] = {}  # files that cannot even be moved, until they change
        self._lock = asyncio.Lock()  # one lifecycle move at a time
        self.watcher = Watcher(cfg, self.take, self.ignored)
        self.conditions = store.conditions  # a full disk, for /healthz
        self._retries: dict[Path, asyncio.Task[None]] = {}  # files to take again once there is space

    # ---- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._prepare)
        self._engine.add_listener(self._on_ended)
        await self.reconcile()
        if self.cfg.watch != "off":
            await self.watcher.start()

    async def stop(self) -> None:
        for task in list(self._retries.values()):
            task.cancel()
        self._retries.clear()
        """Stop taking files; ingestions already admitted go on in the scheduler."""
        await self.watcher.stop()

    def _prepare(self) -> None:
        c = self.cfg
        if not c.dir.exists():
            # Group-writable, so members of the daemon's group can drop files, whatever the umask
            # (systemd's UMask=0027 would make it 0750). An existing folder keeps its mode.
            c.dir.mkdir(parents=True)
            os.chmod(c.dir, 0o770)
        for p in (c.processing_dir, c.done_dir, c.failed_dir, c.processing_dir / UPLOADS):
            p.mkdir(parents=True, exist_ok=True)
        devices = {
            name: os.stat(p).st_dev
            for name, p in (
                ("dir", c.dir),
                ("processing_dir", c.processing_dir),
                ("done_dir", c.done_dir),
                ("failed_dir", c.failed_dir),
            )
        }
        if len(set(devices.values())) > 1:
            where = ", ".join(f"inbox.{k} on device {v}" for k, v in devices.items())
            raise ConfigError(f"the inbox folders must be on one filesystem so files move by atomic rename ({where})")

    # ---- placing files ---------------------------------------------------------------

    @staticmethod
    def new_token(source: str) -> str:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        return f"{source[0]}{stamp}-{secrets.token_hex(4)}"

    def ignored(self, rel: str) -> bool:
        return profiles.ignored(self.cfg.ignore, rel)

    def upload_temp(self) -> Path:
        return self.cfg.processing_dir / UPLOADS / f"{secrets.token_hex(8)}.part"

    async def place_upload(self, temp: Path, rel: str) -> Path:
        """Rename a finished upload into a fresh token folder; returns the folder."""
        folder = self.cfg.processing_dir / self.new_token("upload")
        await asyncio.to_thread(_move_file, temp, folder / rel)
        return folder

    async def discard(self, folder: Path) -> None:
        """Remove a token folder that was not admitted (an upload answered 503)."""
        await asyncio.to_thread(shutil.rmtree, folder, True)
        await asyncio.to_thread(_fsync_dir, folder.parent)

    async def admit(self, folder: Path, rel: str, source: str, overrides: dict[str, Any] | None = None) -> Submitted:
        """Submit ``folder/rel`` (already in processing) to the scheduler; settle duplicates.

        Raises PimIngestError when the scheduler refuses the file; the file is then in failed_dir."""
        path = folder / rel
        try:
            req = profiles.request_for(self.cfg.profiles, folder / rel, rel, source, overrides or {})
            reason = await asyncio.to_thread(refuse_reason, path)
            if reason is not None:
                raise SourceError(f"{readable(rel)} is {reason}")
            submitted = await self._engine.submit(req)
        except Draining:
            raise  # left in processing: the next start admits it
        except PimIngestError as exc:
            await self._reject(folder, rel, str(exc))
            raise
        except OSError as exc:  # EACCES and the like: this file's problem alone
            error = SourceError(f"{readable(rel)}: cannot read the file: {exc.strerror or exc}")
            await self._reject(folder, rel, str(error))
            raise error from None
        crash_point("inbox.after-submit")
        ing = submitted.ingestion
        if submitted.created or submitted.adopted:
            return submitted  # the ingestion reads this copy; its end moves this folder
        if ing.status == Status.COMPLETED:
            log.info("same bytes already ingested; moving to done", file=rel, ingestion_id=ing.id, file_id=ing.file_id)
            await self._finish(folder, ing, copy_of=await asyncio.to_thread(stat_identity, path))
        else:
            log.info("same bytes already being ingested; will follow it", file=rel, ingestion_id=ing.id)
            self._followers[ing.id].append((folder, await asyncio.to_thread(stat_identity, path)))
        return submitted

    async def take(self, src: Path) -> None:
        """Move a complete inbox file into processing and admit it. Never raises for one file's
        trouble: the watcher goes on with the others."""
        rel = src.relative_to(self.cfg.dir).as_posix()
        folder = self.cfg.processing_dir / self.new_token("inbox")
        try:
            signature = await asyncio.to_thread(stat_identity, src)
            if self._refused.get(src) == signature:
                return  # could not be moved before, and has not changed since
            await asyncio.to_thread(_move_file, src, folder / rel)
        except FileNotFoundError:
            return  # gone meanwhile (taken already, or removed by its owner)
        except OSError as exc:
            if is_full(exc):  # no space for the token folder: it stays in the inbox and is tried again
                error = disk_full("the inbox", folder, "inbox")
                self.conditions.full("inbox", str(error))
                log.error("inbox file not taken: the disk is full; trying again", file=rel, error=str(error))
                self._retry_later(src)
                return
            # EXDEV (a mount inside the inbox), EACCES on the folder...
            self._refused[src] = signature
            log.error(
                "inbox file cannot be moved into processing; it stays in the inbox until it changes",
                file=rel,
                error=exc.strerror or str(exc),
            )
            return
        self._refused.pop(src, None)
        self.conditions.cleared("inbox")
        crash_point("inbox.after-take")
        log.info("inbox file taken", file=rel, folder=folder.name)
        try:
            await self.admit(folder, rel, "inbox")
        except Draining:
            log.info("inbox file left in processing while the daemon stops; the next start admits it", file=rel)
        except PimIngestError as exc:
            log.error("inbox file refused", file=rel, error=str(exc))
        except Exception:
            log.exception("inbox file could not be admitted", file=rel)

    def _retry_later(self, src: Path, delay: float = 5.0) -> None:
        if src in self._retries:
            return

        async def again() -> None:
            await asyncio.sleep(delay)
            self._retries.pop(src, None)
            if await asyncio.to_thread(src.exists):
                await self.watcher.again(src)  # settle and open-for-writing checks again: it may be in use now

        self._retries[src] = asyncio.create_task(again(), name=f"inbox-retry-{src.name}")

    # ---- finishing -----------------------------------------------------------------------

    def _token_folder(self, path: Path) -> Path | None:
        for root in (self.cfg.processing_dir, self.cfg.failed_dir, self.cfg.done_dir):
            if path.is_relative_to(root) and path != root:
                return root / path.relative_to(root).parts[0]
        return None

    async def _on_ended(self, ing: Ingestion) -> None:
        """An ingestion ended: move its own token folder (whatever its source: an API ingestion
        may have adopted an inbox copy) and every copy that followed it."""
        followers = self._followers.pop(ing.id, [])
        folder = self._token_folder(Path(ing.path))
        if folder is not None:
            await self._finish(folder, ing)
        for other, identity in followers:
            await self._finish(other, ing, copy_of=identity)

    async def _finish(self, folder: Path, ing: Ingestion, *, copy_of: tuple[int, int] | None = None) -> None:
        """Move a token folder to done/ or failed/. ``copy_of``: the folder holds another copy of
        the same bytes (with this size and mtime when it was admitted), not the file ingested."""
        async with self._lock:
            completed = ing.status == Status.COMPLETED
            if not await asyncio.to_thread(folder.is_dir):
                return
            files = await asyncio.to_thread(_files_in, folder)
            error = ing.error
            if copy_of is not None:
                error = f"same bytes as ingestion {ing.id}, which {ing.status}" + (
                    f": {ing.error}" if ing.error else ""
                )
            if completed and files:
                # The file may have grown or changed after its bytes were delivered: then it is not
                # what PIM-Core received, and it does not belong in done/.
                changed = await asyncio.to_thread(_changed, folder / files[0], copy_of or (ing.size, ing.mtime_ns))
                if changed is not None:
                    completed = False
                    error = (
                        f"the file changed after ingestion {ing.id} delivered it ({changed}); what PIM-Core"
                        " received is the file as it was. Drop the complete file again."
                    )
            root = self.cfg.done_dir if completed else self.cfg.failed_dir
            if folder.parent == root:
                return
            report_path = self.cfg.failed_dir / (folder.name + ERROR_SUFFIX)
            if not completed:
                chunks, records = await self._store.progress(ing.id)
                report = _report(ing.id, ing.file_id, files[0] if files else "", str(ing.status), error)
                report.update(stopped_at_chunk=chunks + 1, records_acked=records)
                await asyncio.to_thread(_write_error, report_path, report)
            crash_point("inbox.before-finish")
            dest = root / folder.name
            await asyncio.to_thread(_move_folder, folder, dest)
            if completed:
                await asyncio.to_thread(report_path.unlink, missing_ok=True)  # from an earlier failure
                if ing.records_rejected and copy_of is None and files:
                    await self._place_rejects(ing, dest / files[0])
            crash_point("inbox.after-finish")
            if copy_of is None and files:
                await self._store.set_path(ing.id, str(dest / files[0]))
            log.info(
                "inbox file finished",
                ingestion_id=ing.id,
                status=Status.COMPLETED if completed else Status.FAILED,
                folder=str(dest),
                files=[readable(f) for f in files],
            )

    async def _place_rejects(self, ing: Ingestion, beside: Path) -> None:
        """The reject file beside the file in done/, as ``<name>.rejects.<ext>`` (``<name>.rejects-2.<ext>`` beside
        a source of that name: a reject file dropped in again): the operator fixes those rows and drops that
        file in again. (Lost only if the daemon dies between the two moves: the API keeps it.)"""
        source = self._engine.reject_file(ing)

        def place() -> Path:  # never over the source, nor over any other file there ("x": created, or refused)
            taken = {p.name for p in beside.parent.iterdir()}
            target = beside.parent / reject_file.placed_name(beside.name, ing.format, taken)
            with open(source, "rb") as src, open(target, "xb") as out:
                try:
                    shutil.copyfileobj(src, out)
                except BaseException:
                    target.unlink(missing_ok=True)
                    raise
            return target

        target = beside.parent / reject_file.download_name(beside.name, ing.format)
        try:
            target = await asyncio.to_thread(place)
        except OSError as exc:
            log.error("reject file not placed in done/", error=str(exc), path=str(target))
            return
        log.info("reject file placed", path=str(target), records=ing.records_rejected)

    async def _reject(self, folder: Path, rel: str, error: str) -> None:
        """The file was refused outright (no ingestion): failed_dir with the reason."""
        async with self._lock:
            report = _report(None, None, rel, "refused", error)
            await asyncio.to_thread(_write_error, self.cfg.failed_dir / (folder.name + ERROR_SUFFIX), report)
            await asyncio.to_thread(_move_folder, folder, self.cfg.failed_dir / folder.name)
        log.error("file refused", file=rel, error=error)

    # ---- recovery ------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Finish whatever a crash interrupted; see the module docstring. One folder's trouble
        is logged and left for the operator; it never stops the start."""
        c = self.cfg
        await asyncio.to_thread(_clear, c.processing_dir / UPLOADS)
        for stale in await self._store.under(str(c.processing_dir)):
            if stale.status in UNFINISHED or await asyncio.to_thread(os.path.lexists, stale.path):
                continue
            inside = Path(stale.path).relative_to(c.processing_dir)
            for root in (c.done_dir, c.failed_dir):
                if await asyncio.to_thread(os.path.lexists, root / inside):
                    await self._store.set_path(stale.id, str(root / inside))
                    break
        await asyncio.to_thread(_remove_orphan_reports, c.failed_dir)
        folders = await asyncio.to_thread(
            lambda: sorted(p for p in c.processing_dir.iterdir() if p.is_dir() and p.name != UPLOADS)
        )
        for folder in folders:
            try:
                await self._reconcile_folder(folder)
            except Exception:
                log.exception("could not finish an interrupted inbox step; left as it is", folder=str(folder))

    async def _reconcile_folder(self, folder: Path) -> None:
        files = await asyncio.to_thread(_files_in, folder)
        if not files:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            return
        rel = files[0]
        ing = await self._store.by_path(str(folder / rel))
        if ing is None:
            with suppress(PimIngestError):  # admit moved it to failed_dir with the reason
                await self.admit(folder, rel, _SOURCES.get(folder.name[:1], "inbox"))
        elif ing.status not in UNFINISHED:
            await self._finish(folder, ing)

    # ---- watching ------------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs(folder: Path) -> None:
    """mkdir -p, each new folder's entry made durable in its parent."""
    if folder.is_dir():
        return
    _makedirs(folder.parent)
    with suppress(FileExistsError):
        folder.mkdir()
    _fsync_dir(folder.parent)


def _move_file(src: Path, dest: Path) -> None:
    """One rename, durable: the new entry and the removal of the old one reach the disk."""
    _makedirs(dest.parent)
    os.rename(src, dest)
    _fsync_dir(dest.parent)
    if src.parent != dest.parent:
        _fsync_dir(src.parent)


def _move_folder(folder: Path, dest: Path) -> None:
    os.rename(folder, dest)
    _fsync_dir(dest.parent)
    _fsync_dir(folder.parent)


def _files_in(folder: Path) -> list[str]:
    """The entries of a token folder other than folders (exactly one: the source), by lstat."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir() or p.is_symlink())


def _changed(path: Path, identity: tuple[int, int]) -> str | None:
    try:
        now = stat_identity(path)
    except FileNotFoundError:
        return "it is gone"
    if now == identity:
        return None
    return f"it had {identity[0]} bytes, now {now[0]}" if now[0] != identity[0] else "its mtime changed"


def _report(ingestion_id: str | None, file_id: str | None, rel: str, status: str, error: str | None) -> dict[str, Any]:
    return {
        "ingestion_id": ingestion_id,
        "file_id": file_id,
        "file": readable(rel),
        "status": status,
        "error": None if error is None else readable(error),
        "stopped_at_chunk": None,
        "records_acked": 0,
        "time": timestamps.now(),
    }


def _write_error(target: Path, report: dict[str, Any]) -> None:
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as out:
        out.write(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)
    _fsync_dir(target.parent)


def _remove_orphan_reports(failed: Path) -> None:
    """A report whose token folder is no longer in failed/ (it completed on resume, and a crash
    came between the move and the report's removal)."""
    for report in failed.glob("*" + ERROR_SUFFIX):
        if not (failed / report.name[: -len(ERROR_SUFFIX)]).is_dir():
            report.unlink(missing_ok=True)


def _clear(folder: Path) -> None:
    for p in folder.iterdir():
        if p.is_file():
            p.unlink(missing_ok=True)
