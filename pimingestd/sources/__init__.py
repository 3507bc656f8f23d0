"""Streaming record readers: a registry of formats, one module per format, behind one entry point.

A format is one line in ``FORMATS`` (its name, file suffixes and module) and one
module that defines ``Options`` (a frozen dataclass of the format's options, which
checks them in ``__post_init__``, raising ValueError) and ``read(fh, name, options,
max_record_bytes)``. Nothing else in the daemon knows a format's options: they
travel as one mapping (an ingestion's ``options``), and ``format_options`` checks
them against the format's own type wherever they enter (config, API, upload).

``read_records(path, spec)`` yields the file's records (JSON objects as dicts,
or canonical bytes as orjson.Fragment where a fast path vouches for them) in
file order, in constant memory. Every reader raises ParseError naming where
(byte range, line, or sheet/row/column) and which record. Readers are blocking:
run them in a worker thread, never on the event loop. Reader modules are
imported when first used, so the CLI starts without them.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from types import ModuleType
from typing import Any, BinaryIO

import orjson

from .. import config
from ..errors import ConfigError, UnsupportedFormat
from ..locations.local import open_source
from ..names import readable
from . import compression
from .exact import Exact


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    suffixes: tuple[str, ...]
    module: str  # sources/<module>.py: Options and read()
    exact_values: bool = False  # read() takes exact_values=True: its fast path then yields exact.Exact

    def load(self) -> ModuleType:
        return importlib.import_module(f"{__name__}.{self.module}")


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("json", (".json",), "json_source", exact_values=True),
        Format("jsonl", (".jsonl", ".ndjson"), "jsonl", exact_values=True),
        Format("excel", (".xlsx", ".xlsm"), "excel"),
        Format("csv", (".csv", ".tsv"), "csv_source"),
        Format("xml", (".xml",), "xml_source"),
    )
}
_BY_SUFFIX = {suffix: f.name for f in FORMATS.values() for suffix in f.suffixes}

DEFAULT_MAX_RECORD = 16 << 20

# A record as a reader yields it: a JSON object, or (from the fast paths) its canonical
# bytes already, as an orjson.Fragment that canonical.encode writes verbatim; or, for a reader asked
# for exact_values (the record pipeline), as exact.Exact: the bytes and the object parsed on the way.
Record = dict[str, Any] | orjson.Fragment | Exact


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """How to read one file: the format and its options."""

    format: str
    options: Mapping[str, Any] = field(default_factory=dict)
    max_record_bytes: int = DEFAULT_MAX_RECORD
    exact_values: bool = False  # a fast path's records also as parsed objects (exact.Exact), where it has one


def detect_format(path: PurePath, given: str | None = None) -> str:
    """The format named by ``given``, else by the file's extension."""
    if given is not None:
        if given not in FORMATS:
            raise UnsupportedFormat(f"unknown format {given!r}; expected one of {', '.join(FORMATS)}")
        return given
    suffix = compression.format_suffix(path)
    fmt = _BY_SUFFIX.get(suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(_BY_SUFFIX))
        squeezed = ", optionally followed by " + ", ".join(sorted(compression.CODECS))
        raise UnsupportedFormat(
            f"{path.name}: cannot tell the format from {suffix or 'no extension'!r} (known: {known}{squeezed});"
            " pass `format`"
        )
    return fmt


def option_names(fmt: str) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(FORMATS[fmt].load().Options))


def all_option_names() -> set[str]:
    """Every option of every format (loads each reader module)."""
    return {name for fmt in FORMATS for name in option_names(fmt)}


def format_options(fmt: str, given: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """``given`` checked against format ``fmt``'s options; ConfigError naming the key (prefixed with
    ``where``, such as ``inbox.profiles[0].``) for an unknown or bad one."""
    module = FORMATS[fmt].load()
    known = option_names(fmt)
    unknown = sorted(set(given) - set(known))
    if unknown:
        its = f"its options: {', '.join(known)}" if known else "it has none"
        raise ConfigError(f"{', '.join(where + k for k in unknown)}: not an option of format {fmt} ({its})")
    try:
        module.Options(**given)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}{exc}") from None
    return dict(given)


def read_records(path: Path, spec: SourceSpec, size: int | None = None) -> Iterator[Record]:
    """Yield the records of ``path``; the file is closed when the iterator is. Only a regular
    file is opened, and with ``size`` reading stops there (bytes appended later are not read)."""
    _check_codec(path.name, spec)
    with open_source(path, size) as fh:
        yield from read_stream(fh, readable(path.name), spec)


def read_stream(fh: BinaryIO, name: str, spec: SourceSpec) -> Iterator[Record]:
    """Yield the records of an open stream (a remote object, say) whose file name is ``name``: its
    suffix says whether it is compressed. Excel needs a seekable file."""
    fmt = FORMATS[spec.format]
    module = fmt.load()
    options = module.Options(**spec.options)
    codec = _check_codec(name, spec)
    extra = {"exact_values": True} if spec.exact_values and fmt.exact_values else {}
    if codec is None:
        yield from _without_reject_fields(module.read(fh, name, options, spec.max_record_bytes, **extra))
    else:
        with compression.decompressed(fh, codec, name) as stream:
            yield from _without_reject_fields(module.read(stream, name, options, spec.max_record_bytes, **extra))


# A reject file's fields (records/reject_file.py): dropped from every record read, so a fixed reject file
# dropped into the inbox sends what the original would have.
RESERVED = ("_reject", "_reject_reason", "_reject_field")


def _without_reject_fields(records: Iterator[Record]) -> Iterator[Record]:
    """Records without the reject fields. A fast path's canonical bytes (orjson.Fragment) never hold them:
    exact.mark declines any window that mentions them, and the exact reader's dicts come here."""
    for record in records:
        if type(record) is dict and ("_reject" in record or "_reject_reason" in record or "_reject_field" in record):
            yield {k: v for k, v in record.items() if k not in RESERVED}
        else:
            yield record


def _check_codec(name: str, spec: SourceSpec) -> str | None:
    codec = compression.codec_of(PurePosixPath(name))
    if codec is not None and spec.format == "excel":
        raise UnsupportedFormat(f"{name}: an Excel workbook is a zip already; it is not read from a {codec} file")
    return codec


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


config.register(config.FormatChecks(formats=tuple(FORMATS), option_names=option_names, check=format_options))
