"""A record's key, and the forms it is stored and sent in.

``key = "sku"`` names a top-level field; ``key = "product.sku"`` a dotted path (a top-level field whose
name holds the dot wins, so a tombstone ``{"product.sku": …}`` names its key the same way). A key is a
string or an integer: what a catalogue names products by. It is stored as its canonical JSON text, so
``"1"`` and ``1`` stay two keys.

PIM-Core, though, names an object by its key's text (the bundle's ``(string) $key``): ``"1"`` and ``1`` are
one object there. ``other_spelling`` gives a key's other form, so that a full file holding one of them never
deletes the other (records/pipeline.py); ``text_fold`` goes further, to what PIM-Core's collation compares
(case, accents, trailing spaces).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import orjson

DELETED = "_deleted"  # a tombstone's marker (docs/protocol.md)


class NoKey(ValueError):
    """The record has no usable key; the text says why."""


def extract(record: Any, key: str) -> str:
    """The stored form of ``record``'s key; NoKey when it is missing or not a string or an integer."""
    value = lookup(record, key)
    if value is _MISSING:
        raise NoKey(f"the key field `{key}` is missing")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise NoKey(f"the key field `{key}` must be a string or an integer, not {_kind(value)}")
    if isinstance(value, str) and not value:
        raise NoKey(f"the key field `{key}` is empty")
    return orjson.dumps(value).decode()


_MISSING = object()

# An integer's text, as PHP's (string) writes it: no leading zero, no "-0".
_INT_TEXT = r"(0|-?[1-9][0-9]*)"
_STRING_INT = re.compile(f'"{_INT_TEXT}"')
_INT = re.compile(_INT_TEXT)


def text_fold(stored: str) -> str:
    """A stored key as PIM-Core's database compares it, approximately and erring towards "the same": its text
    (an integer's digits), accents and case folded (NFKD without combining marks, casefold) and trailing
    spaces dropped, as MySQL's utf8mb4_general_ci and utf8mb4_unicode_520_ci (Pimcore 11 and 12) ignore them."""
    value = orjson.loads(stored)
    text = unicodedata.normalize("NFKD", value if isinstance(value, str) else str(value))
    return "".join(c for c in text if not unicodedata.combining(c)).casefold().rstrip(" ")


def other_spelling(stored: str) -> str | None:
    """The stored form of the same key spelled as the other type, when PIM-Core takes both for one object:
    ``"1"`` for ``1`` and ``1`` for ``"1"``; None when there is none (``"01"``, ``"-0"``, ``"A"``)."""
    if stored[:1] == '"':
        m = _STRING_INT.fullmatch(stored)
        return None if m is None else m.group(1)
    return f'"{stored}"' if _INT.fullmatch(stored) else None


def lookup(record: Any, path: str) -> Any:
    """The value at ``path`` (a top-level name first, then a dotted path); ``_MISSING`` when absent."""
    if not isinstance(record, dict):
        return _MISSING
    if path in record:
        return record[path]
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def present(record: Any, path: str) -> bool:
    return lookup(record, path) is not _MISSING


def tombstone(key: str, stored: str) -> dict[str, Any]:
    """The record that tells PIM-Core a key left the scope."""
    return {key: orjson.loads(stored), DELETED: True}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", bool: "a boolean", float: "a fraction"}.get(type(value), "a number")
