"""Protocol v1 (docs/protocol.md), both sides of it in one place.

- The names of the headers and the idempotency keys; ``ChunkHeaders`` built into
  headers by the sender and parsed back (strictly) by a receiver.
- ``parse_ack``: the callback body PIM-Core sends, checked field by field.
- ``PimcoreClient``: POSTs a chunk or the completion. It classifies answers and
  does not retry (core/retry.py owns attempts): 2xx -> taken; 5xx, 408, 425, 429,
  timeouts and connection errors -> DeliveryError (retryable); 409 and other 4xx
  -> Rejected(retryable=False), carrying the body.

The reference receiver (receiver/app.py) uses the same names and parsers, so the
two sides cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, unquote

import aiohttp
import orjson

from ..core import canonical
from ..errors import DeliveryError, Rejected
from ..model import RecordReject
from . import signing

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
        )
        if headers.get(IDEMPOTENCY_KEY, "") != chunk_key(meta.ingestion_id, meta.n):
            raise BadMessage(f"{IDEMPOTENCY_KEY} must be <ingestion>:<chunk>")
        return meta, headers[CALLBACK]


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

    async def send_chunk(self, meta: ChunkHeaders, body: bytes, digest: bytes) -> None:
        headers = meta.headers(digest, self._callback_url)
        await self._post(self._chunk_url, headers[IDEMPOTENCY_KEY], body, headers, f"chunk {meta.n}")

    async def send_complete(self, payload: dict[str, object]) -> None:
        key = completion_key(str(payload["ingestion_id"]))
        body = orjson.dumps(payload)
        headers = {"Content-Type": "application/json", IDEMPOTENCY_KEY: key}
        await self._post(self._complete_url, key, body, headers, "completion")

    async def _post(self, url: str, key: str, body: bytes, headers: dict[str, str], what: str) -> None:
        if self._secret:
            headers[signing.HEADER] = signing.sign(self._secret, body, key=key)
        try:
            async with self._session.post(url, data=body, headers=headers, timeout=self._timeout) as resp:
                if 200 <= resp.status < 300:
                    await resp.read()
                    return
                text = (await resp.text(errors="replace"))[:_MAX_ERROR_BODY]
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise DeliveryError(f"{what}: PIM-Core unreachable: {type(exc).__name__}: {exc}") from None
        message = f"{what}: PIM-Core answered {resp.status}: {text}"
        if resp.status >= 500 or resp.status in _RETRYABLE_4XX:
            raise DeliveryError(message)
        raise Rejected(message, retryable=False)
