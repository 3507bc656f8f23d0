"""Protocol v1 and its negotiated v2 extension (docs/protocol.md), both sides of it in one place.

- The names of the headers and the idempotency keys; ``ChunkHeaders`` built into
  headers by the sender and parsed back (strictly) by a receiver.
- ``parse_ack``: the callback body PIM-Core sends, checked field by field.
- ``PimcoreClient``: POSTs a chunk or the completion. It classifies answers and
  does not retry (core/retry.py owns attempts): 2xx -> taken (with the window the
  receiver announced, v2); 425 -> TooEarly; 429, or 503 with Retry-After -> Busy;
  other 5xx, 408, timeouts and connection errors -> DeliveryError (retryable); 409
  and other 4xx -> Rejected(retryable=False), carrying the body.

The reference receiver (receiver/app.py) uses the same names and parsers, so the
two sides cannot drift apart.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, unquote

import aiohttp
import orjson

from ..errors import Busy, DeliveryError, Rejected, TooEarly
from ..model import RecordReject
from . import canonical, signing

IDEMPOTENCY_KEY = "Idempotency-Key"
CONTENT_DIGEST = "Content-Digest"
INGESTION = "Pimingest-Ingestion"
FILE = "Pimingest-File"
CHUNK = "Pimingest-Chunk"
CHUNK_TOTAL = "Pimingest-Chunk-Total"
RECORDS = "Pimingest-Records"
OFFSET = "Pimingest-Offset"
CALLBACK = "Pimingest-Callback"
FILE_NAME = "Pimingest-File-Name"  # optional (added in 1.1 of this page): the source file's name, percent-encoded UTF-8
# v2 (negotiated): on every chunk of an ingestion whose window is more than one.
PROTOCOL = "Pimingest-Protocol"  # "2"; absent: v1
WINDOW = "Pimingest-Window"  # request: the daemon's window; answer: the receiver's limit (a v1 receiver has none)
ORDER = "Pimingest-Order"  # "strict" or "by_key"
KEY = "Pimingest-Key"  # by_key: the field that names a record (informative: a receiver may check the order)
ORDERS = ("strict", "by_key")
MAX_WINDOW = 256  # chunks in flight, at most, whatever either side says
MAX_RETRY_AFTER = 300.0  # seconds a Retry-After may pause sending, at most

MAX_REASON = 2000  # characters of a reject reason kept
_RETRYABLE_4XX = {408, 425, 429}
_MAX_ERROR_BODY = 2000
_CHECKSUM = re.compile(r"^sha256:[0-9a-f]{64}$")


class BadMessage(ValueError):
    """A protocol message (headers or callback body) that does not follow v1; the text says what."""


def chunk_key(ingestion_id: str, n: int) -> str:
    return f"{ingestion_id}:{n}"


def completion_key(ingestion_id: str) -> str:
    return f"{ingestion_id}:complete"


def _whole(headers: Mapping[str, str], name: str) -> int:
    """A header that holds a whole number: ASCII digits only (int() would take '١٢' or ' 5')."""
    text = headers.get(name)
    if text is None:
        raise BadMessage(f"missing protocol header {name}")
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise BadMessage(f"{name}: {text[:40]!r} is not a whole number")
    return int(text)


@dataclass(frozen=True, slots=True)
class ChunkHeaders:
    ingestion_id: str
    file_id: str
    n: int
    total: int | None
    records: int
    first_record: int
    file_name: str | None = None
    protocol: int = 1  # 2: the v2 headers are sent (the ingestion's window is more than one)
    window: int = 1
    order: str = "strict"
    key: str | None = None  # by_key: the records' key field

    def headers(self, digest: bytes, callback_url: str) -> dict[str, str]:
        out = {
            "Content-Type": "application/json",
            CONTENT_DIGEST: canonical.content_digest(digest),
            IDEMPOTENCY_KEY: chunk_key(self.ingestion_id, self.n),
            INGESTION: self.ingestion_id,
            FILE: self.file_id,
            CHUNK: str(self.n),
            RECORDS: str(self.records),
            OFFSET: str(self.first_record),
            CALLBACK: callback_url,
        }
        if self.total is not None:
            out[CHUNK_TOTAL] = str(self.total)
        if self.file_name is not None:
            out[FILE_NAME] = quote(self.file_name, safe="")
        if self.protocol == 2:
            out.update({PROTOCOL: "2", WINDOW: str(self.window), ORDER: self.order})
            if self.key is not None:
                out[KEY] = quote(self.key, safe="")
        return out

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> tuple[ChunkHeaders, str]:
        """The chunk's headers and its callback URL, as a receiver reads them; BadMessage otherwise."""
        for name in (INGESTION, FILE, CALLBACK):
            if not headers.get(name):
                raise BadMessage(f"missing protocol header {name}")
        meta = cls(
            ingestion_id=headers[INGESTION],
            file_id=headers[FILE],
            n=_whole(headers, CHUNK),
            total=_whole(headers, CHUNK_TOTAL) if CHUNK_TOTAL in headers else None,
            records=_whole(headers, RECORDS),
            first_record=_whole(headers, OFFSET),
            file_name=_file_name(headers.get(FILE_NAME)),
            **_v2(headers),
        )
        if headers.get(IDEMPOTENCY_KEY, "") != chunk_key(meta.ingestion_id, meta.n):
            raise BadMessage(f"{IDEMPOTENCY_KEY} must be <ingestion>:<chunk>")
        return meta, headers[CALLBACK]


