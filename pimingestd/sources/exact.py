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

A declined window is not given up whole: ``records`` splits it at its record
separators and declines per record instead (see there). Only the records that
hold what this path cannot carry are left to the exact reader.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import Any

import orjson

from ..errors import ParseError
from .json_guard import JsonGuard

_SORT = orjson.OPT_SORT_KEYS
# A fraction that ends a value: ".5" then optional whitespace then , } or ]
_FRACTION = re.compile(rb"(\.[0-9]+)(?=[ \t\r\n]*[,}\]])")
_INT_CHARS = b"0123456789-"
# Digits to "0" and exponent letters to one case: one translate, then substring searches.
_SHAPE = bytes.maketrans(b"123456789E", b"000000000e")
_OPEN = b'"\x7f'
_CLOSE = b'\x7f"'
_FIRST_KEY = re.compile(rb'\{[ \t\r\n]*"[^"\\]*"[ \t\r\n]*:')
_WS = b" \t\r\n"
_COMMA = ord(",")
_TRIES = 4  # candidate record starts looked at when a separator is learned
_HARD = (b"\x7f", b"\\u007", b'"_reject')  # what mark declines on in the raw bytes
_HARD_SHAPE = (b"0e", b"0000000000000000000")  # and in their shape (digits to 0)


def mark(body: bytes, scanned: bool = False) -> tuple[bytes, int] | None:
    """``body`` with its non-integer numbers marked, and how many; None to decline. ``scanned``: ``_spots``
    found nothing in ``body``, so the substring checks below would pass (they are not repeated)."""
    if not scanned:
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


def array_items(body: bytes, values: list[dict[str, Any]] | None = None, scanned: bool = False) -> list[bytes] | None:
    """The canonical bytes of each object in ``body`` (an array's items, without the
    brackets); None when any item is not an object or this path declines. ``values``, when
    given, receives each object as parsed from the marked text (see ``Exact``)."""
    encoded = _array_encoded(body, values, scanned)
    return None if encoded is None else unmark(*encoded)


def _array_encoded(body: bytes, values: list[dict[str, Any]] | None, scanned: bool) -> tuple[list[bytes], int] | None:
    m = mark(body, scanned)
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


def separator(body: bytes) -> tuple[bytes, bytes] | None:
    """(separator, first key) between records of ``body`` (an array's items, from a record start): a comma,
    whitespace and the first key of the last likely record start, as the JSON reader cuts windows; None when
    no second record is seen. The separator's quote opens a key in valid JSON (a quote in a string is
    escaped), so each occurrence sits between two values, at some depth: a record's, or a nested object's."""
    key = _FIRST_KEY.match(body)
    if key is None:
        return None
    cut = last_cut(body, None, key.group())
    return None if cut is None else (body[cut[0] : cut[1]] + key.group(), key.group())


def last_cut(window: bytes, sep: bytes | None, key: bytes) -> tuple[int, int] | None:
    """(index of the comma, index of the next record's "{") of the last likely record boundary."""
    if sep is not None:
        at = window.rfind(sep)
        return (at, at + len(sep) - len(key)) if at > 0 else None
    end = len(window)
    for _ in range(_TRIES):
        start = window.rfind(key, 0, end)
        if start <= 0:
            return None
        i = start - 1
        while i > 0 and window[i] in _WS:
            i -= 1
        if window[i] == _COMMA:
            return i, start
        end = start
    return None


Span = tuple[int, int]  # a record's bytes in the body, for the exact reader


