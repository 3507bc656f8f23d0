"""CSV: what csv.DictReader gives for the same dialect, exactly; the encodings; errors that name the line."""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pimingestd.errors import ConfigError, ParseError
from pimingestd.sources import SourceSpec, format_options, read_records

FIELD = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
) | st.sampled_from(['a"b', "x,y", "x;y", "a\tb", "a|b", "line\nbreak", "cr\r\nlf", " padded ", '""', "é😀", ""])


def _read(path: Path, **options: Any) -> list[dict[str, Any]]:
    return list(read_records(path, SourceSpec("csv", options)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    st.sampled_from([",", ";", "\t", "|"]),
    st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
    st.lists(FIELD.filter(bool), min_size=1, max_size=5, unique=True),
    st.data(),
)
def test_records_are_what_dictreader_reads(
    tmp_path_factory: Any, delimiter: str, quoting: int, header: list[str], data: Any
) -> None:
    """Written by csv.writer in a random dialect (delimiters, quotes and line breaks inside fields), read back:
    the same rows as csv.DictReader with that dialect."""
    rows = data.draw(st.lists(st.lists(FIELD, min_size=len(header), max_size=len(header)), max_size=15))
    # Line ends: LF, CRLF, CR alone (Excel for Mac's "CSV (Macintosh)"), or CR and CRLF mixed row by row.
    ends = data.draw(st.sampled_from([["\n"], ["\r\n"], ["\r"], ["\r", "\r\n"]]))
    terminators = [data.draw(st.sampled_from(ends)) for _ in range(len(rows) + 1)]
    # csv.writer quotes only the characters of its line terminator: with "\n" and minimal quoting it writes a
    # lone CR unquoted, and the file no longer holds these rows (DictReader reads {None: [...]} back).
    assume(
        quoting != csv.QUOTE_MINIMAL
        or all(
            not (set("\r\n") - set(end)) & set("".join(row))
            for row, end in zip([header, *rows], terminators, strict=True)
        )
    )
    buf = io.StringIO(newline="")
    for row, end in zip([header, *rows], terminators, strict=True):
        csv.writer(buf, delimiter=delimiter, quoting=quoting, lineterminator=end).writerow(row)
    text = buf.getvalue()
    path = tmp_path_factory.mktemp("c") / "d.csv"
    path.write_bytes(text.encode("utf-8"))
    expected = list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))
    assert _read(path, delimiter=delimiter) == expected
    # "auto": the candidate that occurs most in the header line outside quotes, a comma on a tie or none.
    first_line = text.replace("\r", "\n").split("\n", 1)[0]
    outside = "".join(first_line.split('"')[0::2])
    counts = {d: outside.count(d) for d in (",", ";", "\t", "|")}
    chosen = max(counts, key=lambda d: counts[d]) if max(counts.values()) else ","
    if counts[delimiter] > max(n for d, n in counts.items() if d != delimiter):
        assert chosen == delimiter  # an unambiguous header line is always read right
    as_chosen = list(csv.DictReader(io.StringIO(text, newline=""), delimiter=chosen))
    try:
        got = _read(path)
    except ParseError:
        # Refused only where the chosen delimiter makes rows ragged (DictReader pads or collects extras
        # under None) or the quoting malformed (DictReader's default, non-strict, would alter the field).
        ragged = any(None in r or None in r.values() for r in as_chosen)
        try:
            list(csv.reader(io.StringIO(text, newline=""), delimiter=chosen, strict=True))
            malformed = False
        except csv.Error:
            malformed = True
        assert ragged or malformed
    else:
        assert got == as_chosen


