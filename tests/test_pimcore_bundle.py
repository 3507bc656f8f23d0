"""The real daemon against the Pimcore bundle's test application: PHP's built-in server, Messenger workers
(`messenger:consume pimingest`) and a real MariaDB, all on this machine. Also runs the bundle's phpunit suite
against that MariaDB, and `composer validate --strict`.

Every test runs on each platform Pimcore runs on today, all from Debian's packages: the host (bookworm: PHP
8.2, Symfony 5.4, DBAL 3.6), and the chroots `.ci/chroots` builds (trixie: PHP 8.4, Symfony 6.4, DBAL 4.2,
MariaDB 11.8, Pimcore 12's platform; sid: PHP 8.4, Symfony 7.4, DBAL 4.5, Pimcore 2026's). PHP and MariaDB run
inside the platform; the daemon stays on the host and reaches PHP over 127.0.0.1. A platform is skipped,
saying why, only where it is absent (php not installed, chroot not built); with PIMINGEST_REQUIRE_PLATFORMS=1,
which `.ci/run` sets after building the chroots, an absent platform fails instead.

Every PHP process runs in a process group of its own and is stopped as a group (`php -S` with
PHP_CLI_SERVER_WORKERS forks workers that outlive their parent), and every test checks afterwards that no
process it started is left."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from pimingestd.testing import Cluster, free_port, wait_http

from .helpers import REPO, report
from .servers import MariaDb, start_mariadb

BUNDLE = REPO / "pimcore-bundle"
APP = BUNDLE / "tests" / "Application"
CHROOTS = REPO / ".ci" / "chroots"
SECRET = "bundle-secret-for-tests"
HOST_PACKAGES = (
    "php8.2-cli php8.2-mysql php8.2-sqlite3 php8.2-xml php8.2-mbstring php8.2-curl phpunit mariadb-server composer"
    " php-symfony-framework-bundle php-symfony-messenger php-symfony-doctrine-messenger php-symfony-http-client"
    " php-doctrine-dbal php-doctrine-persistence"
)


@dataclass(frozen=True, slots=True)
class Platform:
    """Where PHP, phpunit and MariaDB run: the host (``root`` None) or a chroot built by `.ci/chroots`."""

    name: str
    root: Path | None

    @property
    def prefix(self) -> tuple[str, ...]:
        """What runs a command inside this platform (nothing on the host)."""
        return () if self.root is None else (str(CHROOTS), "run", self.name)

    def argv(self, *args: str) -> list[str]:
        return [*self.prefix, *args]


def _platform(name: str) -> Platform:
    required = os.environ.get("PIMINGEST_REQUIRE_PLATFORMS") == "1"
    absent = pytest.fail if required else pytest.skip
    if name == "host":
        if shutil.which("php") is None or (
            shutil.which("mariadbd") is None and not Path("/usr/sbin/mariadbd").exists()
        ):
            absent(f"php or mariadbd is not installed on the host (Debian: {HOST_PACKAGES}; .ci/run installs them)")
        return Platform(name, None)
    out = subprocess.run([str(CHROOTS), "path", name], capture_output=True, text=True, check=False)
    if out.returncode != 0 or not out.stdout.strip():
        absent(f"the {name} chroot is not built (.ci/chroots build {name}; .ci/run builds it)")
    return Platform(name, Path(out.stdout.strip()))


@pytest.fixture(scope="module", params=["host", "trixie", "sid"])
def platform(request: pytest.FixtureRequest) -> Platform:
    return _platform(request.param)


@pytest.fixture(scope="module")
def mariadb(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDb]:
    server = start_mariadb(tmp_path_factory.mktemp(f"mariadb-{platform.name}"), platform.prefix)
    yield server
    server.stop()


def left_behind(marker: str) -> list[str]:
    """The live processes whose environment holds ``marker`` (every process a PhpApp starts, and every child
    it forks, inherits its PIMINGEST_APP_VAR), as "pid cmdline"."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if state != "Z":
            found.append(f"{entry.name} {cmdline.strip()}")
    return found


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


APPS: list[PhpApp] = []


@pytest.fixture(autouse=True)
def _no_process_left_behind() -> Iterator[None]:
    """After each test, every PHP process its apps started (server, server workers, Messenger workers) is
    gone: a test that stopped its app leaves nothing; one that failed has its app stopped here first."""
    yield
    leftovers = []
    while APPS:
        app = APPS.pop()
        app.stop()
        leftovers += left_behind(app.marker)
    assert leftovers == [], f"processes left behind: {leftovers}"


