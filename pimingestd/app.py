"""Assembles the daemon: resources in dependency order, the HTTP site, signals, drain.

Resources are aiohttp cleanup contexts, so teardown runs in reverse and only
for what started: state lock -> store -> reference receiver (when configured)
-> HTTP client -> scheduler. The scheduler starts resuming only once the HTTP site
listens, so callbacks for resumed chunks have somewhere to land.

SIGTERM/SIGINT: stop taking work, keep serving while in-flight chunks wait
(up to ``drain_seconds``) for their ACKs, then clean up and exit 0. A second
signal skips the drain. Whatever was not ACKed is re-sent after the next start.
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import os
import pathlib
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web

from . import __version__, allocator, checks  # noqa: F401  (checks: each layer registers its config checks)
from .config import Config
from .core.scheduler import Scheduler
from .errors import StateError
from .http import keys as api
from .http import routes
from .intake.lifecycle import Inbox
from .intake.remote_watch import RemoteInboxes
from .locations.remote import Remote
from .model import UNFINISHED
from .notify import Notifier
from .protocol.acks import AckRegistry
from .protocol.v1 import PimcoreClient
from .receiver.app import create_app as create_receiver
from .retention import Retention
from .sources import parse_workers
from .state.sqlite import Store

log = structlog.get_logger("pimingestd.app")

LOCK = web.AppKey("state_lock", int)


def _lock_state(state_db: Path) -> int:
    """An OS lock beside the state database: one daemon per state, released by the kernel on death."""
    path = state_db.with_name(state_db.name + ".lock")
    try:
        state_db.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:  # unusable state, not a crash: a restart cannot fix it (exit 74)
        raise StateError(
            f"cannot create the state lock {path}: {exc.strerror or exc}; the folder {state_db.parent} must be"
            f" writable by the daemon's user (uid {os.getuid()})"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateError(
            f"another pimingestd is running on {state_db} (lock {path} is held); one daemon per state database"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


class _SysWithoutIntern:
    """The sys module as pathlib sees it after stop_interning_path_parts: intern returns its argument."""

    def __getattr__(self, name: str) -> object:
        return getattr(sys, name)

    @staticmethod
    def intern(text: str) -> str:
        return text


def stop_interning_path_parts() -> None:
    """Keep pathlib from interning each part of each path it parses, as Python 3.14's pathlib no longer does.
    Every file the daemon handles has a name of its own (an inbox file, a token folder, a spool file), and
    3.11-3.13 put each into the interpreter's table of interned strings. There it is mortal, but the table's
    slot stays taken until the table is rebuilt, at three times the strings alive; so the table's memory
    grew steadily (about 1,600 slots a minute in the soak, 38 KB) and rebuilt to twice its size once the
    readers' imports were alive (+0.9 MiB at about minute 7): most of what the 30-minute soak still measured
    (docs/performance.md, issue 29). On the early 3.12 releases interned strings were immortal, and every
    file name would stay for the process's life. Nothing in the daemon relies on a path part's identity."""
    for module in (pathlib, sys.modules.get("pathlib._local")):
        if module is not None and getattr(module, "sys", None) is sys:
            module.sys = _SysWithoutIntern()  # type: ignore[attr-defined]


def tune_gc(young: int = 50_000) -> None:
    """Collect cycles less often. Parsing allocates a dict or list per record and
    frees it by reference counting (records hold no cycles); at the default young
    generation threshold (700) the collector ran every few records and took a fifth
    of the parse time. Objects that live for the whole run are frozen out of it."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young, older, oldest)


GC_SECONDS = 30.0  # a full collection this often: see sweep_cycles


