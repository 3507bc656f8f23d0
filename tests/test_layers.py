"""The tree's layers hold: lint-imports keeps the contracts in pyproject.toml, and can fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .helpers import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports on the package under ``root``, with that root's pyproject.toml, as CI runs it."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_tree_keeps_every_import_contract() -> None:
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 kept, 0 broken" in done.stdout


def test_an_import_that_reaches_up_breaks_the_contracts(tmp_path: Path) -> None:
    """A copy of the tree where config imports the core and the store imports a record rule: both named."""
    shutil.copytree(REPO / "pimingestd", tmp_path / "pimingestd", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    config = tmp_path / "pimingestd" / "config.py"
    config.write_text(config.read_text() + "\nfrom .core import scheduler  # reaches up\n")
    store = tmp_path / "pimingestd" / "state" / "sqlite.py"
    store.write_text(store.read_text() + "\nfrom ..records import rules  # reaches up\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    assert "pimingestd.config -> pimingestd.core.scheduler" in done.stdout
    assert "pimingestd.state.sqlite -> pimingestd.records.rules" in done.stdout
    assert "2 kept, 2 broken" in done.stdout


def test_configuration_refuses_to_parse_before_every_layer_registered_its_checks() -> None:
    """config imports no one, so the checks it cannot make itself are registered from above; none skipped."""
    code = (
        "from pathlib import Path\n"
        "from pimingestd import config\n"
        "try:\n"
        "    config.parse({'chunking': {'records': 5}}, Path('x.toml'), env={})\n"
        "except RuntimeError as exc:\n"
        "    print(exc)\n"
        "import pimingestd.checks\n"
        "print(type(config.parse({'chunking': {'records': 5}}, Path('x.toml'), env={})).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    first, second = done.stdout.splitlines()
    assert "before pimingestd.sources registered its FormatChecks" in first
    assert second == "Config"
