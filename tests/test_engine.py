"""The engine's rules, each against the real reference receiver over loopback HTTP."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pimingestd.protocol import canonical

from .conftest import MakeDaemon
from .helpers import Receiver, committed_state, free_port, product, write_json


def records_of(applied: list[dict[str, Any]]) -> list[Any]:
    return [json.loads(r["record"]) for r in applied]


async def test_round_trip_json_in_order(make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path) -> None:
    """Every record reaches PIM-Core once, in file order, in chunks of the configured size."""
    src = write_json(data_dir / "p.json", [product(i) for i in range(95)])
    d = await make_daemon()
    code, body = await d.ingest(path=str(src))
    assert code == 202 and body["file_id"].startswith("sha256:")
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed", st
    assert (st["chunks_acked"], st["records_acked"], st["total_chunks"], st["total_records"]) == (10, 95, 10, 95)
    applied = await receiver.records(body["ingestion_id"])
    assert records_of(applied) == [product(i) for i in range(95)]
    assert [a["index"] for a in applied] == list(range(95))
    summary = await receiver.get(f"/ingestions/{body['ingestion_id']}")
    assert summary["completed"] is True


async def test_exact_values_survive(make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path) -> None:
    """Big integers, long decimals, astral-plane text and control characters arrive unchanged."""
    text = (
        '[{"big": 123456789012345678901234567890, "neg": -98765432109876543210,'
        ' "dec": 0.1000000000000000000000000001, "exp": 1.5e-300, "huge": 1e400,'
        ' "s": "\\ud83d\\ude00 \\u0001\\u001f\\t\\n \\"q\\" \\\\ \u00e9\u4e2d\U0001f680"}]'
    )
    src = data_dir / "exact.json"
    src.write_text(text, encoding="utf-8")
    d = await make_daemon()
    _, body = await d.ingest(path=str(src))
    assert (await d.wait(body["ingestion_id"]))["status"] == "completed"
    [rec] = await receiver.records(body["ingestion_id"])
    raw = rec["record"]
    assert '"big":123456789012345678901234567890' in raw
    assert '"neg":-98765432109876543210' in raw
    assert '"dec":0.1000000000000000000000000001' in raw
    assert '"exp":1.5E-300' in raw
    assert '"huge":1E+400' in raw
    assert json.loads(raw)["s"] == '\U0001f600 \x01\x1f\t\n "q" \\ \u00e9\u4e2d\U0001f680'


async def test_jsonl_and_bytes_strategy(make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path) -> None:
    """JSON Lines with blank lines, cut by bytes: every chunk within the limit, all records once."""
    src = data_dir / "p.jsonl"
    src.write_text("\n".join(json.dumps(product(i)) + ("\n" if i % 7 == 0 else "") for i in range(200)) + "\n")
    d = await make_daemon(chunking={"bytes": 1000})
    _, body = await d.ingest(path=str(src))
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["records_acked"] == 200
    assert records_of(await receiver.records(body["ingestion_id"])) == [product(i) for i in range(200)]
    rows = await d.store.chunks(body["ingestion_id"])
    assert len(rows) == st["total_chunks"] > 1
    sizes = [canonical.encode(product(i)) for i in range(200)]
    first = 0
    for row in rows:
        body_len = 2 + sum(len(s) for s in sizes[first : first + row.records]) + row.records - 1
        assert body_len <= 1000
        if row.n < len(rows):  # not the last: the next record would not have fit
            assert body_len + 1 + len(sizes[first + row.records]) > 1000
        first += row.records


async def test_chunk_records_override_per_request(make_daemon: MakeDaemon, data_dir: Path) -> None:
    """chunk_records in the request wins over the config, and is stored with the ingestion."""
    src = write_json(data_dir / "p.json", [product(i) for i in range(30)])
    d = await make_daemon()
    _, body = await d.ingest(path=str(src), chunk_records=7)
    st = await d.wait(body["ingestion_id"])
    assert st["total_chunks"] == 5 and st["status"] == "completed"


@pytest.mark.parametrize("preflight", [True, False])
async def test_ack_before_post_response(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path, preflight: bool
) -> None:
    """An ACK that arrives before the chunk POST's own response is not lost: the Future exists first,
    and the "sent" mark is committed before the POST, so no ACK is refused as "never sent" (that
    would cost a timeout; here max_attempts is 1). With and without the spool."""
    await receiver.faults([{"action": "ack_before_response", "times": 100}])
    src = write_json(data_dir / "p.json", [product(i) for i in range(30)])
    d = await make_daemon(delivery={"ack_timeout": 2.0, "max_attempts": 1, "preflight": preflight})
    _, body = await d.ingest(path=str(src))
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed", st
    rows = await d.store.chunks(body["ingestion_id"])
    assert [r.attempts for r in rows] == [1, 1, 1]


async def test_one_chunk_in_flight(tmp_path: Path, make_daemon: MakeDaemon, data_dir: Path) -> None:
    """Chunk n+1 never reaches PIM-Core before chunk n's ACK is committed in SQLite."""
    seen: list[tuple[int, dict[int, str]]] = []
    state_db = tmp_path / "daemon" / "state" / "ingestion_state.db"

    @web.middleware
    async def spy(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/ingest/chunks":
            ing = request.headers["Pimingest-Ingestion"]
            seen.append((int(request.headers["Pimingest-Chunk"]), committed_state(state_db, ing)))
        return await handler(request)

    recv = Receiver(tmp_path / "spied")
    recv.app.middlewares.append(spy)
    await recv.start()
    try:
        await recv.faults([{"action": "delay_ack", "seconds": 0.05, "times": 100}])
        src = write_json(data_dir / "p.json", [product(i) for i in range(60)])
        d = await make_daemon(
            pimcore={"chunk_url": recv.url + "/ingest/chunks", "complete_url": recv.url + "/ingest/complete"}
        )
        _, body = await d.ingest(path=str(src))
        assert (await d.wait(body["ingestion_id"]))["status"] == "completed"
    finally:
        await recv.stop()
    assert [n for n, _ in seen] == [1, 2, 3, 4, 5, 6]
    for n, states in seen:
        assert all(states[k] == "acked" for k in range(1, n)), (n, states)
        assert states[n] == "sent", "the chunk is persisted as sent before its POST"


async def test_ack_committed_before_200_and_without_waiter(
    make_daemon: MakeDaemon, receiver: Receiver, tmp_path: Path, data_dir: Path
) -> None:
    """An ACK for a chunk persisted as sent, with no Future waiting, is committed before the 200."""
    await receiver.faults([{"action": "drop_ack", "chunk": 1, "times": 5}])
    src = write_json(data_dir / "p.json", [product(i) for i in range(15)])
    d = await make_daemon(delivery={"ack_timeout": 0.3, "max_attempts": 1, "backoff": 0.0})
    _, body = await d.ingest(path=str(src))
    ing = body["ingestion_id"]
    st = await d.wait(ing)
    assert st["status"] == "failed" and "chunk 1" in st["error"] and "no ACK" in st["error"]
    db = tmp_path / "daemon" / "state" / "ingestion_state.db"
    assert committed_state(db, ing) == {1: "sent", 2: "spooled"}
    row = await d.store.chunk(ing, 1)
    code, answer = await d.ack({"ingestion_id": ing, "chunk": 1, "checksum": row.checksum, "status": "ack"})
    assert (code, answer) == (200, {"result": "accepted"})
    assert committed_state(db, ing)[1] == "acked"
    code, answer = await d.ack({"ingestion_id": ing, "chunk": 1, "checksum": row.checksum, "status": "ack"})
    assert (code, answer) == (200, {"result": "duplicate"})


async def test_retries_then_success(make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path) -> None:
    """500s are retried as attempts with backoff; the chunk is applied once."""
    await receiver.faults([{"action": "http_500", "chunk": 2, "times": 2}])
    src = write_json(data_dir / "p.json", [product(i) for i in range(25)])
    d = await make_daemon(delivery={"max_attempts": 3})
    _, body = await d.ingest(path=str(src))
    assert (await d.wait(body["ingestion_id"]))["status"] == "completed"
    rows = await d.store.chunks(body["ingestion_id"])
    assert [r.attempts for r in rows] == [1, 3, 1]
    assert records_of(await receiver.records(body["ingestion_id"])) == [product(i) for i in range(25)]


async def test_attempts_run_out(make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path) -> None:
    """When attempts run out the ingestion fails naming the chunk; resume later finishes it exactly once."""
    await receiver.faults([{"action": "http_500", "chunk": 2, "times": 2}])
    src = write_json(data_dir / "p.json", [product(i) for i in range(25)])
    d = await make_daemon(delivery={"max_attempts": 2})
    _, body = await d.ingest(path=str(src))
    ing = body["ingestion_id"]
    st = await d.wait(ing)
    assert st["status"] == "failed" and st["chunks_acked"] == 1
    assert "chunk 2" in st["error"] and "500" in st["error"]
    code, _ = await d.request("POST", f"/api/ingestions/{ing}/resume")
    assert code == 202
    st = await d.wait(ing)
    assert st["status"] == "completed"
    assert records_of(await receiver.records(ing)) == [product(i) for i in range(25)]


async def test_a_failed_run_leaves_nothing_behind_in_the_engine(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """What the engine keeps per ingestion while it runs (when it last logged progress, its retries) goes
    with the run whether it completes or fails: a daemon that fails an ingestion a minute must not hold one
    entry more each time, for years."""
    await receiver.faults([{"action": "http_500", "chunk": 2, "times": 2}])
    src = write_json(data_dir / "p.json", [product(i) for i in range(25)])
    d = await make_daemon(delivery={"max_attempts": 2})
    runner = d.scheduler._runner
    _, body = await d.ingest(path=str(src))
    ing = body["ingestion_id"]
    assert (await d.wait(ing))["status"] == "failed"  # after chunk 1's ACK logged progress
    assert (runner._last_progress, runner._retries) == ({}, {})
    await d.request("POST", f"/api/ingestions/{ing}/resume")
    assert (await d.wait(ing))["status"] == "completed"
    assert (runner._last_progress, runner._retries) == ({}, {})


async def test_retryable_reject_is_resent(make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path) -> None:
    """A retryable reject is re-sent as a new attempt."""
    await receiver.faults([{"action": "reject_retryable", "chunk": 1, "times": 1}])
    src = write_json(data_dir / "p.json", [product(i) for i in range(5)])
    d = await make_daemon()
    _, body = await d.ingest(path=str(src))
    assert (await d.wait(body["ingestion_id"]))["status"] == "completed"
    assert (await d.store.chunk(body["ingestion_id"], 1)).attempts == 2


async def test_final_reject_stops_everything(make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path) -> None:
    """A final reject fails the ingestion with its reason; no later chunk is sent."""
    await receiver.faults([{"action": "reject_final", "chunk": 2}])
    src = write_json(data_dir / "p.json", [product(i) for i in range(40)])
    d = await make_daemon()
    _, body = await d.ingest(path=str(src))
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "failed" and "injected reject_final" in st["error"] and "chunk 2" in st["error"]
    assert (await receiver.stats())["chunks_received"] == 2
    assert st["chunks_acked"] == 1


async def test_late_ack_while_resend_in_flight(make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path) -> None:
    """An ACK arriving after its attempt timed out still counts; the re-send is a duplicate, applied once."""
    await receiver.faults(
        [{"action": "delay_ack", "chunk": 2, "seconds": 0.6}, {"action": "duplicate_ack", "times": 3}]
    )
    src = write_json(data_dir / "p.json", [product(i) for i in range(30)])
    d = await make_daemon(delivery={"ack_timeout": 0.4, "backoff": 0.3, "max_attempts": 3})
    _, body = await d.ingest(path=str(src))
    assert (await d.wait(body["ingestion_id"]))["status"] == "completed"
    assert records_of(await receiver.records(body["ingestion_id"])) == [product(i) for i in range(30)]


async def test_conflict_409_fails_with_answer(tmp_path: Path, make_daemon: MakeDaemon, data_dir: Path) -> None:
    """409 (out of order) fails the ingestion carrying PIM-Core's answer; it is not retried."""
    calls = []

    async def chunks(request: web.Request) -> web.Response:
        calls.append(request.headers["Pimingest-Chunk"])
        return web.json_response({"expected_chunk": 7}, status=409)

    app = web.Application()
    app.router.add_post("/ingest/chunks", chunks)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        src = write_json(data_dir / "p.json", [product(i) for i in range(5)])
        d = await make_daemon(pimcore={"chunk_url": f"http://127.0.0.1:{port}/ingest/chunks"})
        _, body = await d.ingest(path=str(src))
        st = await d.wait(body["ingestion_id"])
    finally:
        await runner.cleanup()
    assert st["status"] == "failed" and "409" in st["error"] and "expected_chunk" in st["error"]
    assert calls == ["1"]


async def test_completed_file_is_not_sent_again(make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path) -> None:
    """The same bytes again answer 200 with the completed ingestion; re_ingestion starts anew at chunk 1."""
    src = write_json(data_dir / "p.json", [product(i) for i in range(12)])
    d = await make_daemon()
    _, first = await d.ingest(path=str(src))
    await d.wait(first["ingestion_id"])
    copy = data_dir / "copy.json"
    copy.write_bytes(src.read_bytes())
    code, again = await d.ingest(path=str(copy))
    assert code == 200 and again == {**first, "status": "completed"}
    assert (await receiver.stats())["chunks_received"] == 2
    code, fresh = await d.ingest(path=str(src), re_ingestion=True)
    assert code == 202 and fresh["ingestion_id"] != first["ingestion_id"]
    assert (await d.wait(fresh["ingestion_id"]))["status"] == "completed"
    assert len(await receiver.records(fresh["ingestion_id"])) == 12


async def test_unfinished_file_is_resumed(make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path) -> None:
    """Posting the bytes of a failed ingestion resumes it instead of starting over."""
    await receiver.faults([{"action": "reject_final", "chunk": 2}])
    src = write_json(data_dir / "p.json", [product(i) for i in range(25)])
    d = await make_daemon()
    _, first = await d.ingest(path=str(src))
    assert (await d.wait(first["ingestion_id"]))["status"] == "failed"
    code, again = await d.ingest(path=str(src))
    assert code == 202 and again["ingestion_id"] == first["ingestion_id"]
    assert (await d.wait(first["ingestion_id"]))["status"] == "completed"
    assert records_of(await receiver.records(first["ingestion_id"])) == [product(i) for i in range(25)]


async def test_restart_resumes_after_last_ack(
    tmp_path: Path, make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """A daemon stopped mid-ingestion resumes by itself after the last committed chunk, with the stored chunking."""
    await receiver.faults([{"action": "delay_ack", "seconds": 0.1, "times": 1000}])
    src = write_json(data_dir / "p.json", [product(i) for i in range(100)])
    d = await make_daemon(delivery={"ack_timeout": 5.0}, daemon={"drain_seconds": 0.0})
    _, body = await d.ingest(path=str(src))
    ing = body["ingestion_id"]
    while (await d.status(ing))["chunks_acked"] < 3:
        await asyncio.sleep(0.02)
    await d.stop()
    # The restarted daemon has another default chunking: the stored one must win.
    d2 = await make_daemon(chunking={"records": 3}, daemon={"drain_seconds": 0.0})
    st = await d2.wait(ing)
    assert st["status"] == "completed" and st["total_chunks"] == 10
    assert records_of(await receiver.records(ing)) == [product(i) for i in range(100)]


async def test_changed_file_fails_on_resume(make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path) -> None:
    """A file whose bytes changed before a resume fails the ingestion; nothing more is sent."""
    await receiver.faults([{"action": "reject_final", "chunk": 2}])
    src = write_json(data_dir / "p.json", [product(i) for i in range(25)])
    d = await make_daemon()
    _, body = await d.ingest(path=str(src))
    ing = body["ingestion_id"]
    await d.wait(ing)
    received = (await receiver.stats())["chunks_received"]
    src.write_text(src.read_text().replace("SKU-000001", "SKU-999999"))
    await d.request("POST", f"/api/ingestions/{ing}/resume")
    st = await d.wait(ing, ("failed",))
    assert "changed" in st["error"]
    await asyncio.sleep(0.1)
    assert (await receiver.stats())["chunks_received"] == received
    os.unlink(src)
    await d.request("POST", f"/api/ingestions/{ing}/resume")
    st = await d.wait(ing, ("failed",))
    assert "gone" in st["error"]


async def test_damaged_spool_never_sends_wrong_bytes(
    tmp_path: Path, make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """Spooled bytes are checked against their checksum before sending; damage fails loudly."""
    await receiver.faults([{"action": "reject_final", "chunk": 1}])
    src = write_json(data_dir / "p.json", [product(i) for i in range(25)])
    d = await make_daemon()
    _, body = await d.ingest(path=str(src))
    ing = body["ingestion_id"]
    await d.wait(ing)
    spool = tmp_path / "daemon" / "state" / "spool" / f"{ing}.spool"
    data = bytearray(spool.read_bytes())
    data[5] ^= 0x20
    spool.write_bytes(bytes(data))
    received = (await receiver.stats())["chunks_received"]
    await d.request("POST", f"/api/ingestions/{ing}/resume")
    st = await d.wait(ing, ("failed",))
    assert "spool" in st["error"] and "damaged" in st["error"]
    assert (await receiver.stats())["chunks_received"] == received


async def test_streaming_mode_without_preflight(make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path) -> None:
    """preflight = false sends as it parses; no total on the wire, same records, same chunk bytes."""
    src = write_json(data_dir / "p.json", [product(i) for i in range(45)])
    d = await make_daemon(delivery={"preflight": False})
    _, body = await d.ingest(path=str(src))
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["total_chunks"] == 5
    assert records_of(await receiver.records(body["ingestion_id"])) == [product(i) for i in range(45)]


async def test_streaming_mode_resume_recuts_identically(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """Without preflight, resume re-parses to the resume point and sends identical bytes."""
    await receiver.faults([{"action": "reject_final", "chunk": 3}])
    src = write_json(data_dir / "p.json", [product(i) for i in range(45)])
    d = await make_daemon(delivery={"preflight": False})
    _, body = await d.ingest(path=str(src))
    ing = body["ingestion_id"]
    assert (await d.wait(ing))["status"] == "failed"
    await d.request("POST", f"/api/ingestions/{ing}/resume")
    assert (await d.wait(ing))["status"] == "completed"
    assert records_of(await receiver.records(ing)) == [product(i) for i in range(45)]


async def test_malformed_file_sends_nothing(make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path) -> None:
    """With preflight a malformed file fails before the first chunk, with where it broke."""
    src = data_dir / "bad.json"
    src.write_text(json.dumps([product(i) for i in range(50)])[:-30])
    d = await make_daemon()
    _, body = await d.ingest(path=str(src))
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "failed" and "bad.json" in st["error"] and "byte" in st["error"]
    assert (await receiver.stats()).get("chunks_received", 0) == 0


async def test_empty_array_completes_with_zero_chunks(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """An empty array completes with zero chunks and a completion that says so."""
    src = write_json(data_dir / "empty.json", [])
    d = await make_daemon()
    _, body = await d.ingest(path=str(src))
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["total_chunks"] == 0 and st["records_acked"] == 0
    assert (await receiver.stats())["completions"] == 1


async def test_cancel_removes_spool(
    tmp_path: Path, make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """Cancel stops an ingestion for good and removes its spool."""
    await receiver.faults([{"action": "drop_ack", "times": 100}])
    src = write_json(data_dir / "p.json", [product(i) for i in range(25)])
    d = await make_daemon(delivery={"ack_timeout": 30.0})
    _, body = await d.ingest(path=str(src))
    ing = body["ingestion_id"]
    spool = tmp_path / "daemon" / "state" / "spool" / f"{ing}.spool"
    while (await d.store.chunk(ing, 1)) is None or (await d.store.chunk(ing, 1)).state != "sent":
        await asyncio.sleep(0.02)
    assert spool.exists()
    code, st = await d.request("POST", f"/api/ingestions/{ing}/cancel")
    assert code == 200 and st["status"] == "cancelled"
    assert not spool.exists()
    code, _ = await d.request("POST", f"/api/ingestions/{ing}/resume")
    assert code == 409


async def test_signed_protocol(tmp_path: Path, data_dir: Path) -> None:
    """With a secret, both directions are signed and verified end to end."""
    from tests.helpers import Daemon, write_config

    recv = await Receiver(tmp_path / "signed-recv", secret="s3cret").start()
    try:
        cfg = write_config(
            tmp_path / "signed", daemon_port=free_port(), receiver_port=recv.port, pimcore={"secret": "s3cret"}
        )
        d = await Daemon(cfg).start()
        try:
            src = write_json(tmp_path / "signed" / "data" / "p.json", [product(i) for i in range(12)])
            _, body = await d.ingest(path=str(src))
            assert (await d.wait(body["ingestion_id"]))["status"] == "completed"
            code, _ = await d.ack(
                {"ingestion_id": body["ingestion_id"], "chunk": 1, "checksum": "sha256:" + "0" * 64, "status": "ack"}
            )
            assert code == 401
        finally:
            await d.stop()
    finally:
        await recv.stop()
    del data_dir


async def test_excel_round_trip(make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path) -> None:
    """An Excel sheet arrives with its header as keys, dates as ISO 8601, numbers and text exact."""
    import datetime as dt

    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Main"
    ws.append(["sku", "price", "stock", "since", "note"])
    for i in range(25):
        ws.append(
            [
                f"X-{i}",
                i + 0.25,
                i * 1000,
                dt.datetime(2026, 1, 1 + i % 28, 8, 30),
                "Größe \U0001f680" if i % 2 else None,
            ]
        )
    other = wb.create_sheet("Other")
    other.append(["k"])
    other.append(["v"])
    src = data_dir / "p.xlsx"
    wb.save(src)
    d = await make_daemon()
    _, body = await d.ingest(path=str(src), sheet="Main")
    st = await d.wait(body["ingestion_id"])
    assert st["status"] == "completed" and st["format"] == "excel" and st["total_chunks"] == 3
    got = records_of(await receiver.records(body["ingestion_id"]))
    assert got == [
        {
            "sku": f"X-{i}",
            "price": i + 0.25,
            "stock": i * 1000,
            "since": f"2026-01-{1 + i % 28:02d}T08:30:00",
            "note": "Größe \U0001f680" if i % 2 else None,
        }
        for i in range(25)
    ]


# ---- regressions from the reliability review (issue 11) ---------------------------------------------


async def test_streaming_never_reads_past_the_submitted_size(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """preflight = false, and the file grows while it is sent: not one appended record is sent; the ingestion
    fails saying the file changed (before, the extra records were applied, and a re-submit applied them again)."""
    await receiver.faults([{"action": "delay_ack", "seconds": 0.3, "times": 100}])
    src = data_dir / "grow.jsonl"
    src.write_text("".join(json.dumps(product(i)) + "\n" for i in range(50)))
    d = await make_daemon(delivery={"preflight": False})
    _, body = await d.ingest(path=str(src))
    ing = body["ingestion_id"]
    while (await d.status(ing))["chunks_acked"] < 1:
        await asyncio.sleep(0.02)
    with open(src, "a") as f:
        f.write("".join(json.dumps({"sku": f"LATE-{i}"}) + "\n" for i in range(20)))
    st = await d.wait(ing)
    assert st["status"] == "failed" and "changed" in st["error"], st
    applied = records_of(await receiver.records(ing))
    assert applied == [product(i) for i in range(len(applied))] and len(applied) < 50


async def test_a_cancel_stands_against_a_concurrent_resume(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """Resume and cancel sent at once, in both orders, twenty times: the cancel always stands, and nothing runs."""
    await receiver.faults([{"action": "reject_final", "chunk": 1, "times": 1}, {"action": "drop_ack", "times": 1000}])
    d = await make_daemon(delivery={"ack_timeout": 30.0})
    outcomes = []
    for i in range(20):
        src = write_json(data_dir / f"p{i}.json", [product(i * 100 + j) for j in range(15)])
        _, body = await d.ingest(path=str(src))
        ing = body["ingestion_id"]
        if i == 0:
            assert (await d.wait(ing))["status"] == "failed"
        else:
            await d.request("POST", f"/api/ingestions/{ing}/cancel")
            assert (await d.wait(ing, ("cancelled",)))["status"] == "cancelled"
            continue
        calls = [d.request("POST", f"/api/ingestions/{ing}/resume"), d.request("POST", f"/api/ingestions/{ing}/cancel")]
        for _ in range(20):
            answers = await asyncio.gather(*(calls if i % 2 else calls[::-1]))
            outcomes.append([code for code, _ in answers])
            assert (await d.status(ing))["status"] == "cancelled", answers
            calls = [
                d.request("POST", f"/api/ingestions/{ing}/resume"),
                d.request("POST", f"/api/ingestions/{ing}/cancel"),
            ]
        await asyncio.gather(*calls)
    for _ in range(100):
        if d.scheduler.running == 0:
            break
        await asyncio.sleep(0.05)
    assert d.scheduler.running == 0


async def test_a_cancel_during_completion_is_refused(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """Once the completion is on its way to PIM-Core the ingestion cannot be cancelled: it ends completed."""
    await receiver.faults([{"action": "slow_completion", "seconds": 1.5}])
    src = write_json(data_dir / "p.json", [product(i) for i in range(20)])
    d = await make_daemon()
    _, body = await d.ingest(path=str(src))
    ing = body["ingestion_id"]
    while not (await d.store.get(ing)).completing:
        await asyncio.sleep(0.01)
    code, answer = await d.request("POST", f"/api/ingestions/{ing}/cancel")
    assert code == 409 and "completion was already sent" in answer["detail"], answer
    assert (await d.wait(ing))["status"] == "completed"


def test_the_spool_pass_hands_over_chunks_a_page_at_a_time(tmp_path: Path) -> None:
    """write_spool yields its chunk positions in pages (memory flat in the number of chunks), back to back."""
    import threading

    from pimingestd.config import ChunkPolicy
    from pimingestd.core.chunking import cut
    from pimingestd.core.spool import local_records, local_unchanged, write_spool
    from pimingestd.sources import SourceSpec
    from pimingestd.sources.fileid import stat_identity

    src = tmp_path / "many.jsonl"
    src.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(2500)))
    identity = stat_identity(src)
    pages = list(
        write_spool(
            cut(local_records(src, SourceSpec("jsonl"), identity), ChunkPolicy(records=1)),
            tmp_path / "s.spool",
            local_unchanged(src, identity),
            threading.Event(),
            1000,
        )
    )
    assert [len(p.chunks) for p in pages] == [1000, 1000, 500]
    flat = [c for p in pages for c in p.chunks]
    assert [c.n for c in flat] == list(range(1, 2501))
    assert all(b.offset == a.offset + a.length for a, b in itertools.pairwise(flat))


async def test_streaming_resume_past_the_first_page_of_chunks(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """preflight = false with more chunks than one page of rows: resume looks the recorded chunks up page by
    page, and every record is applied exactly once."""
    await receiver.faults([{"action": "reject_final", "chunk": 1120}])
    records = [{"i": i} for i in range(1150)]
    src = data_dir / "many.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    d = await make_daemon(delivery={"preflight": False}, chunking={"records": 1})
    _, body = await d.ingest(path=str(src))
    ing = body["ingestion_id"]
    assert (await d.wait(ing, timeout=60))["status"] == "failed"
    await d.request("POST", f"/api/ingestions/{ing}/resume")
    assert (await d.wait(ing, timeout=60))["status"] == "completed"
    assert records_of(await receiver.records(ing)) == records
