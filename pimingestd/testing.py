"""One harness for real processes, shared by the tests and the benchmarks (tests/, bench/).

``Cluster`` starts a real daemon and a real reference receiver on loopback
ports, with a config written to disk, and offers what both need: starting,
killing and restarting them, HTTP calls, waiting for an ingestion to settle,
the invariants every chaos run ends with (``verify``), and the phases of an
ingestion read from the daemon's structured ``phase`` events (never from the
wording of a log line). Nothing here is used by the daemon itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from . import sources
from .model import HASH_BYTES, Status
from .protocol import canonical


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
    if isinstance(value, dict):  # an inline table (a list of them: an array of tables, written inline)
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
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


def spawn(args: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, **(env or {})}
    cmd = [sys.executable, "-m", "pimingestd", *args]
    if log is None:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=full_env)
    with open(log, "ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env)


async def wait_http(
    url: str,
    timeout: float = 15.0,
    ok: Callable[[int], bool] = lambda s: s < 500,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Until ``url`` answers as ``ok`` says; AssertionError after ``timeout``, or at once when ``alive`` (the
    process that should answer) says it is gone."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            try:
                async with s.get(url) as r:
                    if ok(r.status):
                        return
            except aiohttp.ClientError:
                pass
            if alive is not None and not alive():
                raise AssertionError(f"{url}: the process exited before it answered")
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} not up after {timeout}s")
            await asyncio.sleep(0.05)


_LOG_KEYS = {"timestamp", "level", "event", "ingestion_id", "file_id", "file"}  # said once per line by history


def _clock(t: float | None) -> str:
    """A time.time() value as the daemon's log writes it (UTC, ISO 8601), to line both up in a history."""
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def _short(checksum: str) -> str:
    """A chunk checksum's first hex digits: enough to tell two apart in a history."""
    return checksum.removeprefix("sha256:")[:12]


