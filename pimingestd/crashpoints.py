"""Deterministic crash points: a test hook, off unless ``PIMINGESTD_CRASH_AT`` is set.

``PIMINGESTD_CRASH_AT=<step>`` makes the process ``os._exit(86)`` the first time
it reaches ``<step>`` (no clean-up, like a power cut or SIGKILL at that
instant). Tests use it to prove that a crash between any two steps loses and
doubles nothing. Never set it in production. Steps:

engine.after-mark-sent   the attempt is persisted as sent; the POST has not gone out
engine.after-post        PIM-Core took the POST; its ACK is not in yet
ack.after-commit         the ACK is committed; the callback has not had its 200
engine.before-complete   every chunk is ACKed; the completion is not sent
engine.after-complete    PIM-Core took the completion; the status is not yet completed
inbox.after-take         the file is in processing_dir; no ingestion is recorded for it
inbox.after-submit       the ingestion is recorded; it may not have started
inbox.before-finish      the ingestion ended; its folder is not moved yet
inbox.after-finish       the folder is moved to done/failed; the recorded path is not updated
"""

from __future__ import annotations

import os

ENV = "PIMINGESTD_CRASH_AT"
EXIT_CODE = 86
_AT = os.environ.get(ENV) or None


def crash_point(step: str) -> None:
    if _AT is not None and step == _AT:
        os._exit(EXIT_CODE)
