"""The orjson fast path (exact.py) against the exact readers: byte-identical, or it declines.

Documents are written by hand from raw number tokens, so the tests reach the
spellings a JSON writer would never produce (trailing zeros, exponents, huge
integers, tiny decimals) and strings full of the characters the marker logic
looks at.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ijson
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pimingestd.errors import ParseError
from pimingestd.protocol import canonical
from pimingestd.sources import SourceSpec, exact, jsonl, read_records


@dataclass(frozen=True)
class Num:
    text: str


_digits = st.text("0123456789", min_size=1, max_size=9)
numbers = st.one_of(
    st.integers(min_value=-(10**25), max_value=10**25).map(lambda i: Num(str(i))),
    st.builds(
        lambda sign, i, f: Num(f"{sign}{i}.{f}"),
        st.sampled_from(["", "-"]),
        st.integers(min_value=0, max_value=10**7),
        _digits,
    ),
    st.sampled_from(
        [
            "1e5",
            "1.5E+3",
            "-2.5e-3",
            "1E16",
            "0.0000001",
            "0.000001",
            "-0.0",
            "0.0",
            "-0",
            "1.10",
            "100.000",
            "12345678901234567890",
            "-9223372036854775809",
            "18446744073709551615",
            "9223372036854775807",
        ]
    ).map(Num),
)
# Strings heavy in what the marker logic reacts to: digits, dots, quotes, brackets, DEL.
tricky_text = st.text(alphabet=st.sampled_from(list('0123456789.:,{}[]"\\e -\x7fxé\n')), max_size=12)
keys = st.text(alphabet=st.sampled_from(list('abc:,."\x7f1')), min_size=1, max_size=4)
values = st.recursive(
    numbers | tricky_text | st.booleans() | st.none(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(keys, kids, max_size=4),
    max_leaves=12,
)
records = st.dictionaries(keys, values, min_size=1, max_size=6)
spacing = st.sampled_from(["", " ", "\n  "])


def dump(value: Any, ws: str, ascii_only: bool) -> str:
    if isinstance(value, Num):
        return value.text
    if isinstance(value, dict):
        items = [f"{dump(k, ws, ascii_only)}:{ws}{dump(v, ws, ascii_only)}" for k, v in value.items()]
        return "{" + ws + f",{ws}".join(items) + ws + "}"
    if isinstance(value, list):
        return "[" + ws + f",{ws}".join(dump(v, ws, ascii_only) for v in value) + ws + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def reference_items(doc: bytes) -> list[bytes] | None:
    """What the exact reader and canonical.encode make of an array; None when they refuse it."""
    try:
        items = list(ijson.items(io.BytesIO(doc), "item", use_float=False))
        return [canonical.encode(item) for item in items]
    except (ijson.JSONError, canonical.EncodeError, UnicodeDecodeError):
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, min_size=1, max_size=5), spacing, st.booleans())
def test_array_items_equal_the_exact_reader_or_decline(recs: list[dict[str, Any]], ws: str, ascii_only: bool) -> None:
    body = f",{ws}".join(dump(r, ws, ascii_only) for r in recs).encode()
    fast = exact.array_items(body)
    if fast is not None:
        assert fast == reference_items(b"[" + body + b"]")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, min_size=1, max_size=5), st.booleans())
def test_line_items_equal_the_line_reader_or_decline(recs: list[dict[str, Any]], ascii_only: bool) -> None:
    block = "".join(dump(r, "", ascii_only).replace("\n", "\\n") + "\n" for r in recs).encode()
    fast = exact.line_items(block)
    if fast is not None:
        reference = [canonical.encode(jsonl.parse_line(line)) for line in block.splitlines()]
        assert fast == reference


def test_ordinary_product_records_take_the_fast_path() -> None:
    """The fast path must actually run on everyday data, trailing zeros included."""
    body = b'{"sku":"A-1","price":19.90,"weight":0.250,"tags":["x","y"],"n":3},{"sku":"A-2","price":-0.5,"n":-7}'
    fast = exact.array_items(body)
    assert fast == [
        b'{"n":3,"price":19.90,"sku":"A-1","tags":["x","y"],"weight":0.250}',
        b'{"n":-7,"price":-0.5,"sku":"A-2"}',
    ]


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":1e5}',  # exponent: orjson would round it through a float
        b'{"a":12345678901234567890}',  # beyond 64 bits
        b'{"a":0.0000001}',  # canonical text is 1E-7
        b'{"a":"ratio 3:1.5, ok"}',  # a marker would land inside the string
        b'{"a":01.5}',  # not JSON
        b'{"a":"\x7f1.5\x7f","b":2.50}',  # the source's own markers next to a real one
        b'{"a":"\x7f1.5\x7f"}',  # a DEL of the source's own: markers would be ambiguous
        b'{"a":"\\u007f7\\u007f"}',  # the same, escaped
        b'{"a":0.5,"a":1},{"s":"x"}',  # a duplicate key drops a marked number
        b'{"a":[.5]}',
        b"[1,2]",  # not an object
    ],
)
def test_declines(body: bytes) -> None:
    assert exact.array_items(body) is None


def _write(path: Path, recs: list[dict[str, Any]]) -> None:
    path.write_bytes(("[\n" + ",\n".join(json.dumps(r) for r in recs) + "\n]\n").encode())


def _canonical(path: Path) -> list[bytes]:
    return [canonical.encode(r) for r in read_records(path, SourceSpec("json"))]


def test_file_read_equals_ijson_across_windows_and_a_handoff(tmp_path: Path) -> None:
    """Several windows on the fast path, then an exponent number hands the rest to ijson."""
    recs: list[dict[str, Any]] = [{"sku": f"S{i}", "price": f"{i}.{i % 10}0", "n": i} for i in range(60_000)]
    path = tmp_path / "p.json"
    text = "[\n" + ",\n".join(json.dumps(r).replace(f'"{r["price"]}"', r["price"]) for r in recs) + "\n]\n"
    text = text.replace('"n": 50000}', '"n": 5e4}')  # a late exponent forces the handoff
    path.write_text(text)
    kinds = {type(r) for r in read_records(path, SourceSpec("json"))}
    assert kinds == {orjson.Fragment, dict}  # both paths ran
    with open(path, "rb") as f:
        reference = [canonical.encode(r) for r in ijson.items(f, "item", use_float=False)]
    assert _canonical(path) == reference
    assert len(reference) == 60_000


def test_errors_after_the_fast_path_name_the_place(tmp_path: Path) -> None:
    recs = [{"sku": f"S{i}", "n": i} for i in range(20_000)]
    path = tmp_path / "bad.json"
    _write(path, recs)
    data = path.read_bytes()
    broken = data.replace(b'{"sku": "S19990"', b'{"sku": S19990"')
    path.write_bytes(broken)
    with pytest.raises(ParseError) as info:
        list(read_records(path, SourceSpec("json")))
    message = str(info.value)
    at = broken.index(b"S19990")
    start, end = (int(x) for x in message.split("between byte ")[1].split(" (", maxsplit=1)[0].split(" and "))
    assert start <= at <= end, message
    assert "after record 19989" in message


def test_exact_values_give_the_same_bytes_and_the_source_strings(tmp_path: Path) -> None:
    """Asked for exact_values (the record pipeline), the fast paths yield exact.Exact: the same canonical bytes
    as without, and each object as parsed, where strings, integers and structure are the source's and a
    number with a fraction is a marked string. Both JSON Lines and a top-level JSON array, over several
    blocks and a record the fast path declines."""
    from pimingestd.protocol import canonical
    from pimingestd.sources import SourceSpec, read_records
    from pimingestd.sources.exact import Exact

    rows = [
        {"sku": f"S{i}", "price": f"{i}.50", "n": i, "tags": ["a", {"b": i}], "ok": i % 2 == 0, "none": None}
        for i in range(6000)
    ]
    text = [json.dumps({**r, "price": float(r["price"])}) for r in rows]
    text[4000] = text[4000].replace('"n": 4000', '"n": 4000, "e": 1e300')  # exponent: this window declines
    for fmt, body in (("jsonl", "\n".join(text) + "\n"), ("json", "[" + ",\n".join(text) + "]")):
        path = tmp_path / f"x.{fmt}"
        path.write_text(body)
        plain = [canonical.encode(r) for r in read_records(path, SourceSpec(fmt))]
        both = list(read_records(path, SourceSpec(fmt, exact_values=True)))
        assert sum(type(r) is Exact for r in both) > 3000, fmt
        assert [r.body if type(r) is Exact else canonical.encode(r) for r in both] == plain, fmt
        for r in both:
            if type(r) is Exact:
                real = json.loads(r.body)
                assert r.value["sku"] == real["sku"] and r.value["n"] == real["n"] and r.value["tags"] == real["tags"]
                assert r.value["price"] == "\x7f" + json.dumps(real["price"]) + "\x7f"  # the digits, marked


def _priced_file(path: Path, n: int) -> list[bytes]:
    """A JSON array of ``n`` records with decimal prices written as numbers; the canonical bytes ijson reads."""
    recs: list[dict[str, Any]] = [{"sku": f"S{i}", "price": f"{i}.{i % 10}0", "n": i} for i in range(n)]
    path.write_text("[\n" + ",\n".join(json.dumps(r).replace(f'"{r["price"]}"', r["price"]) for r in recs) + "\n]\n")
    with open(path, "rb") as f:
        return [canonical.encode(r) for r in ijson.items(f, "item", use_float=False)]


def _windows_taken(monkeypatch: pytest.MonkeyPatch, shared: bool | None = None) -> list[int]:
    """The sizes of the windows the parse worker takes from now on (``shared``: whether it must have the
    shared memory, when given)."""
    from pimingestd.sources import parse_workers

    taken: list[int] = []
    real = parse_workers.Worker.submit

    def counting(self: parse_workers.Worker, body: bytes) -> bool:
        if shared is not None:
            assert (self._shared is not None) == shared
        ok = real(self, body)
        taken.extend([len(body)] if ok else [])
        return ok

    monkeypatch.setattr(parse_workers.Worker, "submit", counting)
    return taken


@pytest.mark.parametrize("late", [5_000, 21_000, 37_000, 52_000, 59_999])
def test_the_parse_worker_gives_the_same_records_and_hands_off_from_either_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, late: int
) -> None:
    """The fast path on two cores (sources/parse_workers.py) against one core and against ijson: the same
    bytes, whether the window that declines (an exponent at record ``late``) went to the worker or stayed
    here, and whether it is the first, a middle or the last one."""
    from pimingestd.sources import parse_workers

    recs: list[dict[str, Any]] = [{"sku": f"S{i}", "price": f"{i}.{i % 10}0", "n": i} for i in range(60_000)]
    path = tmp_path / "p.json"
    text = "[\n" + ",\n".join(json.dumps(r).replace(f'"{r["price"]}"', r["price"]) for r in recs) + "\n]\n"
    path.write_text(text.replace(f'"n": {late}}}', f'"n": {late}e0}}'))
    with open(path, "rb") as f:
        reference = [canonical.encode(r) for r in ijson.items(f, "item", use_float=False)]
    submitted = _windows_taken(monkeypatch)
    assert _canonical(path) == reference
    assert submitted, "no window went to the worker"
    assert parse_workers.enabled(), "the worker failed: the test compared one core with itself"
    monkeypatch.setenv(parse_workers.ENV, "0")  # one core: the same bytes
    assert parse_workers.lease() is None
    assert _canonical(path) == reference


def test_windows_too_large_for_shared_memory_go_by_pipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With slots smaller than the windows (and than their records), every window and every answer takes the
    parse worker's pipe instead of its shared memory: the same bytes, and the worker still took windows."""
    from pimingestd.sources import parse_workers

    path = tmp_path / "p.json"
    reference = _priced_file(path, 150_000)  # 14 windows: however slow the worker, it takes one in five at least
    pool = parse_workers._Pool()
    monkeypatch.setattr(parse_workers, "_pool", pool)
    taken = _windows_taken(monkeypatch)
    try:
        parse_workers.warm()
        taken.clear()
        monkeypatch.setattr(parse_workers, "_SLOT", 1 << 12)  # 4 KiB: no window fits
        assert _canonical(path) == reference
        assert len(taken) >= 2 and min(taken) > 1 << 12, taken
        assert pool.enabled()
    finally:
        pool.shutdown()