async def sweep_cycles(app: web.Application) -> AsyncIterator[None]:
    """A full garbage collection every GC_SECONDS. With tune_gc's high young threshold the older generations
    are collected rarely, and the cycles a request or a failed attempt leaves (an exception and its
    traceback, a closed connection's objects) piled up: a daemon taking a small file every 0.2 s grew by
    about 0.6 MiB a minute, and by a sixth of that with this sweep. A sweep takes a few milliseconds."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(GC_SECONDS)
            gc.collect()

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


def create_app(config: Config) -> web.Application:
    app = web.Application(middlewares=routes.MIDDLEWARES, client_max_size=config.http.max_body_bytes)
    app[api.CONFIG] = config

    async def state_lock(app: web.Application) -> AsyncIterator[None]:
        fd = _lock_state(config.daemon.state_db)
        app[LOCK] = fd
        yield
        os.close(fd)

    remote = Remote(config.remote)  # one set of remote connections, for reads and remote inboxes

    async def store(app: web.Application) -> AsyncIterator[None]:
        app[api.STORE] = await Store.open(config.daemon.state_db)
        yield
        await app[api.STORE].close()

    async def receiver(app: web.Application) -> AsyncIterator[None]:
        rc = config.receiver
        if rc is None:
            yield
            return
        runner = web.AppRunner(create_receiver(rc.data, secret=config.pimcore.secret), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, rc.host, rc.port).start()
        log.info("reference receiver listening", url=f"http://{rc.host}:{rc.port}", data=str(rc.data))
        yield
        await runner.cleanup()

    async def scheduler(app: web.Application) -> AsyncIterator[None]:
        try:
            async with aiohttp.ClientSession() as session:
                client = PimcoreClient(
                    session,
                    chunk_url=config.pimcore.chunk_url,
                    complete_url=config.pimcore.complete_url,
                    callback_url=config.callback_url,
                    secret=config.pimcore.secret,
                    timeout=config.pimcore.request_timeout,
                )
                app[api.SCHEDULER] = Scheduler(
                    app[api.STORE],
                    client,
                    AckRegistry(),
                    delivery=config.delivery,
                    chunking=config.chunking,
                    spool_dir=config.daemon.state_db.parent / "spool",
                    max_concurrent=config.daemon.max_concurrent,
                    max_record_bytes=config.max_record_bytes,
                    remote=remote,
                    progress_seconds=config.logging.progress_seconds,
                    window=config.pimcore.window,
                    order=config.pimcore.order,
                )
                yield
                await app[api.SCHEDULER].close()
        finally:
            await asyncio.to_thread(parse_workers.shutdown)

    async def retention(app: web.Application) -> AsyncIterator[None]:
        app[api.RETENTION] = Retention(config, app[api.STORE], app[api.SCHEDULER].metrics)
        yield
        await app[api.RETENTION].stop()

    async def inbox(app: web.Application) -> AsyncIterator[None]:
        app[api.INBOX] = Inbox(config.inbox, app[api.SCHEDULER], app[api.STORE])
        app[api.REMOTE_INBOXES] = RemoteInboxes(config.remote, app[api.SCHEDULER], app[api.STORE], remote)
        yield
        await app[api.REMOTE_INBOXES].stop()
        await app[api.INBOX].stop()

    app.cleanup_ctx.extend([state_lock, store, receiver, scheduler, retention, inbox, sweep_cycles])
    routes.add_routes(app)
    return app


STATUS_EVERY = 5.0


def _status_line(scheduler: Scheduler, rate: float) -> str:
    return f"{scheduler.running} ingestion(s) running, {scheduler.in_flight} chunk(s) in flight, {rate:.0f} records/s"


async def _housekeeping(scheduler: Scheduler, notifier: Notifier) -> None:
    """Watchdog pings from the event loop itself, and a STATUS line every few seconds."""
    tick = min(notifier.watchdog_interval or STATUS_EVERY, STATUS_EVERY)
    last_records, last_time = scheduler.metrics.records_total, time.monotonic()
    next_status = last_time + STATUS_EVERY
    while True:
        await asyncio.sleep(tick)
        if notifier.watchdog_interval:
            notifier.watchdog()
        now = time.monotonic()
        if now >= next_status:
            records = scheduler.metrics.records_total
            notifier.status(_status_line(scheduler, (records - last_records) / (now - last_time)))
            last_records, last_time, next_status = records, now, now + STATUS_EVERY


async def start_work(app: web.Application) -> None:
    """Begin taking work, once the HTTP site listens: inbox recovery and watching, then resumes."""
    await app[api.INBOX].start()
    await app[api.SCHEDULER].start()
    await app[api.REMOTE_INBOXES].start()
    app[api.RETENTION].start()


async def stop_taking_work(app: web.Application) -> None:
    await app[api.RETENTION].stop()
    await app[api.REMOTE_INBOXES].stop()
    await app[api.INBOX].stop()


async def run(config: Config) -> int:
    """Serve until a signal; returns the process exit code."""
    allocator.tune_malloc()
    stop_interning_path_parts()
    tune_gc()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    hurry = asyncio.Event()
    notifier = Notifier()

    def on_signal(signame: str) -> None:
        if stop.is_set():
            log.warning("second signal: skipping the drain", signal=signame)
            hurry.set()
        else:
            log.info("shutting down", signal=signame)
            notifier.stopping()
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)

    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    try:
        await runner.setup()
        site = web.TCPSite(runner, config.http.host, config.http.port)
        await site.start()
        scheduler = app[api.SCHEDULER]
        unfinished = len(await app[api.STORE].with_status(UNFINISHED))
        log.info(
            "pimingestd started",
            version=__version__,
            config=str(config.path),
            state_db=str(config.daemon.state_db),
            inbox=str(config.inbox.dir),
            watch=config.inbox.watch,
            listen=f"http://{config.http.host}:{config.http.port}",
            chunk_url=config.pimcore.chunk_url,
            complete_url=config.pimcore.complete_url,
            signed=bool(config.pimcore.secret),
            resuming=unfinished,
            glibc_tunables=os.environ.get(allocator.TUNABLES),  # thread caches off: allocator.py
        )
        if not config.http.loopback and not (config.pimcore.secret and config.http.api_token):
            log.warning(
                "insecure: listening beyond loopback without a PIM-Core secret or an API token"
                " (http.insecure = true); anyone who reaches the port can forge ACKs or drive the API",
                listen=config.http.host,
                signed=bool(config.pimcore.secret),
                has_api_token=bool(config.http.api_token),
            )
        await start_work(app)
        notifier.ready(_status_line(scheduler, 0.0))
        housekeeping = asyncio.create_task(_housekeeping(scheduler, notifier), name="housekeeping")
        await stop.wait()
        await stop_taking_work(app)
        drain = asyncio.create_task(scheduler.drain(config.daemon.drain_seconds))
        hurried = asyncio.create_task(hurry.wait())
        await asyncio.wait({drain, hurried}, return_when=asyncio.FIRST_COMPLETED)
        hurried.cancel()
        if not drain.done():
            drain.cancel()
        with suppress(asyncio.CancelledError):
            drained = await drain
            log.info("drain finished", clean=drained)
        housekeeping.cancel()
        with suppress(asyncio.CancelledError):
            await housekeeping
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    notifier.close()
    log.info("stopped")
    return 0
