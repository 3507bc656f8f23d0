"""Remote objects through fsspec: S3 (s3fs), SFTP (sshfs, over asyncssh) and HTTP(S) (aiohttp).

``Remote`` is the one way the daemon touches a remote object. Its calls block
(fsspec runs the I/O on its own event loop thread): call them from a worker
thread, never on the daemon's loop.

- **Which URLs.** ``check_allowed``: a URL must start with one of ``[remote]
  allowed_urls`` (scheme, host and path compared as parts, so
  ``https://cdn.example.com`` does not allow ``https://cdn.example.com.evil``).
  A path with a ``.`` or ``..`` segment is refused, in any spelling a server
  resolves (percent-encoded, ``..;``, fullwidth, overlong UTF-8; a server
  resolves them: ``/feeds/../admin`` is ``/admin``). A host that is, or
  resolves to, an address of this machine (loopback, unspecified, 0.0.0.0/8,
  any of its interfaces' addresses) or a link-local one is allowed only by an
  entry that names that host: a bare ``https://`` entry never reaches
  127.0.0.1 or 169.254.169.254, in any spelling (``[::ffff:127.0.0.1]``,
  6to4, NAT64). Credentials in a URL are refused (they belong in
  ``[remote.*]``, which is masked).
- **Every request is checked before it is made.** HTTP: each hop (HEAD, GET,
  ranged reads, and every redirect) passes ``check_allowed`` in the session's
  middleware; names are resolved by a resolver that checks each address, and
  the connection goes to those addresses (no DNS rebinding between the check
  and the read); ``[remote.http] headers`` go to the URL's own origin only,
  never to a host a redirect names. SFTP: the host name is resolved and
  checked once, and the connection made to that address (known_hosts still
  matched by name); no ssh config file is read (its ProxyCommand or HostName
  would connect elsewhere).
- **Identity.** ``stat`` gives the size and a version: the S3 version id or
  ETag, the HTTP ETag or Last-Modified, the SFTP mtime.
- **Reads.** ``open`` gives a sequential stream of exactly ``size`` bytes that
  hashes what it hands out (the file_id) with one block of ``block_size`` in
  memory (S3: one GET pinned to the version seen, read as it arrives; see
  ``S3Body``). A transfer that fails or ends early is reopened at the byte it
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
import sys
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, BinaryIO, cast
from urllib.parse import unquote_to_bytes, urlsplit

import structlog
import yarl

from .. import config, libraries, redaction
from ..config import RemoteConfig
from ..errors import FileChangedError, PimIngestError, RemoteError, RemoteNotFound, UrlNotAllowed
from ..model import REMOTE_SCHEMES
from . import s3_session

log = structlog.get_logger("pimingestd.locations")

SCHEMES = REMOTE_SCHEMES
# Connections in an S3 client's pool: each ingestion reading an object holds one for its whole read (S3Body),
# up to [daemon] max_concurrent (at most 64), and stats, listings and moves need theirs meanwhile (botocore's
# default of 10 would leave them waiting, without a timeout, for a whole object to be read).
S3_CONNECTIONS = 64 + 16


def is_remote(path: str) -> bool:
    """Whether an ingestion's ``path`` is a URL (local paths are absolute, so never contain ``://``
    before their first ``/``)."""
    return urlsplit(path).scheme in SCHEMES


redact = redaction.url  # the URL without credentials or query (a presigned URL's signature is a secret)


def name_of(url: str) -> str:
    return PurePosixPath(urlsplit(url).path).name or urlsplit(url).netloc


# ---- addresses that reach this machine ---------------------------------------------------------------

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))  # RFC 6052, RFC 8215
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # "this host on this network": Linux connects it locally
# Cloud metadata services outside link-local (169.254.169.254 is link-local): AWS's IPv6 endpoint and
# Alibaba Cloud's. They hand out the machine's credentials, so they are treated as this machine's own.
_METADATA = frozenset({ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")})
_OWN_TTL = 10.0  # seconds the machine's own addresses are cached (an interface may get a new one)
_own_lock = threading.Lock()

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _embedded(a: Address) -> list[Address]:
    """``a`` and every IPv4 address it carries: IPv4-mapped (``::ffff:127.0.0.1``, which a dual-stack socket
    connects to 127.0.0.1), IPv4-compatible, 6to4, NAT64 and Teredo's client."""
    out: list[Address] = [a]
    if isinstance(a, ipaddress.IPv6Address):
        if a.ipv4_mapped is not None:
            out.append(a.ipv4_mapped)
        if a.sixtofour is not None:
            out.append(a.sixtofour)
        if a.teredo is not None:
            out.extend(a.teredo)
        if any(a in net for net in _NAT64) or (int(a) >> 32 == 0 and int(a) > 1):  # NAT64; ::a.b.c.d
            out.append(ipaddress.IPv4Address(int(a) & 0xFFFFFFFF))
    return out


