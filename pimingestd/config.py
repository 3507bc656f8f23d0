"""Configuration: TOML in, frozen dataclasses out.

Every key is checked: unknown keys and wrong types raise ConfigError naming the
key as ``section.key``. Relative paths resolve against the config file's folder.
The PIM-Core secret is resolved here, once, by precedence: systemd credential
(``$CREDENTIALS_DIRECTORY/pimcore-secret``), then ``PIMINGESTD_PIMCORE_SECRET``,
then the file; so is the API token (``api-token``, ``PIMINGESTD_API_TOKEN``), and
the S3 keys. In the container image CREDENTIALS_DIRECTORY is /run/secrets, where
Docker and compose put secrets.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .errors import ConfigError, PimIngestError
from .model import REMOTE_SCHEMES

SECRET_ENV = "PIMINGESTD_PIMCORE_SECRET"
SECRET_CREDENTIAL = "pimcore-secret"
TOKEN_ENV = "PIMINGESTD_API_TOKEN"
TOKEN_CREDENTIAL = "api-token"

# One chunk is held in memory whole (and by PIM-Core too): sizes beyond these are refused everywhere.
MAX_CHUNK_RECORDS = 100_000
MAX_CHUNK_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    state_db: Path  # the SQLite state database (ingestions, chunks, versions); relative to the config file
    max_concurrent: int = 2  # ingestions running at once; chunks inside one follow the window
    drain_seconds: float = 10.0  # on SIGTERM, how long in-flight chunks may wait for their ACKs


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str = "127.0.0.1"  # the API's listen address; beyond loopback it needs [pimcore] secret and api_token
    port: int = 8080  # the API's port
    # how PIM-Core reaches this daemon: ACKs come to <public_url>/callbacks/ack
    public_url: str = "http://127.0.0.1:8080"
    # when set, /api/* needs Authorization: Bearer <token>; masked by check-config
    api_token: str = field(default="", repr=False)
    allowed_roots: tuple[Path, ...] = ()  # folders POST /api/ingest may read files from (empty: none)
    max_body_bytes: int = 1 << 20  # largest JSON request body the API reads
    max_upload_bytes: int = 10 << 30  # PUT /api/files/{name} answers 413 above this
    insecure: bool = False  # listen beyond loopback without a secret or a token (warned at every start)
    allowed_hosts: tuple[str, ...] = ()  # more names in the Host header (a DNS name or a proxy's); see middleware.py

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


@dataclass(frozen=True, slots=True)
class PimcoreConfig:
    chunk_url: str  # where chunks are POSTed (the bundle's /pimingest/chunks)
    complete_url: str  # where the completion is POSTed (the bundle's /pimingest/complete)
    # the HMAC secret both sides share; PIMINGESTD_PIMCORE_SECRET or the pimcore-secret credential override it
    secret: str = field(default="", repr=False)
    request_timeout: float = 60.0  # seconds a request to PIM-Core may take
    window: int = 1  # chunks of one ingestion in flight at once (more than one: protocol v2)
    order: str = "strict"  # "strict" or "by_key" (for ingestions whose records have a key)


@dataclass(frozen=True, slots=True)
class ChunkPolicy:
    """Exactly one of ``records`` and ``bytes`` is set."""

    records: int | None = None  # records per chunk (at most 100000); exactly one of records and bytes
    bytes: int | None = None  # bytes per chunk body (at most 64 MiB); exactly one of records and bytes

    def __post_init__(self) -> None:
        if (self.records is None) == (self.bytes is None):
            raise ConfigError("chunking: set exactly one of `records` or `bytes`")
        if self.records is not None and not 1 <= self.records <= MAX_CHUNK_RECORDS:
            raise ConfigError(f"chunking.records must be between 1 and {MAX_CHUNK_RECORDS}, got {self.records}")
        if self.bytes is not None and not 2 <= self.bytes <= MAX_CHUNK_BYTES:
            raise ConfigError(f"chunking.bytes must be between 2 and {MAX_CHUNK_BYTES} (64 MiB), got {self.bytes}")

    def describe(self) -> str:
        return f"records={self.records}" if self.records is not None else f"bytes={self.bytes}"


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    ack_timeout: float = 30.0  # seconds to wait for a chunk's ACK before it is sent again
    max_attempts: int = 3  # attempts per chunk before the ingestion fails (resumable)
    backoff: float = 1.0  # seconds before the second attempt; doubles each time, with jitter
    # validate, cut and spool the whole file before the first chunk is sent; false: one pass
    preflight: bool = True


@dataclass(frozen=True, slots=True)
class Profile:
    """Ingestion options for inbox files whose path (relative to the inbox) matches ``match``."""

    match: str  # glob on the path relative to the inbox (* within a folder, ** across folders); the first match wins
    format: str | None = None  # the format, when the file's extension does not tell it
    chunk_records: int | None = None  # records per chunk for these files, instead of [chunking]
    chunk_bytes: int | None = None  # bytes per chunk for these files, instead of [chunking]
    re_ingestion: bool = False  # deliver again a file whose bytes were delivered before
    options: Mapping[str, Any] = field(default_factory=dict)  # format options (json_path, sheet...)
    rules: Mapping[str, Any] = field(default_factory=dict)  # record rules (records/rules.py), checked


@dataclass(frozen=True, slots=True)
class InboxConfig:
    dir: Path  # drop files here (or rename them in); the four folders must be on one filesystem
    processing_dir: Path  # files being delivered
    done_dir: Path  # delivered files, done/<token>/<file>, with their reject files
    failed_dir: Path  # failed files, failed/<token>/<file>, with failed/<token>.error.json
    settle_seconds: float = 2.0  # a file written in place is taken once unchanged (and closed) this long
    # globs never taken: hidden files, partial uploads, Office lock files
    ignore: tuple[str, ...] = (".*", "*.part", "*.tmp", "~$*")
    watch: str = "auto"  # "auto" (inotify, polling if unavailable), "poll", or "off"
    poll_interval: float = 2.0  # seconds between scans when polling
    profiles: tuple[Profile, ...] = ()


@dataclass(frozen=True, slots=True)
class S3Config:
    endpoint_url: str = ""  # empty: AWS itself
    key: str = field(default="", repr=False)  # the access key; better as the s3-key credential or PIMINGESTD_S3_KEY
    # the secret key; better as the s3-secret credential or PIMINGESTD_S3_SECRET
    secret: str = field(default="", repr=False)
    region: str = ""  # the region, when the endpoint needs one


@dataclass(frozen=True, slots=True)
class SftpConfig:
    username: str = ""  # the SFTP user (empty: the daemon's own user name, as ssh does)
    key_file: Path | None = None  # the private key file (unset: the user's SSH keys and agent, as ssh does)
    known_hosts: Path | None = None  # None: ~/.ssh/known_hosts; an unknown host always fails


@dataclass(frozen=True, slots=True)
class HttpSourceConfig:
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # sent with every request


@dataclass(frozen=True, slots=True)
class RemoteWatch:
    """A remote inbox: new objects under ``url`` (an S3 prefix or an SFTP folder), polled."""

    url: str  # an s3:// prefix or an sftp:// folder, under allowed_urls
    poll_interval: float = 60.0  # seconds between listings
    format: str | None = None  # the format, when the object's name does not tell it
    chunk_records: int | None = None  # records per chunk for these objects, instead of [chunking]
    chunk_bytes: int | None = None  # bytes per chunk for these objects, instead of [chunking]
    re_ingestion: bool = False  # deliver again an object whose bytes were delivered before
    options: Mapping[str, Any] = field(default_factory=dict)
    rules: Mapping[str, Any] = field(default_factory=dict)  # record rules (records/rules.py), checked
    done_prefix: str | None = None  # where an object goes once ingested (rename; copy and delete on S3)
    failed_prefix: str | None = None  # where an object goes when it fails, with <name>.error.json beside it


@dataclass(frozen=True, slots=True)
class RemoteConfig:
    allowed_urls: tuple[str, ...] = ()  # URL prefixes; nothing is allowed by default
    s3: S3Config = field(default_factory=S3Config)
    sftp: SftpConfig = field(default_factory=SftpConfig)
    http: HttpSourceConfig = field(default_factory=HttpSourceConfig)
    watch: tuple[RemoteWatch, ...] = ()
    block_size: int = 4 << 20  # HTTP and SFTP: bytes per ranged read, the read buffer (S3 streams one GET)
    read_attempts: int = 5  # per transfer, counting reconnects after a cut
    stage_max_bytes: int = 4 << 30  # Excel is staged to local disk: at most this large


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """What is removed, and when. Each step is off (0) unless set."""

    chunk_rows_days: float = 0.0  # chunk rows of completed and cancelled ingestions (their summary stays)
    files_days: float = 0.0  # files in done/ and failed/, with their reports
    vacuum: bool = True  # give the database's freed pages back to the filesystem after pruning
    interval_minutes: float = 60.0  # how often retention runs (and disk use is measured for /metrics)


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    format: str = "json"  # "json" (one object per line) or "console" (readable, for a terminal)
    level: str = "info"  # "debug", "info", "warning" or "error"
    progress_seconds: float = 30.0  # at info, a running ingestion logs one progress line at most this often


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    """The bundled reference receiver, served by the daemon's own process."""

    host: str = "127.0.0.1"  # the reference receiver's listen address
    port: int = 8081  # its port
    data: Path = Path("var/receiver")  # its SQLite database folder


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    daemon: DaemonConfig
    http: HttpConfig
    pimcore: PimcoreConfig
    chunking: ChunkPolicy
    delivery: DeliveryConfig
    inbox: InboxConfig
    logging: LoggingConfig
    receiver: ReceiverConfig | None
    max_record_bytes: int = 16 << 20  # [chunking] max_record_bytes: larger records are refused
    remote: RemoteConfig = field(default_factory=RemoteConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)

    @property
    def callback_url(self) -> str:
        return self.http.public_url.rstrip("/") + "/callbacks/ack"

    def masked(self) -> dict[str, Any]:
        """The resolved config as plain data with secrets replaced, for printing."""
        out: dict[str, Any] = {"config": str(self.path)}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "path" or value is None:
                continue
            if f.name == "max_record_bytes":
                out["chunking"]["max_record_bytes"] = value
                continue
            out[f.name] = _plain(value)
        return out


