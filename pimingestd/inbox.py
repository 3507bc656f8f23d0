"""The inbox folder and the lifecycle of the files that come through it (and through uploads).

    inbox/<rel>  --take-->  processing/<token>/<rel>  --ingestion ends-->  done/<token>/<rel>
                                                                        or failed/<token>/<rel> + <rel>.error.json

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

from .config import InboxConfig, Profile
from .crashpoints import crash_point
from .engine import Engine, IngestRequest, Submitted
from .errors import ConfigError, PimIngestError
from .inotify import Inotify, InotifyUnavailable
from .store import UNFINISHED, Ingestion, Store

log = structlog.get_logger("pimingestd.inbox")

UPLOADS = ".uploads"  # partial uploads, inside processing_dir (same filesystem, never watched)
ERROR_SUFFIX = ".error.json"
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
    def __init__(self, cfg: InboxConfig, engine: Engine, store: Store) -> None:
        self.cfg = cfg
        self._engine = engine
        self._store = store
        self._pending: dict[Path, tuple[tuple[int, int], float]] = {}
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._followers: dict[str, list[Path]] = defaultdict(list)
        self._watcher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one lifecycle move at a time
        self.watching = "off"

    # ---- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._prepare)
        self._engine.add_listener(self._on_ended)
        await self.reconcile()
        if self.cfg.watch != "off":
            self._watcher = asyncio.create_task(self._watch(), name="inbox-watch")

    async def stop(self) -> None:
        """Stop taking files; ingestions already admitted go on in the engine."""
        tasks = [t for t in (self._watcher, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._watcher = None

    def _prepare(self) -> None:
        c = self.cfg
        for p in (c.dir, c.processing_dir, c.done_dir, c.failed_dir, c.processing_dir / UPLOADS):
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

    async def admit(self, folder: Path, rel: str, source: str, overrides: dict[str, Any] | None = None) -> Submitted:
        """Submit ``folder/rel`` (already in processing) to the engine; settle duplicates.

        Raises PimIngestError when the engine refuses the file; the file is then in failed_dir."""
        path = folder / rel
        profile = self.profile_for(rel)
        opts: dict[str, Any] = {}
        if profile is not None:
            opts = {
                k: getattr(profile, k)
                for k in ("format", "json_path", "sheet", "chunk_records", "chunk_bytes", "re_ingestion")
            }
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        if "chunk_records" in given or "chunk_bytes" in given:
            opts.pop("chunk_records", None)  # the caller's chunking replaces the profile's as a whole
            opts.pop("chunk_bytes", None)
        opts.update(given)
        req = IngestRequest(path=path, source=source, name=rel, **opts)
        try:
            submitted = await self._engine.submit(req)
        except PimIngestError as exc:
            await self._reject(folder, rel, str(exc))
            raise
        crash_point("inbox.after-submit")
        ing = submitted.ingestion
        if submitted.created:
            return submitted
        if ing.status == "completed":
            log.info("same bytes already ingested; moving to done", file=rel, ingestion_id=ing.id, file_id=ing.file_id)
            await self._finish(folder, ing, duplicate=True)
        else:
            log.info("same bytes already being ingested; will follow it", file=rel, ingestion_id=ing.id)
            self._followers[ing.id].append(folder)
        return submitted

    async def take(self, src: Path) -> None:
        """Move a complete inbox file into processing and admit it."""
        rel = src.relative_to(self.cfg.dir).as_posix()
        folder = self.cfg.processing_dir / self.new_token("inbox")
        try:
            await asyncio.to_thread(_move_file, src, folder / rel)
        except FileNotFoundError:
            return  # gone meanwhile (taken already, or removed by its owner)
        crash_point("inbox.after-take")
        log.info("inbox file taken", file=rel, folder=folder.name)
        try:
            await self.admit(folder, rel, "inbox")
        except PimIngestError as exc:
            log.error("inbox file refused", file=rel, error=str(exc))

    # ---- finishing -----------------------------------------------------------------------

    def _token_folder(self, path: Path) -> Path | None:
        for root in (self.cfg.processing_dir, self.cfg.failed_dir, self.cfg.done_dir):
            if path.is_relative_to(root) and path != root:
                return root / path.relative_to(root).parts[0]
        return None

    async def _on_ended(self, ing: Ingestion) -> None:
        if ing.source not in ("inbox", "upload"):
            return
        folder = self._token_folder(Path(ing.path))
        if folder is not None:
            await self._finish(folder, ing)
        for other in self._followers.pop(ing.id, []):
            await self._finish(other, ing, duplicate=True)

    async def _finish(self, folder: Path, ing: Ingestion, *, duplicate: bool = False) -> None:
        async with self._lock:
            completed = ing.status == "completed"
            root = self.cfg.done_dir if completed else self.cfg.failed_dir
            if folder.parent == root or not await asyncio.to_thread(folder.is_dir):
                return
            files = await asyncio.to_thread(_files_in, folder)
            if completed:
                await asyncio.to_thread(_remove_error_files, folder)
            else:
                chunks, records = await self._store.progress(ing.id)
                report = {
                    "ingestion_id": ing.id,
                    "file_id": ing.file_id,
                    "status": ing.status,
                    "error": ing.error
                    if not duplicate
                    else f"same bytes as ingestion {ing.id}, which {ing.status}: {ing.error}",
                    "stopped_at_chunk": chunks + 1,
                    "records_acked": records,
                    "time": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
                }
                for f in files:
                    await asyncio.to_thread(_write_error, folder / f, {**report, "file": f})
            crash_point("inbox.before-finish")
            dest = root / folder.name
            await asyncio.to_thread(os.rename, folder, dest)
            crash_point("inbox.after-finish")
            if not duplicate and files:
                await self._store.set_path(ing.id, str(dest / files[0]))
            log.info("inbox file finished", ingestion_id=ing.id, status=ing.status, folder=str(dest), files=files)

    async def _reject(self, folder: Path, rel: str, error: str) -> None:
        """The engine refused the file outright (no ingestion): failed_dir with the reason."""
        async with self._lock:
            report = {
                "ingestion_id": None,
                "file": rel,
                "status": "refused",
                "error": error,
                "stopped_at_chunk": None,
                "records_acked": 0,
                "time": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
            }
            await asyncio.to_thread(_write_error, folder / rel, report)
            await asyncio.to_thread(os.rename, folder, self.cfg.failed_dir / folder.name)
        log.error("file refused", file=rel, error=error)

    # ---- recovery ------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Finish whatever a crash interrupted; see the module docstring."""
        c = self.cfg
        await asyncio.to_thread(_clear, c.processing_dir / UPLOADS)
        for stale in await self._store.under(str(c.processing_dir)):
            if stale.status in UNFINISHED or await asyncio.to_thread(os.path.exists, stale.path):
                continue
            inside = Path(stale.path).relative_to(c.processing_dir)
            for root in (c.done_dir, c.failed_dir):
                if await asyncio.to_thread((root / inside).exists):
                    await self._store.set_path(stale.id, str(root / inside))
                    break
        folders = await asyncio.to_thread(
            lambda: sorted(p for p in c.processing_dir.iterdir() if p.is_dir() and p.name != UPLOADS)
        )
        for folder in folders:
            files = await asyncio.to_thread(_files_in, folder)
            if not files:
                await asyncio.to_thread(shutil.rmtree, folder, True)
                continue
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
                await self._watch_poll()
        finally:
            if ino is not None:
                ino.close()

    def _scan(self) -> dict[Path, tuple[int, int]]:
        found: dict[Path, tuple[int, int]] = {}
        root = self.cfg.dir
        for current, dirs, files in os.walk(root):
            base = Path(current)
            dirs[:] = [d for d in dirs if not self.ignored(d)]
            for name in files:
                path = base / name
                if self.ignored(path.relative_to(root).as_posix()):
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                found[path] = (st.st_size, st.st_mtime_ns)
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
                if await asyncio.to_thread(path.is_file):
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
            st = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            self._pending.pop(path, None)
            return
        self._pending[path] = ((st.st_size, st.st_mtime_ns), time.monotonic())
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
                    st = await asyncio.to_thread(path.stat)
                except FileNotFoundError:
                    self._pending.pop(path, None)
                    continue
                current = (st.st_size, st.st_mtime_ns)
                if current != sig:
                    self._pending[path] = (current, time.monotonic())
                    continue
                self._pending.pop(path, None)
                await self.take(path)


def _move_file(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(src, dest)


def _files_in(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and not p.name.endswith(ERROR_SUFFIX)
    )


def _remove_error_files(folder: Path) -> None:
    for p in folder.rglob("*" + ERROR_SUFFIX):
        p.unlink(missing_ok=True)


def _write_error(path: Path, report: dict[str, Any]) -> None:
    target = path.with_name(path.name + ERROR_SUFFIX)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    os.replace(tmp, target)


def _clear(folder: Path) -> None:
    for p in folder.iterdir():
        if p.is_file():
            p.unlink(missing_ok=True)
