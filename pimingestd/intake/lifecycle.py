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
interrupted: a file in processing with no ingestion is submitted (the engine
dedups by file_id, so nothing is ingested twice); one whose ingestion ended is
moved on; a recorded path left stale by a crash is corrected.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
import os
import secrets
import shutil
import time
from collections import defaultdict
from contextlib import suppress
from pathlib import Path
from typing import Any

import orjson
import structlog

from .. import timestamps
from ..config import InboxConfig, Profile
from ..core.scheduler import Scheduler
from ..crashpoints import crash_point
from ..errors import ConfigError, Draining, PimIngestError, SourceError
from ..locations.local import refuse_reason, stat_identity
from ..model import UNFINISHED, Ingestion, IngestRequest, Status, Submitted
from ..names import readable
from ..sources import detect_format, option_names
from ..state import StateStore
from .inotify import Inotify, InotifyUnavailable

log = structlog.get_logger("pimingestd.intake")

UPLOADS = ".uploads"  # partial uploads, inside processing_dir (same filesystem, never watched)
ERROR_SUFFIX = ".error.json"  # <token>.error.json beside the token folder
_SOURCES = {"i": "inbox", "u": "upload"}


def glob_match(pattern: str, rel: str) -> bool:
    """Match a relative POSIX path against a glob: ``*`` stays within one folder, ``**`` spans any."""
    return _match(pattern.strip("/").split("/"), rel.split("/"))


