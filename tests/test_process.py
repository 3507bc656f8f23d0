"""The real daemon process and real signals: SIGTERM drains, SIGKILL loses nothing, one daemon per state."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pimingestd.testing import free_port, write_config

from .conftest import MakeCluster
from .helpers import product, report, write_json


@pytest.mark.parametrize("window", [1, 8])
async def test_sigterm_drains_and_resumes_exactly(make_cluster: MakeCluster, window: int) -> None:
    """SIGTERM mid-ingestion exits 0 within seconds, the chunks in flight (up to a window of 8) drained; the
    next start resumes and applies each record once, in order."""
    c = make_cluster(chunking={"records": 20}, delivery={"ack_timeout": 10.0}, receiver_args=["--workers", "4"])
    src = write_json(c.data / "p.json", [product(i) for i in range(600)])
    await c.start_receiver()
    await c.faults([{"action": "delay_ack", "seconds": 0.05, "times": 10000}])
    await c.start_daemon()
    ing = await c.ingest(src, window=window)
    while (await c.status(ing))["chunks_acked"] < 5:
        await asyncio.sleep(0.02)
    started = time.monotonic()
    assert c.daemon is not None
    c.daemon.send_signal(signal.SIGTERM)
    assert await c.exit_code(10) == 0
    assert time.monotonic() - started < 5
    logs = c.log.read_text()
    assert "shutting down" in logs and "drain finished" in logs
    await c.start_daemon()
    assert (await c.settle(ing))["status"] == "completed"
    assert await c.applied(ing) == [product(i) for i in range(600)]
    await c.verify(ing, [product(i) for i in range(600)], order="v1" if window == 1 else "strict")


async def test_second_daemon_refuses_same_state(make_cluster: MakeCluster) -> None:
    """A second daemon on the same state_db refuses to start with a clear error (exit 74)."""
    c = make_cluster()
    await c.start_receiver()
    await c.start_daemon()
    other = subprocess.run(
        [sys.executable, "-m", "pimingestd", "run", "--config", str(c.cfg)], capture_output=True, text=True, timeout=30
    )
    assert other.returncode == 74
    assert "another pimingestd is running" in other.stderr
    assert c.daemon is not None and c.daemon.poll() is None


def test_a_state_folder_it_cannot_write_is_exit_74_naming_it(tmp_path: Path) -> None:
    """A state folder the daemon cannot create or write (a volume owned by another user, a file in the way) stops
    it with exit 74 and the path, as an unusable state database does: a restart (Restart=on-failure, a container's
    restart policy) cannot fix it, so it must not look like a crash."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the state folder should be")
    cfg = write_config(
        tmp_path, daemon_port=free_port(), receiver_port=free_port(), daemon={"state_db": f"{blocker}/state.db"}
    )
    run = subprocess.run(
        [sys.executable, "-m", "pimingestd", "run", "--config", str(cfg)], capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 74, run.stderr
    assert str(blocker) in run.stderr and "writable" in run.stderr, run.stderr


@pytest.mark.slow
@pytest.mark.parametrize("order", ["v1", "strict", "by_key", "strict-streaming"])
async def test_sigkill_crash_loop_applies_everything_once(make_cluster: MakeCluster, order: str) -> None:
    """SIGKILL the daemon at random instants, restart it each time: every record applied once, in order (with a
    window of 8 under by_key: in file order per key; streaming: a window without preflight)."""
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    total = 3000
    variant, streaming = order, order == "strict-streaming"
    order = "strict" if streaming else order
    c = make_cluster(
        chunking={"records": 25},
        delivery={"ack_timeout": 2.0, "backoff": 0.05, "max_attempts": 50, "preflight": not streaming},
        receiver_args=["--workers", "4"],
    )
    records = [product(i) for i in range(total)]
    if order == "by_key":  # a key now and then again, two chunks later: still in flight
        for i in range(60, total, 500):
            records[i] = {**product(i), "sku": records[i - 50]["sku"]}
    src = write_json(c.data / "p.json", records)
    await c.start_receiver()
    await c.faults([{"action": "delay_ack", "seconds": 0.01, "times": 100000}])
    await c.start_daemon()
    rules: dict[str, object] = {} if order == "v1" else {"window": 8, "order": order}
    ing = await c.ingest(src, **rules, **({"key": "sku"} if order == "by_key" else {}))
    for _ in range(8):
        await asyncio.sleep(rng.uniform(0.05, 0.6))
        await c.kill_daemon()
        await c.start_daemon()
        if (await c.status(ing))["status"] == "completed":
            break
    st = await c.settle(ing, timeout=60)
    assert st["status"] == "completed", f"seed {seed}: {st}"
    got = await c.applied(ing)
    assert len(got) == total, f"seed {seed}: {len(got)} applied"
    await c.verify(ing, records, order=order)
    _, stats = await c.call("GET", c.rurl + "/stats")
    report(
        f"SIGKILL loop seed {seed} ({variant}): {c.kills} kills, {total} records, 0 lost, 0 applied twice,"
        f" {stats.get('duplicates', 0)} re-sends re-ACKed"
    )
    assert c.kills >= 1


async def test_sigkill_loop_with_delta_and_refused_records(make_cluster: MakeCluster) -> None:
    """The SIGKILL loop on a delta scope with refused records, two files in a row: after each, every record to
    be sent is applied once or in the reject file, and the stored versions equal the receiver's catalogue."""
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    total = 2000
    rules = {"key": "sku", "delta": True, "deletions": "send"}
    c = make_cluster(chunking={"records": 25}, delivery={"ack_timeout": 2.0, "backoff": 0.05, "max_attempts": 50})
    await c.start_receiver()
    day1 = [product(i) for i in range(total)]
    refused = sorted(rng.sample([r["sku"] for r in day1], 20))
    await c.faults(
        [
            {"action": "delay_ack", "seconds": 0.01, "times": 100000},
            {"action": "reject_records", "field": "sku", "values": refused},
        ]
    )
    await c.start_daemon()
    outcomes = []
    for day, records in enumerate((day1, [dict(r, stock=-1) if i % 10 == 0 else r for i, r in enumerate(day1[:-50])])):
        src = write_json(c.data / f"day{day}.json", records)
        ing = await c.ingest(src, **rules, delta_scope="p")
        for _ in range(6):
            await asyncio.sleep(rng.uniform(0.05, 0.5))
            await c.kill_daemon()
            await c.start_daemon()
            if (await c.status(ing))["status"] == "completed":
                break
        st = await c.settle(ing, timeout=90)
        assert st["status"] == "completed", f"seed {seed}: {st}"
        if day == 0:
            sent = records
        else:  # the changed tenth, and day 1's refused records, which are refused again
            sent = [r for i, r in enumerate(records) if i % 10 == 0 or r["sku"] in refused]
            assert st["records_deleted"] == 50 - sum(1 for r in day1[-50:] if r["sku"] in refused), st
        outcomes.append(await c.record_outcomes(ing, sent))
        assert outcomes[-1]["rejected"] == sum(1 for r in sent if r["sku"] in refused), f"seed {seed}: {outcomes}"
    report(f"SIGKILL loop with delta, seed {seed}: {c.kills} kills, {outcomes}; versions = receiver")
    assert c.kills >= 2


def _descendants(pid: int) -> set[int]:
    import psutil

    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
async def test_the_daemon_leaves_no_process_behind(make_cluster: MakeCluster, how: str) -> None:
    """The JSON parse worker ends with the daemon, however it ends. (It used to outlive a SIGKILLed daemon,
    with its forkserver and resource tracker, each holding its memory: one trio per kill.) It is the daemon's
    only child now: a plain process, with neither a forkserver nor a resource tracker."""
    import psutil

    c = make_cluster(env={"PIMINGESTD_PARSE_WORKER_IDLE": "3600"})  # not stopped while the test looks at it
    await c.start_receiver()
    await c.start_daemon()
    ing = await c.ingest(write_json(c.data / "p.json", [product(i) for i in range(3000)]))
    assert (await c.settle(ing))["status"] == "completed"
    assert c.daemon is not None
    children = _descendants(c.daemon.pid)
    assert len(children) == 1, children  # the worker started, alone
    (worker,) = children
    assert "pimingestd.sources.parse_child" in psutil.Process(worker).cmdline()
    if how == "SIGKILL":
        await c.kill_daemon()
    else:
        c.daemon.send_signal(signal.SIGTERM)
        assert await c.exit_code(15) == 0
    deadline = time.monotonic() + 10
    while alive := [p for p in children if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]:
        assert time.monotonic() < deadline, f"still running after the daemon ended: {alive}"
        await asyncio.sleep(0.1)


async def test_no_parse_worker_runs_until_a_json_file_needs_it(make_cluster: MakeCluster) -> None:
    """The daemon starts its JSON parse worker for the first JSON file, not at its own start: a worker started
    there held 18 MiB for its first 30 s whatever the daemon then read (a JSON Lines file over S3 peaked at
    112 MiB for the tree, 18 of it an idle worker; issue 29), and JSON Lines never uses it."""
    import psutil

    c = make_cluster(env={"PIMINGESTD_PARSE_WORKER_IDLE": "3600"})
    await c.start_receiver()
    await c.start_daemon()
    assert c.daemon is not None
    lines = c.data / "p.jsonl"
    lines.write_text("".join(json.dumps(product(i)) + "\n" for i in range(3000)))
    assert (await c.settle(await c.ingest(lines)))["status"] == "completed"
    assert _descendants(c.daemon.pid) == set()
    if len(os.sched_getaffinity(0)) > 1:  # the worker needs a second core
        ing = await c.ingest(write_json(c.data / "p.json", [product(i) for i in range(3000)]))
        assert (await c.settle(ing))["status"] == "completed"
        (worker,) = _descendants(c.daemon.pid)
        assert "pimingestd.sources.parse_child" in psutil.Process(worker).cmdline()


def test_the_daemons_threads_share_one_malloc_arena() -> None:
    """allocator.tune_malloc, as the daemon calls it first: threads allocating at once all use glibc's main arena
    (malloc_info lists one heap), where with glibc's default they grow arenas of their own."""
    code = (
        "import ctypes, sys, tempfile, threading\n"
        "from pimingestd import allocator\n"
        "if sys.argv[1] == 'tuned':\n"
        "    allocator.tune_malloc()\n"
        "go = threading.Barrier(4)\n"
        "def work():\n"
        "    go.wait()\n"
        "    for _ in range(2000):\n"
        "        blocks = [ctypes.create_string_buffer(2048) for _ in range(50)]\n"
        "threads = [threading.Thread(target=work) for _ in range(4)]\n"
        "for t in threads: t.start()\n"
        "for t in threads: t.join()\n"
        "libc = ctypes.CDLL('libc.so.6')\n"
        "libc.fopen.restype = ctypes.c_void_p\n"
        "libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]\n"
        "libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]\n"
        "libc.fclose.argtypes = [ctypes.c_void_p]\n"
        "with tempfile.NamedTemporaryFile('r') as out:\n"
        "    f = libc.fopen(out.name.encode(), b'w')\n"
        "    libc.malloc_info(0, f)\n"
        "    libc.fclose(f)\n"
        "    print(out.read().count('<heap nr='))\n"
    )
    heaps = {
        how: int(subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True, check=True).stdout)
        for how in ("default", "tuned")
    }
    assert heaps["tuned"] == 1 and heaps["default"] > 1, heaps