def test_a_worker_that_dies_mid_file_leaves_the_records_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker is killed while the reader has a window at it: that window is parsed here, the rest of the
    file too, and the records are the same as with no worker at all. The worker is not used again.

    The worker is stopped (SIGSTOP) before the file is read and killed as soon as it has been given a window,
    so it cannot have answered first: killed after it had answered every window it was given (on a loaded
    machine, while the reader was still reading), the reader never met the dead worker, and the test failed."""
    import signal

    from pimingestd.sources import parse_workers

    path = tmp_path / "p.json"
    reference = _priced_file(path, 60_000)
    pool = parse_workers._Pool()
    monkeypatch.setattr(parse_workers, "_pool", pool)
    real = parse_workers.Worker.submit
    given: list[int] = []

    def submit_then_kill(self: parse_workers.Worker, body: bytes) -> bool:
        ok = real(self, body)
        if ok and not given:
            os.kill(pool._process.pid, signal.SIGKILL)
            pool._process.join(10)
        given.extend([len(body)] if ok else [])
        return ok

    try:
        parse_workers.warm()
        assert pool._process is not None
        os.kill(pool._process.pid, signal.SIGSTOP)  # it answers nothing from now on
        monkeypatch.setattr(parse_workers.Worker, "submit", submit_then_kill)
        got = [canonical.encode(r) for r in read_records(path, SourceSpec("json"))]
        assert given, "no window went to the worker"
        assert got == reference
        assert not pool.enabled() and parse_workers.lease() is None
    finally:
        pool.shutdown()


def test_without_shared_memory_every_window_goes_by_pipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No memfd on this system: the worker still takes windows (by pipe, one at a time) and the bytes are the
    same."""
    from pimingestd.sources import parse_workers

    path = tmp_path / "p.json"
    reference = _priced_file(path, 150_000)  # 14 windows: however slow the worker, it takes one in five at least
    pool = parse_workers._Pool()
    monkeypatch.setattr(parse_workers, "_pool", pool)

    def no_memfd(*_: Any) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "memfd_create", no_memfd)
    taken = _windows_taken(monkeypatch, shared=False)
    try:
        assert _canonical(path) == reference
        assert len(taken) >= 2 and pool.enabled()
    finally:
        pool.shutdown()


