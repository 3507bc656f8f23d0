"""Test plumbing: configs on disk, the daemon app and the reference receiver on real loopback ports."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from pimingestd import config as config_mod
from pimingestd.app import create_app, start_work
from pimingestd.config import Config
from pimingestd.http import keys as api
from pimingestd.protocol import signing
from pimingestd.receiver.app import create_app as create_receiver
from pimingestd.testing import free_port, spawn, wait_http, write_config

__all__ = ["free_port", "spawn", "wait_http", "write_config"]  # and the test plumbing below

REPO = Path(__file__).resolve().parent.parent
SUMMARY: list[str] = []  # lines the suite prints at its end (counts, seeds, figures)


def report(line: str) -> None:
    """Print ``line`` now (with -s) and again in the suite's closing summary."""
    print(line)
    SUMMARY.append(line)


class Receiver:
    """The reference receiver as a real server on 127.0.0.1."""

    def __init__(self, data: Path, secret: str = "", mode: str = "store") -> None:
        self.app = create_receiver(data, secret=secret, mode=mode)
        self.port = free_port()
        self.runner = web.AppRunner(self.app, access_log=None)
        self.url = f"http://127.0.0.1:{self.port}"

    async def start(self) -> Receiver:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def get(self, path: str) -> Any:
        async with aiohttp.ClientSession() as s, s.get(self.url + path) as r:
            return await r.json()

    async def faults(self, rules: list[dict[str, Any]]) -> None:
        async with aiohttp.ClientSession() as s, s.put(self.url + "/_faults", json=rules) as r:
            assert r.status == 200, await r.text()

    async def records(self, ingestion_id: str) -> list[dict[str, Any]]:
        return list(await self.get(f"/ingestions/{ingestion_id}/records"))

    async def stats(self) -> dict[str, int]:
        return dict(await self.get("/stats"))


class Daemon:
    """The daemon app in this process, on a real port, as ``pimingestd run`` assembles it."""

    def __init__(self, config_path: Path) -> None:
        self.config: Config = config_mod.load(config_path)
        self.app = create_app(self.config)
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        self.url = f"http://127.0.0.1:{self.config.http.port}"
        self.stopped = False

    async def start(self) -> Daemon:
        try:
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.config.http.port).start()
            await start_work(self.app)
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.runner.cleanup()

    @property
    def scheduler(self) -> Any:
        return self.app[api.SCHEDULER]

    @property
    def store(self) -> Any:
        return self.app[api.STORE]

    async def request(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        """A call as an operator makes it (with the configured API token unless headers say otherwise)."""
        token = self.config.http.api_token
        if token and path.startswith("/api/") and "headers" not in kw:
            kw["headers"] = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as s, s.request(method, self.url + path, **kw) as r:
            text = await r.text()
            try:
                return r.status, json.loads(text)
            except ValueError:
                return r.status, text

    async def ingest(self, **body: Any) -> tuple[int, Any]:
        return await self.request("POST", "/api/ingest", json=body)

    async def status(self, ingestion_id: str) -> dict[str, Any]:
        code, body = await self.request("GET", f"/api/ingestions/{ingestion_id}")
        assert code == 200, body
        return dict(body)

    async def wait(
        self, ingestion_id: str, statuses: tuple[str, ...] = ("completed", "failed"), timeout: float = 30
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            st = await self.status(ingestion_id)
            if st["status"] in statuses:
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"ingestion still {st['status']} after {timeout}s: {st}")
            await asyncio.sleep(0.02)

    async def ack(self, body: dict[str, Any], secret: str = "") -> tuple[int, Any]:
        raw = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if secret:
            headers[signing.HEADER] = signing.sign(secret, raw)
        return await self.request("POST", "/callbacks/ack", data=raw, headers=headers)


def committed_state(db: Path, ingestion_id: str) -> dict[int, str]:
    """Chunk states as a separate connection sees them: only what is committed."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT n, state FROM chunks WHERE ingestion_id = ? ORDER BY n", (ingestion_id,)).fetchall()
    finally:
        con.close()
    return {int(n): str(s) for n, s in rows}


def write_json(path: Path, records: list[Any]) -> Path:
    path.write_text(json.dumps(records, ensure_ascii=False))
    return path


def product(i: int) -> dict[str, Any]:
    return {"sku": f"SKU-{i:06d}", "name": f"Product {i}", "stock": i % 97, "tags": ["a", f"t{i % 5}"]}


async def daemon_process(config: Path, *, merge_stderr: bool = False) -> asyncio.subprocess.Process:
    """``pimingestd run`` on ``config`` as a real process with piped output (for exit codes and start-up lines)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pimingestd",
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
    )
