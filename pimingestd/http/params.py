"""Reading requests: JSON bodies, typed fields, query integers, options, and paths under allowed roots.

Every check answers 400 (or 403/413) naming the field, before any work is done.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from ..config import ChunkPolicy, Config
from ..errors import ConfigError
from ..sources import all_option_names, format_options
from .middleware import ApiError

_DIGITS = re.compile(r"[0-9]{1,15}")  # a query integer: ASCII digits only (int() would take '١٢' or ' 5')


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "request body too large") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "body is not valid JSON", str(exc)) from None
    if not isinstance(data, dict):
        raise ApiError(400, "body must be a JSON object")
    return data


def field(data: dict[str, Any], key: str, kind: type) -> Any:
    """An optional body field of ``kind`` (int: a positive integer); None when absent."""
    value = data.get(key)
    if value is None:
        return None
    if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ApiError(400, f"`{key}` must be a positive integer")
    if kind is not int and not isinstance(value, kind):
        raise ApiError(400, f"`{key}` must be a {kind.__name__}")
    return value


def query_options(request: web.Request, skip: set[str]) -> dict[str, Any]:
    """Format options from the query string: text as it is, a value starting with ``{`` or ``[`` as JSON
    (CSV ``types``, for one), as ``pimingestd ingest -o`` passes them."""
    options: dict[str, Any] = {}
    for key, value in request.query.items():
        if key in skip:
            continue
        if value[:1] in ("{", "["):
            try:
                options[key] = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise ApiError(400, f"`{key}` is not valid JSON", str(exc)) from None
        else:
            options[key] = value
    return options


def query_rules(request: web.Request) -> dict[str, Any]:
    """Record rules from an upload's query string, checked (400 naming the rule): ``schema`` as JSON,
    ``required`` as a JSON array or a comma-separated list, flags as true/false, ``max_deletions`` a number."""
    from ..records import rules as record_rules

    given: dict[str, Any] = {}
    for name in record_rules.NAMES:
        value = request.query.get(name)
        if value is None:
            continue
        if name == "schema" or (name == "required" and value.startswith("[")):
            try:
                given[name] = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise ApiError(400, f"`{name}` is not valid JSON", str(exc)) from None
        elif name == "required":
            given[name] = [v.strip() for v in value.split(",") if v.strip()]
        elif name in ("unique_key", "delta"):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ApiError(400, f"`{name}` must be true or false")
            given[name] = value.lower() in ("true", "1", "yes")
        elif name == "max_deletions":
            try:
                given[name] = float(value)
            except ValueError:
                raise ApiError(400, "`max_deletions` must be a number (a percentage)") from None
        elif name == "window":
            if not (value.isascii() and value.isdigit()):
                raise ApiError(400, "`window` must be a whole number of chunks")
            given[name] = int(value)
        else:
            given[name] = value
    record_rules.parse(given)
    return given


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw):
        raise ApiError(400, f"`{name}` must be a whole number (ASCII digits)")
    value = int(raw)
    if not lo <= value <= hi:
        raise ApiError(400, f"`{name}` must be between {lo} and {hi}")
    return value


def check_options(fmt: str, options: dict[str, Any], records: int | None, size: int | None) -> None:
    """Refuse (400) what would only fail later: a format option that is unknown or bad (a json_path
    that cannot be parsed), chunk sizes out of range."""
    unknown = sorted(set(options) - all_option_names())
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(unknown)}")
    try:
        format_options(fmt, options)
    except ConfigError as exc:
        raise ApiError(400, "bad option", str(exc)) from None
    if records is not None and size is not None:
        raise ApiError(400, "give at most one of `chunk_records` and `chunk_bytes`")
    if records is not None or size is not None:
        try:
            ChunkPolicy(records=records, bytes=size)
        except ConfigError as exc:
            raise ApiError(400, "bad chunking", str(exc)) from None


def resolve_allowed(config: Config, raw: str) -> Path:
    """The real path of ``raw`` (relative to the config's folder) if it lies under an allowed root
    (blocking: realpath touches the filesystem)."""
    if "\x00" in raw:
        raise ApiError(400, "`path` contains a NUL byte")
    p = Path(raw)
    if not p.is_absolute():
        p = config.path.parent / p
    real = p.resolve()
    for root in config.http.allowed_roots:
        if real.is_relative_to(root.resolve()):
            return real
    raise ApiError(403, "path is outside the allowed roots", "see [http] allowed_roots")