def _v2(headers: Mapping[str, str]) -> dict[str, Any]:
    """The v2 fields of a chunk's headers: none for a v1 chunk (no Pimingest-Protocol)."""
    version = headers.get(PROTOCOL)
    if version is None or version == "1":
        return {}
    if version != "2":
        raise BadMessage(f"{PROTOCOL}: {version[:40]!r} is not a protocol this side speaks (1 or 2)")
    window = _whole(headers, WINDOW)
    if not 1 <= window <= MAX_WINDOW:
        raise BadMessage(f"{WINDOW} must be between 1 and {MAX_WINDOW}")
    order = headers.get(ORDER)
    if order not in ORDERS:
        raise BadMessage(f"{ORDER} must be one of {', '.join(ORDERS)}")
    key = headers.get(KEY)
    return {"protocol": 2, "window": window, "order": order, "key": unquote(key) if key else None}


def announced_window(headers: Mapping[str, str]) -> int | None:
    """The window a chunk answer announces (v2), or None: a v1 receiver, or a value this side cannot use."""
    text = headers.get(WINDOW)
    if text is None or not (text.isascii() and text.isdigit()) or len(text) > 6 or int(text) < 1:
        return None
    return min(int(text), MAX_WINDOW)


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), at most MAX_RETRY_AFTER;
    None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(when.timestamp() - (time.time() if now is None else now), 0.0), MAX_RETRY_AFTER)


def _file_name(raw: str | None) -> str | None:
    if raw is None:
        return None
    try:
        name = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise BadMessage(f"{FILE_NAME} is not percent-encoded UTF-8") from None
    if not name or "/" in name or "\x00" in name:
        raise BadMessage(f"{FILE_NAME} must be a file name (not empty, no / or NUL)")
    return name


@dataclass(frozen=True, slots=True)
class Ack:
    """An ACK callback: PIM-Core applied chunk ``n`` (``status`` "ack") or refused it ("reject")."""

    ingestion_id: str
    n: int
    checksum: str
    status: Literal["ack", "reject"]
    reason: str = ""
    retryable: bool = False
    rejected: tuple[RecordReject, ...] = ()  # v1.1: records of an ACKed chunk that PIM-Core refused

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ingestion_id": self.ingestion_id, "chunk": self.n, "checksum": self.checksum}
        out["status"] = self.status
        if self.status == "reject":
            out.update(reason=self.reason, retryable=self.retryable)
        if self.rejected:
            out["rejected"] = [
                {"index": r.index, "reason": r.reason, **({"field": r.field} if r.field is not None else {})}
                for r in self.rejected
            ]
        return out