def test_an_absent_platform_is_skipped_and_under_ci_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A chroot that is not built skips its platform's tests, saying how to build it; with
    PIMINGEST_REQUIRE_PLATFORMS=1 (as .ci/run sets) the same absence fails them instead."""
    monkeypatch.setenv("PIMINGEST_CHROOT_CACHE", str(tmp_path / "no-chroots-here"))
    monkeypatch.delenv("PIMINGEST_REQUIRE_PLATFORMS", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"\.ci/chroots build sid"):
        _platform("sid")
    monkeypatch.setenv("PIMINGEST_REQUIRE_PLATFORMS", "1")
    with pytest.raises(pytest.fail.Exception, match="the trixie chroot is not built"):
        _platform("trixie")


def test_a_platform_runs_its_own_php_and_leaves_no_mount_behind(platform: Platform) -> None:
    """A command run in a chroot sees the chroot's Debian and PHP, the repository and /tmp at the host's
    paths, and leaves nothing mounted on the host once it exits."""
    probe = "echo PHP_VERSION, ' ', file_exists($argv[1]) ? 'repo' : 'no repo';"
    out = subprocess.run(
        platform.argv("php", "-r", probe, str(BUNDLE / "composer.json")),
        capture_output=True, text=True, timeout=60, check=True, start_new_session=True,
    )  # fmt: skip
    version, seen = out.stdout.split()
    expected = {"host": "8.2.", "trixie": "8.4.", "sid": "8.4."}[platform.name]
    assert version.startswith(expected) and seen == "repo", out.stdout
    if platform.root is not None:
        assert str(platform.root) not in Path("/proc/self/mounts").read_text()


def test_the_bundles_phpunit_suite_passes_on_sqlite_and_mariadb(
    platform: Platform, mariadb: MariaDb, tmp_path: Path
) -> None:
    """Every phpunit test runs and passes on this platform's PHP, Symfony, DBAL and phpunit, on SQLite and on
    MariaDB; none is skipped, and none is lost to a data provider this phpunit cannot read."""
    junit = tmp_path / "junit.xml"
    out = subprocess.run(
        platform.argv("phpunit", "--log-junit", str(junit), "--colors=never"),
        cwd=BUNDLE,
        env={**os.environ, "PIMINGEST_TEST_MYSQL_URL": mariadb.url(f"pimingest_phpunit_{platform.name}")},
        capture_output=True,
        text=True,
        timeout=600,
        start_new_session=True,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "skipped", "failures", "errors")}
    assert counts["skipped"] == counts["failures"] == counts["errors"] == 0, (counts, out.stdout[-4000:])
    assert counts["tests"] >= 59, counts  # every test ran: a data provider phpunit cannot read runs nothing
    report(f"phpunit (bundle, {platform.name}): {out.stdout.strip().splitlines()[-1]}")


def test_composer_json_is_valid_and_admits_the_packages_it_runs_on(platform: Platform) -> None:
    """`composer validate --strict` passes (Debian's composer, offline), composer.json follows Pimcore's
    conventions for a bundle, and every package the bundle requires is installed on this platform in a
    version composer.json admits (checked by Composer's own semver, against the versions the test
    application's Composer metadata lists)."""
    env = {**os.environ, "COMPOSER_ALLOW_SUPERUSER": "1", "COMPOSER_DISABLE_NETWORK": "1", "COMPOSER_NO_AUDIT": "1"}
    out = subprocess.run(
        platform.argv("composer", "validate", "--strict", "--no-interaction"),
        cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=120, start_new_session=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    meta = json.loads((BUNDLE / "composer.json").read_text())
    assert meta["type"] == "pimcore-bundle" and meta["license"] == "MIT"
    assert meta["extra"]["pimcore"]["bundles"] == ["Pimingestd\\PimcoreBundle\\PimingestdPimcoreBundle"]
    check = subprocess.run(
        platform.argv("php", str(APP / "bin" / "check-requirements.php")),
        cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=120, start_new_session=True,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    report(f"composer.json on {platform.name}: {check.stdout.strip()}")


class PhpApp:
    """The bundle's test application as its README starts it: setup, `php -S`, and workers, on ``platform``.
    Each process leads a process group of its own and is stopped with its group."""

    def __init__(self, platform: Platform, root: Path, database_url: str, secret: str = SECRET) -> None:
        self.platform = platform
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.marker = f"PIMINGEST_APP_VAR={root / 'var'}"
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
        APPS.append(self)

    def point_at(self, daemon: Cluster) -> None:
        self.env["PIMINGEST_CALLBACK_URL"] = daemon.durl + "/callbacks/ack"

    def console(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            self.platform.argv("php", str(APP / "bin" / "console"), *args),
            env=self.env, capture_output=True, text=True, timeout=120, start_new_session=True,
        )  # fmt: skip
        if check:
            assert out.returncode == 0, out.stdout + out.stderr
        return out

    async def start(self, workers: int = 1) -> PhpApp:
        self.console("pimingest:setup")
        self.start_server()
        await wait_http(self.url + "/pimingest/chunks", ok=lambda s: s in (400, 401, 405))
        for _ in range(workers):
            self.start_worker()
        return self

    def _spawn(self, log_name: str, *args: str) -> subprocess.Popen[bytes]:
        with open(self.root / log_name, "ab") as log:
            return subprocess.Popen(
                self.platform.argv("php", *args),
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def start_server(self) -> None:
        self.server = self._spawn("php-server.log", "-S", f"127.0.0.1:{self.port}", "-t", str(APP / "public"))

    def start_worker(self, *options: str) -> None:
        self.workers.append(
            self._spawn("worker.log", str(APP / "bin" / "console"), "messenger:consume", "pimingest", *options)
        )

    @staticmethod
    def _kill(p: subprocess.Popen[bytes]) -> None:
        """SIGKILL ``p``'s whole process group (`php -S`'s forked workers and a chroot's bwrap child too), and
        wait until every member has died: a SIGKILLed process lingers for a moment."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        deadline = time.monotonic() + 10
        while group_members(p.pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def kill_worker(self) -> None:
        self._kill(self.workers.pop(0))
        self.worker_kills += 1

    def kill_server(self) -> None:
        assert self.server is not None
        self._kill(self.server)
        self.server = None

    def stop(self) -> None:
        for p in [*self.workers, self.server]:
            if p is not None:
                self._kill(p)
        self.workers = []
        self.server = None


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


async def test_stopping_the_app_leaves_no_php_process_behind(
    platform: Platform, mariadb: MariaDb, tmp_path: Path
) -> None:
    """`php -S` with PHP_CLI_SERVER_WORKERS=4 forks four workers that survive their parent's SIGKILL; the
    server and the Messenger workers are stopped with their process groups, so nothing the app started is
    left running, on the host and inside a chroot alike."""
    app = PhpApp(platform, tmp_path / "php", mariadb.url("pimingest_stop"))
    await app.start(workers=2)
    await wait_http(app.url + "/pimingest/chunks", ok=lambda s: s in (400, 401, 405))
    running = left_behind(app.marker)
    assert len(running) >= 1 + 4 + 2, running  # the server, its four workers, two Messenger workers
    app.kill_server()
    app.kill_worker()
    app.stop()
    assert left_behind(app.marker) == []


async def test_50000_records_arrive_exactly_once_through_worker_and_daemon_kills(
    make_cluster: Any, platform: Platform, mariadb: MariaDb, tmp_path: Path
) -> None:
    """50,000 records in 25 chunks. The PHP worker is SIGKILLed four times during apply and restarted; the
    daemon is SIGKILLed once and restarted. Every record is in pimingest_record exactly once, in order, value
    for value, and the ledger marked the ingestion completed."""
    db = "pimingest_e2e"
    app = PhpApp(platform, tmp_path / "php", mariadb.url(db))
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
        status = app.console("pimingest:status", ing).stdout
        assert "completed" in status and "50000 records taken" in status
        report(
            f"Pimcore bundle end to end: 50,000 records in 25 chunks, {kills} worker kills, {daemon_kills} daemon kill,"
            f" exactly once in {took:.1f}s"
        )
    finally:
        app.stop()


async def test_receiver_side_faults_are_handled_as_the_protocol_says(
    make_cluster: Any, platform: Platform, mariadb: MariaDb, tmp_path: Path
) -> None:
    """A wrong secret is a 401 and fails the ingestion with nothing applied; with every worker stopped past
    ack_timeout, the daemon re-sends and the re-sent chunk is not applied twice; the PHP server killed
    mid-ingestion is retried like any connection error."""
    db = "pimingest_faults"
    app = PhpApp(platform, tmp_path / "php", mariadb.url(db))
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
        app.kill_server()  # PIM-Core's web server goes away mid-ingestion, its forked workers with it
        await asyncio.sleep(1.5)
        app.start_server()
        st = await c.settle(ing, timeout=120)
        assert st["status"] == "completed", st
        assert applied(mariadb, db, ing) == expected
    finally:
        app.stop()


async def test_a_chunk_that_waits_for_a_lock_is_a_503_the_daemon_waits_out(
    make_cluster: Any, platform: Platform, mariadb: MariaDb, tmp_path: Path
) -> None:
    """While another MariaDB session holds the ingestion's row (as an admin's long save or a worker would),
    the app answers the chunk POSTs that need it 503 with Retry-After after its lock wait timeout, instead of
    a 500. The daemon pauses and sends again, the file completes exactly once once the lock is gone, and
    the app logged one warning per 503."""
    db = "pimingest_busy"
    app = PhpApp(platform, tmp_path / "php", mariadb.url(db))
    c = daemon_for(make_cluster, app, 50)
    app.point_at(c)
    mariadb.sql("SET GLOBAL innodb_lock_wait_timeout = 2")  # for the app's connections, opened per request
    holder: asyncio.subprocess.Process | None = None
    try:
        await app.start(workers=1)
        await c.start_daemon()
        expected = source(c.data / "busy.jsonl", 500)
        ing = await c.ingest(c.data / "busy.jsonl")
        while (await c.status(ing))["chunks_acked"] < 1:
            await asyncio.sleep(0.05)
        holder = await asyncio.create_subprocess_exec(
            "mariadb", "--no-defaults", f"--socket={mariadb.socket}", "-uroot", db,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert holder.stdin is not None
        holder.stdin.write(
            f"BEGIN; SELECT * FROM pimingest_ingestion WHERE ingestion_id = '{ing}' FOR UPDATE;\n".encode()
        )
        await holder.stdin.drain()
        deadline = time.monotonic() + 60
        log = app.root / "php-server.log"
        while b"[503]: POST /pimingest/chunks" not in log.read_bytes():
            assert time.monotonic() < deadline, "no 503 while the ingestion's row was locked"
            await asyncio.sleep(0.2)
        holder.stdin.write(b"ROLLBACK;\n")
        holder.stdin.close()
        await asyncio.wait_for(holder.wait(), 10)
        st = await c.settle(ing, timeout=120)
        assert st["status"] == "completed", st
        assert applied(mariadb, db, ing) == expected
        _, metrics = await c.call("GET", c.durl + "/metrics")
        assert 'pimingestd_receiver_busy_total{status="503"}' in str(metrics), "the daemon did not see a 503"
        answered = log.read_text().count("[503]: POST /pimingest/chunks")
        app_log = (app.root / "var" / "log" / "app.log").read_text()
        assert app_log.count("pimingest: chunk answered 503") == answered, app_log[-3000:]
        report(f"Pimcore bundle on {platform.name}: {answered} chunk POSTs answered 503 during a held lock, waited out")
    finally:
        mariadb.sql("SET GLOBAL innodb_lock_wait_timeout = 50")
        if holder is not None and holder.returncode is None:
            holder.kill()
            await holder.wait()
        app.stop()


async def test_records_the_bundle_refuses_come_back_in_the_reject_file_and_tombstones_commit(
    make_cluster: Any, platform: Platform, mariadb: MariaDb, tmp_path: Path
) -> None:
    """Protocol v1.1 through the bundle on MariaDB: a refused record's write is undone by its savepoint and
    listed in the ACK; the chunk's other records commit; the completion's rejected and deleted counts match
    the ledger's; the next full file's tombstones are applied (stored as records by the applier)."""
    db = "pimingest_refuse"
    app = PhpApp(platform, tmp_path / "php", mariadb.url(db))
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
    make_cluster: Any, platform: Platform, mariadb: MariaDb, tmp_path: Path, order: str
) -> None:
    """Protocol v2 through the bundle on MariaDB: window 8, three Messenger workers, one of them SIGKILLed and
    replaced mid-file. by_key: chunks are taken while earlier ones are still being applied (the window is
    real). strict: no chunk is taken before its predecessor is applied, so records land in file order.
    Either way every record lands exactly once and the completion is accepted."""
    db = f"pimingest_window_{order}"
    app = PhpApp(platform, tmp_path / "php", mariadb.url(db))
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
