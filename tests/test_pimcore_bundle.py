"""The real daemon against the Pimcore bundle's test application: PHP's built-in server, Messenger workers
(`messenger:consume pimingest`) and a real MariaDB, all on this machine. Also runs the bundle's phpunit suite
against that MariaDB. Skips, saying why, only where php is absent; `.ci/run` installs it."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pimingestd.testing import Cluster, free_port, wait_http

from .helpers import REPO, report
from .servers import MariaDb, start_mariadb

BUNDLE = REPO / "pimcore-bundle"
APP = BUNDLE / "tests" / "Application"
PHP = shutil.which("php")
pytestmark = pytest.mark.skipif(
    PHP is None or (shutil.which("mariadbd") is None and not Path("/usr/sbin/mariadbd").exists()),
    reason="php or mariadbd is not installed (Debian: php8.2-cli php8.2-mysql php8.2-sqlite3 phpunit mariadb-server"
    " php-symfony-framework-bundle php-symfony-messenger php-symfony-doctrine-messenger php-symfony-http-client"
    " php-doctrine-dbal php-doctrine-persistence; .ci/run installs them)",
)
SECRET = "bundle-secret-for-tests"


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDb]:
    server = start_mariadb(tmp_path_factory.mktemp("mariadb"))
    yield server
    server.stop()


def test_the_bundles_phpunit_suite_passes_on_sqlite_and_mariadb(mariadb: MariaDb) -> None:
    out = subprocess.run(
        ["phpunit", "--log-junit", "/dev/stdout", "--colors=never"],
        cwd=BUNDLE,
        env={**os.environ, "PIMINGEST_TEST_MYSQL_URL": mariadb.url("pimingest_phpunit")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "Skipped" not in out.stdout.split("</testsuites>")[-1], "no phpunit test may be skipped here"
    summary = out.stdout.strip().splitlines()[-1]
    tests = int(summary.split("(")[1].split()[0])
    assert tests >= 30, summary
    report(f"phpunit (bundle): {summary}")


class PhpApp:
    """The bundle's test application as its README starts it: setup, `php -S`, and workers."""

    def __init__(self, root: Path, database_url: str, secret: str = SECRET) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "PIMINGEST_SECRET": secret,
            "PIMINGEST_CALLBACK_URL": "",  # the daemon's /callbacks/ack, set by point_at()
            "PIMINGEST_APP_VAR": str(root / "var"),
            # Messages a killed worker had taken are delivered again after this many seconds.
            "PIMINGEST_TRANSPORT_DSN": "doctrine://default?queue_name=pimingest&redeliver_timeout=3",
            "PHP_CLI_SERVER_WORKERS": "4",
        }
        self.server: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.worker_kills = 0

    def point_at(self, daemon: Cluster) -> None:
        self.env["PIMINGEST_CALLBACK_URL"] = daemon.durl + "/callbacks/ack"

    def console(self, *args: str) -> str:
        out = subprocess.run(
            [str(PHP), str(APP / "bin" / "console"), *args], env=self.env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    async def start(self, workers: int = 1) -> PhpApp:
        self.console("pimingest:setup")
        self.start_server()
        await wait_http(self.url + "/pimingest/chunks", ok=lambda s: s in (400, 401, 405))
        for _ in range(workers):
            self.start_worker()
        return self

    def start_server(self) -> None:
        with open(self.root / "php-server.log", "ab") as log:
            self.server = subprocess.Popen(
                [str(PHP), "-S", f"127.0.0.1:{self.port}", "-t", str(APP / "public")],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def start_worker(self, *options: str) -> None:
        with open(self.root / "worker.log", "ab") as log:
            self.workers.append(
                subprocess.Popen(
                    [str(PHP), str(APP / "bin" / "console"), "messenger:consume", "pimingest", *options],
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )

    def kill_worker(self) -> None:
        worker = self.workers.pop(0)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        self.worker_kills += 1

    def stop(self) -> None:
        for p in [*self.workers, self.server]:
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        self.workers = []


def daemon_for(make_cluster: Any, app: PhpApp, chunk_records: int, secret: str = SECRET) -> Cluster:
    c: Cluster = make_cluster(
        pimcore={
            "chunk_url": app.url + "/pimingest/chunks",
            "complete_url": app.url + "/pimingest/complete",
            "secret": secret,
            "request_timeout": 30.0,
        },
        chunking={"records": chunk_records},
        delivery={"ack_timeout": 8.0, "max_attempts": 50, "backoff": 0.2, "preflight": True},
        logging={"level": "info"},
    )
    return c


def source(path: Path, n: int) -> list[str]:
    """Write ``n`` JSON Lines records with decimals, big integers and non-ASCII text; return their canonical
    texts (the daemon sends keys sorted, numbers as written)."""
    expected = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            price = f"{i % 1000}.{i % 100:02d}"
            line = (
                f'{{"sku": "SKU-{i:06d}", "price": {price}, "stock": {i * 7919 % 100000}, '
                f'"big": 1234567890123456789{i % 10}, "name": "Prodükt {i} — \\"Grün\\"", "tags": ["a", "b{i % 3}"]}}'
            )
            f.write(line + "\n")
            expected.append(
                f'{{"big":1234567890123456789{i % 10},"name":"Prodükt {i} — \\"Grün\\"","price":{price},'
                f'"sku":"SKU-{i:06d}","stock":{i * 7919 % 100000},"tags":["a","b{i % 3}"]}}'
            )
    return expected


def applied(mariadb: MariaDb, database: str, ingestion_id: str) -> list[str]:
    out = mariadb.sql(
        f"SELECT data FROM pimingest_record WHERE ingestion_id = '{ingestion_id}' ORDER BY position", database
    )
    # mariadb -B escapes backslashes, tabs and newlines in its output
    return [
        line.replace("\\\\", "\x00").replace("\\t", "\t").replace("\\n", "\n").replace("\x00", "\\")
        for line in out.splitlines()
    ]


async def test_50000_records_arrive_exactly_once_through_worker_and_daemon_kills(
    make_cluster: Any, mariadb: MariaDb, tmp_path: Path
) -> None:
    """50,000 records in 25 chunks. The PHP worker is SIGKILLed four times during apply and restarted; the
    daemon is SIGKILLed once and restarted. Every record is in pimingest_record exactly once, in order, value
    for value, and the ledger marked the ingestion completed."""
    db = "pimingest_e2e"
    app = PhpApp(tmp_path / "php", mariadb.url(db))
    c = daemon_for(make_cluster, app, 2000)
    app.point_at(c)
    try:
        await app.start(workers=1)
        await c.start_daemon()
        expected = source(c.data / "products.jsonl", 50_000)
        t0 = time.monotonic()
        ing = await c.ingest(c.data / "products.jsonl")
        kills = daemon_kills = 0
        st: dict[str, Any] = {}
        while time.monotonic() - t0 < 300:
            try:
                st = await c.status(ing)
            except Exception:
                st = {"status": "unreachable", "chunks_acked": -1}
            if st["status"] in ("completed", "failed"):
                break
            acked = st.get("chunks_acked", 0)
            if kills < 4 and acked >= 2 + kills * 4:
                await asyncio.sleep(0.3)  # inside the next apply, most likely
                app.kill_worker()
                kills += 1
                app.start_worker()
            if daemon_kills == 0 and acked >= 12:
                await c.kill_daemon()
                daemon_kills += 1
                await c.start_daemon()
            await asyncio.sleep(0.1)
        took = time.monotonic() - t0
        assert st["status"] == "completed", st
        assert (kills, daemon_kills) == (4, 1)
        got = applied(mariadb, db, ing)
        assert len(got) == len(expected)
        assert got == expected  # exactly once, in order, value for value
        ledger = mariadb.sql(
            f"SELECT status, next_chunk, records_taken FROM pimingest_ingestion WHERE ingestion_id = '{ing}'", db
        )
        assert ledger.split() == ["completed", "26", "50000"]
        status = app.console("pimingest:status", ing)
        assert "completed" in status and "50000 records taken" in status
        report(
            f"Pimcore bundle end to end: 50,000 records in 25 chunks, {kills} worker kills, {daemon_kills} daemon kill,"
            f" exactly once in {took:.1f}s"
        )
    finally:
        app.stop()


async def test_receiver_side_faults_are_handled_as_the_protocol_says(
    make_cluster: Any, mariadb: MariaDb, tmp_path: Path
) -> None:
    """A wrong secret is a 401 and fails the ingestion with nothing applied; with every worker stopped past
    ack_timeout, the daemon re-sends and the re-sent chunk is not applied twice; the PHP server killed
    mid-ingestion is retried like any connection error."""
    db = "pimingest_faults"
    app = PhpApp(tmp_path / "php", mariadb.url(db))
    bad = daemon_for(make_cluster, app, 100, secret="not-the-secret")
    c = daemon_for(make_cluster, app, 100)
    app.point_at(c)
    try:
        await app.start(workers=0)
        await bad.start_daemon()
        expected = source(bad.data / "p.jsonl", 300)
        st = await bad.settle(await bad.ingest(bad.data / "p.jsonl"), timeout=60)
        assert st["status"] == "failed" and "bad signature" in st["error"], st
        await bad.kill_daemon()

        await c.start_daemon()
        source(c.data / "p.jsonl", 300)
        ing = await c.ingest(c.data / "p.jsonl")
        await asyncio.sleep(10)  # no worker: chunk 1 is taken, not applied; the ACK times out and it is re-sent
        st = await c.status(ing)
        assert st["status"] == "running" and st["chunks_acked"] == 0 and st["attempts"] >= 2, st
        app.start_worker()
        for _ in range(600):
            st = await c.status(ing)
            if st["chunks_acked"] >= 1:
                break
            await asyncio.sleep(0.05)
        assert app.server is not None
        app.server.send_signal(signal.SIGKILL)  # PIM-Core's web server goes away mid-ingestion
        app.server.wait()
        await asyncio.sleep(1.5)
        app.start_server()
        st = await c.settle(ing, timeout=120)
        assert st["status"] == "completed", st
        assert applied(mariadb, db, ing) == expected
    finally:
        app.stop()


async def test_records_the_bundle_refuses_come_back_in_the_reject_file_and_tombstones_commit(
    make_cluster: Any, mariadb: MariaDb, tmp_path: Path
) -> None:
    """Protocol v1.1 through the bundle on MariaDB: a refused record's write is undone by its savepoint and
    listed in the ACK; the chunk's other records commit; the completion's rejected and deleted counts match
    the ledger's; the next full file's tombstones are applied (stored as records by the applier)."""
    db = "pimingest_refuse"
    app = PhpApp(tmp_path / "php", mariadb.url(db))
    app.env["PIMINGEST_REFUSE"] = "SKU-000003,SKU-000011"
    c = daemon_for(make_cluster, app, 5)
    app.point_at(c)
    try:
        await app.start(workers=2)
        await c.start_daemon()
        src = c.data / "refuse-products.jsonl"
        expected = source(src, 20)
        ing = await c.ingest(src, key="sku", delta=True, deletions="send")
        st = await c.settle(ing, timeout=120)
        assert st["status"] == "completed" and st["records_rejected"] == 2, st
        assert applied(mariadb, db, ing) == [t for i, t in enumerate(expected) if i not in (3, 11)]
        rejects = await c.rejects(ing)
        assert [json.loads(line)["sku"] for line in rejects.splitlines()] == ["SKU-000003", "SKU-000011"]
        assert json.loads(rejects.splitlines()[0])["_reject"] == {
            "reason": "unknown category for SKU-000003",
            "field": "sku",
        }
        # The next day's file: two products gone, the two refused ones sent again (now accepted).
        app.env["PIMINGEST_REFUSE"] = ""
        app.stop()
        await app.start(workers=1)
        kept = [line for i, line in enumerate(src.read_text().splitlines()) if i not in (5, 6)]
        src2 = c.data / "refuse-products-2.jsonl"
        src2.write_text("\n".join(kept) + "\n")
        ing2 = await c.ingest(src2, key="sku", delta=True, deletions="send", delta_scope=st["delta_scope"])
        st2 = await c.settle(ing2, timeout=120)
        assert st2["status"] == "completed" and st2["records_deleted"] == 2 and st2["records_unchanged"] == 16, st2
        assert applied(mariadb, db, ing2) == [
            expected[3],
            expected[11],
            '{"_deleted":true,"sku":"SKU-000005"}',
            '{"_deleted":true,"sku":"SKU-000006"}',
        ]
    finally:
        app.stop()


@pytest.mark.parametrize("order", ["by_key", "strict"])
async def test_a_window_keeps_three_workers_busy_and_applies_exactly_once(
    make_cluster: Any, mariadb: MariaDb, tmp_path: Path, order: str
) -> None:
    """Protocol v2 through the bundle on MariaDB: window 8, three Messenger workers, one of them SIGKILLed and
    replaced mid-file. by_key: chunks are taken while earlier ones are still being applied (the window is
    real). strict: no chunk is taken before its predecessor is applied, so records land in file order.
    Either way every record lands exactly once and the completion is accepted."""
    db = f"pimingest_window_{order}"
    app = PhpApp(tmp_path / "php", mariadb.url(db))
    c = daemon_for(make_cluster, app, 100)
    app.point_at(c)
    try:
        await app.start(workers=3)
        await c.start_daemon()
        expected = source(c.data / "window.jsonl", 3000)
        ing = await c.ingest(c.data / "window.jsonl", key="sku", window=8, order=order)
        killed = False
        deadline = time.monotonic() + 240
        while (st := await c.status(ing))["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, st
            if not killed and st["chunks_acked"] >= 8:
                app.kill_worker()
                app.start_worker()
                killed = True
            await asyncio.sleep(0.05)
        assert st["status"] == "completed", st
        assert killed, "the file completed before a worker could be killed"
        got = applied(mariadb, db, ing)
        assert sorted(got) == sorted(expected) and len(got) == len(expected)  # exactly once (keys are unique)
        if order == "strict":
            assert got == expected  # in file order
        rows = mariadb.sql(
            f"SELECT n, received_at, applied_at FROM pimingest_chunk WHERE ingestion_id = '{ing}' ORDER BY n", db
        ).splitlines()
        chunks = [(int(n), float(r), float(a)) for n, r, a in (line.split("\t") for line in rows)]
        assert [n for n, _, _ in chunks] == list(range(1, 31))
        overlapping = sum(1 for (_, _, applied_at), (_, taken, _) in itertools.pairwise(chunks) if taken < applied_at)
        if order == "by_key":
            assert overlapping > 0, "no chunk was taken before its predecessor was applied: one at a time"
        else:
            assert overlapping == 0, "a chunk was taken before its predecessor was applied"
        ledger = mariadb.sql(f"SELECT status, next_chunk FROM pimingest_ingestion WHERE ingestion_id = '{ing}'", db)
        assert ledger.split() == ["completed", "31"]
        report(
            f"Pimcore bundle, window 8 {order}, 3 workers (1 killed): 3,000 records exactly once;"
            f" {overlapping} of 29 chunks taken while their predecessor was applying"
        )
    finally:
        app.stop()
