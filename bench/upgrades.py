"""The suite against the newest releases: what an upgrade of the lock would change, and what it would break.

    python -m bench.upgrades                          # a default subset of the suite
    python -m bench.upgrades tests/test_remote.py     # the test files to run instead
    python -m bench.upgrades --lowest                 # pyproject's lower bounds instead of the newest

A fresh virtual environment in a temporary folder gets pimingestd's dependencies and its test extras at their
newest versions (``pip install -U``: what the next lock refresh would take), or with ``--lowest`` at exactly the
lower bounds pyproject.toml states for the daemon. It prints each package whose version differs from
requirements/test.txt, then runs the chosen test files there and exits with pytest's code. Nothing in the
repository changes; the lock stays what CI installs. Non-blocking by design: it is not part of `.ci/run`, and an
upgrade becomes a decision (refresh the lock, fix what broke) rather than a surprise.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "requirements" / "test.txt"
# Quick files that reach the third-party code the daemon leans on: aiohttp (server, client, the API), ijson,
# orjson, openpyxl and the decompressors (sources), fsspec with s3fs and sshfs (remote), jsonschema (validation).
DEFAULT_TESTS = (
    "tests/test_config.py",
    "tests/test_sources.py",
    "tests/test_compression.py",
    "tests/test_validation.py",
    "tests/test_api.py",
    "tests/test_remote.py",
)


def canonical(name: str) -> str:
    """A distribution's name as indexes compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """``name==version`` lines of a requirements file or of ``pip freeze``, by canonical name. The lock is
    universal: a line whose marker does not hold here (Windows only, another Python) is not this machine's."""
    from packaging.markers import Marker

    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^]]*\])?==([^\s;\\]+)\s*(?:;([^\\]*))?", line)
        if m and (m.group(3) is None or Marker(m.group(3).strip()).evaluate()):
            out[canonical(m.group(1))] = m.group(2)
    return out


def changes(locked: dict[str, str], installed: dict[str, str]) -> list[str]:
    """One line per package whose version differs between the lock and the fresh environment."""
    lines = []
    for name in sorted(locked.keys() | installed.keys()):
        old, new = locked.get(name), installed.get(name)
        if old != new:
            lines.append(f"  {name}: {old or '(not locked)'} -> {new or '(not installed)'}")
    return lines


def lower_bounds(pyproject: Path) -> list[str]:
    """The daemon's dependencies pinned at the lower bound pyproject.toml states (``>=`` becomes ``==``)."""
    deps = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    return [re.sub(r">=", "==", d.split(",")[0]) for d in deps]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.upgrades", description=__doc__.split("\n\n")[0])
    p.add_argument("tests", nargs="*", help=f"test files to run (default: {' '.join(DEFAULT_TESTS)})")
    p.add_argument("--lowest", action="store_true", help="install pyproject's lower bounds, not the newest")
    p.add_argument("--keep", action="store_true", help="keep the temporary environment and print where")
    args = p.parse_args(argv)
    tests = args.tests or list(DEFAULT_TESTS)
    tmp = tempfile.mkdtemp(prefix="pimingestd-upgrades-")
    venv = Path(tmp) / "venv"
    py = str(venv / "bin" / "python")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if args.lowest:
        # The locked test tools, then the daemon's own dependencies forced down to their bounds (with what they
        # drag down). A test tool that no longer fits (moto and an older botocore, pytest-aiohttp and an older
        # aiohttp) shows in `pip check` below: pin an older one by hand (--keep) and rerun its tests.
        subprocess.run([*pip, "--require-hashes", "-r", str(LOCK)], check=True)
        subprocess.run([*pip, *lower_bounds(REPO / "pyproject.toml")], check=True)
        subprocess.run([*pip, "--no-deps", "-e", str(REPO)], check=True)
    else:
        subprocess.run([*pip, "-U", "--upgrade-strategy", "eager", "-e", f"{REPO}[test]"], check=True)
    freeze = [py, "-m", "pip", "freeze", "--all", "--exclude-editable"]  # --all: setuptools is a test extra
    frozen = subprocess.run(freeze, check=True, capture_output=True, text=True)
    diff = changes(pins(LOCK.read_text(encoding="utf-8")), pins(frozen.stdout))
    what = "lower bounds" if args.lowest else "newest"
    print(f"versions that differ from {LOCK.relative_to(REPO)} ({what}):")
    print("\n".join(diff) if diff else "  none")
    conflicts = subprocess.run([py, "-m", "pip", "check"], check=False, capture_output=True, text=True).stdout
    if "No broken requirements" not in conflicts:
        print("pip check (conflicts that may fail tests for the harness's sake, not the daemon's):\n" + conflicts)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    pytest = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    rc = subprocess.run(pytest, check=False, cwd=REPO, env=env).returncode  # its code is the result
    print(f"bench.upgrades: pytest exited {rc} on the {what} versions")
    if args.keep:
        print(f"bench.upgrades: the environment is kept in {venv}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
