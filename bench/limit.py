"""The limits we measure against: the raw pipelines with no daemon around them.

Run as a subprocess (``python -m bench.limit KIND PATH``) so each measurement
has its own peak RSS (of the process and its children, summed: the daemon's
reader starts the parse worker); prints one JSON line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import resource
import sys
import threading
import time
from pathlib import Path

import ijson

from pimingestd.protocol import canonical


def json_pipeline(path: Path, size: int = 1000) -> int:
    """ijson (yajl2_c, binary file, default buffer) -> exact records -> canonical chunk bytes -> SHA-256."""
    n = 0
    batch = []
    with open(path, "rb") as f:
        for rec in ijson.items(f, "item", use_float=False):
            batch.append(rec)
            if len(batch) == size:
                hashlib.sha256(canonical.encode(batch)).digest()
                n += size
                batch = []
    if batch:
        hashlib.sha256(canonical.encode(batch)).digest()
        n += len(batch)
    return n


def daemon_pipeline(path: Path) -> int:
    """The daemon's own reader and chunker with no daemon around them (for JSON Lines: the
    orjson fast path): records -> canonical chunk bytes -> SHA-256, 1,000-record chunks."""
    from pimingestd.config import ChunkPolicy
    from pimingestd.core.chunking import cut
    from pimingestd.sources import SourceSpec, detect_format, read_records

    spec = SourceSpec(detect_format(path, None))
    return sum(chunk.records for chunk in cut(read_records(path, spec), ChunkPolicy(records=1000)))


def openpyxl_iteration(path: Path) -> int:
    """Bare openpyxl read-only iteration over the first sheet's values."""
    from openpyxl import load_workbook

    wb = load_workbook(path, read_only=True, data_only=True)
    ws = wb[wb.sheetnames[0]]
    n = sum(1 for _ in ws.iter_rows(values_only=True))
    wb.close()
    return n - 1


def _tree_peak(stop: threading.Event, peak: list[int]) -> None:
    """The peak RSS of this process and its children (the parse worker), summed, sampled every 20 ms."""
    import psutil

    me = psutil.Process()
    while not stop.wait(0.02):
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        peak[0] = max(peak[0], total)


def main() -> None:
    kind, path = sys.argv[1], Path(sys.argv[2])
    stop, tree = threading.Event(), [0]
    sampler = threading.Thread(target=_tree_peak, args=(stop, tree), daemon=True)
    sampler.start()
    started = time.perf_counter()
    pipelines = {"json": json_pipeline, "daemon": daemon_pipeline, "excel": openpyxl_iteration}
    records = pipelines[kind](path)
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, tree[0])  # the tree's, summed
    print(json.dumps({"records": records, "seconds": seconds, "bytes": path.stat().st_size, "peak_rss": peak}))


if __name__ == "__main__":
    main()
