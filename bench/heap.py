"""What a running daemon's glibc main heap holds: ``python -m bench.heap PID [--save FILE] [--against FILE]``
(``--mmapped``: the chunks glibc mapped on their own, and which of them are dict tables).

It reads the ``[heap]`` mapping of the process through /proc/PID/mem (root, or the same user with ptrace
allowed) and walks glibc's malloc chunks from its start: each chunk's size is the word before its user
memory, and the next chunk's lowest bit says whether it is in use. A chunk parked in a thread's tcache is
free to glibc but looks in use; its second word is the process's tcache key (the same random value in every
such chunk), which tells them apart. A chunk in a fastbin is free too and is counted as live. It prints the
heap's size, what is live, free and parked, the live bytes by chunk size, and, with ``--against`` a snapshot
saved earlier, which sizes grew and a sample of their bytes.

This is how issue 29's creep was found: over three minutes of the soak the only live growth was chunks of
4,384 bytes whose user memory starts with an SQLite b-tree page (the state database's page cache), while the
free space inside the heap grew around them. It is a reading aid, not a test: it stops the walk at the first
size that does not fit, it reads the heap while the process runs (a chunk written meanwhile can cut the walk
short), and it sees the main heap only (not the other arenas, nor pymalloc's arenas)."""

from __future__ import annotations

import argparse
import collections
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORD = struct.Struct("<Q")


@dataclass
class Chunk:
    offset: int  # from the heap's start
    size: int
    state: str  # "live", "free" or "parked" (a tcache entry)
    head: bytes  # the first bytes of its user memory


def snapshot(pid: int) -> tuple[int, list[Chunk]]:
    """The heap's size and its chunks, in address order."""
    heap = next((ln for ln in Path(f"/proc/{pid}/maps").read_text().splitlines() if ln.endswith("[heap]")), None)
    if heap is None:
        raise SystemExit(f"no [heap] mapping in /proc/{pid}/maps (not a glibc process, or one that has ended)")
    lo, hi = (int(x, 16) for x in heap.split()[0].split("-"))
    with open(f"/proc/{pid}/mem", "rb") as mem:
        mem.seek(lo)
        data = mem.read(hi - lo)
    spans: list[tuple[int, int]] = []
    at = 0
    while at + 16 <= len(data):
        size = WORD.unpack_from(data, at + 8)[0] & ~7
        if size < 32 or at + size > len(data):
            break
        spans.append((at, size))
        at += size
    used = [i + 1 < len(spans) and bool(WORD.unpack_from(data, spans[i + 1][0] + 8)[0] & 1) for i in range(len(spans))]
    key = _tcache_key(data, lo)
    chunks = []
    for (a, s), u in zip(spans, used, strict=True):
        head = data[a + 16 : a + 16 + min(s - 16, 64)]
        state = "free" if not u else "parked" if key and data[a + 24 : a + 32] == key else "live"
        chunks.append(Chunk(a, s, state, head))
    return hi - lo, chunks


def _tcache_key(data: bytes, lo: int) -> bytes:
    """The process's tcache key (random per process), read from a parked chunk: the heap's first chunk is the
    main thread's tcache (64 two-byte counts, then 64 pointers to the user memory of the first chunk parked
    of each size), and a parked chunk's second word is the key. b"" when no chunk is parked there."""
    entries = 16 + 64 * 2
    for i in range(64):
        (user,) = WORD.unpack_from(data, entries + 8 * i)
        if lo <= user < lo + len(data) - 16:
            return data[user - lo + 8 : user - lo + 16]
    return b""


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def report(size: int, chunks: list[Chunk], against: tuple[int, list[Chunk]] | None) -> None:
    total = collections.Counter[str]()
    for c in chunks:
        total[c.state] += c.size
    print(f"heap {_mib(size)}: live {_mib(total['live'])}, free {_mib(total['free'])}, parked {_mib(total['parked'])}")
    live = collections.Counter[int]()
    sample: dict[int, bytes] = {}
    for c in chunks:
        if c.state == "live":
            live[c.size] += c.size
            sample[c.size] = c.head
    if against is None:
        print("live bytes by chunk size (the largest ten):")
        for s, n in live.most_common(10):
            print(f"  {s:>8} bytes x{n // s:<6} {_mib(n)}  {sample[s][:40]!r}")
        return
    old_size, old = against
    before = collections.Counter[int]()
    for c in old:
        if c.state == "live":
            before[c.size] += c.size
    print(f"since the snapshot: heap {_mib(old_size)} -> {_mib(size)}")
    grown = sorted(((live[s] - before[s], s) for s in live), reverse=True)[:10]
    for d, s in grown:
        if d > 0:
            print(f"  {s:>8} bytes x{live[s] // s:<6} ({(live[s] - before[s]) // s:+d})  {sample[s][:40]!r}")


