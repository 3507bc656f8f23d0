"""The operator's status page: static files shipped in the package (ui/), served at ``/`` and ``/ui/<name>``.

The files hold no data and no secret, so they are served without the API token; the page asks for the
token (a login form keeps it in sessionStorage, or ``#token=...`` in the URL fragment, which never reaches a
server and is removed from the address bar at once) and sends it as ``Authorization: Bearer`` on every
``/api/*`` call, polling at most once a second while the tab is visible. A closed tab costs the daemon
nothing. No build step and no CDN: plain HTML, CSS and JavaScript, under a strict Content-Security-Policy.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

UI = Path(__file__).resolve().parent / "ui"
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
_FILES = frozenset(p.name for p in UI.iterdir() if p.suffix in _TYPES)  # nothing else is ever served
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
        " base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def _send(name: str) -> web.Response:
    body = await asyncio.to_thread((UI / name).read_bytes)
    return web.Response(body=body, content_type=_TYPES[Path(name).suffix], charset="utf-8", headers=HEADERS)


async def index(request: web.Request) -> web.Response:
    return await _send("index.html")


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _FILES:
        raise web.HTTPNotFound()
    return await _send(name)
