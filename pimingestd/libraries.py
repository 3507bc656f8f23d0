"""Optional backends imported on first use, whose own warnings become log lines and never errors.

A library may warn while it is imported: asyncssh touches cryptography's DSA names, and cryptography 51
answers with a CryptographyDeprecationWarning. That warning is about the library, not about the file
being read. Under a process-wide ``error`` filter (``PYTHONWARNINGS=error``, or a test runner's) it would
surface as "listing failed: CryptographyDeprecationWarning ..." on an ingestion that did nothing wrong.
So these imports record what they warn, whatever the filters say, and log each warning once.
"""

from __future__ import annotations

import importlib
import threading
import warnings
from types import ModuleType

import structlog

log = structlog.get_logger("pimingestd.libraries")

_lock = threading.Lock()  # catch_warnings swaps process-wide state: one import at a time


def load(name: str) -> ModuleType:
    """Import ``name``; a warning raised while importing it is logged, never raised.

    ImportError goes to the caller, who knows which feature needs the package.
    """
    with _lock, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(name)
    seen: set[tuple[str, str]] = set()
    for w in caught:
        key = (w.category.__name__, str(w.message))
        if key not in seen:
            seen.add(key)
            log.warning("library_warning", library=name, category=key[0], message=key[1])
    return module