def mmapped(pid: int) -> None:
    """glibc's chunks that have mappings of their own (requests of at least the mmap threshold: 1 MiB in the
    daemon), found as anonymous mappings whose first word pair is a chunk header with the IS_MMAPPED bit.
    One that reads as a CPython 3.11 dict's keys table is named so, with its size, its entries (live and
    deleted: a slot is reused only when the table is rebuilt) and its last keys that are ASCII strings.
    Issue 29's table of interned strings was found this way: its last keys were file names."""
    with open(f"/proc/{pid}/mem", "rb", 0) as mem:

        def read(address: int, n: int) -> bytes:
            mem.seek(address)
            return mem.read(n)

        def ascii_at(address: int) -> str | None:
            try:
                head = read(address, 48)  # PyASCIIObject: refcount, type, length, hash, state, wstr
                length = struct.unpack_from("<q", head, 16)[0]
                compact_ascii = (struct.unpack_from("<I", head, 32)[0] >> 5) & 3 == 3
                if compact_ascii and 0 <= length <= 120:
                    return read(address + 48, length).decode("ascii")
            except (OSError, ValueError, struct.error):
                pass
            return None

        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            fields = line.split()
            if len(fields) > 5 or fields[1] != "rw-p":
                continue  # file-backed or named (the heap, the stack)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            lo = start
            while lo < end:  # the kernel merges neighbouring anonymous mappings: look at each page's start
                try:
                    prev, size = struct.unpack("<QQ", read(lo, 16))
                except OSError:
                    break
                if prev == 0 and size & 7 == 2 and size % 4096 == 2 and 128 << 10 <= size - 2 <= end - lo:
                    _describe_mmapped(read, ascii_at, lo, size - 2)
                    lo += size - 2
                else:
                    lo += 4096


def _describe_mmapped(read: Any, ascii_at: Any, lo: int, size: int) -> None:
    print(f"{hex(lo)}: {_mib(size)}")
    user = lo + 16
    # A PyDictKeysObject: refcount, log2 of its slots, log2 of its index bytes, kind, version, usable, entries.
    head = read(user, 32)
    log2, log2_index, kind = head[8], head[9], head[10]
    usable, entries = struct.unpack_from("<qq", head, 16)
    if not (3 <= log2 <= 30 and log2_index >= log2 and kind in (0, 1, 2) and 0 <= entries <= (2 << log2)):
        return
    width = 24 if kind == 0 else 16  # (hash, key, value), or (key, value) when every key is a string
    first = user + 32 + (1 << log2_index)
    last = []
    for i in range(max(entries - 200, 0), entries):
        key = struct.unpack_from("<Q", read(first + i * width, width), 8 if kind == 0 else 0)[0]
        text = ascii_at(key) if key else None
        if text is not None:
            last.append(text)
    print(f"  a dict's keys table: 2^{log2} slots, {entries} entries used, {usable} free; last keys {last[-6:]}")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.heap", description=__doc__.split("\n\n")[0])
    p.add_argument("pid", type=int)
    p.add_argument("--save", type=Path, help="keep this snapshot for a later --against")
    p.add_argument("--against", type=Path, help="a snapshot saved earlier: what grew since")
    p.add_argument("--mmapped", action="store_true", help="list the chunks glibc mapped on their own instead")
    args = p.parse_args()
    if args.mmapped:
        mmapped(args.pid)
        return
    size, chunks = snapshot(args.pid)
    if args.save:
        args.save.write_bytes(pickle.dumps((size, chunks)))
    report(size, chunks, pickle.loads(args.against.read_bytes()) if args.against else None)


if __name__ == "__main__":
    main()