def test_two_readers_at_once_share_the_worker_by_lease(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two spool passes at once (threads): one leases the worker, the other parses on its own core; both get
    their file's bytes, and the worker is free again afterwards."""
    import threading

    from pimingestd.sources import parse_workers

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    ref_a, ref_b = _priced_file(a, 60_000), _priced_file(b, 45_000)
    results: dict[str, list[bytes]] = {}
    start = threading.Barrier(2)
    leased: list[bool] = []
    real = parse_workers.lease

    def lease() -> parse_workers.Worker | None:
        worker = real()
        leased.append(worker is not None)
        return worker

    monkeypatch.setattr(parse_workers, "lease", lease)

    def read(name: str, path: Path) -> None:
        start.wait()
        results[name] = _canonical(path)

    threads = [threading.Thread(target=read, args=(n, p)) for n, p in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results["a"] == ref_a and results["b"] == ref_b
    assert sorted(leased) == [False, True], leased  # one had the worker, the other read on its own core
    worker = real()
    assert worker is not None, "the lease was not given back"
    parse_workers.give_back(worker)


def _resolved(body: bytes, got: list[bytes | exact.Span]) -> list[bytes] | None:
    """exact.records' answer with each span read by the exact reader; None when one of them fails there."""
    out = []
    for x in got:
        if type(x) is bytes:
            out.append(x)
            continue
        start, end = x  # type: ignore[misc]
        one = reference_items(b"[" + body[start:end] + b"]")
        if one is None or len(one) != 1:
            return None
        out.extend(one)
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, min_size=1, max_size=8), spacing, st.booleans())
def test_a_window_declined_per_record_equals_the_exact_reader(
    recs: list[dict[str, Any]], ws: str, ascii_only: bool
) -> None:
    """exact.records on generated windows (hard numbers, tricky strings and keys, nested objects): its fast
    records and its spans read exactly are the exact reader's records, or it gives up."""
    body = f",{ws}".join(dump(r, ws, ascii_only) for r in recs).encode()
    values: list[dict[str, Any]] = []
    got = exact.records(body, values)
    if got is None:
        return
    assert sum(type(x) is bytes for x in got) == len(values)
    resolved = _resolved(body, got)
    if resolved is not None:
        assert resolved == reference_items(b"[" + body + b"]")


