"""Remote objects through fsspec: S3 (s3fs), SFTP (sshfs, over asyncssh) and HTTP(S) (aiohttp).

``Remote`` is the one way the daemon touches a remote object. Its calls block
(fsspec runs the I/O on its own event loop thread): call them from a worker
thread, never on the daemon's loop.

- **Which URLs.** ``check_allowed``: a URL must start with one of ``[remote]
  allowed_urls`` (scheme, host and path compared as parts, so
  ``https://cdn.example.com`` does not allow ``https://cdn.example.com.evil``).
  A host that is, or resolves to, a loopback, link-local or unspecified
  address is allowed only by an entry that names that host: a bare
  ``https://`` entry never reaches 127.0.0.1 or 169.254.169.254. Credentials
  in a URL are refused (they belong in ``[remote.*]``, which is masked).
- **Identity.** ``stat`` gives the size and a version: the S3 version id or
  ETag, the HTTP ETag or Last-Modified, the SFTP mtime.
- **Reads.** ``open`` gives a sequential stream of exactly ``size`` bytes that
  hashes what it hands out (the file_id) with one block of ``block_size`` in
  memory. A transfer that fails or ends early is reopened at the byte it
  reached, by ranged read, after checking that the object's identity is
  unchanged, up to ``read_attempts`` times; a server without ranged reads
  fails the ingestion saying so.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import structlog

from .. import config, libraries
from ..config import RemoteConfig
from ..errors import FileChangedError, PimIngestError, RemoteError, RemoteNotFound, UrlNotAllowed
from ..model import REMOTE_SCHEMES

log = structlog.get_logger("pimingestd.locations")

SCHEMES = REMOTE_SCHEMES


def is_remote(path: str) -> bool:
    """Whether an ingestion's ``path`` is a URL (local paths are absolute, so never contain ``://``
    before their first ``/``)."""
    return urlsplit(path).scheme in SCHEMES


def redact(url: str) -> str:
    """The URL without credentials or query (a presigned URL's signature is a secret), for logs and errors."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}" + ("?…" if parts.query else "")


def name_of(url: str) -> str:
    return PurePosixPath(urlsplit(url).path).name or urlsplit(url).netloc


def _internal(host: str, resolve: bool) -> bool:
    """Whether ``host`` is (or, when ``resolve``, resolves to) a loopback, link-local or unspecified address."""
    host = host.strip("[]")
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
            return True
        if not resolve:
            return False
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except OSError:
            return False  # it will fail to connect, and say so then
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    return any(a.is_loopback or a.is_link_local or a.is_unspecified for a in addresses)


def check_allowed(url: str, allowed: tuple[str, ...] | list[str], *, resolve: bool = True) -> None:
    """UrlNotAllowed unless ``url`` lies under one of the ``allowed`` prefixes (see the module's doc)."""
    parts = urlsplit(url)
    shown = redact(url)
    if parts.scheme not in SCHEMES:
        raise UrlNotAllowed(f"{shown}: not a remote URL; use one of {', '.join(s + '://' for s in SCHEMES)}")
    if parts.username or parts.password:
        raise UrlNotAllowed(f"{shown}: credentials in a URL are refused; configure them in [remote.{parts.scheme}]")
    if not parts.netloc or not parts.path.strip("/"):
        raise UrlNotAllowed(f"{shown}: names no object (expected {parts.scheme}://host/path)")
    if not allowed:
        raise UrlNotAllowed(f"{shown}: [remote] allowed_urls is empty, so no remote URL is allowed")
    host = (parts.hostname or "").lower()
    for prefix in allowed:
        p = urlsplit(prefix)
        if p.scheme != parts.scheme:
            continue
        if p.netloc:
            if p.netloc.lower() != parts.netloc.lower():
                continue
        elif parts.scheme != "s3" and _internal(host, resolve):
            continue  # a bare scheme never reaches this machine or its link-local neighbours
        if p.path and not (
            parts.path == p.path or parts.path.startswith(p.path if p.path.endswith("/") else p.path + "/")
        ):
            continue
        return
    raise UrlNotAllowed(
        f"{shown}: not under any of [remote] allowed_urls"
        + (" (loopback and link-local hosts must be listed by name)" if _internal(host, False) else "")
    )


@dataclass(frozen=True, slots=True)
class ObjectIdentity:
    size: int
    version: str  # "version:<id>", "etag:<etag>", "modified:<date>", or "" when the server gives none


@dataclass(frozen=True, slots=True)
class Listed:
    url: str
    identity: ObjectIdentity


class Remote:
    """The configured remote backends; one per daemon."""

    def __init__(self, cfg: RemoteConfig) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self._fs: dict[tuple[str, str], Any] = {}

    # ---- filesystems ---------------------------------------------------------------

    def _filesystem(self, url: str, fresh: bool = False) -> Any:
        parts = urlsplit(url)
        scheme = parts.scheme
        key = (scheme, parts.netloc if scheme == "sftp" else "")
        with self._lock:
            if not fresh and key in self._fs:
                return self._fs[key]
            fs = self._make(scheme, parts)
            self._fs[key] = fs
            return fs

    def _forget(self, url: str) -> None:
        """Drop a cached filesystem after a failure: a broken connection is not reused."""
        parts = urlsplit(url)
        with self._lock:
            self._fs.pop((parts.scheme, parts.netloc if parts.scheme == "sftp" else ""), None)

    def _make(self, scheme: str, parts: Any) -> Any:
        if scheme == "s3":
            try:
                s3fs = libraries.load("s3fs")  # imported when first used: botocore is large
            except ImportError as exc:
                raise RemoteError(f"S3 needs the s3fs package: {exc}") from None

            c = self.cfg.s3
            client: dict[str, Any] = {}
            if c.endpoint_url:
                client["endpoint_url"] = c.endpoint_url
            if c.region:
                client["region_name"] = c.region
            return s3fs.S3FileSystem(
                key=c.key or None,
                secret=c.secret or None,
                client_kwargs=client,
                default_block_size=self.cfg.block_size,
                use_listings_cache=False,
                skip_instance_cache=True,
                version_aware=True,
            )
        if scheme == "sftp":
            try:
                sshfs = libraries.load("sshfs")
            except ImportError as exc:  # a dependency; say which if an install lacks it
                raise RemoteError(f"SFTP needs the sshfs package: {exc}") from None

            c2 = self.cfg.sftp
            kwargs: dict[str, Any] = {"port": parts.port or 22, "skip_instance_cache": True, "timeout": 30}
            if c2.username:
                kwargs["username"] = c2.username
            if c2.key_file is not None:
                kwargs["client_keys"] = [str(c2.key_file)]
            kwargs["known_hosts"] = str(c2.known_hosts) if c2.known_hosts is not None else ()
            if c2.known_hosts is None:
                kwargs.pop("known_hosts")  # asyncssh's default: ~/.ssh/known_hosts
            return sshfs.SSHFileSystem(parts.hostname, **kwargs)
        http = libraries.load("fsspec.implementations.http")
        return http.HTTPFileSystem(
            headers=dict(self.cfg.http.headers), skip_instance_cache=True, client_kwargs={"trust_env": False}
        )

    @staticmethod
    def _path(url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme == "s3":
            return f"{parts.netloc}{parts.path}"
        if parts.scheme == "sftp":
            return parts.path
        return url

    def _failure(self, url: str, exc: BaseException, doing: str) -> PimIngestError:
        if isinstance(exc, PimIngestError):
            return exc
        if not isinstance(exc, FileNotFoundError):
            self._forget(url)
        shown = redact(url)
        if isinstance(exc, FileNotFoundError):
            return RemoteNotFound(f"{shown}: no such object")
        text = str(exc) or type(exc).__name__
        kind = type(exc).__name__
        if "HostKeyNotVerifiable" in kind or "host key" in text.lower():
            return RemoteError(f"{shown}: the server's host key is not in [remote.sftp] known_hosts ({text})")
        status = getattr(exc, "status", None) or getattr(exc, "code", None)
        if status in (401, 403) or "AccessDenied" in text or "PermissionError" in kind or "Permission" in kind:
            return RemoteError(f"{shown}: access denied while {doing} ({text})")
        return RemoteError(f"{shown}: {doing} failed: {kind}: {text}")

    # ---- identity --------------------------------------------------------------------

    def stat(self, url: str) -> ObjectIdentity:
        try:
            fs = self._filesystem(url)
            info = fs.info(self._path(url))
        except Exception as exc:
            raise self._failure(url, exc, "asking for the object's size and version") from None
        return self._identity(url, info)

    def _identity(self, url: str, info: dict[str, Any]) -> ObjectIdentity:
        scheme = urlsplit(url).scheme
        if info.get("type") == "directory":
            raise RemoteNotFound(f"{redact(url)}: is a folder, not an object")
        size = info.get("size")
        if not isinstance(size, int):
            raise RemoteError(f"{redact(url)}: the server does not say the object's size")
        if scheme in {"http", "https"}:
            final = info.get("url")
            if final and final != url:
                check_allowed(final, self.cfg.allowed_urls)  # a redirect must stay where the operator allowed
        version = ""
        if info.get("VersionId") and info.get("VersionId") != "null":
            version = f"version:{info['VersionId']}"
        elif info.get("ETag"):
            version = f"etag:{str(info['ETag']).strip()}"
        elif info.get("mtime") is not None:
            mtime = info["mtime"]
            version = f"modified:{mtime.isoformat() if hasattr(mtime, 'isoformat') else mtime}"
        elif info.get("Last-Modified"):
            version = f"modified:{info['Last-Modified']}"
        return ObjectIdentity(size, version)

    def check_unchanged(self, url: str, expected: ObjectIdentity) -> None:
        now = self.stat(url)
        if now != expected:
            raise FileChangedError(
                f"{name_of(url)}: the remote object changed since it was submitted (it was {expected.size} bytes,"
                f" {expected.version or 'no version'}; now {now.size} bytes, {now.version or 'no version'});"
                " nothing more is read"
            )

    # ---- reading -----------------------------------------------------------------------

    def open(self, url: str, identity: ObjectIdentity) -> HashingStream:
        """A stream of the object's ``identity.size`` bytes, reconnecting after a cut (see the module's doc)."""
        return HashingStream(self, url, identity)

    def _open_at(self, url: str, identity: ObjectIdentity, offset: int, fresh: bool) -> BinaryIO:
        scheme = urlsplit(url).scheme
        fs = self._filesystem(url, fresh=fresh)
        path = self._path(url)
        block = self.cfg.block_size
        if scheme in ("http", "https"):
            if offset == 0:
                f = fs.open(path, "rb", block_size=0)  # one streamed GET
            else:
                if not identity.version:
                    raise RemoteError(
                        f"{redact(url)}: the transfer was cut at byte {offset}, and the server gives no ETag or"
                        " Last-Modified, so a ranged read could splice two versions; the ingestion stops here"
                    )
                f = fs.open(path, "rb", block_size=block, cache_type="readahead", size=identity.size)
                f.seek(offset)
            return f  # type: ignore[no-any-return]
        kwargs: dict[str, Any] = {"block_size": block}
        if scheme == "s3":
            kwargs["cache_type"] = "readahead"
            kwargs["fill_cache"] = False
            if identity.version.startswith("version:"):
                kwargs["version_id"] = identity.version.removeprefix("version:")
        f = fs.open(path, "rb", **kwargs)
        if offset:
            f.seek(offset)
        return f  # type: ignore[no-any-return]

    # ---- remote inboxes ----------------------------------------------------------------

    def list(self, prefix: str) -> list[Listed]:
        """The objects under ``prefix`` (an S3 prefix or an SFTP folder), not recursing into folders."""
        parts = urlsplit(prefix)
        try:
            fs = self._filesystem(prefix)
            if parts.scheme == "s3":
                fs.invalidate_cache()
            entries = fs.ls(self._path(prefix).rstrip("/") + "/", detail=True)
        except FileNotFoundError:
            return []
        except Exception as exc:
            raise self._failure(prefix, exc, "listing") from None
        out = []
        base = f"{parts.scheme}://{parts.netloc}"
        for info in entries:
            if info.get("type") != "file":
                continue
            name = str(info["name"])
            path = name if parts.scheme == "sftp" else "/" + name.split("/", 1)[1]
            url = base + path
            out.append(Listed(url, self._identity(url, info)))
        return out

    def move(self, url: str, folder: str) -> str:
        """Move an object into ``folder`` (a prefix or folder URL on the same server): a rename on SFTP,
        a copy and delete on S3. Returns the new URL."""
        target = folder.rstrip("/") + "/" + name_of(url)
        try:
            fs = self._filesystem(url)
            if urlsplit(url).scheme == "sftp":
                fs.makedirs(self._path(folder), exist_ok=True)
            fs.mv(self._path(url), self._path(target))
        except Exception as exc:
            raise self._failure(url, exc, f"moving it to {redact(folder)}") from None
        return target

    def write(self, url: str, data: bytes) -> None:
        """Write a small object (a remote inbox's error report)."""
        try:
            self._filesystem(url).pipe_file(self._path(url), data)
        except Exception as exc:
            raise self._failure(url, exc, "writing") from None


class HashingStream(io.RawIOBase):
    """Exactly ``size`` bytes of a remote object, read in order; SHA-256 over what was read.

    A read that raises or ends before ``size`` is retried from the byte reached, on a new
    connection, once the object is found unchanged."""

    def __init__(self, remote: Remote, url: str, identity: ObjectIdentity) -> None:
        super().__init__()
        self._remote = remote
        self._url = url
        self._identity = identity
        self._pos = 0
        self._hash = hashlib.sha256()
        self._fh: BinaryIO | None = None
        self.reconnects = 0

    @property
    def file_id(self) -> str:
        if self._pos != self._identity.size:
            raise RuntimeError("file_id asked for before the whole object was read")
        return "sha256:" + self._hash.hexdigest()

    @property
    def position(self) -> int:
        return self._pos

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._identity.size - self._pos)
        if want <= 0:
            return 0
        data = self._read(want)
        n = len(data)
        memoryview(buffer)[:n] = data
        self._hash.update(data)
        self._pos += n
        return n

    def drain(self) -> None:
        """Read (and hash) whatever the parser left unread, to the end."""
        buf = bytearray(1 << 16)
        while self.readinto(buf):
            pass

    def _read(self, want: int) -> bytes:
        attempts = self._remote.cfg.read_attempts
        last: BaseException | None = None
        for attempt in range(1, attempts + 1):
            try:
                if self._fh is None:
                    self._fh = self._remote._open_at(self._url, self._identity, self._pos, fresh=attempt > 1)
                data = self._fh.read(want)
                if data:
                    return bytes(data)
                last = EOFError(f"the transfer ended at byte {self._pos} of {self._identity.size}")
            except PimIngestError:
                raise
            except ValueError as exc:
                if "range" in str(exc).lower():  # fsspec: the HTTP server ignores Range
                    raise RemoteError(
                        f"{redact(self._url)}: the transfer was cut at byte {self._pos}, and the server does not"
                        " support ranged reads to continue from there; the ingestion stops (nothing was sent)"
                    ) from None
                last = exc
            except Exception as exc:
                last = exc
            self._close_fh()
            if attempt == attempts:
                break
            log.warning(
                "remote read failed; reconnecting",
                url=redact(self._url),
                at_byte=self._pos,
                attempt=attempt,
                error=f"{type(last).__name__}: {last}",
            )
            time.sleep(min(0.2 * 2 ** (attempt - 1), 5.0))
            self.reconnects += 1
            try:
                self._remote.check_unchanged(self._url, self._identity)
            except FileChangedError:
                raise
            except PimIngestError as exc:
                last = exc
        raise RemoteError(
            f"{redact(self._url)}: reading failed at byte {self._pos} of {self._identity.size} after"
            f" {attempts} attempts; last error: {type(last).__name__}: {last}"
        )

    def _close_fh(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(Exception):
                fh.close()

    def close(self) -> None:
        self._close_fh()
        super().close()


def stage(stream: HashingStream, target: Any, limit: int, name: str, stop: threading.Event | None = None) -> None:
    """Copy the whole stream to the local file ``target`` (for formats that need random access)."""
    if stream._identity.size > limit:
        raise RemoteError(
            f"{name}: {stream._identity.size} bytes is over [remote] stage_max_bytes ({limit}); an Excel workbook"
            " is staged to local disk before it is read"
        )
    buf = bytearray(1 << 20)
    with open(target, "wb") as out:
        while n := stream.readinto(buf):
            out.write(memoryview(buf)[:n])
            if stop is not None and stop.is_set():
                return


__all__ = [
    "SCHEMES",
    "HashingStream",
    "Listed",
    "ObjectIdentity",
    "Remote",
    "check_allowed",
    "is_remote",
    "name_of",
    "redact",
    "stage",
]


def _allowed_at_load(url: str, allowed: tuple[str, ...]) -> None:
    check_allowed(url, allowed, resolve=False)  # names only: configuration is checked without DNS


config.register(config.UrlChecks(check_allowed=_allowed_at_load))
