"""The long soak (tests/soak.py --long), in CI: about 4 minutes of many files of every format, inbox drops and
API triggers, receiver faults and daemon SIGKILLs, with retention on. Every file arrives exactly once, and
after a warm-up RSS, fds and threads stay within their bounds and the database does not grow with the number
of completed ingestions. PIMINGESTD_SOAK_MINUTES sets the length."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from .helpers import report
from .soak import long_soak


@pytest.mark.timeout(1200)
async def test_the_long_soak_keeps_every_figure_flat(tmp_path: Path) -> None:
    minutes = float(os.environ.get("PIMINGESTD_SOAK_MINUTES", "4"))
    seed = random.randrange(1 << 30)
    f = await long_soak(minutes, seed, tmp_path)
    report(
        f"soak (long, {minutes:g} min, seed {seed}): {f['files']} files, {f['kills']} daemon kills, all exactly once;"
        f" after warm-up RSS {f['rss_mib'][0]}->{f['rss_mib'][1]} MiB, fds {f['fds'][0]}->{f['fds'][1]},"
        f" threads {f['threads'][0]}->{f['threads'][1]}, database {f['db_kib'][0]}->{f['db_kib'][1]} KiB,"
        f" spool {f['spool_kib'][0]}->{f['spool_kib'][1]} KiB"
    )
