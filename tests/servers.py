"""Real remote servers on 127.0.0.1 for the remote-object tests: moto's standalone S3 server, OpenSSH's sshd
with throwaway keys, an aiohttp file server with Range and ETag (and faults), and a TCP proxy that cuts a
connection mid-transfer."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from pimingestd.testing import free_port

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_port(port: int, proc: subprocess.Popen[bytes] | None, what: str, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s")


# ---- S3: moto's standalone server --------------------------------------------------------------


@dataclass
class S3Server:
    port: int
    proc: subprocess.Popen[bytes]
    key: str = "AKIDTESTONLY"
    secret: str = "s3-secret-for-tests-only"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            region_name="us-east-1",
        )

    def config(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "key": self.key, "secret": self.secret, "region": "us-east-1"}

    def stop(self) -> None:
        _stop(self.proc)


def start_s3(log: Path) -> S3Server:
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    _wait_port(port, proc, "moto server")
    return S3Server(port, proc)


# ---- SFTP: OpenSSH's sshd --------------------------------------------------------------------------


@dataclass
class SshServer:
    port: int
    proc: subprocess.Popen[bytes]
    root: Path  # files served: sftp://127.0.0.1:<port><root>/...
    user: str
    user_key: Path
    known_hosts: Path
    other_known_hosts: Path  # names the right host with a different key

    def url(self, rel: str) -> str:
        return f"sftp://127.0.0.1:{self.port}{self.root}/{rel}"

    def config(self, known_hosts: Path | None = None) -> dict[str, Any]:
        return {
            "username": self.user,
            "key_file": str(self.user_key),
            "known_hosts": str(known_hosts or self.known_hosts),
        }

    def stop(self) -> None:
        _stop(self.proc)


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start_sshd(base: Path) -> SshServer:
    base.mkdir(parents=True, exist_ok=True)
    host_key, other_key, user_key = base / "host_key", base / "other_host_key", base / "user_key"
    for k in (host_key, other_key, user_key):
        _keygen(k)
    authorized = base / "authorized_keys"
    shutil.copy(user_key.with_suffix(".pub"), authorized)
    authorized.chmod(0o600)
    root = base / "files"
    root.mkdir()
    port = free_port()
    cfg = base / "sshd_config"
    cfg.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {base / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        "Subsystem sftp internal-sftp\nLogLevel ERROR\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation folder, which sshd requires
    with open(base / "sshd.log", "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stderr=log)
    _wait_port(port, proc, "sshd")
    known, other = base / "known_hosts", base / "other_known_hosts"
    for path, key in ((known, host_key), (other, other_key)):
        kind, blob = key.with_suffix(".pub").read_text().split()[:2]
        path.write_text(f"[127.0.0.1]:{port} {kind} {blob}\n")
    return SshServer(port, proc, root, getpass.getuser(), user_key, known, other)


# ---- HTTP: an aiohttp file server with Range, ETag and faults ---------------------------------------


@dataclass
class HttpFiles:
    """Objects served at /<name> (a name may hold slashes). Faults: ``cut_after`` closes the first GET after
    that many bytes; ``replace_after_first`` swaps an object's bytes once its first GET has begun, and
    ``replace_after_head`` (n, bytes) once its n-th HEAD is answered; ``ranges`` False ignores Range;
    ``etag`` False sends neither ETag nor Last-Modified, and ``weak_etag`` sends that weak ETag for every
    version (a server that deems them equivalent); ``redirect`` answers every request for a name with
    a 302 to a URL, ``redirect_get`` only a GET without Range, ``redirect_ranged`` only a GET with Range;
    ``fail_get`` answers a GET with that status (and the reason phrase ``fail_reason`` makes of the request:
    a server that echoes what it was sent). A GET with If-Match that is not the object's ETag is
    answered 412. ``requests`` lists every request that arrived, whatever it asked for: (method, path with
    query, headers)."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: int | None = None
    replace_after_first: dict[str, bytes] = field(default_factory=dict)
    replace_after_head: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    ranges: bool = True
    etag: bool = True
    weak_etag: str | None = None
    redirect: dict[str, str] = field(default_factory=dict)
    redirect_get: dict[str, str] = field(default_factory=dict)
    redirect_ranged: dict[str, str] = field(default_factory=dict)
    fail_get: dict[str, int] = field(default_factory=dict)
    fail_reason: Callable[[web.Request], str] | None = None
    gets: list[tuple[str, str | None]] = field(default_factory=list)  # (name, Range header)
    headers_seen: list[dict[str, str]] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    port: int = 0

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def _tag(self, data: bytes) -> dict[str, str]:
        if not self.etag:
            return {}
        if self.weak_etag is not None:
            return {"ETag": self.weak_etag}
        return {"ETag": '"' + hashlib.sha256(data).hexdigest()[:16] + '"'}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.requests.append((request.method, request.path_qs, dict(request.headers)))
        self.headers_seen.append(dict(request.headers))
        if name in self.redirect:
            raise web.HTTPFound(self.redirect[name])
        if request.method == "GET":
            ranged = request.headers.get("Range") is not None
            to = (self.redirect_ranged if ranged else self.redirect_get).get(name)
            if to is not None:
                raise web.HTTPFound(to)
            if name in self.fail_get:
                reason = self.fail_reason(request) if self.fail_reason is not None else None
                return web.Response(status=self.fail_get[name], reason=reason, text="fault")
        data = self.files.get(name)
        if data is None:
            raise web.HTTPNotFound()
        headers = {**self._tag(data), "Accept-Ranges": "bytes" if self.ranges else "none"}
        if request.method == "HEAD":
            head = web.StreamResponse(headers=headers)
            head.content_length = len(data)
            await head.prepare(request)
            if name in self.replace_after_head:
                heads, new = self.replace_after_head[name]
                if heads <= 1:
                    self.files[name] = self.replace_after_head.pop(name)[1]
                else:
                    self.replace_after_head[name] = (heads - 1, new)
            return head
        rng = request.headers.get("Range")
        self.gets.append((name, rng))
        match = request.headers.get("If-Match")
        if match is not None and match != headers.get("ETag"):  # as a server that honours preconditions
            return web.Response(status=412, text="precondition failed")
        if name in self.replace_after_first:
            self.files[name] = self.replace_after_first.pop(name)
        start, end, status = 0, len(data), 200
        if rng and self.ranges:
            spec = rng.removeprefix("bytes=")
            a, _, b = spec.partition("-")
            start, end = int(a), min(int(b) + 1 if b else len(data), len(data))
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        resp = web.StreamResponse(status=status, headers={**headers, "Content-Length": str(end - start)})
        await resp.prepare(request)
        body = data[start:end]
        limit = self.cut_after
        if limit is not None and len(body) > limit:
            self.cut_after = None  # once
            await resp.write(body[:limit])
            await asyncio.sleep(0.2)  # the client reads what arrived
            assert request.transport is not None
            request.transport.close()  # then the connection is cut mid-transfer
            return resp
        for i in range(0, len(body), 1 << 16):
            await resp.write(body[i : i + (1 << 16)])
        await resp.write_eof()
        return resp