SECRET_FIELDS = ("secret", "api_token", "key")  # masked wherever they occur; so are HTTP header values


def _plain(value: Any, name: str = "") -> Any:
    """``value`` as TOML-like plain data, secrets masked."""
    if name in SECRET_FIELDS:
        return "***" if value else ""
    if name == "headers":
        return {k: "***" for k in value}
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name), f.name) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(x) for x in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


class _Section:
    """Reads one TOML table, remembering which keys were used."""

    def __init__(self, name: str, raw: Any, base: Path) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"[{name}] must be a table")
        self.name = name
        self.raw: Mapping[str, Any] = raw
        self.base = base
        self.used: set[str] = set()

    def _get(self, key: str, default: Any) -> Any:
        self.used.add(key)
        return self.raw.get(key, default)

    def _where(self, key: str) -> str:
        return f"{self.name}.{key}"

    def string(self, key: str, default: str) -> str:
        v = self._get(key, default)
        if not isinstance(v, str):
            raise ConfigError(f"{self._where(key)} must be a string, got {type(v).__name__}")
        return v

    def choice(self, key: str, default: str, options: tuple[str, ...]) -> str:
        v = self.string(key, default)
        if v not in options:
            raise ConfigError(f"{self._where(key)} must be one of {', '.join(options)}; got {v!r}")
        return v

    def integer(self, key: str, default: int | None, *, minimum: int, maximum: int | None = None) -> int | None:
        v = self._get(key, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{self._where(key)} must be an integer, got {v!r}")
        if v < minimum or (maximum is not None and v > maximum):
            bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            raise ConfigError(f"{self._where(key)} must be {bound}, got {v}")
        return v

    def number(self, key: str, default: float, *, minimum: float, exclusive: bool = False) -> float:
        v = self._get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"{self._where(key)} must be a number, got {v!r}")
        if v < minimum or (exclusive and v == minimum):
            raise ConfigError(f"{self._where(key)} must be {'>' if exclusive else '>='} {minimum}, got {v}")
        return float(v)

    def boolean(self, key: str, default: bool) -> bool:
        v = self._get(key, default)
        if not isinstance(v, bool):
            raise ConfigError(f"{self._where(key)} must be true or false, got {v!r}")
        return v

    def path(self, key: str, default: str) -> Path:
        v = self.string(key, default)
        if not v:
            raise ConfigError(f"{self._where(key)} must not be empty")
        return _resolve(self.base, v)

    def paths(self, key: str, default: list[str]) -> tuple[Path, ...]:
        v = self._get(key, default)
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise ConfigError(f"{self._where(key)} must be a list of non-empty strings")
        return tuple(_resolve(self.base, x) for x in v)

    def url(self, key: str, default: str) -> str:
        v = self.string(key, default)
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{self._where(key)} must be an http(s) URL, got {v!r}")
        return v

    def strings(self, key: str, default: list[str]) -> list[str]:
        v = self._get(key, default)
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise ConfigError(f"{self._where(key)} must be a list of non-empty strings")
        return v

    def table(self, key: str) -> dict[str, Any]:
        v = self._get(key, {})
        if not isinstance(v, Mapping):
            raise ConfigError(f"{self._where(key)} must be a table")
        return dict(v)

    def tables(self, key: str) -> list[Any]:
        v = self._get(key, [])
        if not isinstance(v, list):
            raise ConfigError(f"{self._where(key)} must be an array of tables ([[{self.name}.{key}]])")
        return v

    def optional_string(self, key: str) -> str | None:
        v = self._get(key, None)
        if v is not None and (not isinstance(v, str) or not v):
            raise ConfigError(f"{self._where(key)} must be a non-empty string")
        return v

    def finish(self) -> None:
        unknown = sorted(set(self.raw) - self.used)
        if unknown:
            keys = ", ".join(self._where(k) for k in unknown)
            raise ConfigError(f"unknown key(s): {keys}")


