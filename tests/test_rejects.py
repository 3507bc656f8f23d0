"""Per-record rejects (protocol v1.1): PIM-Core refuses some records of a chunk it ACKs; the ingestion
completes with them counted, and the reject file holds exactly those records, in the source's own format,
each with its reason. Against the real daemon and the reference receiver."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import openpyxl

from pimingestd.sources import SourceSpec, read_records

from .conftest import MakeDaemon
from .helpers import Receiver, product


def _refuse(*skus: str, reason: str = "unknown category 'X'") -> list[dict[str, Any]]:
    return [{"action": "reject_records", "field": "sku", "values": list(skus), "reason": reason}]


async def _rejects(d: Any, ing: str) -> tuple[int, bytes, dict[str, str]]:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(f"{d.url}/api/ingestions/{ing}/rejects") as r:
        return r.status, await r.read(), dict(r.headers)


async def test_refused_records_complete_the_ingestion_and_land_in_the_reject_file(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    records = [product(i) for i in range(25)]
    src = data_dir / "products.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    await receiver.faults(_refuse("SKU-000003", "SKU-000017"))
    d = await make_daemon()
    _, body = await d.ingest(path=str(src))
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed", st
    assert (st["records_rejected"], st["records_acked"], st["records_invalid"]) == (2, 25, 0)
    applied = [json.loads(r["record"])["sku"] for r in await receiver.records(st["ingestion_id"])]
    assert applied == [r["sku"] for r in records if r["sku"] not in ("SKU-000003", "SKU-000017")]
    stats = await receiver.stats()
    assert stats["completions"] == 1 and stats["records_refused"] == 2  # it checked "rejected": 2
    code, raw, headers = await _rejects(d, st["ingestion_id"])
    assert code == 200 and headers["Content-Type"].startswith("application/jsonl")
    assert "products.rejects.jsonl" in headers["Content-Disposition"]
    lines = [json.loads(line) for line in raw.decode().splitlines()]
    assert [{k: v for k, v in line.items() if k != "_reject"} for line in lines] == [records[3], records[17]]
    assert lines[0]["_reject"] == {"reason": "unknown category 'X'", "field": "sku"}
    metrics = (await d.request("GET", "/metrics"))[1]
    assert 'pimingestd_records_rejected_total{by="pimcore"} 2.0' in metrics


async def test_no_rejects_no_reject_file_and_a_v1_completion(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    src = data_dir / "p.jsonl"
    src.write_text("".join(json.dumps(product(i)) + "\n" for i in range(5)))
    d = await make_daemon()
    _, body = await d.ingest(path=str(src))
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["records_rejected"] == 0
    code, answer, _ = await _rejects(d, st["ingestion_id"])
    assert code == 404 and b"no records were rejected" in answer


def _read(path: Path, fmt: str, **options: Any) -> list[Any]:
    return [
        r if isinstance(r, dict) else json.loads(bytes(json.dumps(r), "utf-8"))
        for r in read_records(path, SourceSpec(fmt, options))
    ]


async def test_reject_files_in_each_format_read_back_as_the_originals(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path, tmp_path: Path
) -> None:
    """JSON (with its json_path), CSV (raw cells, its delimiter, the original header), Excel (the original
    header) and XML (its record_path): the reject file, read with the same options, gives the refused records
    exactly as the source gave them, without the reject fields."""
    rows = [{"sku": f"S{i}", "name": f"Näme {i}", "price": f"{i}.50", "note": "" if i % 2 else "x;y"} for i in range(8)]
    refused = {"S2", "S5"}
    sources: dict[str, tuple[Path, dict[str, Any]]] = {}
    sources["json"] = (data_dir / "cat.json", {"json_path": "catalog.products.item"})
    sources["json"][0].write_text(json.dumps({"catalog": {"products": rows, "meta": 1}}))
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=";")
    w.writerow(list(rows[0]))
    w.writerows([list(r.values()) for r in rows])
    sources["csv"] = (data_dir / "cat.csv", {"delimiter": ";", "types": {"price": "decimal"}})
    sources["csv"][0].write_bytes(buf.getvalue().encode("cp1252"))
    sources["csv"][1]["encoding"] = "cp1252"
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Products"
    sheet.append(list(rows[0]))
    for r in rows:
        sheet.append([r["sku"], r["name"], float(r["price"]), r["note"] or None])
    sources["excel"] = (data_dir / "cat.xlsx", {"sheet": "Products"})
    book.save(sources["excel"][0])
    xml = "".join(
        f'<product sku="{r["sku"]}"><name>{r["name"]}</name><price>{r["price"]}</price></product>' for r in rows
    )
    sources["xml"] = (data_dir / "cat.xml", {"record_path": "feed/products/product"})
    sources["xml"][0].write_text(f"<feed><products>{xml}</products></feed>")
    await receiver.faults(
        [{"action": "reject_records", "field": f, "values": sorted(refused), "reason": "no"} for f in ("sku", "@sku")]
    )
    d = await make_daemon()
    for fmt, (src, options) in sources.items():
        _, body = await d.ingest(path=str(src), **options)
        st = await d.wait(body["ingestion_id"])
        assert st["status"] == "completed" and st["records_rejected"] == 2, (fmt, st)
        code, raw, headers = await _rejects(d, st["ingestion_id"])
        assert code == 200, (fmt, raw)
        suffix = {"json": ".json", "csv": ".csv", "excel": ".xlsx", "xml": ".xml"}[fmt]
        assert f"cat.rejects{suffix}" in headers["Content-Disposition"]
        out = tmp_path / f"back{suffix}"
        out.write_bytes(raw)
        raw_options = {k: v for k, v in options.items() if k != "types"}
        original = _read(src, fmt, **raw_options)
        wanted = [r for r in original if (r.get("sku") or r.get("@sku")) in refused]
        assert _read(out, fmt, **raw_options) == wanted, fmt
        if fmt == "csv":
            text = raw.decode("cp1252")
            assert text.splitlines()[0] == "sku;name;price;note;_reject_reason;_reject_field", text
            assert "Näme 2" in text
        if fmt == "json":
            assert list(json.loads(raw)) == ["catalog"] and json.loads(raw)["catalog"]["products"][0]["_reject"]


async def test_a_fixed_reject_file_dropped_into_the_inbox_sends_the_fixed_records(
    make_daemon: MakeDaemon, receiver: Receiver, tmp_path: Path
) -> None:
    """The operator's loop: a refused row comes back in done/ as <name>.rejects.csv, is fixed, and dropped in
    again; it is read as the original was (the reject columns are dropped) and applied."""
    import asyncio

    from .test_inbox import inbox_config

    cfg = inbox_config(tmp_path)
    inbox, done = Path(cfg["dir"]), Path(cfg["done_dir"])
    (inbox / "incoming").mkdir(parents=True)
    src = inbox / "incoming" / "cat.csv"
    src.write_text("sku,category\nA,shoes\nB,X\nC,hats\n")
    await receiver.faults(
        [{"action": "reject_records", "field": "category", "values": ["X"], "reason": "unknown category 'X'"}]
    )
    d = await make_daemon(inbox=cfg)
    rejects = None
    for _ in range(300):
        found = list(done.rglob("cat.rejects.csv"))
        if found:
            rejects = found[0]
            break
        await asyncio.sleep(0.05)
    assert rejects is not None, list(tmp_path.rglob("*"))
    text = rejects.read_text()
    assert text.splitlines() == ["sku,category,_reject_reason,_reject_field", "B,X,unknown category 'X',category"]
    await receiver.faults([])
    (inbox / "incoming" / "cat.rejects.csv").write_text(text.replace("B,X,", "B,bags,"))
    for _ in range(300):
        rows = [
            r
            for r in (await d.request("GET", "/api/ingestions"))[1]["ingestions"]
            if r["file_name"].endswith("cat.rejects.csv")
        ]
        if rows and rows[0]["status"] == "completed":
            break
        await asyncio.sleep(0.05)
    assert rows and rows[0]["status"] == "completed" and rows[0]["records_rejected"] == 0, rows
    applied = [json.loads(r["record"]) for r in await receiver.records(rows[0]["ingestion_id"])]
    assert applied == [{"sku": "B", "category": "bags"}]  # no _reject_* fields reach PIM-Core


async def test_a_rejected_index_outside_the_chunk_is_a_400_and_commits_nothing(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    await receiver.faults([{"action": "drop_ack", "times": 100}])
    src = data_dir / "p.jsonl"
    src.write_text("".join(json.dumps(product(i)) + "\n" for i in range(3)))
    d = await make_daemon(
        chunking={"records": 3}, delivery={"ack_timeout": 30.0, "backoff": 0.05, "max_attempts": 3, "preflight": True}
    )
    _, body = await d.ingest(path=str(src))
    ing = body["ingestion_id"]
    for _ in range(200):
        chunks = (await d.request("GET", f"/api/ingestions/{ing}/chunks"))[1]["chunks"]
        if chunks and chunks[0]["state"] == "sent":
            break
        import asyncio

        await asyncio.sleep(0.02)
    checksum = chunks[0]["checksum"]
    base = {"ingestion_id": ing, "chunk": 1, "checksum": checksum, "status": "ack"}
    code, answer = await d.ack({**base, "rejected": [{"index": 3, "reason": "r"}]})
    assert code == 400 and "outside the chunk" in answer["error"], answer
    for bad, why in [
        ([{"index": -1, "reason": "r"}], "index"),
        ([{"index": 0}], "reason"),
        ([{"index": 0, "reason": "r"}, {"index": 0, "reason": "s"}], "twice"),
        ({"index": 0}, "array"),
        ([{"index": 0, "reason": "r", "field": 5}], "field"),
    ]:
        code, answer = await d.ack({**base, "rejected": bad})
        assert code == 400 and why in answer["error"], (bad, answer)
    code, answer = await d.ack({**base, "status": "reject", "reason": "x", "rejected": [{"index": 0, "reason": "r"}]})
    assert code == 400 and "belongs to an ACK" in answer["error"]
    assert (await d.status(ing))["chunks_acked"] == 0  # nothing of the refused callbacks was committed
    code, answer = await d.ack(base)  # the receiver applied all three: its ACK (dropped) listed none
    assert code == 200, answer
    st = await d.wait(ing)
    assert st["status"] == "completed" and st["records_rejected"] == 0


async def test_a_long_reason_is_cut_to_2000_characters_and_a_re_ack_repeats_the_list(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """The first ACK is lost; the re-sent chunk is a duplicate, and its ACK lists the same refused record."""
    src = data_dir / "p.jsonl"
    src.write_text("".join(json.dumps(product(i)) + "\n" for i in range(3)))
    await receiver.faults([*_refuse("SKU-000001", reason="r" * 5000), {"action": "drop_ack", "chunk": 1}])
    d = await make_daemon(delivery={"ack_timeout": 0.5, "max_attempts": 3, "backoff": 0.05, "preflight": True})
    _, body = await d.ingest(path=str(src))
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["records_rejected"] == 1, st
    assert (await receiver.stats())["duplicates"] == 1
    _code, raw, _ = await _rejects(d, st["ingestion_id"])
    (line,) = raw.decode().splitlines()
    assert json.loads(line)["sku"] == "SKU-000001" and len(json.loads(line)["_reject"]["reason"]) == 2000


async def _wait_for(pattern: str, folder: Path) -> Path:
    import asyncio

    for _ in range(400):
        found = sorted(folder.rglob(pattern))
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {pattern} under {folder}: {sorted(folder.rglob('*'))}")


async def _completed(d: Any, name: str) -> dict[str, Any]:
    """The newest ingestion whose file name ends with ``name``, once it has ended."""
    import asyncio

    rows: list[dict[str, Any]] = []
    for _ in range(400):
        rows = [
            r for r in (await d.request("GET", "/api/ingestions"))[1]["ingestions"] if r["file_name"].endswith(name)
        ]
        if rows and rows[0]["status"] in ("completed", "failed", "cancelled"):
            return rows[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} did not end: {rows}")


async def test_an_excel_reject_file_keeps_text_cells_text_and_goes_round_the_fix_and_re_drop_loop(
    make_daemon: MakeDaemon, receiver: Receiver, tmp_path: Path
) -> None:
    """Text that openpyxl's append would turn into a formula (``=…``) or an error (``#N/A``), in a source cell
    and in PIM-Core's reason (with a control character a worksheet cannot hold), stays text in the reject file;
    the operator fixes the row in that file and drops it in again, and it is read and applied as it was."""
    from .test_inbox import inbox_config

    cfg = inbox_config(tmp_path)
    inbox, done = Path(cfg["dir"]), Path(cfg["done_dir"])
    (inbox / "incoming").mkdir(parents=True)
    link = '=HYPERLINK("http://example.invalid/b","b")'
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["sku", "category", "link", "note"])
    sheet.append(["A", "shoes", "plain", "x"])
    sheet.append(["B", "X", None, None])
    for column, text in ((3, link), (4, "#N/A")):  # text cells (a formula or an error if typed by openpyxl)
        cell = sheet.cell(row=3, column=column)
        cell.value = text
        cell.data_type = "s"
    staged = tmp_path / "cat.xlsx"
    book.save(staged)
    reason = "=2+3 \x01 refused"
    await receiver.faults([{"action": "reject_records", "field": "category", "values": ["X"], "reason": reason}])
    d = await make_daemon(inbox=cfg)
    staged.rename(inbox / "incoming" / "cat.xlsx")
    rejects = await _wait_for("cat.rejects.xlsx", done)
    got = openpyxl.load_workbook(rejects)
    ws = got.worksheets[0]
    rows = list(ws.iter_rows(values_only=False))
    assert [c.value for c in rows[0]] == ["sku", "category", "link", "note", "_reject_reason", "_reject_field"]
    row = rows[1]
    assert [(c.value, c.data_type) for c in row[:4]] == [("B", "s"), ("X", "s"), (link, "s"), ("#N/A", "s")]
    assert row[4].data_type == "s" and row[4].value.startswith("=2+3 ") and row[4].value.endswith(" refused")
    assert [r for r in read_records(rejects, SourceSpec("excel", {}))] == [
        {"sku": "B", "category": "X", "link": link, "note": "#N/A"}
    ]
    # The fix: the category of the refused row, in the reject file itself; then dropped in again.
    await receiver.faults([])
    ws.cell(row=2, column=2).value = "bags"
    fixed = tmp_path / "cat.rejects.xlsx"
    got.save(fixed)
    fixed.rename(inbox / "incoming" / "cat.rejects.xlsx")
    st = await _completed(d, "cat.rejects.xlsx")
    assert st["status"] == "completed" and st["records_rejected"] == 0, st
    applied = [json.loads(r["record"]) for r in await receiver.records(st["ingestion_id"])]
    assert applied == [{"sku": "B", "category": "bags", "link": link, "note": "#N/A"}]


async def test_a_re_dropped_reject_file_never_overwrites_its_source_in_done(
    make_daemon: MakeDaemon, receiver: Receiver, tmp_path: Path
) -> None:
    """``cat.rejects.csv`` dropped in again and refused again: done/ keeps it as delivered, and its own reject
    file takes another name (``cat.rejects-2.csv``), in the same delta scope as the original file."""
    from pimingestd.records import rules as record_rules

    from .test_inbox import inbox_config

    cfg = inbox_config(tmp_path)
    inbox, done = Path(cfg["dir"]), Path(cfg["done_dir"])
    (inbox / "incoming").mkdir(parents=True)
    await receiver.faults(
        [{"action": "reject_records", "field": "category", "values": ["X"], "reason": "unknown category 'X'"}]
    )
    d = await make_daemon(inbox=cfg)
    (inbox / "incoming" / "cat.csv").write_text("sku,category\nA,shoes\nB,X\n")
    first = await _wait_for("cat.rejects.csv", done)
    text = first.read_text()
    (inbox / "incoming" / "cat.rejects.csv").write_text(text)  # as it is: PIM-Core refuses B again
    st = await _completed(d, "cat.rejects.csv")
    assert st["status"] == "completed" and st["records_rejected"] == 1, st
    again = await _wait_for("cat.rejects-2.csv", done)
    assert again.parent != first.parent
    assert (again.parent / "cat.rejects.csv").read_text() == text  # the delivered file, whole
    assert again.read_text().splitlines() == text.splitlines()
    assert record_rules.default_scope("cat.rejects-2.csv") == "cat.csv"
    assert record_rules.is_reject_file("incoming/cat.rejects-2.csv")
    # And that one, dropped in again, gets a reject file named as the first (no file of that name is there).
    third = again.read_bytes() + b"C,X,,\r\n"  # other bytes (the same would be answered as ingested already)
    (inbox / "incoming" / "cat.rejects-2.csv").write_bytes(third)
    st = await _completed(d, "cat.rejects-2.csv")
    assert st["status"] == "completed" and st["records_rejected"] == 2, st
    for _ in range(200):
        folders = [p.parent for p in done.rglob("cat.rejects-2.csv") if p.parent != again.parent]
        if folders and (folders[0] / "cat.rejects.csv").exists():
            break
        import asyncio

        await asyncio.sleep(0.05)
    assert sorted(p.name for p in folders[0].iterdir()) == ["cat.rejects-2.csv", "cat.rejects.csv"]
    assert (folders[0] / "cat.rejects-2.csv").read_bytes() == third


def test_the_daemons_own_csv_columns_are_never_live_formulas(tmp_path: Path) -> None:
    """A reason or field starting with = + - @, a tab or a CR gets a leading ``'``; the source's cells stay
    verbatim (by contract: a fixed file must read as the original did)."""
    from pimingestd.records import reject_file

    starts = ['=HYPERLINK("http://x")', "+1", "-1", "@SUM(A1)", "\tx", "\rx"]
    records = [{"sku": f"=S{i}", "v": "-3"} for i in range(len(starts))]
    target = tmp_path / "p.rejects.csv"
    rejects = [(i, text, text) for i, text in enumerate(starts)]
    assert reject_file.write(iter(records), iter(rejects), "csv", {}, target) == len(starts)
    rows = list(csv.reader(io.StringIO(target.read_bytes().decode(), newline="")))
    assert rows[0] == ["sku", "v", "_reject_reason", "_reject_field"]
    assert [r[2] for r in rows[1:]] == ["'" + t for t in starts] == [r[3] for r in rows[1:]]
    assert [r[:2] for r in rows[1:]] == [[f"=S{i}", "-3"] for i in range(len(starts))]
    assert _read(target, "csv") == records  # the reject columns are dropped, the source's cells as they were


def test_a_reason_the_reject_file_cannot_hold_as_it_is_is_written_escaped(tmp_path: Path) -> None:
    """A cp1252 CSV cannot encode ``→``, a worksheet cannot hold a control character, XML 1.0 neither (nor
    a lone surrogate, which JSON text can carry): each reject file is written, valid, with the reason spelled
    as it can hold it, and reads back as the refused record."""
    import xml.etree.ElementTree as ET

    from pimingestd.records import reject_file

    reason = "category → unknown \x01 \udc00 end"
    record = {"sku": "B", "name": "Näme"}
    cases = {
        "csv": ({"encoding": "cp1252"}, "p.rejects.csv"),
        "excel": ({}, "p.rejects.xlsx"),
        "xml": ({"record_path": "feed/product"}, "p.rejects.xml"),
        "jsonl": ({}, "p.rejects.jsonl"),
        "json": ({}, "p.rejects.json"),
    }
    for fmt, (options, name) in cases.items():
        target = tmp_path / name
        assert reject_file.write(iter([record]), iter([(0, reason, "name\x02")]), fmt, options, target) == 1, fmt
        assert _read(target, fmt, **options) == [record], fmt
        if fmt == "csv":
            assert "category \\u2192 unknown" in target.read_bytes().decode("cp1252")
        if fmt == "xml":
            root = ET.parse(target).getroot()  # well-formed
            assert root.find("product/_reject/reason").text.startswith("category → unknown \\x01 \\udc00")  # type: ignore[union-attr]


async def test_a_reject_file_that_cannot_be_written_never_keeps_the_completion_from_being_sent(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """A cp1252 CSV whose refusal reason holds ``→`` completes with the reason escaped in its reject file; and
    when the reject file cannot be written at all (its folder cannot be made), the ingestion completes all
    the same (every chunk is ACKed: the report is not worth the completion), and the API says so."""
    src = data_dir / "win.csv"
    src.write_bytes("sku;name\nA;Näme\nB;Bé\n".encode("cp1252"))
    await receiver.faults(_refuse("B", reason="category → unknown"))
    d = await make_daemon()
    _, body = await d.ingest(path=str(src), encoding="cp1252")
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["records_rejected"] == 1, st
    code, raw, _ = await _rejects(d, st["ingestion_id"])
    assert code == 200 and raw.decode("cp1252").splitlines()[1] == "B;Bé;category \\u2192 unknown;sku", raw
    assert (await receiver.stats())["completions"] == 1

    rejects_dir = d.scheduler._runner.rejects_dir
    for old in rejects_dir.iterdir():
        old.unlink()
    rejects_dir.rmdir()
    rejects_dir.write_text("not a folder")  # every reject file's write fails from here on
    src2 = data_dir / "win2.csv"
    src2.write_bytes("sku;name\nC;Näme\nB;Bé\n".encode("cp1252"))
    _, body = await d.ingest(path=str(src2), encoding="cp1252")
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["records_rejected"] == 1, st
    assert (await receiver.stats())["completions"] == 2
    code, raw, _ = await _rejects(d, st["ingestion_id"])
    assert code == 410 and b"could not be written" in raw, raw


async def test_a_csv_reject_file_keeps_the_delimiter_the_reader_found(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """With ``delimiter = "auto"`` (the default), a ``;`` file (plain or gzip'd) and a ``|`` file get reject
    files delimited as they are, which read back with "auto" as the refused records."""
    import gzip

    files = {
        "semi.csv": b"sku;name\nA;x,y\nB;z\n",
        "semi.csv.gz": gzip.compress(b"sku;name\nA;x,y\nB;z\n"),
        "pipe.csv": b"sku|name\nA|x;y\nB|z\n",
    }
    await receiver.faults(_refuse("B", reason="no"))
    d = await make_daemon()
    for name, data in files.items():
        src = data_dir / name
        src.write_bytes(data)
        _, body = await d.ingest(path=str(src))
        st = await d.wait(body["ingestion_id"])
        assert st["status"] == "completed" and st["records_rejected"] == 1, (name, st)
        code, raw, _ = await _rejects(d, st["ingestion_id"])
        sep = "|" if name.startswith("pipe") else ";"
        assert code == 200 and raw.decode().splitlines() == [
            sep.join(["sku", "name", "_reject_reason", "_reject_field"]),
            sep.join(["B", "z", "no", "sku"]),
        ], (name, raw)
        back = data_dir / f"back-{name}.csv"
        back.write_bytes(raw)
        assert _read(back, "csv") == [{"sku": "B", "name": "z"}]


def test_an_xml_reject_file_keeps_a_carriage_return_in_text(tmp_path: Path) -> None:
    """A CR the source held as ``&#13;`` (in text and in an attribute) reads back as a CR, not as the LF that
    XML's line-end handling would make of a bare one."""
    from pimingestd.records import reject_file

    src = tmp_path / "feed.xml"
    src.write_text('<feed><p code="a&#13;b"><name>x&#13;\ny</name></p></feed>')
    options = {"record_path": "feed/p"}
    records = _read(src, "xml", **options)
    assert records == [{"@code": "a\rb", "name": "x\r\ny"}]
    target = tmp_path / "feed.rejects.xml"
    assert reject_file.write(iter(records), iter([(0, "no\r", None)]), "xml", options, target) == 1
    assert _read(target, "xml", **options) == records


def test_an_excel_reject_file_holds_any_text_a_source_cell_held(tmp_path: Path) -> None:
    """A source cell may hold what a worksheet cannot hold as it is (a control character, a CR: the reader
    decoded them from ``_xHHHH_``) and text that looks like an escape: written escaped, they read back as they
    were, and text cells starting with = or holding an error code stay text."""
    from pimingestd.records import reject_file

    record = {"sku": "B", "note": "a\x01b _x0041_ c\rd\ne\tf", "f": "=1+1", "e": "#DIV/0!", "n": 1.5}
    target = tmp_path / "p.rejects.xlsx"
    assert reject_file.write(iter([record]), iter([(0, "-1", "note")]), "excel", {}, target) == 1
    assert _read(target, "excel") == [record]


def _canonical(records: Any) -> list[bytes]:
    """Each record's canonical bytes, whichever form a reader gave it in (a fast path's fragment, or a dict)."""
    import orjson

    from pimingestd.protocol import canonical

    return [orjson.dumps(r) if isinstance(r, orjson.Fragment) else canonical.encode(r) for r in records]


async def test_a_reject_file_keeps_every_number_as_written(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """A refused record's numbers reach its reject file as the source wrote them: ``19.90`` keeps its digits (a
    JSON array's fast path gave canonical bytes, which were read back through binary floats) and an integer
    beyond 64 bits is written whole (orjson refused it, and the reject file was not written at all); the file
    dropped in again sends exactly the bytes the source would have."""
    big = "123456789012345678901234567890"
    files = {
        "n.json": f'[{{"sku":"A","price":19.90}},{{"sku":"B","price":0.10,"stock":{big}}}]'.encode(),
        "n.jsonl": f'{{"sku":"A","price":19.90}}\n{{"sku":"B","price":0.10,"stock":{big}}}\n'.encode(),
        "n.csv": f"sku,price,stock\nA,19.90,1\nB,0.10,{big}\n".encode(),
    }
    options: dict[str, dict[str, Any]] = {"n.csv": {"types": {"price": "decimal", "stock": "int"}}}
    await receiver.faults(_refuse("A", "B", reason="no"))
    d = await make_daemon()
    for name, data in files.items():
        src = data_dir / name
        src.write_bytes(data)
        fmt = name.rsplit(".", 1)[1]
        _, body = await d.ingest(path=str(src), **options.get(name, {}))
        st = await d.wait(body["ingestion_id"])
        assert st["status"] == "completed" and st["records_rejected"] == 2, (name, st)
        code, raw, _ = await _rejects(d, st["ingestion_id"])
        assert code == 200 and b"19.90" in raw and big.encode() in raw, (name, code, raw)
        back = data_dir / f"back-{name}"
        back.write_bytes(raw)
        spec = SourceSpec(fmt, options.get(name, {}))
        assert _canonical(read_records(back, spec)) == _canonical(read_records(src, spec)), name


async def test_a_csv_reject_file_reads_back_with_auto_whatever_its_header_names_hold(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """``delimiter = "auto"`` finds the delimiter in the header line outside quotes: a ``;`` file whose quoted
    header names hold commas (``"size (l, w, h, d)"``) or pipes is read with ``;``, and its reject file must
    read the same way when dropped in again. A name the writer left unquoted (it holds no ``;``) made the
    commas count, and the fixed file was read with ``,`` and refused."""
    files = {
        "commas.csv": b'sku;"size (l, w, h, d)";"a, b"\nA;1;2\nB;3;4\n',
        "pipes.csv": b'sku,"x|y|z|w|v"\nA,1\nB,3\n',
        "tabs.csv": b'sku|"a\tb\tc"|"d\te"\nA|1|2\nB|3|4\n',
    }
    await receiver.faults(_refuse("B", reason="no"))
    d = await make_daemon()
    for name, data in files.items():
        src = data_dir / name
        src.write_bytes(data)
        _, body = await d.ingest(path=str(src))
        st = await d.wait(body["ingestion_id"])
        assert st["status"] == "completed" and st["records_rejected"] == 1, (name, st)
        code, raw, _ = await _rejects(d, st["ingestion_id"])
        assert code == 200, (name, raw)
        back = data_dir / f"back-{name}"
        back.write_bytes(raw)
        assert _read(back, "csv") == _read(src, "csv")[1:], (name, raw)


def test_a_reject_files_name_keeps_every_part_of_its_sources_name() -> None:
    """``my.products.v2.jsonl``'s reject file was ``my.rejects.jsonl``: another delta scope (``my.jsonl``) and a
    name a profile matching ``*.v2.jsonl`` no longer matched, so the fixed file dropped in again was read
    without the profile's options and rules. The ``.rejects`` infix goes after the first part of the name, as
    the scope rule reads it, and the rest is kept; a reject file's name is its own (and beside a source of that
    name, ``-2``...)."""
    from pimingestd.intake.profiles import glob_match
    from pimingestd.records import reject_file
    from pimingestd.records.rules import default_scope, is_reject_file

    cases = {
        ("my.products.v2.jsonl", "jsonl"): "my.rejects.products.v2.jsonl",
        ("catalog.full.json.gz", "json"): "catalog.rejects.full.json",
        ("products.csv.gz", "csv"): "products.rejects.csv",
        ("export.2024-06-01.tsv", "csv"): "export.rejects.2024-06-01.tsv",
        ("products", "csv"): "products.rejects.csv",
        ("products.v2", "xml"): "products.rejects.v2.xml",
        ("in/products.rejects.csv", "csv"): "products.rejects.csv",
        ("my.rejects.products.v2.jsonl", "jsonl"): "my.rejects.products.v2.jsonl",
        ("my.rejects-2.products.v2.jsonl", "jsonl"): "my.rejects.products.v2.jsonl",
        ("p.rejects-3.xlsx", "excel"): "p.rejects.xlsx",
    }
    for (name, fmt), want in cases.items():
        got = reject_file.download_name(name, fmt)
        assert got == want, (name, got)
        assert is_reject_file(got), got
    for name, fmt in (("my.products.v2.jsonl", "jsonl"), ("export.2024-06-01.tsv", "csv"), ("p.xml", "xml")):
        assert default_scope(reject_file.download_name(name, fmt)) == default_scope(name), name
    assert glob_match("*.v2.jsonl", reject_file.download_name("my.products.v2.jsonl", "jsonl"))
    placed = reject_file.placed_name("my.rejects.products.v2.jsonl", "jsonl", {"my.rejects.products.v2.jsonl"})
    assert placed == "my.rejects-2.products.v2.jsonl" and default_scope(placed) == "my.products.v2.jsonl"
    assert reject_file.placed_name("x.rejectsy.csv", "csv", set()) == "x.rejects.rejectsy.csv"


async def test_a_csv_reject_file_keeps_the_byte_order_mark_of_its_source(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """Excel's "CSV UTF-8" starts with a BOM, which the reader strips; without one in the reject file, Excel
    opens it as cp1252 (``Näme`` shows as ``NÃ¤me``) and the fix is saved garbled. The reject file of a
    source that starts with a BOM starts with one (plain or gzip'd, whatever the delimiter option); one of a
    source without stays without; both read back as the refused records."""
    import gzip

    bom = b"\xef\xbb\xbf"
    body = "sku;name\nA;Näme\nB;Bé\n".encode()
    files = {"bom.csv": (bom + body, {}), "bom.csv.gz": (gzip.compress(bom + body), {"delimiter": ";"})}
    files["plain.csv"] = (body, {})
    await receiver.faults(_refuse("B", reason="no"))
    d = await make_daemon()
    for name, (data, options) in files.items():
        src = data_dir / name
        src.write_bytes(data)
        _, answer = await d.ingest(path=str(src), **options)
        st = await d.wait(answer["ingestion_id"])
        assert st["status"] == "completed" and st["records_rejected"] == 1, (name, st)
        code, raw, _ = await _rejects(d, st["ingestion_id"])
        assert code == 200 and raw.startswith(bom) == name.startswith("bom"), (name, raw)
        assert raw.removeprefix(bom).decode().splitlines() == ["sku;name;_reject_reason;_reject_field", "B;Bé;no;sku"]
        back = data_dir / f"back-{name}.csv"
        back.write_bytes(raw)
        assert _read(back, "csv") == [{"sku": "B", "name": "Bé"}]


async def test_the_reject_file_of_a_file_whose_name_is_not_utf8_downloads_and_is_placed(
    make_daemon: MakeDaemon, receiver: Receiver, tmp_path: Path
) -> None:
    """A file dropped in under a name that is not UTF-8 (``caf\\xe9.csv``, written by a latin-1 system):
    its reject file is placed beside it in done/ under the derived name, with the same bytes, and the API
    serves it under the name's readable form (the undecodable byte as the text ``\\xe9``, as everywhere in
    the API), never failing on the name's lone surrogate."""
    import os
    from urllib.parse import unquote

    from .test_inbox import inbox_config

    cfg = inbox_config(tmp_path)
    inbox, done = Path(cfg["dir"]), Path(cfg["done_dir"])
    (inbox / "incoming").mkdir(parents=True)
    await receiver.faults(_refuse("B", reason="no"))
    d = await make_daemon(inbox=cfg)
    staged = tmp_path / "staged.csv"
    staged.write_bytes(b"sku,name\nA,x\nB,y\n")
    os.rename(staged, os.path.join(os.fsencode(inbox / "incoming"), b"caf\xe9.csv"))
    placed = await _wait_for("caf*.rejects.csv", done)
    assert os.fsencode(placed.name) == b"caf\xe9.rejects.csv"
    st = await _completed(d, ".csv")
    assert st["status"] == "completed" and st["records_rejected"] == 1, st
    code, raw, headers = await _rejects(d, st["ingestion_id"])
    assert code == 200 and raw == placed.read_bytes(), (code, raw)
    encoded = headers["Content-Disposition"].split("filename*=UTF-8''", 1)[1]
    assert unquote(encoded) == "caf\\xe9.rejects.csv"


def test_a_csv_reject_file_whose_reason_holds_a_nul_reads_back(tmp_path: Path) -> None:
    """The CSV reader refuses a NUL character (what UTF-16 read as another encoding shows); a reason or field from
    PIM-Core holding one was written raw into the daemon's own columns, and the fixed reject file, dropped in
    again, was refused whole. The daemon's columns spell it ``\\x00``; every encoding option reads it back."""
    from pimingestd.records import reject_file

    record = {"sku": "B", "name": "Näme"}
    for encoding in ("utf-8", "utf-16", "utf-16-le", "cp1252"):
        target = tmp_path / f"{encoding}.rejects.csv"
        rejects = iter([(0, "bad\x00reason", "na\x00me")])
        assert reject_file.write(iter([record]), rejects, "csv", {"encoding": encoding}, target) == 1
        assert list(read_records(target, SourceSpec("csv", {"encoding": encoding}))) == [record]
        text = target.read_bytes().decode(encoding)
        assert "bad\\x00reason" in text and "na\\x00me" in text
