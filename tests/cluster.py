"""Real processes on loopback: a daemon and a reference receiver, and the checks every chaos run ends with."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

from .helpers import free_port, spawn, wait_http, write_config


class Cluster:
    """The one harness for tests that need real processes: a daemon and a reference receiver.

    Nothing starts in the constructor; ``async with`` starts both and ``close()`` kills whatever runs.
    ``env`` is added to the daemon's environment at every start (``start_daemon(env=...)`` adds more).
    """

    def __init__(
        self, root: Path, *, receiver_secret: str = "", env: dict[str, str] | None = None, **sections: Any
    ) -> None:
        self.root = root
        self.rport, self.dport = free_port(), free_port()
        self.cfg = write_config(root / "d", daemon_port=self.dport, receiver_port=self.rport, **sections)
        self.data = root / "d" / "data"
        self.state_db = root / "d" / "state" / "ingestion_state.db"
        self.rurl, self.durl = f"http://127.0.0.1:{self.rport}", f"http://127.0.0.1:{self.dport}"
        self.log = root / "daemon.log"
        self.env = dict(env or {})
        self.receiver_secret = receiver_secret
        self.daemon: subprocess.Popen[bytes] | None = None
        self.receiver: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self.receiver_restarts = 0
        self.rules: list[dict[str, Any]] = []  # re-armed after every receiver restart

    async def __aenter__(self) -> Cluster:
        await self.start_receiver()
        await self.start_daemon()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for p in (self.daemon, self.receiver):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()

    async def start_receiver(self) -> None:
        args = ["receiver", "--port", str(self.rport), "--data", str(self.root / "recv")]
        if self.receiver_secret:
            args += ["--secret", self.receiver_secret]
        self.receiver = spawn(args, log=self.root / "receiver.log")
        await wait_http(self.rurl + "/stats")
        if self.rules:
            await self.faults(self.rules)

    async def stop_receiver(self) -> None:
        assert self.receiver is not None
        self.receiver.send_signal(signal.SIGKILL)
        self.receiver.wait()
        self.receiver_restarts += 1

    async def start_daemon(self, env: dict[str, str] | None = None) -> None:
        self.daemon = spawn(["run", "--config", str(self.cfg)], env={**self.env, **(env or {})}, log=self.log)
        await wait_http(self.durl + "/healthz", ok=lambda s: s == 200, timeout=30)

    async def kill_daemon(self) -> None:
        assert self.daemon is not None
        if self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGKILL)
            self.daemon.wait()
            self.kills += 1

    async def exit_code(self, timeout: float) -> int:
        """Wait for the daemon process to end; its exit code."""
        assert self.daemon is not None
        deadline = time.monotonic() + timeout
        while self.daemon.poll() is None:
            assert time.monotonic() < deadline, f"daemon still running after {timeout}s"
            await asyncio.sleep(0.02)
        return int(self.daemon.returncode)

    async def call(self, method: str, url: str, **kw: Any) -> tuple[int, Any]:
        """An HTTP call; the body parsed as JSON, or the text when it is not JSON."""
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s,
            s.request(method, url, **kw) as r,
        ):
            text = await r.text()
            try:
                return r.status, json.loads(text)
            except ValueError:
                return r.status, text

    async def faults(self, rules: list[dict[str, Any]]) -> None:
        self.rules = rules
        code, body = await self.call("PUT", self.rurl + "/_faults", json=rules)
        assert code == 200, body

    async def ingest(self, path: Path, headers: dict[str, str] | None = None) -> str:
        code, body = await self.call("POST", self.durl + "/api/ingest", json={"path": str(path)}, headers=headers)
        assert code in (200, 202), body
        return str(body["ingestion_id"])

    async def status(self, ing: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        code, body = await self.call("GET", f"{self.durl}/api/ingestions/{ing}", headers=headers)
        assert code == 200, body
        return dict(body)

    async def ingestions(self) -> list[dict[str, Any]]:
        code, body = await self.call("GET", self.durl + "/api/ingestions?limit=1000")
        assert code == 200, body
        return list(body["ingestions"])

    async def applied(self, ing: str) -> list[Any]:
        """The records the receiver applied for ``ing``, in order."""
        _, rows = await self.call("GET", f"{self.rurl}/ingestions/{ing}/records")
        return [json.loads(a["record"]) for a in rows]

    async def settle(self, ing: str, timeout: float = 120.0, headers: dict[str, str] | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                st = await self.status(ing, headers)
            except aiohttp.ClientError:
                st = {"status": "unreachable"}
            if st["status"] in ("completed", "failed"):
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"ingestion still {st['status']} after {timeout}s")
            await asyncio.sleep(0.05)

    async def verify(self, ing: str, expected: list[Any]) -> dict[str, int]:
        """The invariants: exactly once and in order (or exactly the ACKed prefix), sends in order, states agree."""
        st = await self.status(ing)
        _, applied = await self.call("GET", f"{self.rurl}/ingestions/{ing}/records")
        got = [json.loads(a["record"]) for a in applied]
        if st["status"] == "completed":
            assert got == expected, f"applied {len(got)} records, expected {len(expected)} exactly once in order"
        else:
            assert st["status"] == "failed" and st["error"], st
            assert got == expected[: st["records_acked"]], "the receiver must hold exactly the ACKed prefix"
        # The daemon's committed chunks are the receiver's applied chunks, checksum for checksum.
        con = sqlite3.connect(f"file:{self.state_db}?mode=ro", uri=True)
        try:
            acked = con.execute(
                "SELECT n, checksum, acked_at FROM chunks WHERE ingestion_id = ? AND state = 'acked' ORDER BY n", (ing,)
            ).fetchall()
        finally:
            con.close()
        _, received = await self.call("GET", f"{self.rurl}/ingestions/{ing}/received")
        applied_chunks = sorted({a["chunk"] for a in applied})
        assert [n for n, _, _ in acked] == applied_chunks == list(range(1, len(acked) + 1))
        first_checksum = {}
        for r in received:
            first_checksum.setdefault(r["chunk"], r["checksum"])
        assert all(first_checksum[n] == c for n, c, _ in acked), "a committed checksum differs from what was sent"
        # No chunk reached PIM-Core before its predecessor's ACK was committed.
        acked_at = {n: at for n, _, at in acked}
        for r in received:
            if r["chunk"] > 1:
                prev = acked_at.get(r["chunk"] - 1)
                assert prev is not None and prev <= r["at"], (
                    f"chunk {r['chunk']} sent before chunk {r['chunk'] - 1} was committed"
                )
        return {"records": len(got), "received": len(received), "resends": len(received) - len(applied_chunks)}
