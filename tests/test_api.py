"""The HTTP API: status codes, JSON errors, auth, allowed roots, callback outcomes."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pimingestd.protocol import signing

from .conftest import MakeDaemon
from .helpers import Daemon, Receiver, product, write_json


async def test_ingest_validation(make_daemon: MakeDaemon, tmp_path: Path, data_dir: Path) -> None:
    """Bad bodies 400, outside roots 403, missing 404, unknown format 415; all JSON."""
    src = write_json(data_dir / "p.json", [product(1)])
    (data_dir / "p.parquet").write_text("a,b\n")
    outside = tmp_path / "outside.json"
    outside.write_text("[]")
    os.symlink(outside, data_dir / "link.json")
    d = await make_daemon()
    cases = [
        ({"path": str(src), "chunk_records": 5, "chunk_bytes": 100}, 400),
        ({"path": str(src), "chunk_records": 0}, 400),
        ({"path": str(src), "bogus": 1}, 400),
        ({"path": 5}, 400),
        ({}, 400),
        ({"path": str(outside)}, 403),
        ({"path": str(data_dir / ".." / ".." / "outside.json")}, 403),
        ({"path": str(data_dir / "link.json")}, 403),
        ({"path": "/etc/passwd"}, 403),
        ({"path": str(data_dir / "missing.json")}, 404),
        ({"path": str(data_dir / "p.parquet")}, 415),  # a format pimingestd does not read
        ({"path": str(src), "format": "parquet"}, 415),  # a format name pimingestd does not know
    ]
    for body, expected in cases:
        code, answer = await d.ingest(**body)
        assert code == expected, (body, answer)
        assert isinstance(answer, dict) and answer["error"], answer
    as_json = {"Content-Type": "application/json"}
    code, answer = await d.request("POST", "/api/ingest", data=b"{not json", headers=as_json)
    assert code == 400 and answer["error"] == "body is not valid JSON"
    code, answer = await d.request("POST", "/api/ingest", data=b"[1]", headers=as_json)
    assert code == 400
    code, answer = await d.request("GET", "/api/ingestions/nope")
    assert code == 404 and answer["error"] == "unknown ingestion"
    code, answer = await d.request("GET", "/no/such/route")
    assert code == 404 and answer["error"]


async def test_relative_path_is_from_config_folder(make_daemon: MakeDaemon, data_dir: Path) -> None:
    """A relative `path` resolves against the config file's folder."""
    write_json(data_dir / "p.json", [product(1)])
    d = await make_daemon()
    code, body = await d.ingest(path="data/p.json")
    assert code == 202, body
    assert (await d.wait(body["ingestion_id"]))["status"] == "completed"


async def test_api_token(make_daemon: MakeDaemon, data_dir: Path) -> None:
    """With api_token set, /api/* needs the bearer token; callbacks and health do not."""
    d = await make_daemon(http={"api_token": "tok-123"})
    code, body = await d.request("GET", "/api/ingestions/x", headers={})
    assert code == 401 and body["error"] == "missing or wrong API token"
    code, _ = await d.request("GET", "/api/ingestions/x", headers={"Authorization": "Bearer wrong"})
    assert code == 401
    code, _ = await d.request("GET", "/api/ingestions/x", headers={"Authorization": "Bearer tok-123"})
    assert code == 404
    code, _ = await d.request("GET", "/healthz")
    assert code == 200


