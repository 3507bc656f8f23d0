"""The layers that register a configuration check, imported together before any configuration is parsed.

config.py imports no layer (pyproject.toml's import contracts): a format's options, the record rules and the
remote URL rules are checked by the modules that own them, which register those checks with config when
they are imported. Every entry point that parses a configuration (the daemon, the command line) imports
this module first; config.parse refuses to run while any check is missing, so none is skipped silently.
"""

from __future__ import annotations

from .locations import remote
from .records import rules
from .sources import FORMATS

__all__ = ["FORMATS", "remote", "rules"]
