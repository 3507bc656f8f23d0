"""Excel (.xlsx/.xlsm): one worksheet, first row as header, streamed from the sheet's XML.

The package is read through ooxml.py (parts found by their relationships);
the sheet XML is parsed as a stream and each row is dropped once read, so
memory holds the shared strings table and one row. Every value is what the
cell holds, or the file is refused naming sheet, row and column:

- text: as written, ``_xHHHH_`` escapes decoded; whitespace kept;
- numbers: integers as integers, others as numbers; booleans as booleans;
- cells formatted as dates: ISO 8601 (``2021-01-01T00:00:00``; a time of day
  alone as ``12:30:00``), durations as ISO 8601 durations; a serial outside
  the range of dates is refused;
- formulas: their cached value. A formula saved without one (the workbook
  was written by a program that does not calculate) and error cells
  (``#DIV/0!``, ``#N/A``: ``t="e"``) are refused, since their value is not
  known; with ``unknown_cells = "null"`` they arrive as ``null`` instead;
- empty cells are ``null``; a row whose cells hold nothing but empty text is
  skipped (a row with an unknown cell is not empty).

Header names are the header row's cells converted the same way (a number's
or boolean's JSON text, a date's ISO text) and kept exactly, whitespace
included. An empty or duplicate name, and a value in a column without a
header, are refused.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson

from ..errors import ParseError
from .ooxml import MAIN, Package, Styles, decode, text_of

_ROW, _C, _V, _F, _IS, _SHEET_DATA = (MAIN + t for t in ("row", "c", "v", "f", "is", "sheetData"))
_UNKNOWN = object()  # a cell whose value is not known: an uncached formula or an error value


class _Cells:
    """Turns one ``<c>`` element into a value; knows the workbook's strings, styles and epoch."""

    def __init__(self, name: str, title: str, strings: list[str] | None, styles: Styles, date1904: bool) -> None:
        self.name = name
        self.title = title
        self._strings = strings
        self._dates = styles.dates
        self._durations = styles.durations
        # openpyxl's date arithmetic (the 1900 leap-year bug included), imported only when a workbook
        # is read: openpyxl costs about 20 MiB, which a daemon that reads no Excel should not carry.
        from openpyxl.utils.datetime import MAC_EPOCH, WINDOWS_EPOCH, from_excel, from_ISO8601

        self._from_excel, self._from_iso = from_excel, from_ISO8601
        self._epoch = MAC_EPOCH if date1904 else WINDOWS_EPOCH
        self.record: int | None = None  # the record the row being read becomes (None: the header row)

    def where(self, row: int, col: int) -> str:
        record = "" if self.record is None else f" (record {self.record})"
        return f"{self.name}: sheet {self.title!r} row {row} column {column_letter(col)}{record}"

    def value(self, c: Any, row: int, col: int) -> tuple[Any, str]:
        """(value, why unknown): the value, or _UNKNOWN and a description of the cell."""
        kind = c.get("t", "n")
        text: str | None = None
        formula = False
        inline = None
        for child in c:
            tag = child.tag
            if tag == _V:
                text = child.text or ""
            elif tag == _F:
                formula = True
            elif tag == _IS:
                inline = child
        try:
            if kind == "s":
                if text is None:
                    return None, ""
                if self._strings is None:
                    raise ValueError("refers to a shared string, but the workbook has no shared strings table")
                index = int(text)
                if not 0 <= index < len(self._strings):
                    raise ValueError(f"refers to shared string {index}, which does not exist")
                return self._strings[index], ""
            if kind == "inlineStr":
                return ("" if inline is None else text_of(inline)), ""
            if kind == "e":
                return _UNKNOWN, f"holds the error value {text or '?'}"
            if not text and kind != "str":  # no value (an empty <v/> as well)
                if formula:
                    return _UNKNOWN, "holds a formula saved without its value (the file was not calculated)"
                return None, ""
            if kind == "str":
                return decode(text or ""), ""
            if kind == "b":
                if text not in ("0", "1"):
                    raise ValueError(f"boolean cell holds {text!r}")
                return text == "1", ""
            if kind == "d":
                return self._from_iso(text).isoformat(), ""
            if kind != "n":
                raise ValueError(f"unknown cell type {kind!r}")
            assert text is not None
            number: int | float = float(text) if ("." in text or "e" in text or "E" in text) else int(text)
            if isinstance(number, float) and not math.isfinite(number):
                raise ValueError(f"{number} is not a JSON number")
            style = int(c.get("s", "0"))
            if style in self._dates:
                return self._date(number, style in self._durations, row, col), ""
            return number, ""
        except ValueError as exc:
            raise ParseError(f"{self.where(row, col)}: {exc}") from None

    def _date(self, serial: float, duration: bool, row: int, col: int) -> str:
        try:
            value = self._from_excel(serial, self._epoch, timedelta=duration)
        except (OverflowError, ValueError):
            raise ParseError(
                f"{self.where(row, col)}: formatted as a date, but its serial {serial} is outside the range of dates"
            ) from None
        if isinstance(value, dt.timedelta):
            return _duration(value)
        return str(value.isoformat())


