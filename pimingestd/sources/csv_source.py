"""CSV (.csv, .tsv): the first row is the header, each row an object ``{header: field text}``.

The contract is what Python's ``csv.DictReader`` gives for the same dialect
over the file opened with ``newline=""`` (lines end at LF, CRLF or a CR alone):
fields are the text exactly as in the file (RFC 4180 quoting with ``"``,
newlines inside quoted fields kept), an empty field is ``""``, rows that are
completely empty are skipped, and (with ``short_rows = "pad"``) a missing
trailing field is ``null``. No type is guessed; ``types`` names the columns to
convert (``decimal``, ``int``, ``bool``, ``date``), an empty field in such a
column being ``null``.

Refused, naming the line (and the byte or column): a byte sequence that is not
valid in the encoding, a NUL character (how UTF-16 or UTF-32 read as another
encoding shows; csv.reader takes it since 3.11), an ``int`` cell longer than
Python converts (4300 digits), UTF-16 without a byte order mark (name utf-16-le or
utf-16-be), a first line without a single ASCII character under a UTF-16
encoding (8-bit text or the other byte order: one line of noise), a byte order mark contradicting the encoding, an empty or
duplicate header name, a row with more fields than the header, a row with
fewer (unless ``short_rows = "pad"``), a value that does not convert to its
column's type, a field over the record
size limit.

Options: ``delimiter`` ("auto": the one of ``,`` ``;`` tab ``|`` that occurs
most in the header line, outside quotes; or the character itself),
``encoding`` (``utf-8``, the default, strips a BOM; ``utf-8-sig``, ``utf-16``
by its BOM (refused without one), ``utf-16-le``, ``utf-16-be``, ``cp1252``, ``latin-1``), ``short_rows`` ("fail" or "pad"),
``types`` (a table of column name to type).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, BinaryIO

from ..errors import ParseError

ENCODINGS = {
    "utf-8": "utf-8-sig",
    "utf-8-sig": "utf-8-sig",
    "utf-16": "utf-16",
    "utf-16-le": "utf-16-le",
    "utf-16-be": "utf-16-be",
    "cp1252": "cp1252",
    "latin-1": "latin-1",
}
DELIMITERS = (",", ";", "\t", "|")
TYPES = ("decimal", "int", "bool", "date")
_BLOCK = 1 << 16
_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_INT = re.compile(r"-?[0-9]+")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # what docs/formats.md documents; fromisoformat takes 2021-W52-1 too
_ASCII = re.compile("[\x00-\x7f]")
_BOOLS = {"true": True, "false": False, "1": True, "0": False}


@dataclass(frozen=True, slots=True)
class Options:
    delimiter: str = "auto"  # one character, or "auto": whichever of DELIMITERS the header line holds most
    encoding: str = "utf-8"  # the text encoding (a BOM, when present, is honoured and checked)
    short_rows: str = "fail"  # a row with fewer cells than the header: "fail", or "pad" with nulls
    types: Mapping[str, str] = field(default_factory=dict)  # column = "decimal" | "int" | "bool" | "date"

    def __post_init__(self) -> None:
        if self.delimiter != "auto" and (not isinstance(self.delimiter, str) or len(self.delimiter) != 1):
            raise ValueError(f'delimiter must be "auto" or one character; got {self.delimiter!r}')
        if self.delimiter in ('"', "\r", "\n"):
            raise ValueError(f"delimiter {self.delimiter!r} cannot be used (a quote or a line break)")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}; got {self.encoding!r}")
        if self.short_rows not in ("fail", "pad"):
            raise ValueError(f"short_rows must be fail or pad; got {self.short_rows!r}")
        if not isinstance(self.types, Mapping):
            raise ValueError("types must be a table of column name = type")
        for column, kind in self.types.items():
            if kind not in TYPES:
                raise ValueError(f"types.{column} must be one of {', '.join(TYPES)}; got {kind!r}")


class _Lines:
    """The decoded text in lines, each keeping its end, as a file opened with newline="" gives them to csv.reader:
    a line ends at LF, CRLF or a CR alone (Excel for Mac's "CSV (Macintosh)" writes CR only). It counts lines and
    bytes so a decoding error can name both."""

    def __init__(self, fh: BinaryIO, name: str, encoding: str, limit: int) -> None:
        self._fh = fh
        self._limit = limit  # a line longer than this is refused before it is held whole
        self._name = name
        self._label = encoding
        self._decoder = codecs.getincrementaldecoder(ENCODINGS[encoding])(errors="strict")
        self._read = 0  # bytes handed to the decoder
        self.line = 1  # the line the next text starts on

    def __iter__(self) -> Iterator[str]:
        rest = ""
        first = True
        while True:
            block = self._fh.read(_BLOCK)
            if first and block:
                while len(block) < len(codecs.BOM_UTF8) and (more := self._fh.read(_BLOCK)):  # a short read
                    block += more
                self._byte_order(block)
                first = False
            buffered = self._decoder.getstate()[0]
            try:
                text = self._decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                at = self._read - len(buffered) + exc.start
                good = rest + codecs.decode(exc.object[: exc.start], ENCODINGS[self._label], "replace")
                line = self.line + good.count("\n") + good.count("\r") - good.count("\r\n")
                raise ParseError(
                    f"{self._name}: line {line}: byte {at}: not valid {self._label} ({exc.reason});"
                    " name the file's encoding with the `encoding` option"
                ) from None
            if self._read == 0 and self._label in ("utf-16-le", "utf-16-be") and text[:1] == "\ufeff":
                text = text[1:]  # a BOM of the named order (one of the other order was refused)
            if "\0" in text:  # csv.reader takes NUL since 3.11; it is how UTF-16 or UTF-32 read otherwise shows
                good = rest + text[: text.index("\0")]
                line = self.line + good.count("\n") + good.count("\r") - good.count("\r\n")
                raise ParseError(
                    f"{self._name}: line {line}: a NUL character, which no CSV text holds; a file in UTF-16 or UTF-32"
                    f" read as {self._label} shows them: name the file's encoding with the `encoding` option"
                    " (utf-16-le, utf-16-be)"
                )
            self._read += len(block)
            text = rest + text
            if "\r" in text:  # CR alone or CRLF: lines as a file opened with newline="" gives them
                lines, rest = _split_cr(text, final=not block)
            else:
                lines = [piece + "\n" for piece in text.split("\n")]
                rest = lines.pop()[:-1]
            long = next((i for i, piece in enumerate([*lines, rest]) if len(piece) > self._limit + 2), None)
            if long is not None:
                raise ParseError(
                    f"{self._name}: line {self.line + long} is longer than {self._limit} characters"
                    " (the record size limit, [chunking] max_record_bytes)"
                )
            for piece in lines:
                self.line += 1
                yield piece
            if not block:
                if rest:
                    yield rest
                return

    def _byte_order(self, block: bytes) -> None:
        """UTF-16 needs the byte order. Python's utf-16 codec takes a file without a BOM for little-endian, which
        silently garbled a big-endian one: ask for it instead. A BOM contradicting the named order is refused, and
        so is a BOM under a single-byte encoding, which would decode it into the first header name ("ï»¿sku")."""
        bom = {codecs.BOM_UTF16_LE: "little", codecs.BOM_UTF16_BE: "big"}.get(block[:2])
        if self._label in ("cp1252", "latin-1") and (bom is not None or block.startswith(codecs.BOM_UTF8)):
            which = "UTF-8" if bom is None else f"UTF-16 ({bom}-endian)"
            raise ParseError(
                f"{self._name}: the file starts with a {which} byte order mark, but the encoding is {self._label};"
                f' name it with encoding = "{"utf-8" if bom is None else "utf-16"}"'
            )
        if self._label == "utf-16" and bom is None:
            raise ParseError(
                f"{self._name}: no byte order mark, so the UTF-16 byte order is unknown; name it with"
                ' encoding = "utf-16-le" or "utf-16-be"'
            )
        named = {"utf-16-le": "little", "utf-16-be": "big"}.get(self._label)
        if named is not None and bom is not None and bom != named:
            raise ParseError(
                f"{self._name}: the byte order mark says {bom}-endian, but the encoding is {self._label};"
                f' name it with encoding = "utf-16" (by the BOM) or "utf-16-{bom[0]}e"'
            )


_LINE_END = re.compile(r"(\r\n|\r|\n)")


def _split_cr(text: str, final: bool) -> tuple[list[str], str]:
    """``text``'s whole lines, each with its end (LF, CRLF or a CR alone), and the rest. A CR that ends the text
    stays in the rest unless the text is final: the next block may start with its LF."""
    parts = _LINE_END.split(text)
    rest = parts.pop()
    lines = [parts[i] + parts[i + 1] for i in range(0, len(parts), 2)]
    if not final and not rest and lines and lines[-1].endswith("\r"):
        rest = lines.pop()
    return lines, rest


def _delimiter(header_line: str) -> str:
    """The candidate that occurs most in the header line outside quotes (a comma on a tie or none)."""
    outside = "".join(header_line.split('"')[0::2])
    counts = {d: outside.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def read(fh: BinaryIO, name: str, options: Options, max_record_bytes: int) -> Iterator[dict[str, Any]]:
    if csv.field_size_limit() < max_record_bytes:  # process-wide; only ever raised, to our record limit
        csv.field_size_limit(max_record_bytes)
    lines = _Lines(fh, name, options.encoding, max_record_bytes)
    stream = iter(lines)
    first = next(stream, None)
    if first is None:
        return
    if options.encoding.startswith("utf-16") and not first.isascii() and not _ASCII.search(first):
        # UTF-16 puts every delimiter and line end in a code unit below 0x80; 8-bit text, or UTF-16 of the other
        # byte order, read as UTF-16 has none, and the whole file became one header line: no record, no error.
        raise ParseError(
            f"{name}: line 1 holds no delimiter and no line end when read as {options.encoding}: the file is not"
            " in that encoding (8-bit text, or UTF-16 of the other byte order); name its encoding"
        )
    delimiter = _delimiter(first) if options.delimiter == "auto" else options.delimiter
    reader = csv.reader(_chain(first, stream), delimiter=delimiter, quotechar='"', strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        names = _header(name, header)
        unknown = sorted(set(options.types) - set(names))
        if unknown:
            raise ParseError(f"{name}: types names column(s) {', '.join(map(repr, unknown))}, which the header lacks")
        convert = [options.types.get(n) for n in names]
        index = 0
        for row in reader:
            if not row:
                continue  # a completely empty line, as DictReader skips it
            lineno = reader.line_num
            if len(row) > len(names):
                raise ParseError(
                    f"{name}: line {lineno} (record {index}): {len(row)} fields, the header has {len(names)}"
                )
            values: list[Any] = list(row)
            if len(row) < len(names):
                if options.short_rows != "pad":
                    raise ParseError(
                        f"{name}: line {lineno} (record {index}): {len(row)} fields, the header has {len(names)};"
                        ' set short_rows = "pad" to take missing fields as null'
                    )
                values += [None] * (len(names) - len(row))
            for col, kind in enumerate(convert):
                if kind is not None and values[col] is not None:
                    values[col] = _convert(values[col], kind, f"{name}: line {lineno} column {names[col]!r}")
            yield dict(zip(names, values, strict=True))
            index += 1
    except csv.Error as exc:
        raise ParseError(f"{name}: line {reader.line_num}: {exc}") from None


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def _header(name: str, header: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    for col, text in enumerate(header, 1):
        if text == "":
            raise ParseError(f"{name}: line 1 column {col}: empty header name")
        if text in seen:
            raise ParseError(f"{name}: line 1 column {col}: duplicate header {text!r} (first in column {seen[text]})")
        seen[text] = col
    return header


def _convert(text: str, kind: str, where: str) -> Any:
    if text == "":
        return None
    if kind == "decimal" and _DECIMAL.fullmatch(text):
        try:
            return Decimal(text)
        except InvalidOperation:
            pass
    elif kind == "int" and _INT.fullmatch(text):
        try:
            return int(text)
        except ValueError:  # past int_max_str_digits (4300 by default): CPython refuses to convert it
            raise ParseError(
                f"{where}: a whole number of {len(text.lstrip('-'))} digits, more than Python converts"
                f" ({sys.get_int_max_str_digits()}); type the column as decimal, or leave it text"
            ) from None
    elif kind == "bool" and text.lower() in _BOOLS:
        return _BOOLS[text.lower()]
    elif kind == "date" and _DATE.fullmatch(text):
        try:
            return dt.date.fromisoformat(text).isoformat()
        except ValueError:
            pass
    return _bad(where, text, kind)


def _bad(where: str, text: str, kind: str) -> Any:
    expected = {
        "decimal": "a decimal number such as 19.90",
        "int": "a whole number",
        "bool": "true, false, 1 or 0",
        "date": "an ISO date such as 2021-12-31",
    }[kind]
    raise ParseError(f"{where}: {text[:60]!r} is not {expected}")
