"""Validation in preflight: a JSON Schema (Draft 2020-12, formats checked), required fields and the key.
``on_invalid = "fail"`` fails the file before anything is sent; ``"skip"`` sends the rest and puts the
invalid records in the reject file with the schema error as their reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .conftest import MakeDaemon
from .helpers import Receiver

SCHEMA = {
    "type": "object",
    "properties": {
        "sku": {"type": "string", "pattern": "^S[0-9]+$"},
        "price": {"type": "number", "minimum": 0},
        "updated": {"type": "string", "format": "date"},
    },
    "required": ["sku"],
}


def _rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [{"sku": f"S{i}", "price": i, "updated": "2026-11-30"} for i in range(12)]
    rows[3]["price"] = -1  # schema: minimum
    rows[7]["updated"] = "2026-13-45"  # format: date (format checks are on)
    rows[9] = {"price": 5}  # no sku: the key is missing
    return rows


async def test_fail_names_the_record_and_the_schema_path_and_sends_nothing(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    src = data_dir / "p.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    d = await make_daemon()
    _, body = await d.ingest(path=str(src), schema=SCHEMA, key="sku")
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "failed", st
    assert "record 3 is invalid" in st["error"] and "/properties/price/minimum" in st["error"], st["error"]
    assert "at /price" in st["error"] and "nothing was sent" in st["error"]
    assert (await receiver.stats()).get("chunks_received", 0) == 0


async def test_skip_sends_the_valid_records_and_rejects_the_others_with_their_reasons(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    rows = _rows()
    src = data_dir / "p.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = await make_daemon(chunking={"records": 4})
    _, body = await d.ingest(path=str(src), schema=SCHEMA, key="sku", on_invalid="skip")
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed", st
    assert (st["records_rejected"], st["records_invalid"], st["records_acked"]) == (3, 3, 9)
    applied = [json.loads(r["record"]) for r in await receiver.records(st["ingestion_id"])]
    assert applied == [r for i, r in enumerate(rows) if i not in (3, 7, 9)]
    # Offsets keep their v1 meaning: the records of earlier chunks, whatever was skipped.
    chunks = (await d.request("GET", f"/api/ingestions/{st['ingestion_id']}/chunks"))[1]["chunks"]
    assert [(c["first_record"], c["records"]) for c in chunks] == [(0, 4), (4, 4), (8, 1)]
    _, raw = await d.request("GET", f"/api/ingestions/{st['ingestion_id']}/rejects")
    lines = [json.loads(x) for x in raw.splitlines()] if isinstance(raw, str) else [raw]
    assert [{k: v for k, v in x.items() if k != "_reject"} for x in lines] == [rows[3], rows[7], rows[9]]
    reasons = [x["_reject"] for x in lines]
    assert "minimum" in reasons[0]["reason"] and reasons[0]["field"] == "price"
    assert "is not a 'date'" in reasons[1]["reason"] and reasons[1]["field"] == "updated"
    assert "'sku' is a required property" in reasons[2]["reason"]
    metrics = (await d.request("GET", "/metrics"))[1]
    assert 'pimingestd_records_rejected_total{by="validation"} 3.0' in metrics


async def test_required_fields_and_a_unique_key(make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path) -> None:
    """``required`` takes dotted paths; with ``unique_key`` a key's second appearance is invalid (also across
    lookup batches: the file is longer than one batch)."""
    rows: list[dict[str, Any]] = [{"p": {"sku": f"S{i}"}, "name": "n"} for i in range(2500)]
    rows[5] = {"p": {"sku": "S5"}}  # no name
    rows[2100] = {"p": {"sku": "S7"}, "name": "again"}  # a repeated key, one batch later
    rows[2101] = {"p": {"sku": "S2101"}, "name": "n", "x": 1}
    src = data_dir / "p.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = await make_daemon(chunking={"records": 500})
    _, body = await d.ingest(path=str(src), required=["name", "p.sku"], key="p.sku", unique_key=True, on_invalid="skip")
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["records_invalid"] == 2, st
    _, raw = await d.request("GET", f"/api/ingestions/{st['ingestion_id']}/rejects")
    got = [json.loads(x) for x in raw.splitlines()]
    assert [g["_reject"]["reason"] for g in got] == [
        "required field(s) missing: name",
        'the key "S7" appears earlier in this file',
    ]
    assert (await receiver.stats())["records_applied"] == 2498


async def test_bad_rules_are_refused_before_any_work(make_daemon: MakeDaemon, data_dir: Path) -> None:
    src = data_dir / "p.jsonl"
    src.write_text('{"a": 1}\n')
    d = await make_daemon()
    for rules, why in [
        ({"schema": {"type": "nope"}}, "not a valid Draft 2020-12 schema"),
        ({"delta": True}, "delta needs `key`"),
        ({"key": "sku", "deletions": "send"}, "needs delta = true"),
        ({"on_invalid": "drop"}, "on_invalid must be one of fail, skip"),
        ({"key": "sku", "max_deletions": 101}, "max_deletions"),
        ({"required": "sku"}, "required must be a list"),
    ]:
        code, answer = await d.ingest(path=str(src), **rules)
        assert code == 400 and why in answer["detail" if answer.get("detail") else "error"], (
            rules,
            answer,
        )


async def test_a_schema_checks_numbers_as_written_whatever_the_reader(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """``multipleOf: 0.01`` holds for a price of ``19.90``. Checked on binary floats it did not (19.9 / 0.01 is
    1989.9999999999998: a valid record was refused), and on a reader's exact Decimals (JSON by ``json_path``,
    a CSV ``decimal`` column) the check raised a TypeError that failed the file. Numbers are checked as
    written, in every reader; ``1.0`` is still an integer (JSON Schema's rule), ``19.905`` still not a multiple,
    and ``enum``/``const`` compare numbers by value."""
    schema = {
        "type": "object",
        "properties": {
            "price": {"type": "number", "multipleOf": 0.01, "maximum": 100.5},
            "n": {"type": "integer"},
            "tax": {"enum": [0.1, 0.2]},
        },
    }
    good = [{"sku": "A", "price": 19.90, "n": 1.0, "tax": 0.10}, {"sku": "B", "price": 0.07, "n": 2, "tax": 0.2}]
    bad = {"sku": "C", "price": 19.905, "n": 1, "tax": 0.1}
    lines = "".join(json.dumps(r) + "\n" for r in [*good, bad]).replace("19.9,", "19.90,").replace("0.1}", "0.10}")
    files = {
        "fast.jsonl": (lines, {}),
        "fast.json": ("[" + ",".join(lines.splitlines()) + "]", {}),
        "nested.json": ('{"d": [' + ",".join(lines.splitlines()) + "]}", {"json_path": "d.item"}),
        "typed.csv": (
            "sku,price,n,tax\nA,19.90,1,0.10\nB,0.07,2,0.2\nC,19.905,1,0.1\n",
            {"types": {"price": "decimal", "n": "int", "tax": "decimal"}},
        ),
    }
    d = await make_daemon()
    for name, (text, options) in files.items():
        src = data_dir / name
        src.write_text(text)
        _, body = await d.ingest(path=str(src), schema=schema, key="sku", on_invalid="skip", **options)
        st = await d.wait(body["ingestion_id"])
        assert st["status"] == "completed", (name, st)
        assert (st["records_acked"], st["records_invalid"]) == (2, 1), (name, st)


def test_every_validator_shares_one_schema_class() -> None:
    """jsonschema builds a class for each extend (attrs compiles its methods); one per ingestion with a schema
    grew the daemon by about 1.5 KB an ingestion, never given back (issue 29). The class is built once."""
    from pimingestd.records.rules import RecordRules
    from pimingestd.records.validate import Validator

    one = Validator(RecordRules(schema={"type": "object", "properties": {"price": {"type": "number"}}}))
    two = Validator(RecordRules(schema={"type": "object", "required": ["sku"]}))
    assert type(one._schema) is type(two._schema)
    assert one.check({"price": "x"}) is not None and two.check({}) is not None and one.check({"price": 1.0}) is None