def _match(pat: list[str], parts: list[str]) -> bool:
    if not pat:
        return not parts
    if pat[0] == "**":
        return any(_match(pat[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pat[0]) and _match(pat[1:], parts[1:])


def check_relative_name(name: str) -> str:
    """A safe relative POSIX path for an uploaded file; ValueError saying why not."""
    if not name or "\x00" in name:
        raise ValueError("the name is empty or contains a NUL byte")
    if name.startswith("/") or "\\" in name:
        raise ValueError("the name must be a relative path with / separators")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError("the name must not contain empty, '.' or '..' segments")
    if any(p.startswith(".") for p in parts):
        raise ValueError("hidden names (starting with '.') are not accepted")
    return name


class Inbox:
    def __init__(self, cfg: InboxConfig, engine: Scheduler, store: StateStore) -> None:
        self.cfg = cfg
        self._engine = engine
        self._store = store
        self._pending: dict[Path, tuple[tuple[int, int], float]] = {}
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        # Copies of the same bytes waiting for an ingestion to end: (token folder, size, mtime_ns).
        self._followers: dict[str, list[tuple[Path, tuple[int, int]]]] = defaultdict(list)
        self._refused: dict[Path, tuple[int, int]] = {}  # files that cannot even be moved, until they change
        self._watcher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one lifecycle move at a time
        self._watch_ready = asyncio.Event()  # set once events (or polling) cover the inbox
        self.watching = "off"

    # ---- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._prepare)
        self._engine.add_listener(self._on_ended)
        await self.reconcile()
        if self.cfg.watch != "off":
            self._watcher = asyncio.create_task(self._watch(), name="inbox-watch")
            # Return once the watch is in place: a file renamed in right after the start is then
            # taken at once, not found later by a rescan and made to wait out settle_seconds.
            ready = asyncio.create_task(self._watch_ready.wait())
            await asyncio.wait({ready, self._watcher}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()

    async def stop(self) -> None:
        """Stop taking files; ingestions already admitted go on in the engine."""
        tasks = [t for t in (self._watcher, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._watcher = None

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

    def profile_for(self, rel: str) -> Profile | None:
        return next((p for p in self.cfg.profiles if glob_match(p.match, rel)), None)

    def ignored(self, rel: str) -> bool:
        return any(fnmatch.fnmatchcase(part, pat) for part in rel.split("/") for pat in self.cfg.ignore)

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
        """Submit ``folder/rel`` (already in processing) to the engine; settle duplicates.

        Raises PimIngestError when the engine refuses the file; the file is then in failed_dir."""
        path = folder / rel
        try:
            req = self._request(folder, rel, source, overrides or {})
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

    def _request(self, folder: Path, rel: str, source: str, overrides: dict[str, Any]) -> IngestRequest:
        """The matching profile's settings, then the caller's (an upload's query). A profile's format
        options that do not apply to this file's format are left out: one glob may match several."""
        profile = self.profile_for(rel)
        given = {k: v for k, v in overrides.items() if v is not None}
        settings: dict[str, Any] = {}
        options: dict[str, Any] = {}
        if profile is not None:
            settings = {k: getattr(profile, k) for k in ("format", "chunk_records", "chunk_bytes", "re_ingestion")}
            fmt = given.get("format") or profile.format or detect_format(Path(rel))
            applies = option_names(fmt)
            options = {k: v for k, v in profile.options.items() if k in applies}
        if "chunk_records" in given or "chunk_bytes" in given:
            settings.pop("chunk_records", None)  # the caller's chunking replaces the profile's as a whole
            settings.pop("chunk_bytes", None)
        options.update(given.pop("options", {}))
        settings.update(given)
        return IngestRequest(path=folder / rel, source=source, name=rel, options=options, **settings)

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
        except OSError as exc:  # EXDEV (a mount inside the inbox), EACCES on the folder...
            self._refused[src] = signature
            log.error(
                "inbox file cannot be moved into processing; it stays in the inbox until it changes",
                file=rel,
                error=exc.strerror or str(exc),
            )
            return
        self._refused.pop(src, None)
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
            crash_point("inbox.after-finish")
            if copy_of is None and files:
                await self._store.set_path(ing.id, str(dest / files[0]))
            log.info(
                "inbox file finished",
                ingestion_id=ing.id,
                status="completed" if completed else "failed",
                folder=str(dest),
                files=[readable(f) for f in files],
            )

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

    async def _watch(self) -> None:
        ino: Inotify | None = None
        if self.cfg.watch == "auto":
            try:
                ino = Inotify()
            except (InotifyUnavailable, OSError) as exc:
                log.warning("inotify unavailable; polling the inbox", error=str(exc))
        try:
            if ino is not None:
                self.watching = "inotify"
                await self._watch_events(ino)
            else:
                self.watching = "poll"
                self._watch_ready.set()
                await self._watch_poll()
        finally:
            if ino is not None:
                ino.close()

    def _scan(self) -> dict[Path, tuple[int, int]]:
        """Every entry that is not a real folder (files, and links, FIFOs... to be refused), by lstat."""
        found: dict[Path, tuple[int, int]] = {}
        root = self.cfg.dir
        for current, dirs, files in os.walk(root):
            base = Path(current)
            links = [d for d in dirs if os.path.islink(base / d)]  # a link to a folder: refused like a file
            dirs[:] = [d for d in dirs if not self.ignored(d) and d not in links]
            for name in (*files, *links):
                path = base / name
                if self.ignored(path.relative_to(root).as_posix()):
                    continue
                try:
                    found[path] = stat_identity(path)
                except FileNotFoundError:
                    continue
        return found

    async def _watch_poll(self) -> None:
        while True:
            found = await asyncio.to_thread(self._scan)
            now = time.monotonic()
            for path in list(self._pending):
                if path not in found:
                    del self._pending[path]
            for path, sig in found.items():
                seen = self._pending.get(path)
                if seen is None or seen[0] != sig:
                    self._pending[path] = (sig, now)
                elif now - seen[1] >= self.cfg.settle_seconds:
                    del self._pending[path]
                    await self.take(path)
            await asyncio.sleep(self.cfg.poll_interval)

    async def _watch_events(self, ino: Inotify) -> None:
        skip = frozenset(d for d in os.listdir(self.cfg.dir) if self.ignored(d))
        await asyncio.to_thread(ino.watch_tree, self.cfg.dir, skip)
        self._watch_ready.set()
        settler = asyncio.create_task(self._settle(), name="inbox-settle")
        self._tasks.add(settler)
        settler.add_done_callback(self._tasks.discard)
        await self._note_all()
        async for kind, path in ino.events():
            if kind == "overflow":
                await self._note_all()
                continue
            if not path.is_relative_to(self.cfg.dir):
                continue
            rel = path.relative_to(self.cfg.dir).as_posix()
            if self.ignored(rel):
                continue
            if kind == "dir":
                await self._note_all()
            elif kind == "moved_in":
                self._pending.pop(path, None)
                if not await asyncio.to_thread(os.path.isdir, path) or await asyncio.to_thread(os.path.islink, path):
                    await self.take(path)
            else:
                await self._note(path)

    async def _note_all(self) -> None:
        for path, sig in (await asyncio.to_thread(self._scan)).items():
            if path not in self._pending:
                self._pending[path] = (sig, time.monotonic())
        self._wake.set()

    async def _note(self, path: Path) -> None:
        try:
            signature = await asyncio.to_thread(stat_identity, path)
        except FileNotFoundError:
            self._pending.pop(path, None)
            return
        self._pending[path] = (signature, time.monotonic())
        self._wake.set()

    async def _settle(self) -> None:
        """Take pending files once their size and mtime held still for settle_seconds."""
        settle = self.cfg.settle_seconds
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            due = min(since for _, since in self._pending.values()) + settle
            delay = due - time.monotonic()
            if delay > 0:
                self._wake.clear()
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                continue
            now = time.monotonic()
            for path, (sig, since) in list(self._pending.items()):
                if now - since < settle:
                    continue
                try:
                    current = await asyncio.to_thread(stat_identity, path)
                except FileNotFoundError:
                    self._pending.pop(path, None)
                    continue
                if current != sig:
                    self._pending[path] = (current, time.monotonic())
                    continue
                self._pending.pop(path, None)
                await self.take(path)


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
