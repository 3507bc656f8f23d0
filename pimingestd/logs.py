"""structlog setup: one JSON object per line off a terminal, readable console on one.

Timestamps are ISO 8601 UTC. Context bound with structlog.contextvars (the
ingestion, file, chunk and attempt) appears on every event of that task.
Secrets never reach here: no code logs config values that hold them, the
``redact`` processor masks any key named like one as a second line of defence,
and every text (exception tracebacks included, which quote the URLs libraries
were given) goes through ``redaction.text``, so a presigned URL's signature is
never written.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import warnings
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from . import redaction
from .names import readable

_SECRET_KEYS = {"secret", "api_token", "token", "authorization", "password", "signature"}


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in _SECRET_KEYS and event[key]:
            event[key] = "***"
    return event


def _readable(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """File names that are not UTF-8 (lone surrogates) as ``\\xHH``: a stream cannot encode them. URLs
    without their query or user info, wherever they appear (an exception's text, a traceback)."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redaction.text(readable(value))
        elif isinstance(value, list | tuple) and any(isinstance(v, str) for v in value):
            event[key] = [redaction.text(readable(v)) if isinstance(v, str) else v for v in value]
    return event


def _log_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, *_: Any, **__: Any
) -> None:
    """A warning the filters let through is one structured line, not free text on stderr."""
    structlog.get_logger("pimingestd.warnings").warning(
        "python_warning", category=category.__name__, message=str(message), where=f"{filename}:{lineno}"
    )


def setup(fmt: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    console = fmt == "console" or (fmt == "json" and stream.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,  # a traceback as text, so that _readable redacts it too
        _readable,
    ]
    if console:
        processors.append(
            structlog.dev.ConsoleRenderer(colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback)
        )
    else:
        processors.append(structlog.processors.JSONRenderer())
    warnings.showwarning = _log_warning
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


class Throttle:
    """At most one line per key every ``seconds``, for failures that repeat (a PIM-Core that is down makes
    every chunk retry). ``allow(key)`` is None while lines are held back, else how many were held back
    since the last line, for the line to say."""

    def __init__(self, seconds: float = 10.0) -> None:
        self.seconds = seconds
        self._last: dict[object, float] = {}
        self._held: dict[object, int] = {}

    def allow(self, key: object) -> int | None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.seconds:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        if len(self._last) > 1000:  # keys are few in practice; never let them pile up
            self._last = {k: t for k, t in self._last.items() if now - t < self.seconds}
        return self._held.pop(key, 0)


def shape(text: str) -> str:
    """A message with its numbers blanked, as a throttle key: "chunk 7: no ACK within 30s" and "chunk 8: ..."
    repeat the same failure."""
    return re.sub(r"[0-9]+", "#", text)[:200]