def test_the_daemon_does_not_intern_the_names_in_its_paths() -> None:
    """app.stop_interning_path_parts, as the daemon calls it at start: a file name joined onto a folder, made
    into a path from a string, or resolved is not put into the interpreter's interned strings (where 3.11-3.13
    pathlib puts it without); so a string equal to it interns to a string of its own."""
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from pimingestd import app\n"
        "if sys.argv[1] == 'tuned':\n"
        "    app.stop_interning_path_parts()\n"
        "    app.stop_interning_path_parts()  # twice is harmless\n"
        "def name(kind):\n"
        "    return ''.join(['file-', kind, '-', str(os.getpid()), '.jsonl'])\n"
        "paths = {'joined': Path('/inbox') / name('joined'), 'parsed': Path('/inbox/' + name('parsed')),\n"
        "         'resolved': Path('/inbox', name('resolved')).resolve()}\n"
        "for kind, path in paths.items():\n"
        "    assert str(path) == '/inbox/' + name(kind), path\n"
        "    print(kind, sys.intern(name(kind)) is path.parts[-1])\n"
        "import tempfile\n"  # pathlib's other uses of sys (rglob's audit event) still reach it
        "with tempfile.TemporaryDirectory() as d:\n"
        "    (Path(d) / 'a').mkdir(); (Path(d) / 'a' / 'b.json').write_text('[]')\n"
        "    print('rglob', sorted(p.relative_to(d).as_posix() for p in Path(d).rglob('*')))\n"
    )
    interned = {
        how: subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True, check=True).stdout
        for how in ("default", "tuned")
    }
    walked = "rglob ['a', 'a/b.json']\n"
    assert interned["tuned"] == "joined False\nparsed False\nresolved False\n" + walked, interned
    if sys.version_info < (3, 14):  # the model: 3.11-3.13 pathlib interns every part it parses
        assert interned["default"] == "joined True\nparsed True\nresolved True\n" + walked, interned


