"""Cheap structural checks on raw JSON bytes, before the parser builds anything from them.

ijson's C backend is fast but has three blind spots this guard covers, at a
few C-level passes over each buffer (bytes.replace/translate/split):

- nesting depth: ijson builds a prefix string per level, so memory grows with
  the square of the depth (a 200 kB file nested 100,000 deep exhausts memory);
- very long strings: a single string is refused once it exceeds the record
  limit, before the parser has buffered all of it;
- lone surrogate escapes (``"\\ud800"``): yajl silently turns an unpaired high
  surrogate into ``?``, and an unpaired low one into bytes that then fail as
  "invalid UTF-8"; we refuse both, naming the escape. The bytes
  held back to judge an escape split across buffers are re-judged against the
  very next buffer, whatever it holds;
- form feed and vertical tab: yajl takes them for whitespace between tokens,
  but JSON's whitespace is only space, tab, LF and CR (RFC 8259), and inside a
  string a raw control character is invalid anyway. Either byte is refused.

State (inside a string or not, depth, a dangling backslash) carries across
buffers, so a token split between two reads is judged correctly.
"""

from __future__ import annotations

import re
from itertools import accumulate

from ..errors import ParseError

MAX_DEPTH = 256  # orjson writes at most 254 nested levels anyway

_KEEP = b'[]{}"'
_DELETE = bytes(b for b in range(256) if b not in _KEEP)
_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_LONE_HIGH = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})")
_HIGH = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}")
_LOW = re.compile(rb"\\u[dD][c-fC-F][0-9a-fA-F]{2}")  # (not a lookbehind: that makes re try it at every byte)
_PAIR = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")
_LOOKAHEAD = 11  # bytes a lone-surrogate match needs after its start to be judged


def lone_surrogate(text: bytes) -> str | None:
    """The first unpaired surrogate escape in a whole JSON text, or None: for a text the standard library parses
    (JSON Lines' exact path), which keeps lone surrogates where the guard refuses them."""
    plain = text.replace(b"\\\\", b"//")
    high = _LONE_HIGH.search(plain)
    low = _LOW.search(_PAIR.sub(b"", plain))
    found = high or low
    return None if found is None else found.group().decode()


