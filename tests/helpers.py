"""Test plumbing: configs on disk, the daemon app and the reference receiver on real loopback ports."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
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

REPO = Path(__file__).resolve().parent.parent
SUMMARY: list[str] = []  # lines the suite prints at its end (counts, seeds, figures)


def report(line: str) -> None:
    """Print ``line`` now (with -s) and again in the suite's closing summary."""
    print(line)
    SUMMARY.append(line)


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free port below the kernel's ephemeral range.

    A port from the ephemeral range can be taken by an outgoing connection in the
    meantime; worse, a client retrying towards a stopped daemon's port can connect
    to itself (TCP simultaneous open) and hold the port, so the restarted daemon
    cannot bind it. Ports below the range are never handed out that way."""
    lo, _ = _ephemeral_range()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, lo - 12000), lo)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def write_config(folder: Path, *, daemon_port: int, receiver_port: int, **sections: dict[str, Any]) -> Path:
    """A config file in ``folder``; ``sections`` override or add keys per section."""
    base: dict[str, dict[str, Any]] = {
        "daemon": {"state_db": "state/ingestion_state.db", "max_concurrent": 2, "drain_seconds": 5.0},
        "http": {
            "host": "127.0.0.1",
            "port": daemon_port,
            "public_url": f"http://127.0.0.1:{daemon_port}",
            "allowed_roots": ["data"],
        },
        "pimcore": {
            "chunk_url": f"http://127.0.0.1:{receiver_port}/ingest/chunks",
            "complete_url": f"http://127.0.0.1:{receiver_port}/ingest/complete",
        },
        "chunking": {"records": 10},
        "delivery": {"ack_timeout": 5.0, "max_attempts": 3, "backoff": 0.05, "preflight": True},
        "logging": {"format": "json", "level": "debug"},
    }
    for name, values in sections.items():
        base.setdefault(name, {})
        if name == "chunking":
            base[name] = {}
        base[name].update(values)
    text = "\n".join(
        f"[{name}]\n" + "\n".join(f"{k} = {_toml(v)}" for k, v in values.items()) + "\n"
        for name, values in base.items()
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    path = folder / "config.toml"
    path.write_text(text)
    return path


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


def spawn(args: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, **(env or {})}
    cmd = [sys.executable, "-m", "pimingestd", *args]
    if log is None:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=full_env)
    with open(log, "ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env)


async def wait_http(url: str, timeout: float = 15.0, ok: Callable[[int], bool] = lambda s: s < 500) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            try:
                async with s.get(url) as r:
                    if ok(r.status):
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} not up after {timeout}s")
            await asyncio.sleep(0.05)


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
