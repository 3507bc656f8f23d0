"""Uploads: a safe relative name, and the body streamed to disk in constant memory.

The body goes to a temporary file inside processing/ (same filesystem, never
watched), is fsynced, then renamed into a fresh token folder: from there it
follows the inbox lifecycle. A body over the size cap, or one the client
abandons, leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

import aiofiles
import aiohttp
import structlog
from aiohttp import web

from ..diskspace import disk_full, is_full
from ..errors import UploadAborted, UploadTooLarge

if TYPE_CHECKING:
    from .lifecycle import Inbox

log = structlog.get_logger("pimingestd.intake")


def check_relative_name(name: str) -> str:
    """A safe relative POSIX path for an uploaded file; ValueError saying why not."""
    if not name or "\x00" in name:
        raise ValueError("the name is empty or contains a NUL byte")
    if name.startswith("/") or "\\" in name:
        raise ValueError("the name must be a relative path with / separators")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError("the name must not contain empty, '.' or '..' segments")
    if any(p.startswith(".") for p in parts):
        raise ValueError("hidden names (starting with '.') are not accepted")
    return name


async def receive(inbox: Inbox, rel: str, content: aiohttp.StreamReader, limit: int) -> Path:
    """Stream ``content`` into a new token folder as ``rel``; returns the folder."""
    temp = inbox.upload_temp()
    size = 0
    try:
        async with aiofiles.open(temp, "wb") as out:
            async for block in content.iter_chunked(1 << 20):
                size += len(block)
                if size > limit:
                    raise UploadTooLarge(f"over [http] max_upload_bytes = {limit}")
                await out.write(block)
            await out.flush()
            await asyncio.to_thread(os.fsync, out.fileno())
        folder = await inbox.place_upload(temp, rel)
    except (ConnectionError, web.HTTPBadRequest, aiohttp.ClientPayloadError) as exc:
        log.warning("upload aborted by the client; nothing kept", file=rel, received=size, error=str(exc))
        raise UploadAborted(str(exc)) from None
    except OSError as exc:
        if not is_full(exc):
            raise
        error = disk_full("the upload", temp, "inbox")
        inbox.conditions.full("inbox", str(error))
        log.error("upload refused: the disk is full; nothing kept", file=rel, received=size, error=str(error))
        raise error from None
    finally:
        await asyncio.to_thread(temp.unlink, missing_ok=True)
    inbox.conditions.cleared("inbox")
    log.info("upload received", file=rel, bytes=size)
    return folder
