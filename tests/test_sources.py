"""Streaming readers: exact values, selectors, and errors that say where."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import zipfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook

from pimingestd.errors import ParseError, UnsupportedFormat
from pimingestd.protocol import canonical
from pimingestd.sources import SourceSpec, detect_format, read_records, read_stream
from pimingestd.sources.json_guard import JsonGuard


def read(path: Path, fmt: str, **kw: Any) -> list[dict[str, Any]]:
    return list(read_records(path, spec(fmt, **kw)))


def spec(fmt: str, max_record_bytes: int | None = None, **options: Any) -> SourceSpec:
    """A SourceSpec with the format's options given as keywords (json_path=, sheet=, unknown_cells=)."""
    if max_record_bytes is None:
        return SourceSpec(fmt, options)
    return SourceSpec(fmt, options, max_record_bytes)


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
    # (compared as canonical bytes: the lines the fast path takes come as orjson fragments of those bytes)
    assert [canonical.encode(r) for r in read(p, "jsonl")] == [
        canonical.encode(r)
        for r in (
            {"a": 1},
            {"p": Decimal("19.99"), "s": "v1.2"},
            {"big": 99999999999999999999999},
            {"e": Decimal("1E+5")},
        )
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
    assert detect_format(Path("x.TSV")) == "csv"
    with pytest.raises(UnsupportedFormat):
        detect_format(Path("x.parquet"))
    with pytest.raises(UnsupportedFormat):
        detect_format(Path("x.json"), "parquet")


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


# ---- JSON: silent alterations found by differential testing (issue 19) ------------------------------


def _canonical(path: Path, fmt: str = "json", **kw: Any) -> list[bytes]:
    return [canonical.encode(r) for r in read_records(path, spec(fmt, **kw))]


@pytest.mark.parametrize(
    ("fmt", "text", "expected"),
    [
        ("json", b'[{"a":0.5,"a":1},{"s":"\\u007f7\\u007f"}]', [b'{"a":1}', b'{"s":"\x7f7\x7f"}']),
        ("json", b'[{"a":0.5,"a":1,"s":"\\u007fx\\u007f"}]', [b'{"a":1,"s":"\x7fx\x7f"}']),
        ("json", b'[{"a":0.5,"a":1},{"s":"\x7f7\x7f"}]', [b'{"a":1}', b'{"s":"\x7f7\x7f"}']),
        ("jsonl", b'{"a":0.5,"a":1}\n{"s":"\\u007ftrue\\u007f"}\n', [b'{"a":1}', b'{"s":"\x7ftrue\x7f"}']),
    ],
)
def test_a_dropped_duplicate_never_unquotes_a_string(
    tmp_path: Path, fmt: str, text: bytes, expected: list[bytes]
) -> None:
    """A duplicate key drops a marked decimal; a DEL-wrapped string elsewhere keeps its quotes."""
    path = tmp_path / f"d.{fmt}"
    path.write_bytes(text)
    assert _canonical(path, fmt) == expected


@pytest.mark.parametrize(
    ("text", "json_path", "outcome"),
    [
        (b'{"p":[{"a":1}],"p":[{"b":2}]}', "p.item", "occurs twice in one object"),
        (b'{"p":{"item":{"a":1}}}', "p.item", "matched nothing"),
        (b'{"item":{"a":1}}', None, "the top-level value is not an array"),
        (b'{"a.b":[{"x":1}]}', "a.b.item", "matched nothing"),
        (b'{"a.b":[{"x":1}],"a":{"b":[{"y":2}]}}', "a.b.item", [b'{"y":2}']),
        (b'{"a.b":[{"x":1}],"a":{"b":[{"y":2}]}}', '"a.b".item', [b'{"x":1}']),
        (b'{"p":{"item":[{"k":1}]}}', 'p."item".item', [b'{"k":1}']),
        (b'{"pages":[{"rows":[{"a":1}]},{"rows":[{"a":2}]}]}', "pages.item.rows.item", [b'{"a":1}', b'{"a":2}']),
        (b'{"p":\x0c[{"a":1}]}', "p.item", "a form feed (0x0C) at byte 5"),
        (b'[{"a":1}\x0b]', None, "a vertical tab (0x0B) at byte 8"),
        (b"[\x0c]", None, "a form feed (0x0C) at byte 1"),
    ],
)
def test_json_path_follows_the_documents_structure(
    tmp_path: Path, text: bytes, json_path: str | None, outcome: str | list[bytes]
) -> None:
    path = tmp_path / "d.json"
    path.write_bytes(text)
    if isinstance(outcome, str):
        with pytest.raises(ParseError, match=re.escape(outcome)):
            _canonical(path, json_path=json_path)
    else:
        assert _canonical(path, json_path=json_path) == outcome


def test_a_json_lines_line_of_form_feeds_is_not_blank(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a":1}\n\x0c\n{"a":2}\n \t\r\n')
    with pytest.raises(ParseError, match=r"line 2 \(record 1\): invalid JSON"):
        _canonical(path, "jsonl")


def test_a_lone_surrogate_is_refused_wherever_the_buffers_split_it() -> None:
    """Fed in two and in three pieces split at every offset, a lone high surrogate is refused, even when
    the next piece holds no escape and a later one starts with a low surrogate; a real pair never is."""
    lone = b'["ab\\ud800cd","xyz","\\udc00"]'
    pair = b'["ab\\ud83d\\ude00cd","\\u00e9"]'
    for doc, bad in ((lone, True), (pair, False)):
        for i in range(len(doc) + 1):
            for j in range(i, len(doc) + 1):
                guard = JsonGuard("t.json", 1 << 20)
                try:
                    for piece in (doc[:i], doc[i:j], doc[j:]):
                        if piece:
                            guard.feed(piece)
                    guard.finish()
                except ParseError as exc:
                    assert bad, (i, j, exc)
                    assert "unpaired surrogate" in str(exc)
                else:
                    assert not bad, f"a lone surrogate passed when split at {i} and {j}"


@pytest.mark.parametrize("shift", range(-12, 13))
def test_a_lone_surrogate_at_a_64k_buffer_end_is_refused(tmp_path: Path, shift: int) -> None:
    """Through the real reader (ijson reads 64 KiB at a time): the escape ends near a buffer's end, the next
    buffer holds none, the one after starts with a low surrogate (once taken for its pair)."""
    head = b'{"p":[{"s":"'
    pad = b"x" * (65536 + shift - len(head) - 6)
    doc = head + pad + b"\\ud800" + b"y" * 65536 + b"\\udc00" + b'"}]}'
    path = tmp_path / "s.json"
    path.write_bytes(doc)
    with pytest.raises(ParseError, match="unpaired surrogate"):
        _canonical(path, json_path="p.item")


@pytest.mark.parametrize("json_path", [None, "p.item"])
def test_a_json_integer_past_pythons_digit_limit_names_the_record(tmp_path: Path, json_path: str | None) -> None:
    """json.loads refuses an integer of more than 4300 digits (int_max_str_digits), and so does the daemon; but
    through ijson the ValueError escaped the reader, and the ingestion failed as an "internal error" without
    saying where. JSON Lines already named the line."""
    number = b"9" * 5000
    doc = b'[{"sku":"A","n":1},{"sku":"B","n":' + number + b"}]"
    path = tmp_path / "big.json"
    path.write_bytes(doc if json_path is None else b'{"p":' + doc + b"}")
    with pytest.raises(ParseError, match=r"big\.json: .* between byte \d+ and \d+ \(after record -?\d+\).*4300 digits"):
        _canonical(path, **({} if json_path is None else {"json_path": json_path}))


# ---- Excel: silent alterations found by differential testing (issue 19) -----------------------------


def _rewrite(src: Path, dest: Path, parts: dict[str, Any], rename: dict[str, str] | None = None) -> Path:
    """A copy of a workbook with parts changed: bytes replace a part, None removes it, a callable maps
    its bytes; ``rename`` moves members."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename in parts:
                edit = parts[item.filename]
                if edit is None:
                    continue
                data = edit(data) if callable(edit) else edit
            zout.writestr((rename or {}).get(item.filename, item.filename), data)
    return dest


SHEET = "xl/worksheets/sheet1.xml"
STRINGS = "xl/sharedStrings.xml"
_MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"


def shared_strings(src: Path, dest: Path) -> Path:
    """openpyxl writes inline strings; Excel writes a shared strings table. Turn the one into the other."""
    table: list[bytes] = []

    def sheet(xml: bytes) -> bytes:
        def to_shared(m: re.Match[bytes]) -> bytes:
            table.append(m.group(2))
            return m.group(1) + b' t="s"><v>' + str(len(table) - 1).encode() + b"</v></c>"

        return re.sub(
            rb'(<c r="[A-Z]+\d+"(?: s="\d+")?) t="inlineStr"><is>(<t[^>]*>.*?</t>|<t ?/>)</is></c>', to_shared, xml
        )

    with zipfile.ZipFile(src) as zin:
        converted = sheet(zin.read("xl/worksheets/sheet1.xml"))
    sst = (
        f'<sst xmlns="{_MAIN_NS}" count="{len(table)}" uniqueCount="{len(table)}">'.encode()
        + b"".join(b"<si>" + s + b"</si>" for s in table)
        + b"</sst>"
    )
    rel = (
        b'<Relationship Id="rIdSS" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
        b'sharedStrings" Target="sharedStrings.xml"/></Relationships>'
    )
    override = (
        b'<Override PartName="/xl/sharedStrings.xml" ContentType="application/'
        b'vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>'
    )
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = converted
            elif item.filename == "xl/_rels/workbook.xml.rels":
                data = data.replace(b"</Relationships>", rel)
            elif item.filename == "[Content_Types].xml":
                data = data.replace(b"</Types>", override)
            zout.writestr(item, data)
        zout.writestr("xl/sharedStrings.xml", sst)
    return dest


def test_excel_escapes_are_decoded_in_shared_and_inline_strings_and_headers(tmp_path: Path) -> None:
    """_xHHHH_ is a character (ECMA-376 22.9.2.19); _x005F_ escapes the underscore of a literal one."""
    src = _xlsx(
        tmp_path / "a.xlsx", [["Name_x0001_", "b"], ["ABC_x000D_DEF", "keep _x005F_x000D_ literal"], ["INLINE", 1]]
    )
    src = shared_strings(src, tmp_path / "s.xlsx")

    def inline(xml: bytes) -> bytes:  # the third row's first cell as an inline string with an escape
        return re.sub(
            rb'<c r="A3" t="s"><v>\d+</v></c>', b'<c r="A3" t="inlineStr"><is><t>in_x0009_line</t></is></c>', xml
        )

    path = _rewrite(src, tmp_path / "b.xlsx", {SHEET: inline})
    assert read(path, "excel") == [
        {"Name\x01": "ABC\rDEF", "b": "keep _x000D_ literal"},
        {"Name\x01": "in\tline", "b": 1},
    ]


def test_excel_date_serial_out_of_range_is_refused(tmp_path: Path) -> None:
    src = _xlsx(tmp_path / "a.xlsx", [["when"], [dt.datetime(2021, 1, 1)]])
    path = _rewrite(
        src, tmp_path / "b.xlsx", {SHEET: lambda x: re.sub(rb'(<c r="A2"[^>]*><v>)[^<]+', rb"\g<1>99999999", x)}
    )
    with pytest.raises(ParseError, match=r"row 2 column A \(record 0\): formatted as a date, but its serial"):
        read(path, "excel")


def test_excel_error_cells_are_refused_unless_asked_for_null(tmp_path: Path) -> None:
    path = _xlsx(tmp_path / "a.xlsx", [["a", "b"], [1, "#N/A"]])
    assert b't="e"' in zipfile.ZipFile(path).read("xl/worksheets/sheet1.xml")  # a real error cell, not text
    with pytest.raises(ParseError, match=r"row 2 column B \(record 0\) holds the error value #N/A"):
        read(path, "excel")
    assert read(path, "excel", unknown_cells="null") == [{"a": 1, "b": None}]


def test_excel_parts_are_found_by_their_relationships(tmp_path: Path) -> None:
    """Styles and shared strings stored at other paths are still the ones used (dates stay dates)."""
    src = shared_strings(
        _xlsx(tmp_path / "a.xlsx", [["when", "name"], [dt.datetime(2021, 5, 6, 7, 8, 9), "x"]]), tmp_path / "s.xlsx"
    )

    def rels(xml: bytes) -> bytes:
        return (
            xml.replace(b'Target="styles.xml"', b'Target="custom/st.xml"')
            .replace(b'Target="sharedStrings.xml"', b'Target="/strings/ss.xml"')
            .replace(b'Target="/xl/styles.xml"', b'Target="custom/st.xml"')
            .replace(b'Target="/xl/sharedStrings.xml"', b'Target="/strings/ss.xml"')
        )

    def types(xml: bytes) -> bytes:
        return xml.replace(b"/xl/styles.xml", b"/xl/custom/st.xml").replace(
            b"/xl/sharedStrings.xml", b"/strings/ss.xml"
        )

    path = _rewrite(
        src,
        tmp_path / "b.xlsx",
        {"xl/_rels/workbook.xml.rels": rels, "[Content_Types].xml": types},
        rename={"xl/styles.xml": "xl/custom/st.xml", "xl/sharedStrings.xml": "strings/ss.xml"},
    )
    assert "xl/custom/st.xml" in zipfile.ZipFile(path).namelist()
    assert read(path, "excel") == [{"when": "2021-05-06T07:08:09", "name": "x"}]


def test_excel_chartsheets_are_named_and_skipped(tmp_path: Path) -> None:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Data"
    ws.append(["a"])
    ws.append([1])
    wb.create_chartsheet("Chart", 0)
    path = tmp_path / "c.xlsx"
    wb.save(path)
    assert read(path, "excel") == [{"a": 1}]  # the first worksheet, not the first sheet
    with pytest.raises(
        ParseError, match="sheet 'Chart' is a chartsheet, not a worksheet with cells; worksheets: 'Data'"
    ):
        read(path, "excel", sheet="Chart")


def test_excel_damaged_and_strict_workbooks_say_what_is_wrong(tmp_path: Path) -> None:
    src = shared_strings(_xlsx(tmp_path / "a.xlsx", [["a"], ["x"]]), tmp_path / "s.xlsx")
    strict = _rewrite(
        src,
        tmp_path / "strict.xlsx",
        {
            "_rels/.rels": lambda x: x.replace(
                b"http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument",
                b"http://purl.oclc.org/ooxml/officeDocument/relationships/officeDocument",
            )
        },
    )
    with pytest.raises(
        ParseError,
        match=re.escape(
            "Strict Open XML Spreadsheet, which is not supported; open it in Excel and save it as 'Excel Workbook (*.xlsx)'"
        ),
    ):
        read(strict, "excel")
    no_sheet = _rewrite(src, tmp_path / "ns.xlsx", {SHEET: None})
    with pytest.raises(
        ParseError,
        match=re.escape("sheet 'Products' is listed in the workbook but its part xl/worksheets/sheet1.xml is missing"),
    ):
        read(no_sheet, "excel")
    no_strings = _rewrite(src, tmp_path / "nss.xlsx", {STRINGS: None})
    with pytest.raises(
        ParseError, match=re.escape("shared strings part xl/sharedStrings.xml is missing from the file")
    ):
        read(no_strings, "excel")
    backslashes = tmp_path / "bs.xlsx"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(backslashes, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item.filename.replace("/", "\\"), zin.read(item.filename))
    assert read(backslashes, "excel") == [{"a": "x"}]


def test_excel_header_names_convert_like_values_and_keep_whitespace(tmp_path: Path) -> None:
    path = _xlsx(tmp_path / "h.xlsx", [[dt.datetime(2021, 1, 1), True, "City ", 2021, 1.5], [1, 2, 3, 4, 5]])
    [record] = read(path, "excel")
    assert list(record) == ["2021-01-01T00:00:00", "true", "City ", "2021", "1.5"]


def test_checking_format_options_loads_no_openpyxl() -> None:
    """Every format's options are known without importing openpyxl (about 20 MiB in a JSON-only daemon)."""
    import subprocess
    import sys

    code = "import sys, pimingestd.sources as s; s.all_option_names(); print('openpyxl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_column_letters() -> None:
    from openpyxl.utils import get_column_letter

    from pimingestd.sources.excel import column_letter

    assert [column_letter(i) for i in (0, 25, 26, 701, 702)] == ["A", "Z", "AA", "ZZ", "AAA"]
    assert all(column_letter(i) == get_column_letter(i + 1) for i in range(18278))


class _Pieces(io.RawIOBase):
    """A stream that returns at most the next of ``sizes`` bytes per read, as a network stream returns what has
    arrived; not seekable, as a remote stream read once is not."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        super().__init__()
        self._data = io.BytesIO(data)
        self._sizes = sizes
        self._turn = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), self._sizes[self._turn % len(self._sizes)])
        self._turn += 1
        data = self._data.read(size)
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:  # not RawIOBase's: that one loops until it has size bytes
        if size < 0:
            return self._data.read()
        buffer = bytearray(size)
        return bytes(buffer[: self.readinto(memoryview(buffer))])


_RECORDS = [{"sku": f"S{i}", "name": f"Köln {i} 😀"} for i in range(30)]
_SHORT = {
    "json": (b"\xef\xbb\xbf" + json.dumps(_RECORDS).encode(), {}),
    "json ": (json.dumps({"p": _RECORDS}).encode(), {"json_path": "p.item"}),
    "jsonl": (b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in _RECORDS).encode(), {}),
    "csv": (("\ufeffsku;name\r" + "".join(f"{r['sku']};{r['name']}\r\n" for r in _RECORDS)).encode(), {}),
    "csv ": (("sku;name\n" + "".join(f"{r['sku']};{r['name']}\n" for r in _RECORDS)).encode("utf-16"), {"encoding": "utf-16"}),
    "xml": (b"\xef\xbb\xbf" + ("<feed>" + "".join(f"<p><sku>{r['sku']}</sku></p>" for r in _RECORDS) + "</feed>").encode(),
            {"record_path": "feed/p"}),
}  # fmt: skip


@pytest.mark.parametrize("sizes", [[1], [2], [3, 7], [1, 5000]])
@pytest.mark.parametrize("case", list(_SHORT))
def test_short_reads_deliver_what_whole_reads_do(case: str, sizes: list[int]) -> None:
    """A remote stream's read may return fewer bytes than asked for, even one: the same records, a byte order mark
    split between two reads included (JSON Lines took a BOM cut by the first read for data)."""
    data, options = _SHORT[case]
    spec = SourceSpec(case.strip(), options)
    whole = [canonical.encode(r) for r in read_stream(io.BytesIO(data), f"f.{case.strip()}", spec)]
    assert len(whole) == 30
    assert [canonical.encode(r) for r in read_stream(_Pieces(data, sizes), f"f.{case.strip()}", spec)] == whole


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (b"[]", "zero records"),
        (b" \xef\xbb\xbf", "invalid JSON"),
        (b'\xef\xbb\xbf{"a": 1}', "the top-level value is not an array"),
        (b"[1, 2]", "record 0 (json_path 'item') is a number, expected an object"),
        (b'[{"a": 1}, 2]', "record 1 (json_path 'item') is a number, expected an object"),
    ],
)
def test_a_json_stream_read_once_is_never_sought(doc: bytes, expected: str) -> None:
    """A remote object is a stream read once (through a BufferedReader, as the spool pass reads it). The fast path
    sought back to the start when it declined the first window, which failed on it ("File or stream is not
    seekable") for an empty array, a top-level object, or items that are not objects."""
    stream = io.BufferedReader(_Pieces(doc, [1 << 20]), 1 << 16)
    if expected == "zero records":
        assert list(read_stream(stream, "r.json", SourceSpec("json"))) == []
        return
    with pytest.raises(ParseError, match=re.escape(f"r.json: {expected}") if "invalid" not in expected else expected):
        list(read_stream(stream, "r.json", SourceSpec("json")))
