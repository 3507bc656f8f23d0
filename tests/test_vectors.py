"""The shared protocol vectors (tests/vectors/protocol-v1.json), read by this suite and by the bundle's
phpunit suite: signatures, digests, manifests and file-name headers agree across both halves."""

from __future__ import annotations

import hashlib
import json

import pytest

from pimingestd.core import canonical
from pimingestd.protocol import signing, v1

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
    from pimingestd.records import keys

    for case in VECTORS["tombstones"]:
        assert canonical.encode(keys.tombstone(case["key"], case["stored"])).decode() == case["text"]
        assert keys.extract(json.loads(case["text"]), case["key"]) == case["stored"]
    for text in VECTORS["not_tombstones"]:
        assert json.loads(text).get(keys.DELETED) is not True
