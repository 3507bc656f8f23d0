"""``json_path``: which array of a JSON document holds the records.

Syntax: segments separated by dots. ``item`` means "the items of an array";
any other segment is an object key. A key that contains a dot or a double
quote, is empty, or is literally ``item`` is written as a JSON string:
``catalog.products.item``, ``"a.b".item``, ``p."item".item``. The path ends
with ``item`` (records are the items of an array); the default is ``item``,
the top-level array.

The path is matched against the document's structure (the parser's
start_map / map_key / start_array events), never against a joined prefix
string, so a key named ``item`` is never taken for an array and ``{"a.b": …}``
is not ``{"a": {"b": …}}``.
"""

from __future__ import annotations

import json

ITEMS = None  # the segment for "the items of an array"
Segment = str | None
_DECODER = json.JSONDecoder()


def parse(text: str | None) -> tuple[Segment, ...]:
    """The segments of ``text``; ValueError saying what is wrong."""
    if text is None or text == "":
        return (ITEMS,)
    segments: list[Segment] = []
    i = 0
    while True:
        if text.startswith('"', i):
            try:
                key, end = _DECODER.raw_decode(text, i)
            except json.JSONDecodeError as exc:
                raise ValueError(f"json_path {text!r}: bad quoted key at character {i}: {exc.msg}") from None
            segments.append(key)
            i = end
        else:
            end = text.find(".", i)
            end = len(text) if end < 0 else end
            word = text[i:end]
            if not word:
                raise ValueError(f'json_path {text!r}: empty segment at character {i} (quote an empty key as "")')
            if '"' in word:
                raise ValueError(f"json_path {text!r}: a key with a double quote must be written as a JSON string")
            segments.append(ITEMS if word == "item" else word)
            i = end
        if i == len(text):
            break
        if text[i] != ".":
            raise ValueError(f"json_path {text!r}: expected '.' at character {i}")
        i += 1
        if i == len(text):
            raise ValueError(f"json_path {text!r}: ends with '.'")
    if segments[-1] is not ITEMS:
        raise ValueError(f"json_path {text!r} must end with 'item' (records are the items of an array)")
    return tuple(segments)


def render(segments: tuple[Segment, ...]) -> str:
    """The canonical text of a path (keys quoted only where they must be)."""
    out = []
    for seg in segments:
        if seg is ITEMS:
            out.append("item")
        elif seg and seg != "item" and "." not in seg and '"' not in seg:
            out.append(seg)
        else:
            out.append(json.dumps(seg, ensure_ascii=False))
    return ".".join(out)
