"""docs/openapi.yaml describes every route, and real answers match its schemas."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .conftest import MakeDaemon
from .helpers import REPO, Receiver, product, write_json
from .test_inbox import inbox_config

SPEC: dict[str, Any] = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())


def _schema_for(path: str, method: str, status: int) -> dict[str, Any]:
    responses = SPEC["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answered {status}, which the spec does not list"
    resp = responses[str(status)]
    if "$ref" in resp:
        resp = SPEC["components"]["responses"][resp["$ref"].rsplit("/", 1)[1]]
    content = resp["content"]
    return dict(next(iter(content.values()))["schema"])


def check(path: str, method: str, status: int, body: Any) -> None:
    schema = {**_schema_for(path, method, status), "components": SPEC["components"]}
    jsonschema.validate(
        body, schema, cls=jsonschema.Draft202012Validator, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


async def test_every_route_is_documented(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    """The app's routes and the spec's paths are the same set, methods included."""
    d = await make_daemon(inbox=inbox_config(tmp_path, watch="off"))
    routes = set()
    for route in d.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if route.method == "HEAD":
            continue
        routes.add((re.sub(r"\{(\w+):[^}]+\}", r"{\1}", path), route.method.lower()))
    documented = {(p, m) for p, ops in SPEC["paths"].items() for m in ops if m in ("get", "post", "put", "delete")}
    assert routes == documented


async def test_answers_match_schemas(
    make_daemon: MakeDaemon, receiver: Receiver, tmp_path: Path, data_dir: Path
) -> None:
    """Success and error answers of each route validate against the documented schemas."""
    d = await make_daemon(inbox=inbox_config(tmp_path, watch="off"))
    src = write_json(data_dir / "p.json", [product(i) for i in range(25)])
    code, body = await d.ingest(path=str(src))
    check("/api/ingest", "post", code, body)
    ing = body["ingestion_id"]
    st = await d.wait(ing)
    assert st["status"] == "completed"
    check("/api/ingestions/{id}", "get", 200, st)
    for method, path, kw in (
        ("POST", "/api/ingest", {"json": {"path": str(src)}}),
        ("POST", "/api/ingest", {"json": {"path": "/etc/passwd"}}),
        ("POST", "/api/ingest", {"data": b"nope"}),
        ("GET", "/api/ingestions", {}),
        ("GET", "/api/ingestions?status=bogus", {}),
        ("GET", "/api/ingestions/nope", {}),
        ("GET", f"/api/ingestions/{ing}/chunks?from=2&limit=2", {}),
        ("GET", f"/api/ingestions/{ing}/chunks?limit=0", {}),
        ("POST", f"/api/ingestions/{ing}/resume", {}),
        ("POST", f"/api/ingestions/{ing}/cancel", {}),
        ("POST", "/api/ingestions/nope/cancel", {}),
        ("PUT", "/api/files/x.parquet", {"data": b"a"}),
        ("PUT", "/api/files/q.json", {"data": json.dumps([product(1)]).encode()}),
        ("GET", "/healthz", {}),
    ):
        code, body = await d.request(method, path, **kw)
        template = path.split("?")[0].replace(ing, "{id}").replace("/nope", "/{id}")
        template = re.sub(r"^/api/files/.*", "/api/files/{name}", template)
        if template == "/api/ingestions/{id}" and method == "GET" and "nope" in path:
            template = "/api/ingestions/{id}"
        check(template, method.lower(), code, body)
    checksum = (await d.store.chunk(ing, 1)).checksum
    for ack in (
        {"ingestion_id": ing, "chunk": 1, "checksum": checksum, "status": "ack"},  # 200 duplicate
        {"ingestion_id": ing, "chunk": 1, "checksum": st["file_id"], "status": "ack"},  # 409
        {"ingestion_id": ing, "chunk": 99, "checksum": checksum, "status": "ack"},  # 404
        {"ingestion_id": ing},  # 400
    ):
        code, body = await d.ack(ack)
        check("/callbacks/ack", "post", code, body)
    code, text = await d.request("GET", "/api/openapi.yaml")
    assert code == 200 and yaml.safe_load(text) == SPEC


def test_every_format_option_is_described() -> None:
    """Each format's options are properties of the ingest body and query parameters of the upload, so
    a client generated from the spec can send them; and the Format enum names every format."""
    from pimingestd.sources import FORMATS, all_option_names

    body = set(SPEC["components"]["schemas"]["IngestRequest"]["properties"])
    query = {p["name"] for p in SPEC["paths"]["/api/files/{name}"]["put"]["parameters"] if p["in"] == "query"}
    assert all_option_names() <= body, all_option_names() - body
    assert all_option_names() <= query, all_option_names() - query
    assert SPEC["components"]["schemas"]["Format"]["enum"] == list(FORMATS)


async def test_deletion_pages_match_their_schema(make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path) -> None:
    """The deletions page in each state a key can have (absent, deleted, refused with PIM-Core's reason), its
    errors, and an ingestion without a scope, validate against the documented schemas."""
    d = await make_daemon()
    scope = {"key": "sku", "delta": True, "delta_scope": "products"}

    async def ingest(name: str, records: list[dict[str, Any]], **options: Any) -> str:
        code, body = await d.ingest(path=str(write_json(data_dir / name, records)), **{**scope, **options})
        assert code == 202, body
        st = await d.wait(body["ingestion_id"])
        assert st["status"] == "completed", st
        return str(st["ingestion_id"])

    await ingest("day1.json", [product(i) for i in range(10)])
    reported = await ingest("day2.json", [product(i) for i in range(8)], deletions="report")
    await receiver.faults([{"action": "reject_records", "field": "sku", "values": ["SKU-000009"]}])
    sent = await ingest("day3.json", [dict(product(0), stock=5)] + [product(i) for i in range(1, 8)], deletions="send")
    plain = await ingest("other.json", [product(1)], delta=False, delta_scope=None, key=None)
    pages = {}
    for ing, query in ((reported, ""), (sent, ""), (sent, "?limit=1&offset=1"), (plain, "")):
        code, body = await d.request("GET", f"/api/ingestions/{ing}/deletions{query}")
        assert code == 200, body
        check("/api/ingestions/{id}/deletions", "get", code, body)
        pages[ing, query] = body
    assert [x["state"] for x in pages[reported, ""]["deletions"]] == ["absent", "absent"]
    assert [x["state"] for x in pages[sent, ""]["deletions"]] == ["deleted", "refused"]
    assert pages[sent, ""]["deletions"][1]["reason"], pages[sent, ""]
    assert pages[plain, ""]["total"] == 0 and pages[plain, ""]["delta_scope"] is None
    for path in (f"/api/ingestions/{sent}/deletions?limit=0", "/api/ingestions/nope/deletions"):
        code, body = await d.request("GET", path)
        assert code in (400, 404), (path, code, body)
        check("/api/ingestions/{id}/deletions", "get", code, body)