def _hard_window(hard: list[int], n: int = 40, nested: bool = False) -> tuple[bytes, list[bytes]]:
    """``n`` product records, those at ``hard`` holding a 30-digit integer; the window's bytes and what the exact
    reader makes of them. ``nested``: compact records whose variants start with the same key as a record."""
    texts = []
    for i in range(n):
        extra = ',"big":123456789012345678901234567890' if i in hard else ""
        if nested:
            kids = ",".join(f'{{"sku":"S{i}-{k}","price":{k}.50{extra}}}' for k in range(3))
            texts.append(f'{{"sku":"S{i}","price":{i}.10,"variants":[{kids}]}}')
        else:
            texts.append(f'{{"sku":"S{i}","price":{i}.10,"n":{i}{extra}}}')
    body = ("," if nested else ",\n").join(texts).encode()
    reference = reference_items(b"[" + body + b"]")
    assert reference is not None
    return body, reference


@pytest.mark.parametrize(
    "hard", [[0], [17], [39], [16, 17], [0, 1, 2], [38, 39], [0, 20, 39], list(range(40))], ids=str
)
@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_only_the_hard_records_of_a_window_leave_the_fast_path(hard: list[int], nested: bool) -> None:
    """A 30-digit integer at the start, middle or end of a window, or in adjacent records: exactly those records
    go to the exact reader, the others stay on the fast path, and the bytes are the exact reader's. Nested:
    the separator also occurs between a record's variants."""
    body, reference = _hard_window(hard, nested=nested)
    assert exact.array_items(body) is None  # the whole window declines
    got = exact.records(body)
    assert got is not None
    assert [i for i, x in enumerate(got) if type(x) is not bytes] == hard
    assert _resolved(body, got) == reference
    lines = exact.window_lines(body)  # what the parse worker answers
    assert lines is not None and lines.count(b"\x7f") == len(hard)