PROFILE_KEYS = (
    "match",
    "format",
    "chunk_records",
    "chunk_bytes",
    "re_ingestion",
)  # and record rules; the rest: format options


# ---- checks the layers above register ---------------------------------------------------------------
# Configuration is read by everyone and imports no one. What only another layer knows (a format's options,
# the record rules, which remote URLs may be read) is checked by that layer, which registers its check here
# when it is imported: the import points down. parse() refuses to run while a check is missing, so none can
# be skipped; the daemon's composition root (app.py) imports all three owners.


@dataclass(frozen=True, slots=True)
class FormatChecks:
    """Registered by ``sources``: the formats, each one's option names, and the check of given options."""

    formats: tuple[str, ...]
    option_names: Callable[[str], tuple[str, ...]]
    check: Callable[[str, Mapping[str, Any], str], dict[str, Any]]  # (format, given, "where.") -> options


@dataclass(frozen=True, slots=True)
class RuleChecks:
    """Registered by ``records.rules``: the rule names, and their parse to the stored JSON form."""

    names: tuple[str, ...]
    parse: Callable[[Mapping[str, Any], str, Path], Mapping[str, Any]]  # (raw, "where.", base) -> as JSON


@dataclass(frozen=True, slots=True)
class UrlChecks:
    """Registered by ``locations.remote``: the rule for a URL against ``[remote] allowed_urls``."""

    check_allowed: Callable[[str, tuple[str, ...]], None]  # raises a PimIngestError saying why not
    dot_segment: Callable[[str], bool]  # whether a URL path has a '.' or '..' segment, percent-encoded or not


