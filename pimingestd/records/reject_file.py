"""The reject file: the refused records exactly as read, in the source's own format, each with its reason.

The source is read a second time (blocking: run it in a thread), only up to the last refused record, and
each refused record is written as that format's reader gave it (CSV without ``types``: the cells' own
text), so a fixed file dropped into the inbox is read as the original was:

- JSON: the same nesting (``json_path``) around an array of the records, each with a ``_reject`` object;
- JSON Lines: one record per line, each with a ``_reject`` object;
- CSV: the original header and delimiter, plus ``_reject_reason`` and ``_reject_field`` columns;
- Excel: one worksheet (named as the profile's ``sheet``, if any) with the original header and the two columns;
- XML: the same elements from the root to the records (``record_path``), each record with a ``_reject`` child.

Every reader drops these fields (sources/__init__.py), so they never reach PIM-Core.

A writer never changes a cell's type: an Excel text cell stays text whatever it starts with (openpyxl would
take ``=…`` for a formula and ``#N/A`` for an error), and characters a worksheet cannot hold are written as
SpreadsheetML's ``_xHHHH_`` escapes, which the reader decodes. The daemon's own columns (the reason and the
field, whose text comes from PIM-Core) are made inert in CSV (a leading ``= + - @``, tab or CR gets a ``'``)
and written in whatever the file's encoding can hold (``\\u2192`` for a character it cannot), and in XML
without the characters XML 1.0 cannot hold: a reject file is a report, and writing it must not fail on a reason.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from xml.sax.saxutils import escape, quoteattr

import orjson

from ..protocol import canonical
from ..protocol.canonical import json_default
from ..sources import FORMATS, Record, compression
from ..sources.exact import Exact
from ..sources.json_path import ITEMS
from ..sources.json_path import parse as parse_json_path

REASON, FIELD = "_reject_reason", "_reject_field"
_SUFFIX = {"json": ".json", "jsonl": ".jsonl", "csv": ".csv", "excel": ".xlsx", "xml": ".xml"}
MEDIA_TYPES = {
    ".json": "application/json",
    ".jsonl": "application/jsonl",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".xml": "application/xml",
}


def suffix(fmt: str, file_name: str) -> str:
    """The reject file's suffix: the format's (a .tsv stays .tsv; a compressed source's is not compressed)."""
    if fmt == "csv" and compression.format_suffix(PurePosixPath(file_name)).lower() == ".tsv":
        return ".tsv"
    return _SUFFIX[fmt]


def download_name(file_name: str, fmt: str) -> str:
    """``products.csv.gz`` -> ``products.rejects.csv``, ``my.products.v2.jsonl`` -> ``my.rejects.products.v2.jsonl``:
    the infix after the name's first part (where records/rules.py takes it out again for the delta scope), the
    rest of the name kept but for its compression and format suffixes (a profile's glob such as ``*.v2.jsonl``
    still matches); a reject file's own name is kept as it is (``-2``... taken out)."""
    base = file_name.rsplit("/", 1)[-1]
    stem, dot, rest = base.partition(".")
    rest = dot + rest
    if rest and compression.codec_of(PurePosixPath(base)) is not None:
        rest = rest[: rest.rindex(".")]
    cut = rest.rfind(".")
    if cut >= 0 and rest[cut:].lower() in _FORMAT_SUFFIXES:
        rest = rest[:cut]
    infix = _INFIX.match(rest)
    if infix is not None:
        rest = rest[infix.end() :]
    return stem + ".rejects" + rest + suffix(fmt, base)


_FORMAT_SUFFIXES = frozenset(s for f in FORMATS.values() for s in f.suffixes)
_INFIX = re.compile(r"\.rejects(?:-[0-9]+)?(?=\.|$)")


def placed_name(file_name: str, fmt: str, taken: Collection[str]) -> str:
    """The name of the reject file placed beside its source: ``download_name``, unless that is the source's own
    name (a reject file dropped in again) or another name in ``taken`` (the folder's entries): then
    ``<name>.rejects-2.<ext>``, ``-3``..., which keep the source's delta scope (records/rules.py)."""
    base = file_name.rsplit("/", 1)[-1]
    name = download_name(base, fmt)
    stem, _, ext = name.partition(".rejects")  # the first: the infix goes right after the first part
    n = 1
    while name == base or name in taken:
        n += 1
        name = f"{stem}.rejects-{n}{ext}"
    return name


def write(
    records: Iterator[Record],
    rejects: Iterator[tuple[int, str, str | None]],
    fmt: str,
    options: Mapping[str, Any],
    target: Path,
) -> int:
    """Write the records at the rejected positions to ``target`` (atomically: a temporary file renamed once
    fsynced); returns how many were written."""
    tmp = target.with_name(target.name + ".tmp")
    target.parent.mkdir(parents=True, exist_ok=True)
    writer = _WRITERS[fmt](tmp, options, target.suffix)
    written = 0
    try:
        for record, reason, field in _pick(records, rejects):
            writer.add(record, _reported(reason), None if field is None else _reported(field))
            written += 1
        writer.close()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        writer.abort()
        tmp.unlink(missing_ok=True)
        raise
    return written


def _pick(
    records: Iterator[Record], rejects: Iterator[tuple[int, str, str | None]]
) -> Iterator[tuple[dict[str, Any], str, str | None]]:
    """Merge the file's records with the rejected positions (both in file order); stops after the last."""
    wanted = next(rejects, None)
    if wanted is None:
        return
    for position, record in enumerate(records):
        while wanted is not None and wanted[0] < position:
            wanted = next(rejects, None)  # a position past the end cannot be; skipped defensively
        if wanted is None:
            return
        if wanted[0] == position:
            yield _as_read(record), wanted[1], wanted[2]
            wanted = next(rejects, None)
            if wanted is None:
                return


def _as_read(record: Record) -> Any:
    """The record as an object whose numbers are as the source wrote them: a fast path's canonical bytes
    (``orjson.Fragment``, ``Exact``) are parsed with Decimals, never through binary floats (``19.90`` stays)."""
    if isinstance(record, dict):
        return record
    body = record.body if isinstance(record, Exact) else orjson.dumps(record)
    return json.loads(body, parse_float=Decimal)


@dataclass(frozen=True, slots=True)
class CsvHead:
    """What a CSV reject file takes from its source's first bytes: the delimiter ``delimiter = "auto"`` found,
    and whether the source started with a UTF-8 byte order mark (which the reader strips)."""

    delimiter: str
    bom: bool


def csv_head(fh: BinaryIO, name: str, encoding: str) -> CsvHead:
    """The delimiter the CSV reader takes under ``delimiter = "auto"`` (sources/csv_source.py): the one its
    header line holds most; and whether the text starts with a UTF-8 BOM. ``fh`` is the source's raw bytes
    (compressed when its name says so); at most the first 4 MiB are read, and the header line ends at the
    first CR or LF."""
    from ..sources.csv_source import ENCODINGS
    from ..sources.csv_source import _delimiter as header_delimiter

    codec = compression.codec_of(PurePosixPath(name))
    stream: BinaryIO = compression.decompressed(fh, codec, name) if codec is not None else fh
    decoder = codecs.getincrementaldecoder(ENCODINGS[encoding])(errors="replace")
    text = ""
    first = b""
    while len(text) < _SNIFF_CHARS and not _LINE_END.search(text):
        block = stream.read(1 << 16)
        first += block[: 3 - len(first)]  # (a short read may hold less than the BOM)
        text += decoder.decode(block, final=not block)
        if not block:
            break
    bom = ENCODINGS[encoding] == "utf-8-sig" and first.startswith(codecs.BOM_UTF8)
    return CsvHead(header_delimiter(_LINE_END.split(text, maxsplit=1)[0]), bom)


_SNIFF_CHARS = 4 << 20
_LINE_END = re.compile(r"[\r\n]")


def _reported(text: str) -> str:
    """PIM-Core's text (a reason, a field name) as a report can always write it: a lone surrogate (which
    JSON text may carry as an escape) becomes its ``\\udXXX`` spelling."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _json(value: Any) -> bytes:
    """JSON text of a value as read: Decimals exact, integers of any size (beyond 64 bits as their digits)."""
    try:
        return orjson.dumps(value, default=json_default)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise
    return orjson.dumps(canonical.widen(value), default=json_default)


def _with_reject(record: dict[str, Any], reason: str, field: str | None) -> dict[str, Any]:
    out = dict(record)
    out["_reject"] = {"reason": reason, "field": field} if field is not None else {"reason": reason}
    return out


class _Writer:
    def __init__(self, path: Path, options: Mapping[str, Any], suffix: str) -> None:
        self.fh: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in close() or abort()
        self.options = options

    def add(self, record: dict[str, Any], reason: str, field: str | None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.fh.close()

    def abort(self) -> None:
        self.fh.close()


class _JsonLines(_Writer):
    def add(self, record: dict[str, Any], reason: str, field: str | None) -> None:
        self.fh.write(_json(_with_reject(record, reason, field)) + b"\n")


class _JsonArray(_Writer):
    def __init__(self, path: Path, options: Mapping[str, Any], suffix: str) -> None:
        super().__init__(path, options, suffix)
        self._open, self._close = b"", b""
        for segment in parse_json_path(options.get("json_path"))[:-1]:
            self._open += b"[" if segment is ITEMS else b"{" + _json(segment) + b":"
            self._close = (b"]" if segment is ITEMS else b"}") + self._close
        self.fh.write(self._open + b"[\n")
        self._count = 0

    def add(self, record: dict[str, Any], reason: str, field: str | None) -> None:
        self.fh.write((b",\n" if self._count else b"") + _json(_with_reject(record, reason, field)))
        self._count += 1

    def close(self) -> None:
        self.fh.write(b"\n]" + self._close + b"\n")
        super().close()


class _Csv(_Writer):
    def __init__(self, path: Path, options: Mapping[str, Any], suffix: str) -> None:
        super().__init__(path, options, suffix)
        from ..sources.csv_source import ENCODINGS

        delimiter = options.get("delimiter", "auto")  # the caller gives the one found for "auto" (csv_head)
        self._delimiter = ("\t" if suffix == ".tsv" else ",") if delimiter == "auto" else delimiter
        codec = ENCODINGS[options.get("encoding", "utf-8")]
        self._codec = "utf-8" if codec == "utf-8-sig" else codec
        if options.get("bom") and codec == "utf-8-sig":  # the source's (csv_head): Excel reads UTF-8 by it
            self.fh.write(codecs.BOM_UTF8)
        self._text = io.TextIOWrapper(self.fh, encoding=self._codec, newline="")
        self._csv = csv.writer(self._text, delimiter=self._delimiter, quotechar='"', lineterminator="\r\n")
        self._header: list[str] | None = None

    def add(self, record: dict[str, Any], reason: str, field: str | None) -> None:
        if self._header is None:
            self._header = list(record)
            self._text.write(
                self._delimiter.join(_header_name(n, self._delimiter) for n in [*self._header, REASON, FIELD]) + "\r\n"
            )
        own = [self._own(reason), self._own(field or "")]
        self._csv.writerow([_cell(record.get(name)) for name in self._header] + own)

    def _own(self, text: str) -> str:
        """The daemon's own column: never a live formula (OWASP's CSV injection advice: a leading ``'``), and
        in characters the file's encoding holds (the source's cells hold only those: they were read in it), no NUL
        among them (the source's cells hold none: the reader refuses it)."""
        if text[:1] in _FORMULA_START:
            text = "'" + text
        text = text.replace("\0", "\\x00")  # the CSV reader refuses a NUL (sources/csv_source.py): spelled out
        return text.encode(self._codec, "backslashreplace").decode(self._codec)

    def close(self) -> None:
        self._text.close()

    def abort(self) -> None:
        self._text.close()


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _header_name(name: str, delimiter: str) -> str:
    """A header name quoted whenever it holds a candidate delimiter (or a quote or line break), so that
    ``delimiter = "auto"``, which counts them in the header line outside quotes, finds in the reject file the
    delimiter it found in the source; the name reads back as it was."""
    from ..sources.csv_source import DELIMITERS

    if any(c in name for c in (delimiter, *DELIMITERS, '"', "\r", "\n")):
        return '"' + name.replace('"', '""') + '"'
    return name


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return _json(value).decode()


class _Excel(_Writer):
    def __init__(self, path: Path, options: Mapping[str, Any], suffix: str) -> None:
        from openpyxl import Workbook

        self._path = path
        self._book = Workbook(write_only=True)
        self._sheet = self._book.create_sheet(options.get("sheet") or "rejects")
        self._header: list[str] | None = None

    def add(self, record: dict[str, Any], reason: str, field: str | None) -> None:
        if self._header is None:
            self._header = list(record)
            self._sheet.append([self._text(name) for name in [*self._header, REASON, FIELD]])
        cells = [_excel_cell(record.get(name)) for name in self._header] + [reason, field]
        self._sheet.append([self._text(c) if isinstance(c, str) else c for c in cells])

    def _text(self, value: str) -> Any:
        """A text cell, whatever its text: openpyxl's ``append`` would make a str starting with ``=`` a formula
        and one of its error codes (``#N/A``) an error; a cell whose data_type is set after its value is
        written as an inline string (openpyxl/cell/_writer.py). What XML cannot hold is ``_xHHHH_``-escaped."""
        from openpyxl.cell import WriteOnlyCell

        cell = WriteOnlyCell(self._sheet, value=_ooxml_escape(value))
        cell.data_type = "s"
        return cell

    def close(self) -> None:
        self._book.save(self._path)

    def abort(self) -> None:
        pass


# What a worksheet's text cannot hold as it is (openpyxl refuses these; XML normalises a CR away), and an
# underscore that would start an escape (ECMA-376 Part 1, 22.9.2.19: written as _x005F_).
_OOXML_ESCAPE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\r\ufffe\uffff]|_(?=x[0-9A-Fa-f]{4}_)")