async def test_callback_outcomes(make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path) -> None:
    """The ACK endpoint: 200 accepted/duplicate, 404 unknown or never sent, 409 mismatch, 400 malformed."""
    await receiver.faults([{"action": "drop_ack", "chunk": 1, "times": 1}])
    src = write_json(data_dir / "p.json", [product(i) for i in range(25)])
    d = await make_daemon(delivery={"ack_timeout": 0.3, "max_attempts": 1})
    _, body = await d.ingest(path=str(src))
    ing = body["ingestion_id"]
    assert (await d.wait(ing))["status"] == "failed"
    checksum = (await d.store.chunk(ing, 1)).checksum
    other = "sha256:" + "0" * 64
    assert await d.ack({"ingestion_id": "nope", "chunk": 1, "checksum": checksum, "status": "ack"}) == (
        404,
        {"error": "unknown ingestion", "detail": {"ingestion_id": "nope", "chunk": 1}},
    )
    code, _ = await d.ack({"ingestion_id": ing, "chunk": 2, "checksum": checksum, "status": "ack"})
    assert code == 404
    code, _ = await d.ack({"ingestion_id": ing, "chunk": 1, "checksum": other, "status": "ack"})
    assert code == 409
    for bad in (
        {"ingestion_id": ing},
        {"ingestion_id": ing, "chunk": "1", "checksum": checksum, "status": "ack"},
        {"ingestion_id": ing, "chunk": 1, "checksum": "md5:x", "status": "ack"},
        {"ingestion_id": ing, "chunk": 1, "checksum": checksum, "status": "maybe"},
    ):
        code, _ = await d.ack(bad)
        assert code == 400, bad
    code, _ = await d.request("POST", "/callbacks/ack", data=b"\x00garbage")
    assert code == 400
    assert (await d.store.chunk(ing, 1)).state == "sent"
    assert await d.ack({"ingestion_id": ing, "chunk": 1, "checksum": checksum, "status": "ack"}) == (
        200,
        {"result": "accepted"},
    )


@pytest.mark.parametrize("problem", ["missing", "wrong", "stale", "tampered"])
async def test_signed_callbacks_refused(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path, problem: str
) -> None:
    """With a secret: missing, wrong, stale (>300 s) or body-tampered signatures get 401 and change nothing."""
    d = await make_daemon(pimcore={"secret": "k3y"})
    body = json.dumps({"ingestion_id": "x", "chunk": 1, "checksum": "sha256:" + "0" * 64, "status": "ack"}).encode()
    headers = {"Content-Type": "application/json"}
    if problem == "wrong":
        headers[signing.HEADER] = signing.sign("not-the-key", body)
    elif problem == "stale":
        import time

        headers[signing.HEADER] = signing.sign("k3y", body, now=time.time() - 301)
    elif problem == "tampered":
        headers[signing.HEADER] = signing.sign("k3y", body)
        body = body.replace(b'"chunk": 1', b'"chunk": 2')
    code, answer = await d.request("POST", "/callbacks/ack", data=body, headers=headers)
    assert code == 401 and answer["error"] == "bad signature"
    # The same body, correctly signed, gets past the signature (to a 404 for the unknown ingestion).
    headers[signing.HEADER] = signing.sign("k3y", body)
    code, _ = await d.request("POST", "/callbacks/ack", data=body, headers=headers)
    assert code == 404


def test_signature_rules() -> None:
    """Signatures bind the timestamp, the key and the body; verification is exact."""
    body = b'{"a":1}'
    h = signing.sign("s", body, key="i:1", now=1000)
    assert signing.verify("s", h, body, key="i:1", now=1000) is None
    assert signing.verify("s", h, body, key="i:2", now=1000) == "signature mismatch"
    assert signing.verify("s", h, body + b" ", key="i:1", now=1000) == "signature mismatch"
    assert signing.verify("s", h, body, key="i:1", now=1301) == "signature timestamp outside the allowed window"
    assert signing.verify("s", "t=abc,v1=00", body, now=1000) == "malformed signature header"
    assert signing.verify("s", None, body) == "missing signature"


def test_every_error_carries_its_http_status_and_title() -> None:
    """The middleware maps the tree by the classes' own status and title; none is left without."""
    from pimingestd import errors

    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.PimIngestError)]
    assert len(classes) >= 15
    for cls in classes:
        assert 400 <= cls.http_status <= 599 and cls.title, cls
    assert errors.Draining.http_status == 503 and errors.NotAllowed.http_status == 409
    assert errors.UnsupportedFormat.http_status == 415 and errors.UnknownIngestion.http_status == 404