_Checks = FormatChecks | RuleChecks | UrlChecks
_C = TypeVar("_C", FormatChecks, RuleChecks, UrlChecks)
_OWNERS: dict[type[Any], str] = {
    FormatChecks: "pimingestd.sources",
    RuleChecks: "pimingestd.records.rules",
    UrlChecks: "pimingestd.locations.remote",
}
_registered: dict[type[Any], Any] = {}


def register(checks: _Checks) -> None:
    """Called once by each owner at import; a second registration replaces the first (a reload)."""
    _registered[type(checks)] = checks


def _checks(kind: type[_C]) -> _C:
    try:
        found: _C = _registered[kind]
    except KeyError:
        raise RuntimeError(
            f"configuration is parsed before {_OWNERS[kind]} registered its {kind.__name__}:"
            " import pimingestd.checks (as every entry point does) first"
        ) from None
    return found


def _profile(index: int, raw: Any, base: Path, where: str = "") -> Profile:
    formats = _checks(FormatChecks)
    record_rules = _checks(RuleChecks)
    where = where or f"inbox.profiles[{index}]"
    s = _Section(where, raw, base)
    rules = record_rules.parse(s.raw, where + ".", base)
    s.used.update(k for k in record_rules.names if k in s.raw)
    match = s.string("match", "")
    if not match:
        raise ConfigError(f"{where}.match is required (a glob on the path relative to the inbox)")
    fmt = s.optional_string("format")
    if fmt is not None and fmt not in formats.formats:
        raise ConfigError(f"{where}.format must be one of {', '.join(formats.formats)}; got {fmt!r}")
    given = {k: v for k, v in s.raw.items() if k not in PROFILE_KEYS and k not in record_rules.names}
    s.used.update(given)
    if fmt is not None:
        options = formats.check(fmt, given, where + ".")
    else:  # the profile may match files of several formats: each option must belong to one, and be valid there
        unknown = sorted(set(given).difference(*(formats.option_names(name) for name in formats.formats)))
        if unknown:
            raise ConfigError(f"unknown key(s): {', '.join(where + '.' + k for k in unknown)}")
        for name in formats.formats:
            mine = {k: v for k, v in given.items() if k in formats.option_names(name)}
            if mine:  # a format none of whose options are given is checked when a file of it arrives
                formats.check(name, mine, where + ".")
        options = given
    profile = Profile(
        match=match,
        format=fmt,
        chunk_records=s.integer("chunk_records", None, minimum=1, maximum=MAX_CHUNK_RECORDS),
        chunk_bytes=s.integer("chunk_bytes", None, minimum=2, maximum=MAX_CHUNK_BYTES),
        re_ingestion=s.boolean("re_ingestion", False),
        options=options,
        rules=rules,
    )
    s.finish()
    if profile.chunk_records is not None and profile.chunk_bytes is not None:
        raise ConfigError(f"{where}: set at most one of chunk_records and chunk_bytes")
    return profile