def parse_ack(body: bytes) -> Ack:
    """The callback body, checked field by field; BadMessage naming the field otherwise."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadMessage(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadMessage("body must be a JSON object")
    ingestion_id, n, checksum = data.get("ingestion_id"), data.get("chunk"), data.get("checksum")
    status, reason, retryable = data.get("status"), data.get("reason", ""), data.get("retryable", False)
    if not isinstance(ingestion_id, str) or not ingestion_id:
        raise BadMessage("`ingestion_id` must be a non-empty string")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise BadMessage("`chunk` must be a positive integer")
    if not isinstance(checksum, str) or not _CHECKSUM.match(checksum):
        raise BadMessage("`checksum` must be sha256:<64 hex digits>")
    if status not in ("ack", "reject"):
        raise BadMessage("`status` must be 'ack' or 'reject'")
    if not isinstance(reason, str) or not isinstance(retryable, bool):
        raise BadMessage("`reason` must be a string and `retryable` a boolean")
    rejected = _rejected(data.get("rejected"), status)
    return Ack(ingestion_id, n, checksum, status, reason[:MAX_REASON], retryable, rejected)


def _rejected(raw: Any, status: str) -> tuple[RecordReject, ...]:
    """v1.1's ``rejected`` list, checked entry by entry (whether each index lies inside the chunk is the
    store's to say: it knows the chunk's record count)."""
    if raw is None:
        return ()
    if status != "ack":
        raise BadMessage("`rejected` belongs to an ACK (status 'ack'); a rejected chunk has no applied records")
    if not isinstance(raw, list):
        raise BadMessage("`rejected` must be an array")
    out: list[RecordReject] = []
    seen: set[int] = set()
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise BadMessage(f"`rejected[{i}]` must be an object")
        index, reason, field = entry.get("index"), entry.get("reason"), entry.get("field")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise BadMessage(f"`rejected[{i}].index` must be a whole number (0-based position in the chunk)")
        if index in seen:
            raise BadMessage(f"`rejected[{i}].index` {index} is listed twice")
        if not isinstance(reason, str) or not reason:
            raise BadMessage(f"`rejected[{i}].reason` must be a non-empty string")
        if field is not None and not isinstance(field, str):
            raise BadMessage(f"`rejected[{i}].field` must be a string when given")
        seen.add(index)
        out.append(RecordReject(index, reason[:MAX_REASON], field[:MAX_REASON] if field else field))
    return tuple(sorted(out, key=lambda r: r.index))


class PimcoreClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        chunk_url: str,
        complete_url: str,
        callback_url: str,
        secret: str,
        timeout: float,
    ) -> None:
        self._session = session
        self._chunk_url = chunk_url
        self._complete_url = complete_url
        self._callback_url = callback_url
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def send_chunk(self, meta: ChunkHeaders, body: bytes, digest: bytes) -> int | None:
        """POST a chunk; the window the receiver announced in its answer (None: it announced none, v1)."""
        headers = meta.headers(digest, self._callback_url)
        return await self._post(self._chunk_url, headers[IDEMPOTENCY_KEY], body, headers, f"chunk {meta.n}")

    async def send_complete(self, payload: dict[str, object]) -> None:
        key = completion_key(str(payload["ingestion_id"]))
        body = orjson.dumps(payload)
        headers = {"Content-Type": "application/json", IDEMPOTENCY_KEY: key}
        await self._post(self._complete_url, key, body, headers, "completion")

    async def _post(self, url: str, key: str, body: bytes, headers: dict[str, str], what: str) -> int | None:
        if self._secret:
            headers[signing.HEADER] = signing.sign(self._secret, body, key=key)
        try:
            async with self._session.post(url, data=body, headers=headers, timeout=self._timeout) as resp:
                if 200 <= resp.status < 300:
                    await resp.read()
                    return announced_window(resp.headers)
                text = (await resp.text(errors="replace"))[:_MAX_ERROR_BODY]
                wait = retry_after(resp.headers.get("Retry-After"))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise DeliveryError(f"{what}: PIM-Core unreachable: {type(exc).__name__}: {exc}") from None
        message = f"{what}: PIM-Core answered {resp.status}: {text}"
        if resp.status == 425:
            raise TooEarly(message)
        if resp.status == 429 or (resp.status == 503 and wait is not None):
            raise Busy(message, seconds=wait if wait is not None else 1.0, status=resp.status)
        if resp.status >= 500 or resp.status in _RETRYABLE_4XX:
            raise DeliveryError(message)
        raise Rejected(message, retryable=False)