async def test_a_page_of_ingestions_costs_one_progress_query(tmp_path: Path) -> None:
    """views.ingestions reads the progress of 200 ingestions in one statement (it used to be three each)."""
    from pimingestd.http import views
    from pimingestd.model import Status
    from pimingestd.state.sqlite import Store

    class NotRunning:
        """Stands in for the scheduler: no ingestion has a current run, none failed unrecorded."""

        def __init__(self) -> None:
            self.unrecorded: dict[str, str] = {}

        def run_started(self, ingestion_id: str) -> None:
            return None

    store = await Store.open(tmp_path / "s.db")
    try:
        checksum = "sha256:" + "c" * 64
        for i in range(200):
            ing = await store.create_ingestion(
                file_id=f"sha256:{i:064x}",
                path=f"/in/{i}.json",
                file_name=f"{i}.json",
                size=1,
                mtime_ns=1,
                format="json",
                chunk_records=1,
                chunk_bytes=None,
                preflight=False,
                source="api",
            )
            await store.mark_sent(ing.id, 1, 0, 3, checksum)
            if i % 2:
                await store.commit_ack(ing.id, 1, checksum)
            else:
                await store.transition(ing.id, Status.RUNNING)
        rows = await store.list_ingestions(None, 1000, 0)
        statements: list[str] = []
        await store._db.set_trace_callback(statements.append)
        shape = await views.ingestions(store, NotRunning(), rows)  # type: ignore[arg-type]
        page = shape(rows[:150]) + shape(rows[150:])  # shaping reads nothing more, slice by slice
        await store._db.set_trace_callback(None)
        assert len(page) == 200 and len(statements) == 1, statements[:5]
        by_name = {p["file_name"]: p for p in page}
        assert by_name["1.json"]["records_acked"] == 3 and by_name["1.json"]["attempts"] == 0
        assert by_name["2.json"]["records_acked"] == 0 and by_name["2.json"]["attempts"] == 1
    finally:
        await store.close()