@pytest.mark.parametrize(
    ("encoding", "data"),
    [
        ("utf-8", "\ufeffname;city\nA;Köln\n".encode()),  # the BOM is stripped
        ("utf-8-sig", "\ufeffname;city\nA;Köln\n".encode()),
        ("utf-16", "name;city\nA;Köln\n".encode("utf-16")),  # the BOM tells the byte order
        ("cp1252", "name;city\nA;Köln\n".encode("cp1252")),
        ("latin-1", "name;city\nA;Köln\n".encode("latin-1")),
    ],
)
def test_encodings(tmp_path: Path, encoding: str, data: bytes) -> None:
    path = tmp_path / "e.csv"
    path.write_bytes(data)
    assert _read(path, encoding=encoding) == [{"name": "A", "city": "Köln"}]


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_bom_is_refused_asking_for_the_byte_order(tmp_path: Path, codec: str) -> None:
    """Python's utf-16 codec takes a file without a BOM for little-endian, so a big-endian one was read as
    garbage (U+6E00 for "n"). Without a BOM the byte order is asked for; named, it reads either way, a BOM of the
    same order is stripped and one of the other order refused."""
    path = tmp_path / "u.csv"
    text = "name;city\nA;Köln\n"
    path.write_bytes(text.encode(codec))
    with pytest.raises(ParseError, match=r"u\.csv: no byte order mark.*encoding = \"utf-16-le\" or \"utf-16-be\""):
        _read(path, encoding="utf-16")
    assert _read(path, encoding=codec) == [{"name": "A", "city": "Köln"}]
    path.write_bytes(("\ufeff" + text).encode(codec))
    assert _read(path, encoding=codec) == [{"name": "A", "city": "Köln"}]
    assert _read(path, encoding="utf-16") == [{"name": "A", "city": "Köln"}]
    other = "utf-16-be" if codec == "utf-16-le" else "utf-16-le"
    with pytest.raises(
        ParseError, match=rf"u\.csv: the byte order mark says {'big' if other == 'utf-16-le' else 'little'}"
    ):
        _read(path, encoding=other)


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
@pytest.mark.parametrize(
    ("bom", "codec"), [(b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")]
)
def test_a_byte_order_mark_under_a_single_byte_encoding_is_refused(
    tmp_path: Path, encoding: str, bom: bytes, codec: str
) -> None:
    """cp1252 and Latin-1 decode any byte: a UTF-8 BOM became "ï»¿" in the first header name, silently."""
    path = tmp_path / "b.csv"
    path.write_bytes(bom + "sku;city\nA;Köln\n".encode(codec))
    with pytest.raises(
        ParseError,
        match=rf"b\.csv: the file starts with a UTF-(8|16).* byte order mark, but the encoding is {encoding}",
    ):
        _read(path, encoding=encoding)


@pytest.mark.parametrize(
    "text", ["2021-W52-1", "2021W521", "2021-W52", "2021-365", "2021-12-3\u0661", "\uff12021-12-31", "+2021-12-31"]
)
def test_a_date_is_only_yyyy_mm_dd(tmp_path: Path, text: str) -> None:
    """The README's types.date is an ISO date YYYY-MM-DD; date.fromisoformat also takes week dates, ordinal
    dates and other digits (2021-W52-1 became 2021-12-27)."""
    path = tmp_path / "d.csv"
    path.write_text(f"sku,released\nA,{text}\nB,2021-12-31\n", encoding="utf-8")
    with pytest.raises(ParseError, match=rf"line 2 column 'released': '{re.escape(text)}' is not an ISO date"):
        _read(path, types={"released": "date"})


def test_an_invalid_byte_names_line_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    data = b"name,city\nA,Bonn\nB,K" + b"\xf6" + b"ln\n"  # Latin-1 in a UTF-8 file
    path.write_bytes(data)
    at = data.index(0xF6)
    with pytest.raises(ParseError, match=rf"line 3: byte {at}: not valid utf-8"):
        _read(path)


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        ("a,,c\n1,2,3\n", {}, "line 1 column 2: empty header name"),
        ("a,b,a\n1,2,3\n", {}, "line 1 column 3: duplicate header 'a' (first in column 1)"),
        ("a,b\n1,2\n1,2,3\n", {}, "line 3 (record 1): 3 fields, the header has 2"),
        ("a,b\n1\n", {}, 'line 2 (record 0): 1 fields, the header has 2; set short_rows = "pad"'),
        ("a,b\n1,x\n", {"types": {"b": "int"}}, "line 2 column 'b': 'x' is not a whole number"),
        ("a,b\n1,1,5\n", {"delimiter": ",", "types": {"b": "decimal"}}, "3 fields"),
        ("a,b\n1,1.5.0\n", {"types": {"b": "decimal"}}, "line 2 column 'b': '1.5.0' is not a decimal number"),
        ("a,b\n1,NaN\n", {"types": {"b": "decimal"}}, "'NaN' is not a decimal number"),
        ("a,b\n1,maybe\n", {"types": {"b": "bool"}}, "'maybe' is not true, false, 1 or 0"),
        ("a,b\n1,20211231\n", {"types": {"b": "date"}}, "'20211231' is not an ISO date"),
        ("a,b\n1,2\n", {"types": {"c": "int"}}, "types names column(s) 'c', which the header lacks"),
        ('a,b\n1,"unclosed\n', {}, "line 2: unexpected end of data"),
    ],
)
def test_errors_name_the_line(tmp_path: Path, text: str, options: dict[str, Any], message: str) -> None:
    path = tmp_path / "e.csv"
    path.write_text(text, newline="")
    with pytest.raises(ParseError) as info:
        _read(path, **options)
    assert message in str(info.value) and "e.csv" in str(info.value)


