"""A record's key, and the forms it is stored and sent in.

``key = "sku"`` names a top-level field; ``key = "product.sku"`` a dotted path (a top-level field whose
name holds the dot wins, so a tombstone ``{"product.sku": …}`` names its key the same way). A key is a
string or an integer: what a catalogue names products by.

Keys are text, end to end (docs/protocol.md, "Keys"): an integer key is its decimal text, so ``100234``
and ``"100234"`` are one key, as they are one object in PIM-Core, whose key fields are text. It is stored
as the canonical JSON text of that string (``"100234"``), and a tombstone carries it as a string. One
file writes its digit keys one way (DigitKeys): a record whose key is a number where an earlier record
wrote a digit key as text, or the reverse, is refused, so two forms of one key never meet unnoticed.

PIM-Core's own lookups may still be looser than that: a key field under a case- and accent-insensitive
collation takes ``ABC``, ``abc `` and ``Abç`` for one value. ``text_fold`` gives what such a collation
compares, so that a full file holding one spelling never deletes another (records/pipeline.py).
"""

from __future__ import annotations

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
    return orjson.dumps(value if isinstance(value, str) else str(value)).decode()


def digits(text: str) -> bool:
    """Whether ``text`` is what an integer key reads as (``str(int)``): the only texts a number can meet."""
    body = text[1:] if text[:1] == "-" else text
    return body.isascii() and body.isdigit() and (body == "0" or body[0] != "0") and text != "-0"


class DigitKeys:
    """A file's digit keys, written as numbers or as text: the first one decides, the other form is refused
    (the form and the record that set it are all that is held, so memory stays flat)."""

    __slots__ = ("_first", "_number")

    def __init__(self) -> None:
        self._number: bool | None = None
        self._first = -1

    def check(self, value: str | int, position: int) -> str | None:
        """None when ``value`` (the key as the record wrote it) fits the file's form; else why it is refused."""
        number = type(value) is int
        if isinstance(value, str) and not digits(value):
            return None
        if self._number is None:
            self._number, self._first = number, position
            return None
        if number == self._number:
            return None
        here, there = ("a number", "text") if number else ("text", "a number")
        return (
            f"the key {value} is written as {here}, and record {self._first} wrote a digit key as {there}: keys are"
            ' compared as text, so 100234 and "100234" are one key; write this file\'s digit keys one way'
        )


_MISSING = object()


def text_fold(stored: str) -> str:
    """A stored key as PIM-Core's database compares it, approximately and erring towards "the same": its text
    (an integer's digits), accents and case folded (NFKD without combining marks, casefold) and trailing
    spaces dropped, as MySQL's utf8mb4_general_ci and utf8mb4_unicode_520_ci (Pimcore 11 and 12) ignore them."""
    value = orjson.loads(stored)
    text = unicodedata.normalize("NFKD", value if isinstance(value, str) else str(value))
    return "".join(c for c in text if not unicodedata.combining(c)).casefold().rstrip(" ")


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