def _remote(raw: Any, base: Path, env: Mapping[str, str]) -> RemoteConfig:
    urls = _checks(UrlChecks)
    s = _Section("remote", raw, base)
    allowed = tuple(s.strings("allowed_urls", []))
    for i, prefix in enumerate(allowed):
        parts = urlsplit(prefix)
        if parts.scheme not in REMOTE_SCHEMES or parts.username or parts.password:
            raise ConfigError(
                f"remote.allowed_urls[{i}] = {prefix!r}: must start with one of"
                f" {', '.join(s + '://' for s in REMOTE_SCHEMES)}, without credentials"
            )
        if urls.dot_segment(parts.path):
            raise ConfigError(f"remote.allowed_urls[{i}] = {prefix!r}: a path with a '.' or '..' segment")
    raw_s3 = s.table("s3")
    s.used.add("s3")
    t = _Section("remote.s3", raw_s3, base)
    endpoint = t.string("endpoint_url", "")
    if endpoint:
        endpoint = t.url("endpoint_url", "")
    s3 = S3Config(
        endpoint_url=endpoint,
        key=_secret(t.string("key", ""), env, "s3-key", "PIMINGESTD_S3_KEY", "remote.s3.key"),
        secret=_secret(t.string("secret", ""), env, "s3-secret", "PIMINGESTD_S3_SECRET", "remote.s3.secret"),
        region=t.string("region", ""),
    )
    t.finish()
    t = _Section("remote.sftp", s.table("sftp"), base)
    key_file = t.optional_string("key_file")
    known_hosts = t.optional_string("known_hosts")
    sftp = SftpConfig(
        username=t.string("username", ""),
        key_file=_resolve(base, key_file) if key_file else None,
        known_hosts=_resolve(base, known_hosts) if known_hosts else None,
    )
    t.finish()
    t = _Section("remote.http", s.table("http"), base)
    headers = t.table("headers")
    if not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError("remote.http.headers must be a table of header name = text")
    t.used.add("headers")
    env_headers = env.get("PIMINGESTD_HTTP_HEADERS")
    if env_headers:  # JSON object, e.g. from a systemd credential or an EnvironmentFile
        try:
            extra = json.loads(env_headers)
        except ValueError as exc:
            raise ConfigError(f"PIMINGESTD_HTTP_HEADERS is not a JSON object: {exc}") from None
        if not isinstance(extra, dict) or not all(isinstance(v, str) for v in extra.values()):
            raise ConfigError("PIMINGESTD_HTTP_HEADERS must be a JSON object of header name to text")
        headers = {**headers, **extra}
    http = HttpSourceConfig(headers=dict(headers))
    t.finish()
    watches = []
    for i, w in enumerate(s.tables("watch")):
        where = f"remote.watch[{i}]"
        ws = _Section(where, w, base)
        url = ws.string("url", "")
        if not url:
            raise ConfigError(f"{where}.url is required (an S3 prefix or an SFTP folder)")
        if urlsplit(url).scheme not in ("s3", "sftp"):
            raise ConfigError(f"{where}.url = {url!r}: a remote inbox is an s3:// prefix or an sftp:// folder")
        try:
            urls.check_allowed(url, allowed)
        except PimIngestError as exc:
            raise ConfigError(f"{where}.url: {exc}") from None
        ws.used.add("url")
        opts = _profile(i, {"match": "**", **{k: v for k, v in ws.raw.items() if k not in _WATCH_KEYS}}, base, where)
        ws.used.update(k for k in ws.raw if k not in _WATCH_KEYS)
        watches.append(
            RemoteWatch(
                url=url,
                poll_interval=ws.number("poll_interval", 60.0, minimum=0.0, exclusive=True),
                format=opts.format,
                chunk_records=opts.chunk_records,
                chunk_bytes=opts.chunk_bytes,
                re_ingestion=opts.re_ingestion,
                options=opts.options,
                rules=opts.rules,
                done_prefix=_move_prefix(ws, "done_prefix", url),
                failed_prefix=_move_prefix(ws, "failed_prefix", url),
            )
        )
        ws.finish()
    remote = RemoteConfig(
        allowed_urls=allowed,
        s3=s3,
        sftp=sftp,
        http=http,
        watch=tuple(watches),
        block_size=s.integer("block_size", 4 << 20, minimum=64 << 10, maximum=64 << 20) or (4 << 20),
        read_attempts=s.integer("read_attempts", 5, minimum=1, maximum=100) or 5,
        stage_max_bytes=s.integer("stage_max_bytes", 4 << 30, minimum=1) or (4 << 30),
    )
    s.finish()
    return remote