def test_glibcs_thread_caches_keep_freed_blocks_from_the_heap_until_the_tunable_turns_them_off() -> None:
    """The model allocator.py relies on: a block of 520-1008 bytes (above pymalloc's limit, within the thread
    caches') freed by a thread is parked in that thread's cache, up to 7 per size, and glibc's free lists do
    not see it; with ``glibc.malloc.tcache_count=0`` in GLIBC_TUNABLES at start, every one goes to the free
    lists, where any thread's next request can take it."""
    code = (
        "import ctypes\n"
        "libc = ctypes.CDLL('libc.so.6')\n"
        "names = ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks', 'uordblks', 'fordblks')\n"
        "class Info(ctypes.Structure):\n"
        "    _fields_ = [(n, ctypes.c_size_t) for n in names + ('keepcost',)]\n"
        "libc.mallinfo2.restype = Info\n"
        "libc.malloc.restype = ctypes.c_void_p\n"
        "libc.malloc.argtypes = [ctypes.c_size_t]\n"
        "libc.free.argtypes = [ctypes.c_void_p]\n"
        "sizes = [s for s in range(520, 1024, 16) for _ in range(7)]\n"
        "blocks = [(libc.malloc(s), libc.malloc(24)) for s in sizes]  # a live guard after each: no merging\n"
        "before = libc.mallinfo2().fordblks\n"
        "for block, _ in blocks:\n"
        "    libc.free(block)\n"
        "print(libc.mallinfo2().fordblks - before, sum(sizes))\n"
    )
    freed = {}
    for how, tunables in (("default", None), ("off", "glibc.malloc.tcache_count=0")):
        env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
        env.update({"GLIBC_TUNABLES": tunables} if tunables else {})
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
        freed[how], total = map(int, out.split())
    assert freed["default"] < total // 20 and freed["off"] >= total, (freed, total)


