"""Protocol v2: a window of chunks in flight, strict and per-key order, back-pressure (425, 429), fairness.

Against the real daemon and reference receiver processes; core/flow.py's arithmetic also on its own."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from pimingestd.core.flow import LATENCY_GROWTH, Flow, Lane
from pimingestd.testing import Cluster

from .helpers import product, write_json

FAST = {"ack_timeout": 5.0, "backoff": 0.05, "max_attempts": 5}


def cluster(tmp_path: Path, *, receiver_args: list[str] | None = None, **delivery: Any) -> Cluster:
    return Cluster(
        tmp_path,
        chunking={"records": 10},
        delivery={**FAST, **delivery},
        receiver_args=receiver_args or ["--workers", "4", "--window", "8"],
    )


async def stats(c: Cluster) -> dict[str, Any]:
    _, out = await c.call("GET", c.rurl + "/stats")
    return dict(out)


async def test_by_key_window_applies_chunks_at_once_and_keeps_each_keys_order(tmp_path: Path) -> None:
    """W = 8 by_key against 4 workers: chunks apply concurrently, yet every key's records keep file order
    (a tenth of the keys repeat, some inside the window) and each record is applied once."""
    records = [product(i) for i in range(400)]
    for i in range(45, 400, 40):  # a tenth of the chunks repeat a key of three chunks before: still in flight
        records[i] = {**product(i), "sku": records[i - 33]["sku"]}
    async with cluster(tmp_path, receiver_args=["--workers", "4", "--window", "8", "--apply-ms-per-record", "2"]) as c:
        ing = await c.ingest(write_json(c.data / "p.json", records), key="sku", window=8, order="by_key")
        st = await c.settle(ing)
        assert st["status"] == "completed", st
        await c.verify(ing, records, order="by_key")
        s = await stats(c)
        assert s["max_concurrent_applies"] > 1, s  # the window is real: several chunks applied at once
        assert s["max_concurrent_applies"] <= 4, s  # and the receiver's workers bound them


async def test_strict_window_applies_in_chunk_order(tmp_path: Path) -> None:
    records = [product(i) for i in range(300)]
    async with cluster(tmp_path) as c:
        ing = await c.ingest(write_json(c.data / "p.json", records), window=8)
        st = await c.settle(ing)
        assert st["status"] == "completed", st
        await c.verify(ing, records, order="strict")
        s = await stats(c)
        assert s["max_concurrent_posts"] > 1, s  # chunks were in flight together, yet applied in order


async def test_a_v1_receiver_gets_one_chunk_at_a_time_whatever_the_window(tmp_path: Path) -> None:
    """A receiver that announces no window (it speaks v1) never has two chunks of the ingestion at once,
    and the ingestion completes with W = 8 in either order."""
    records = [product(i) for i in range(200)]
    async with cluster(tmp_path, receiver_args=["--protocol", "1"]) as c:
        for name, order in (("s.json", "strict"), ("k.json", "by_key")):
            rules: dict[str, Any] = {"window": 8, "order": order} | ({"key": "sku"} if order == "by_key" else {})
            ing = await c.ingest(write_json(c.data / name, records), **rules)
            st = await c.settle(ing)
            assert st["status"] == "completed", st
            await c.verify(ing, records, order="v1")  # even the v1 check: each chunk sent after the last's ACK
        s = await stats(c)
        assert s["max_concurrent_posts"] == 1, s
        assert s.get("out_of_order", 0) == 0, s


async def test_429_with_retry_after_pauses_sending_and_is_not_a_failed_attempt(tmp_path: Path) -> None:
    """max_attempts = 1, and chunk 3 is answered 429 twice: the ingestion still completes, and nothing of it
    went out for the Retry-After second after each 429."""
    records = [product(i) for i in range(100)]
    async with cluster(tmp_path, max_attempts=1) as c:
        await c.faults([{"action": "http_429", "chunk": 3, "times": 2, "seconds": 1}])
        ing = await c.ingest(write_json(c.data / "p.json", records), window=4)
        st = await c.settle(ing)
        assert st["status"] == "completed", st
        await c.verify(ing, records, order="strict")
        _, received = await c.call("GET", f"{c.rurl}/ingestions/{ing}/received")
        s = await stats(c)
        assert s["faults_http_429"] == 2, s
        # The receiver logs verified POSTs in arrival order: two of chunk 3 that were answered 429 and the one
        # taken. After the first 429 (at t0), nothing arrived before t0 + 1 s but what was already in flight.
        threes = [r["at"] for r in received if r["chunk"] == 3]
        assert len(threes) == 3, received
        assert threes[1] - threes[0] >= 0.95 and threes[2] - threes[1] >= 0.95, threes
        metrics = await c.call("GET", c.durl + "/metrics")
        assert 'pimingestd_receiver_busy_total{status="429"} 2.0' in str(metrics[1]), metrics[1]
        _, overview = await c.call("GET", c.durl + "/api/overview")
        # The receiver announced 8; each 429 halved the window, and the ACKs since grew it back a little.
        assert 1 <= overview["pimcore"]["window"] < 8 and overview["pimcore"]["paused_seconds"] == 0, overview


async def test_425_is_sent_again_without_counting_as_a_failed_attempt(tmp_path: Path) -> None:
    records = [product(i) for i in range(60)]
    async with cluster(tmp_path, max_attempts=1) as c:
        await c.faults([{"action": "http_425", "chunk": 2, "times": 3}])
        ing = await c.ingest(write_json(c.data / "p.json", records), window=4)
        st = await c.settle(ing)
        assert st["status"] == "completed", st
        await c.verify(ing, records, order="strict")
        assert (await stats(c))["faults_http_425"] == 3


async def test_two_ingestions_share_the_window_and_neither_starves(tmp_path: Path) -> None:
    """Two files of 400 records at W = 8 each, against a receiver that announces 4 and applies slowly: their
    chunks interleave from start to end (round robin), and the receiver never holds more than 4."""
    a = [product(i) for i in range(400)]
    b = [product(i) for i in range(1000, 1400)]
    args = ["--workers", "4", "--window", "4", "--apply-ms-per-record", "1"]
    async with cluster(tmp_path, receiver_args=args) as c:
        ia = await c.ingest(write_json(c.data / "a.json", a), key="sku", window=8, order="by_key")
        ib = await c.ingest(write_json(c.data / "b.json", b), key="sku", window=8, order="by_key")
        for ing, recs in ((ia, a), (ib, b)):
            assert (await c.settle(ing))["status"] == "completed"
            await c.verify(ing, recs, order="by_key")
        _, ra = await c.call("GET", f"{c.rurl}/ingestions/{ia}/received")
        _, rb = await c.call("GET", f"{c.rurl}/ingestions/{ib}/received")
        # Each one's chunks arrived while the other's were still arriving: neither waited for the other.
        assert rb[0]["at"] < ra[-1]["at"] and ra[0]["at"] < rb[-1]["at"], (ra[-1], rb[0])
        s = await stats(c)
        assert s["max_concurrent_posts"] <= 4, s


async def test_window_and_order_are_checked_where_they_enter(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        src = write_json(c.data / "p.json", [product(0)])
        for rules, words in (
            ({"order": "by_key"}, "needs `key`"),
            ({"window": 0}, "window must be"),
            ({"window": 1000}, "window must be"),
            ({"order": "random"}, "order must be one of"),
        ):
            status, body = await c.call("POST", c.durl + "/api/ingest", json={"path": str(src), **rules})
            assert status == 400 and words in str(body), (rules, status, body)


# ---- the window's arithmetic (core/flow.py) --------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_flow_sends_one_at_a_time_until_a_window_is_announced() -> None:
    flow = Flow()
    lane = Lane(8)
    await flow.acquire(lane)
    waiting = asyncio.ensure_future(flow.acquire(lane))
    await asyncio.sleep(0)
    assert not waiting.done()  # no announcement yet: one chunk of the lane at a time
    flow.answered(4)
    await asyncio.wait_for(waiting, 1)
    for _ in range(2):
        await asyncio.wait_for(flow.acquire(lane), 1)
    assert lane.in_flight == 4
    fifth = asyncio.ensure_future(flow.acquire(lane))
    await asyncio.sleep(0)
    assert not fifth.done()  # min(8, 4)
    flow.answered(None)  # the receiver was replaced by a v1 one
    flow.release(lane)
    flow.release(lane)
    flow.release(lane)
    await asyncio.sleep(0)
    assert not fifth.done() and lane.in_flight == 1
    flow.release(lane)
    await asyncio.wait_for(fifth, 1)
    assert lane.in_flight == 1


async def test_flow_grows_additively_and_halves_on_429_and_latency_growth() -> None:
    clock = Clock()
    flow = Flow(clock)
    flow.answered(32)
    flow.cwnd = 4.0
    for _ in range(4):
        flow.acked(0.1)
    assert 4.9 < flow.cwnd < 5.1  # +1 per window of ACKs
    clock.now += 1
    flow.busy(0.5, 429)
    assert 2.4 < flow.cwnd < 2.6 and flow.paused_for() == pytest.approx(0.5)
    clock.now += 1
    cut = flow.decreases
    for _ in range(30):  # the latency grows past LATENCY_GROWTH times the lowest: halved, once per latency
        flow.acked(0.1 * LATENCY_GROWTH * 2)
    assert flow.decreases == cut + 1 and flow.cwnd >= 1.0
    flow.busy(5, 503)  # a 503 with Retry-After pauses without a cut
    assert flow.decreases == cut + 1 and flow.paused_for() == pytest.approx(5)


async def test_flow_grants_round_robin_and_a_pause_holds_everyone() -> None:
    clock = Clock()
    flow = Flow(clock)
    flow.answered(1)
    a, b = Lane(8), Lane(8)
    await flow.acquire(a)
    order: list[str] = []

    async def take(name: str, lane: Lane) -> None:
        await flow.acquire(lane)
        order.append(name)

    waiters = [asyncio.ensure_future(take(n, lane)) for n, lane in (("a", a), ("b", b))]
    await asyncio.sleep(0)
    flow.release(a)  # the budget of one goes to the first in line: a (asked first)
    await asyncio.sleep(0)
    again = asyncio.ensure_future(take("a", a))  # a asks again at once: behind b
    await asyncio.sleep(0)
    flow.release(a)
    await asyncio.sleep(0)
    flow.release(b)
    await asyncio.sleep(0)
    assert order == ["a", "b", "a"]
    await asyncio.gather(*waiters, again)
    flow.busy(60, 503)
    flow.release(a)
    held = asyncio.ensure_future(flow.acquire(b))
    await asyncio.sleep(0.01)
    assert not held.done()  # paused: nothing is granted
    clock.now += 61
    flow._grant()
    await asyncio.wait_for(held, 1)


async def test_a_cancelled_wait_gives_its_permit_back() -> None:
    flow = Flow()
    flow.answered(1)
    a, b = Lane(2), Lane(2)
    await flow.acquire(a)
    waiting = asyncio.ensure_future(flow.acquire(b))
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    flow.release(a)
    await asyncio.wait_for(flow.acquire(a), 1)  # nothing stuck in the queue
    assert flow.in_flight == 1


def test_pimcore_defaults_fill_in_what_a_request_does_not_set() -> None:
    from pimingestd.records import rules

    plain = rules.parse({}).with_delivery(8, "by_key", {})
    assert (plain.window, plain.order) == (8, "strict")  # a default by_key needs a key: the others keep strict
    keyed = rules.parse({"key": "sku"}).with_delivery(8, "by_key", {"key": "sku"})
    assert (keyed.window, keyed.order) == (8, "by_key")
    asked = {"key": "sku", "window": 1, "order": "strict"}
    own = rules.parse(asked).with_delivery(8, "by_key", asked)
    assert (own.window, own.order) == (1, "strict")  # what the request says wins
    assert rules.parse(asked).as_json() == {"key": "sku"}  # the v1 defaults are not stored


def test_config_checks_window_and_order(tmp_path: Path) -> None:
    from pimingestd.config import load
    from pimingestd.errors import ConfigError

    for body, words in (
        ("window = 0", "pimcore.window"),
        ("window = 300", "pimcore.window"),
        ('order = "any"', "pimcore.order"),
    ):
        path = tmp_path / "c.toml"
        path.write_text(f"[chunking]\nrecords = 100\n[pimcore]\n{body}\n")
        with pytest.raises(ConfigError, match=words):
            load(path)
    path.write_text('[chunking]\nrecords = 100\n[pimcore]\nwindow = 8\norder = "by_key"\n')
    cfg = load(path)
    assert (cfg.pimcore.window, cfg.pimcore.order) == (8, "by_key")


def test_key_order_lets_a_chunk_go_only_after_every_earlier_holder_of_its_keys() -> None:
    from pimingestd.core.flow import KeyOrder

    order = KeyOrder()
    a, b, c = frozenset({1, 2}), frozenset({3}), frozenset({2, 3})
    for n, keys in ((1, a), (2, b), (3, c)):
        order.join(n, keys)
    assert order.free(1, a) and order.free(2, b)  # no earlier chunk holds their keys
    assert not order.free(3, c)  # 2 is held by chunk 1, 3 by chunk 2
    order.leave(2, b)
    assert not order.free(3, c)  # chunk 1 still holds key 2
    order.leave(1, a)
    assert order.free(3, c)
    order.leave(3, c)
    assert len(order) == 0  # nothing kept once every chunk left


async def test_a_window_streams_without_preflight_and_keeps_chunk_order(tmp_path: Path) -> None:
    """preflight = false with a window of 8 (strict): chunks go out while the file is still being read, several
    at once, and are applied in chunk order exactly once; no spool file is written."""
    records = [product(i) for i in range(300)]
    c = Cluster(
        tmp_path,
        chunking={"records": 10},
        delivery={**FAST, "preflight": False},
        receiver_args=["--workers", "4", "--window", "8"],
    )
    async with c:
        ing = await c.ingest(write_json(c.data / "p.json", records), window=8)
        st = await c.settle(ing)
        assert st["status"] == "completed", st
        assert st["total_chunks"] is None or st["total_chunks"] == 30, st
        await c.verify(ing, records, order="strict")
        assert (await stats(c))["max_concurrent_posts"] > 1
        assert "spool pass started" not in c.log.read_text()
