"""HMAC-SHA256 signatures of protocol v1, for both directions.

Header form: ``Pimingest-Signature: t=<unix seconds>,v1=<hex>``.
- Requests from the daemon sign ``"<t>.<Idempotency-Key>." + body``.
- ACK callbacks to the daemon sign ``"<t>." + body``.
Verification compares in constant time and refuses timestamps more than
``tolerance`` seconds from now, so a captured callback cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

HEADER = "Pimingest-Signature"
TOLERANCE = 300.0
_MAX_HEADER = 256
_T = re.compile(r"[0-9]{1,12}")  # re with str: fullmatch on [0-9] is ASCII digits only
_HEX = re.compile(r"[0-9a-f]{64}")


def _mac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, *, key: str | None = None, now: float | None = None) -> str:
    """The header value for ``body`` (with the idempotency ``key`` for daemon requests)."""
    t = int(time.time() if now is None else now)
    prefix = f"{t}." if key is None else f"{t}.{key}."
    return f"t={t},v1={_mac(secret, prefix.encode('utf-8') + body)}"


def verify(
    secret: str,
    header: str | None,
    body: bytes,
    *,
    key: str | None = None,
    now: float | None = None,
    tolerance: float = TOLERANCE,
) -> str | None:
    """None when the signature is valid; else the reason it is not (never echoing secrets).

    Never raises, whatever the header holds: ``t`` must be 1 to 12 ASCII digits and ``v1``
    64 lowercase hex digits (``str.isdigit`` would take ``²``, which ``int`` then refuses)."""
    if not header:
        return "missing signature"
    if len(header) > _MAX_HEADER:
        return "malformed signature header"
    fields: dict[str, str] = {}
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(name, value)
    t_text, mac = fields.get("t"), fields.get("v1")
    if t_text is None or mac is None or not _T.fullmatch(t_text) or not _HEX.fullmatch(mac):
        return "malformed signature header"
    t = int(t_text)
    current = time.time() if now is None else now
    if abs(current - t) > tolerance:
        return "signature timestamp outside the allowed window"
    prefix = f"{t}." if key is None else f"{t}.{key}."
    expected = _mac(secret, prefix.encode("utf-8", "surrogateescape") + body)
    if not hmac.compare_digest(expected, mac):
        return "signature mismatch"
    return None
