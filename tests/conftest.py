from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pimingestd.testing import Cluster

from .helpers import SUMMARY, Daemon, Receiver, free_port, write_config


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SUMMARY:
        terminalreporter.section("pimingestd figures")
        for line in SUMMARY:
            terminalreporter.write_line(line)


MakeDaemon = Callable[..., Awaitable[Daemon]]
MakeCluster = Callable[..., Cluster]


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[Receiver]:
    r = await Receiver(tmp_path / "receiver").start()
    yield r
    await r.stop()


@pytest.fixture
async def make_daemon(tmp_path: Path, receiver: Receiver) -> AsyncIterator[MakeDaemon]:
    """Start a daemon (in this process, on a real port) against the fixture receiver."""
    started: list[Daemon] = []
    port = free_port()

    async def make(**sections: dict[str, Any]) -> Daemon:
        cfg = write_config(tmp_path / "daemon", daemon_port=port, receiver_port=receiver.port, **sections)
        d = await Daemon(cfg).start()
        started.append(d)
        return d

    yield make
    for d in reversed(started):
        await d.stop()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "daemon" / "data"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[MakeCluster]:
    """Real daemon and receiver processes (see tests/cluster.py, or a subclass as ``cls``); killed at the end."""
    made: list[Cluster] = []

    def make(cls: type[Cluster] = Cluster, **kw: Any) -> Cluster:
        c = cls(tmp_path / f"cluster{len(made)}", **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