def _ooxml_escape(text: str) -> str:
    return _OOXML_ESCAPE.sub(lambda m: f"_x{ord(m.group(0)):04X}_", text)


def _excel_cell(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return _json(value).decode()


class _Xml(_Writer):
    def __init__(self, path: Path, options: Mapping[str, Any], suffix: str) -> None:
        super().__init__(path, options, suffix)
        names = str(options.get("record_path", "")).strip("/").split("/")
        self._outer, self._record = names[:-1], names[-1]
        self.fh.write(b'<?xml version="1.0" encoding="utf-8"?>\n')
        self.fh.write("".join(f"<{n}>" for n in self._outer).encode() + b"\n")

    def add(self, record: dict[str, Any], reason: str, field: str | None) -> None:
        reason, field = _xml_chars(reason), None if field is None else _xml_chars(field)
        reject = {"reason": reason, **({"field": field} if field is not None else {})}
        value = dict(record) if isinstance(record, dict) else {"#text": record}
        value["_reject"] = reject
        self.fh.write(_element(self._record, value).encode("utf-8") + b"\n")

    def close(self) -> None:
        self.fh.write("".join(f"</{n}>" for n in reversed(self._outer)).encode() + b"\n")
        super().close()


# Characters XML 1.0 cannot hold, not even as a character reference (its Char production).
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _xml_chars(text: str) -> str:
    """PIM-Core's text as XML can hold it: a character it cannot is written as its ``\\xNN`` spelling."""
    return _NOT_XML.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


_CR = {"\r": "&#13;"}  # a CR in text is read back as LF unless it is a character reference (XML 1.0, 2.11)


def _element(name: str, value: Any) -> str:
    """One element from the shape the XML reader gives (xmltodict's): ``@`` attributes, ``#text``, children."""
    if value is None:
        return f"<{name}/>"
    if not isinstance(value, dict):
        return f"<{name}>{escape(_text(value), _CR)}</{name}>"
    attrs = "".join(f" {k[1:]}={quoteattr(_text(v))}" for k, v in value.items() if k.startswith("@"))
    inner = []
    for key, child in value.items():
        if key.startswith("@"):
            continue
        if key == "#text":
            inner.append(escape(_text(child), _CR))
        elif isinstance(child, list):
            inner.extend(_element(key, c) for c in child)
        else:
            inner.append(_element(key, child))
    return f"<{name}{attrs}>{''.join(inner)}</{name}>"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else _json(value).decode()


_WRITERS: dict[str, type[_Writer]] = {
    "json": _JsonArray,
    "jsonl": _JsonLines,
    "csv": _Csv,
    "excel": _Excel,
    "xml": _Xml,
}
