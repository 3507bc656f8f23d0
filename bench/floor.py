"""The delivery floor: what one chunk's round trip costs on this machine with nothing of ours in it.

A bare aiohttp server in a second process answers each POST with 202 and then
POSTs a tiny callback back; the client waits for that callback before the next
POST (one chunk in flight, as in protocol v1). Also times a WAL
``synchronous=FULL`` commit of one small row, run on a worker thread as the
daemon does. Prints one JSON line:

    python -m bench.floor BODY_BYTES COUNT
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from pimingestd.testing import free_port


async def _serve(port: int, callback: str) -> None:
    """The far side: 202 for each POST, then a callback POST."""
    session = aiohttp.ClientSession()
    tasks: set[asyncio.Task[None]] = set()

    async def call_back() -> None:
        async with session.post(callback, data=b'{"status":"ack"}') as resp:
            await resp.read()

    async def chunk(request: web.Request) -> web.Response:
        await request.read()
        task = asyncio.create_task(call_back())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return web.json_response({"status": "received"}, status=202)

    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/chunk", chunk)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def _round_trips(body: bytes, count: int) -> list[float]:
    far, near = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.floor", "--serve", str(far), f"http://127.0.0.1:{near}/ack"],
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        return asyncio.run(_client(body, count, far, near))
    finally:
        server.terminate()
        server.wait()


async def _client(body: bytes, count: int, far: int, near: int) -> list[float]:
    waiting: asyncio.Future[None] | None = None

    async def ack(request: web.Request) -> web.Response:
        await request.read()
        if waiting is not None and not waiting.done():
            waiting.set_result(None)
        return web.json_response({"result": "accepted"})

    app = web.Application()
    app.router.add_post("/ack", ack)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", near).start()
    times: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):  # until the far side listens
                try:
                    async with session.get(f"http://127.0.0.1:{far}/") as resp:
                        await resp.read()
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            loop = asyncio.get_running_loop()
            for i in range(count + 20):
                waiting = loop.create_future()
                t0 = time.perf_counter()
                async with session.post(f"http://127.0.0.1:{far}/chunk", data=body) as resp:
                    await resp.read()
                await waiting
                if i >= 20:  # the first round trips open connections
                    times.append(time.perf_counter() - t0)
    finally:
        await runner.cleanup()
    return times


def _commits(count: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        con = sqlite3.connect(Path(tmp) / "floor.db", isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, at REAL)")

        async def timed() -> list[float]:
            out = []
            for i in range(count):
                t0 = time.perf_counter()
                await asyncio.to_thread(con.execute, "INSERT INTO t VALUES (?, ?)", (i, time.time()))
                out.append(time.perf_counter() - t0)
            return out

        try:
            return asyncio.run(timed())
        finally:
            con.close()


def main() -> None:
    if sys.argv[1] == "--serve":
        asyncio.run(_serve(int(sys.argv[2]), sys.argv[3]))
        return
    size, count = int(sys.argv[1]), int(sys.argv[2])
    trips = sorted(_round_trips(b"x" * size, count))
    commits = sorted(_commits(count))
    print(
        json.dumps(
            {
                "bytes": size,
                "round_trip_median_ms": statistics.median(trips) * 1000,
                "round_trip_p99_ms": trips[int(len(trips) * 0.99)] * 1000,
                "commit_median_ms": statistics.median(commits) * 1000,
            }
        )
    )


if __name__ == "__main__":
    main()
