"""The HTTP routes: one table. Each view lives in the module of its concern.

``/api/*`` needs ``Authorization: Bearer <api_token>`` when a token is set; other
web pages are kept out by Host, Origin and content type (middleware.py); every
error is JSON ``{"error": ..., "detail": ...}``.
"""

from __future__ import annotations

from aiohttp import web

from . import callbacks, health, ingest, ingestions, overview, ui
from .middleware import auth_middleware, errors_middleware, origin_middleware

MIDDLEWARES = [errors_middleware, origin_middleware, auth_middleware]


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/ingest", ingest.ingest)
    app.router.add_put("/api/files/{name:.+}", ingest.upload)
    app.router.add_get("/api/ingestions", ingestions.list_ingestions)
    app.router.add_get("/api/ingestions/{id}", ingestions.get_ingestion)
    app.router.add_get("/api/ingestions/{id}/chunks", ingestions.list_chunks)
    app.router.add_get("/api/ingestions/{id}/timeline", ingestions.timeline)
    app.router.add_get("/api/ingestions/{id}/rejects", ingestions.rejects)
    app.router.add_get("/api/ingestions/{id}/deletions", ingestions.deletions)
    app.router.add_post("/api/ingestions/{id}/resume", ingestions.resume)
    app.router.add_post("/api/ingestions/{id}/cancel", ingestions.cancel)
    app.router.add_get("/api/overview", overview.overview)
    app.router.add_get("/api/openapi.yaml", health.openapi)
    app.router.add_post("/callbacks/ack", callbacks.ack_callback)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/metrics", health.metrics)
    app.router.add_get("/", ui.index)
    app.router.add_get("/ui/{name}", ui.asset)
