"""JSON: the items of one array.

A top-level array goes through the fast path first (_FastArray: windows of
whole records parsed by orjson with exact numbers, see exact.py); a json_path
other than "item", or anything the fast path declines, is streamed with
ijson's C backend from the record it stopped at. Numbers stay exact either way:
ijson yields ``int`` for integers (any size) and ``Decimal`` for the rest
(``use_float=False``). A UTF-8 BOM is skipped. Errors (always worded by the
ijson path) name the byte range in which the parser stopped and the record index.
"""

from __future__ import annotations

import io
import re
import sys
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import ijson
import orjson

from ..errors import ParseError
from . import DEFAULT_MAX_RECORD, describe, exact, parse_workers
from . import json_path as json_path_mod
from .json_guard import JsonGuard

_SLACK = 1 << 17  # the parser reads ahead in 64 KiB blocks: spans are measured at that grain

_BOM = b"\xef\xbb\xbf"
_WS = b" \t\r\n"
_COMMA = ord(",")
_BLOCK = 1 << 18  # the fast path's read size: windows of about a quarter of a MiB (see docs/performance.md)
_LINE = 4  # windows read ahead of the one yielded at most (a few MiB)
_FIRST_KEY = re.compile(rb'\{[ \t\r\n]*"[^"\\]*"[ \t\r\n]*:')

if ijson.backend != "yajl2_c":  # pragma: no cover - depends on the wheel installed
    warnings.warn(
        f"ijson is using its {ijson.backend!r} backend, not yajl2_c: JSON parsing will be several times slower",
        RuntimeWarning,
        stacklevel=1,
    )


class _Reader:
    """Wraps the binary file: skips a BOM, runs the guard, and tracks the bytes handed to the parser.

    ``pending`` are bytes the fast path already read that the parser gets first;
    ``offset`` is the file offset they start at."""

    def __init__(self, raw: BinaryIO, guard: JsonGuard | None = None, pending: bytes = b"", offset: int = 0) -> None:
        self._raw = raw
        self._guard = guard
        self._pending = pending
        self.start = offset
        self.end = offset

    def read(self, size: int = -1) -> bytes:
        if self._pending:
            take = len(self._pending) if size < 0 else size
            data, self._pending = self._pending[:take], self._pending[take:]
        else:
            data = self._raw.read(size)
            if self.end == 0 and data.startswith(_BOM):
                self.end = len(_BOM)
                data = data[len(_BOM) :]
        self.start = self.end
        self.end += len(data)
        if self._guard is not None:
            if data:
                self._guard.feed(data)
            else:
                self._guard.finish()
        return data


class _Handoff:
    """Where the fast path stopped: the ijson reader goes on from here."""

    def __init__(self, pending: bytes = b"", offset: int = 0, records: int = 0, *, bracket: bool = True) -> None:
        self.pending = pending  # from a record start to what was read; ijson gets "[" + this
        self.offset = offset  # file offset of the first pending byte
        self.records = records  # records yielded so far
        self.bracket = bracket  # False: pending is the document from its start (after a BOM), taken as it is


