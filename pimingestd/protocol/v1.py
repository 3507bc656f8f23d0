"""The PIM-Core client: POST a chunk or the completion, with protocol v1 headers.

It classifies answers; it does not retry (the engine owns attempts):
2xx -> taken; 5xx, 408, 429, timeouts and connection errors -> DeliveryError
(retryable); 409 and other 4xx -> Rejected(retryable=False), carrying the body.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
import orjson

from ..core import canonical
from ..errors import DeliveryError, Rejected
from . import signing

_RETRYABLE_4XX = {408, 425, 429}
_MAX_ERROR_BODY = 2000


@dataclass(frozen=True, slots=True)
class ChunkHeaders:
    ingestion_id: str
    file_id: str
    n: int
    total: int | None
    records: int
    first_record: int


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
        key = f"{meta.ingestion_id}:{meta.n}"
        headers = {
            "Content-Type": "application/json",
            "Content-Digest": canonical.content_digest(digest),
            "Idempotency-Key": key,
            "Pimingest-Ingestion": meta.ingestion_id,
            "Pimingest-File": meta.file_id,
            "Pimingest-Chunk": str(meta.n),
            "Pimingest-Records": str(meta.records),
            "Pimingest-Offset": str(meta.first_record),
            "Pimingest-Callback": self._callback_url,
        }
        if meta.total is not None:
            headers["Pimingest-Chunk-Total"] = str(meta.total)
        await self._post(self._chunk_url, key, body, headers, f"chunk {meta.n}")

    async def send_complete(self, payload: dict[str, object]) -> None:
        key = f"{payload['ingestion_id']}:complete"
        body = orjson.dumps(payload)
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
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