def _ends(lines: list[str], most: int) -> list[str]:
    """The first and last of ``lines``, ``most`` in all, with "..." between when some were left out."""
    if len(lines) <= most:
        return lines
    return [*lines[: most // 2], f"... ({len(lines) - most} more)", *lines[-(most - most // 2) :]]


def per_key(records: list[Any], key: str) -> dict[Any, list[bytes]]:
    """Each key's records (canonical bytes) in the order given: what by_key keeps."""
    out: dict[Any, list[bytes]] = {}
    for r in records:
        out.setdefault(json.dumps(r.get(key)), []).append(canonical.encode(r))
    return out


def scope_versions(db: Path, scope: str) -> dict[str, bytes]:
    """A delta scope's stored versions (key -> hash) in the state database ``db``, as a second, read-only
    connection sees them: only what is committed."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT key, hash FROM delta_versions WHERE scope = ?", (scope,)).fetchall()
    finally:
        con.close()
    return {k: bytes(h) for k, h in rows}


class Cluster:
    """The one harness for tests that need real processes: a daemon and a reference receiver.

    Nothing starts in the constructor; ``async with`` starts both and ``close()`` kills whatever runs.
    ``env`` is added to the daemon's environment at every start (``start_daemon(env=...)`` adds more).
    """

    def __init__(
        self,
        root: Path,
        *,
        receiver_secret: str = "",
        receiver_mode: str = "store",
        receiver_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        **sections: Any,
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
        self.receiver_mode = receiver_mode  # "count": checks framing and order, parses no records (benchmarks)
        self.receiver_args = list(receiver_args or [])  # more `pimingestd receiver` options (--protocol 1...)
        self.daemon: subprocess.Popen[bytes] | None = None
        self.receiver: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self.receiver_restarts = 0
        self.rules: list[dict[str, Any]] = []  # re-armed after every receiver restart
        self.token = str(sections.get("http", {}).get("api_token", ""))  # sent on /api/* calls when set

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
        if self.receiver_mode != "store":
            args += ["--mode", self.receiver_mode]
        args += self.receiver_args
        if self.rules:  # held from its first request on: a chunk sent the moment it is up meets them too
            rules = self.root / "receiver-faults.json"
            rules.write_text(json.dumps(self.rules), encoding="utf-8")
            args += ["--faults", str(rules)]
        self.receiver = spawn(args, log=self.root / "receiver.log")
        await wait_http(self.rurl + "/stats")

    async def stop_receiver(self) -> None:
        assert self.receiver is not None
        self.receiver.send_signal(signal.SIGKILL)
        self.receiver.wait()
        self.receiver_restarts += 1

    async def start_daemon(self, env: dict[str, str] | None = None) -> None:
        daemon = self.daemon = spawn(["run", "--config", str(self.cfg)], env={**self.env, **(env or {})}, log=self.log)
        await wait_http(self.durl + "/healthz", ok=lambda s: s == 200, timeout=30, alive=lambda: daemon.poll() is None)

    async def callbacks_settled(self, timeout: float = 30.0) -> None:
        """Wait until the receiver has no callback left to send or retry (one retried at a restarted daemon
        would otherwise reach it, and meet a crash point set for what comes next)."""
        deadline = time.monotonic() + timeout
        while True:
            _, stats = await self.call("GET", self.rurl + "/stats")
            if stats.get("callbacks_pending") == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the receiver still has callbacks pending after {timeout}s: {stats}")
            await asyncio.sleep(0.05)

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
        """An HTTP call; the body parsed as JSON, or the text when it is not JSON. A call to the daemon's
        /api/* carries the configured API token unless ``headers`` are given."""
        if self.token and url.startswith(self.durl + "/api/") and kw.get("headers") is None:
            kw["headers"] = {"Authorization": f"Bearer {self.token}"}
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

    async def ingest(self, path: Path, headers: dict[str, str] | None = None, **rules: Any) -> str:
        """Submit ``path`` (with record rules or format options as keyword arguments); its ingestion id."""
        code, body = await self.call(
            "POST", self.durl + "/api/ingest", json={"path": str(path), **rules}, headers=headers
        )
        assert code in (200, 202), body
        return str(body["ingestion_id"])

    async def rejects(self, ing: str) -> str:
        """The ingestion's reject file, as text."""
        code, body = await self.call("GET", f"{self.durl}/api/ingestions/{ing}/rejects")
        assert code == 200, body
        return body if isinstance(body, str) else json.dumps(body)

    async def status(self, ing: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        code, body = await self.call("GET", f"{self.durl}/api/ingestions/{ing}", headers=headers)
        assert code == 200, body
        return dict(body)

    async def ingestions(self, every: bool = False, page: int = 1000) -> list[dict[str, Any]]:
        """The newest ``page`` ingestions (1000: the API's largest page), newest first; ``every``: all of them,
        a page at a time (a long soak makes thousands)."""
        out: list[dict[str, Any]] = []
        while True:
            code, body = await self.call("GET", f"{self.durl}/api/ingestions?limit={page}&offset={len(out)}")
            assert code == 200, body
            out += body["ingestions"]
            if not every or not body["ingestions"] or len(out) >= body["total"]:
                return out

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
            if st["status"] in (Status.COMPLETED, Status.FAILED):
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"ingestion still {st['status']} after {timeout}s")
            await asyncio.sleep(0.05)

    async def verify(self, ing: str, expected: list[Any], order: str = "v1", key: str = "sku") -> dict[str, int]:
        """The invariants, for ``order`` "v1" (a window of one), "strict" or "by_key" (a window, protocol v2).
        What must hold depends on the ingestion's state, as one read of the state database sees it:

        - completed, its chunk rows kept: the daemon's committed chunks are the receiver's applied chunks,
          checksum for checksum, and they are every chunk (1..N);
        - completed, its chunk rows pruned by retention (``[retention] chunk_rows_days``): the rows are gone,
          legitimately, and what the daemon keeps is its summary (chunks and records ACKed, counted when the
          rows went, and the completion's manifest). The receiver applied exactly chunks 1..N for the N of
          that summary, every record of the file, and the manifest over the checksums it received for them
          is the daemon's. (Whether a chunk was sent before its predecessor's ACK was committed can no longer
          be told: the ACK times went with the rows.);
        - failed: the committed chunks are the applied ones (v1 and strict: a prefix 1..k), except that with a
          window a chunk still "sent" (its ACK lost while another chunk failed the run) may be applied too;
        - every record of the committed chunks is applied exactly once, and nothing else;
        - v1 and strict: in file order, and no chunk applied before its predecessor; v1 also: no chunk sent
          before its predecessor's ACK was committed;
        - by_key: each key's records in file order, and the receiver saw no violation.

        Returns the counts (``pruned``: 1 when the summary was checked instead of the chunk rows). A broken
        invariant raises AssertionError saying which state's check failed, followed by the ingestion's
        history (``history``).
        """
        try:
            return await self._verify(ing, expected, order, key)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{await self.history(ing)}") from exc

    async def _verify(self, ing: str, expected: list[Any], order: str, key: str) -> dict[str, int]:
        st = await self.status(ing)
        assert st["status"] in (Status.COMPLETED, Status.FAILED), st
        if st["status"] == Status.FAILED:
            assert st["error"], st
        await self.callbacks_settled()  # a failed run's last ACKs may still be on their way
        _, applied = await self.call("GET", f"{self.rurl}/ingestions/{ing}/records")
        _, received = await self.call("GET", f"{self.rurl}/ingestions/{ing}/received")
        row, rows = self.snapshot(ing)
        assert row is not None, f"ingestion {ing} is not in the state database"
        first_checksum: dict[int, str] = {}
        for r in received:
            first_checksum.setdefault(r["chunk"], r["checksum"])
        if row["pruned_at"] is not None:
            return await self._verify_pruned(ing, row, rows, applied, received, first_checksum, expected, order, key)
        got = [json.loads(a["record"]) for a in applied]
        acked = [
            (n, checksum, at, first, count) for n, checksum, at, first, count, state, _ in rows if state == "acked"
        ]
        applied_chunks = [a["chunk"] for a in applied]
        committed = [n for n, *_ in acked]
        only_applied = sorted(set(applied_chunks) - set(committed))
        if st["status"] == Status.FAILED and order != "v1" and only_applied:
            # With a window, a chunk whose ACK was lost may be applied while another chunk failed the run: it is
            # still "sent" here, so a resume sends it again and PIM-Core answers it as a duplicate.
            states = {n: state for n, *_, state, _ in rows}
            assert all(states.get(n) == "sent" for n in only_applied), (only_applied, states)
            applied = [a for a in applied if a["chunk"] in set(committed)]
            got = [json.loads(a["record"]) for a in applied]
            applied_chunks = [a["chunk"] for a in applied]
        assert sorted(set(applied_chunks)) == committed, (
            f"ingestion {ing} {st['status']}, its chunk rows kept: committed chunks != applied chunks:"
            f" only applied {sorted(set(applied_chunks) - set(committed))},"
            f" only committed {sorted(set(committed) - set(applied_chunks))}"
        )
        if st["status"] == Status.COMPLETED:
            assert [n for n, *_ in acked] == list(range(1, len(acked) + 1)), "a chunk is missing"
        of_acked = [r for _, _, _, first, count in acked for r in expected[first : first + count]]
        if st["status"] == Status.COMPLETED:
            assert of_acked == expected, "the ACKed chunks do not hold the file's records"
        await self._applied_once(got, of_acked, applied_chunks, order, key)
        if order != "by_key":  # (by_key: a failed run may have had a later chunk ACKed than the one that failed)
            assert [n for n, *_ in acked] == list(range(1, len(acked) + 1)), "the ACKed chunks are not a prefix"
        assert all(first_checksum[n] == c for n, c, *_ in acked), "a committed checksum differs from what was sent"
        if order == "v1":  # No chunk reached PIM-Core before its predecessor's ACK was committed.
            acked_at = {n: at for n, _, at, *_ in acked}
            for r in received:
                if r["chunk"] > 1:
                    prev = acked_at.get(r["chunk"] - 1)
                    assert prev is not None and prev <= r["at"], (
                        f"chunk {r['chunk']} sent before chunk {r['chunk'] - 1} was committed"
                    )
        distinct = len(set(applied_chunks))
        return {"records": len(got), "received": len(received), "resends": len(received) - distinct, "pruned": 0}

    async def _verify_pruned(
        self,
        ing: str,
        row: dict[str, Any],
        rows: list[tuple[Any, ...]],
        applied: list[dict[str, Any]],
        received: list[dict[str, Any]],
        first_checksum: dict[int, str],
        expected: list[Any],
        order: str,
        key: str,
    ) -> dict[str, int]:
        """``verify`` for an ingestion whose chunk rows retention removed: against its summary."""
        what = f"ingestion {ing} {row['status']}, its chunk rows pruned by retention"
        # Retention prunes only completed and cancelled ingestions, and all of their rows in one transaction.
        assert row["status"] == Status.COMPLETED, f"{what}: only completed or cancelled ones are pruned"
        assert not rows, f"{what}: yet {len(rows)} chunk rows are left"
        n = row["pruned_chunks"]
        applied_chunks = [a["chunk"] for a in applied]
        assert sorted(set(applied_chunks)) == list(range(1, n + 1)), (
            f"{what}: committed chunks != applied chunks: its summary counts {n} chunks ACKed (1..{n}),"
            f" the receiver applied {sorted(set(applied_chunks))}"
        )
        assert n == row["total_chunks"], f"{what}: {n} chunks ACKed of {row['total_chunks']}"
        assert row["pruned_records"] == len(expected), (
            f"{what}: its summary counts {row['pruned_records']} records ACKed; the file holds {len(expected)}"
        )
        got = [json.loads(a["record"]) for a in applied]
        await self._applied_once(got, expected, applied_chunks, order, key)
        sent = canonical.manifest(first_checksum[i] for i in range(1, n + 1))
        assert row["manifest"] == sent, (
            f"{what}: its manifest {row['manifest']} is not the one over the checksums PIM-Core received ({sent})"
        )
        return {"records": len(got), "received": len(received), "resends": len(received) - n, "pruned": 1}

    async def _applied_once(
        self, got: list[Any], of_acked: list[Any], applied_chunks: list[int], order: str, key: str
    ) -> None:
        """Every record of the committed chunks (``of_acked``) applied exactly once, nothing else, in the order
        ``order`` asks for."""
        if order == "by_key":
            canon = sorted(canonical.encode(r) for r in got)
            assert canon == sorted(canonical.encode(r) for r in of_acked), (
                f"applied {len(got)} records; the ACKed chunks hold {len(of_acked)}: not exactly once"
            )
            assert per_key(got, key) == per_key(of_acked, key), "a key's records were applied out of file order"
            _, violations = await self.call("GET", f"{self.rurl}/violations")
            assert violations == [], violations
        else:
            assert got == of_acked, f"applied {len(got)} records, expected {len(of_acked)} exactly once in order"
            assert applied_chunks == sorted(applied_chunks), "a chunk was applied before its predecessor"

    def snapshot(self, ing: str) -> tuple[dict[str, Any] | None, list[tuple[Any, ...]]]:
        """The ingestion's row and its chunk rows ``(n, checksum, acked_at, first_record, records, state,
        attempts)``, read in one read transaction, so both are as of the same commit: retention removes a
        completed ingestion's chunk rows and marks it pruned in one transaction, at any moment."""
        con = sqlite3.connect(f"file:{self.state_db}?mode=ro", uri=True, isolation_level=None)
        con.row_factory = sqlite3.Row
        try:
            con.execute("BEGIN")
            row = con.execute("SELECT * FROM ingestions WHERE id = ?", (ing,)).fetchone()
            rows = con.execute(
                "SELECT n, checksum, acked_at, first_record, records, state, attempts FROM chunks"
                " WHERE ingestion_id = ? ORDER BY n",
                (ing,),
            ).fetchall()
            con.execute("COMMIT")
        finally:
            con.close()
        return (None if row is None else dict(row)), [tuple(r) for r in rows]

    async def history(self, ing: str, events: int = 60, chunks: int = 40) -> str:
        """What is known of ``ing``, for a check that failed: its status as the API shows it, its row and chunk
        rows in the state database, what the receiver received, applied and completed, and the daemon's
        last ``events`` log events that name it, with the daemon's starts and retention's prunes among them
        (at the level the daemon logs). Each part that cannot be read says why instead."""
        out = [f"--- history of ingestion {ing}"]

        async def part(title: str, read: Callable[[], Any]) -> None:
            try:
                lines = await read() if asyncio.iscoroutinefunction(read) else read()
            except Exception as exc:  # a diagnosis: a daemon that is down must not hide the rest
                lines = [f"(cannot read: {type(exc).__name__}: {exc})"]
            out.append(f"{title}:")
            out.extend(f"  {line}" for line in lines)

        async def api() -> list[str]:
            code, body = await self.call("GET", f"{self.durl}/api/ingestions/{ing}")
            return [f"{code} {json.dumps(body, sort_keys=True)}"]

        def state() -> list[str]:
            row, rows = self.snapshot(ing)
            if row is None:
                return ["(no row)"]
            keep = ("status", "error", "completing", "total_chunks", "total_records", "spooled", "manifest")
            lines = [", ".join(f"{k}={row[k]!r}" for k in keep if k in row)]
            lines.append(f"created {_clock(row['created_at'])}, updated {_clock(row['updated_at'])}")
            if row.get("pruned_at") is not None:
                lines.append(
                    f"chunk rows pruned by retention at {_clock(row['pruned_at'])}: {row['pruned_chunks']} chunks,"
                    f" {row['pruned_records']} records ACKed then"
                )
            lines.append(f"{len(rows)} chunk rows (n state attempts checksum first_record+records acked_at):")
            return lines + _ends(
                [
                    f"{n} {st} {attempts} {_short(checksum)} {first}+{count} {_clock(at)}"
                    for n, checksum, at, first, count, st, attempts in rows
                ],
                chunks,
            )

        async def receiver() -> list[str]:
            code, summary = await self.call("GET", f"{self.rurl}/ingestions/{ing}")
            _, received = await self.call("GET", f"{self.rurl}/ingestions/{ing}/received")
            _, applied = await self.call("GET", f"{self.rurl}/ingestions/{ing}/records")
            posts: dict[int, list[str]] = {}
            for r in received:
                posts.setdefault(r["chunk"], []).append(f"{_short(r['checksum'])}@{_clock(r['at'])}")
            per_chunk = sorted({a["chunk"] for a in applied})
            lines = [f"summary: {code} {json.dumps(summary, sort_keys=True)}"]
            lines.append(f"applied chunks {per_chunk} ({len(applied)} records)")
            lines.append(f"{len(received)} chunk POSTs (chunk: checksum@when, ...):")
            return lines + _ends([f"{n}: {', '.join(p)}" for n, p in sorted(posts.items())], chunks)

        def log() -> list[str]:
            picked: list[str] = []
            since = None
            for line in self.log.read_text(errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                mine = event.get("ingestion_id") == ing
                since = since or (event.get("timestamp") if mine else None)
                if mine or (since and event.get("event") in ("pimingestd started", "retention pruned")):
                    rest = {k: v for k, v in event.items() if k not in _LOG_KEYS}
                    picked.append(
                        f"{event.get('timestamp')} {event.get('level')} {event.get('event')} {json.dumps(rest)}"[:400]
                    )
            return ([f"... ({len(picked) - events} earlier)"] if len(picked) > events else []) + picked[-events:]

        await part("daemon API", api)
        await part("state database", state)
        await part("receiver", receiver)
        await part(f"daemon log ({self.log})", log)
        return "\n".join(out)

    async def resume(self, ing: str) -> None:
        status, body = await self.call("POST", f"{self.durl}/api/ingestions/{ing}/resume")
        assert status in (200, 202), (status, body)

    async def record_outcomes(self, ing: str, sent: list[Any], key: str = "sku") -> dict[str, int]:
        """Issue 15's invariants for an ingestion that completed: each record of ``sent`` (the file's records
        that were to be sent: all of them, or under delta the new and changed ones) is applied exactly once or
        is in the reject file, never both and never neither; nothing else was applied but tombstones; and the
        scope's stored versions are what the receiver holds."""
        st = await self.status(ing)
        assert st["status"] == Status.COMPLETED, st
        applied = [r for r in await self.applied(ing) if r.get("_deleted") is not True]
        rejected: list[Any] = []
        if st["records_rejected"]:
            async with aiohttp.ClientSession() as s, s.get(f"{self.durl}/api/ingestions/{ing}/rejects") as r:
                assert r.status == 200, await r.text()
                raw = await r.read()
            # Read back by the daemon's own reader, as a fixed file dropped in again would be (no reject fields).
            spec = sources.SourceSpec(st["format"])
            rejected = [json.loads(canonical.encode(x)) for x in sources.read_stream(io.BytesIO(raw), "rejects", spec)]
        canon = [canonical.encode(r) for r in sent]
        got = [canonical.encode(r) for r in applied]
        refused = [canonical.encode(r) for r in rejected]
        assert len(set(got)) == len(got), "a record was applied twice"
        assert not set(got) & set(refused), "a record is both applied and in the reject file"
        assert sorted(got + refused) == sorted(canon), (
            f"applied {len(got)} + rejected {len(refused)} records; {len(canon)} were to be sent"
        )
        assert st["records_rejected"] == len(refused), (st["records_rejected"], len(refused))
        if st["delta_scope"]:
            assert self.versions(st["delta_scope"]) == await self.catalogue(key), "stored versions != receiver"
        return {"applied": len(got), "rejected": len(refused)}

    def versions(self, scope: str) -> dict[str, bytes]:
        """A delta scope's stored versions (key -> hash), as committed."""
        return scope_versions(self.state_db, scope)

    async def catalogue(self, key: str = "sku") -> dict[str, bytes]:
        """What the receiver holds, key -> the hash the daemon stores for a version."""
        code, current = await self.call("GET", f"{self.rurl}/catalogue?key={key}")
        assert code == 200, current
        return {k: hashlib.sha256(v.encode()).digest()[:HASH_BYTES] for k, v in current.items()}

    def read_state(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of the daemon's state database as a second, read-only connection sees them: only what
        is committed."""
        con = sqlite3.connect(f"file:{self.state_db}?mode=ro", uri=True)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def phases(self, ing: str, timeout: float = 10.0) -> dict[str, float]:
        """Seconds of the spool pass, of delivery and in all, as the daemon measured them: the
        ``phase = "completed"`` event of ``ing`` in its JSON log (the daemon logs at info or debug)."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log.read_text().splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("ingestion_id") == ing and event.get("phase") == "completed":
                    return {k: float(event[f"{k}_seconds"]) for k in ("spool", "delivery", "total")}
            if time.monotonic() > deadline:
                raise AssertionError(f"no completed phase event for {ing} in {self.log}")
            time.sleep(0.05)