@pytest.mark.parametrize("end", ["\r", "\r\n", "\n"])
def test_line_ends_across_read_blocks_keep_lines_and_their_numbers(tmp_path: Path, end: str) -> None:
    """A line end at every offset around the 64 KiB read boundary (a CRLF split between two blocks is one line
    end, not two); a quoted field holding CR, LF and CRLF; the line an error names counts CR-only line ends."""
    for shift in range(-3, 3):
        head = "sku,text" + end
        filler = "x" * ((1 << 16) - len(head) - 2 + shift)
        text = head + f"A,{filler}" + end + 'B,"in\rside\nand\r\nend"' + end + "C,c" + end * 3 + "D,d,extra" + end
        path = tmp_path / "b.csv"
        path.write_bytes(text.encode())
        expected = list(csv.DictReader(io.StringIO(text[: text.index("D,d")], newline="")))
        assert [r["sku"] for r in expected] == ["A", "B", "C"] and expected[1]["text"] == "in\rside\nand\r\nend"
        reader = csv.reader(io.StringIO(text, newline=""))
        line = next(reader.line_num for row in reader if row[:1] == ["D"])  # 10: a CR inside quotes counts too
        with pytest.raises(ParseError, match=rf"b\.csv: line {line} \(record 3\): 3 fields"):
            _read(path)
        path.write_bytes(text[: text.index("D,d")].encode())
        assert _read(path) == expected, shift


def test_types_short_rows_and_empty_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("sku|price|stock|active|released\nA|19.90|3|true|2021-12-31\n\nB||0|0|\nC|1e3\n", newline="")
    types = {"price": "decimal", "stock": "int", "active": "bool", "released": "date"}
    assert _read(path, types=types, short_rows="pad") == [
        {"sku": "A", "price": Decimal("19.90"), "stock": 3, "active": True, "released": "2021-12-31"},
        {"sku": "B", "price": None, "stock": 0, "active": False, "released": None},
        {"sku": "C", "price": Decimal("1e3"), "stock": None, "active": None, "released": None},
    ]


def test_options_are_checked(tmp_path: Path) -> None:
    for bad, message in (
        ({"delimiter": "ab"}, "one character"),
        ({"encoding": "ebcdic"}, "encoding must be one of"),
        ({"short_rows": "drop"}, "short_rows must be fail or pad"),
        ({"types": {"a": "float"}}, "types.a must be one of"),
        ({"sheet": "x"}, "not an option of format csv"),
    ):
        with pytest.raises(ConfigError, match=message):
            format_options("csv", bad)


async def test_a_csv_file_through_the_daemon(make_daemon: Any, receiver: Any, data_dir: Path, tmp_path: Path) -> None:
    """By path with typed columns, and by upload with a delimiter in the query: exact values at the receiver."""
    import json

    import aiohttp

    from .test_inbox import inbox_config

    src = data_dir / "prices.csv"
    src.write_text("sku;price;active\nA-1;19.90;true\nA-2;0.250;false\n", newline="")
    d = await make_daemon(inbox=inbox_config(tmp_path, watch="off"))
    code, body = await d.ingest(path=str(src), types={"price": "decimal", "active": "bool"})
    assert code == 202, body
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["format"] == "csv", st
    applied = [a["record"] for a in await receiver.records(body["ingestion_id"])]
    assert applied == ['{"active":true,"price":19.90,"sku":"A-1"}', '{"active":false,"price":0.250,"sku":"A-2"}']
    data = "name|city\nX|Köln\n".encode("cp1252")
    async with (
        aiohttp.ClientSession() as s,
        s.put(d.url + "/api/files/cities.tsv?delimiter=|&encoding=cp1252", data=data) as r,
    ):
        answer = await r.json()
        assert r.status == 202, answer
    st = await d.wait(answer["ingestion_id"])
    assert st["status"] == "completed", st
    assert [json.loads(a["record"]) for a in await receiver.records(answer["ingestion_id"])] == [
        {"name": "X", "city": "Köln"}
    ]


