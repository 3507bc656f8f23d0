"""Streaming record readers, one module per format, behind one entry point.

``read_records(path, spec)`` yields the file's records (JSON objects as dicts,
or canonical bytes as orjson.Fragment where a fast path vouches for them) in
file order, in constant memory. Every reader raises ParseError naming where
(byte range, line, or sheet/row/column) and which record. Readers are blocking:
run them in a worker thread, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..errors import UnsupportedFormat
from ..locations.local import open_source
from ..names import readable

FORMATS = ("json", "jsonl", "excel")
_BY_SUFFIX = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".xlsx": "excel",
    ".xlsm": "excel",
}


DEFAULT_MAX_RECORD = 16 << 20

# A record as a reader yields it: a JSON object, or (from the fast paths) its canonical
# bytes already, as an orjson.Fragment that canonical.encode writes verbatim.
Record = dict[str, Any] | orjson.Fragment


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """How to read one file: the format and its selectors."""

    format: str
    json_path: str | None = None
    sheet: str | None = None
    max_record_bytes: int = DEFAULT_MAX_RECORD
    unknown_cells: str = "fail"  # Excel: "fail", or "null" for formula cells without a value and error cells


def detect_format(path: Path, given: str | None = None) -> str:
    """The format named by ``given``, else by the file's extension."""
    if given is not None:
        if given not in FORMATS:
            raise UnsupportedFormat(f"unknown format {given!r}; expected one of {', '.join(FORMATS)}")
        return given
    fmt = _BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(_BY_SUFFIX))
        raise UnsupportedFormat(
            f"{path.name}: cannot tell the format from {path.suffix or 'no extension'!r} (known: {known}); pass `format`"
        )
    return fmt


def read_records(path: Path, spec: SourceSpec, size: int | None = None) -> Iterator[Record]:
    """Yield the records of ``path``; the file is closed when the iterator is. Only a regular
    file is opened, and with ``size`` reading stops there (bytes appended later are not read)."""
    name = readable(path.name)
    with open_source(path, size) as fh:
        if spec.format == "json":
            from .json_source import read_json

            yield from read_json(fh, name, spec.json_path, spec.max_record_bytes)
        elif spec.format == "jsonl":
            from .jsonl import read_jsonl

            yield from read_jsonl(fh, name, spec.max_record_bytes)
        elif spec.format == "excel":
            from .excel import read_excel

            yield from read_excel(fh, name, spec.sheet, spec.unknown_cells)
        else:
            raise UnsupportedFormat(f"unknown format {spec.format!r}")


def describe(value: Any) -> str:
    """A short name of a JSON value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a number"