_WATCH_KEYS = ("url", "poll_interval", "done_prefix", "failed_prefix")


def _move_prefix(ws: _Section, key: str, url: str) -> str | None:
    """A remote inbox's done or failed prefix: on the inbox's own server (an object is renamed, or copied
    within the store), and without dot segments (the server would resolve them somewhere else)."""
    value = ws.optional_string(key)
    if value is None:
        return None
    parts, inbox = urlsplit(value), urlsplit(url)
    same = parts.scheme == inbox.scheme and (parts.scheme == "s3" or parts.netloc.lower() == inbox.netloc.lower())
    if not same or not parts.netloc:
        raise ConfigError(
            f"{ws.name}.{key} = {value!r}: must be on the inbox's server ({inbox.scheme}://{inbox.netloc})"
        )
    if _checks(UrlChecks).dot_segment(parts.path):
        raise ConfigError(f"{ws.name}.{key} = {value!r}: a path with a '.' or '..' segment")
    return value


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def _host_name(value: str, s: _Section, key: str) -> str:
    """A bare host name for the Host check: no scheme, port, path or wildcard."""
    name = value.strip().rstrip(".").lower()
    if not name or any(c in name for c in "/:*@ []"):
        raise ConfigError(f"{s._where(key)}: {value!r} must be a bare host name, like ingest.example.com")
    return name


