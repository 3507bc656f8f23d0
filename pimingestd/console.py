"""What the CLI prints: the progress bar, the status table, one ingestion in detail."""

from __future__ import annotations

from typing import Any, TextIO

from .model import Status


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def progress_line(st: dict[str, Any], width: int = 24) -> str:
    """One line: bar, records done/total, rate, ETA, chunk in flight, retries."""
    done, total = st["records_acked"], st["total_records"]
    if total:
        frac = min(done / total, 1.0)
        filled = int(frac * width)
        bar = "[" + "#" * filled + "." * (width - filled) + f"] {frac * 100:5.1f}%"
        records = f"{done:,}/{total:,} records"
    else:
        bar = "[" + "?" * width + "]   ?  "
        records = f"{done:,} records"
    rate = st.get("records_per_second")
    parts = [
        bar,
        records,
        f"{rate:,.0f} rec/s" if rate is not None else "- rec/s",
        f"ETA {_duration(st.get('eta_seconds'))}",
    ]
    if st["status"] == Status.RUNNING:
        chunk = st["chunks_acked"] + 1
        of = f"/{st['total_chunks']}" if st["total_chunks"] is not None else ""
        parts.append(f"chunk {chunk}{of}")
        if st.get("attempts", 0) > 1:
            parts.append(f"retry {st['attempts'] - 1}")
    parts.append(st["status"])
    return "  ".join(parts)


class ProgressBar:
    """Redraws one line on a terminal; elsewhere prints a line whenever the progress changes."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._tty = out.isatty()
        self._last = ""

    def update(self, st: dict[str, Any]) -> None:
        line = progress_line(st)
        if line == self._last:
            return
        if self._tty:
            self._out.write("\r\x1b[2K" + line)
        else:
            self._out.write(line + "\n")
        self._out.flush()
        self._last = line

    def close(self) -> None:
        if self._tty and self._last:
            self._out.write("\n")
            self._out.flush()


def table(rows: list[dict[str, Any]]) -> str:
    head = ("INGESTION", "STATUS", "SOURCE", "RECORDS", "REJECTED", "CHUNKS", "UPDATED", "FILE")
    body = [
        (
            r["ingestion_id"],
            r["status"],
            r["source"],
            f"{r['records_acked']}/{r['total_records'] if r['total_records'] is not None else '?'}",
            r.get("records_rejected", 0),
            f"{r['chunks_acked']}/{r['total_chunks'] if r['total_chunks'] is not None else '?'}",
            r["updated_at"],
            r["file_name"],
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=False)]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in (head, *body)
    )


def detail(st: dict[str, Any], chunks: list[dict[str, Any]]) -> str:
    keys = (
        "ingestion_id",
        "status",
        "source",
        "file_name",
        "path",
        "file_id",
        "format",
        "records_acked",
        "total_records",
        "chunks_acked",
        "total_chunks",
        "records_rejected",
        "records_invalid",
        "records_unchanged",
        "deletions",
        "records_deleted",
        "delta_scope",
        "records_per_second",
        "eta_seconds",
        "attempts",
        "error",
        "created_at",
        "updated_at",
    )
    lines = [f"{k:>18}: {st.get(k)}" for k in keys]
    if chunks:
        lines.append("")
        lines.append("  CHUNK  RECORDS  STATE    ATTEMPTS  ACKED_AT                     REJECT")
        for c in chunks:
            lines.append(
                f"  {c['chunk']:>5}  {c['records']:>7}  {c['state']:<7}  {c['attempts']:>8}  "
                f"{c['acked_at'] or '-':<27}  {c['reject_reason'] or ''}".rstrip()
            )
    return "\n".join(lines)
