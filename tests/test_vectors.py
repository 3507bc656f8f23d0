"""The shared protocol vectors (tests/vectors/protocol-v1.json), read by this suite and by the bundle's
phpunit suite: signatures, digests, manifests and file-name headers agree across both halves."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from pimingestd.protocol import canonical, signing, v1

from .helpers import REPO

VECTORS = json.loads((REPO / "tests" / "vectors" / "protocol-v1.json").read_text(encoding="utf-8"))


def test_signatures_match_the_vectors() -> None:
    assert len(VECTORS["signatures"]) >= 5
    for case in VECTORS["signatures"]:
        body = case["body"].encode("utf-8")
        assert signing.sign(case["secret"], body, key=case["key"], now=case["t"]) == case["header"], case
        assert signing.verify(case["secret"], case["header"], body, key=case["key"], now=case["t"]) is None
        assert signing.verify(case["secret"], case["header"], body + b" ", key=case["key"], now=case["t"])
        assert signing.verify(case["secret"], case["header"], body, key=case["key"], now=case["t"] + 301)


def test_digests_and_manifests_match_the_vectors() -> None:
    for case in VECTORS["digests"]:
        digest = hashlib.sha256(case["body"].encode("utf-8")).digest()
        assert canonical.checksum(digest) == case["checksum"]
        assert canonical.content_digest(digest) == case["content_digest"]
    for case in VECTORS["manifests"]:
        assert canonical.manifest(case["checksums"]) == case["manifest"]


def test_file_name_headers_match_the_vectors() -> None:
    for case in VECTORS["file_names"]:
        meta = v1.ChunkHeaders("0" * 32, "sha256:" + "0" * 64, 1, None, 1, 0, case["name"])
        sent = meta.headers(hashlib.sha256(b"[]").digest(), "http://127.0.0.1/callbacks/ack")
        assert sent[v1.FILE_NAME] == case["header"]
        assert v1.ChunkHeaders.parse(sent)[0].file_name == case["name"]


def test_a_malformed_file_name_header_is_refused() -> None:
    meta = v1.ChunkHeaders("0" * 32, "sha256:" + "0" * 64, 1, None, 1, 0, "ok.json")
    sent = meta.headers(hashlib.sha256(b"[]").digest(), "http://127.0.0.1/callbacks/ack")
    for bad in ("%FF%FE", "", "a%2Fb.json", "%00"):
        with pytest.raises(v1.BadMessage, match="Pimingest-File-Name"):
            v1.ChunkHeaders.parse({**sent, v1.FILE_NAME: bad})
    del sent[v1.FILE_NAME]
    assert v1.ChunkHeaders.parse(sent)[0].file_name is None  # optional: a sender that omits it is fine


def test_v1_1_ack_bodies_parse_as_the_vectors_say() -> None:
    """The daemon's reading of `rejected` (the bundle builds the same bytes: VectorsTest.php)."""
    from pimingestd.model import RecordReject

    assert len(VECTORS["acks_v1_1"]) >= 5
    for case in VECTORS["acks_v1_1"]:
        if case["rejected"] is None:  # malformed: refused by the parser, naming what
            with pytest.raises(v1.BadMessage, match=case["error"]):
                v1.parse_ack(case["body"].encode("utf-8"))
            continue
        ack = v1.parse_ack(case["body"].encode("utf-8"))
        assert ack.rejected == tuple(RecordReject(r["index"], r["reason"], r.get("field")) for r in case["rejected"])
        inside = all(r.index < case["records"] for r in ack.rejected)
        assert (200 if inside else 400) == case["answer"], case["about"]
        if inside:
            assert json.loads(json.dumps(ack.body(), ensure_ascii=False)) == json.loads(case["body"])


def test_tombstones_match_the_vectors() -> None:
    from pimingestd.protocol import keys

    for case in VECTORS["tombstones"]:
        assert canonical.encode(keys.tombstone(case["key"], case["stored"])).decode() == case["text"]
        assert keys.extract(json.loads(case["text"]), case["key"]) == case["stored"]
    for text in VECTORS["not_tombstones"]:
        assert json.loads(text).get(keys.DELETED) is not True


def test_keys_are_text_as_the_vectors_say() -> None:
    """A key is text end to end: the daemon stores each record's key as the vectors say (an integer as its
    decimal text), refuses the records the vectors refuse, and refuses a file's digit key written the other
    way (the bundle checks the same cases in ProtocolTest.php)."""
    from pimingestd.protocol import keys

    for case in VECTORS["keys"]["cases"]:
        if case["stored"] is None:
            with pytest.raises(keys.NoKey):
                keys.extract(case["record"], case["key"])
        else:
            assert keys.extract(case["record"], case["key"]) == case["stored"], case
            assert json.loads(case["stored"]) == case["text"]
    for file in VECTORS["keys"]["files"]:
        forms = keys.DigitKeys()
        refused = [i for i, r in enumerate(file["records"]) if forms.check(r["sku"], i) is not None]
        assert refused == file["refused"], file["about"]