def _proc_addresses() -> set[Address]:
    """Linux: every address of every interface, from /proc (IPv4: the LOCAL host routes of fib_trie)."""
    found: set[Address] = set()
    with contextlib.suppress(OSError), open("/proc/net/if_inet6") as f:
        for line in f:
            hexa = line.split()[0]
            found.add(ipaddress.IPv6Address(int(hexa, 16)))
    with contextlib.suppress(OSError), open("/proc/net/fib_trie") as f:
        last = ""
        for line in f:
            words = line.split()
            if len(words) >= 2 and words[0] in ("|--", "+--"):
                last = words[1].split("/")[0]
            elif "/32 host LOCAL" in line and last:
                with contextlib.suppress(ValueError):
                    found.add(ipaddress.IPv4Address(last))
    return found


_own: list[tuple[float, frozenset[Address]]] = [(0.0, frozenset())]  # (when read, addresses), one entry


def own_addresses() -> frozenset[Address]:
    """The machine's own addresses (cached for a few seconds): a service bound to 0.0.0.0 answers on each."""
    with _own_lock:
        when, addresses = _own[0]
        if time.monotonic() - when < _OWN_TTL and addresses:
            return addresses
        found = _proc_addresses()
        with contextlib.suppress(OSError, UnicodeError):
            for info in socket.getaddrinfo(socket.gethostname(), None, proto=socket.IPPROTO_TCP):
                with contextlib.suppress(ValueError):
                    found.add(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
        _own[0] = (time.monotonic(), frozenset(found))
        return _own[0][1]


def internal_address(address: str | Address) -> bool:
    """Whether connecting to ``address`` reaches this machine or a link-local neighbour (169.254.169.254,
    the cloud's metadata service): loopback, link-local, unspecified, 0.0.0.0/8, one of the machine's own
    addresses, a metadata service outside link-local (fd00:ec2::254, 100.100.100.200), or an IPv6 address
    that carries one of those (``::ffff:127.0.0.1``, 6to4, NAT64)."""
    if isinstance(address, str):
        address = ipaddress.ip_address(address.strip("[]").split("%")[0])
    own = own_addresses()
    for a in _embedded(address):
        if a.is_loopback or a.is_link_local or a.is_unspecified or a in own or a in _METADATA:
            return True
        if isinstance(a, ipaddress.IPv4Address) and a in _THIS_NETWORK:
            return True
    return False


def addresses_of(host: str, port: int | None = None) -> list[Address]:
    """Every address ``host`` resolves to (blocking); [] when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def _internal(host: str, resolve_names: bool) -> bool:
    """Whether ``host`` is (or, when ``resolve_names``, resolves to) an address that reaches this machine."""
    host = host.strip("[]")
    try:
        return internal_address(host)
    except ValueError:
        pass
    lowered = host.lower().rstrip(".")
    if lowered in ("localhost", "localhost.localdomain") or lowered.endswith(".localhost"):
        return True
    if not resolve_names:
        return False
    return any(internal_address(a) for a in addresses_of(host))  # one that does not resolve fails to connect later


# ---- which URLs ---------------------------------------------------------------------------------------


# Overlong UTF-8 spellings of ".", "/" and "\\", which old servers (IIS) decoded as those characters.
_OVERLONG = (
    (b"\xc0\xae", b"."),
    (b"\xe0\x80\xae", b"."),
    (b"\xc0\xaf", b"/"),
    (b"\xe0\x80\xaf", b"/"),
    (b"\xc1\x9c", b"\\"),
)


def _segments(path: str) -> list[str]:
    """The path's segments once every percent-encoding is undone (``%252e`` is ``%2e`` is ``.``), overlong
    UTF-8 read as the character it spells, split at ``/`` and ``\\`` (a server may take either, or decode
    twice)."""
    raw = path.encode("utf-8", "surrogateescape")
    for _ in range(4):
        decoded = unquote_to_bytes(raw)
        if decoded == raw:
            break
        raw = decoded
    for overlong, plain in _OVERLONG:
        raw = raw.replace(overlong, plain)
    return raw.decode("utf-8", "replace").replace("\\", "/").split("/")


def _is_dot(segment: str) -> bool:
    """Whether a server may take ``segment`` as ``.`` or ``..``: after dropping a path parameter (Tomcat and
    Spring resolve ``..;x`` as ``..``), NUL bytes and white space around it, and in NFKC form (fullwidth
    dots, U+FF0E, become ``.``)."""
    segment = unicodedata.normalize("NFKC", segment.split(";", 1)[0]).replace("\x00", "").strip()
    return segment in (".", "..")


def dot_segment(path: str) -> bool:
    """Whether the path has a ``.`` or ``..`` segment in any spelling a server resolves (percent-encoded,
    with a path parameter, fullwidth, overlong): a server resolves them, so ``/feeds/../admin`` is ``/admin``,
    outside a ``/feeds/`` prefix."""
    return any(_is_dot(s) for s in _segments(path))


def check_allowed(url: str, allowed: tuple[str, ...] | list[str], *, resolve: bool = True) -> None:
    """UrlNotAllowed unless ``url`` lies under one of the ``allowed`` prefixes (see the module's doc)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        raise UrlNotAllowed(f"{redact(url)}: not a valid URL") from None
    shown = redact(url)
    if parts.scheme not in SCHEMES:
        raise UrlNotAllowed(f"{shown}: not a remote URL; use one of {', '.join(s + '://' for s in SCHEMES)}")
    if parts.username or parts.password:
        raise UrlNotAllowed(f"{shown}: credentials in a URL are refused; configure them in [remote.{parts.scheme}]")
    if not parts.netloc or not parts.path.strip("/"):
        raise UrlNotAllowed(f"{shown}: names no object (expected {parts.scheme}://host/path)")
    if parts.scheme in ("s3", "sftp") and (parts.query or parts.fragment or url.endswith(("?", "#"))):
        raise UrlNotAllowed(
            f"{shown}: an S3 key or SFTP path is taken literally, so a '?' or '#' in it cannot be given in a URL"
            " (it would end the path and name another object)"
        )
    if dot_segment(parts.path):
        raise UrlNotAllowed(
            f"{shown}: a path with a '.' or '..' segment (in any spelling a server resolves) is refused"
        )
    if not allowed:
        raise UrlNotAllowed(f"{shown}: [remote] allowed_urls is empty, so no remote URL is allowed")
    host = (parts.hostname or "").lower()
    here = _place(url)
    if here is None:
        raise UrlNotAllowed(f"{shown}: not a valid URL")
    for prefix in allowed:
        p = urlsplit(prefix)
        if p.scheme != parts.scheme:
            continue
        entry = _place(prefix)
        if entry is None:
            continue
        if p.netloc:
            if entry[:2] != here[:2]:
                continue
        elif parts.scheme != "s3" and _internal(host, resolve):
            continue  # a bare scheme never reaches this machine or its link-local neighbours
        want, path = entry[2], here[2]
        if want and not (path == want or path.startswith(want if want.endswith("/") else want + "/")):
            continue
        return
    raise UrlNotAllowed(
        f"{shown}: not under any of [remote] allowed_urls"
        + (" (loopback and link-local hosts must be listed by name)" if _internal(host, False) else "")
    )


_DEFAULT_PORTS = {"http": 80, "https": 443, "sftp": 22}


def _place(url: str) -> tuple[str, tuple[str, int | None], str] | None:
    """(scheme, (host, port), path) as the request spells it, to compare a URL with an entry written another
    way; None for a URL that cannot be spelled so. HTTP: as aiohttp sends it (yarl's form: a default port
    dropped, an IDN host in punycode, an IPv6 address compressed, the path's percent-encoding normalised),
    which is also what the session checks at each hop. SFTP and S3 take the path literally: only the host is
    compared case-insensitively, with SFTP's default port."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        try:
            u = yarl.URL(url)
            return parts.scheme, ((u.raw_host or "").lower(), u.port), u.raw_path
        except (ValueError, UnicodeError):
            return None
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme == "s3":
        return parts.scheme, (parts.netloc, None), parts.path
    return parts.scheme, ((parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(parts.scheme)), parts.path


def named_hosts(
    allowed: tuple[str, ...] | list[str], schemes: tuple[str, ...] = ("http", "https")
) -> frozenset[tuple[str, int]]:
    """(host, port) of every ``allowed`` entry of ``schemes`` that names its host: only those may resolve to
    an address of this machine."""
    out = set()
    for prefix in allowed:
        p = urlsplit(prefix)
        place = _place(prefix) if p.scheme in schemes and p.hostname else None
        if place is not None:
            host, port = place[1]
            out.add((host_key(host), port or 0))
    return frozenset(out)


def host_key(host: str) -> str:
    """A host name as ``named_hosts`` holds it and a resolver is asked for it: punycode, lower case, without
    a trailing dot (``Bücher.example.`` is ``xn--bcher-kva.example``)."""
    host = host.strip("[]")
    with contextlib.suppress(ValueError, UnicodeError):
        host = yarl.URL.build(scheme="http", host=host).raw_host or host
    return host.lower().rstrip(".")


@dataclass(frozen=True, slots=True)
class ObjectIdentity:
    size: int
    version: str  # "version:<id>", "etag:<etag>", "modified:<date>", or "" when the server gives none


@dataclass(frozen=True, slots=True)
class Listed:
    url: str
    identity: ObjectIdentity


_MAX_ORIGINS = 32  # HTTP filesystems (each its own session and connection pool) kept, one per origin


def _cause(exc: BaseException) -> PimIngestError | None:
    """The daemon's own error among ``exc``'s causes: fsspec turns a refused request (raised in the
    session, see ``_guard``) into FileNotFoundError ``from`` it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, PimIngestError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _http_session_factory(origin: str, allowed: tuple[str, ...], headers: dict[str, str]) -> Any:
    """fsspec's ``get_client`` for one origin's HTTPFileSystem: an aiohttp session that checks every request
    before it is made, redirects included (aiohttp calls a session's middlewares once per hop), and pins
    what a host name resolves to.

    - Each hop's URL must pass ``check_allowed`` (scheme, host, path, no dot segments; an IP literal, which
      aiohttp connects to without resolving, must not be this machine's unless named).
    - The configured headers go to ``origin`` only: they are added per hop, and removed on any other.
    - The connector resolves names through ``_CheckingResolver``, which refuses an address of this machine
      or a link-local one (unless an entry names the host), and the connection is made to exactly the
      addresses it checked: a DNS answer that changes between the check and the read changes nothing.
    """
    import aiohttp
    import yarl
    from aiohttp.abc import AbstractResolver, ResolveResult
    from aiohttp.resolver import ThreadedResolver

    named = named_hosts(allowed)
    own_origin = yarl.URL(origin).origin()

    class _CheckingResolver(AbstractResolver):
        def __init__(self) -> None:
            self._inner = ThreadedResolver()

        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            results = await self._inner.resolve(host, port, family)
            if (host_key(host), port) not in named:
                for r in results:
                    if internal_address(r["host"]):
                        raise UrlNotAllowed(
                            f"{host}: resolves to {r['host']}, an address of this machine or a link-local one;"
                            " loopback and link-local hosts must be listed by name in [remote] allowed_urls"
                        )
            return results

        async def close(self) -> None:
            await self._inner.close()

    async def guard(req: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
        check_allowed(str(req.url), allowed, resolve=False)
        for name in headers:
            req.headers.popall(name, None)
        if req.url.origin() == own_origin:
            req.headers.update(headers)
        return await handler(req)  # type: ignore[no-any-return]

    async def get_client(**_: Any) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(resolver=_CheckingResolver())
        return aiohttp.ClientSession(connector=connector, middlewares=(guard,), trust_env=False)

    return get_client


class Remote:
    """The configured remote backends; one per daemon."""

    def __init__(self, cfg: RemoteConfig) -> None:
        self.cfg = cfg
        # What a server may echo and a library quote in its exception text: masked in every error and log line.
        self.secrets = redaction.secret_values([*cfg.http.headers.values(), cfg.s3.key or "", cfg.s3.secret or ""])
        self._lock = threading.Lock()
        self._fs: dict[tuple[str, str], Any] = {}

    # ---- filesystems ---------------------------------------------------------------

    @staticmethod
    def _key(parts: Any) -> tuple[str, str]:
        """One filesystem per SFTP server and per HTTP origin (its session sends the headers to it alone)."""
        return (parts.scheme, "" if parts.scheme == "s3" else parts.netloc.lower())

    def _filesystem(self, url: str, fresh: bool = False) -> Any:
        parts = urlsplit(url)
        key = self._key(parts)
        with self._lock:
            if not fresh and key in self._fs:
                return self._fs[key]
        fs = self._make(parts.scheme, parts)  # outside the lock: an SFTP host name is resolved here
        with self._lock:
            self._fs.pop(key, None)
            self._fs[key] = fs
            while len(self._fs) > _MAX_ORIGINS:
                self._fs.pop(next(iter(self._fs)))  # the oldest; fsspec closes its session once unused
            return fs

    def _forget(self, url: str) -> None:
        """Drop a cached filesystem after a failure: a broken connection is not reused."""
        with self._lock:
            self._fs.pop(self._key(urlsplit(url)), None)

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
                session=s3_session.session(),  # the endpoints table cut to the services used (10 MiB less)
                key=c.key or None,
                secret=c.secret or None,
                client_kwargs=client,
                default_block_size=self.cfg.block_size,
                config_kwargs={"max_pool_connections": S3_CONNECTIONS},
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
            port = parts.port or 22
            # config=None: no ~/.ssh/config, whose ProxyCommand, ProxyJump or HostName would send the connection
            # elsewhere than the address checked; SFTP is configured in [remote.sftp] only.
            kwargs: dict[str, Any] = {"port": port, "skip_instance_cache": True, "timeout": 30, "config": None}
            if c2.username:
                kwargs["username"] = c2.username
            if c2.key_file is not None:
                kwargs["client_keys"] = [str(c2.key_file)]
            kwargs["known_hosts"] = str(c2.known_hosts) if c2.known_hosts is not None else ()
            if c2.known_hosts is None:
                kwargs.pop("known_hosts")  # asyncssh's default: ~/.ssh/known_hosts
            host = self._pinned_sftp_host(parts.hostname or "", port)
            if host != parts.hostname:
                kwargs["host_key_alias"] = parts.hostname  # known_hosts names the host, not its address
            return sshfs.SSHFileSystem(host, **kwargs)
        http = libraries.load("fsspec.implementations.http")
        origin = f"{scheme}://{parts.netloc}"
        return http.HTTPFileSystem(
            skip_instance_cache=True,
            get_client=_http_session_factory(origin, self.cfg.allowed_urls, dict(self.cfg.http.headers)),
        )

    def _pinned_sftp_host(self, host: str, port: int) -> str:
        """The address to connect to for an SFTP host name: resolved once, checked (an address of this machine
        or a link-local one only for a host that an entry names), and used for the connection, so that the
        name cannot resolve elsewhere between the check and the connection."""
        try:
            ipaddress.ip_address(host.strip("[]"))
            return host  # a literal: check_allowed has judged it already
        except ValueError:
            pass
        addresses = addresses_of(host, port)
        if not addresses:
            return host  # does not resolve: the connection fails, saying so
        if (host_key(host), port) not in named_hosts(self.cfg.allowed_urls, ("sftp",)):
            for a in addresses:
                if internal_address(a):
                    raise UrlNotAllowed(
                        f"{host}: resolves to {a}, an address of this machine or a link-local one; loopback and"
                        " link-local hosts must be listed by name in [remote] allowed_urls"
                    )
        for a in dict.fromkeys(addresses):  # the first that answers, as a client trying each address would
            with contextlib.suppress(OSError), socket.create_connection((str(a), port), timeout=10):
                return str(a)
        return str(addresses[0])  # none answers: the connection fails, saying so

    @staticmethod
    def _path(url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme == "s3":
            return f"{parts.netloc}{parts.path}"
        if parts.scheme == "sftp":
            return parts.path
        return url

    def masked(self, err: PimIngestError) -> PimIngestError:
        """``err`` with the configured secrets masked in its text: the daemon's own refusal quotes the URL a
        redirect named, and a server can put what it was sent (a header's value) in that URL."""
        text = redaction.text(str(err), self.secrets)
        if text == str(err):
            return err
        try:
            return type(err)(text)
        except TypeError:  # a class whose constructor takes more than the message
            return RemoteError(text)

    def _failure(self, url: str, exc: BaseException, doing: str) -> PimIngestError:
        own = _cause(exc)
        if own is not None:
            return self.masked(own)
        if not isinstance(exc, FileNotFoundError):
            self._forget(url)
        shown = redact(url)
        if isinstance(exc, FileNotFoundError):
            return RemoteNotFound(f"{shown}: no such object")
        text = redaction.text(str(exc) or type(exc).__name__, self.secrets)  # a library's text quotes the URL
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
                try:  # a redirect must stay where the operator allowed
                    check_allowed(final, self.cfg.allowed_urls)
                except UrlNotAllowed as exc:
                    raise self.masked(exc) from None
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
            pin = _precondition(identity)  # a server that honours it answers 412 for another version
            if offset == 0:
                f = fs.open(path, "rb", block_size=0, size=identity.size, headers=pin)  # one streamed GET
            else:
                if not identity.version:
                    raise RemoteError(
                        f"{redact(url)}: the transfer was cut at byte {offset}, and the server gives no ETag or"
                        " Last-Modified, so a ranged read could splice two versions; the ingestion stops here"
                    )
                if identity.version.startswith("etag:W/"):  # "equivalent", not the same bytes (RFC 9110 8.8.1)
                    raise RemoteError(
                        f"{redact(url)}: the transfer was cut at byte {offset}, and the server gives only a weak ETag"
                        f" ({identity.version.removeprefix('etag:')}), which two versions with other bytes may share,"
                        " so a ranged read could splice them; the ingestion stops here"
                    )
                f = fs.open(path, "rb", block_size=block, cache_type="readahead", size=identity.size, headers=pin)
                f.seek(offset)
            return f  # type: ignore[no-any-return]
        if scheme == "s3":
            return cast(BinaryIO, S3Body(fs, path, identity, offset))
        f = fs.open(path, "rb", block_size=block)
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

    def move(self, url: str, folder: str, expected: ObjectIdentity | None = None) -> str:
        """Move an object into ``folder`` (a prefix or folder URL on the same server): a rename on SFTP,
        a copy and delete on S3. Returns the new URL.

        With ``expected``, only that version of the object is moved: FileChangedError if another one is at
        the URL (an exporter uploaded a new version under the same name), which is left where it is. S3
        copies the expected version (by version id, or on the condition that the ETag still matches) and
        deletes that version only; SFTP checks the renamed file and renames it back if it is another one."""
        target = folder.rstrip("/") + "/" + name_of(url)
        scheme = urlsplit(url).scheme
        try:
            if expected is not None:
                self._check_version(url, expected)
            fs = self._filesystem(url)
            if scheme == "sftp":
                fs.makedirs(self._path(folder), exist_ok=True)
            if scheme == "s3" and expected is not None:
                self._move_s3_version(fs, url, target, expected)
            else:
                fs.mv(self._path(url), self._path(target))
            if scheme == "sftp" and expected is not None:
                self._check_moved_back(fs, url, target, expected)
        except Exception as exc:
            raise self._failure(url, exc, f"moving it to {redact(folder)}") from None
        return target

    def _check_version(self, url: str, expected: ObjectIdentity) -> None:
        now = self.stat(url)
        if now != expected:
            raise FileChangedError(
                f"{redact(url)}: another version is there now ({now.size} bytes, {now.version or 'no version'};"
                f" the one ingested was {expected.size} bytes, {expected.version or 'no version'}); it is left in"
                " place, to be taken as a new object"
            )

    def _move_s3_version(self, fs: Any, url: str, target: str, expected: ObjectIdentity) -> None:
        bucket, key = self._path(url).split("/", 1)
        tbucket, tkey = self._path(target).split("/", 1)
        source: dict[str, Any] = {"Bucket": bucket, "Key": key}
        condition: dict[str, Any] = {}
        if expected.version.startswith("version:"):
            source["VersionId"] = expected.version.removeprefix("version:")
        elif expected.version.startswith("etag:"):
            condition["CopySourceIfMatch"] = expected.version.removeprefix("etag:")
        try:
            fs.call_s3("copy_object", Bucket=tbucket, Key=tkey, CopySource=source, **condition)
        except Exception as exc:
            if _precondition_failed(exc):
                raise FileChangedError(f"{redact(url)}: another version is there now; it is left in place") from None
            raise
        if "VersionId" in source:  # that version only: a newer one stays the object's current version
            fs.call_s3("delete_object", Bucket=bucket, Key=key, VersionId=source["VersionId"])
            return
        try:  # deleted only while the expected version is still there (a store may ignore the copy's condition)
            self._check_version(url, expected)
        except FileChangedError:
            fs.call_s3("delete_object", Bucket=tbucket, Key=tkey)  # the copy may be of the new version
            raise
        etag = condition.get("CopySourceIfMatch")
        if etag is None:  # no ETag to pin the delete to (a store that gives none): checked just above
            fs.call_s3("delete_object", Bucket=bucket, Key=key)
            return
        try:  # an upload that lands after that check must not be deleted unread: If-Match on the delete too
            fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=etag)
        except Exception as exc:
            if _precondition_failed(exc):
                raise FileChangedError(
                    f"{redact(url)}: another version was uploaded while the one ingested was moved; it is left in"
                    f" place (the one ingested is at {redact(target)})"
                ) from None
            if not _not_implemented(exc):
                raise
            fs.call_s3("delete_object", Bucket=bucket, Key=key)  # a store without conditional deletes

    def _check_moved_back(self, fs: Any, url: str, target: str, expected: ObjectIdentity) -> None:
        """SFTP: the file renamed into the folder is the expected version, or it goes back (a rename does not
        replace a file that a newer upload put there meanwhile; then it stays, and the error says so)."""
        moved = self._identity(target, fs.info(self._path(target)))
        if moved == expected:
            return
        try:
            _sftp_rename_no_replace(fs, self._path(target), self._path(url))
        except Exception:
            raise FileChangedError(
                f"{redact(url)}: a new version replaced it while it was moved; that version is now at"
                f" {redact(target)}, not ingested: put it back to have it taken"
            ) from None
        raise FileChangedError(f"{redact(url)}: another version is there now; it is left in place")

    def write(self, url: str, data: bytes) -> None:
        """Write a small object (a remote inbox's error report)."""
        try:
            self._filesystem(url).pipe_file(self._path(url), data)
        except Exception as exc:
            raise self._failure(url, exc, "writing") from None


def _sftp_rename_no_replace(fs: Any, source: str, target: str) -> None:
    """SFTP's own rename, which fails if ``target`` exists (sshfs's ``mv`` uses posix-rename, which replaces)."""
    from fsspec.asyn import sync

    async def rename() -> None:
        async with fs._pool.get() as channel:
            await channel.rename(source, target)

    sync(fs.loop, rename)


def _precondition_failed(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause: s3fs turns botocore's error into an OSError) is a 412 answer."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            error = response.get("Error", {})
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if error.get("Code") == "PreconditionFailed" or status == 412:
                return True
        if getattr(current, "status", None) == 412:
            return True
        current = current.__cause__ or current.__context__
    return False


def _not_implemented(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) says the store does not implement what was asked (a conditional delete,
    on an S3-compatible store that predates it)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NotImplemented", "InvalidArgument") or status == 501:
                return True
        current = current.__cause__ or current.__context__
    return False


def _precondition(identity: ObjectIdentity) -> dict[str, str]:
    """HTTP request headers that pin a read to ``identity``'s version: If-Match for a strong ETag (a weak one
    never matches If-Match), else If-Unmodified-Since for a Last-Modified date."""
    version = identity.version
    if version.startswith("etag:") and not version.startswith("etag:W/"):
        return {"If-Match": version.removeprefix("etag:")}
    if version.startswith("modified:") and not version[9:10].isdigit():  # an HTTP date, not an SFTP mtime
        return {"If-Unmodified-Since": version.removeprefix("modified:")}
    return {}


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
            except PimIngestError as exc:
                masked = self._remote.masked(exc)  # the session's refusal quotes the URL a redirect named
                if masked is exc:
                    raise
                raise masked from None
            except ValueError as exc:
                if "range" in str(exc).lower():  # fsspec: the HTTP server ignores Range
                    raise RemoteError(
                        f"{redact(self._url)}: the transfer was cut at byte {self._pos}, and the server does not"
                        " support ranged reads to continue from there; the ingestion stops (nothing was sent)"
                    ) from None
                last = exc
            except Exception as exc:
                own = _cause(exc)
                if own is not None:  # refused by the session's check (a redirect out of allowed_urls, say)
                    raise self._remote.masked(own) from None
                if _precondition_failed(exc):  # the pinned version is not the one there now
                    raise FileChangedError(
                        f"{name_of(self._url)}: the remote object changed since it was submitted (the server"
                        f" answered 412 to a read pinned to {self._identity.version}); nothing more is read"
                    ) from None
                last = exc
            self._close_fh()
            if attempt == attempts:
                break
            log.warning(
                "remote read failed; reconnecting",
                url=redact(self._url),
                at_byte=self._pos,
                attempt=attempt,
                error=redaction.text(f"{type(last).__name__}: {last}", self._remote.secrets),
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
            f" {attempts} attempts; last error: "
            + redaction.text(f"{type(last).__name__}: {last}", self._remote.secrets)
        )

    def _close_fh(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(Exception):
                fh.close()

    def close(self) -> None:
        self._close_fh()
        super().close()


class S3Body(io.RawIOBase):
    """One GET of an S3 object from ``offset`` to its end, read as it arrives, pinned to the version seen at
    submit: its version id, or ``If-Match`` on its (strong) ETag, and the answer's own version id or ETag,
    status and Content-Range checked too (a store that ignores ``If-Match`` would hand out another object).

    s3fs's own files read by ranges of ``block_size`` into a read-ahead cache: each miss fetched a range of
    twice that, joined its pieces and sliced the cache again: 38 MiB of buffers at the default 4 MiB (the
    s3fs row of ``python -m bench --only remote``: 102 MiB when reading, 64 MiB for the client alone). Here
    at most ``_PIECE`` bytes are held between reads, and aiohttp pauses the socket while its own buffer is
    full. A cut raises (aiohttp's payload error) or ends the body short; HashingStream then opens a new one
    at the byte reached. Once the last byte is handed out, one more read must find the end: that read is
    where botocore checks the body's length and the object's checksum (S3 sends one for a whole-object GET),
    and a failure there ends the ingestion, since the bytes were handed out already.

    It holds one of the client's pooled connections until closed (``S3_CONNECTIONS``), and closing never
    waits: the connection is dropped on fsspec's loop, which owns it (at interpreter exit that loop may no
    longer run)."""

    _PIECE = 1 << 18

    def __init__(self, fs: Any, path: str, identity: ObjectIdentity, offset: int) -> None:
        super().__init__()
        from fsspec.asyn import sync

        self._sync = sync
        self._fs = fs
        self._name = redact(f"s3://{path}")
        bucket, key = path.split("/", 1)
        pin: dict[str, Any] = {}
        version = identity.version.removeprefix("version:") if identity.version.startswith("version:") else None
        etag = identity.version.removeprefix("etag:") if identity.version.startswith("etag:") else None
        if version:
            pin["VersionId"] = version
        elif etag and not etag.startswith("W/"):  # a weak ETag may be shared by other bytes: compared below
            pin["IfMatch"] = etag
        if offset:
            pin["Range"] = f"bytes={offset}-"
        answer = fs.call_s3("get_object", Bucket=bucket, Key=key, **pin)
        self._body = answer["Body"]
        self._left = identity.size - offset
        try:
            self._check(answer, identity, offset, version, etag)
        except BaseException:
            self.close()
            raise

    def _check(self, answer: dict[str, Any], identity: ObjectIdentity, offset: int, version: str | None,
               etag: str | None) -> None:  # fmt: skip
        changed = (version and answer.get("VersionId") not in (None, version)) or (
            etag and answer.get("ETag") not in (None, etag)
        )
        if changed:
            raise FileChangedError(
                f"{self._name}: the remote object changed since it was submitted (the store answered"
                f" {answer.get('VersionId') or answer.get('ETag')} for a read of {identity.version}); nothing more"
                " is read"
            )
        status = answer.get("ResponseMetadata", {}).get("HTTPStatusCode")
        length = answer.get("ContentLength")
        span = answer.get("ContentRange")
        whole = f"bytes {offset}-{identity.size - 1}/{identity.size}"
        if offset and (status != 206 or (span is not None and span != whole)):
            problem = f"answered {status} {span or ''}".rstrip()
        elif length is not None and length != self._left:
            problem = f"answered {length} bytes"
        else:
            return  # without Content-Length (a chunked answer) the body's end is checked as it is read
        raise RemoteError(
            f"{self._name}: asked for bytes {offset}-{identity.size - 1}, the store {problem}; the ingestion stops here"
        )

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        return self._sync(self._fs.loop, self._gather, min(size, self._PIECE))  # type: ignore[no-any-return]

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        memoryview(buffer)[: len(data)] = data
        return len(data)

    async def _gather(self, want: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        want = min(want, self._left)
        while got < want:
            piece = await self._body.read(want - got)
            if not piece:
                break  # short: HashingStream reconnects at the byte reached
            parts.append(piece)
            got += len(piece)
        self._left -= got
        if self._left == 0 and got:
            await self._end()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _end(self) -> None:
        try:
            extra = await self._body.read(1)  # botocore checks the length and the checksum on this read
        except Exception as exc:
            raise RemoteError(
                f"{self._name}: the object's last bytes were read, and then the store's answer failed its check"
                f" ({redaction.text(f'{type(exc).__name__}: {exc}')}); the ingestion stops here"
            ) from None
        if extra:
            raise RemoteError(f"{self._name}: the store sent more bytes than the object has; the ingestion stops here")

    def close(self) -> None:
        if not self.closed and hasattr(self, "_body"):
            loop = self._fs.loop
            if not sys.is_finalizing() and not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop has stopped: the connection goes with it
                    loop.call_soon_threadsafe(self._body.close)  # dropped, not returned to the pool half-read
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


config.register(config.UrlChecks(check_allowed=_allowed_at_load, dot_segment=dot_segment))
