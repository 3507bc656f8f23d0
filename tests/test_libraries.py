"""A library's own warning, raised while it is imported on first use, is a log line and never an error."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from pimingestd import libraries


@pytest.fixture
def warning_library(tmp_path: Path) -> Iterator[str]:
    """A package that warns at import, as asyncssh does under cryptography 51 (its DSA shim)."""
    name = "pimingestd_test_warns_on_import"
    (tmp_path / f"{name}.py").write_text(
        "import warnings\n"
        "class LibraryDeprecation(UserWarning): pass\n"
        "warnings.warn('DSA is deprecated', LibraryDeprecation, stacklevel=2)\n"
        "warnings.warn('DSA is deprecated', LibraryDeprecation, stacklevel=2)\n"
        "VALUE = 42\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield name
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


def test_a_warning_raised_while_a_backend_is_imported_is_logged_once_not_raised(warning_library: str) -> None:
    """Under an ``error`` filter (pytest's here, PYTHONWARNINGS=error in production) the import succeeds."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with capture_logs() as logs:
            module = libraries.load(warning_library)
        # The filters are the caller's again afterwards: a warning outside the import still raises.
        with pytest.raises(UserWarning):
            warnings.warn("outside", UserWarning, stacklevel=1)
    assert module.VALUE == 42
    assert logs == [
        {
            "event": "library_warning",
            "log_level": "warning",
            "library": warning_library,
            "category": "LibraryDeprecation",
            "message": "DSA is deprecated",
        }
    ]


def test_a_missing_backend_is_an_import_error_for_the_caller_to_name() -> None:
    with pytest.raises(ImportError):
        libraries.load("pimingestd_no_such_backend")


def test_the_daemons_log_takes_a_warning_as_one_structured_line() -> None:
    """Once logging is set up, a warning that the filters show is a JSON line on the daemon's log."""
    import io
    import json

    from pimingestd import logs

    out = io.StringIO()
    saved = warnings.showwarning
    saved_config = structlog.get_config()
    try:
        logs.setup(fmt="json", stream=out)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a library changed its mind", DeprecationWarning, stacklevel=1)
    finally:
        warnings.showwarning = saved
        structlog.configure(**saved_config)
    line = json.loads(out.getvalue().strip().splitlines()[-1])
    assert line["event"] == "python_warning"
    assert line["category"] == "DeprecationWarning"
    assert line["message"] == "a library changed its mind"
    assert "test_libraries.py:" in line["where"]
