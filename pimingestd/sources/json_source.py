"""JSON: the items of one array, streamed with ijson's C backend.

Numbers stay exact: ijson yields ``int`` for integers (any size) and
``Decimal`` for the rest (``use_float=False``). A UTF-8 BOM is skipped. Errors
name the byte range in which the parser stopped and the record index.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import ijson

from ..errors import ParseError
from . import DEFAULT_MAX_RECORD, describe
from .json_guard import JsonGuard

_SLACK = 1 << 17  # the parser reads ahead in 64 KiB blocks: spans are measured at that grain

_BOM = b"\xef\xbb\xbf"

if ijson.backend != "yajl2_c":  # pragma: no cover - depends on the wheel installed
    warnings.warn(
        f"ijson is using its {ijson.backend!r} backend, not yajl2_c: JSON parsing will be several times slower",
        RuntimeWarning,
        stacklevel=1,
    )


class _Reader:
    """Wraps the binary file: skips a BOM, runs the guard, and tracks the bytes handed to the parser."""

    def __init__(self, raw: BinaryIO, guard: JsonGuard | None = None) -> None:
        self._raw = raw
        self._guard = guard
        self.start = 0
        self.end = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if self.end == 0 and data.startswith(_BOM):
            self.end = len(_BOM)
            data = data[len(_BOM) :]
        self.start = self.end
        self.end += len(data)
        if self._guard is not None:
            if data:
                self._guard.feed(data)
            else:
                self._guard.finish()
        return data


def _parent_of(prefix: str) -> str | None:
    if prefix == "item":
        return ""
    if prefix.endswith(".item"):
        return prefix[: -len(".item")]
    return None


def read_json(
    path: Path, json_path: str | None, max_record_bytes: int = DEFAULT_MAX_RECORD
) -> Iterator[dict[str, Any]]:
    prefix = json_path or "item"
    index = -1
    with open(path, "rb") as raw:
        reader = _Reader(raw, JsonGuard(path.name, max_record_bytes))
        last_end = 0
        try:
            for index, record in enumerate(ijson.items(reader, prefix, use_float=False)):
                if type(record) is not dict:
                    raise ParseError(
                        f"{path.name}: record {index} (json_path {prefix!r}) is {describe(record)}, expected an object"
                    )
                if reader.end - last_end > max_record_bytes + _SLACK:
                    raise ParseError(
                        f"{path.name}: record {index} spans more than {max_record_bytes} bytes (before byte {reader.end});"
                        " raise [chunking] max_record_bytes if such records are expected"
                    )
                last_end = reader.end
                yield record
        except UnicodeDecodeError as exc:
            raise ParseError(
                f"{path.name}: invalid UTF-8 between byte {reader.start} and {reader.end} (after record {index}): {exc.reason}"
            ) from None
        except ijson.JSONError as exc:
            arg = exc.args[0] if exc.args else type(exc).__name__
            text = arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)
            detail = text.splitlines()[0] if text else type(exc).__name__
            raise ParseError(
                f"{path.name}: invalid JSON between byte {reader.start} and {reader.end}"
                f" (after record {index}): {detail}"
            ) from None
    if index < 0:
        _check_empty_match(path, prefix)


def _check_empty_match(path: Path, prefix: str) -> None:
    """Zero records: fine for an empty array at the path, an error when nothing matched."""
    parent = _parent_of(prefix)
    if parent is not None:
        with open(path, "rb") as raw:
            for p, event, _ in ijson.parse(_Reader(raw), use_float=False):
                if p == parent and event == "start_array":
                    return
    if prefix == "item":
        raise ParseError(f"{path.name}: the top-level value is not an array; set json_path to the array of records")
    raise ParseError(
        f"{path.name}: json_path {prefix!r} matched nothing (records are the items of an array, e.g. 'products.item')"
    )