class _FastArray:
    """The items of a top-level array in windows, through exact.array_items.

    A window is cut just before a record start: a comma, then the same whitespace and
    first key that separated the first two records (learned once, verified by the parse
    itself: exact.array_items declines a cut inside a record). Anything unusual hands
    the rest of the file, from the current record on, to the ijson reader.

    No guard runs here: a window is at most max_record_bytes (so are its strings),
    orjson refuses lone surrogates, and exact.py declines what orjson cannot write
    (nesting past 254 levels). What is declined goes through the guard with ijson."""

    def __init__(self, raw: BinaryIO, max_record_bytes: int, values: list[dict[str, Any]] | None = None) -> None:
        self._raw = raw
        self._values = values  # each window's parsed objects are put here (emptied by the caller per window)
        self._max = max_record_bytes
        block = _BLOCK if values is None else _BLOCK >> 2  # smaller when each record's parsed object is held too
        self._block = max(min(block, max_record_bytes // 2), 1)
        self.handoff: _Handoff | None = _Handoff()  # None once the whole array was read here

    def items(self) -> Iterator[list[bytes | dict[str, Any]]]:
        """Each window's records, in order: canonical bytes, or the exact reader's object for a record the fast
        path declined (exact.records). Without ``values`` (a plain ingestion) the parse worker
        (sources/parse_workers.py) is kept fed when this reader can lease it: while it has fewer than
        parse_workers.SLOTS windows, the next goes to it, and this thread parses the others. Whatever is
        done at the head of the line is yielded. The worker then takes more than half of the windows, and
        this thread keeps the time the rest of the spool pass needs (cutting chunks, hashing, writing)."""
        worker = parse_workers.lease() if self._values is None else None
        line: deque[_Parsed] = deque()  # windows read and not yet yielded, in file order
        records = 0
        try:
            for w in self._windows():
                if w.body is not None and not w.eof and worker is not None and worker.submit(w.body):
                    line.append(_Parsed(w, None, at_worker=True))
                else:
                    local = exact.records(w.body, self._values) if w.body is not None else None
                    line.append(_Parsed(w, local, at_worker=False))
                # What is ready at the head goes; block on the head only when the line is full or the file read.
                while line and (
                    not line[0].at_worker or worker is None or worker.ready() or len(line) > _LINE or w.eof
                ):
                    got = line[0].records(worker, self._max)
                    if got is None:  # from that window on, the ijson reader (it has every byte read since)
                        self.handoff = _Handoff(_joined(line), line[0].window.offset, records)
                        return
                    line.popleft()
                    records += len(got)
                    yield got
                if w.eof:
                    self.handoff = None
                    return
            while line:  # the windows ended on one the fast path cannot take (no body): it declines below
                got = line[0].records(worker, self._max)
                if got is None:
                    self.handoff = _Handoff(_joined(line), line[0].window.offset, records)
                    return
                line.popleft()
                records += len(got)
                yield got
        finally:
            if worker is not None:  # (what is still at the worker, if the reader stopped early, is waited out)
                parse_workers.give_back(worker)

    def _windows(self) -> Iterator[_Window]:
        """The array's items cut into windows of whole records, in order; a window without a body stops the
        fast path there (its buffer goes to the ijson reader). Nothing here parses."""
        raw = self._raw
        first = raw.read(self._block)
        while 0 < len(first) < self._block and (more := raw.read(self._block - len(first))):  # a short read
            first += more
        skip = len(_BOM) if first.startswith(_BOM) else 0
        after = first[skip:].lstrip(_WS)
        # Anything else than an array of objects: the ijson reader words it, from the bytes read here (not by
        # seeking back: a remote object is a stream read once, and seek(0) failed on it, "[]" included).
        if not after.startswith(b"["):
            self.handoff = _Handoff(first[skip:], skip, bracket=False)
            return
        after = after[1:].lstrip(_WS)
        key = _FIRST_KEY.match(after)
        if key is None:  # an empty array, or items that are not objects
            self.handoff = _Handoff(first[skip:], skip, bracket=False)
            return
        offset = len(first) - len(after)  # file offset of window[0], always a record start
        window = after
        sep: bytes | None = None
        eof = False
        while True:
            if not eof:
                more = raw.read(self._block)
                if more:
                    window += more
                else:
                    eof = True
            if len(window) > self._max:  # a record this long is the ijson reader's to judge
                break
            if eof:
                end = window.rstrip(_WS)
                if not end.endswith(b"]"):
                    break
                yield _Window(end[:-1].rstrip(_WS), window, offset, len(window), True)
                return
            cut = exact.last_cut(window, sep, key.group())
            if cut is None:
                continue
            comma, start = cut
            if sep is None:  # (a cut inside a record would fail the window's parse: then ijson goes on)
                sep = window[comma:start] + key.group()
            yield _Window(window[:comma], window, offset, start, False)
            offset += start
            window = window[start:]
        yield _Window(None, window, offset, 0, False)


@dataclass(frozen=True, slots=True)
class _Window:
    body: bytes | None  # the records' bytes, without the separators around them; None: stop the fast path here
    buffer: bytes  # every byte read from this window's first record on
    offset: int  # file offset of buffer[0]
    cut: int  # where the next window starts in buffer
    eof: bool  # the array's last window


class _Parsed:
    """A window in the line: its records parsed here (``local``), or at the worker."""

    __slots__ = ("at_worker", "local", "window")

    def __init__(self, window: _Window, local: list[bytes | exact.Span] | None, *, at_worker: bool) -> None:
        self.window = window
        self.local = local
        self.at_worker = at_worker

    def records(
        self, worker: parse_workers.Worker | None, max_record_bytes: int
    ) -> list[bytes | dict[str, Any]] | None:
        """The window's records (waiting for the worker): canonical bytes, and the exact reader's object for
        each record the fast path declined; None: the window is the ijson reader's (bad JSON, or it does not
        end at a record's end), from its first record on."""
        if self.at_worker:
            assert worker is not None
            self.at_worker = False
            lines = worker.result()
            if lines is None:
                self.local = None
            elif b"\x7f" in lines:  # records left to the exact reader: "DEL start end"
                self.local = [_span(x) if x[:1] == b"\x7f" else x for x in lines.split(b"\n")]
            else:
                self.local = lines.split(b"\n")  # type: ignore[assignment]
        got = self.local
        if got is None or all(type(x) is bytes for x in got):
            return got  # type: ignore[return-value]
        body = self.window.body
        assert body is not None
        out: list[bytes | dict[str, Any]] = []
        for x in got:
            if isinstance(x, bytes):
                out.append(x)
                continue
            start, end = x
            record = _exact_record(body[start:end], self.window.offset + start, max_record_bytes)
            if record is None:
                return None
            out.append(record)
        return out


def _span(line: bytes) -> exact.Span:
    start, end = line[1:].split(b" ")
    return int(start), int(end)


def _exact_record(text: bytes, offset: int, max_record_bytes: int) -> dict[str, Any] | None:
    """One record the fast path declined, read as the ijson reader reads it (the guard, then ijson with exact
    numbers); None when that fails: the ijson reader then reads on from the window and words the error."""
    limit = sys.get_int_max_str_digits()
    if limit and re.search(rb"[0-9]{%d}" % (limit + 1), text):
        # A number Python cannot turn into an int: ijson's C backend, asked for a single record, crashed the
        # process on it (SIGSEGV), where the ijson reader of the whole array refuses it by name. Leave it there.
        return None
    guard = JsonGuard("", max_record_bytes, offset)
    try:
        guard.feed(text)
        guard.finish()
        got = list(ijson.items(io.BytesIO(b"[" + text + b"]"), "item", use_float=False))
    except (ParseError, ijson.JSONError, UnicodeDecodeError, RecursionError):
        return None
    return got[0] if len(got) == 1 and type(got[0]) is dict else None


def _joined(line: deque[_Parsed]) -> bytes:
    """Every byte read from the first record of the line's head on: each window up to where the next
    starts, and the last one whole (its buffer holds what was read past it)."""
    windows = [p.window for p in line]
    return b"".join([w.buffer[: w.cut] for w in windows[:-1]] + [windows[-1].buffer])


@dataclass(frozen=True, slots=True)
class Options:
    json_path: str | None = None  # the array of records (syntax: json_path.py); default the top-level array

    def __post_init__(self) -> None:
        if self.json_path is not None:
            if not isinstance(self.json_path, str):
                raise ValueError("json_path must be a string")
            json_path_mod.parse(self.json_path)


def read(
    raw: BinaryIO, name: str, options: Options, max_record_bytes: int = DEFAULT_MAX_RECORD, exact_values: bool = False
) -> Iterator[dict[str, Any] | orjson.Fragment | exact.Exact]:
    """Records of the array at ``options.json_path``. The top-level array takes the fast path
    (canonical bytes as orjson.Fragment, see exact.py) as far as it can; ijson does the rest."""
    segments = json_path_mod.parse(options.json_path)
    handoff = _Handoff()
    if segments == (json_path_mod.ITEMS,):
        values: list[dict[str, Any]] | None = [] if exact_values else None
        fast = _FastArray(raw, max_record_bytes, values)
        for items in fast.items():
            if values is not None:
                parsed = iter(values)
                for item in items:  # (an object: a record the fast path declined, read by the exact reader)
                    yield exact.Exact(item, next(parsed)) if isinstance(item, bytes) else item
                if next(parsed, None) is not None:
                    raise AssertionError("the fast path's records and objects are out of step")
                values.clear()
            else:
                for item in items:
                    yield orjson.Fragment(item) if isinstance(item, bytes) else item
        if fast.handoff is None:
            return
        handoff = fast.handoff
    if handoff.pending:  # "[" stands in for the array's own bracket, one byte before the record
        bracket = b"[" if handoff.bracket else b""
        guard = JsonGuard(name, max_record_bytes, handoff.offset - len(bracket))
        reader = _Reader(raw, guard, bracket + handoff.pending, handoff.offset - len(bracket))
    else:
        reader = _Reader(raw, JsonGuard(name, max_record_bytes))
    selector = _Selector(name, segments, handoff.records)
    index = handoff.records - 1
    last_end = reader.end
    try:
        events = ijson.basic_parse(reader, use_float=False)
        for index, record in enumerate(ijson.items(selector.select(events), "item"), handoff.records):
            if reader.end - last_end > max_record_bytes + _SLACK:
                raise ParseError(
                    f"{name}: record {index} spans more than {max_record_bytes} bytes (before byte {reader.end});"
                    " raise [chunking] max_record_bytes if such records are expected"
                )
            last_end = reader.end
            yield record
    except UnicodeDecodeError as exc:
        raise ParseError(
            f"{name}: invalid UTF-8 between byte {reader.start} and {reader.end} (after record {index}): {exc.reason}"
        ) from None
    except ValueError as exc:  # an integer past int_max_str_digits (json.loads refuses it too): ijson lets it out
        raise ParseError(
            f"{name}: a value between byte {reader.start} and {reader.end} (after record {index}) is refused: {exc}"
        ) from None
    except ijson.JSONError as exc:
        arg = exc.args[0] if exc.args else type(exc).__name__
        text = arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)
        detail = text.splitlines()[0] if text else type(exc).__name__
        raise ParseError(
            f"{name}: invalid JSON between byte {reader.start} and {reader.end} (after record {index}): {detail}"
        ) from None
    selector.check_found()


_OPEN = frozenset({"start_map", "start_array"})
_CLOSE = frozenset({"end_map", "end_array"})


class _Selector:
    """Picks the records out of ijson's basic events by the document's structure.

    Yields (prefix, event, value) for ijson.items(..., "item"): each record's start
    event with prefix "item", its inner events with "" (the builder only looks at the
    start). Values off the path are skipped whole. A path key that occurs twice in one
    object is refused: the records would come from two arrays, and "the last duplicate
    wins" cannot be honoured without reading the file twice."""

    def __init__(self, name: str, segments: tuple[json_path_mod.Segment, ...], records: int = 0) -> None:
        self._name = name
        self._segments = segments
        self._records = records  # records started (for error messages)
        self._found = records > 0  # the fast path already read some of the top-level array

    def _where(self) -> str:
        return f"json_path {json_path_mod.render(self._segments)!r}"

    def check_found(self) -> None:
        if self._found:
            return
        if self._segments == (json_path_mod.ITEMS,):
            raise ParseError(
                f"{self._name}: the top-level value is not an array; set json_path to the array of records"
            )
        raise ParseError(
            f"{self._name}: {self._where()} matched nothing (records are the items of an array, e.g. 'products.item')"
        )

    def select(self, events: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, str, Any]]:
        segments, last = self._segments, len(self._segments)
        # One frame per open container on the path: (is an object, segments consumed, path key seen).
        frames: list[tuple[bool, int, bool]] = []
        consumed: int | None = 0  # for the next value: how much of the path it stands at; None = off the path
        events = iter(events)
        for event, value in events:
            if event == "map_key":
                _, k, seen = frames[-1]
                if value == segments[k]:
                    if seen:
                        raise ParseError(
                            f"{self._name}: key {value!r} occurs twice in one object on the {self._where()};"
                            " refused, as the records would come from two arrays (remove one of them)"
                        )
                    frames[-1] = (True, k, True)
                    consumed = k + 1
                else:
                    consumed = None
                continue
            if event in _CLOSE:  # a container on the path ends
                frames.pop()
                consumed = frames[-1][1] + 1 if frames and not frames[-1][0] else None
                continue
            # A value starts.
            if consumed == last:
                if event != "start_map":
                    raise ParseError(
                        f"{self._name}: record {self._records} ({self._where()}) is {_event_type(event, value)},"
                        " expected an object"
                    )
                self._records += 1
                yield "item", event, value
                yield from _inner(events)
            elif consumed is not None and segments[consumed] is json_path_mod.ITEMS and event == "start_array":
                frames.append((False, consumed, False))
                if consumed + 1 == last:
                    self._found = True
                consumed += 1
                continue
            elif consumed is not None and segments[consumed] is not json_path_mod.ITEMS and event == "start_map":
                frames.append((True, consumed, False))
                consumed = None
                continue
            elif event in _OPEN:
                _skip(events)
            # The value ended: the next one is the following item of an array on the path, or off it.
            consumed = frames[-1][1] + 1 if frames and not frames[-1][0] else None


def _inner(events: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, str, Any]]:
    """The rest of a record after its start event, up to and including its end."""
    depth = 1
    for event, value in events:
        if event in _OPEN:
            depth += 1
        elif event in _CLOSE:
            depth -= 1
        yield "", event, value
        if not depth:
            return


def _skip(events: Iterator[tuple[str, Any]]) -> None:
    """Consume the rest of a container whose start event was just read."""
    deque(_inner(events), maxlen=0)


def _event_type(event: str, value: Any) -> str:
    if event == "start_array":
        return "an array"
    return describe(value)