class JsonGuard:
    def __init__(self, name: str, max_string_bytes: int, offset: int = 0) -> None:
        """``offset``: the file offset of the first byte fed (when a parse starts mid-file)."""
        self._name = name
        self._max_string = max_string_bytes
        self._in_string = False
        self._depth = 0
        self._run = 0  # bytes of the string currently open
        self._carry = b""  # a trailing odd backslash: it escapes the next buffer's first byte
        self._tail = b""  # last bytes, rescanned for surrogate pairs split across buffers
        self._offset = offset  # file offset of this buffer's first byte

    def feed(self, data: bytes) -> None:
        start = self._offset
        if b"\x0c" in data or b"\x0b" in data:
            at = min(i for i in (data.find(b"\x0c"), data.find(b"\x0b")) if i >= 0)
            what = "a form feed (0x0C)" if data[at] == 0x0C else "a vertical tab (0x0B)"
            raise ParseError(
                f"{self._name}: {what} at byte {start + at}: not JSON whitespace (only space, tab, LF and CR are),"
                " and not allowed raw inside a string"
            )
        self._offset += len(data)
        buf = self._carry + data
        if buf.endswith(b"\\") and (len(buf) - len(buf.rstrip(b"\\"))) % 2:
            self._carry, buf = b"\\", buf[:-1]
        else:
            self._carry = b""
        # Escaped backslashes masked first (same length, no backslash), so that "\\\\ud83d" (a backslash, then the
        # text "ud83d") is no escape, and "\\ud83d\\\\\\ude00" no pair; the look-ahead keeps masked bytes too: a
        # buffer ending in "\\\\" then one starting "ud83d" refused valid JSON as an unpaired surrogate.
        plain = buf.replace(b"\\\\", b"//") if b"\\\\" in buf else buf
        if b"\\u" in plain or b"\\u" in self._tail:
            self._surrogates(plain, start)
        else:  # nothing to judge here, but the look-ahead must still move on to these bytes
            self._tail = (self._tail + plain)[-_LOOKAHEAD:]
        if b'\\"' in buf:  # only a quote after a backslash can be escaped: drop escaped ones
            buf = buf.replace(b"\\\\", b"").replace(b'\\"', b"")
        # Quotes and brackets only. Dropping two adjacent quotes keeps every other
        # character's inside/outside-a-string parity, and removes most strings at C speed.
        reduced = (b'"' if self._in_string else b"") + buf.translate(None, _DELETE)
        reduced = reduced.replace(b'""', b"")
        outside = reduced
        ends_in_string = False
        if b'"' in reduced:
            parts = reduced.split(b'"')
            outside = b"".join(parts[0::2])
            ends_in_string = len(parts) % 2 == 0
        if outside:
            self._depth = self._nest(outside, start)
        if ends_in_string:
            last_quote = buf.rfind(b'"')  # a real quote: escaped ones are gone from buf
            self._run = self._run + len(data) if last_quote < 0 else len(buf) - last_quote - 1
            if self._run > self._max_string:
                raise ParseError(
                    f"{self._name}: a string longer than {self._max_string} bytes (the record size limit,"
                    f" [chunking] max_record_bytes) around byte {self._offset}"
                )
        else:
            self._run = 0
        self._in_string = ends_in_string

    @property
    def depth(self) -> int:
        """Containers open after what was fed."""
        return self._depth

    @property
    def in_string(self) -> bool:
        """What was fed ends inside a string."""
        return self._in_string

    def _nest(self, brackets: bytes, start: int) -> int:
        """The depth after ``brackets``; raise when it went past MAX_DEPTH on the way.

        Fast path in C: strip innermost matched pairs pass by pass (passes = local
        nesting). What remains of valid JSON is closers then openers. Only when
        that bound crosses the limit is the exact running depth computed."""
        rest, passes = brackets, 0
        while passes <= MAX_DEPTH:
            shorter = rest.replace(b"[]", b"").replace(b"{}", b"")
            if len(shorter) == len(rest):
                break
            rest, passes = shorter, passes + 1
        closers = len(rest) - len(rest.lstrip(b"]}"))
        openers = len(rest) - closers
        if self._depth + openers + passes <= MAX_DEPTH:
            return self._depth - closers + openers
        steps = (1 if b == 1 else -1 for b in brackets.translate(_STEP))
        levels = list(accumulate(steps, initial=self._depth))
        if max(levels) > MAX_DEPTH:
            raise ParseError(
                f"{self._name}: JSON nested deeper than {MAX_DEPTH} levels between byte {start} and {self._offset}"
            )
        return levels[-1]

    def _surrogates(self, buf: bytes, start: int) -> None:
        scan = self._tail + buf
        limit = len(scan) - _LOOKAHEAD
        for m in _LONE_HIGH.finditer(scan):
            if m.start() < limit:
                self._lone(m, start - len(self._tail))
        # A low one needs only the high escape before it, which the kept bytes hold. One that ended inside them
        # was judged with the buffer before (where that high escape may be out of sight now).
        kept = len(self._tail)
        if _LOW.search(_PAIR.sub(b"", scan)) is None:  # in C: no low one outside a pair
            self._tail = scan[-_LOOKAHEAD:]
            return
        for m in _LOW.finditer(scan):
            at = m.start()
            if m.end() > kept and not (at >= 6 and _HIGH.fullmatch(scan, at - 6, at)):
                self._lone(m, start - kept)
        self._tail = scan[-_LOOKAHEAD:]

    def _lone(self, m: re.Match[bytes], scan_start: int) -> None:
        raise ParseError(
            f"{self._name}: an unpaired surrogate escape {m.group().decode()} near byte {max(scan_start + m.start(), 0)}"
            " (not valid Unicode: it cannot be passed on unchanged)"
        )

    def finish(self) -> None:
        """At end of input: judge what was held back for lookahead."""
        for m in _LONE_HIGH.finditer(self._tail):
            self._lone(m, self._offset - len(self._tail))