def records(body: bytes, values: list[dict[str, Any]] | None = None) -> list[bytes | Span] | None:
    """A window's records, declined per record when ``array_items`` declines the window: the canonical bytes
    of each record the fast path takes, and (start, end) in ``body`` for each one it does not (the caller parses those with the
    exact reader). None when the window cannot be cut into whole records (it ends inside one, or holds bad
    JSON: the exact reader words that). ``values`` as for ``array_items`` (one per bytes item).

    The window is split at its separator (``separator``). A piece may be a nested object's part rather than a
    record, so no piece is trusted alone: a run of pieces goes through ``array_items`` whole, and when that
    parses, the run starts at a record (by induction from the window's start) and so holds whole records.
    Pieces holding what ``mark`` declines on are found by the same substring scans, mapped to their pieces,
    and left out of the runs; a run that still declines is halved until a single piece declines. Such a piece
    starts a record for the exact reader, extended by whole pieces until its brackets close."""
    spots = _spots(body)
    if not spots:  # nothing to find by substring: maybe the window goes whole (its caller did not try)
        before = len(values) if values is not None else 0
        whole = array_items(body, values, scanned=True)
        if whole is not None:
            return list(whole)
        if values is not None:
            del values[before:]  # (array_items may have put a declined window's objects there)
    found = separator(body)
    if found is None:
        starts = [0]
        ends = [len(body)]
    else:
        sep, key = found
        step = len(sep) - len(key)
        starts, ends = [], []
        at = 0
        for part in body.split(sep):
            end = at + len(part) + (len(key) if at else 0)
            starts.append(at)
            ends.append(end)
            at = end + step
    hard = {bisect_right(starts, at) - 1 for at in spots}
    cut = _Pieces(body, starts, ends, values)
    n = len(starts)
    i = 0
    while i < n:
        if i in hard:
            k = cut.one(i)
        else:
            j = i + 1
            while j < n and j not in hard:
                j += 1
            k = cut.run(i, j)
        if k is None:
            if values is not None:
                del values[cut.mark :]
            return None
        i = k
    return cut.out


class _Pieces:
    """A window split at its separator, taken run by run (``records``). A class, not closures: a recursive
    closure is a reference cycle, and each one held a window and its records until the cyclic collector ran
    (rarely, with the thresholds the daemon and the worker use): the parse worker grew by 100 MiB a file."""

    __slots__ = ("body", "ends", "mark", "out", "starts", "values")

    def __init__(self, body: bytes, starts: list[int], ends: list[int], values: list[dict[str, Any]] | None) -> None:
        self.body, self.starts, self.ends, self.values = body, starts, ends, values
        self.mark = len(values) if values is not None else 0
        self.out: list[bytes | Span] = []

    def fast(self, i: int, j: int) -> bool:
        values = self.values
        before = len(values) if values is not None else 0
        # (scanned: a run holds no piece with a spot, and a spot inside a run would start in one of them)
        got = array_items(self.body[self.starts[i] : self.ends[j - 1]], values, scanned=True)
        if got is None:
            if values is not None:
                del values[before:]  # (array_items may have put a declined run's objects there)
            return False
        self.out.extend(got)
        return True

    def one(self, i: int) -> int | None:
        """The record starting at piece ``i`` for the exact reader: the index after its last piece."""
        body, starts, ends = self.body, self.starts, self.ends
        guard = JsonGuard("", len(body) + 1)
        at = starts[i]
        try:
            for j in range(i, len(starts)):
                guard.feed(body[at : ends[j]])
                at = ends[j]
                if not guard.depth and not guard.in_string:
                    self.out.append((starts[i], ends[j]))
                    return j + 1
        except ParseError:
            return None
        return None  # the window ends inside the record

    def run(self, i: int, j: int) -> int | None:
        """Pieces i..j-1 (i starts a record): the index after the last piece taken, >= j; None: give up."""
        if self.fast(i, j):
            return j
        if j - i == 1:
            return self.one(i)
        mid = (i + j) // 2
        k = self.run(i, mid)
        if k is None or k >= j:
            return k
        return self.run(k, j)


def hard_lines(block: bytes) -> set[int]:
    """The lines of ``block`` (by index) that hold something ``mark`` declines on, found by substring."""
    starts = [0]
    at = block.find(b"\n")
    while at >= 0:
        starts.append(at + 1)
        at = block.find(b"\n", at + 1)
    return {bisect_right(starts, at) - 1 for at in _spots(block)}


def _spots(body: bytes) -> list[int]:
    """Where ``body`` holds something ``mark`` declines on, found by substring (a few per hard record)."""
    spots: list[int] = []
    for text, needles in ((body, _HARD), (body.translate(_SHAPE), _HARD_SHAPE)):
        for needle in needles:
            at = text.find(needle)
            while at >= 0:
                spots.append(at)
                at = text.find(needle, at + 1)
    return spots


def window_lines(body: bytes) -> bytes | None:
    """What a parse worker sends back for a window: its records one per line (``records``), with a line
    ``DEL start end`` for each record left to the exact reader (canonical JSON never holds a DEL); None when
    ``records`` gives up."""
    if not _spots(body):  # the whole window at once, joined as unmark leaves it (no split and join again)
        encoded = _array_encoded(body, None, True)
        plain = None if encoded is None else _unmarked(*encoded)
        if plain is not None:
            return plain
    got = records(body)
    if got is None:
        return None
    return b"\n".join(x if isinstance(x, bytes) else b"\x7f%d %d" % x for x in got)