def test_without_thread_caches_adds_its_tunable_and_keeps_the_operators() -> None:
    from pimingestd.allocator import without_thread_caches as off

    assert off({"A": "1"}) == {"A": "1", "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}
    assert off({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}) == {
        "GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072:glibc.malloc.tcache_count=0"
    }
    for theirs in ("glibc.malloc.tcache_count=3", "glibc.malloc.check=0:glibc.malloc.tcache_count=7"):
        assert off({"GLIBC_TUNABLES": theirs}) is None  # theirs stands: no second start
    assert off({"GLIBC_TUNABLES": "glibc.malloc.tcache_count_x=1"}) is not None  # another name entirely


def test_the_second_start_never_starts_a_third(tmp_path: Path) -> None:
    """A privileged start (setuid, or an interpreter given file capabilities) makes glibc drop the tunable
    from the environment; the second start must run on all the same, not exec itself forever. Simulated by
    dropping it as glibc would, at each start; the marker of the second start reaches no child."""
    starts = tmp_path / "starts"
    code = (
        "import os, sys\n"
        "os.environ.pop('GLIBC_TUNABLES', None)\n"
        "from pimingestd import allocator\n"
        "with open(sys.argv[1], 'a') as f:\n"
        "    f.write('start\\n')\n"
        "allocator.start_without_thread_caches()\n"
        "print(os.environ.get(allocator.AGAIN), flush=True)\n"
        "os.execv(sys.executable, [sys.executable, '-c', 'import os; print(os.environ.get(\"' + allocator.AGAIN + '\"))'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(starts)], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert starts.read_text() == "start\n" * 2
    assert out.stdout.split() == ["None", "None"], out.stdout


async def test_the_console_script_keeps_its_process_name(make_cluster: MakeCluster) -> None:
    """``pimingestd run`` from the installed console script runs as ``pimingestd`` (ps, pgrep, journald's
    _COMM) after it starts itself again, though the exec is of the interpreter; the pid is the one started."""
    from pimingestd.testing import wait_http

    script = Path(sys.executable).with_name("pimingestd")
    if not script.exists():
        pytest.skip(f"no console script at {script} (the package is not installed in this interpreter's env)")
    c = make_cluster()
    await c.start_receiver()
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    p = await asyncio.create_subprocess_exec(
        str(script), "run", "--config", str(c.cfg), env=env, stdout=subprocess.DEVNULL
    )
    try:
        await wait_http(c.durl + "/healthz", ok=lambda s: s == 200, timeout=30, alive=lambda: p.returncode is None)
        assert Path(f"/proc/{p.pid}/comm").read_text().strip() == "pimingestd"
        assert "glibc.malloc.tcache_count=0" in Path(f"/proc/{p.pid}/environ").read_text()
    finally:
        p.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(p.wait(), 30) == 0


@pytest.mark.parametrize(
    ("given", "running"),
    [
        (None, "glibc.malloc.tcache_count=0"),
        ("glibc.malloc.trim_threshold=131072", "glibc.malloc.trim_threshold=131072:glibc.malloc.tcache_count=0"),
        ("glibc.malloc.tcache_count=3", "glibc.malloc.tcache_count=3"),
    ],
)
async def test_the_daemon_starts_itself_again_with_glibcs_thread_caches_off(
    make_cluster: MakeCluster, monkeypatch: pytest.MonkeyPatch, given: str | None, running: str
) -> None:
    """``pimingestd run`` replaces itself (the same pid, the same command line) with glibc's thread caches
    off, adding to the operator's tunables, and leaves an operator's own count as it is; the daemon serves,
    and its start line says what it runs with."""
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    c = make_cluster(env={"GLIBC_TUNABLES": given} if given else {})
    await c.start_receiver()
    await c.start_daemon()
    assert c.daemon is not None
    # What the process was started with (glibc 2.36 writes a NUL over each ':' of GLIBC_TUNABLES there as it
    # parses it, so it is read as a whole and searched); the log line below says what the daemon sees.
    environ = Path(f"/proc/{c.daemon.pid}/environ").read_text()
    assert ("glibc.malloc.tcache_count=0" in environ) == running.endswith("tcache_count=0"), environ
    cmdline = Path(f"/proc/{c.daemon.pid}/cmdline").read_text().split("\0")
    assert cmdline[1:5] == ["-m", "pimingestd", "run", "--config"], cmdline
    assert (await c.settle(await c.ingest(write_json(c.data / "p.json", [product(1)]))))["status"] == "completed"
    started = [json.loads(line) for line in c.log.read_text().splitlines() if '"pimingestd started"' in line]
    assert [s.get("glibc_tunables") for s in started] == [running], started


@pytest.mark.parametrize("closed", ["1", "2"])
def test_a_start_with_stdout_or_stderr_closed_still_names_its_config_error(tmp_path: Path, closed: str) -> None:
    """With a standard stream closed, Python's is None: the start before the exec must not trip on it, and
    a missing config is still exit 78 (named on stderr when stderr is open)."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    cmd = f'exec "{sys.executable}" -m pimingestd run --config "{tmp_path}/none.toml" {closed}>&-'
    out = subprocess.run(["sh", "-c", cmd], capture_output=closed == "1", text=True, env=env, timeout=60)
    assert out.returncode == 78, out
    if closed == "1":
        assert "config error" in out.stderr and "Traceback" not in out.stderr, out.stderr
