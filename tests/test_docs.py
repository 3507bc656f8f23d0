"""The docs site builds with --strict (no broken link or anchor, no page left out of the nav), its
configuration reference is generated from the code and documents every key, and the README stays a
landing page that keeps the two quick-start commands."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from .helpers import REPO

MKDOCS = Path(sys.executable).with_name("mkdocs")


def _hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("config_reference", REPO / "docs" / "hooks" / "config_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_the_site_builds_strict_and_serves_the_generated_reference(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    page = (tmp_path / "site" / "operate" / "configuration" / "index.html").read_text()
    assert "<!-- configuration-reference -->" not in page
    for key in ("drain_seconds", "allowed_urls", "max_deletions", "record_path", "chunk_rows_days"):
        assert f"<code>{key}</code>" in page, key
    landing = (tmp_path / "site" / "index.html").read_text()
    assert "test-command" in landing  # the landing page is the README itself, not a copy


def test_every_configuration_key_is_documented_in_the_code_that_reads_it() -> None:
    """A key without the comment beside its field would reach the reference with no description."""
    undocumented = [
        f"{table} {key.name}" for table, _, keys in _hook().sections() for key in keys if not key.doc.strip()
    ]
    assert not undocumented, "document these beside their fields: " + ", ".join(undocumented)


def test_the_readme_is_a_landing_page_with_the_quick_start() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    commands = re.findall(r"^python3 -m venv \.venv && .*$", text, flags=re.M)
    assert len(commands) == 2, commands
    assert commands[0].endswith("pimingestd run --config config.example.toml")
    assert commands[1].endswith(".venv/bin/python -m pytest")
    assert "<!-- test-command -->" in text
    for target in re.findall(r"\]\(((?!https?:|#)[^)\s]+)\)", text):
        assert (REPO / target.split("#")[0]).exists(), f"README links to {target}, which is not in the repository"
