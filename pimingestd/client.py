"""A small client of the daemon's HTTP API, for the CLI (and for scripts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import aiohttp

from .errors import DaemonUnreachable


class ApiClient:
    def __init__(self, url: str, token: str = "", timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        assert self._session is not None, "use ApiClient as an async context manager"
        try:
            async with self._session.request(method, self.url + path, **kw) as resp:
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = {"error": (await resp.text())[:500], "detail": None}
                return resp.status, body
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise DaemonUnreachable(f"cannot reach the daemon at {self.url}: {exc}") from None

    async def ingest(self, body: dict[str, Any]) -> tuple[int, Any]:
        return await self._call("POST", "/api/ingest", json=body)

    async def upload(self, path: Path, name: str, params: dict[str, str]) -> tuple[int, Any]:
        # Opening is one quick syscall; aiohttp then reads the file in blocks off the event loop.
        with open(path, "rb") as f:  # noqa: ASYNC230
            return await self._call(
                "PUT",
                "/api/files/" + quote(name),
                data=f,
                params=params,
                headers={"Content-Type": "application/octet-stream"},
            )

    async def rejects(self, ingestion_id: str, out: BinaryIO) -> tuple[int, Any]:
        """Stream the reject file into ``out`` (200), or the error's body."""
        assert self._session is not None, "use ApiClient as an async context manager"
        try:
            async with self._session.get(f"{self.url}/api/ingestions/{quote(ingestion_id)}/rejects") as resp:
                if resp.status != 200:
                    return resp.status, await resp.json(content_type=None)
                async for block in resp.content.iter_chunked(1 << 16):
                    out.write(block)
                return 200, None
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise DaemonUnreachable(f"cannot reach the daemon at {self.url}: {exc}") from None

    async def ingestion(self, ingestion_id: str) -> tuple[int, Any]:
        return await self._call("GET", f"/api/ingestions/{quote(ingestion_id)}")

    async def ingestions(self, limit: int = 20, status: str | None = None) -> tuple[int, Any]:
        params: dict[str, str] = {"limit": str(limit)}
        if status:
            params["status"] = status
        return await self._call("GET", "/api/ingestions", params=params)

    async def chunks(self, ingestion_id: str, start: int = 1, limit: int = 100) -> tuple[int, Any]:
        return await self._call(
            "GET", f"/api/ingestions/{quote(ingestion_id)}/chunks", params={"from": str(start), "limit": str(limit)}
        )

    async def resume(self, ingestion_id: str) -> tuple[int, Any]:
        return await self._call("POST", f"/api/ingestions/{quote(ingestion_id)}/resume")

    async def cancel(self, ingestion_id: str) -> tuple[int, Any]:
        return await self._call("POST", f"/api/ingestions/{quote(ingestion_id)}/cancel")