@contextlib.asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[str]:
    """``app`` on a real aiohttp server at 127.0.0.1, on a free port; yields its base URL (ending in /)."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def http_files() -> AsyncIterator[HttpFiles]:
    files = HttpFiles()
    app = web.Application()
    app.router.add_get("/{name:.*}", files.handle)  # and HEAD, through the same handler
    async with served(app) as url:
        files.port = int(url.rstrip("/").rsplit(":", 1)[1])
        yield files


# ---- a TCP proxy that cuts one connection ---------------------------------------------------------


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to a target port; the first connection that carries more than
    ``cut_after`` bytes from the server is closed at that point (once)."""

    def __init__(self, target: int, cut_after: int) -> None:
        self.target = target
        self.cut_after: int | None = cut_after
        self.cuts = 0
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        sent = 0

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, downstream: bool) -> None:
            nonlocal sent
            try:
                while data := await src.read(1 << 16):
                    if downstream and self.cut_after is not None and sent + len(data) > self.cut_after:
                        dst.write(data[: self.cut_after - sent])
                        await dst.drain()
                        self.cut_after = None
                        self.cuts += 1
                        raise ConnectionResetError("cut")
                    if downstream:
                        sent += len(data)
                    dst.write(data)
                    await dst.drain()
            finally:
                for w in (writer, up_writer):
                    w.close()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True), return_exceptions=True)