def test_a_window_that_ends_inside_a_record_is_given_up() -> None:
    """The window's last separator is inside a record (nested): it cannot be cut into whole records."""
    body, _ = _hard_window([5], n=10, nested=True)
    assert exact.records(body[: body.rindex(b',{"sku"')]) is None


def _hard_file(path: Path, n: int, hard: set[int]) -> list[bytes]:
    """A JSON array of ``n`` records; those in ``hard`` hold a 30-digit integer, a 25-digit decimal and an
    exponent. Returns what ijson reads."""
    texts = []
    for i in range(n):
        extra = ', "big": 123456789012345678901234567890, "d": 0.1234567890123456789012345, "e": 1.5e3' * (i in hard)
        texts.append(f'{{"sku": "S{i}", "price": {i}.{i % 10}0, "n": {i}{extra}}}')
    path.write_text("[\n" + ",\n".join(texts) + "\n]\n")
    with open(path, "rb") as f:
        return [canonical.encode(r) for r in ijson.items(f, "item", use_float=False)]


@pytest.mark.parametrize("worker", [True, False], ids=["worker", "local"])
def test_a_file_with_hard_records_throughout_stays_on_the_fast_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker: bool
) -> None:
    """One record in a hundred is hard, in every window: only those records are the exact reader's objects
    (dicts), every other one is the fast path's (a Fragment), with the parse worker and without; the same bytes
    as ijson, also with exact_values."""
    from pimingestd.sources import parse_workers

    hard = set(range(3, 60_000, 100)) | {59_999}
    path = tmp_path / "p.json"
    reference = _hard_file(path, 60_000, hard)
    if not worker:
        monkeypatch.setenv(parse_workers.ENV, "0")
    submitted = _windows_taken(monkeypatch)
    got = list(read_records(path, SourceSpec("json")))
    assert [i for i, r in enumerate(got) if type(r) is dict] == sorted(hard)
    assert [canonical.encode(r) for r in got] == reference
    assert bool(submitted) == worker
    both = list(read_records(path, SourceSpec("json", exact_values=True)))
    assert [i for i, r in enumerate(both) if type(r) is dict] == sorted(hard)
    assert [r.body if type(r) is exact.Exact else canonical.encode(r) for r in both] == reference