def test_a_line_over_the_record_limit_is_named(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text("a\nshort\nalso short\n" + "x" * 5000 + "\nafter\n", newline="")
    with pytest.raises(ParseError, match=r"long\.csv: line 4 is longer than 4096 characters"):
        list(read_records(path, SourceSpec("csv", {}, 4096)))


def test_a_whole_number_past_pythons_digit_limit_is_refused_naming_the_cell(tmp_path: Path) -> None:
    """int() refuses more than 4300 digits (CPython 3.11's int_max_str_digits); that ValueError escaped the
    reader and failed the ingestion as an internal error instead of naming the cell."""
    path = tmp_path / "n.csv"
    path.write_text("sku,stock\nA,1\nB," + "9" * 5000 + "\n", newline="")
    message = r"n\.csv: line 3 column 'stock': a whole number of 5000 digits, more than Python converts \(4300\)"
    with pytest.raises(ParseError, match=message):
        _read(path, types={"stock": "int"})


@pytest.mark.parametrize(
    ("data", "encoding", "line"),
    [
        ("sku\nA\nB\n".encode("utf-16-le"), "utf-8", 1),  # UTF-16 without a BOM, read as UTF-8: "s\0k\0u\0"
        ("sku\nA\n".encode("utf-16-be"), "latin-1", 1),
        (b"\xff\xfe\x00\x00" + "sku\nA\n".encode("utf-32-le"), "utf-16", 1),  # a UTF-32 BOM starts as UTF-16's
        (b"\xff\xfe\x00\x00" + "sku\nA\n".encode("utf-32-le"), "utf-16-le", 1),
        (b"sku,name\r\nA,x\x00y\r\n", "utf-8", 2),
        (b"sku,name\rA,a\rB,x\x00y\r", "cp1252", 3),
    ],
    ids=["utf16le-as-utf8", "utf16be-as-latin1", "utf32-as-utf16", "utf32-as-utf16le", "utf8-crlf", "cp1252-cr"],
)
def test_a_nul_character_is_refused_naming_the_line_and_the_likely_encoding(
    tmp_path: Path, data: bytes, encoding: str, line: int
) -> None:
    """No CSV text holds a NUL, but csv.reader takes it since Python 3.11: a UTF-16 file without a byte order
    mark, read with the default encoding, was delivered as "s\\0k\\0u\\0" without a word (the same silent garble
    as issue 27 item 23's big-endian file, under another encoding option), and a UTF-32 file under utf-16 too."""
    path = tmp_path / "z.csv"
    path.write_bytes(data)
    with pytest.raises(ParseError, match=rf"z\.csv: line {line}: a NUL character, .*UTF-16 or UTF-32"):
        _read(path, encoding=encoding)


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        ("sku,name\r\nA,Köln\r\n".encode("cp1252"), "utf-16-le"),
        ("sku,name\r\nA,Köln\r\n".encode("cp1252"), "utf-16-be"),
        ("sku,name\r\nA,Köln\r\n".encode("utf-16-le"), "utf-16-be"),  # no BOM: nothing else says the order
        ("sku,name\r\nA,Köln\r\n".encode("utf-16-be"), "utf-16-le"),
        (b"\xef\xbb\xbf" + "sku,name\nA,Köln\n".encode(), "utf-16-le"),
    ],
    ids=["cp1252-as-le", "cp1252-as-be", "le-as-be", "be-as-le", "utf8-bom-as-le"],
)
def test_text_that_is_not_the_named_utf16_is_refused_not_read_as_no_records(
    tmp_path: Path, data: bytes, encoding: str
) -> None:
    """8-bit text, or UTF-16 of the other byte order, read as the UTF-16 named: every pair of bytes became one
    character above U+00FF, no line end was left, and the file was a header line of noise with no record, an
    ingestion that completed sending nothing (issue 27 item 23's garble, under the byte order named outright)."""
    path = tmp_path / "w.csv"
    path.write_bytes(data)
    with pytest.raises(ParseError, match=rf"w\.csv: line 1 holds no delimiter and no line end when read as {encoding}"):
        _read(path, encoding=encoding)
    path.write_bytes("sku,name\r\nA,Köln\r\n".encode(encoding))  # the control: the same text in that encoding
    assert _read(path, encoding=encoding) == [{"sku": "A", "name": "Köln"}]