class S3Tamper:
    """A proxy in front of moto's S3 server that changes its answers to object GETs the way another
    S3-compatible store (or a broken one) would, the rest of each answer being moto's own:
    ``drop_request_headers`` are not passed on (a store that ignores If-Match), ``set_headers`` replace the
    answer's (a checksum that does not match its bytes), ``chunked`` sends the body without Content-Length,
    and ``append`` adds bytes after it (only with ``chunked``). ``gets`` counts the GETs of objects."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.drop_request_headers: set[str] = set()
        self.set_headers: dict[str, str] = {}
        self.chunked = False
        self.append = b""
        self.gets = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> S3Tamper:
        import aiohttp

        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        is_get = request.method == "GET" and request.path.count("/") >= 2 and "list-type" not in request.query
        self.gets += is_get
        dropped = {h.lower() for h in self.drop_request_headers} if is_get else set()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in dropped | {"host"}}
        url = f"http://127.0.0.1:{self.target}{request.rel_url}"
        async with self._session.request(request.method, url, headers=headers, data=await request.read()) as up:
            body = await up.read()
            out = {k: v for k, v in up.headers.items() if k.lower() != "transfer-encoding"}
            if is_get and up.status in (200, 206):
                out.update(self.set_headers)
                if self.chunked:
                    out.pop("Content-Length", None)
                    answer = web.StreamResponse(status=up.status, headers=out)
                    answer.enable_chunked_encoding()
                    await answer.prepare(request)
                    await answer.write(body + self.append)
                    await answer.write_eof()
                    return answer
            return web.Response(status=up.status, headers=out, body=body)


# ---- MariaDB: a throwaway server on a local socket -------------------------------------------------------


@dataclass
class MariaDb:
    proc: subprocess.Popen[bytes]
    socket: Path
    base: Path

    def url(self, database: str) -> str:
        """A DBAL URL for ``database`` (created if missing)."""
        self.sql(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        return f"mysql://root@localhost/{database}?unix_socket={self.socket}"

    def sql(self, statement: str, database: str = "") -> str:
        out = subprocess.run(
            [
                "mariadb",
                "--no-defaults",
                f"--socket={self.socket}",
                "-uroot",
                "--default-character-set=utf8mb4",
                "-N",
                "-B",
                "-e",
                statement,
                database,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout

    def stop(self) -> None:
        """SIGTERM to mariadbd's whole process group (it may run under a wrapper such as a chroot's bwrap,
        which does not pass signals on), SIGKILL after 20 s."""
        _stop_group(self.proc, 20)


def _stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM to the process group ``proc`` leads (started with start_new_session), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def start_mariadb(base: Path, prefix: tuple[str, ...] = ()) -> MariaDb:
    """mariadb-install-db into ``base``, then mariadbd on a socket there (no TCP), as the current user.
    ``prefix`` runs both inside another platform (a chroot: tests/test_pimcore_bundle.py's Platform)."""
    base.mkdir(parents=True, exist_ok=True)
    data, socket = base / "data", base / "mysqld.sock"
    user = getpass.getuser()
    subprocess.run(
        [*prefix, "mariadb-install-db", "--no-defaults", f"--datadir={data}", f"--user={user}",
         "--auth-root-authentication-method=normal", "--skip-test-db"],
        capture_output=True,
        check=True,
    )  # fmt: skip
    with open(base / "mariadb.log", "wb") as log:
        proc = subprocess.Popen(
            [*prefix, "mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={socket}", "--skip-networking",
             f"--user={user}", f"--pid-file={base / 'mariadb.pid'}", "--innodb-buffer-pool-size=64M",
             "--innodb-flush-log-at-trx-commit=1", "--max-allowed-packet=128M", "--character-set-server=utf8mb4",
             "--collation-server=utf8mb4_bin"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"mariadbd exited with {proc.returncode}; see {base / 'mariadb.log'}")
        ping = subprocess.run(
            ["mariadb-admin", "--no-defaults", f"--socket={socket}", "-uroot", "ping"], capture_output=True
        )
        if ping.returncode == 0:
            return MariaDb(proc, socket, base)
        if time.monotonic() > deadline:
            _stop_group(proc, 0)
            raise RuntimeError("mariadbd did not answer within 60 s")
        time.sleep(0.2)
