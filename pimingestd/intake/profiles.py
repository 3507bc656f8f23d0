"""Profiles: ingestion settings for inbox files and uploads, chosen by a glob on the relative path.

The first profile whose ``match`` fits wins. ``*`` stays within one folder, ``**``
spans any. A profile's format options that do not apply to the file's format
are left out (one glob may match files of several formats); the caller's own
settings (an upload's query) replace the profile's.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import Profile
from ..model import IngestRequest
from ..sources import detect_format, option_names


def glob_match(pattern: str, rel: str) -> bool:
    """Match a relative POSIX path against a glob: ``*`` stays within one folder, ``**`` spans any."""
    return _match(pattern.strip("/").split("/"), rel.split("/"))


def _match(pat: list[str], parts: list[str]) -> bool:
    if not pat:
        return not parts
    if pat[0] == "**":
        return any(_match(pat[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pat[0]) and _match(pat[1:], parts[1:])


def ignored(patterns: Sequence[str], rel: str) -> bool:
    """Whether any segment of ``rel`` matches an ignore pattern (hidden files, partial uploads...)."""
    return any(fnmatch.fnmatchcase(part, pat) for part in rel.split("/") for pat in patterns)


def profile_for(profiles: Sequence[Profile], rel: str) -> Profile | None:
    return next((p for p in profiles if glob_match(p.match, rel)), None)


def request_for(
    profiles: Sequence[Profile], path: Path, rel: str, source: str, overrides: dict[str, Any]
) -> IngestRequest:
    """The request for ``path``: the matching profile's settings, then the caller's ``overrides``."""
    profile = profile_for(profiles, rel)
    given = {k: v for k, v in overrides.items() if v is not None}
    settings: dict[str, Any] = {}
    options: dict[str, Any] = {}
    rules: dict[str, Any] = {}
    scope = None
    if profile is not None:
        settings = {k: getattr(profile, k) for k in ("format", "chunk_records", "chunk_bytes", "re_ingestion")}
        rules, scope = dict(profile.rules), profile.match
        fmt = given.get("format") or profile.format or detect_format(Path(rel))
        applies = option_names(fmt)
        options = {k: v for k, v in profile.options.items() if k in applies}
    if "chunk_records" in given or "chunk_bytes" in given:
        settings.pop("chunk_records", None)  # the caller's chunking replaces the profile's as a whole
        settings.pop("chunk_bytes", None)
    options.update(given.pop("options", {}))
    rules.update(given.pop("rules", {}))
    settings.update(given)
    return IngestRequest(path=path, source=source, name=rel, options=options, rules=rules, scope=scope, **settings)
