"""Delta: with a key, a record is sent only if its key is new in the scope or its canonical bytes differ
from the version PIM-Core last ACKed; versions are stored only when their chunk's ACK commits. Deletions:
keys a full file no longer holds are listed, or sent as tombstones. Against the real daemon and receiver."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from pimingestd.protocol import canonical
from pimingestd.testing import scope_versions as versions

from .conftest import MakeDaemon
from .helpers import Receiver, product


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


async def held(receiver: Receiver, key: str = "sku") -> dict[str, bytes]:
    """What the receiver holds, hashed as the daemon stores versions (first 16 bytes of the SHA-256)."""
    current = await receiver.get(f"/catalogue?key={key}")
    return {k: hashlib.sha256(v.encode()).digest()[:16] for k, v in current.items()}


DELTA = {"key": "sku", "delta": True, "delta_scope": "products"}


async def test_the_second_file_sends_only_what_changed_and_tombstones_what_left(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    first = [product(i) for i in range(100)]
    d = await make_daemon(chunking={"records": 7})
    _, body = await d.ingest(path=str(_write(data_dir / "day1.jsonl", first)), **DELTA, deletions="send")
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["records_acked"] == 100 and st["records_unchanged"] == 0, st
    db = d.config.daemon.state_db
    assert versions(db, "products") == await held(receiver)
    assert len(versions(db, "products")) == 100

    second = [dict(r) for r in first if r["sku"] not in ("SKU-000010", "SKU-000020")]  # two gone
    second[5]["stock"] = 999  # one changed
    second.append(product(500))  # one new
    _, body = await d.ingest(path=str(_write(data_dir / "day2.jsonl", second)), **DELTA, deletions="send")
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed", st
    assert (st["records_unchanged"], st["deletions"], st["records_deleted"]) == (97, 2, 2), st
    sent = [json.loads(r["record"]) for r in await receiver.records(st["ingestion_id"])]
    assert sent == [
        second[5],
        product(500),
        {"sku": "SKU-000010", "_deleted": True},
        {"sku": "SKU-000020", "_deleted": True},
    ]
    assert versions(db, "products") == await held(receiver)  # 99 keys, the changed one's new version
    assert len(versions(db, "products")) == 99
    _, listed = await d.request("GET", f"/api/ingestions/{st['ingestion_id']}/deletions")
    assert [(x["key"], x["state"]) for x in listed["deletions"]] == [
        ("SKU-000010", "deleted"),
        ("SKU-000020", "deleted"),
    ]
    assert listed["deletions_mode"] == "send" and listed["total"] == 2

    # The same catalogue again, as re_ingestion: everything is sent, and the versions stay right.
    _, body = await d.ingest(path=str(data_dir / "day2.jsonl"), **DELTA, re_ingestion=True)
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["records_acked"] == 99 and st["records_unchanged"] == 0, st
    assert versions(db, "products") == await held(receiver)


async def test_a_rejected_record_is_sent_again_by_the_next_file(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """Its version is never stored, so the next file sends it though it did not change; a record in the same
    chunk that was accepted is stored, and not sent again."""
    records = [product(i) for i in range(10)]
    await receiver.faults([{"action": "reject_records", "field": "sku", "values": ["SKU-000004"]}])
    d = await make_daemon(chunking={"records": 5})
    _, body = await d.ingest(path=str(_write(data_dir / "a.jsonl", records)), **DELTA)
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["records_rejected"] == 1, st
    stored = versions(d.config.daemon.state_db, "products")
    assert '"SKU-000004"' not in stored and len(stored) == 9
    await receiver.faults([])
    records.append(product(10))  # other bytes: a new file of the same scope
    _, body = await d.ingest(path=str(_write(data_dir / "b.jsonl", records)), **DELTA)
    st = await d.wait(body["ingestion_id"])
    sent = [json.loads(r["record"])["sku"] for r in await receiver.records(st["ingestion_id"])]
    assert sent == ["SKU-000004", "SKU-000010"] and st["records_unchanged"] == 9
    assert versions(d.config.daemon.state_db, "products") == await held(receiver)


async def test_deletions_report_lists_and_sends_nothing_and_a_reject_file_deletes_nothing(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    d = await make_daemon()
    base = [product(i) for i in range(20)]
    _, body = await d.ingest(path=str(_write(data_dir / "c.jsonl", base)), **DELTA)
    await d.wait(body["ingestion_id"])
    _, body = await d.ingest(path=str(_write(data_dir / "c2.jsonl", base[:18])), **DELTA, deletions="report")
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["deletions"] == 2 and st["records_deleted"] == 0, st
    assert st["chunks_acked"] == 0  # nothing changed, nothing to delete: nothing sent
    _, listed = await d.request("GET", f"/api/ingestions/{st['ingestion_id']}/deletions?limit=1")
    assert listed["deletions"] == [{"key": "SKU-000018", "state": "absent"}] and listed["total"] == 2
    assert len(versions(d.config.daemon.state_db, "products")) == 20  # report removes nothing
    # A reject file holds some records only: it is never taken for a full catalogue.
    part = [dict(base[3], stock=1)]
    _, body = await d.ingest(path=str(_write(data_dir / "c.rejects.jsonl", part)), **DELTA, deletions="send")
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["deletions"] == 0 and st["records_acked"] == 1, st


async def test_a_partial_file_cannot_delete_most_of_the_scope(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    d = await make_daemon()
    base = [product(i) for i in range(50)]
    _, body = await d.ingest(path=str(_write(data_dir / "d.jsonl", base)), **DELTA)
    await d.wait(body["ingestion_id"])
    received = (await receiver.stats())["chunks_received"]
    _, body = await d.ingest(path=str(_write(data_dir / "d2.jsonl", base[:10])), **DELTA, deletions="send")
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "failed" and "40 of the 50 keys" in st["error"] and "max_deletions = 20%" in st["error"]
    assert (await receiver.stats())["chunks_received"] == received  # nothing was sent
    _, body = await d.ingest(
        path=str(data_dir / "d2.jsonl"), **DELTA, deletions="send", max_deletions=100, re_ingestion=True
    )
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["records_deleted"] == 40, st


async def test_the_default_scope_is_the_file_name_and_its_reject_file_shares_it(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    d = await make_daemon()
    _, body = await d.ingest(path=str(_write(data_dir / "e.jsonl", [product(1)])), key="sku", delta=True)
    st = await d.wait(body["ingestion_id"])
    assert st["delta_scope"] == "e.jsonl"
    fixed = [product(1), product(2)]
    _, body = await d.ingest(path=str(_write(data_dir / "e.rejects.jsonl", fixed)), key="sku", delta=True)
    st = await d.wait(body["ingestion_id"])
    assert st["delta_scope"] == "e.jsonl" and st["records_unchanged"] == 1 and st["records_acked"] == 1, st


def test_a_versions_hash_is_of_the_records_canonical_bytes() -> None:
    record = {"b": 1, "a": [1.5, "x"]}
    assert (
        hashlib.sha256(canonical.encode(record)).digest()[:16] == hashlib.sha256(b'{"a":[1.5,"x"],"b":1}').digest()[:16]
    )


def test_lookups_in_order_and_out_of_order_agree(tmp_path: Path) -> None:
    """ScopeView reads a batch in key order by one range scan, any other batch by a probe per key: on the same
    random scope both give the same answers, and mark the same keys found (so deletions agree too)."""
    import asyncio
    import random

    from pimingestd.state.lookups import ScopeView
    from pimingestd.state.sqlite import Store

    db = tmp_path / "s.db"

    async def make() -> None:
        store = await Store.open(db)
        await store.close()

    asyncio.run(make())
    rng = random.Random(7)
    stored = {
        json.dumps(f"K{rng.randrange(10**6):07d}"): hashlib.sha256(str(i).encode()).digest()[:16] for i in range(3000)
    }
    con = sqlite3.connect(db)
    con.executemany(
        "INSERT INTO delta_versions (scope, key, hash, writer) VALUES ('s', ?, ?, ?)",
        [(k, h, rng.choice((1, 2))) for k, h in stored.items()],
    )
    con.execute(
        "INSERT INTO delta_versions (scope, key, hash, writer) VALUES ('other', ?, ?, 1)", (next(iter(stored)), b"x")
    )
    con.commit()
    con.close()
    present = rng.sample(sorted(stored), 1500) + [json.dumps(f"N{i}") for i in range(300)]
    hashes = {k: stored.get(k, b"new") if rng.random() < 0.8 else b"changed" for k in present}
    answers = []
    for order in (sorted(present), rng.sample(present, len(present))):
        view = ScopeView(db, "s", 2, None)
        got = {}
        for i in range(0, len(order), 100):
            batch = order[i : i + 100]
            got.update(zip(batch, view.changed(batch, [hashes[k] for k in batch]), strict=True))
        absent = [k for page in view.absent("x") for k in page]
        view.close()
        answers.append((got, absent))
    assert answers[0] == answers[1]
    got, absent = answers[0]
    con = sqlite3.connect(db)
    writers = dict(con.execute("SELECT key, writer FROM delta_versions WHERE scope = 's'").fetchall())
    con.close()
    for k in present:
        assert got[k] == (k not in stored or hashes[k] != stored[k] or writers[k] == 2), k
    assert absent == sorted(set(stored) - set(present))


async def test_repeated_keys_apply_in_file_order_and_the_last_version_is_stored(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """Without unique_key a key may repeat: every occurrence is sent in file order (across chunks too) and
    the version stored is the last one ACKed. With a key but delta = false everything is sent, and the
    versions are recorded all the same."""
    a1, b, a2 = {"sku": "A", "v": 1}, {"sku": "B", "v": 1}, {"sku": "A", "v": 2}
    d = await make_daemon(chunking={"records": 2})
    _, body = await d.ingest(path=str(_write(data_dir / "r.jsonl", [a1, b, a2])), key="sku", delta_scope="r")
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["records_acked"] == 3, st
    assert [json.loads(r["record"]) for r in await receiver.records(st["ingestion_id"])] == [a1, b, a2]
    stored = versions(d.config.daemon.state_db, "r")
    assert stored['"A"'] == hashlib.sha256(canonical.encode(a2)).digest()[:16]
    assert stored == await held(receiver)
    _, body = await d.ingest(path=str(_write(data_dir / "r2.jsonl", [a2, b])), key="sku", delta=True, delta_scope="r")
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["records_unchanged"] == 2 and st["chunks_acked"] == 0, st


async def test_an_integer_key_and_its_text_are_one_key_and_a_file_writes_them_one_way(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """Keys are text (docs/protocol.md, "Keys"): a catalogue that wrote SKU 100234 as a number yesterday and as
    text today updates one product; no tombstone goes out for the number (PIM-Core would delete the product it
    just updated). Within one file, a digit key written the other way than the file's first is refused into
    the reject file, naming both records."""
    d = await make_daemon(chunking={"records": 2})
    day1 = [{"sku": 100234, "v": 1}, {"sku": "A-1", "v": 1}]
    _, body = await d.ingest(path=str(_write(data_dir / "k1.jsonl", day1)), **DELTA, deletions="send")
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["records_acked"] == 2, st
    assert set(versions(d.config.daemon.state_db, "products")) == {'"100234"', '"A-1"'}
    day2 = [{"sku": "100234", "v": 2}, {"sku": "A-1", "v": 1}, {"sku": 100235, "v": 1}, {"sku": 7, "v": 1}]
    _, body = await d.ingest(
        path=str(_write(data_dir / "k2.jsonl", day2)), **DELTA, deletions="send", on_invalid="skip"
    )
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed", st
    assert (st["deletions"], st["records_deleted"], st["records_unchanged"]) == (0, 0, 1), st
    sent = [json.loads(r["record"]) for r in await receiver.records(st["ingestion_id"])]
    assert sent == [{"sku": "100234", "v": 2}], "the number keys after the text one are refused"
    catalogue = await receiver.get("/catalogue?key=sku")
    assert catalogue == {'"100234"': '{"sku":"100234","v":2}', '"A-1"': '{"sku":"A-1","v":1}'}, catalogue
    code, raw = await d.request("GET", f"/api/ingestions/{st['ingestion_id']}/rejects")
    lines = [json.loads(line) for line in raw.splitlines()] if isinstance(raw, str) else [raw]
    assert code == 200 and [r["sku"] for r in lines] == [100235, 7], lines
    assert all(r["_reject"]["field"] == "sku" for r in lines), lines
    assert "record 0 wrote a digit key as text" in lines[0]["_reject"]["reason"]


async def test_a_key_refused_for_its_form_is_still_in_the_file_and_is_not_tombstoned(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """A record refused because it writes a digit key the other way than the file's first is in the file all the
    same: its key is not absent, so no tombstone deletes the product it names."""
    d = await make_daemon(chunking={"records": 2})
    _, body = await d.ingest(path=str(_write(data_dir / "f1.jsonl", [{"sku": "100234"}, {"sku": "7"}])), **DELTA)
    assert (await d.wait(body["ingestion_id"]))["status"] == "completed"
    day2 = [{"sku": 7, "v": 2}, {"sku": "100234", "v": 2}]
    _, body = await d.ingest(
        path=str(_write(data_dir / "f2.jsonl", day2)), **DELTA, deletions="send", on_invalid="skip"
    )
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["records_invalid"] == 1, st
    assert (st["deletions"], st["records_deleted"]) == (0, 0), st
    assert '"100234"' in await receiver.get("/catalogue?key=sku")


async def test_a_key_repeated_in_a_delta_file_ends_as_its_last_record(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """Delta compares a record with the version PIM-Core holds for its key; once an earlier record of the key
    was sent in this file, PIM-Core no longer holds that version, so the later records of the key are sent
    too, even one equal to the stored version: the key ends as its last record in file order."""
    a1, a2, a3, b = {"sku": "A", "v": 1}, {"sku": "A", "v": 2}, {"sku": "A", "v": 3}, {"sku": "B", "v": 1}
    d = await make_daemon(chunking={"records": 2})
    _, body = await d.ingest(path=str(_write(data_dir / "r1.jsonl", [a1, a2, b])), **DELTA)
    assert (await d.wait(body["ingestion_id"]))["status"] == "completed"
    _, body = await d.ingest(path=str(_write(data_dir / "r2.jsonl", [a3, b, a2])), **DELTA)
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["records_unchanged"] == 1, st
    assert [json.loads(r["record"]) for r in await receiver.records(st["ingestion_id"])] == [a3, a2]
    assert json.loads((await receiver.get("/catalogue?key=sku"))['"A"']) == a2
    assert versions(d.config.daemon.state_db, "products")['"A"'] == hashlib.sha256(canonical.encode(a2)).digest()[:16]


PRICED = {
    **DELTA,
    "deletions": "send",
    "on_invalid": "skip",
    "schema": {"type": "object", "properties": {"price": {"type": "number"}}},
}


async def test_a_record_not_sent_is_still_in_the_file_and_is_never_tombstoned(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """Absent means "not in the file": a record that fails validation (B's price is "1,50") or repeats a key
    under unique_key goes to the reject file, and its key is not deleted, nor counted against max_deletions
    (two invalid of five would be 40%). A record whose key cannot be read could be any absent key: then the
    full file fails before anything is sent, unless no key is absent."""
    skus = ["A", "B", "C", "D", "E"]
    d = await make_daemon()
    base = [{"sku": s, "price": 1.5} for s in skus]
    _, body = await d.ingest(path=str(_write(data_dir / "p1.jsonl", base)), **PRICED)
    assert (await d.wait(body["ingestion_id"]))["status"] == "completed"
    received = (await receiver.stats())["chunks_received"]

    day2 = [dict(r) for r in base]
    day2[1]["price"] = "1,50"  # B: invalid
    day2[3]["price"] = "2,00"  # D: invalid
    day2.append({"sku": "C", "price": 1.5})  # a repeat of C
    _, body = await d.ingest(path=str(_write(data_dir / "p2.jsonl", day2)), **PRICED, unique_key=True)
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed", st
    assert (st["records_invalid"], st["deletions"], st["records_deleted"]) == (3, 0, 0), st
    assert (await receiver.stats())["chunks_received"] == received  # nothing changed, nothing deleted
    assert sorted(json.loads(k) for k in versions(d.config.daemon.state_db, "products")) == skus
    assert set(await receiver.get("/catalogue?key=sku")) == {json.dumps(s) for s in skus}

    # A record without a usable key, while B is absent: B may be that record. Nothing is sent.
    day3 = [r for r in base if r["sku"] != "B"] + [{"sku": "", "price": 1.5}]
    _, body = await d.ingest(path=str(_write(data_dir / "p3.jsonl", day3)), **PRICED)
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "failed" and "record 4 has no usable key" in st["error"], st
    assert "nothing was sent" in st["error"] and (await receiver.stats())["chunks_received"] == received
    # The same without an absent key: it completes, the keyless records in the reject file.
    day4 = [*base, {"price": 2.5}, {"sku": 1.5, "price": "x"}]
    _, body = await d.ingest(path=str(_write(data_dir / "p4.jsonl", day4)), **PRICED)
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["records_invalid"] == 2 and st["deletions"] == 0, st


async def test_an_older_full_file_never_resumes_over_a_newer_one_of_its_scope(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """Monday's full file (E dropped) fails during delivery; Tuesday's (E back) completes. Resuming Monday is
    refused (409, saying why and what to do): it would send Monday's prices and a tombstone for E. Dropping
    Monday's file again is a new ingestion, compared with what PIM-Core holds now."""
    rules = {**DELTA, "deletions": "send", "max_deletions": 100, "on_invalid": "skip"}
    d = await make_daemon(chunking={"records": 2}, delivery={"max_attempts": 1, "backoff": 0.05, "preflight": True})
    skus = ["A", "B", "C", "D", "E"]
    _, body = await d.ingest(path=str(_write(data_dir / "base.jsonl", [{"sku": s, "p": 1} for s in skus])), **rules)
    assert (await d.wait(body["ingestion_id"]))["status"] == "completed"
    monday_file = _write(data_dir / "monday.jsonl", [{"sku": s, "p": 2} for s in skus[:4]])
    await receiver.faults([{"action": "reject_final", "chunk": 2}])
    _, body = await d.ingest(path=str(monday_file), **rules)
    monday = body["ingestion_id"]
    st = await d.wait(monday)
    assert st["status"] == "failed" and st["chunks_acked"] == 1, st
    await receiver.faults([])
    tuesday = [{"sku": s, "p": 3} for s in skus]
    _, body = await d.ingest(path=str(_write(data_dir / "tuesday.jsonl", tuesday)), **rules)
    assert (await d.wait(body["ingestion_id"]))["status"] == "completed"
    want = {json.dumps(r["sku"]): hashlib.sha256(canonical.encode(r)).digest()[:16] for r in tuesday}
    assert await held(receiver) == want

    code, answer = await d.request("POST", f"/api/ingestions/{monday}/resume", json={})
    assert code == 409, answer
    assert "submitted after it, delivered records since (completed)" in answer["detail"], answer
    assert "Drop the file again" in answer["detail"]
    assert (await d.status(monday))["status"] == "failed"
    assert await held(receiver) == want  # nothing of Monday's was sent again
    assert versions(d.config.daemon.state_db, "products") == want

    # The same bytes submitted again: not a resume of Monday's ingestion, but a new one (its delta is now's).
    _, body = await d.ingest(path=str(monday_file), **rules)
    assert body["ingestion_id"] != monday
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["records_deleted"] == 1 and st["records_acked"] == 5, st


async def test_an_older_file_waiting_for_its_scope_fails_once_a_newer_one_delivered(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """The resume is taken while Tuesday's ingestion runs and has delivered nothing yet; Monday waits for the
    scope, and once Tuesday completed, its run refuses to start, saying why."""
    rules = {**DELTA, "deletions": "send", "max_deletions": 100, "on_invalid": "skip"}
    d = await make_daemon(chunking={"records": 2}, delivery={"max_attempts": 1, "backoff": 0.05, "preflight": True})
    await receiver.faults([{"action": "reject_final", "chunk": 1}])
    _, body = await d.ingest(path=str(_write(data_dir / "monday.jsonl", [product(i) for i in range(4)])), **rules)
    monday = body["ingestion_id"]
    assert (await d.wait(monday))["status"] == "failed"
    await receiver.faults([{"action": "delay_ack", "chunk": 1, "seconds": 1.0}])
    _, body = await d.ingest(path=str(_write(data_dir / "tuesday.jsonl", [product(i) for i in range(5)])), **rules)
    tuesday = body["ingestion_id"]
    await d.wait(tuesday, statuses=("running",))
    code, answer = await d.request("POST", f"/api/ingestions/{monday}/resume", json={})
    assert code == 202 and answer["status"] in ("queued", "running"), answer
    assert (await d.wait(tuesday))["status"] == "completed"
    st = await d.wait(monday)
    assert st["status"] == "failed" and f"ingestion {tuesday} (tuesday.jsonl)" in st["error"], st
    assert [json.loads(r["record"])["sku"] for r in await receiver.records(monday)] == []


async def test_a_late_ack_during_a_newer_spool_pass_makes_it_spool_again(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path, monkeypatch: Any
) -> None:
    """Monday's only changed record (A = 2) is applied by PIM-Core, but its ACK comes only after Monday failed,
    while Tuesday's spool pass (A = 1 again) has just found A unchanged against the stored A = 1. The ACK is
    committed (PIM-Core applied it), and Tuesday's pass is done again against it: A = 1 is sent."""
    import asyncio

    from pimingestd.state import lookups

    d = await make_daemon(delivery={"max_attempts": 1, "ack_timeout": 0.5, "backoff": 0.05, "preflight": True})
    base = [{"sku": s, "p": 1} for s in "ABCD"]
    _, body = await d.ingest(path=str(_write(data_dir / "base.jsonl", base)), **DELTA)
    assert (await d.wait(body["ingestion_id"]))["status"] == "completed"
    await receiver.faults([{"action": "drop_ack", "chunk": 1}])
    _, body = await d.ingest(path=str(_write(data_dir / "monday.jsonl", [{"sku": "A", "p": 2}, *base[1:]])), **DELTA)
    monday = body["ingestion_id"]
    assert (await d.wait(monday))["status"] == "failed"
    (chunk,) = (await d.request("GET", f"/api/ingestions/{monday}/chunks"))[1]["chunks"]
    late = {"ingestion_id": monday, "chunk": 1, "checksum": chunk["checksum"], "status": "ack"}
    loop = asyncio.get_running_loop()
    original = lookups.ScopeView.changed
    answers: list[Any] = []

    def changed(self: Any, keys: Any, hashes: Any) -> list[bool]:
        out = original(self, keys, hashes)
        if not answers:  # the first lookup of Tuesday's pass is made; now Monday's ACK arrives
            answers.append(asyncio.run_coroutine_threadsafe(d.ack(late), loop).result(timeout=30))
        return out

    monkeypatch.setattr(lookups.ScopeView, "changed", changed)
    await receiver.faults([])
    tuesday = [*base, {"sku": "E", "p": 1}]  # (other bytes than base.jsonl, which was ingested already)
    _, body = await d.ingest(path=str(_write(data_dir / "tuesday.jsonl", tuesday)), **DELTA)
    st = await d.wait(body["ingestion_id"])
    assert answers and answers[0][0] == 200, answers
    assert st["status"] == "completed", st
    assert [json.loads(r["record"]) for r in await receiver.records(st["ingestion_id"])] == [base[0], tuesday[4]]
    assert versions(d.config.daemon.state_db, "products") == await held(receiver)


async def test_a_key_spelled_as_a_number_instead_of_a_string_is_never_tombstoned(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """Keys are text (docs/protocol.md, "Keys"): ``"1"`` and ``1`` are one key, as they are one object in
    PIM-Core. An exporter that wrote yesterday's ``"sku": "1"`` as ``"sku": 1`` today still has product 1 in
    its file: the record is sent (its bytes changed), and no tombstone for ``"1"`` follows it (which would
    delete the object just upserted), also with the repeat held back by validation. A key whose text is not
    the same (``"01"``, ``"-0"``) is another object, and is deleted as any absent key."""
    rules = {**DELTA, "deletions": "send", "max_deletions": 100, "on_invalid": "skip"}
    d = await make_daemon()
    day1 = [
        {"sku": "1", "v": 1},
        {"sku": "2", "v": 1},
        {"sku": "01", "v": 1},
        {"sku": "-0", "v": 1},
        {"sku": "A", "v": 1},
    ]
    _, body = await d.ingest(path=str(_write(data_dir / "d1.jsonl", day1)), **rules)
    assert (await d.wait(body["ingestion_id"]))["status"] == "completed"

    day2 = [{"sku": 1, "v": 1}, {"sku": 2, "v": 1}, {"sku": 1, "v": 2}, {"sku": "A", "v": 1}]
    _, body = await d.ingest(path=str(_write(data_dir / "d2.jsonl", day2)), **rules, unique_key=True)
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed", st
    sent = [json.loads(r["record"]) for r in await receiver.records(st["ingestion_id"])]
    assert sent == [
        {"sku": 1, "v": 1},
        {"sku": 2, "v": 1},
        {"sku": "-0", "_deleted": True},
        {"sku": "01", "_deleted": True},
    ], sent
    assert (st["deletions"], st["records_invalid"]) == (2, 1), st


async def test_a_record_that_is_not_an_object_has_no_key_and_is_refused_by_name(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """An XML record element holding only text is a string record, not an object: with a key it has none.
    Under ``on_invalid = "skip"`` it goes to the reject file with that reason (and, with keys absent from a
    full file under ``deletions = "send"``, the file fails naming it); it never crashes the spool pass."""
    src = data_dir / "feed.xml"
    src.write_text("<feed><p><sku>A</sku></p><p>just text</p><p><sku>B</sku></p></feed>")
    d = await make_daemon()
    rules = {**DELTA, "on_invalid": "skip", "record_path": "feed/p"}
    _, body = await d.ingest(path=str(src), **rules)
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["records_invalid"] == 1 and st["records_acked"] == 2, st
    src.write_text("<feed><p><sku>A</sku></p><p>just text</p></feed>")
    _, body = await d.ingest(path=str(src), **rules, deletions="send")
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "failed" and "record 1 has no usable key" in st["error"], st


async def test_a_late_ack_committed_just_before_a_spool_pass_ends_makes_it_spool_again(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path, monkeypatch: Any
) -> None:
    """The late ACK's count moved only once its commit had returned to the event loop: a spool pass that found
    A = 1 unchanged, during which Monday's A = 2 committed, but which was compared before the count moved,
    stood, and Tuesday's A = 1 never reached PIM-Core, which holds Monday's A = 2. The count moves before the
    commit too (a pass that began, or ended, with a late ACK's commit under way is done again)."""
    import asyncio
    import threading

    from pimingestd.core.ingestion import Runner
    from pimingestd.state import lookups
    from pimingestd.state.sqlite import Store

    d = await make_daemon(delivery={"max_attempts": 1, "ack_timeout": 0.5, "backoff": 0.05, "preflight": True})
    base = [{"sku": s, "p": 1} for s in "ABCD"]
    _, body = await d.ingest(path=str(_write(data_dir / "base.jsonl", base)), **DELTA)
    assert (await d.wait(body["ingestion_id"]))["status"] == "completed"
    await receiver.faults([{"action": "drop_ack", "chunk": 1}])
    _, body = await d.ingest(path=str(_write(data_dir / "monday.jsonl", [{"sku": "A", "p": 2}, *base[1:]])), **DELTA)
    monday = body["ingestion_id"]
    assert (await d.wait(monday))["status"] == "failed"
    (chunk,) = (await d.request("GET", f"/api/ingestions/{monday}/chunks"))[1]["chunks"]
    late = {"ingestion_id": monday, "chunk": 1, "checksum": chunk["checksum"], "status": "ack"}
    loop = asyncio.get_running_loop()
    committed, passed = threading.Event(), asyncio.Event()
    commit_in_tx, spool_pass, changed = Store._commit_ack_in_tx, Runner._spool_pass, lookups.ScopeView.changed

    async def slow_return(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = await commit_in_tx(self, *args, **kwargs)  # committed: Monday's A = 2 is the stored version
        committed.set()
        await passed.wait()  # the ACK's coroutine goes on only once a spool pass was compared
        return out

    async def compared(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await spool_pass(self, *args, **kwargs)
        finally:
            passed.set()  # the caller compares the count right after this returns, in the same step

    acks: list[Any] = []

    def looked_up(self: Any, keys: Any, hashes: Any) -> list[bool]:
        out = changed(self, keys, hashes)
        if not acks:  # Tuesday's pass has found A unchanged; now Monday's ACK commits
            acks.append(asyncio.run_coroutine_threadsafe(d.ack(late), loop))
            assert committed.wait(timeout=30)
        return out

    monkeypatch.setattr(Store, "_commit_ack_in_tx", slow_return)
    monkeypatch.setattr(Runner, "_spool_pass", compared)
    monkeypatch.setattr(lookups.ScopeView, "changed", looked_up)
    await receiver.faults([])
    tuesday = [*base, {"sku": "E", "p": 1}]
    _, body = await d.ingest(path=str(_write(data_dir / "tuesday.jsonl", tuesday)), **DELTA)
    st = await d.wait(body["ingestion_id"])
    assert acks and (await asyncio.wrap_future(acks[0]))[0] == 200
    assert st["status"] == "completed", st
    assert [json.loads(r["record"]) for r in await receiver.records(st["ingestion_id"])] == [base[0], tuesday[4]]
    assert versions(d.config.daemon.state_db, "products") == await held(receiver)


async def test_a_key_respelled_as_pim_core_compares_it_is_never_tombstoned(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """Pimcore finds an object by its key field through MySQL's collation (utf8mb4_general_ci for Pimcore 11,
    utf8mb4_unicode_520_ci for 12: case and accents ignored, trailing spaces too), so ``abc`` today is the
    object ``ABC`` was yesterday: the upsert updates it, and a tombstone for ``ABC`` then deleted it. A key
    absent from the file is not deleted while the file holds a key that folds to the same text (case, accents,
    trailing spaces, "1" and 1); a key with no such twin is deleted as before."""
    rules = {**DELTA, "deletions": "send", "max_deletions": 100}
    d = await make_daemon()
    day1 = [{"sku": s, "v": 1} for s in ("ABC", "Café", "x ", "gone", "Straße", "keep")]
    _, body = await d.ingest(path=str(_write(data_dir / "f1.jsonl", day1)), **rules)
    assert (await d.wait(body["ingestion_id"]))["status"] == "completed"

    day2 = [{"sku": s, "v": 1} for s in ("abc", "CAFE", "x", "STRASSE", "keep")]
    _, body = await d.ingest(path=str(_write(data_dir / "f2.jsonl", day2)), **rules)
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed", st
    sent = [json.loads(r["record"]) for r in await receiver.records(st["ingestion_id"])]
    assert sent == [*day2[:4], {"sku": "gone", "_deleted": True}], sent
    assert (st["deletions"], st["records_deleted"]) == (1, 1), st
