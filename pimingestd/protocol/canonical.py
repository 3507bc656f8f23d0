"""Canonical JSON bytes and SHA-256 checksums: the identity of every chunk.

The canonical form (docs/protocol.md, "Canonical JSON"): UTF-8, object keys
sorted by Unicode code point, no insignificant whitespace, only the escapes JSON
requires (``"``, ``\\``, control characters), integers in full, non-integers
written as the exact decimal parsed from the source (never through a binary
float), floats (only from Excel, which stores doubles) as the shortest text that
round-trips. The same records always give the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import orjson

_OPTS = orjson.OPT_SORT_KEYS
# orjson writes integers only within [-2**63, 2**64 - 1]; wider ones are passed as text.
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


class EncodeError(ValueError):
    """A value has no canonical JSON form (NaN, lone surrogate, unsupported type)."""


def json_default(value: Any) -> Any:
    """orjson's ``default``: a Decimal is written as its exact text; anything else is not JSON."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError(f"{value} is not a JSON number")
        return orjson.Fragment(str(value).encode("ascii"))
    raise TypeError(f"type {type(value).__name__} is not JSON")


def widen(value: Any) -> Any:
    """A copy with out-of-range integers turned into verbatim fragments (rare, slow path)."""
    if isinstance(value, dict):
        return {k: widen(v) for k, v in value.items()}
    if isinstance(value, list):
        return [widen(v) for v in value]
    if type(value) is int and not (_INT_MIN <= value <= _INT_MAX):
        return orjson.Fragment(str(value).encode("ascii"))
    if type(value) is float and not math.isfinite(value):
        raise EncodeError(f"{value} is not a JSON number")
    return value


def encode(value: Any) -> bytes:
    """Canonical JSON bytes of ``value``; raises EncodeError when there are none.

    Precondition: floats are finite. orjson would write NaN as null; the only
    reader that yields floats (Excel) refuses non-finite ones, and checking here
    would cost a walk over every record.
    """
    try:
        return orjson.dumps(value, default=json_default, option=_OPTS)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise EncodeError(str(exc)) from None
    try:
        return orjson.dumps(widen(value), default=json_default, option=_OPTS)
    except orjson.JSONEncodeError as exc:
        raise EncodeError(str(exc)) from None


def encode_compact(value: Any) -> bytes:
    """``encode``, in a bytes object of its own size. orjson's buffer for a small value is 4 KiB whatever its
    length, so a value held by the thousand (a batch of records, a page of chunk metadata) is copied out."""
    return bytes(memoryview(encode(value)))


def join_array(encoded: list[bytes]) -> bytes:
    """The canonical bytes of an array, given the canonical bytes of its items (one copy of the
    whole; ``encoded`` is consumed: its first and last items get the brackets)."""
    if not encoded:
        return b"[]"
    encoded[0] = b"[" + encoded[0]
    encoded[-1] = encoded[-1] + b"]"
    return b",".join(encoded)


def checksum(digest: bytes) -> str:
    """``sha256:<hex>``, the form used for chunk checksums, file ids and manifests."""
    return "sha256:" + digest.hex()


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def content_digest(digest: bytes) -> str:
    """RFC 9530 Content-Digest field value for a SHA-256 digest."""
    return "sha-256=:" + base64.b64encode(digest).decode("ascii") + ":"


def manifest(checksums: Iterable[str]) -> str:
    """SHA-256 over the chunk checksums joined by newlines, in chunk order."""
    m = Manifest()
    for c in checksums:
        m.add(c)
    return m.value()


class Manifest:
    """The manifest built one checksum at a time (memory flat in the number of chunks)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.count = 0

    def add(self, chunk_checksum: str) -> None:
        self._hash.update((b"\n" if self.count else b"") + chunk_checksum.encode("ascii"))
        self.count += 1

    def value(self) -> str:
        return checksum(self._hash.digest())
