"""JSON answers with a long list in them, written a batch of items at a time.

A page of 1,000 ingestions built whole is 1,000 dicts of 27 keys (some 0.8 MB, each too large for
pymalloc, so in glibc's main heap) and then their JSON (0.65 MB more). The long soak polls such a page
several times a second, as a status script might, and those short-lived megabytes between the daemon's
long-lived allocations left the main heap some 2 MiB larger, with free holes of 0.5-1 MB in it, after the
first minutes, and stepping up later (issue 29, docs/performance.md). Written BATCH items at a time, a
request holds about a tenth of that whatever its page size. The bytes sent are the same as
``orjson.dumps`` of the whole answer: the same keys in the same order, the list at its place among them.

Everything that can fail (the queries, the counts) is done before the first byte goes out, so an error is
still an ordinary error answer; what is left is rendering rows already read."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import orjson
from aiohttp import web

BATCH = 100  # items rendered and written at a time

T = TypeVar("T")


def _object_part(fields: Mapping[str, Any]) -> bytes:
    """``fields`` as the inside of a JSON object: ``"a":1,"b":2`` (b"" when empty)."""
    return orjson.dumps(dict(fields))[1:-1]


async def json_with_list(
    request: web.Request,
    before: Mapping[str, Any],
    key: str,
    items: Sequence[T],
    render: Callable[[Sequence[T]], list[Any]],
    after: Mapping[str, Any] | None = None,
    status: int = 200,
) -> web.StreamResponse:
    """Answer ``{**before, key: render(items), **after}`` as JSON, rendering and writing BATCH items at a
    time. ``render`` turns a slice of ``items`` into their JSON values; it must not fail (nor await): the
    answer has begun when it is called."""
    if key in before or (after and key in after):
        raise ValueError(f"{key!r} is given twice")
    resp = web.StreamResponse(status=status)
    resp.content_type = "application/json"
    await resp.prepare(request)
    head = _object_part(before)
    await resp.write(b"{" + head + (b"," if head else b"") + orjson.dumps(key) + b":[")
    wrote = False
    for at in range(0, len(items), BATCH):
        part = orjson.dumps(render(items[at : at + BATCH]))[1:-1]
        if part:
            await resp.write((b"," if wrote else b"") + part)
            wrote = True
    tail = _object_part(after or {})
    await resp.write(b"]" + (b"," + tail if tail else b"") + b"}")
    await resp.write_eof()
    return resp