SECTIONS = ("daemon", "http", "pimcore", "chunking", "delivery", "inbox", "logging", "receiver", "remote", "retention")


def parse(raw: Mapping[str, Any], path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Build a Config from parsed TOML; ``path`` is the file it came from."""
    for kind in _OWNERS:  # every check, whether this file needs it or not: none is ever skipped
        _checks(kind)
    env = os.environ if env is None else env
    base = path.parent.resolve()
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section(s): {', '.join('[' + u + ']' for u in unknown)}")

    s = _Section("daemon", raw.get("daemon"), base)
    daemon = DaemonConfig(
        state_db=s.path("state_db", "var/ingestion_state.db"),
        max_concurrent=s.integer("max_concurrent", 2, minimum=1, maximum=64) or 2,
        drain_seconds=s.number("drain_seconds", 10.0, minimum=0.0),
    )
    s.finish()

    s = _Section("http", raw.get("http"), base)
    host = s.string("host", "127.0.0.1")
    port = s.integer("port", 8080, minimum=0, maximum=65535)
    assert port is not None
    http = HttpConfig(
        host=host,
        port=port,
        public_url=s.url("public_url", f"http://{host}:{port}"),
        api_token=_secret(s.string("api_token", ""), env, TOKEN_CREDENTIAL, TOKEN_ENV, "http.api_token"),
        allowed_roots=s.paths("allowed_roots", ["var/inbox"]),
        max_body_bytes=s.integer("max_body_bytes", 1 << 20, minimum=1024) or (1 << 20),
        max_upload_bytes=s.integer("max_upload_bytes", 10 << 30, minimum=1) or (10 << 30),
        insecure=s.boolean("insecure", False),
        allowed_hosts=tuple(_host_name(h, s, "allowed_hosts") for h in s.strings("allowed_hosts", [])),
    )
    s.finish()

    s = _Section("pimcore", raw.get("pimcore"), base)
    pimcore = PimcoreConfig(
        chunk_url=s.url("chunk_url", "http://127.0.0.1:8081/ingest/chunks"),
        complete_url=s.url("complete_url", "http://127.0.0.1:8081/ingest/complete"),
        secret=_secret(s.string("secret", ""), env, SECRET_CREDENTIAL, SECRET_ENV, "pimcore.secret"),
        request_timeout=s.number("request_timeout", 60.0, minimum=0.0, exclusive=True),
        window=s.integer("window", 1, minimum=1, maximum=256) or 1,
        order=s.choice("order", "strict", ("strict", "by_key")),
    )
    s.finish()

    s = _Section("chunking", raw.get("chunking"), base)
    chunking = ChunkPolicy(
        records=s.integer("records", None, minimum=1, maximum=MAX_CHUNK_RECORDS),
        bytes=s.integer("bytes", None, minimum=2, maximum=MAX_CHUNK_BYTES),
    )
    max_record_bytes = s.integer("max_record_bytes", 16 << 20, minimum=64) or (16 << 20)
    s.finish()

    s = _Section("delivery", raw.get("delivery"), base)
    delivery = DeliveryConfig(
        ack_timeout=s.number("ack_timeout", 30.0, minimum=0.0, exclusive=True),
        max_attempts=s.integer("max_attempts", 3, minimum=1, maximum=1000) or 3,
        backoff=s.number("backoff", 1.0, minimum=0.0),
        preflight=s.boolean("preflight", True),
    )
    s.finish()

    s = _Section("inbox", raw.get("inbox"), base)
    inbox = InboxConfig(
        dir=s.path("dir", "var/inbox"),
        processing_dir=s.path("processing_dir", "var/processing"),
        done_dir=s.path("done_dir", "var/done"),
        failed_dir=s.path("failed_dir", "var/failed"),
        settle_seconds=s.number("settle_seconds", 2.0, minimum=0.0),
        ignore=tuple(s.strings("ignore", [".*", "*.part", "*.tmp", "~$*"])),
        watch=s.choice("watch", "auto", ("auto", "poll", "off")),
        poll_interval=s.number("poll_interval", 2.0, minimum=0.0, exclusive=True),
        profiles=tuple(_profile(i, p, base) for i, p in enumerate(s.tables("profiles"))),
    )
    s.finish()
    dirs = {
        "dir": inbox.dir,
        "processing_dir": inbox.processing_dir,
        "done_dir": inbox.done_dir,
        "failed_dir": inbox.failed_dir,
    }
    for a, pa in dirs.items():
        for b, pb in dirs.items():
            if a < b and (pa == pb or pa in pb.parents or pb in pa.parents):
                raise ConfigError(f"inbox.{a} and inbox.{b} must be separate folders, neither inside the other")

    s = _Section("logging", raw.get("logging"), base)
    logging = LoggingConfig(
        format=s.choice("format", "json", ("json", "console")),
        level=s.choice("level", "info", ("debug", "info", "warning", "error")),
        progress_seconds=s.number("progress_seconds", 30.0, minimum=1.0),
    )
    s.finish()

    s = _Section("retention", raw.get("retention"), base)
    retention = RetentionConfig(
        chunk_rows_days=s.number("chunk_rows_days", 0.0, minimum=0.0),
        files_days=s.number("files_days", 0.0, minimum=0.0),
        vacuum=s.boolean("vacuum", True),
        interval_minutes=s.number("interval_minutes", 60.0, minimum=0.0, exclusive=True),
    )
    s.finish()

    receiver: ReceiverConfig | None = None
    if "receiver" in raw:
        s = _Section("receiver", raw.get("receiver"), base)
        rport = s.integer("port", 8081, minimum=0, maximum=65535)
        assert rport is not None
        receiver = ReceiverConfig(host=s.string("host", "127.0.0.1"), port=rport, data=s.path("data", "var/receiver"))
        s.finish()

    remote = _remote(raw.get("remote"), base, env)

    if not http.loopback and not http.insecure:
        missing = [
            what
            for what, value in (("pimcore.secret", pimcore.secret), ("http.api_token", http.api_token))
            if not value
        ]
        if missing:
            raise ConfigError(
                f"http.host = {http.host!r} listens beyond this machine, but {' and '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} empty: anyone who reaches the port could forge ACKs"
                " or drive the API. Set them, listen on 127.0.0.1, or set http.insecure = true to accept the risk."
            )

    return Config(
        path=path.resolve(),
        daemon=daemon,
        http=http,
        pimcore=pimcore,
        chunking=chunking,
        delivery=delivery,
        inbox=inbox,
        logging=logging,
        receiver=receiver,
        max_record_bytes=max_record_bytes,
        remote=remote,
        retention=retention,
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a listen address) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def _secret(from_file: str, env: Mapping[str, str], credential: str, variable: str, where: str) -> str:
    """A secret by precedence: the systemd credential ``credential``, then ``$variable``, then the file."""
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        cred = Path(cred_dir) / credential
        if cred.is_file():
            try:
                return cred.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{where}: cannot read credential {cred}: {exc}") from None
    if env.get(variable):
        return env[variable]
    return from_file


def pimcore_secret(env: Mapping[str, str]) -> str:
    """The PIM-Core secret from the environment alone (the credential, then the variable), by the daemon's
    precedence: for the reference receiver, which reads no config file."""
    return _secret("", env, SECRET_CREDENTIAL, SECRET_ENV, "pimcore.secret")


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    return parse(raw, p, env)
