"""JSON Lines: one object per line, blank lines skipped; errors name the line.

A blank line holds only JSON whitespace (space, tab, CR); a line of form feeds
or vertical tabs is not blank, and is refused as invalid JSON.

Numbers stay exact. Blocks of whole lines go through exact.py (orjson with
marked decimals, canonical bytes out). A block it declines (a blank line, an
exponent, an error to word) is declined per line: the runs of lines between
the blank ones and those ``exact.hard_lines`` names still take the fast path
together, and a run that declines as well is read line by line: a line without a ``.`` is
parsed by orjson and kept when the result holds no float (orjson rounds
exponent numbers and integers beyond 64 bits into floats); every other line
goes to the standard library parser with ``parse_float=Decimal``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, BinaryIO

import orjson

from ..errors import ParseError
from . import DEFAULT_MAX_RECORD, describe, exact
from .json_guard import lone_surrogate

_BOM = b"\xef\xbb\xbf"
_BLOCK = 1 << 19  # whole lines are read in blocks of about half a MiB
_BLOCK_WITH_VALUES = 1 << 17  # smaller when each record's parsed object is held too (exact_values)
_BLANK = b" \t\r"  # JSON whitespace, less the newline that ends the line
_RUN = 4096  # lines of a declined block parsed together at most


def _fast_items(items: list[bytes], values: list[dict[str, Any]] | None) -> Iterator[orjson.Fragment | exact.Exact]:
    """The fast path's canonical lines as records: with their parsed objects when ``values`` holds them."""
    if values is not None:
        for item, value in zip(items, values, strict=True):
            yield exact.Exact(item, value)
    else:
        for item in items:
            yield orjson.Fragment(item)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for all lines: json.loads with arguments builds a new one per call (several microseconds).
_EXACT = json.JSONDecoder(parse_float=Decimal, parse_constant=_no_constants)


def _parse_exact(line: bytes) -> Any:
    if b"\\u" in line and (escape := lone_surrogate(line)) is not None:  # json.loads keeps it; JSON refuses it
        raise ValueError(f"an unpaired surrogate escape {escape} (not valid Unicode: it cannot be passed on unchanged)")
    return _EXACT.decode(line.decode("utf-8"))


def _has_float(value: Any) -> bool:
    t = type(value)
    if t is float:
        return True
    if t is dict:
        return any(_has_float(v) for v in value.values())
    if t is list:
        return any(_has_float(v) for v in value)
    return False


def parse_line(line: bytes) -> Any:
    """One JSON value with exact numbers; raises ValueError on bad JSON."""
    if b"." not in line:
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            pass  # the exact parser decides, and words the error
        else:
            if not _has_float(value):
                return value
    return _parse_exact(line)


@dataclass(frozen=True, slots=True)
class Options:
    """JSON Lines has no options."""


def read(
    f: BinaryIO, name: str, options: Options, max_record_bytes: int = DEFAULT_MAX_RECORD, exact_values: bool = False
) -> Iterator[dict[str, Any] | orjson.Fragment | exact.Exact]:
    """Records of a JSON Lines file. Blocks of whole lines take the fast path (canonical
    bytes as orjson.Fragment, see exact.py); a block it declines is read line by line."""
    index = 0
    lineno = 0  # lines before the block
    block_size = _BLOCK_WITH_VALUES if exact_values else _BLOCK
    carry = f.read(len(_BOM))
    while 0 < len(carry) < len(_BOM) and (more := f.read(len(_BOM) - len(carry))):  # a stream's short read
        carry += more
    if carry == _BOM:
        carry = b""
    while True:
        data = f.read(block_size)
        buf = carry + data if carry else data
        if data:
            cut = buf.rfind(b"\n") + 1
            if cut == 0:  # one line longer than the block so far
                if len(buf) > max_record_bytes + 2:
                    raise _too_long(name, lineno + 1, index, max_record_bytes)
                carry = buf
                continue
            block, carry = buf[:cut], buf[cut:]
        elif buf:
            block, carry = buf, b""
        else:
            return
        lines = block.split(b"\n")
        if not lines[-1]:
            lines.pop()
        values: list[dict[str, Any]] | None = [] if exact_values else None
        fast = exact.line_items(block, values) if max(map(len, lines)) <= max_record_bytes else None
        if fast is not None:
            yield from _fast_items(fast, values)
            index += len(fast)
            lineno += len(lines)
            continue
        # Declined per line instead: runs of lines that hold nothing the fast path declines on still take it.
        fits = max(map(len, lines)) <= max_record_bytes
        hard = exact.hard_lines(block) if fits else set()
        run: list[bytes] = []
        for k, raw in enumerate(lines):
            added = fits and k not in hard and bool(raw.strip(_BLANK))
            if added:
                run.append(raw)
                if k + 1 < len(lines) and len(run) < _RUN:
                    continue
            if run:
                values = [] if exact_values else None
                got = exact.line_items(b"\n".join(run), values)
                if got is not None:
                    yield from _fast_items(got, values)
                    index += len(got)
                    lineno += len(got)
                else:  # the exact reader for each (and the words for an error)
                    for one in run:
                        lineno += 1
                        yield _one_line(name, one, lineno, index)
                        index += 1
                run = []
            if added:
                continue
            lineno += 1
            if len(raw.rstrip(b"\r")) > max_record_bytes:
                raise _too_long(name, lineno, index, max_record_bytes)
            if not raw.strip(_BLANK):
                continue
            yield _one_line(name, raw, lineno, index)
            index += 1


def _one_line(name: str, raw: bytes, lineno: int, index: int) -> dict[str, Any]:
    """Line ``lineno`` (record ``index``) by the exact line reader; a ParseError naming it when it is not an
    object."""
    try:
        record = parse_line(raw)
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"{name}: line {lineno} (record {index}): invalid JSON: {exc}") from None
    if type(record) is not dict:
        raise ParseError(f"{name}: line {lineno} (record {index}) is {describe(record)}, expected an object")
    return record


def _too_long(name: str, lineno: int, index: int, limit: int) -> ParseError:
    return ParseError(
        f"{name}: line {lineno} (record {index}) is longer than {limit} bytes ([chunking] max_record_bytes)"
    )
