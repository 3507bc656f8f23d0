"""JSON Lines: one object per line, blank lines skipped; errors name the line.

Fast path: orjson parses a line whose text cannot hold a non-integer number
(no digit followed by ``.``, ``e`` or ``E``) nor an integer beyond 64 bits
(no run of 20 digits; orjson would turn such an integer into a float). Other
lines go to the standard library parser with ``parse_float=Decimal``, so
every number stays exact. A false alarm (such digits inside a string) only
costs speed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from ..errors import ParseError
from . import DEFAULT_MAX_RECORD, describe

_NEEDS_EXACT = re.compile(rb"[0-9][.eE]|[0-9]{20}")
_BOM = b"\xef\xbb\xbf"


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_exact(line: bytes) -> Any:
    return json.loads(line, parse_float=Decimal, parse_constant=_no_constants)


def parse_line(line: bytes) -> Any:
    """One JSON value with exact numbers; raises ValueError on bad JSON."""
    if _NEEDS_EXACT.search(line) is None:
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:
            pass  # the exact parser decides, and words the error
    return _parse_exact(line)


def read_jsonl(path: Path, max_record_bytes: int = DEFAULT_MAX_RECORD) -> Iterator[dict[str, Any]]:
    index = 0
    with open(path, "rb") as f:
        # readline with a limit: an endless line is cut off at the limit, never read whole.
        for lineno, raw in enumerate(iter(lambda: f.readline(max_record_bytes + 2), b""), 1):
            line = raw[len(_BOM) :] if lineno == 1 and raw.startswith(_BOM) else raw
            if len(line.rstrip(b"\r\n")) > max_record_bytes:
                raise ParseError(
                    f"{path.name}: line {lineno} (record {index}) is longer than {max_record_bytes} bytes"
                    " ([chunking] max_record_bytes)"
                )
            if not line.strip():
                continue
            try:
                record = parse_line(line)
            except (ValueError, RecursionError) as exc:
                raise ParseError(f"{path.name}: line {lineno} (record {index}): invalid JSON: {exc}") from None
            if type(record) is not dict:
                raise ParseError(
                    f"{path.name}: line {lineno} (record {index}) is {describe(record)}, expected an object"
                )
            yield record
            index += 1