@pytest.mark.parametrize("worker", [True, False], ids=["worker", "local"])
def test_a_hard_record_that_is_also_bad_json_is_worded_by_the_ijson_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker: bool
) -> None:
    """A record with a 30-digit integer and a syntax error, in the middle of a window after fast windows: the
    error names the place and the record, as the ijson reader words it from that window on."""
    from pimingestd.sources import parse_workers

    if not worker:
        monkeypatch.setenv(parse_workers.ENV, "0")
    path = tmp_path / "bad.json"
    _hard_file(path, 20_000, {19_990})
    broken = path.read_bytes().replace(b'{"sku": "S19990"', b'{"sku": S19990"')
    path.write_bytes(broken)
    with pytest.raises(ParseError) as info:
        list(read_records(path, SourceSpec("json")))
    message = str(info.value)
    at = broken.index(b"S19990")
    start, end = (int(x) for x in message.split("between byte ")[1].split(" (", maxsplit=1)[0].split(" and "))
    assert start <= at <= end, message
    assert "after record 19989" in message


def test_json_lines_decline_per_line(tmp_path: Path) -> None:
    """JSON Lines: a block with hard lines (and blank ones) is declined per line: only the hard lines are the
    exact reader's objects, the rest stays on the fast path, and the bytes are the line reader's, also with
    exact_values."""
    hard = set(range(7, 20_000, 100))
    texts = []
    for i in range(20_000):
        extra = ', "big": 123456789012345678901234567890, "e": 2E5' * (i in hard)
        texts.append(f'{{"sku": "S{i}", "price": {i}.{i % 10}0{extra}}}' + ("\n  \r" if i % 997 == 0 else ""))
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(texts) + "\n")
    reference = [canonical.encode(jsonl.parse_line(x)) for x in path.read_bytes().splitlines() if x.strip(b" \r")]
    got = list(read_records(path, SourceSpec("jsonl")))
    assert [i for i, r in enumerate(got) if type(r) is dict] == sorted(hard)
    assert [canonical.encode(r) for r in got] == reference
    both = list(read_records(path, SourceSpec("jsonl", exact_values=True)))
    assert [i for i, r in enumerate(both) if type(r) is dict] == sorted(hard)
    assert [r.body if type(r) is exact.Exact else canonical.encode(r) for r in both] == reference


@pytest.mark.parametrize("bad", ['{"sku": S5}', "[1]", '{"a": "\\ud800"}'])
def test_json_lines_errors_after_hard_lines_name_the_line(tmp_path: Path, bad: str) -> None:
    """A bad line in a block that also holds hard lines and blank ones: the error names its line and record."""
    lines = ['{"sku": "S0", "n": 1e3}', "", '{"sku": "S1", "p": 1.50}', '{"sku": "S2"}', bad, '{"sku": "S3"}']
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ParseError, match=r": line 5 \(record 3\)"):
        list(read_records(path, SourceSpec("jsonl")))


def test_a_window_declined_per_record_leaves_no_garbage_cycle() -> None:
    """exact.records frees its window and records by reference counting alone: the daemon and the parse worker
    run the cyclic collector rarely, and a cycle per declined window grew the worker by 100 MiB a file."""
    import gc

    body, _ = _hard_window([3, 20], n=40, nested=True)
    gc.collect()
    gc.disable()
    try:
        assert exact.records(body) is not None
        assert exact.records(body[: body.rindex(b',{"sku"')]) is None  # given up half-way
        assert exact.window_lines(body) is not None
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_an_idle_worker_is_stopped_and_started_again_when_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parse worker stops once idle (its memory back to the system), and the next file starts a new one:
    the same bytes, windows at the new worker, and the old process gone."""
    import time

    import psutil

    from pimingestd.sources import parse_workers

    path = tmp_path / "p.json"
    reference = _priced_file(path, 60_000)
    pool = parse_workers._Pool()
    monkeypatch.setattr(parse_workers, "_pool", pool)
    monkeypatch.setenv(parse_workers.IDLE_ENV, "0.2")
    try:
        parse_workers.warm()
        assert pool._process is not None
        first = pool._process.pid
        deadline = time.monotonic() + 60
        while pool._process is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool._process is None, "the idle worker was not stopped"

        def running(pid: int) -> bool:
            try:
                return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return False

        while running(first) and time.monotonic() < deadline:  # (the pool lets go of it, then waits it out)
            time.sleep(0.05)
        assert not running(first), "the idle worker's process is still running"
        taken = _windows_taken(monkeypatch)
        assert _canonical(path) == reference
        assert taken and pool.enabled()
    finally:
        pool.shutdown()
