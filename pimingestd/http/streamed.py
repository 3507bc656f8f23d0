"""JSON answers with a long list in them, written a batch of items at a time.

A page of 1,000 ingestions built whole is 1,000 dicts of 27 keys (some 0.8 MB, each too large for
pymalloc, so in glibc's main heap) and then their JSON (0.65 MB more). The long soak polls such a page
several times a second, as a status script might, and those short-lived megabytes between the daemon's
long-lived allocations left the main heap some 3 MiB larger, in free holes of 0.5-1 MB, after the first
minutes, and stepping up later (issue 29, docs/performance.md). Written BATCH items at a time, a request
holds about a tenth of that whatever its page size. The bytes sent are those of ``orjson.dumps`` of the
whole answer: the same keys in the same order, the list at its place among them.

The handler does everything that can fail (the queries, the counts) and returns the answer unwritten;
aiohttp writes it after the handler, as it writes any answer, so an error before it is still an ordinary
error answer, and a client that goes away while it is written is no error of the daemon's (aiohttp's
``finish_response`` takes the ConnectionError quietly, as for a file download). A client that stops reading
holds its page's rows (at most 1,000 ingestions or 10,000 deletions, some 2 MB) until it reads on or goes
away: aiohttp waits for the socket to drain each time 64 KiB are buffered, so what is rendered ahead stays
small. An HTTP/1.0 client's answer ends with its connection (no chunks in 1.0)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import orjson
import structlog
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion11

BATCH = 100  # items rendered and written at a time

log = structlog.get_logger("pimingestd.http")

T = TypeVar("T")


class _ListAnswer(web.StreamResponse):
    """A StreamResponse whose body is written by write_eof, a part at a time, from ``parts``."""

    def __init__(self, parts: Iterator[bytes]) -> None:
        super().__init__()
        self.content_type = "application/json"
        self._parts: Iterator[bytes] | None = parts
        self._path = ""

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        self._path = request.path
        if request.version < HttpVersion11:
            # No chunks in HTTP/1.0: the answer ends when the connection does. aiohttp then keeps a 1.0
            # client's keep-alive all the same (web_response.py clears only a local flag), and one that asked
            # for it would wait out keepalive_timeout for an end that never comes.
            self.force_close()
        return await super().prepare(request)

    async def write_eof(self, data: bytes = b"") -> None:
        parts, self._parts = self._parts, None
        if parts is not None and not self._must_be_empty_body:  # a HEAD request's answer has no body
            try:
                for part in parts:
                    await self.write(part)
            except ConnectionError:
                raise  # the client went away: aiohttp's finish_response takes it quietly
            except Exception:
                # A defect in rendering, after the status line went out: logged here (aiohttp's own log would
                # be unstructured and unredacted), and the answer is cut off without its last chunk, so the
                # client sees a broken answer, never a short list that reads as whole.
                log.exception("list answer cut off", path=self._path)
                raise ConnectionResetError("the answer could not be written whole") from None
        await super().write_eof(data)


def _object_part(fields: Mapping[str, Any]) -> bytes:
    """``fields`` as the inside of a JSON object: ``"a":1,"b":2`` (b"" when empty)."""
    return orjson.dumps(dict(fields))[1:-1]


def _parts(
    before: Mapping[str, Any],
    key: str,
    items: Sequence[T],
    render: Callable[[Sequence[T]], list[Any]],
    after: Mapping[str, Any],
) -> Iterator[bytes]:
    head = _object_part(before)
    yield b"{" + head + (b"," if head else b"") + orjson.dumps(key) + b":["
    wrote = False
    for at in range(0, len(items), BATCH):
        part = orjson.dumps(render(items[at : at + BATCH]))[1:-1]
        if part:
            yield (b"," if wrote else b"") + part
            wrote = True
    tail = _object_part(after)
    yield b"]" + (b"," + tail if tail else b"") + b"}"


def json_with_list(
    before: Mapping[str, Any],
    key: str,
    items: Sequence[T],
    render: Callable[[Sequence[T]], list[Any]],
    after: Mapping[str, Any] | None = None,
) -> web.StreamResponse:
    """The answer ``{**before, key: render(items), **after}`` as JSON, to be written BATCH items at a time:
    ``render`` turns a slice of ``items`` into their JSON values, once the answer has begun, so it must not
    fail, nor read anything more."""
    if key in before or (after and key in after):
        raise ValueError(f"{key!r} is given twice")
    return _ListAnswer(_parts(before, key, items, render, after or {}))