# ---- protocol v2 ------------------------------------------------------------------------------------------


def _base_headers() -> dict[str, str]:
    meta = v1.ChunkHeaders("0" * 32, "sha256:" + "0" * 64, 1, None, 1, 0, "p.json")
    return meta.headers(hashlib.sha256(b"[]").digest(), "http://127.0.0.1/callbacks/ack")


def test_v2_chunk_headers_parse_as_the_vectors_say() -> None:
    assert len(VECTORS["v2_chunk_headers"]) >= 8
    for case in VECTORS["v2_chunk_headers"]:
        headers = {**_base_headers(), **case["headers"]}
        if "error" in case:
            with pytest.raises(v1.BadMessage, match=case["error"]):
                v1.ChunkHeaders.parse(headers)
            continue
        meta = v1.ChunkHeaders.parse(headers)[0]
        assert (meta.protocol, meta.window, meta.order, meta.key) == (
            case["protocol"],
            case["window"],
            case["order"],
            case["key"],
        ), case["about"]
        if meta.protocol == 2:  # and the daemon sends exactly these headers for those fields
            sent = v1.ChunkHeaders(**{**_fields(meta)}).headers(hashlib.sha256(b"[]").digest(), "http://x/cb")
            assert {k: sent[k] for k in case["headers"]} == case["headers"], case["about"]


def _fields(meta: v1.ChunkHeaders) -> dict[str, object]:
    import dataclasses

    return {f.name: getattr(meta, f.name) for f in dataclasses.fields(meta)}


def test_v2_answer_windows_and_retry_after_read_as_the_vectors_say() -> None:
    for case in VECTORS["v2_answer_windows"]:
        headers = {} if case["header"] is None else {v1.WINDOW: case["header"]}
        assert v1.announced_window(headers) == case["announced"], case["about"]
    for case in VECTORS["retry_after"]:
        got = v1.retry_after(case["header"], now=case["now"])
        assert got == (None if case["seconds"] is None else pytest.approx(case["seconds"])), case["about"]


def _arrival_body(n: int, variant: str) -> bytes:
    return canonical.encode([{"i": 10 * (n - 1) + k, "n": n, "v": variant} for k in range(10)])


async def test_the_reference_receiver_answers_v2_arrivals_as_the_vectors_say(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """Each sequence of chunk POSTs, against the reference receiver (its strict hold off, so an early chunk
    is answered at once)."""
    from aiohttp import ClientSession, web

    from pimingestd.receiver.app import Options, create_app

    acks: list[Any] = []

    async def callback(request: web.Request) -> web.Response:
        acks.append(await request.json())
        return web.json_response({"outcome": "accepted"})

    sink = web.Application()
    sink.router.add_post("/callbacks/ack", callback)
    cb = await aiohttp_server(sink)
    cases = VECTORS["v2_arrivals"]["cases"]
    for i, case in enumerate(cases):
        receiver = await aiohttp_server(create_app(tmp_path / f"receiver-{i}", options=Options(hold=0)))
        ingestion = f"{i:032x}"
        async with ClientSession() as s:
            for step in case["steps"]:
                body = _arrival_body(step["chunk"], step["variant"])
                meta = v1.ChunkHeaders(
                    ingestion,
                    "sha256:" + "1" * 64,
                    step["chunk"],
                    None,
                    10,
                    10 * (step["chunk"] - 1),
                    "p.json",
                    protocol=case["protocol"],
                    window=8 if case["protocol"] == 2 else 1,
                    order=case["order"],
                )
                headers = meta.headers(hashlib.sha256(body).digest(), str(cb.make_url("/callbacks/ack")))
                async with s.post(receiver.make_url("/ingest/chunks"), data=body, headers=headers) as r:
                    assert r.status == step["answer"], (case["about"], step, await r.text())
                    assert (v1.WINDOW in r.headers) is True  # a v2 receiver announces on every answer
            while True:  # by_key chunks are applied (and ACKed) by the receiver's workers after the 202
                async with s.get(receiver.make_url("/stats")) as r:
                    stats = await r.json()
                if stats["callbacks_pending"] == 0:
                    break
                await asyncio.sleep(0.01)
        taken = sum(1 for st in case["steps"] if st["answer"] == 202 and not st.get("duplicate"))
        assert stats["chunks_applied"] == taken, (case["about"], stats)
        assert stats.get("duplicates", 0) == sum(1 for st in case["steps"] if st.get("duplicate")), case["about"]
        await receiver.close()
