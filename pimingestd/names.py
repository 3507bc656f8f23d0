"""File names that are not valid UTF-8: kept losslessly, shown readably.

POSIX file names are bytes. Python hands an undecodable byte to us as a lone
surrogate (U+DC80..U+DCFF, the ``surrogateescape`` convention), which neither
SQLite nor JSON can hold. So:

- ``to_text`` / ``from_text`` turn such a name into text and back, losslessly:
  each undecodable byte becomes ``\\xHH`` and a backslash becomes ``\\\\``; a
  name that is valid UTF-8 without backslashes is unchanged. The state
  database stores paths this way.
- ``readable`` is for people (logs, reports, API answers): undecodable bytes as
  ``\\xHH``, everything else as it is. It is not meant to be read back.
"""

from __future__ import annotations

import re

_ESCAPE = re.compile(r"\\\\|\\x([0-9a-f]{2})")


def _clean(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def readable(name: str) -> str:
    """``name`` with each undecodable byte shown as ``\\xHH``."""
    if _clean(name):
        return name
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def to_text(name: str) -> str:
    """A lossless text form of ``name`` (see the module docstring)."""
    if "\\" not in name and _clean(name):
        return name
    out = []
    for ch in name:
        if ch == "\\":
            out.append("\\\\")
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch)
    return "".join(out)


def from_text(text: str) -> str:
    """The name ``to_text`` was given."""
    if "\\" not in text:
        return text
    return _ESCAPE.sub(lambda m: "\\" if m.group(1) is None else chr(0xDC00 + int(m.group(1), 16)), text)
