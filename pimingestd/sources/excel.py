"""Excel (.xlsx/.xlsm): one sheet, first row as header, streamed read-only.

openpyxl runs with ``read_only=True, data_only=True`` so rows are parsed from
the sheet XML as they are iterated and formulas give their cached values.
Dates and times become ISO 8601 strings, durations ISO 8601 durations. Fully
empty rows are skipped; a value in a column without a header is an error, so
nothing is dropped silently.
"""

from __future__ import annotations

import datetime as dt
import math
import zipfile
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from openpyxl import load_workbook
from openpyxl.utils import get_column_letter
from openpyxl.utils.exceptions import InvalidFileException

from ..errors import ParseError


def _duration(value: dt.timedelta) -> str:
    total = value.total_seconds()
    sign = "-" if total < 0 else ""
    total = abs(total)
    days, rem = divmod(total, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, seconds = divmod(rem, 60)
    secs = f"{seconds:.6f}".rstrip("0").rstrip(".")
    return f"{sign}P{int(days)}DT{int(hours)}H{int(minutes)}M{secs}S"


_PLAIN = frozenset({str, int, bool, type(None)})


def _where(name: str, title: str, rownum: int, col: int, index: int) -> str:
    return f"{name}: sheet {title!r} row {rownum} column {get_column_letter(col + 1)} (record {index})"


def _cell(value: Any, where: Callable[[], str]) -> Any:
    """A cell value as JSON data; ``where`` names the cell, and is only called for an error."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ParseError(f"{where()}: {value} is not a JSON number")
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return _duration(value)
    raise ParseError(f"{where()}: unsupported cell value of type {type(value).__name__}")


# openpyxl streams sheet XML but loads the shared strings table whole; a member
# that inflates far beyond its compressed size is a decompression bomb.
MAX_SHARED_STRINGS = 256 << 20
MAX_RATIO = 100
RATIO_FROM = 64 << 20


def _check_zip(path: Path, fh: BinaryIO) -> None:
    try:
        with zipfile.ZipFile(fh) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ParseError(f"{path.name}: not a readable Excel workbook: {exc}") from None
    finally:
        fh.seek(0)
    for m in members:
        if m.filename.endswith("sharedStrings.xml") and m.file_size > MAX_SHARED_STRINGS:
            raise ParseError(
                f"{path.name}: {m.filename} inflates to {m.file_size} bytes (over {MAX_SHARED_STRINGS}); refused"
                " as it would be held in memory whole"
            )
        if m.file_size > RATIO_FROM and m.file_size > MAX_RATIO * max(m.compress_size, 1):
            raise ParseError(
                f"{path.name}: {m.filename} inflates {m.file_size // max(m.compress_size, 1)}x to {m.file_size} bytes;"
                " refused as a decompression bomb"
            )


def read_excel(path: Path, sheet: str | None) -> Iterator[dict[str, Any]]:
    # We own the file handle: openpyxl's read-only mode leaves it open when iteration stops early.
    with open(path, "rb") as fh:
        _check_zip(path, fh)
        yield from _read(path, fh, sheet)


def _read(path: Path, fh: BinaryIO, sheet: str | None) -> Iterator[dict[str, Any]]:
    try:
        wb = load_workbook(fh, read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError, ValueError) as exc:
        raise ParseError(f"{path.name}: not a readable Excel workbook: {exc}") from None
    rows: Iterator[tuple[Any, ...]] = iter(())
    try:
        if sheet is None:
            if not wb.sheetnames:
                raise ParseError(f"{path.name}: the workbook has no sheets")
            ws = wb[wb.sheetnames[0]]
        elif sheet in wb.sheetnames:
            ws = wb[sheet]
        else:
            raise ParseError(f"{path.name}: no sheet named {sheet!r} (sheets: {', '.join(wb.sheetnames)})")
        title = ws.title
        if hasattr(ws, "reset_dimensions"):
            # Declared dimensions are often wrong in files not written by Excel; read what is there.
            ws.reset_dimensions()
        rows = ws.iter_rows(values_only=True)
        header = _header(path, title, next(rows, None))
        width = len(header)
        index = 0
        try:
            for rownum, row in enumerate(rows, 2):
                if all(v is None or v == "" for v in row):
                    continue
                if len(row) > width:
                    for col in range(width, len(row)):
                        if row[col] is not None and row[col] != "":
                            raise ParseError(
                                f"{path.name}: sheet {title!r} row {rownum} column {get_column_letter(col + 1)}"
                                f" (record {index}): value in a column without a header"
                            )
                cells = row if len(row) >= width else (*row, *([None] * (width - len(row))))
                record = dict(zip(header, cells, strict=False))
                for col, key in enumerate(header):
                    value = cells[col]
                    if type(value) not in _PLAIN:
                        record[key] = _cell(value, partial(_where, path.name, title, rownum, col, index))
                yield record
                index += 1
        except (zipfile.BadZipFile, KeyError, ValueError, EOFError) as exc:
            raise ParseError(f"{path.name}: sheet {title!r}: damaged worksheet data: {exc}") from None
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()
        wb.close()


def _header(path: Path, title: str, row: tuple[Any, ...] | None) -> list[str]:
    if row is None:
        return []
    cells = list(row)
    while cells and (cells[-1] is None or cells[-1] == ""):
        cells.pop()
    names: list[str] = []
    seen: dict[str, str] = {}
    for col, value in enumerate(cells):
        letter = get_column_letter(col + 1)
        name = "" if value is None else str(value).strip()
        if not name:
            raise ParseError(f"{path.name}: sheet {title!r} header row 1 column {letter}: empty header name")
        if name in seen:
            raise ParseError(
                f"{path.name}: sheet {title!r} header row 1 column {letter}: duplicate header {name!r}"
                f" (first in column {seen[name]})"
            )
        seen[name] = letter
        names.append(name)
    return names
