"""Exact numbers at orjson's speed: canonical record bytes without a Decimal per number.

orjson parses several times faster than ijson, but reads ``19.90`` as the float
19.9 and would write it back as ``19.9``. The canonical form wants the source
digits. So, before orjson sees them, every non-integer number in value position
is turned into a string with a DEL (0x7F) at each end (``19.90`` becomes
``"\\x7f19.90\\x7f"``); after the records are written with sorted keys, the four
marker bytes around each such string are removed again and the digits come
back verbatim. All of it is C-level passes (split, join, replace, translate)
plus a few operations per number.

Why that is safe, and when this module declines (returns None, and the caller
uses the exact reader instead):

- A marker inserted inside a string of the source closes that string and leaves
  a DEL outside any string, which no JSON parser accepts: orjson fails and we
  decline. So a successful parse means every marker sits on a real number.
- A number is marked only when its digits form a JSON number (no leading zero,
  at most one minus) and the fraction ends the value (whitespace then ``,``
  ``}`` or ``]``); one that ends otherwise (an exponent) declines.
- Exponent notation, integers of 19 digits or more (orjson turns those beyond
  64 bits into floats), and decimals below 1e-6 (their canonical text is
  scientific) decline: they are found with one translate and three substring
  searches over the raw bytes.
- A window that may hold a reject file's fields (``"_reject``) declines, so the
  records this path vouches for never carry them (the readers drop them, see
  sources/__init__.py).
- The marker cannot collide with the source's own strings: a window that holds
  a DEL byte, or the escape ``\\u007f`` / ``\\u007F`` (anything starting
  ``\\u007``), declines before marking. So every DEL in orjson's output is one
  we inserted, and the only strings that hold one are our marked numbers,
  written whole as ``"\\x7f<digits>\\x7f"``.
- Unmarking then checks that every marked number is still there: exactly as
  many openers and closers as numbers marked, and no DEL left after removing
  them. A duplicate key whose marked value orjson dropped (the last duplicate
  wins) therefore declines, and the exact reader applies the same rule.

The result is byte-identical to parsing with Decimals and encoding with
canonical.encode; tests/test_exact.py checks that on generated documents.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_SORT = orjson.OPT_SORT_KEYS
# A fraction that ends a value: ".5" then optional whitespace then , } or ]
_FRACTION = re.compile(rb"(\.[0-9]+)(?=[ \t\r\n]*[,}\]])")
_INT_CHARS = b"0123456789-"
# Digits to "0" and exponent letters to one case: one translate, then substring searches.
_SHAPE = bytes.maketrans(b"123456789E", b"000000000e")
_OPEN = b'"\x7f'
_CLOSE = b'\x7f"'


def mark(body: bytes) -> tuple[bytes, int] | None:
    """``body`` with its non-integer numbers marked, and how many; None to decline."""
    if b"\x7f" in body or b"\\u007" in body:
        return None  # the source could yield a DEL of its own: markers would be ambiguous
    if b'"_reject' in body:
        return None  # maybe a reject file's fields: the exact reader's dicts are stripped of them (sources/)
    shape = body.translate(_SHAPE)
    if b"0e" in shape or b"0000000000000000000" in shape:
        return None
    if b"." not in body:
        return body, 0
    parts = _FRACTION.split(body)
    for i in range(0, len(parts) - 1, 2):
        before = parts[i]
        head = before.rstrip(_INT_CHARS)
        digits = before[len(head) :]
        core = digits[1:] if digits[:1] == b"-" else digits
        if not core.isdigit() or (core[0] == 48 and (len(core) > 1 or parts[i + 1].startswith(b".000000"))):
            return None
        parts[i] = head + _OPEN + digits
        parts[i + 1] += _CLOSE
    return b"".join(parts), len(parts) // 2


def unmark(encoded: list[bytes], marked: int) -> list[bytes] | None:
    """Records written from marked input, with the markers removed; None to decline."""
    plain = _unmarked(encoded, marked)
    # Split again even when nothing was marked: orjson's buffer for a small record is 4 KiB whatever its
    # length, and a block's records are held together (a 512 KiB block of short records held 16 MiB).
    return None if plain is None else plain.split(b"\n")


def _unmarked(encoded: list[bytes], marked: int) -> bytes | None:
    """The records, one per line (canonical JSON holds no raw newline), with the markers removed."""
    joined = b"\n".join(encoded)
    if not marked:
        return joined
    opened = joined.replace(_OPEN, b"")
    if len(joined) - len(opened) != 2 * marked:
        return None
    plain = opened.replace(_CLOSE, b"")
    if len(opened) - len(plain) != 2 * marked or b"\x7f" in plain:
        return None
    return plain


def array_items(body: bytes, values: list[dict[str, Any]] | None = None) -> list[bytes] | None:
    """The canonical bytes of each object in ``body`` (an array's items, without the
    brackets); None when any item is not an object or this path declines. ``values``, when
    given, receives each object as parsed from the marked text (see ``Exact``)."""
    encoded = _array_encoded(body, values)
    return None if encoded is None else unmark(*encoded)


def array_lines(body: bytes) -> bytes | None:
    """``array_items`` as one bytes object, a record per line: what a parse worker sends back (one object to
    pickle instead of one per record)."""
    encoded = _array_encoded(body, None)
    return None if encoded is None else _unmarked(*encoded)


def _array_encoded(body: bytes, values: list[dict[str, Any]] | None) -> tuple[list[bytes], int] | None:
    m = mark(body)
    if m is None:
        return None
    marked, count = m
    try:
        items = orjson.loads(b"[" + marked + b"]")
    except orjson.JSONDecodeError:
        return None
    dumps = orjson.dumps
    encoded = []
    try:
        for item in items:
            if type(item) is not dict:
                return None
            encoded.append(dumps(item, option=_SORT))
    except orjson.JSONEncodeError:
        return None
    if values is not None:
        values.extend(items)
    return encoded, count


def line_items(block: bytes, values: list[dict[str, Any]] | None = None) -> list[bytes] | None:
    """The canonical bytes of each line of ``block`` (JSON Lines, the last line ending in
    a newline or not); None when any line is blank, not an object, or this path declines.
    ``values``, when given, receives each object as parsed from the marked text."""
    m = mark(block)
    if m is None:
        return None
    marked, count = m
    lines = marked.split(b"\n")
    if not lines[-1]:
        lines.pop()
    loads, dumps = orjson.loads, orjson.dumps
    encoded = []
    parsed = []
    try:
        for line in lines:
            item = loads(line)
            if type(item) is not dict:
                return None
            encoded.append(dumps(item, option=_SORT))
            parsed.append(item)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    if values is not None:
        values.extend(parsed)
    return unmark(encoded, count)


class Exact:
    """A fast path's record with the object it was parsed into, for a reader asked for both (the record
    pipeline, which needs a key from every record). ``body`` is the canonical bytes; in ``value`` strings,
    integers, booleans, nulls and the structure are the source's, and a number with a fraction is a marked
    string (DEL, digits, DEL). A source string never holds a DEL (``mark`` declines), so a string value with
    one is a marked number."""

    __slots__ = ("body", "value")

    def __init__(self, body: bytes, value: dict[str, Any]) -> None:
        self.body = body
        self.value = value
