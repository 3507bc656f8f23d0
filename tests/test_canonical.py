"""Canonical JSON: deterministic, exact, and equal to RFC 8785 where the two agree."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from pimingestd.config import ChunkPolicy
from pimingestd.core.chunking import cut
from pimingestd.protocol import canonical

# Integers strictly inside ±2^53 (RFC 8785 refuses the bounds). Keys and strings
# without surrogates: sorting by code point (ours) and by UTF-16
# unit (RFC 8785) agree on the BMP below the surrogate block.
_bmp_text = st.text(alphabet=st.characters(max_codepoint=0xD7FF, exclude_categories=("Cs",)), max_size=12)
_any_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12)

safe_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1) | _bmp_text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_bmp_text, children, max_size=5),
    max_leaves=30,
)

exact_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.decimals(allow_nan=False, allow_infinity=False) | _any_text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_any_text, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300)
@given(safe_json)
def test_matches_rfc8785_on_common_subset(value: Any) -> None:
    """On integers within ±2^53, strings, booleans, null and nesting, our bytes are RFC 8785's."""
    assert canonical.encode(value) == rfc8785.dumps(value)


@settings(max_examples=300)
@given(exact_json)
def test_deterministic_and_exact(value: Any) -> None:
    """Equal values give equal bytes, whatever the key insertion order; numbers parse back exactly."""
    encoded = canonical.encode(value)
    assert canonical.encode(value) == encoded

    def reorder(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: reorder(v[k]) for k in reversed(list(v))}
        if isinstance(v, list):
            return [reorder(x) for x in v]
        return v

    assert canonical.encode(reorder(value)) == encoded
    back = json.loads(encoded, parse_float=Decimal)
    assert canonical.encode(back) == encoded


@settings(max_examples=100)
@given(st.lists(st.dictionaries(_any_text, exact_json, max_size=4), max_size=30), st.integers(1, 7))
def test_chunk_body_is_canonical_array(records: list[dict[str, Any]], size: int) -> None:
    """A chunk body is the canonical array of its records, by count and by bytes alike."""
    chunks = list(cut(records, ChunkPolicy(records=size)))
    assert [c.first_record for c in chunks] == list(range(0, len(records), size))
    for c in chunks:
        assert c.body == canonical.encode(records[c.first_record : c.first_record + c.records])
        assert c.checksum == canonical.checksum(canonical.sha256(c.body))
    by_bytes = list(cut(records, ChunkPolicy(bytes=10_000_000)))
    assert [c.body for c in by_bytes] == ([canonical.encode(records)] if records else [])


def test_form_is_documented_one() -> None:
    """Keys sorted by code point, no whitespace, minimal escapes, decimals verbatim."""
    value = {"é": 1, "b": [True, None], "a": Decimal("1.50"), "\U0001f600": 'x\u2028\x7f"\\/\n', "big": 2**80}
    assert (
        canonical.encode(value)
        == (
            '{"a":1.50,"b":[true,null],"big":1208925819614629174706176,"é":1,"\U0001f600":"x\u2028\x7f\\"\\\\/\\n"}'
        ).encode()
    )


@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("-Infinity"), "\ud800", {1, 2}, object()])
def test_no_canonical_form(bad: Any) -> None:
    """Values JSON cannot hold raise EncodeError rather than being written wrongly.

    Non-finite floats are kept out one step earlier: only the Excel reader yields
    floats, and it refuses NaN and infinities (tests/test_sources.py)."""
    with pytest.raises(canonical.EncodeError):
        canonical.encode([bad])


def test_manifest_and_digest_forms() -> None:
    """The manifest hashes the checksums joined by newlines; Content-Digest is RFC 9530."""
    sums = [canonical.checksum(canonical.sha256(b"[]")), canonical.checksum(canonical.sha256(b"[{}]"))]
    assert canonical.manifest(sums) == canonical.checksum(canonical.sha256(("\n".join(sums)).encode()))
    assert canonical.content_digest(canonical.sha256(b"")) == "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"


def test_the_manifest_built_one_checksum_at_a_time_is_the_joined_one() -> None:
    checksums = [canonical.checksum(canonical.sha256(str(i).encode())) for i in range(5)]
    joined = canonical.checksum(canonical.sha256("\n".join(checksums).encode("ascii")))
    m = canonical.Manifest()
    for c in checksums:
        m.add(c)
    assert m.value() == canonical.manifest(checksums) == canonical.manifest(iter(checksums)) == joined and m.count == 5
    assert canonical.manifest([]) == canonical.checksum(canonical.sha256(b""))