async def test_the_list_searches_by_file_name_counts_and_pages_and_stays_on_an_index(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """`q` matches a part of the file name (LIKE wildcards in it are literal), `total` counts the matches, and
    a page of the newest rows is read through an index, so 10,000 ingestions stay fast."""
    import sqlite3 as sq
    import time as clock

    d = await make_daemon()
    db = d.config.daemon.state_db
    con = sq.connect(db)
    now = clock.time()
    rows = [
        (f"{i:032x}", f"sha256:{i:064x}", f"/in/{i}", f"feed_{i % 7}%{'x' if i % 2 else 'y'}.json", now - i)
        for i in range(10_000)
    ]
    con.executemany(
        "INSERT INTO ingestions (id, file_id, path, file_name, size, mtime_ns, format, chunk_records, preflight,"
        " source, status, created_at, updated_at) VALUES (?, ?, ?, ?, 1, 1, 'json', 10, 1, 'api', 'completed', ?, ?)",
        [(*r, r[-1]) for r in rows],
    )
    con.commit()
    plan = " ".join(
        str(r[-1]) for r in con.execute("EXPLAIN QUERY PLAN SELECT * FROM ingestions ORDER BY created_at DESC LIMIT 50")
    )
    con.close()
    assert "ingestions_by_created" in plan and "TEMP B-TREE" not in plan, plan
    code, page = await d.request("GET", "/api/ingestions?q=feed_3%25x&limit=50")
    assert code == 200
    expected = [r for r in rows if r[3] == "feed_3%x.json"]
    assert page["total"] == len(expected) and len(page["ingestions"]) == 50
    assert [p["ingestion_id"] for p in page["ingestions"]] == [r[0] for r in expected[:50]]
    code, page = await d.request("GET", "/api/ingestions?q=FEED_3%25X&status=completed&offset=700&limit=50")
    assert page["total"] == len(expected) and [p["ingestion_id"] for p in page["ingestions"]] == [
        r[0] for r in expected[700:750]
    ]
    for literal in ("d%253", "e_d"):  # as LIKE wildcards these would match every row
        code, page = await d.request("GET", f"/api/ingestions?q={literal}")
        assert code == 200 and page["total"] == 0, (literal, page["total"])


async def _failed_ingestion(d: Daemon, receiver: Receiver, data_dir: Path) -> str:
    await receiver.faults([{"action": "reject_final", "chunk": 2}])
    code, body = await d.ingest(path=str(write_json(data_dir / "resumable.json", [product(i) for i in range(25)])))
    assert code == 202, body
    assert (await d.wait(body["ingestion_id"], ("failed",)))["status"] == "failed"
    await receiver.faults([])
    return str(body["ingestion_id"])


async def test_other_web_pages_start_resume_and_cancel_nothing(
    make_daemon: MakeDaemon, receiver: Receiver, data_dir: Path
) -> None:
    """A daemon without a token (the example config). A form's text/plain body that parses as JSON, a request
    whose Origin or Sec-Fetch-Site is another site, and one whose Host is a rebound DNS name start, resume and
    cancel nothing (403/415); the operator's own calls, and the page's same-origin ones, still work."""
    d = await make_daemon()
    failed = await _failed_ingestion(d, receiver, data_dir)
    src = write_json(data_dir / "p=.json", [product(i) for i in range(5)])
    # A form whose input is named '{"path": ".../p' with the value '.json", ...}': sent as text/plain, name=value
    # is this JSON body (a path with "=" in it keeps the "=" inside a string).
    form = json.dumps({"path": str(src), "re_ingestion": True})
    port = d.config.http.port
    me = f"127.0.0.1:{port}"
    hostile: list[tuple[str, str, dict[str, str], bytes]] = [
        ("/api/ingest", "text/plain form", {"Content-Type": "text/plain"}, form.encode()),
        ("/api/ingest", "urlencoded form", {"Content-Type": "application/x-www-form-urlencoded"}, b"a=b"),
        ("/api/ingest", "multipart form", {"Content-Type": "multipart/form-data; boundary=x"}, b"--x--"),
        ("/api/ingest", "no type", {}, json.dumps({"path": str(src)}).encode()),
    ]
    for path in ("/api/ingest", f"/api/ingestions/{failed}/resume", f"/api/ingestions/{failed}/cancel"):
        body = json.dumps({"path": str(src), "re_ingestion": True}).encode() if path == "/api/ingest" else b""
        json_type = {"Content-Type": "application/json"}
        hostile += [
            (
                path,
                "cross-site page",
                {**json_type, "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
                body,
            ),
            (
                path,
                "another port",
                {**json_type, "Origin": f"http://127.0.0.1:{port + 1}", "Sec-Fetch-Site": "same-site"},
                body,
            ),
            (path, "Origin only", {**json_type, "Origin": "http://evil.example"}, body),
            (path, "another port, Origin only", {"Origin": f"http://127.0.0.1:{port + 1}"}, b""),
            (path, "opaque Origin", {**json_type, "Origin": "null"}, body),
            (path, "Sec-Fetch-Site only", {**json_type, "Sec-Fetch-Site": "cross-site"}, body),
            (
                path,
                "DNS rebinding",
                {**json_type, "Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"},
                body,
            ),
            (path, "form to a bodiless route", {"Content-Type": "text/plain"}, b"x"),
        ]
    for path, what, headers, body in hostile:
        code, answer = await d.request("POST", path, data=body, headers=headers)
        assert code in (403, 415), (what, path, code, answer)
        assert answer["error"], answer
    for where in ("/api/ingestions", f"/api/ingestions/{failed}", "/", "/ui/app.js"):
        for host in (f"evil.example:{port}", "evil.example.", "@", ":1"):
            code, _ = await d.request("GET", where, headers={"Host": host})
            assert code == 403, (where, host)  # a rebound page reads nothing either
    assert [r["ingestion_id"] for r in (await d.request("GET", "/api/ingestions"))[1]["ingestions"]] == [failed]
    assert (await d.status(failed))["status"] == "failed"
    # Probes and scrapers answer any Host; the page's own calls and the operator's work.
    assert (await d.request("GET", "/healthz", headers={"Host": "monitor.internal"}))[0] == 200
    same = {"Origin": f"http://{me}", "Sec-Fetch-Site": "same-origin"}
    code, answer = await d.request("POST", f"/api/ingestions/{failed}/resume", headers=same)
    assert code == 202, answer
    assert (await d.wait(failed))["status"] == "completed"
    code, answer = await d.request("POST", "/api/ingest", json={"path": str(src)}, headers=same)
    assert code == 202, answer
    code, answer = await d.request(
        "POST", "/api/ingest", json={"path": str(src), "re_ingestion": True}, headers={"Host": f"localhost:{port}"}
    )
    assert code == 202, answer


async def test_allowed_hosts_names_the_daemon_behind_a_proxy(make_daemon: MakeDaemon, data_dir: Path) -> None:
    """A name in [http] allowed_hosts is answered, as the Host and as the page's Origin (a TLS proxy in
    front); any other name is not. A bad entry is a config error naming the key."""
    d = await make_daemon(http={"allowed_hosts": ["Ingest.Example.COM."]})
    src = write_json(data_dir / "p.json", [product(1)])
    proxied = {"Host": "ingest.example.com", "Origin": "https://ingest.example.com", "Sec-Fetch-Site": "same-origin"}
    code, answer = await d.request("POST", "/api/ingest", json={"path": str(src)}, headers=proxied)
    assert code == 202, answer
    code, _ = await d.request("GET", "/api/ingestions", headers={"Host": "other.example.com"})
    assert code == 403
    from pimingestd import config as config_mod

    for bad in ("https://ingest.example.com", "ingest.example.com:443", "*.example.com", ""):
        with pytest.raises(config_mod.ConfigError, match=r"http\.allowed_hosts"):
            config_mod.parse({"http": {"allowed_hosts": [bad]}}, data_dir / "config.toml", env={})


async def test_a_file_still_open_for_writing_is_refused_by_path(make_daemon: MakeDaemon, data_dir: Path) -> None:
    """POST /api/ingest of a file another process still has open for writing (an export in progress) is 409
    naming it, and starts nothing; once its writer closed it, it is taken whole."""
    d = await make_daemon()
    target = data_dir / "export.jsonl"
    with open(target, "w") as f:
        f.write("".join(json.dumps(product(i)) + "\n" for i in range(50)))
        f.flush()
        code, answer = await d.ingest(path=str(target))
        assert code == 409 and "export.jsonl is still open for writing" in answer["detail"], answer
        assert (await d.request("GET", "/api/ingestions"))[1]["ingestions"] == []
        f.write("".join(json.dumps(product(i)) + "\n" for i in range(50, 150)))
    code, answer = await d.ingest(path=str(target))
    assert code == 202, answer
    st = await d.wait(answer["ingestion_id"])
    assert st["status"] == "completed" and st["records_acked"] == 150


async def test_a_malformed_host_or_origin_is_refused_not_an_internal_error(
    make_daemon: MakeDaemon, data_dir: Path
) -> None:
    """A Host or Origin that is no valid authority (an unclosed IPv6 bracket, a bad port) is a 403 naming the
    header, never a 500 with a traceback in the log; the usual spellings of the daemon's own address and of a
    JSON content type (case, parameters, a bracketed IPv6 literal) are answered."""
    d = await make_daemon()
    port = d.config.http.port
    src = write_json(data_dir / "p.json", [product(1)])
    body = json.dumps({"path": str(src), "re_ingestion": True}).encode()
    as_json = {"Content-Type": "application/json"}
    for host in ("[::1", f"[::1:{port}", "127.0.0.1:99999", "127.0.0.1:x", "[v1.x]"):
        for method, path in (("GET", "/api/ingestions"), ("POST", "/api/ingest")):
            code, answer = await d.request(method, path, data=body, headers={**as_json, "Host": host})
            assert code == 403 and answer["error"] == "unknown Host", (host, method, code, answer)
    for origin in ("http://[::1", f"http://127.0.0.1:{port}x", "http://[::1]:99999", "http://%"):
        code, answer = await d.request("POST", "/api/ingest", data=body, headers={**as_json, "Origin": origin})
        assert code == 403 and answer["error"] == "cross-origin request refused", (origin, code, answer)
    assert (await d.request("GET", "/api/ingestions"))[1]["ingestions"] == []
    for ctype in ("application/json; charset=utf-8", "APPLICATION/JSON", "Application/Json ; charset=UTF-8"):
        code, answer = await d.request("POST", "/api/ingest", data=body, headers={"Content-Type": ctype})
        assert code == 202, (ctype, code, answer)
    for ctype in ("application/json-patch+json", "text/plain;application/json", "application/jsonx"):
        code, answer = await d.request("POST", "/api/ingest", data=body, headers={"Content-Type": ctype})
        assert code == 415, (ctype, code, answer)
    code, answer = await d.request(
        "GET", "/api/ingestions", headers={"Host": f"[::1]:{port}", "Origin": f"http://[::1]:{port}"}
    )
    assert code == 200, answer


@pytest.mark.parametrize("count", [0, 1, 100, 101, 250])
async def test_a_long_list_is_written_a_batch_at_a_time_and_reads_as_one_answer(count: int) -> None:
    """json_with_list renders at most BATCH items at a time and writes each batch as it goes (a chunked
    answer), and the bytes are those of the whole answer built at once: the same keys in the same order.
    A HEAD request gets the headers and no body, and renders nothing."""
    import orjson
    from aiohttp import web

    from pimingestd.http import streamed

    items = list(range(count))
    slices: list[int] = []

    def shaped(part: Sequence[int]) -> list[dict[str, object]]:
        return [{"n": n, "text": f'r\u00e9cord "{n}"\n'} for n in part]

    def render(part: Sequence[int]) -> list[dict[str, object]]:
        slices.append(len(part))
        return shaped(part)

    before, after = {"ingestion_id": "x", "delta_scope": None}, {"limit": 1000, "total": count}

    async def handler(request: web.Request) -> web.StreamResponse:
        which = request.query["which"]
        return streamed.json_with_list(
            before if which in ("both", "before") else {},
            "items",
            items,
            render,
            after if which in ("both", "after") else None,
        )

    async with _served(handler) as (url, s):
        for which in ("both", "before", "after", "neither"):
            slices.clear()
            async with s.get(url, params={"which": which}) as r:
                raw = await r.read()
                assert r.status == 200 and r.content_type == "application/json"
                assert r.headers.get("Transfer-Encoding") == "chunked", r.headers
            whole = {
                **(before if which in ("both", "before") else {}),
                "items": shaped(items),
                **(after if which in ("both", "after") else {}),
            }
            assert raw == orjson.dumps(whole), (which, raw[:200])
            assert all(0 < n <= streamed.BATCH for n in slices), slices
            assert sum(slices) == count and len(slices) == -(-count // streamed.BATCH), slices
        slices.clear()
        async with s.head(url, params={"which": "both"}) as r:
            assert r.status == 200 and await r.read() == b"" and slices == [], slices
    with pytest.raises(ValueError, match="given twice"):
        streamed.json_with_list({"items": 1}, "items", items, render)


async def test_a_client_that_leaves_during_a_long_list_is_no_error(caplog: pytest.LogCaptureFixture) -> None:
    """A client that closes its connection while a long answer is written (a browser closed during the
    download of 10,000 deletions) stops the writing quietly, as a file download does: no error is logged,
    the rest is not rendered, and the server answers the next request."""
    import asyncio
    import logging

    from aiohttp import web

    from pimingestd.http import streamed

    rendered: list[int] = []

    def render(part: Sequence[int]) -> list[str]:
        rendered.append(len(part))
        return ["x" * 2000 for _ in part]  # 200 KB a batch: the socket's buffers fill long before the end

    async def handler(request: web.Request) -> web.StreamResponse:
        return streamed.json_with_list({}, "items", range(int(request.query.get("n", 100_000))), render)

    caplog.set_level(logging.DEBUG)
    async with _served(handler) as (url, s):
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert (await reader.readexactly(64)).startswith(b"HTTP/1.1 200")
        writer.transport.abort()  # gone, with megabytes still to come
        for _ in range(100):
            await asyncio.sleep(0.02)
        assert 0 < sum(rendered) < 100_000, sum(rendered)
        async with s.get(url, params={"n": 3}) as r:
            assert r.status == 200 and len(await r.read()) == 3 * 2003 + len('{"items":[]}') - 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_a_long_list_to_an_http_1_0_client_ends_with_its_connection() -> None:
    """HTTP/1.0 has no chunks, so the answer ends when the connection closes; a 1.0 client that asked for
    keep-alive must not wait out the server's keep-alive timeout for that end."""
    import asyncio

    import orjson
    from aiohttp import web

    from pimingestd.http import streamed

    async def handler(request: web.Request) -> web.StreamResponse:
        return streamed.json_with_list({"a": 1}, "items", range(250), list)

    async with _served(handler) as (url, _):
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        for ask in ("", "Connection: keep-alive\r\n"):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"GET / HTTP/1.0\r\nHost: {host}\r\n{ask}\r\n".encode())
            raw = await asyncio.wait_for(reader.read(), 5)  # to the end of the connection
            writer.close()
            head, _, body = raw.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.0 200") and b"chunked" not in head.lower(), head
            assert body == orjson.dumps({"a": 1, "items": list(range(250))}), (ask, body[-40:])


async def test_a_list_that_cannot_be_rendered_is_cut_off_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A defect in rendering, once the answer has begun: the daemon's own log says so (with the path), the
    answer ends without its last chunk (a client sees a broken answer, not a short list that reads as
    whole), and the connection is closed, not left hanging."""
    import asyncio
    import logging

    import structlog
    from aiohttp import web

    from pimingestd.http import streamed

    def render(part: Sequence[int]) -> list[int]:
        if part[0] >= 200:
            raise KeyError("a defect")
        return list(part)

    async def handler(request: web.Request) -> web.StreamResponse:
        return streamed.json_with_list({}, "items", range(300), render)

    caplog.set_level(logging.DEBUG)
    async with _served(handler) as (url, _):
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        with structlog.testing.capture_logs() as events:
            writer.write(f"GET /?x HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            raw = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower(), head
    assert b"199" in body and b"200" not in body.split(b"199")[-1] and not body.endswith(b"0\r\n\r\n"), body[-60:]
    assert [(e["event"], e["path"]) for e in events] == [("list answer cut off", "/")], events
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors  # not aiohttp's own, unstructured "Unhandled exception"


async def test_a_page_is_shaped_from_what_the_scheduler_knew_when_it_was_read() -> None:
    """The rows of a long page are shaped while it is written, after the handler: a run started meanwhile,
    or a failure the disk could not record meanwhile, must not mix into the progress read before."""
    from pimingestd.http import views
    from pimingestd.model import Ingestion, Progress, Status

    class Changing:
        def __init__(self) -> None:
            self.unrecorded: dict[str, str] = {}
            self.rates: dict[str, tuple[float, int]] = {}

        def run_started(self, ingestion_id: str) -> tuple[float, int] | None:
            return self.rates.get(ingestion_id)

    class Store:
        async def summaries(self, ids: Sequence[str]) -> dict[str, Progress]:
            return {i: Progress(20, 2000, None, 0) for i in ids}

    row = Ingestion(
        id="i1", file_id="f", path="/in/a.json", file_name="a.json", size=1, mtime_ns=1, format="json",
        chunk_records=100, chunk_bytes=None, preflight=True, source="api", status=Status.QUEUED, error=None,
        spooled=True, total_chunks=30, total_records=3000, created_at=1.0, updated_at=1.0,
    )  # fmt: skip
    scheduler = Changing()
    shape = await views.ingestions(Store(), scheduler, [row])  # type: ignore[arg-type]
    scheduler.rates["i1"] = (0.0, 3500)  # a run that started after the read, with more ACKed than was read
    scheduler.unrecorded["i1"] = "disk full"
    (shown,) = shape([row])
    assert (shown["status"], shown["records_per_second"], shown["eta_seconds"]) == (Status.QUEUED, None, None), shown


@contextlib.asynccontextmanager
async def _served(handler: Any) -> AsyncIterator[tuple[str, Any]]:
    """``handler`` at / of a real aiohttp server on 127.0.0.1, and a client session."""
    import aiohttp
    from aiohttp import web

    from .servers import served

    app = web.Application()
    app.router.add_get("/", handler)
    async with served(app) as url, aiohttp.ClientSession() as s:
        yield url, s


async def test_a_page_of_a_thousand_ingestions_is_streamed_whole(make_daemon: MakeDaemon) -> None:
    """The API's largest page (1,000 ingestions, ten batches) reads as one answer, every row in order,
    with `limit`, `offset` and `total` after the list as before."""
    import sqlite3 as sq
    import time as clock

    d = await make_daemon()
    con = sq.connect(d.config.daemon.state_db)
    now = clock.time()
    con.executemany(
        "INSERT INTO ingestions (id, file_id, path, file_name, size, mtime_ns, format, chunk_records, preflight,"
        " source, status, created_at, updated_at) VALUES (?, ?, ?, ?, 1, 1, 'json', 10, 1, 'api', 'completed', ?, ?)",
        [(f"{i:032x}", f"sha256:{i:064x}", f"/in/{i}", f"f{i}.json", now - i, now - i) for i in range(1_200)],
    )
    con.commit()
    con.close()
    code, page = await d.request("GET", "/api/ingestions?limit=1000&offset=100")
    assert code == 200
    assert list(page) == ["ingestions", "limit", "offset", "total"]
    assert (page["limit"], page["offset"], page["total"]) == (1000, 100, 1_200)
    assert [p["file_name"] for p in page["ingestions"]] == [f"f{i}.json" for i in range(100, 1_100)]
    code, page = await d.request("GET", "/api/ingestions?status=nonsense")
    assert code == 400 and "`status` must be one of" in page["error"], page  # an error answer, not a cut stream
