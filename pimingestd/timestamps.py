"""Times as people and JSON read them: ISO 8601 in UTC with a Z (API answers and reports alike)."""

from __future__ import annotations

import datetime as dt
import time


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def iso_or_none(ts: float | None) -> str | None:
    return None if ts is None else iso(ts)


def now() -> str:
    return iso(time.time())
