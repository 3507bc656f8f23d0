"""Bad input, generated here: each case is refused with a clear error before any chunk is sent, or (where
documented) accepted exactly; the real daemon keeps serving and its peak memory stays bounded."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard
from openpyxl import Workbook

from .conftest import MakeCluster
from .helpers import product, report

GOOD = json.dumps([product(i) for i in range(20)]).encode()


@dataclass
class Case:
    name: str
    file: str
    make: Callable[[Path], None]
    expect: str  # a fragment the error must contain; "" for a case that must complete
    check: Callable[[list[str]], bool] | None = None  # for completing cases: the applied canonical records
    body: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.file.endswith(".xml") and self.body is None:
            self.body = ITEMS


ITEMS = {"record_path": "a/b"}
KOELN = {"#text": "Köln"}
LAUGHS = (
    b'<!DOCTYPE a [<!ENTITY l "lol"><!ENTITY l2 "&l;&l;&l;&l;&l;&l;&l;&l;&l;&l;">'
    + b"".join(b'<!ENTITY l%d "%s">' % (n, b"".join(b"&l%d;" % (n - 1) for _ in range(10))) for n in range(3, 10))
    + b"]><a><b>&l9;</b></a>"
)


def huge_attribute(p: Path) -> None:
    with open(p, "wb") as f:
        f.write(b'<a><b c="')
        block = b"y" * (1 << 20)
        for _ in range(200):
            f.write(block)
        f.write(b'"/></a>')


def raw(data: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(data)


def big_string(p: Path) -> None:
    with open(p, "wb") as f:
        f.write(b'[{"sku": "A", "blob": "')
        block = b"x" * (1 << 20)
        for _ in range(200):
            f.write(block)
        f.write(b'"}]')


def workbook(rows: list[list[Any]], tweak: Callable[[Any], None] | None = None) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        wb = Workbook()
        ws = wb.active
        assert ws is not None
        ws.title = "Products"
        for row in rows:
            ws.append(row)
        if tweak:
            tweak(ws)
        wb.save(p)

    return make


def gzip_bomb(p: Path) -> None:
    """80 MiB of blank lines in about 80 kB."""
    with gzip.open(p, "wb", compresslevel=9) as out:
        for _ in range(80):
            out.write(b"\n" * (1 << 20))


def truncated_zstd(p: Path) -> None:
    data = zstandard.ZstdCompressor().compress(b"".join(json.dumps(product(i)).encode() + b"\n" for i in range(2000)))
    p.write_bytes(data[: len(data) // 2])


def truncated_xlsx(p: Path) -> None:
    buf = io.BytesIO()
    workbook([["a"], [1]])(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    del buf


def zip_not_workbook(p: Path) -> None:
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("hello.txt", "not a workbook")


def bomb(p: Path) -> None:
    """A valid workbook whose sheet XML inflates to 200 MiB of whitespace (about 0.2 MiB on disk)."""
    tmp = p.with_suffix(".src.xlsx")
    workbook([["a"], [1]])(tmp)
    with zipfile.ZipFile(tmp) as zin, zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                head, tail = data.split(b"<sheetData>")
                with zout.open(item.filename, "w") as out:
                    out.write(head + b"<sheetData>")
                    block = b" " * (1 << 20)
                    for _ in range(200):
                        out.write(block)
                    out.write(tail)
            else:
                zout.writestr(item, data)
    tmp.unlink()


def merged(ws: Any) -> None:
    ws.merge_cells("A2:B2")


def formulas(ws: Any) -> None:
    ws["C2"] = "=A2+B2"  # openpyxl writes no cached value


def only_formulas(ws: Any) -> None:
    ws["A3"] = "=A2*2"  # a row of nothing but formulas without values
    ws["B3"] = "=B2*2"


CASES = [
    Case("empty file", "empty.json", raw(b""), "invalid JSON"),
    Case("whitespace only", "ws.json", raw(b"  \n\t "), "invalid JSON"),
    Case("empty array", "empty-array.json", raw(b"[]"), "", lambda r: r == []),
    *[
        Case(f"truncated at {n}", f"trunc{n}.json", raw(GOOD[:n]), "invalid JSON between byte")
        for n in (1, 2, 10, 57, 100, 333, 600, 999, len(GOOD) // 2, len(GOOD) - 2, len(GOOD) - 1)
    ],
    Case("trailing garbage", "trail.json", raw(GOOD + b" x"), "trailing garbage"),
    Case("invalid UTF-8", "utf8.json", raw(b'[{"a": "\xff\xfe"}]'), "invalid bytes in UTF8"),
    Case(
        "form feed between tokens (JSONTestSuite n_structure_whitespace_formfeed)",
        "ff.json",
        raw(b"[\x0c]"),
        "a form feed (0x0C) at byte 1",
    ),
    Case("vertical tab between tokens", "vt.json", raw(b'[{"a":1}\x0b]'), "a vertical tab (0x0B) at byte 8"),
    Case("lone surrogate", "sur.json", raw(b'[{"a": "x\\ud800y"}]'), "unpaired surrogate escape \\ud800"),
    Case("lone low surrogate", "sur2.json", raw(b'[{"a": "\\udc00"}]'), "unpaired surrogate escape \\udc00"),
    Case(
        "UTF-8 BOM",
        "bom.json",
        raw(b"\xef\xbb\xbf" + GOOD),
        "",
        lambda r: [json.loads(x) for x in r] == [product(i) for i in range(20)],
    ),
    Case("NaN", "nan.json", raw(b'[{"a": NaN}]'), "invalid JSON"),
    Case("Infinity", "inf.json", raw(b'[{"a": -Infinity}]'), "invalid JSON"),
    Case("duplicate keys (last wins)", "dup.json", raw(b'[{"a": 1, "a": 2}]'), "", lambda r: r == ['{"a":2}']),
    Case(
        "nesting 100,000 deep",
        "deep.json",
        raw(b"[" + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"]"),
        "nested deeper than 256 levels",
    ),
    Case("a 200 MB string", "big.json", big_string, "a string longer than 16777216 bytes"),
    Case("top-level object", "obj.json", raw(b'{"a": [1]}'), "top-level value is not an array"),
    Case(
        "json_path matches nothing",
        "path.json",
        raw(b'{"products": [{"a": 1}]}'),
        "matched nothing",
        body={"json_path": "items.item"},
    ),
    Case(
        "JSON Lines bad line in the middle",
        "bad.jsonl",
        raw(b"\n".join(json.dumps(product(i)).encode() for i in range(50)) + b"\n{oops}\n" + b'{"a": 1}\n'),
        "line 51 (record 50): invalid JSON",
    ),
    Case(
        "numbers 1e400, -0, 30 digits",
        "num.json",
        raw(b'[{"a": 1e400, "b": -0, "c": 123456789012345678901234567890}]'),
        "",
        lambda r: r == ['{"a":1E+400,"b":0,"c":123456789012345678901234567890}'],
    ),
    Case("Excel: not a zip", "nz.xlsx", raw(b"PK? not really"), "not a readable Excel workbook"),
    Case("Excel: truncated zip", "tr.xlsx", truncated_xlsx, "not a readable Excel workbook"),
    Case("Excel: zip that is not a workbook", "nw.xlsx", zip_not_workbook, "not a readable Excel workbook"),
    Case("Excel: decompression bomb", "bomb.xlsx", bomb, "decompression bomb"),
    Case("Excel: missing sheet", "ms.xlsx", workbook([["a"], [1]]), "no sheet named 'Nope'", body={"sheet": "Nope"}),
    Case(
        "Excel: 16,384 columns",
        "wide.xlsx",
        workbook([[f"c{i}" for i in range(16384)], list(range(16384))]),
        "",
        lambda r: len(r) == 1 and len(json.loads(r[0])) == 16384,
    ),
    Case(
        "Excel: formula without a cached value",
        "f.xlsx",
        workbook([["a", "b", "c"], [1, 2, None]], formulas),
        "row 2 column C (record 0) holds a formula saved without its value",
    ),
    Case(
        "Excel: formula without a cached value, unknown_cells = null",
        "f.xlsx",
        workbook([["a", "b", "c"], [1, 2, None]], formulas),
        "",
        lambda r: [json.loads(x) for x in r] == [{"a": 1, "b": 2, "c": None}],
        body={"unknown_cells": "null", "re_ingestion": True},
    ),
    Case(
        "Excel: a row of only uncached formulas is not dropped",
        "fo.xlsx",
        workbook([["a", "b"], [1, 2]], only_formulas),
        "row 3 column A (record 1) holds a formula saved without its value",
    ),
    Case(
        "Excel: error cells (t=e)",
        "e.xlsx",
        workbook([["a", "b"], [1, "#DIV/0!"]]),
        "row 2 column B (record 0) holds the error value #DIV/0!",
    ),
    Case(
        "Excel: merged cells (top-left keeps the value)",
        "m.xlsx",
        workbook([["a", "b"], ["x", "y"]], merged),
        "",
        lambda r: [json.loads(x) for x in r] == [{"a": "x", "b": None}],
    ),
    Case("Excel: header-only sheet", "h.xlsx", workbook([["a", "b"]]), "", lambda r: r == []),
    Case("CSV: invalid UTF-8", "u.csv", raw(b"a,b\n1,K\xf6ln\n"), "line 2: byte 7: not valid utf-8"),
    Case("CSV: empty header name", "eh.csv", raw(b"a,,c\n1,2,3\n"), "line 1 column 2: empty header name"),
    Case("CSV: duplicate header", "dh.csv", raw(b"a,a\n1,2\n"), "duplicate header 'a'"),
    Case("CSV: a row with an extra field", "x.csv", raw(b"a,b\n1,2\n1,2,3\n"), "line 3 (record 1): 3 fields"),
    Case("CSV: a short row", "s.csv", raw(b"a,b\n1\n"), "line 2 (record 0): 1 fields, the header has 2"),
    Case("CSV: unclosed quote", "q.csv", raw(b'a,b\n1,"open\n2,3\n'), "unexpected end of data"),
    Case("CSV: malformed quoting", "mq.csv", raw(b'a,b\n"x"y,1\n'), "line 2: ',' expected after '\"'"),
    Case(
        "CSV: a 20 MB field",
        "big.csv",
        lambda p: p.write_bytes(b"a\n" + b"x" * (20 << 20) + b"\n"),
        "line 2 is longer than 16777216 characters",
    ),
    Case("CSV: header only", "h.csv", raw(b"a,b\n"), "", lambda r: r == []),
    Case("gzip: a decompression bomb", "bomb.jsonl.gz", gzip_bomb, "refused as a decompression bomb"),
    Case("zstd: a truncated stream", "cut.jsonl.zst", truncated_zstd, "not a valid zstd stream"),
    Case(
        "gzip: an Excel workbook inside", "book.xlsx.gz", lambda p: p.write_bytes(gzip.compress(b"PK")), "a zip already"
    ),
    # The same (empty) bytes as the JSON case above: same bytes, same ingestion, unless re_ingestion says otherwise.
    Case("CSV: empty file", "e.csv", raw(b""), "", lambda r: r == [], body={"re_ingestion": True}),
    Case(
        "CSV: a short row padded",
        "p.csv",
        raw(b"a;b\n1\n"),
        "",
        lambda r: [json.loads(x) for x in r] == [{"a": "1", "b": None}],
        body={"short_rows": "pad"},
    ),
    Case("XML: not well-formed", "nw.xml", raw(b"<a><b>\n<c>1</b></a>"), "line 2 column 7: not well-formed XML"),
    Case("XML: billion laughs", "lol.xml", raw(LAUGHS), "entity declarations are refused", body=ITEMS),
    Case(
        "XML: an external entity",
        "xxe.xml",
        raw(b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a><b>&x;</b></a>'),
        "entity declarations are refused",
        body=ITEMS,
    ),
    Case("XML: an undeclared entity", "nb.xml", raw(b"<a><b>&nbsp;</b></a>"), "undefined entity", body=ITEMS),
    Case("XML: a wrong root", "root.xml", raw(b"<products><b/></products>"), "the root element is <products>"),
    Case("XML: a 200 MB attribute", "attr.xml", huge_attribute, "a single run of markup or text is longer"),
    Case(
        "XML: in UTF-16",
        "u16.xml",
        raw("<a><b>Köln</b></a>".encode("utf-16")),
        "",
        lambda r: [json.loads(x) for x in r] == [KOELN],
    ),
    Case(
        "XML: Latin-1 declared",
        "l1.xml",
        raw('<?xml version="1.0" encoding="ISO-8859-1"?><a><b>Köln</b></a>'.encode("latin-1")),
        "",
        lambda r: [json.loads(x) for x in r] == [KOELN],
    ),
]


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.timeout(600)
async def test_bad_inputs(make_cluster: MakeCluster, tmp_path: Path) -> None:
    """Every generated bad input: the right outcome, nothing sent for refusals, daemon alive, peak RSS bounded."""
    folders = {k: str(tmp_path / k) for k in ("dir", "processing_dir", "done_dir", "failed_dir")}
    c = make_cluster(inbox={**folders, "watch": "off"})
    await c.start_receiver()
    await c.start_daemon()
    refused = accepted = 0
    wrong: list[str] = []

    async def received() -> int:
        _, stats = await c.call("GET", c.rurl + "/stats")
        return int(stats.get("chunks_received", 0))

    for case in CASES:
        path = c.data / case.file
        case.make(path)
        before = await received()
        code, answer = await c.call("POST", c.durl + "/api/ingest", json={"path": str(path), **(case.body or {})})
        assert code == 202, (case.name, answer)
        st = await c.settle(answer["ingestion_id"], timeout=120)
        sent = await received() - before
        if case.expect:
            ok = (
                st["status"] == "failed"
                and case.expect in (st["error"] or "")
                and case.file in st["error"]
                and sent == 0
            )
            refused += ok
        else:
            _, rows = await c.call("GET", f"{c.rurl}/ingestions/{answer['ingestion_id']}/records")
            applied = [a["record"] for a in rows]
            ok = st["status"] == "completed" and (case.check is None or case.check(applied))
            accepted += ok
        if not ok:
            wrong.append(f"{case.name}: {st['status']} {st['error']!r} (chunks sent: {sent})")
        path.unlink()
    # Still serving: a good file goes through after all of that.
    good = c.data / "good.json"
    good.write_bytes(GOOD)
    assert (await c.settle(await c.ingest(good), timeout=30))["status"] == "completed"
    assert c.daemon is not None
    peak = _peak_rss(c.daemon.pid)
    tried = len(CASES)
    refusals = sum(1 for case in CASES if case.expect)
    report(
        f"bad inputs: {tried} tried, {refused} of {refusals} refused correctly, {accepted} of {tried - refusals}"
        f" accepted exactly as documented; daemon peak RSS {peak >> 20} MiB"
    )
    assert not wrong, "\n".join(wrong)
    assert peak < 200 << 20, f"peak RSS {peak >> 20} MiB"
