"""The release artefacts: the wheel and the sdist build and pass twine's checks, and the wheel, installed on
its own into a fresh virtual environment (not editable, no checkout on the path), runs the quick start's
example end to end. That is what catches package data left out of the wheel: the status page's files,
openapi.yaml, the reference receiver."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pimingestd import __version__

from .helpers import REPO, free_port

pytestmark = pytest.mark.timeout(600)
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sdist and wheel, built from a copy of what a release ships (the checkout stays untouched)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "pimingestd", src / "pimingestd", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def test_the_wheel_and_the_sdist_pass_twines_checks_and_carry_the_package_data(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    assert wheel.name == f"pimingestd-{__version__}-py3-none-any.whl"
    done = subprocess.run([str(BIN / "twine"), "check", "--strict", str(wheel), str(sdist)], capture_output=True)
    assert done.returncode == 0, done.stdout + done.stderr
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "pimingestd/http/openapi.yaml",
        "pimingestd/http/ui/index.html",
        "pimingestd/http/ui/app.js",
        "pimingestd/http/ui/style.css",
        "pimingestd/receiver/app.py",
        "pimingestd/py.typed",
        f"pimingestd-{__version__}.dist-info/licenses/LICENSE",
    ):
        assert needed in names, needed
    metadata = zipfile.ZipFile(wheel).read(f"pimingestd-{__version__}.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in metadata
    assert "Requires-Python: >=3.11" in metadata


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the locked run-time dependencies and the wheel, as an operator installs it."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--require-hashes", "-r", str(REPO / "requirements" / "run.txt")], check=True, timeout=600)
    (wheel,) = dist.glob("*.whl")
    subprocess.run([*pip, "--no-deps", str(wheel)], check=True, timeout=120)
    return venv


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return int(answer.status), bytes(answer.read())


def _post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return int(answer.status), json.loads(answer.read())


@pytest.fixture
def example(installed: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The quick start's daemon from the installed wheel, in a folder with no checkout, on free ports."""
    api, receiver = free_port(), free_port()
    text = (REPO / "config.example.toml").read_text()
    for old, new in ((":8080", f":{api}"), ("port = 8080", f"port = {api}")):
        text = text.replace(old, new)
    for old, new in ((":8081", f":{receiver}"), ("port = 8081", f"port = {receiver}")):
        text = text.replace(old, new)
    assert "8080" not in text and "8081" not in text
    (tmp_path / "config.toml").write_text(text)
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "import pimingestd; print(pimingestd.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(installed)), where  # the wheel's copy, not the checkout
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [str(installed / "bin" / "pimingestd"), "run", "--config", "config.toml"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{api}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(base + "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
            assert time.monotonic() < deadline, "the daemon did not answer /healthz within 60 s"
            time.sleep(0.2)
        yield base, f"http://127.0.0.1:{receiver}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        log.close()


def test_the_installed_wheel_runs_the_example_end_to_end(installed: Path, example: tuple[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    version = subprocess.run(
        [str(installed / "bin" / "pimingestd"), "--version"], capture_output=True, text=True, env=env, check=True
    )
    assert version.stdout.strip() == f"pimingestd {__version__}"
    api, receiver = example
    code, answer = _post(api + "/api/ingest", {"path": "examples/products.json"})
    assert code == 202, answer
    ingestion = answer["ingestion_id"]
    deadline = time.monotonic() + 60
    while (status := json.loads(_get(f"{api}/api/ingestions/{ingestion}")[1]))["status"] != "completed":
        assert status["status"] in ("queued", "running"), status
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    expected = len(json.loads((REPO / "examples" / "products.json").read_text()))
    applied = json.loads(_get(f"{receiver}/ingestions/{ingestion}")[1])
    assert applied["records_applied"] == expected, applied
    assert applied["completed"] is True, applied
    # The package data: the status page, its assets and the API's description are served from the wheel.
    page = _get(api + "/")[1].decode()
    assert "app.js" in page
    assert _get(api + "/ui/app.js")[0] == 200
    assert b"openapi:" in _get(api + "/api/openapi.yaml")[1]


def test_the_upgrades_command_compares_the_lock_with_a_fresh_resolve() -> None:
    """`python -m bench.upgrades` (issue 28: the suite against the newest versions, as a decision and not a
    surprise) reads the lock's pins as pip freeze writes them, reports each package whose version moved, appeared
    or went, and with --lowest installs exactly pyproject's lower bounds; docs/development.md says how to run it."""
    from bench import upgrades

    lock = (REPO / "requirements" / "test.txt").read_text()
    locked = upgrades.pins(lock)
    assert locked["aiohttp"] == lock.split("aiohttp==", 1)[1].split()[0]
    assert "prometheus-client" in locked and "cffi" in locked  # canonical names; a marker after the version
    assert "pywin32" not in locked  # the universal lock's Windows-only line is not this machine's
    networkx = [ln.split()[0] for ln in lock.splitlines() if ln.startswith("networkx==")]
    assert len(networkx) == 2 and f"networkx=={locked['networkx']}" in networkx  # one per Python, this one's
    fresh = {**locked, "aiohttp": "99.0", "brand-new": "1.0"}
    del fresh["six"]
    assert upgrades.changes(locked, fresh) == [
        f"  aiohttp: {locked['aiohttp']} -> 99.0",
        "  brand-new: (not locked) -> 1.0",
        f"  six: {locked['six']} -> (not installed)",
    ]
    assert upgrades.changes(locked, dict(locked)) == []
    bounds = upgrades.lower_bounds(REPO / "pyproject.toml")
    assert "aiohttp==" + _bound("aiohttp") in bounds and all("==" in b and ">" not in b for b in bounds)
    assert "python -m bench.upgrades" in (REPO / "docs" / "development.md").read_text()


def _bound(name: str) -> str:
    text = (REPO / "pyproject.toml").read_text()
    return text.split(f'"{name}>=', 1)[1].split('"', 1)[0]


# What the code uses that older releases lack, found by running the suite on pyproject's lower bounds
# (`python -m bench.upgrades --lowest`): (distribution, the first release with it, where the code uses it, the use).
NEEDED = (
    ("aiohttp", "3.12", "pimingestd/locations/remote.py", "middlewares=(guard,)"),  # client middlewares
)


def test_pyprojects_lower_bounds_admit_no_release_the_code_cannot_run_on() -> None:
    """A lower bound is a promise that the suite passes with it (issue 28): each feature the code needs from a
    dependency (still used where noted) has its first release at or below the bound pyproject states. aiohttp
    3.10 and 3.11 have no client middlewares, and every remote HTTP source failed with a TypeError there."""
    for name, first, where, use in NEEDED:
        assert use in (REPO / where).read_text(), (where, use)  # the entry is still true
        bound = tuple(int(x) for x in _bound(name).split("."))
        assert bound >= tuple(int(x) for x in first.split(".")), f"{name}>={_bound(name)}: {use} needs {first}"


def test_every_case_the_bench_runs_can_be_asked_for() -> None:
    """A case that `python -m bench` runs only when named must be one --only accepts: a merge once left two
    lists of cases, and the second, without `mixed`, made issue 30's real-data rows unreachable."""
    import inspect
    import re

    from bench import run

    ran = set(re.findall(r'if "(\w+)" in only', inspect.getsource(run.run)))
    assert {"mixed", "soak", "json"} <= ran
    assert ran == set(run.CASES), ran ^ set(run.CASES)
    assert set(run.DEFAULT) == set(run.CASES) - {"soak"}