def column_letter(col: int) -> str:
    """The letters of a 0-based column: 0 is A, 25 is Z, 26 is AA."""
    letters = ""
    col += 1
    while col:
        col, rem = divmod(col - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def _duration(value: dt.timedelta) -> str:
    total = value.total_seconds()
    sign = "-" if total < 0 else ""
    total = abs(total)
    days, rem = divmod(total, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, seconds = divmod(rem, 60)
    secs = f"{seconds:.6f}".rstrip("0").rstrip(".")
    return f"{sign}P{int(days)}DT{int(hours)}H{int(minutes)}M{secs}S"


def _column(ref: str) -> int:
    """0-based column of a cell reference such as ``AB12``."""
    col = 0
    for ch in ref:
        if "A" <= ch <= "Z":
            col = col * 26 + ord(ch) - 64
        elif "a" <= ch <= "z":
            col = col * 26 + ord(ch) - 96
        else:
            break
    if col == 0:
        raise ValueError(ref)
    return col - 1


def _rows(package: Package, part: str, cells: _Cells) -> Iterator[tuple[int, dict[int, tuple[Any, str]]]]:
    """(row number, {column: (value, why unknown)}) for every row that holds anything."""
    sheet_data = None
    row_number = 0
    col = -1
    current: dict[int, tuple[Any, str]] = {}
    filled = False
    for event, el in package.elements(part):
        tag = el.tag
        if event == "start":
            if tag == _ROW:
                r = el.get("r")
                row_number = int(r) if r else row_number + 1
                col = -1
                current = {}
                filled = False
            elif tag == _SHEET_DATA:
                sheet_data = el
            continue
        if tag == _C:
            ref = el.get("r")
            try:
                col = _column(ref) if ref else col + 1
            except ValueError:
                raise ParseError(
                    f"{cells.name}: sheet {cells.title!r} row {row_number}: bad cell reference {ref!r}"
                ) from None
            value = cells.value(el, row_number, col)
            if value[0] is not None:
                current[col] = value
                filled = filled or value[0] != ""
        elif tag == _ROW:
            if filled:
                yield row_number, current
            if sheet_data is not None:
                sheet_data.clear()  # the rows read so far are not kept


def _header_name(value: Any, where: str) -> str:
    if value is _UNKNOWN:
        raise ParseError(f"{where}: a header cell whose value is not known")
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()  # a number or boolean: its JSON text


UNKNOWN_CELLS = ("fail", "null")


@dataclass(frozen=True, slots=True)
class Options:
    sheet: str | None = None  # the worksheet to read; default the first worksheet
    unknown_cells: str = "fail"  # "fail", or "null" for formula cells without a value and error cells

    def __post_init__(self) -> None:
        if self.sheet is not None and (not isinstance(self.sheet, str) or not self.sheet):
            raise ValueError("sheet must be a non-empty string")
        if self.unknown_cells not in UNKNOWN_CELLS:
            raise ValueError(f"unknown_cells must be one of {', '.join(UNKNOWN_CELLS)}; got {self.unknown_cells!r}")


def read(fh: BinaryIO, name: str, options: Options, max_record_bytes: int = 0) -> Iterator[dict[str, Any]]:
    """The records of the chosen worksheet (``max_record_bytes`` is checked by the chunker for Excel)."""
    sheet, unknown_cells = options.sheet, options.unknown_cells
    package = Package(fh, name)
    try:
        sheets, date1904 = package.sheets()
        worksheets = [s for s in sheets if s.kind == "worksheet"]
        if sheet is None:
            if not worksheets:
                if not sheets:
                    raise ParseError(f"{name}: the workbook has no sheets")
                raise ParseError(
                    f"{name}: the workbook has no worksheet (only {', '.join(f'{s.name!r} ({s.kind})' for s in sheets)})"
                )
            chosen = worksheets[0]
        else:
            found = next((s for s in sheets if s.name == sheet), None)
            if found is None:
                raise ParseError(f"{name}: no sheet named {sheet!r} (sheets: {', '.join(s.name for s in sheets)})")
            if found.kind != "worksheet":
                raise ParseError(
                    f"{name}: sheet {sheet!r} is a {found.kind}, not a worksheet with cells; worksheets:"
                    f" {', '.join(repr(s.name) for s in worksheets) or 'none'}"
                )
            chosen = found
        if chosen.part is None or not package.has(chosen.part):
            raise ParseError(
                f"{name}: sheet {chosen.name!r} is listed in the workbook but its part"
                f" {chosen.part or '(no relationship)'} is missing from the file; the workbook is damaged"
            )
        cells = _Cells(name, chosen.name, package.shared_strings(), package.styles(), date1904)
        yield from _records(package, chosen.part, cells, unknown_cells == "null")
    finally:
        package.close()


def _records(package: Package, part: str, cells: _Cells, unknown_as_null: bool) -> Iterator[dict[str, Any]]:
    rows = _rows(package, part, cells)
    header: list[str] = []
    first = next(rows, None)
    pending = None
    if first is not None and first[0] == 1:
        header = _header(cells, first[1])
    elif first is not None:
        pending = first  # row 1 is empty: no header names
    width = len(header)
    index = 0
    cells.record = 0
    for rownum, row in _chain(pending, rows):
        record: dict[str, Any] = dict.fromkeys(header)
        for col, (cell, why) in row.items():
            if col >= width:
                if cell == "":
                    continue
                raise ParseError(
                    f"{cells.where(rownum, col)}: value in a column without a header (row 1 holds the header names)"
                )
            value = cell
            if cell is _UNKNOWN:
                if not unknown_as_null:
                    raise ParseError(
                        f"{cells.where(rownum, col)} {why}; fix the cell, or set"
                        ' unknown_cells = "null" to deliver such cells as null'
                    )
                value = None
            record[header[col]] = value
        yield record
        index += 1
        cells.record = index


def _chain(
    first: tuple[int, dict[int, tuple[Any, str]]] | None, rest: Iterator[tuple[int, dict[int, tuple[Any, str]]]]
) -> Iterator[tuple[int, dict[int, tuple[Any, str]]]]:
    if first is not None:
        yield first
    yield from rest


def _header(cells: _Cells, row: dict[int, tuple[Any, str]]) -> list[str]:
    filled = [col for col, (value, _) in row.items() if value != ""]
    width = max(filled) + 1 if filled else 0
    names: list[str] = []
    seen: dict[str, str] = {}
    for col in range(width):
        letter = column_letter(col)
        where = f"{cells.name}: sheet {cells.title!r} header row 1 column {letter}"
        value = row.get(col, (None, ""))[0]
        name = "" if value is None else _header_name(value, where)
        if name == "":
            raise ParseError(f"{where}: empty header name")
        if name in seen:
            raise ParseError(f"{where}: duplicate header {name!r} (first in column {seen[name]})")
        seen[name] = letter
        names.append(name)
    return names
