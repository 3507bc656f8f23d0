"""Secrets out of text: the one place where a URL, or any text that may carry one, is made safe to show.

A presigned URL's query is its signature, and a URL's user info is a password: neither may reach a log
line, an ingestion's error, the API or the status page. The daemon formats most URLs itself (``url``),
but libraries do too: aiohttp's and botocore's exception texts quote the URL they were asked for, query
and all. So every text that becomes an error or a log line goes through ``text``, which finds URLs in
free text, and loose ``name=value`` parameters whose name says "secret", and masks them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

# A URL in free text: a scheme, "://", then anything up to white space or a quote or bracket that ends it
# (aiohttp quotes it as url='...', yarl as URL('...')).
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,15}://[^\s'\"<>()\[\]{}`]*(?:\[[0-9a-fA-F:.%]+\][^\s'\"<>()`]*)?")
# A query parameter outside a URL (a query string quoted on its own, a signed header dump).
_SECRET_PARAM = re.compile(
    r"(?i)\b((?:x-amz-|x-goog-)?(?:signature|credential|security-token|sig|token|secret|password|passwd|"
    r"api[_-]?key|access[_-]?key|authorization))=([^&\s'\"<>]+)"
)


def url(value: str) -> str:
    """``value`` without user info or query (``?…`` says one was there), for logs and errors."""
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # an unparseable port or bracket: show nothing of what may follow the scheme
        return value.split("://", 1)[0] + "://…"
    if ":" in host:
        host = f"[{host}]"
    if port:
        host += f":{port}"
    return f"{parts.scheme}://{host}{parts.path}" + ("?…" if parts.query else "") + ("#…" if parts.fragment else "")


def text(value: str, secrets: tuple[str, ...] = ()) -> str:
    """``value`` with every URL in it shown by ``url``, every secret-named ``name=value`` masked, and each of
    ``secrets`` (values the caller knows are secret: a configured header's value, say, which a server may
    echo in its answer and a library quote in its exception) replaced by ``***``."""
    for secret in secrets:
        value = value.replace(secret, "***")
    if "=" not in value and "@" not in value and "?" not in value and "#" not in value:
        return value  # nothing to mask: the common case, cheaply
    value = _URL.sub(lambda m: url(m.group(0)), value)
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}=***", value)


def secret_values(values: Iterable[str]) -> tuple[str, ...]:
    """The ``secrets`` for ``text``: each non-empty value, and the credential of an ``Authorization``-style
    ``<scheme> <credential>`` value on its own, longest first (so that no part of a longer one stays)."""
    out: set[str] = set()
    for value in values:
        v = value.strip()
        if len(v) < 4:  # too short to mask without masking ordinary words
            continue
        out.add(v)
        _, _, credential = v.partition(" ")
        if len(credential.strip()) >= 4:
            out.add(credential.strip())
    return tuple(sorted(out, key=len, reverse=True))


__all__ = ["secret_values", "text", "url"]
