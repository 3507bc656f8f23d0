"""Streaming readers: exact values, selectors, and errors that say where."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook

from pimingestd.errors import ParseError, UnsupportedFormat
from pimingestd.sources import SourceSpec, detect_format, read_records


def read(path: Path, fmt: str, **kw: Any) -> list[dict[str, Any]]:
    return list(read_records(path, SourceSpec(fmt, **kw)))


def test_json_exact_numbers(tmp_path: Path) -> None:
    """Integers of any size stay ints; decimals arrive as exact Decimals."""
    p = tmp_path / "a.json"
    p.write_bytes(b'\xef\xbb\xbf[{"i": 123456789012345678901234567890, "d": 0.30000000000000000001, "z": -0.0}]')
    assert read(p, "json") == [
        {"i": 123456789012345678901234567890, "d": Decimal("0.30000000000000000001"), "z": Decimal("-0.0")}
    ]


def test_json_path_selects_nested_array(tmp_path: Path) -> None:
    """json_path picks the records out of a nested array."""
    p = tmp_path / "a.json"
    p.write_text(json.dumps({"meta": {"n": 2}, "catalog": {"products": [{"a": 1}, {"a": 2}]}}))
    assert read(p, "json", json_path="catalog.products.item") == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize(
    ("text", "json_path", "message"),
    [
        ('{"a": 1}', None, "top-level value is not an array"),
        ('{"products": []}', "items.item", "matched nothing"),
        ('[{"a": 1}, 2]', None, "record 1 (json_path 'item') is a number, expected an object"),
        ('[{"a": 1}, {"a": ', None, "invalid JSON between byte"),
        ('[{"a": 1}] trailing', None, "trailing garbage"),
        ('[{"a": NaN}]', None, "invalid JSON"),
    ],
)
def test_json_errors_say_where(tmp_path: Path, text: str, json_path: str | None, message: str) -> None:
    """Bad JSON input raises ParseError naming the file and the place."""
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(ParseError, match=r"bad\.json") as info:
        read(p, "json", json_path=json_path)
    assert message in str(info.value)


def test_json_empty_array_at_path_is_fine(tmp_path: Path) -> None:
    """An empty array where the records should be gives zero records, not an error."""
    p = tmp_path / "a.json"
    p.write_text('{"products": []}')
    assert read(p, "json", json_path="products.item") == []
    p.write_text("[]")
    assert read(p, "json") == []


def test_jsonl_exact_and_blank_lines(tmp_path: Path) -> None:
    """JSON Lines: blank lines skipped, exact decimals and big integers on either parser path."""
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"a": 1}\n\n  \n{"p": 19.99, "s": "v1.2"}\n{"big": 99999999999999999999999}\n{"e": 1E5}\n')
    assert read(p, "jsonl") == [
        {"a": 1},
        {"p": Decimal("19.99"), "s": "v1.2"},
        {"big": 99999999999999999999999},
        {"e": Decimal("1E+5")},
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1}\n{"a": \n{"a": 3}\n', "line 2 (record 1): invalid JSON"),
        ('{"a": 1}\n\n[1]\n', "line 3 (record 1) is an array"),
        ('{"a": NaN}\n', "line 1 (record 0): invalid JSON"),
    ],
)
def test_jsonl_bad_line_named(tmp_path: Path, text: str, message: str) -> None:
    """A bad line is an error naming its line number."""
    p = tmp_path / "bad.jsonl"
    p.write_text(text)
    with pytest.raises(ParseError) as info:
        read(p, "jsonl")
    assert message in str(info.value)


def _xlsx(path: Path, rows: list[list[Any]], title: str = "Products", extra: str | None = None) -> Path:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = title
    for row in rows:
        ws.append(row)
    if extra:
        wb.create_sheet(extra).append(["x"])
    wb.save(path)
    return path


def test_excel_header_types_and_empty_rows(tmp_path: Path) -> None:
    """First row is the header; dates become ISO 8601; fully empty rows are skipped."""
    p = _xlsx(
        tmp_path / "a.xlsx",
        [
            ["sku", "price", "since", "at", "active", "note"],
            ["A-1", 9.5, dt.date(2024, 2, 29), dt.datetime(2024, 1, 2, 3, 4, 5), True, None],
            [None, None, None, None, None, None],
            ["A-2", 12, dt.date(2025, 1, 1), dt.datetime(2025, 6, 7, 8, 9, 10), False, "ok"],
        ],
    )
    recs = read(p, "excel")
    assert recs == [
        {
            "sku": "A-1",
            "price": 9.5,
            "since": "2024-02-29T00:00:00",
            "at": "2024-01-02T03:04:05",
            "active": True,
            "note": None,
        },
        {
            "sku": "A-2",
            "price": 12,
            "since": "2025-01-01T00:00:00",
            "at": "2025-06-07T08:09:10",
            "active": False,
            "note": "ok",
        },
    ]


def test_excel_sheet_selection(tmp_path: Path) -> None:
    """`sheet` selects a sheet by name; a missing one names the sheets there are."""
    p = _xlsx(tmp_path / "a.xlsx", [["a"], [1]], extra="Other")
    assert read(p, "excel", sheet="Other") == []
    with pytest.raises(ParseError, match=r"no sheet named 'Nope' \(sheets: Products, Other\)"):
        read(p, "excel", sheet="Nope")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["a", None, "c"], [1, 2, 3]], "header row 1 column B: empty header name"),
        ([["a", "b", "a"], [1, 2, 3]], "column C: duplicate header 'a' (first in column A)"),
        ([["a"], [1, 2]], "row 2 column B (record 0): value in a column without a header"),
    ],
)
def test_excel_errors_name_the_cell(tmp_path: Path, rows: list[list[Any]], message: str) -> None:
    """Header and cell errors name the sheet, row and column."""
    p = _xlsx(tmp_path / "bad.xlsx", rows)
    with pytest.raises(ParseError) as info:
        read(p, "excel")
    assert message in str(info.value) and "sheet 'Products'" in str(info.value)


def test_excel_not_a_workbook(tmp_path: Path) -> None:
    """A file that is not a workbook is a clear error."""
    p = tmp_path / "bad.xlsx"
    p.write_bytes(b"not a zip at all")
    with pytest.raises(ParseError, match="not a readable Excel workbook"):
        read(p, "excel")


def test_format_from_extension_or_given(tmp_path: Path) -> None:
    """Format comes from the extension unless given; unknown ones are refused."""
    assert detect_format(Path("x.NDJSON")) == "jsonl"
    assert detect_format(Path("x.xlsm")) == "excel"
    assert detect_format(Path("x.txt"), "json") == "json"
    with pytest.raises(UnsupportedFormat):
        detect_format(Path("x.csv"))
    with pytest.raises(UnsupportedFormat):
        detect_format(Path("x.json"), "xml")


def test_excel_non_finite_number_refused(tmp_path: Path) -> None:
    """A cell whose number overflows to infinity (hand-written sheet XML) is refused, not sent as null."""
    import zipfile

    good = _xlsx(tmp_path / "good.xlsx", [["a"], [1.5]])
    bad = tmp_path / "bad.xlsx"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                assert b"<v>1.5</v>" in data
                data = data.replace(b"<v>1.5</v>", b"<v>1E999</v>")  # parses to inf
            zout.writestr(item, data)
    with pytest.raises(ParseError, match=r"row 2 column A \(record 0\): inf is not a JSON number"):
        read(bad, "excel")


def test_ijson_c_backend_in_use() -> None:
    """The yajl2_c backend is the one ijson uses (the pure-Python ones are several times slower)."""
    import ijson

    assert ijson.backend == "yajl2_c"
