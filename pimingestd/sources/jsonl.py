"""JSON Lines: one object per line, blank lines skipped; errors name the line.

Numbers stay exact. A line without a ``.`` is parsed by orjson, and kept when
the result holds no float (orjson would have rounded an exponent number or an
integer beyond 64 bits into one). Every other line goes to the standard
library parser with ``parse_float=Decimal``. Both checks are C-speed
(``in`` on bytes, a walk only over orjson's small result); a regular
expression here cost more than the parse.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from ..errors import ParseError
from . import DEFAULT_MAX_RECORD, describe

_BOM = b"\xef\xbb\xbf"


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for all lines: json.loads with arguments builds a new one per call (several microseconds).
_EXACT = json.JSONDecoder(parse_float=Decimal, parse_constant=_no_constants)


def _parse_exact(line: bytes) -> Any:
    return _EXACT.decode(line.decode("utf-8"))


def _has_float(value: Any) -> bool:
    t = type(value)
    if t is float:
        return True
    if t is dict:
        return any(_has_float(v) for v in value.values())
    if t is list:
        return any(_has_float(v) for v in value)
    return False


def parse_line(line: bytes) -> Any:
    """One JSON value with exact numbers; raises ValueError on bad JSON."""
    if b"." not in line:
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            pass  # the exact parser decides, and words the error
        else:
            if not _has_float(value):
                return value
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
