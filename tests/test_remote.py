"""Remote objects through fsspec, against real servers on 127.0.0.1: moto's S3 server, OpenSSH's sshd, an
aiohttp file server with Range and ETag. Exact delivery, identity and resume, dedup, cuts mid-transfer, an
object replaced while it is read, host keys, allowed_urls, staging for Excel."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yarl
from openpyxl import Workbook

from pimingestd.errors import UrlNotAllowed
from pimingestd.http import keys as api
from pimingestd.locations.remote import check_allowed, redact

from .conftest import MakeDaemon
from .helpers import Receiver, product
from .servers import CuttingProxy, HttpFiles, S3Server, S3Tamper, SshServer, http_files, start_s3, start_sshd

BUCKET = "feeds"


def jsonl(n: int, start: int = 0) -> bytes:
    return b"".join(json.dumps(product(i)).encode() + b"\n" for i in range(start, start + n))


def canonical(n: int, start: int = 0) -> list[str]:
    return [json.dumps(product(i), sort_keys=True, separators=(",", ":")) for i in range(start, start + n)]


def file_id(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3(tmp_path_factory.mktemp("moto") / "moto.log")
    server.client().create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
async def files() -> AsyncIterator[HttpFiles]:
    async with http_files() as f:
        yield f


def remote_section(
    allowed: list[str], s3: S3Server | None = None, sshd: SshServer | None = None, **extra: Any
) -> dict[str, Any]:
    section: dict[str, Any] = {"allowed_urls": allowed, "block_size": 65536, **extra}
    if s3 is not None:
        section["s3"] = s3.config()
    if sshd is not None:
        section["sftp"] = sshd.config()
    return section


async def records(receiver: Receiver, ingestion_id: str) -> list[str]:
    return [a["record"] for a in await receiver.records(ingestion_id)]


# ---- which URLs -----------------------------------------------------------------------------------


def test_allowed_urls_are_compared_by_parts_and_internal_hosts_must_be_named() -> None:
    allowed = ["https://cdn.example.com/feeds/", "s3://feeds/in", "http://", "sftp://127.0.0.1:2222/srv"]
    check_allowed("https://cdn.example.com/feeds/a.jsonl", allowed, resolve=False)
    check_allowed("s3://feeds/in/x.json", allowed)
    check_allowed("s3://feeds/in", allowed)
    check_allowed("sftp://127.0.0.1:2222/srv/a.csv", allowed)  # listed by name: allowed
    check_allowed("http://shop.example.com/x.xml", allowed, resolve=False)  # under the bare http://
    refused = {
        "https://cdn.example.com.evil.net/feeds/a.jsonl": "not under any",
        "https://cdn.example.com/feedsX/a.jsonl": "not under any",
        "s3://feeds/inbox2/x.json": "not under any",
        "s3://other/in/x.json": "not under any",
        "http://127.0.0.1:9/x.json": "loopback and link-local hosts must be listed by name",
        "http://169.254.169.254/latest/meta-data": "must be listed by name",
        "http://[::1]/x.json": "must be listed by name",
        "http://localhost/x.json": "must be listed by name",
        "http://0.0.0.0/x.json": "must be listed by name",
        "https://user:pw@cdn.example.com/feeds/a.jsonl": "credentials in a URL are refused",
        "ftp://cdn.example.com/feeds/a.jsonl": "not a remote URL",
        "s3://feeds": "names no object",
    }
    for url, why in refused.items():
        with pytest.raises(UrlNotAllowed, match=why):
            check_allowed(url, allowed, resolve=False)
    with pytest.raises(UrlNotAllowed, match="allowed_urls is empty"):
        check_allowed("s3://feeds/in/x.json", [])
    assert "pw" not in redact("https://user:pw@h/x?sig=abc") and "sig" not in redact("https://h/x?sig=abc")


async def test_a_url_outside_allowed_urls_is_400_and_nothing_is_fetched(
    make_daemon: MakeDaemon, files: HttpFiles
) -> None:
    files.files["p.jsonl"] = jsonl(3)
    d = await make_daemon(remote=remote_section([f"http://127.0.0.1:{files.port}/allowed/"]))
    for body in (
        {"url": files.url("p.jsonl")},
        {"url": f"http://localhost:{files.port}/allowed/p.jsonl"},
        {"url": files.url("p.jsonl"), "path": "/etc/passwd"},
    ):
        code, answer = await d.ingest(**body)
        assert code == 400, (body, answer)
    assert files.headers_seen == []
    d2_answer = await d.ingest(url="file:///etc/passwd")
    assert d2_answer[0] == 400 and "not a remote URL" in d2_answer[1]["detail"]


# ---- S3 (moto) ----------------------------------------------------------------------------------------


async def test_an_s3_object_is_delivered_exactly_and_identified_by_its_bytes(
    make_daemon: MakeDaemon, receiver: Receiver, s3: S3Server
) -> None:
    data = jsonl(95)
    s3.client().put_object(Bucket=BUCKET, Key="in/products.jsonl", Body=data)
    d = await make_daemon(remote=remote_section([f"s3://{BUCKET}/in/"], s3=s3))
    url = f"s3://{BUCKET}/in/products.jsonl"
    code, answer = await d.ingest(url=url)
    assert code == 202 and answer["file_id"] is None, answer  # known once the spool pass has read it
    st = await d.wait(answer["ingestion_id"])
    assert st["status"] == "completed", st
    assert st["file_id"] == file_id(data) and st["path"] == url and st["version"].startswith("etag:")
    assert st["total_records"] == 95 and st["total_chunks"] == 10
    assert await records(receiver, st["ingestion_id"]) == canonical(95)
    # The same object at the same version: the ingestion that took it answers.
    code, again = await d.ingest(url=url)
    assert (code, again["ingestion_id"]) == (200, st["ingestion_id"])
    # The same bytes at another key: found once read, and not sent again.
    s3.client().put_object(Bucket=BUCKET, Key="in/copy.jsonl", Body=data)
    code, copy = await d.ingest(url=f"s3://{BUCKET}/in/copy.jsonl")
    assert code == 202
    st2 = await d.wait(copy["ingestion_id"], ("completed", "failed", "cancelled"))
    assert st2["status"] == "cancelled" and st2["error"].startswith(f"duplicate of {st['ingestion_id']}"), st2
    # Unless re_ingestion says so.
    code, forced = await d.ingest(url=f"s3://{BUCKET}/in/copy.jsonl", re_ingestion=True)
    assert code == 202
    assert (await d.wait(forced["ingestion_id"]))["status"] == "completed"
    assert await records(receiver, forced["ingestion_id"]) == canonical(95)


async def test_compressed_and_excel_objects_over_s3(
    make_daemon: MakeDaemon, receiver: Receiver, s3: S3Server, tmp_path: Path
) -> None:
    """A .jsonl.gz streams through the decompressor; an .xlsx is staged to local disk (then removed), and one
    over stage_max_bytes is refused before it is downloaded."""
    s3.client().put_object(Bucket=BUCKET, Key="in/p.jsonl.gz", Body=gzip.compress(jsonl(30, 100)))
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["sku", "qty"])
    for i in range(25):
        ws.append([f"S{i}", i])
    buf = io.BytesIO()
    wb.save(buf)
    s3.client().put_object(Bucket=BUCKET, Key="in/book.xlsx", Body=buf.getvalue())
    d = await make_daemon(remote=remote_section([f"s3://{BUCKET}/in/"], s3=s3, stage_max_bytes=len(buf.getvalue())))
    code, gz = await d.ingest(url=f"s3://{BUCKET}/in/p.jsonl.gz")
    assert code == 202
    assert (await d.wait(gz["ingestion_id"]))["status"] == "completed"
    assert await records(receiver, gz["ingestion_id"]) == canonical(30, 100)
    code, book = await d.ingest(url=f"s3://{BUCKET}/in/book.xlsx")
    assert code == 202
    assert (await d.wait(book["ingestion_id"]))["status"] == "completed"
    assert [json.loads(r) for r in await records(receiver, book["ingestion_id"])] == [
        {"sku": f"S{i}", "qty": i} for i in range(25)
    ]
    spool = d.config.daemon.state_db.parent / "spool"
    assert not list(spool.glob("*.stage"))
    s3.client().put_object(Bucket=BUCKET, Key="in/big.xlsx", Body=buf.getvalue() + b"\0")
    code, big = await d.ingest(url=f"s3://{BUCKET}/in/big.xlsx")
    assert code == 202
    st = await d.wait(big["ingestion_id"])
    assert st["status"] == "failed" and "over [remote] stage_max_bytes" in st["error"], st


async def test_a_cut_s3_connection_is_continued_by_ranged_reads(
    make_daemon: MakeDaemon, receiver: Receiver, s3: S3Server
) -> None:
    data = jsonl(400)
    s3.client().put_object(Bucket=BUCKET, Key="in/cut.jsonl", Body=data)
    proxy = await CuttingProxy(s3.port, cut_after=len(data) // 3).start()
    try:
        cfg = {**s3.config(), "endpoint_url": f"http://127.0.0.1:{proxy.port}"}
        d = await make_daemon(remote={**remote_section([f"s3://{BUCKET}/in/"]), "s3": cfg})
        code, answer = await d.ingest(url=f"s3://{BUCKET}/in/cut.jsonl")
        assert code == 202, answer
        st = await d.wait(answer["ingestion_id"])
        assert st["status"] == "completed" and st["file_id"] == file_id(data), st
        assert proxy.cuts == 1
        assert await records(receiver, st["ingestion_id"]) == canonical(400)
    finally:
        await proxy.stop()


def test_an_s3_read_is_one_streamed_get_pinned_to_the_etag_seen(s3: S3Server) -> None:
    """An S3 object is read by one GET from the byte reached to its end, held a piece at a time; in a bucket
    without versions the GET carries If-Match on the ETag seen at submit, so an object replaced between the
    stat and the read (or before a reconnection) is refused by S3 rather than spliced in."""
    from pimingestd.config import RemoteConfig, S3Config
    from pimingestd.errors import FileChangedError
    from pimingestd.locations.remote import Remote, S3Body

    data = jsonl(300)
    client = s3.client()
    client.put_object(Bucket=BUCKET, Key="pin/p.jsonl", Body=data)
    remote = Remote(RemoteConfig(allowed_urls=(f"s3://{BUCKET}/",), s3=S3Config(**s3.config())))
    url = f"s3://{BUCKET}/pin/p.jsonl"
    seen = remote.stat(url)
    assert seen.version.startswith("etag:")
    fs = remote._filesystem(url)
    calls: list[tuple[str, dict[str, Any]]] = []
    call_s3 = fs.call_s3
    fs.call_s3 = lambda op, **kw: (calls.append((op, kw)), call_s3(op, **kw))[1]
    fh = remote._open_at(url, seen, 0, fresh=False)
    assert isinstance(fh, S3Body)
    pieces = []
    while piece := fh.read(1000):
        assert len(piece) <= 1000
        pieces.append(piece)
    fh.close()
    assert b"".join(pieces) == data
    assert [(op, kw.get("IfMatch"), kw.get("Range")) for op, kw in calls] == [
        ("get_object", seen.version.removeprefix("etag:"), None)
    ]  # one GET for the whole object, however many reads
    tail = remote._open_at(url, seen, 1234, fresh=False)  # a reconnection: the rest, from the byte reached
    assert tail.read(len(data)) == data[1234:] and tail.read(10) == b""
    tail.close()
    client.put_object(Bucket=BUCKET, Key="pin/p.jsonl", Body=data[::-1])  # same size, other bytes
    assert remote.stat(url).size == seen.size
    stream = remote.open(url, seen)
    with pytest.raises(FileChangedError, match="answered 412 to a read pinned to etag:"):
        stream.read(100)


def test_an_s3_store_that_answers_another_range_is_refused(s3: S3Server) -> None:
    """A reconnection's ranged GET must be answered 206 with the range asked for: an answer for another
    object (here: the identity says 7 bytes more) is refused before a byte is read, naming both ranges."""
    from pimingestd.config import RemoteConfig, S3Config
    from pimingestd.errors import RemoteError
    from pimingestd.locations.remote import ObjectIdentity, Remote

    client = s3.client()
    client.put_object(Bucket=BUCKET, Key="len/p.jsonl", Body=jsonl(20))
    remote = Remote(RemoteConfig(allowed_urls=(f"s3://{BUCKET}/",), s3=S3Config(**s3.config())))
    url = f"s3://{BUCKET}/len/p.jsonl"
    seen = remote.stat(url)
    longer = ObjectIdentity(seen.size + 7, seen.version)
    asked = rf"asked for bytes 5-{seen.size + 6}, the store answered 206 bytes 5-{seen.size - 1}/{seen.size}"
    with pytest.raises(RemoteError, match=asked):
        remote._open_at(url, longer, 5, fresh=False)
    with pytest.raises(RemoteError, match=rf"asked for bytes 0-{seen.size + 6}, the store answered {seen.size} bytes"):
        remote._open_at(url, longer, 0, fresh=False)


def _s3_remote(s3: S3Server, endpoint: str | None = None) -> Any:
    from pimingestd.config import RemoteConfig, S3Config
    from pimingestd.locations.remote import Remote

    cfg = {**s3.config(), **({"endpoint_url": endpoint} if endpoint else {})}
    return Remote(RemoteConfig(allowed_urls=(f"s3://{BUCKET}/",), s3=S3Config(**cfg)))


def _read_all(remote: Any, url: str, identity: Any) -> tuple[bytes, str]:
    stream = remote.open(url, identity)
    try:
        data = b"".join(iter(lambda: stream.read(1 << 16), b""))
        return data, stream.file_id
    finally:
        stream.close()


async def test_an_s3_answer_without_content_length_is_read_to_its_end(s3: S3Server) -> None:
    """A store (or a proxy) that sends the object chunked, without Content-Length: the body is read to its
    end, and its bytes and file_id are the object's."""
    data = jsonl(500)
    s3.client().put_object(Bucket=BUCKET, Key="tamper/chunked.jsonl", Body=data)
    proxy = await S3Tamper(s3.port).start()
    proxy.chunked = True
    try:
        remote = _s3_remote(s3, proxy.endpoint)
        url = f"s3://{BUCKET}/tamper/chunked.jsonl"
        seen = await asyncio.to_thread(remote.stat, url)
        got, fid = await asyncio.to_thread(_read_all, remote, url, seen)
        assert (got, fid, proxy.gets) == (data, file_id(data), 1)
    finally:
        await proxy.stop()


async def test_a_store_that_ignores_if_match_cannot_hand_out_another_object(s3: S3Server) -> None:
    """If-Match is not passed on (a store that ignores it), and the object is replaced by one of the same size
    after the stat: the answer's own ETag is not the one pinned, so nothing of it is read."""
    from pimingestd.errors import FileChangedError

    data = jsonl(300)
    s3.client().put_object(Bucket=BUCKET, Key="tamper/pin.jsonl", Body=data)
    proxy = await S3Tamper(s3.port).start()
    proxy.drop_request_headers = {"If-Match"}
    try:
        remote = _s3_remote(s3, proxy.endpoint)
        url = f"s3://{BUCKET}/tamper/pin.jsonl"
        seen = await asyncio.to_thread(remote.stat, url)
        s3.client().put_object(Bucket=BUCKET, Key="tamper/pin.jsonl", Body=data[::-1])
        with pytest.raises(FileChangedError, match=r"the store answered .* for a read of etag:"):
            await asyncio.to_thread(_read_all, remote, url, seen)
    finally:
        await proxy.stop()


@pytest.mark.parametrize("fault", ["checksum", "extra bytes"])
async def test_an_s3_body_that_fails_its_end_check_ends_the_ingestion(s3: S3Server, fault: str) -> None:
    """The object's checksum (S3 sends it for a whole-object GET of an object stored with one) is checked by
    botocore when the body's end is read, and so are bytes past the object's size: either failure ends the
    read with an error naming it, without another attempt (its bytes were handed out already)."""
    from pimingestd.errors import RemoteError

    data = jsonl(200)
    s3.client().put_object(Bucket=BUCKET, Key="tamper/sum.jsonl", Body=data, ChecksumAlgorithm="CRC32")
    proxy = await S3Tamper(s3.port).start()
    if fault == "checksum":
        proxy.set_headers = {"x-amz-checksum-crc32": "AAAAAA=="}
    else:
        proxy.chunked, proxy.append = True, b"{}\n"
    try:
        remote = _s3_remote(s3, proxy.endpoint)
        url = f"s3://{BUCKET}/tamper/sum.jsonl"
        seen = await asyncio.to_thread(remote.stat, url)
        said = "failed its check .*Checksum" if fault == "checksum" else "more bytes than the object has"
        with pytest.raises(RemoteError, match=said):
            await asyncio.to_thread(_read_all, remote, url, seen)
        assert proxy.gets == 1
    finally:
        await proxy.stop()


def test_s3_reads_in_flight_leave_connections_for_everything_else(s3: S3Server) -> None:
    """Each object being read holds a pooled connection until its end: with twelve open (more than botocore's
    default pool of ten), a stat still gets one at once."""
    s3.client().put_object(Bucket=BUCKET, Key="pool/p.jsonl", Body=jsonl(40_000))  # more than sockets buffer
    remote = _s3_remote(s3)
    url = f"s3://{BUCKET}/pool/p.jsonl"
    seen = remote.stat(url)
    bodies = [remote._open_at(url, seen, 0, fresh=False) for _ in range(12)]
    try:
        for body in bodies:
            assert body.read(100)
        done = threading.Event()
        worker = threading.Thread(target=lambda: (remote.stat(url), done.set()), daemon=True)
        worker.start()
        assert done.wait(15), "a stat waited for a connection while twelve reads were open"
    finally:
        for body in bodies:
            body.close()


def test_an_open_s3_read_never_holds_up_the_process_at_exit(s3: S3Server) -> None:
    """A process that exits (or fails) with an S3 read still open ends at once: closing it never waits for
    fsspec's loop, which may no longer run then."""
    s3.client().put_object(Bucket=BUCKET, Key="exit/p.jsonl", Body=jsonl(4000))
    code = (
        "import sys\n"
        "from pimingestd.config import RemoteConfig, S3Config\n"
        "from pimingestd.locations.remote import Remote\n"
        f"remote = Remote(RemoteConfig(allowed_urls=('s3://{BUCKET}/',), s3=S3Config(**{s3.config()!r})))\n"
        f"url = 's3://{BUCKET}/exit/p.jsonl'\n"
        "kept = remote._open_at(url, remote.stat(url), 0, fresh=False)\n"
        "kept.read(1000)\n"
        "raise SystemExit(3)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert run.returncode == 3, run.stderr


async def test_the_s3_session_keeps_only_the_endpoints_it_uses_and_resolves_them_the_same() -> None:
    """botocore's endpoints table is cut to the services the daemon's S3 client and its credential chain
    make; those clients (S3 also with FIPS and dual-stack endpoints) in six partitions' regions resolve the
    same endpoint, region and partition as with the whole table."""
    import aiobotocore.session
    from aiobotocore.config import AioConfig

    from pimingestd.locations import s3_session

    lean, whole = s3_session.session(), aiobotocore.session.AioSession()
    creds = {"aws_access_key_id": "a", "aws_secret_access_key": "b"}
    variants = {
        "plain": None,
        "fips": AioConfig(use_fips_endpoint=True),
        "dualstack": AioConfig(use_dualstack_endpoint=True),
    }
    for service in sorted(s3_session.SERVICES):
        for region in ("us-east-1", "eu-central-1", "ap-southeast-2", "cn-north-1", "us-gov-west-1", "us-iso-east-1"):
            for name, config in variants.items():
                if name != "plain" and service != "s3":
                    continue
                seen = []
                for session in (lean, whole):
                    async with session.create_client(service, region_name=region, config=config, **creds) as client:
                        seen.append((client.meta.endpoint_url, client.meta.region_name, client.meta.partition))
                assert seen[0] == seen[1], (service, region, name, seen)
    table = lean.get_component("data_loader").load_data("endpoints")
    kept = {name for partition in table["partitions"] for name in partition["services"]}
    assert "s3" in kept and kept <= s3_session.SERVICES, kept
    assert {p["partition"] for p in table["partitions"]} == {
        p["partition"] for p in whole.get_component("data_loader").load_data("endpoints")["partitions"]
    }
    assert len(whole.get_component("data_loader").load_data("endpoints")["partitions"][0]["services"]) > 100
    import botocore.loaders

    s3_model = str(Path(botocore.loaders.__file__).parent / "data" / "s3" / "2006-03-01" / "service-2")
    ours, theirs = s3_session.DataFiles().load_file(s3_model), botocore.loaders.JSONFileLoader().load_file(s3_model)
    s3_session.undocument(theirs)
    assert ours == theirs and type(ours["shapes"]) is dict and type(theirs["shapes"]) is not dict
    assert s3_session.DataFiles().load_file(s3_model + "-none") is None and not s3_session.DataFiles().exists(
        s3_model + "-none"
    )
    model = lean.get_component("data_loader").load_service_model("s3", "service-2")
    full = whole.get_component("data_loader").load_service_model("s3", "service-2")
    assert model["operations"]["GetObject"]["documentation"] == "" != full["operations"]["GetObject"]["documentation"]
    assert model["operations"].keys() == full["operations"].keys() and model["shapes"].keys() == full["shapes"].keys()


# ---- SFTP (sshd) --------------------------------------------------------------------------------------


async def test_an_sftp_object_is_delivered_and_a_cut_is_continued(
    make_daemon: MakeDaemon, receiver: Receiver, sshd: SshServer
) -> None:
    data = jsonl(300)
    (sshd.root / "p.jsonl").write_bytes(data)
    proxy = await CuttingProxy(sshd.port, cut_after=len(data) // 2).start()
    try:
        # Through the proxy, the host is 127.0.0.1 on another port: known_hosts names it too.
        known = Path(str(sshd.known_hosts) + ".proxy")
        line = sshd.known_hosts.read_text()
        known.write_text(line + line.replace(f"]:{sshd.port} ", f"]:{proxy.port} "))
        d = await make_daemon(
            remote={
                **remote_section([f"sftp://127.0.0.1:{sshd.port}/", f"sftp://127.0.0.1:{proxy.port}/"]),
                "sftp": sshd.config(known),
            }
        )
        code, answer = await d.ingest(url=sshd.url("p.jsonl"))
        assert code == 202, answer
        st = await d.wait(answer["ingestion_id"])
        assert st["status"] == "completed" and st["file_id"] == file_id(data), st
        assert st["version"].startswith("modified:")
        assert await records(receiver, st["ingestion_id"]) == canonical(300)
        cut_url = f"sftp://127.0.0.1:{proxy.port}{sshd.root}/p.jsonl"
        code, answer = await d.ingest(url=cut_url, re_ingestion=True)
        assert code == 202, answer
        st = await d.wait(answer["ingestion_id"])
        assert st["status"] == "completed" and st["file_id"] == file_id(data), st
        assert proxy.cuts == 1
        assert await records(receiver, st["ingestion_id"]) == canonical(300)
    finally:
        await proxy.stop()


async def test_an_unknown_or_wrong_host_key_fails_clearly(make_daemon: MakeDaemon, sshd: SshServer) -> None:
    (sshd.root / "k.jsonl").write_bytes(jsonl(2))
    d = await make_daemon(
        remote={**remote_section([f"sftp://127.0.0.1:{sshd.port}/"]), "sftp": sshd.config(sshd.other_known_hosts)}
    )
    code, answer = await d.ingest(url=sshd.url("k.jsonl"))
    assert code == 502, answer
    assert "host key" in answer["detail"] and "known_hosts" in answer["detail"], answer


# ---- HTTP (aiohttp with Range and ETag) ---------------------------------------------------------------


async def test_an_http_object_with_headers_cut_and_continued(
    make_daemon: MakeDaemon, receiver: Receiver, files: HttpFiles
) -> None:
    data = jsonl(200)
    files.files["p.jsonl"] = data
    files.cut_after = len(data) // 2
    d = await make_daemon(
        remote=remote_section([f"http://127.0.0.1:{files.port}/"], http={"headers": {"Authorization": "Bearer t0k"}})
    )
    code, answer = await d.ingest(url=files.url("p.jsonl"))
    assert code == 202, answer
    st = await d.wait(answer["ingestion_id"])
    assert st["status"] == "completed" and st["file_id"] == file_id(data), st
    assert await records(receiver, st["ingestion_id"]) == canonical(200)
    assert files.gets[0] == ("p.jsonl", None)  # streamed from the start, then continued where it was cut
    continued = files.gets[1][1]
    assert continued is not None and continued.startswith("bytes=") and int(continued[6:].split("-")[0]) > 0
    assert all(h.get("Authorization") == "Bearer t0k" for h in files.headers_seen)


async def fails_sending_nothing(
    make_daemon: MakeDaemon, receiver: Receiver, files: HttpFiles, why: str
) -> dict[str, Any]:
    """Ingest files' p.jsonl through a daemon allowed to read the server: it fails saying ``why``, and the
    receiver never saw a chunk."""
    d = await make_daemon(remote=remote_section([f"http://127.0.0.1:{files.port}/"]))
    code, answer = await d.ingest(url=files.url("p.jsonl"))
    assert code == 202, answer
    st = await d.wait(answer["ingestion_id"])
    assert st["status"] == "failed" and why in st["error"], st
    assert (await receiver.stats()).get("chunks_received", 0) == 0
    return st


async def test_a_cut_without_ranged_reads_fails_and_sends_nothing(
    make_daemon: MakeDaemon, receiver: Receiver, files: HttpFiles
) -> None:
    data = jsonl(200)
    files.files["p.jsonl"] = data
    files.cut_after = len(data) // 2
    files.ranges = False
    await fails_sending_nothing(make_daemon, receiver, files, "does not support ranged reads")


async def test_an_object_replaced_while_it_is_read_fails_and_sends_nothing(
    make_daemon: MakeDaemon, receiver: Receiver, files: HttpFiles
) -> None:
    files.files["p.jsonl"] = jsonl(200)
    files.replace_after_first["p.jsonl"] = jsonl(210)
    await fails_sending_nothing(make_daemon, receiver, files, "the remote object changed")


async def test_resume_delivers_from_the_spool_without_downloading_again(
    make_daemon: MakeDaemon, receiver: Receiver, files: HttpFiles
) -> None:
    data = jsonl(60)
    files.files["p.jsonl"] = data
    await receiver.faults([{"chunk": 3, "action": "reject_final"}])
    d = await make_daemon(remote=remote_section([f"http://127.0.0.1:{files.port}/"]))
    code, answer = await d.ingest(url=files.url("p.jsonl"))
    assert code == 202, answer
    st = await d.wait(answer["ingestion_id"])
    assert st["status"] == "failed" and st["chunks_acked"] == 2, st
    gets = len(files.gets)
    del files.files["p.jsonl"]  # gone from the server: only the spool can finish it
    code, _ = await d.request("POST", f"/api/ingestions/{st['ingestion_id']}/resume")
    assert code == 202
    st = await d.wait(st["ingestion_id"])
    assert st["status"] == "completed", st
    assert len(files.gets) == gets
    assert await records(receiver, st["ingestion_id"]) == canonical(60)


async def test_without_a_version_a_cut_is_not_spliced(
    make_daemon: MakeDaemon, receiver: Receiver, files: HttpFiles
) -> None:
    """A server that gives neither ETag nor Last-Modified: a ranged read could join two versions, so a cut
    fails the ingestion instead."""
    data = jsonl(200)
    files.files["p.jsonl"] = data
    files.cut_after = len(data) // 2
    files.etag = False
    st = await fails_sending_nothing(make_daemon, receiver, files, "gives no ETag or Last-Modified")
    assert st["version"] is None


async def test_with_only_a_weak_etag_a_cut_is_not_spliced(
    make_daemon: MakeDaemon, receiver: Receiver, files: HttpFiles
) -> None:
    """A weak ETag (``W/"…"``) says two versions are equivalent, not that their bytes are the same: it cannot
    pin a read (If-Match never matches it) nor a range (RFC 9110 13.1.5 refuses it in If-Range). The object
    is replaced by other bytes of the same size under the same weak ETag while the first GET is cut: a ranged
    read continued it with the new object's second half. The cut now fails the ingestion, as without a
    version, and nothing is sent."""
    data = jsonl(200)
    other = data.replace(b'"SKU-00', b'"SKU-99')  # other products, the same size
    assert len(other) == len(data) and other != data
    files.files["p.jsonl"] = data
    files.replace_after_first["p.jsonl"] = other
    files.cut_after = len(data) // 2
    files.weak_etag = 'W/"equivalent"'
    st = await fails_sending_nothing(make_daemon, receiver, files, "only a weak ETag")
    assert st["version"] == 'etag:W/"equivalent"', st


async def test_a_redirect_must_stay_within_allowed_urls(make_daemon: MakeDaemon, files: HttpFiles) -> None:
    files.files["real.jsonl"] = jsonl(3)
    files.redirect["away.jsonl"] = f"http://localhost:{files.port}/real.jsonl"
    d = await make_daemon(remote=remote_section([f"http://127.0.0.1:{files.port}/"]))
    code, answer = await d.ingest(url=files.url("away.jsonl"))
    assert code == 400 and "not under any of [remote] allowed_urls" in answer["detail"], answer


async def test_a_missing_object_is_404(make_daemon: MakeDaemon, files: HttpFiles, s3: S3Server) -> None:
    d = await make_daemon(remote=remote_section([f"http://127.0.0.1:{files.port}/", f"s3://{BUCKET}/"], s3=s3))
    for url in (files.url("none.jsonl"), f"s3://{BUCKET}/none.jsonl"):
        code, answer = await d.ingest(url=url)
        assert code == 404 and "no such object" in answer["detail"], (url, answer)


# ---- remote inboxes -------------------------------------------------------------------------------


async def _until(predicate: Any, timeout: float = 30.0) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _keys(s3: S3Server, prefix: str) -> set[str]:
    listed = s3.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"] for o in listed.get("Contents", [])}


async def test_an_s3_prefix_is_watched_and_objects_move_to_done_or_failed(
    make_daemon: MakeDaemon, receiver: Receiver, s3: S3Server
) -> None:
    client = s3.client()
    client.put_object(Bucket=BUCKET, Key="w/a.jsonl", Body=jsonl(12, 500))
    client.put_object(Bucket=BUCKET, Key="w/bad.json", Body=b'[{"sku": 1},')
    client.put_object(Bucket=BUCKET, Key="w/.hidden.jsonl", Body=jsonl(1))
    watch = {
        "url": f"s3://{BUCKET}/w/",
        "poll_interval": 0.2,
        "done_prefix": f"s3://{BUCKET}/w-done/",
        "failed_prefix": f"s3://{BUCKET}/w-failed/",
    }
    d = await make_daemon(remote={**remote_section([f"s3://{BUCKET}/"], s3=s3), "watch": [watch]})
    await _until(lambda: _keys(s3, "w-done/") == {"w-done/a.jsonl"} and len(_keys(s3, "w-failed/")) == 2)
    assert _keys(s3, "w/") == {"w/.hidden.jsonl"}
    report = json.loads(client.get_object(Bucket=BUCKET, Key="w-failed/bad.json.error.json")["Body"].read())
    assert "bad.json" in report["error"] and report["ingestion_id"]
    code, listing = await d.request("GET", "/api/ingestions")
    assert code == 200
    mine = {i["file_name"]: i for i in listing["ingestions"] if i["source"] == "remote_inbox"}
    assert mine["a.jsonl"]["status"] == "completed" and mine["bad.json"]["status"] == "failed"
    assert await records(receiver, mine["a.jsonl"]["ingestion_id"]) == canonical(12, 500)
    # Put back unchanged: answered by the ingestion that took it, nothing sent again, moved to done again.
    received = (await receiver.stats())["chunks_received"]
    client.delete_object(Bucket=BUCKET, Key="w-done/a.jsonl")
    client.put_object(Bucket=BUCKET, Key="w/a.jsonl", Body=jsonl(12, 500))
    await _until(lambda: _keys(s3, "w-done/") == {"w-done/a.jsonl"})
    assert (await receiver.stats())["chunks_received"] == received


async def test_an_inbox_object_whose_name_a_url_cannot_carry_is_left_and_said(
    make_daemon: MakeDaemon, receiver: Receiver, s3: S3Server
) -> None:
    """S3 keys and SFTP names are literal, and may hold ``#`` or ``?``, which end a URL's path: the URL made
    for ``in/Export #2.jsonl`` named ``in/Export `` (another object, read and moved in its place) while the
    object itself stayed, marked as taken, never delivered and never said. It is left in place, and a warning
    names it and says to rename it; the other objects are taken as before."""
    client = s3.client()
    client.put_object(Bucket=BUCKET, Key="wq/Export ", Body=jsonl(2, 700))  # what the cut URL names
    client.put_object(Bucket=BUCKET, Key="wq/Export #2.jsonl", Body=jsonl(3, 800))
    client.put_object(Bucket=BUCKET, Key="wq/why?.jsonl", Body=jsonl(3, 900))
    watch = {
        "url": f"s3://{BUCKET}/wq/",
        "format": "jsonl",
        "poll_interval": 0.2,
        "done_prefix": f"s3://{BUCKET}/wq-done/",
        "failed_prefix": f"s3://{BUCKET}/wq-failed/",
    }
    with structlog.testing.capture_logs() as events:
        d = await make_daemon(remote={**remote_section([f"s3://{BUCKET}/"], s3=s3), "watch": [watch]})
        await _until(lambda: _keys(s3, "wq-done/") == {"wq-done/Export "})
        await _until(lambda: sum("cannot be named by a URL" in e["event"] for e in events) >= 2)
        for _ in range(3):  # more polls: said once per object, not at every poll
            await d.app[api.REMOTE_INBOXES].poll(d.config.remote.watch[0])
    assert _keys(s3, "wq/") == {"wq/Export #2.jsonl", "wq/why?.jsonl"}
    said = [e for e in events if "cannot be named by a URL" in e["event"]]
    assert sorted(e["name"] for e in said) == ["Export #2.jsonl", "why?.jsonl"], said
    code, listing = await d.request("GET", "/api/ingestions")
    mine = [i for i in listing["ingestions"] if i["source"] == "remote_inbox"]
    assert [i["file_name"] for i in mine] == ["Export "], mine
    assert await records(receiver, mine[0]["ingestion_id"]) == canonical(2, 700)
    for url in (f"s3://{BUCKET}/wq/Export #2.jsonl", f"s3://{BUCKET}/wq/why?.jsonl", f"s3://{BUCKET}/wq/Export ?"):
        code, answer = await d.ingest(url=url)  # nor through the API: it would read wq/Export
        assert code == 400 and "cannot be given in a URL" in answer["detail"], (url, answer)


async def test_an_sftp_folder_is_watched_and_its_ledger_survives_a_restart(
    make_daemon: MakeDaemon, receiver: Receiver, sshd: SshServer
) -> None:
    from pimingestd.http.keys import REMOTE_INBOXES

    folder = sshd.root / "inbox"
    folder.mkdir()
    (folder / "p.jsonl").write_bytes(jsonl(7, 900))
    watch = {"url": f"sftp://127.0.0.1:{sshd.port}{folder}", "poll_interval": 0.2}
    section = {**remote_section([f"sftp://127.0.0.1:{sshd.port}/"], sshd=sshd), "watch": [watch]}
    d = await make_daemon(remote=section)

    async def taken() -> list[dict[str, Any]]:
        _, listing = await d.request("GET", "/api/ingestions")
        return [i for i in listing["ingestions"] if i["source"] == "remote_inbox"]

    done: list[dict[str, Any]] = []

    async def poll_until_completed(count: int) -> None:
        import asyncio

        for _ in range(400):
            done[:] = [i for i in await taken() if i["status"] == "completed"]
            if len(done) >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"only {len(done)} completed")

    await poll_until_completed(1)
    assert await records(receiver, done[0]["ingestion_id"]) == canonical(7, 900)
    assert (folder / "p.jsonl").exists()  # no done_prefix: left in place, and not taken again
    await d.stop()
    d = await make_daemon(remote=section)
    inboxes = d.app[REMOTE_INBOXES]
    cfg_watch = d.config.remote.watch[0]
    assert [await inboxes.poll(cfg_watch) for _ in range(3)] == [0, 0, 0]
    assert len(await taken()) == 1
    # A new version (the file rewritten): taken once it lists the same on two polls.
    (folder / "p.jsonl").write_bytes(jsonl(9, 900))
    import os

    os.utime(folder / "p.jsonl", (2_000_000_000, 2_000_000_000))
    await poll_until_completed(2)
    newest = max(done, key=lambda i: i["created_at"])
    assert await records(receiver, newest["ingestion_id"]) == canonical(9, 900)


async def test_remote_credentials_never_reach_logs_or_check_config(
    make_cluster: Any, s3: S3Server, files: HttpFiles, tmp_path: Path
) -> None:
    """S3 keys from a systemd credential and the environment, an HTTP header from the config: used (the reads
    work), masked by check-config, absent from a debug-level log of good and failing reads."""
    import asyncio
    import subprocess
    import sys

    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "s3-key").write_text(s3.key + "\n")
    token = "hdr-token-7f3a9c"
    files.files["h.jsonl"] = jsonl(4)
    s3.client().put_object(Bucket=BUCKET, Key="sec/p.jsonl", Body=jsonl(5))
    remote = {
        "allowed_urls": [f"s3://{BUCKET}/sec/", f"http://127.0.0.1:{files.port}/"],
        "s3": {"endpoint_url": s3.endpoint, "region": "us-east-1"},
        "http": {"headers": {"Authorization": f"Bearer {token}"}},
    }
    env = {"CREDENTIALS_DIRECTORY": str(creds), "PIMINGESTD_S3_SECRET": s3.secret}
    c = make_cluster(env=env, remote=remote)
    await c.start_receiver()
    await c.start_daemon()
    for url in (f"s3://{BUCKET}/sec/p.jsonl", files.url("h.jsonl")):
        code, answer = await c.call("POST", c.durl + "/api/ingest", json={"url": url})
        assert code == 202, answer
        assert (await c.settle(answer["ingestion_id"], timeout=60))["status"] == "completed"
    code, answer = await c.call("POST", c.durl + "/api/ingest", json={"url": f"s3://{BUCKET}/sec/missing.jsonl"})
    assert code == 404
    assert all(h.get("Authorization") == f"Bearer {token}" for h in files.headers_seen)
    checked = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "pimingestd", "check-config", "--config", str(c.cfg)],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, **env},
    )
    assert checked.returncode == 0, checked.stderr
    shown = json.loads(checked.stdout)["remote"]
    assert shown["s3"]["key"] == "***" and shown["s3"]["secret"] == "***"
    assert shown["http"]["headers"] == {"Authorization": "***"}
    c.close()
    log = c.log.read_text()
    assert "remote object identified" in log  # the log is the real one, at debug level
    for secret in (s3.key, s3.secret, token):
        assert secret not in log and secret not in checked.stdout, secret


async def test_the_cli_ingests_a_url(make_daemon: MakeDaemon, receiver: Receiver, files: HttpFiles) -> None:
    from .test_cli import cli

    files.files["feed.xml"] = b"<rss><channel><item><id>1</id></item><item><id>2</id></item></channel></rss>"
    d = await make_daemon(remote=remote_section([f"http://127.0.0.1:{files.port}/"]))
    code, out, err = await cli(
        "ingest", files.url("feed.xml"), "-o", "record_path=rss/channel/item", "--wait", "--url", d.url
    )
    assert code == 0, err
    ingestion_id, status, shown_id = out.split()[:3]
    assert (status, shown_id) == ("queued", "-")
    assert await records(receiver, ingestion_id) == ['{"id":"1"}', '{"id":"2"}']
    code, _, err = await cli("ingest", files.url("feed.xml"), "--upload", "--url", d.url)
    assert code == 2 and "--upload takes a local file" in err
    code, _, err = await cli("ingest", "https://elsewhere.example/x.json", "--url", d.url)
    assert code == 1 and "not under any of [remote] allowed_urls" in err


async def test_a_killed_daemon_resumes_a_remote_ingestion_from_its_spool(make_cluster: Any, files: HttpFiles) -> None:
    """SIGKILL mid-delivery, then a restart: the ingestion resumes from the spool (no new GET), each record is
    applied exactly once, in order."""
    import asyncio

    data = jsonl(120)
    files.files["k.jsonl"] = data
    c = make_cluster(remote={"allowed_urls": [f"http://127.0.0.1:{files.port}/"]})
    c.rules = [{"action": "delay_ack", "seconds": 0.2, "times": 100}]
    await c.start_receiver()
    await c.start_daemon()
    code, answer = await c.call("POST", c.durl + "/api/ingest", json={"url": files.url("k.jsonl")})
    assert code == 202, answer
    ing = answer["ingestion_id"]
    for _ in range(400):
        st = await c.status(ing)
        if st["chunks_acked"] >= 3:
            break
        await asyncio.sleep(0.05)
    assert st["chunks_acked"] >= 3 and st["status"] == "running", st
    gets = len(files.gets)
    await c.kill_daemon()
    await c.faults([])
    c.rules = []
    await c.start_daemon()
    st = await c.settle(ing, timeout=60)
    assert st["status"] == "completed", st
    assert len(files.gets) == gets  # delivered from the spool, not downloaded again
    counts = await c.verify(ing, [json.loads(x) for x in canonical(120)])
    assert c.kills == 1, counts


async def test_a_remote_objects_reject_file_is_read_again_from_the_object(
    make_daemon: MakeDaemon, receiver: Receiver, s3: S3Server
) -> None:
    """Record rules and rejects work for a remote object too: the reject file comes from a second read of
    the object (its identity checked), and delta keys it like a local file."""
    data = jsonl(30)
    s3.client().put_object(Bucket=BUCKET, Key="in/refused.jsonl", Body=data)
    wanted = json.loads(data.splitlines()[7])
    await receiver.faults([{"action": "reject_records", "field": "sku", "values": [wanted["sku"]], "reason": "no"}])
    d = await make_daemon(remote=remote_section([f"s3://{BUCKET}/in/"], s3=s3))
    code, answer = await d.ingest(url=f"s3://{BUCKET}/in/refused.jsonl", key="sku", delta=True)
    assert code == 202, answer
    st = await d.wait(answer["ingestion_id"])
    assert st["status"] == "completed" and st["records_rejected"] == 1 and st["delta_scope"] == "refused.jsonl", st
    code, raw = await d.request("GET", f"/api/ingestions/{st['ingestion_id']}/rejects")
    assert code == 200 and {k: v for k, v in raw.items() if k != "_reject"} == wanted, raw


# ---- SSRF: every request checked before it is made (issue 27, items 11-13) -------------------------------


@pytest.fixture
async def elsewhere() -> AsyncIterator[HttpFiles]:
    """A second server on loopback: the service a redirect or a crafted URL must never reach."""
    async with http_files() as f:
        f.files["p.jsonl"] = b'{"sku": "internal-only"}\n'
        f.files["admin/users.jsonl"] = b'{"user": "root"}\n'
        yield f


KEY = {"X-Api-Key": "k-7f3a9c-feed-key"}


async def test_a_get_redirected_out_of_allowed_urls_is_refused_before_it_is_made(
    make_daemon: MakeDaemon, receiver: Receiver, files: HttpFiles, elsewhere: HttpFiles
) -> None:
    """The feed server answers HEAD with 200 and GET with a 302 to a loopback service that allowed_urls does
    not name: the redirected GET is never made, nothing reaches PIM-Core, and the failure says why."""
    files.files["p.jsonl"] = jsonl(5)
    files.redirect_get["p.jsonl"] = elsewhere.url("p.jsonl")
    d = await make_daemon(remote=remote_section([f"http://127.0.0.1:{files.port}/"], http={"headers": KEY}))
    code, answer = await d.ingest(url=files.url("p.jsonl"))
    assert code == 202, answer
    st = await d.wait(answer["ingestion_id"])
    assert st["status"] == "failed" and "not under any of [remote] allowed_urls" in st["error"], st
    assert elsewhere.requests == []
    assert (await receiver.stats()).get("chunks_received", 0) == 0


async def test_a_head_redirected_out_of_allowed_urls_never_reaches_the_other_host(
    make_daemon: MakeDaemon, files: HttpFiles, elsewhere: HttpFiles
) -> None:
    """Refusing the redirect after the HEAD followed it is too late: the other host has had the request, and
    the configured header with it."""
    files.redirect["p.jsonl"] = elsewhere.url("p.jsonl")
    d = await make_daemon(remote=remote_section([f"http://127.0.0.1:{files.port}/"], http={"headers": KEY}))
    code, answer = await d.ingest(url=files.url("p.jsonl"))
    assert code == 400 and "not under any of [remote] allowed_urls" in answer["detail"], answer
    assert elsewhere.requests == []


async def test_a_ranged_read_redirected_out_of_allowed_urls_is_refused(
    make_daemon: MakeDaemon, receiver: Receiver, files: HttpFiles, elsewhere: HttpFiles
) -> None:
    """The transfer is cut, and the ranged GET that continues it is redirected: that hop is checked too."""
    data = jsonl(200)
    files.files["p.jsonl"] = data
    files.cut_after = len(data) // 2
    elsewhere.files["p.jsonl"] = data  # the same bytes: only the check can tell
    files.redirect_ranged["p.jsonl"] = elsewhere.url("p.jsonl")
    d = await make_daemon(remote=remote_section([f"http://127.0.0.1:{files.port}/"], http={"headers": KEY}))
    code, answer = await d.ingest(url=files.url("p.jsonl"))
    assert code == 202, answer
    st = await d.wait(answer["ingestion_id"])
    assert st["status"] == "failed" and "not under any of [remote] allowed_urls" in st["error"], st
    assert elsewhere.requests == []
    assert (await receiver.stats()).get("chunks_received", 0) == 0


async def test_configured_headers_go_to_the_requested_origin_only(
    make_daemon: MakeDaemon, receiver: Receiver, files: HttpFiles, elsewhere: HttpFiles
) -> None:
    """A redirect to another allowed origin is followed, but the [remote.http] headers stay with the origin
    the URL names; asked for directly, the other origin gets them."""
    files.files["p.jsonl"] = jsonl(5)
    elsewhere.files["p.jsonl"] = jsonl(5)
    files.redirect_get["p.jsonl"] = elsewhere.url("p.jsonl")
    allowed = [f"http://127.0.0.1:{files.port}/", f"http://127.0.0.1:{elsewhere.port}/"]
    d = await make_daemon(remote=remote_section(allowed, http={"headers": KEY}))
    code, answer = await d.ingest(url=files.url("p.jsonl"))
    assert code == 202, answer
    st = await d.wait(answer["ingestion_id"])
    assert st["status"] == "completed", st
    assert await records(receiver, st["ingestion_id"]) == canonical(5)
    assert files.requests and all(h.get("X-Api-Key") == KEY["X-Api-Key"] for _, _, h in files.requests)
    assert [m for m, _, _ in elsewhere.requests] == ["GET"]
    assert all("X-Api-Key" not in h for _, _, h in elsewhere.requests), elsewhere.requests
    elsewhere.files["q.jsonl"] = jsonl(2)
    code, answer = await d.ingest(url=elsewhere.url("q.jsonl"))
    assert code == 202, answer
    assert (await d.wait(answer["ingestion_id"]))["status"] == "completed"
    assert elsewhere.requests[-1][2].get("X-Api-Key") == KEY["X-Api-Key"]


async def test_a_redirect_that_echoes_a_configured_header_never_shows_it_in_the_refusal(
    make_daemon: MakeDaemon, files: HttpFiles, elsewhere: HttpFiles
) -> None:
    """The feed server redirects to a host allowed_urls does not name, with the X-Api-Key it was sent in the
    Location's path (or as a subdomain): the refusal names the URL it refused, and the key in it is masked,
    in the API's answer (HEAD at submit) and in the ingestion's error (GET), as in any other error text."""
    secret = KEY["X-Api-Key"]
    files.redirect["head.jsonl"] = elsewhere.url(f"{secret}/p.jsonl")
    files.files["get.jsonl"] = jsonl(2)
    files.redirect_get["get.jsonl"] = f"http://{secret}.localhost:{elsewhere.port}/p.jsonl"
    d = await make_daemon(remote=remote_section([f"http://127.0.0.1:{files.port}/"], http={"headers": KEY}))
    code, answer = await d.ingest(url=files.url("head.jsonl"))
    assert code == 400 and "not under any of [remote] allowed_urls" in answer["detail"], answer
    assert secret not in json.dumps(answer), answer
    code, answer = await d.ingest(url=files.url("get.jsonl"))
    assert code == 202, answer
    st = await d.wait(answer["ingestion_id"])
    assert st["status"] == "failed" and "not under any of [remote] allowed_urls" in st["error"], st
    assert secret not in json.dumps(st), st
    assert elsewhere.requests == []


def _own_non_loopback() -> list[str]:
    import psutil

    return [
        a.address.split("%")[0]
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family.name in ("AF_INET", "AF_INET6") and not a.address.startswith(("127.", "::1"))
    ]


def test_addresses_that_reach_this_machine_are_internal_in_every_spelling() -> None:
    """IPv4-mapped, IPv4-compatible, 6to4 and NAT64 spellings of loopback and link-local addresses, 0.0.0.0/8
    and the machine's own non-loopback addresses (a service bound to 0.0.0.0 answers there) need an entry
    that names them; nothing is connected to here."""
    allowed = ["http://"]
    for host in (
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[::ffff:169.254.169.254]",
        "[::127.0.0.1]",
        "[2002:7f00:1::]",
        "[2002:a9fe:a9fe::1]",
        "[64:ff9b::7f00:1]",
        "[64:ff9b::a9fe:a9fe]",
        "[fe80::1]",
        "0.1.2.3",
        *(f"[{a}]" if ":" in a else a for a in _own_non_loopback()),
    ):
        with pytest.raises(UrlNotAllowed, match="must be listed by name"):
            check_allowed(f"http://{host}:8080/p.jsonl", allowed, resolve=False)
    assert _own_non_loopback(), "this machine has no address but loopback: the last check above proved nothing"
    check_allowed("http://[2001:db8::1]/p.jsonl", allowed, resolve=False)  # an ordinary address passes
    check_allowed("http://[::ffff:127.0.0.1]:8080/p.jsonl", ["http://[::ffff:127.0.0.1]:8080/"], resolve=False)


def test_cloud_metadata_services_outside_link_local_need_an_entry_that_names_them() -> None:
    """The README promises a bare entry never reaches a cloud metadata service. Most answer at 169.254.169.254
    (link-local), but AWS's IPv6 endpoint is fd00:ec2::254 (unique-local) and Alibaba Cloud's is
    100.100.100.200 (shared address space): both passed a bare ``http://`` entry, in every spelling."""
    allowed = ["http://"]
    for host in ("[fd00:ec2::254]", "[FD00:EC2:0::254]", "[::ffff:100.100.100.200]", "100.100.100.200"):
        with pytest.raises(UrlNotAllowed, match="must be listed by name"):
            check_allowed(f"http://{host}/latest/meta-data/iam", allowed, resolve=False)
    check_allowed("http://100.100.100.201/p.jsonl", allowed, resolve=False)  # its neighbours are ordinary
    check_allowed("http://[fd00:ec2::253]/p.jsonl", allowed, resolve=False)
    check_allowed("http://[fd00:ec2::254]/latest/x", ["http://[fd00:ec2::254]/"], resolve=False)  # when named


async def test_an_ipv4_mapped_loopback_url_is_refused_and_nothing_is_fetched(
    make_daemon: MakeDaemon, files: HttpFiles
) -> None:
    files.files["p.jsonl"] = jsonl(3)
    d = await make_daemon(remote=remote_section(["http://"], http={"headers": KEY}))
    for host in ("[::ffff:127.0.0.1]", "[::ffff:7f00:1]"):
        code, answer = await d.ingest(url=f"http://{host}:{files.port}/p.jsonl")
        assert code == 400 and "must be listed by name" in answer["detail"], answer
    assert files.requests == []


async def test_a_name_that_resolves_elsewhere_at_connect_time_is_refused(
    make_daemon: MakeDaemon, files: HttpFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name resolves to an outside address when allowed_urls is checked, then to
    127.0.0.1. The connection goes to the addresses the check saw at connect time, never a later answer."""
    import socket

    files.files["p.jsonl"] = jsonl(3)
    real = socket.getaddrinfo

    def rebinding(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        """An outside address to the check (which asks without a port), loopback to the connection."""
        if host == "feed.rebind.test":
            address = "203.0.113.7" if port is None else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port or 0))]
        return real(host, port, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    d = await make_daemon(remote=remote_section(["http://"]))
    code, answer = await d.ingest(url=f"http://feed.rebind.test:{files.port}/p.jsonl")
    assert code == 400 and "resolves to 127.0.0.1" in answer["detail"], answer
    assert files.requests == []


async def test_an_allowed_url_stays_allowed_as_aiohttp_spells_each_request(
    make_daemon: MakeDaemon, receiver: Receiver, files: HttpFiles
) -> None:
    """The session checks each request as aiohttp spells it: non-ASCII path characters percent-encoded,
    ``%7E`` decoded to ``~``, a default port dropped, an IDN host in punycode. An entry and a URL written
    the other way are the same place, and the read is made (it was refused at the first hop)."""
    files.files["Exporte/Größen/p.jsonl"] = jsonl(3)
    files.files["~shop/p.jsonl"] = jsonl(2)
    base = f"http://127.0.0.1:{files.port}"
    d = await make_daemon(remote=remote_section([f"{base}/Exporte/Größen/", f"{base}/%7Eshop/"]))
    for url, n in ((f"{base}/Exporte/Größen/p.jsonl", 3), (f"{base}/%7Eshop/p.jsonl", 2)):
        code, answer = await d.ingest(url=url)
        assert code == 202, (url, answer)
        st = await d.wait(answer["ingestion_id"])
        assert st["status"] == "completed", (url, st)
        assert await records(receiver, st["ingestion_id"]) == canonical(n)
    for entry, url in (  # spellings no test server can take: checked as the session sees them
        ("https://cdn.example.com:443/feeds/", "https://cdn.example.com/feeds/p.jsonl"),
        ("https://cdn.example.com/feeds/", "https://cdn.example.com:443/feeds/p.jsonl"),
        ("https://bücher.example/feeds/", "https://xn--bcher-kva.example/feeds/p.jsonl"),
        ("https://xn--bcher-kva.example/feeds/", "https://BÜCHER.example/feeds/p.jsonl"),
    ):
        check_allowed(url, [entry], resolve=False)
        check_allowed(str(yarl.URL(url)), [entry], resolve=False)
    with pytest.raises(UrlNotAllowed):  # the control: another port is another origin
        check_allowed("https://cdn.example.com:8443/feeds/p.jsonl", ["https://cdn.example.com/feeds/"], resolve=False)


async def test_dot_segments_never_leave_the_allowed_prefix_over_http(make_daemon: MakeDaemon, files: HttpFiles) -> None:
    """``/feeds/../admin/users.jsonl`` is ``/admin/users.jsonl`` to the server (and to aiohttp): refused before
    any request, percent-encoded too, and the API key never goes there."""
    files.files["admin/users.jsonl"] = b'{"user": "root"}\n'
    files.files["feeds/p.jsonl"] = jsonl(2)
    d = await make_daemon(remote=remote_section([f"http://127.0.0.1:{files.port}/feeds/"], http={"headers": KEY}))
    base = f"http://127.0.0.1:{files.port}"
    for path in (
        "/feeds/../admin/users.jsonl",
        "/feeds/%2e%2e/admin/users.jsonl",
        "/feeds/.%2E/admin/users.jsonl",
        "/feeds/%252e%252e/admin/users.jsonl",
        "/feeds/./../admin/users.jsonl",
        "/feeds/..%2fadmin/users.jsonl",
    ):
        code, answer = await d.ingest(url=base + path)
        assert code == 400 and "'..' segment" in answer["detail"], (path, answer)
    assert files.requests == []
    code, answer = await d.ingest(url=base + "/feeds/p.jsonl")  # the control: allowed, and read
    assert code == 202, answer


async def test_dot_segments_never_leave_the_allowed_folder_over_sftp(
    make_daemon: MakeDaemon, receiver: Receiver, sshd: SshServer
) -> None:
    (sshd.root / "exports").mkdir(exist_ok=True)
    (sshd.root / "private").mkdir(exist_ok=True)
    (sshd.root / "private" / "salaries.jsonl").write_bytes(b'{"name": "x", "salary": 1}\n')
    (sshd.root / "exports" / "p.jsonl").write_bytes(jsonl(2))
    d = await make_daemon(remote=remote_section([sshd.url("exports/")], sshd=sshd))
    for rel in ("exports/../private/salaries.jsonl", "exports/%2e%2e/private/salaries.jsonl"):
        code, answer = await d.ingest(url=sshd.url(rel))
        assert code == 400 and "'..' segment" in answer["detail"], (rel, answer)
    assert (await receiver.stats()).get("chunks_received", 0) == 0
    code, answer = await d.ingest(url=sshd.url("exports/p.jsonl"))  # the control
    assert code == 202, answer
    assert (await d.wait(answer["ingestion_id"]))["status"] == "completed"


def test_urls_with_dot_segments_are_refused_whatever_the_prefix() -> None:
    for url in (
        "s3://feeds/in/../out/x.json",
        "sftp://h/srv/exports/../private/x",
        "https://cdn.example.com/feeds/%2E%2E/admin",
        "https://cdn.example.com/feeds/..\\admin/x",
        "https://cdn.example.com/feeds/./x.json",
    ):
        with pytest.raises(UrlNotAllowed, match=r"'\.\.' segment"):
            check_allowed(url, ["s3://feeds/in/", "sftp://h/srv/exports/", "https://"], resolve=False)


def test_dot_segments_in_the_spellings_servers_resolve_are_refused() -> None:
    """Servers resolve more than ``..``: Tomcat and Spring drop a path parameter (``..;/`` is ``../``), a
    server that NFKC-normalises turns fullwidth dots (U+FF0E) into ``..``, old IIS decoded overlong UTF-8
    (``%c0%ae``), and C code stops at a NUL. Each of these leaves ``/feeds/`` for ``/admin``."""
    allowed = ["https://cdn.example.com/feeds/", "sftp://h/srv/exports/", "s3://feeds/in/"]
    for url in (
        "https://cdn.example.com/feeds/..;/admin/users.jsonl",
        "https://cdn.example.com/feeds/..;jsessionid=x/admin/users.jsonl",
        "https://cdn.example.com/feeds/..%3b/admin/users.jsonl",
        "https://cdn.example.com/feeds/%EF%BC%8E%EF%BC%8E/admin/users.jsonl",
        "https://cdn.example.com/feeds/\uff0e\uff0e/admin/users.jsonl",
        "https://cdn.example.com/feeds/%c0%ae%c0%ae/admin/users.jsonl",
        "https://cdn.example.com/feeds/%e0%80%ae%e0%80%ae/admin/users.jsonl",
        "https://cdn.example.com/feeds/.%00./admin/users.jsonl",
        "https://cdn.example.com/feeds/x/..;",
        "sftp://h/srv/exports/\uff0e\uff0e/private/x",
    ):
        with pytest.raises(UrlNotAllowed, match=r"'\.\.' segment"):
            check_allowed(url, allowed, resolve=False)
    for url in (  # the controls: names that only look like dots
        "https://cdn.example.com/feeds/..x/p.jsonl",
        "https://cdn.example.com/feeds/x;..;/p.jsonl",
        "https://cdn.example.com/feeds/v1.2/p.jsonl",
        "s3://feeds/in/.../x",
    ):
        check_allowed(url, allowed, resolve=False)


# ---- secrets in error texts (issue 27, item 14) --------------------------------------------------------


async def test_a_presigned_urls_signature_never_reaches_errors_the_api_the_page_or_the_log(
    make_cluster: Any, files: HttpFiles
) -> None:
    """aiohttp's exception text quotes the URL it fetched, query and all: a presigned URL's credential and
    signature. The real daemon fails the read; neither appears in the error, the API, the status page or
    the log."""
    credential, signature = "AKIDPRESIGN7Q", "5ee7f1c0ffee5ignature"
    files.files["p.jsonl"] = jsonl(3)
    files.fail_get["p.jsonl"] = 500
    query = (
        f"?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={credential}%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
        f"&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature={signature}"
    )
    c = make_cluster(remote={"allowed_urls": [f"http://127.0.0.1:{files.port}/"], "read_attempts": 2})
    await c.start_receiver()
    await c.start_daemon()
    code, answer = await c.call("POST", c.durl + "/api/ingest", json={"url": files.url("p.jsonl") + query})
    assert code == 202, answer
    st = await c.settle(answer["ingestion_id"], timeout=60)
    assert st["status"] == "failed" and "500" in st["error"], st  # the failure is still said
    assert any(signature in path for _, path, _ in files.requests)  # the server did get the signed URL
    shown = [json.dumps(st)]
    for path in ("/api/ingestions?limit=100", f"/api/ingestions/{st['ingestion_id']}", "/"):
        code, body = await c.call("GET", c.durl + path)
        assert code == 200, body
        shown.append(body if isinstance(body, str) else json.dumps(body))
    c.close()
    shown.append(c.log.read_text())
    assert "remote read failed; reconnecting" in shown[-1]
    for text in shown:
        assert credential not in text and signature not in text, text[:2000]


async def test_a_configured_header_echoed_by_the_server_never_reaches_errors_the_api_the_page_or_the_log(
    make_cluster: Any, files: HttpFiles
) -> None:
    """A feed server answers the GET with a 500 whose reason phrase echoes the request's X-Api-Key (a debug
    build, a proxy's error page): aiohttp's exception text quotes the reason. The [remote.http] header values
    are secrets like the others: masked in the error, the API, the status page and the log."""
    files.files["p.jsonl"] = jsonl(3)
    files.fail_get["p.jsonl"] = 500
    files.fail_reason = lambda request: "bad key " + request.headers.get("X-Api-Key", "none")
    c = make_cluster(
        remote={"allowed_urls": [f"http://127.0.0.1:{files.port}/"], "read_attempts": 2, "http": {"headers": KEY}}
    )
    await c.start_receiver()
    await c.start_daemon()
    code, answer = await c.call("POST", c.durl + "/api/ingest", json={"url": files.url("p.jsonl")})
    assert code == 202, answer
    st = await c.settle(answer["ingestion_id"], timeout=60)
    assert st["status"] == "failed" and "500" in st["error"] and "bad key" in st["error"], st  # still said
    assert files.requests[-1][2].get("X-Api-Key") == KEY["X-Api-Key"]  # the server had it, and echoed it
    shown = [json.dumps(st)]
    for path in ("/api/ingestions?limit=100", f"/api/ingestions/{st['ingestion_id']}", "/"):
        code, body = await c.call("GET", c.durl + path)
        assert code == 200, body
        shown.append(body if isinstance(body, str) else json.dumps(body))
    c.close()
    shown.append(c.log.read_text())
    assert "remote read failed; reconnecting" in shown[-1]
    for text in shown:
        assert KEY["X-Api-Key"] not in text, text[:2000]


# ---- a remote inbox acts on the version it ingested (issue 27, item 4) --------------------------------


async def _replace_while_delivered(d: Any, receiver: Receiver, put_new: Any) -> dict[str, Any]:
    """Wait for the remote inbox's first ingestion to be delivering, then ``put_new()``; its status once ended."""
    import asyncio

    for _ in range(600):
        _, listing = await d.request("GET", "/api/ingestions")
        mine = [i for i in listing["ingestions"] if i["source"] == "remote_inbox"]
        if mine and mine[0]["chunks_acked"] >= 1:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the remote inbox's ingestion never started delivering")
    assert mine[0]["status"] == "running", mine
    put_new()
    await receiver.faults([])
    return await d.wait(mine[0]["ingestion_id"])


async def test_a_new_s3_version_uploaded_during_delivery_is_left_in_place_and_taken(
    make_daemon: MakeDaemon, receiver: Receiver, s3: S3Server
) -> None:
    """The exporter re-uploads in/products.jsonl while the first version is delivered: on completion the first
    is done, but the corrected one is not moved to done/ unread. It stays, is taken at the next poll, is
    delivered, and only then moved."""
    client = s3.client()
    client.put_object(Bucket=BUCKET, Key="v/products.jsonl", Body=jsonl(12, 700))
    await receiver.faults([{"action": "delay_ack", "seconds": 0.3, "times": 1000}])
    watch = {
        "url": f"s3://{BUCKET}/v/",
        "poll_interval": 4,  # the new version is uploaded after a poll, and the first completes before the next
        "chunk_records": 2,
        "done_prefix": f"s3://{BUCKET}/v-done/",
        "failed_prefix": f"s3://{BUCKET}/v-failed/",
    }
    d = await make_daemon(remote={**remote_section([f"s3://{BUCKET}/"], s3=s3), "watch": [watch]})
    corrected = jsonl(5, 800)
    first = await _replace_while_delivered(
        d, receiver, lambda: client.put_object(Bucket=BUCKET, Key="v/products.jsonl", Body=corrected)
    )
    assert first["status"] == "completed", first
    assert await records(receiver, first["ingestion_id"]) == canonical(12, 700)

    async def second() -> list[dict[str, Any]]:
        _, listing = await d.request("GET", "/api/ingestions")
        return [
            i
            for i in listing["ingestions"]
            if i["source"] == "remote_inbox" and i["ingestion_id"] != first["ingestion_id"]
        ]

    import asyncio

    for _ in range(1200):
        later = await second()
        if later and later[0]["status"] == "completed" and _keys(s3, "v/") == set():
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the corrected version was not ingested: {await second()}, {_keys(s3, 'v-done/')}")
    assert await records(receiver, later[0]["ingestion_id"]) == canonical(5, 800)
    moved = client.get_object(Bucket=BUCKET, Key="v-done/products.jsonl")["Body"].read()
    assert moved == corrected


async def test_a_new_sftp_version_written_during_delivery_is_left_in_place_and_taken(
    make_daemon: MakeDaemon, receiver: Receiver, sshd: SshServer
) -> None:
    import asyncio
    import os

    folder = sshd.root / "vinbox"
    folder.mkdir()
    (folder / "products.jsonl").write_bytes(jsonl(12, 700))
    await receiver.faults([{"action": "delay_ack", "seconds": 0.3, "times": 1000}])
    watch = {
        "url": f"sftp://127.0.0.1:{sshd.port}{folder}",
        "poll_interval": 3,  # the new version is written after a poll, and the first completes before the next
        "chunk_records": 2,
        "done_prefix": f"sftp://127.0.0.1:{sshd.port}{sshd.root}/vdone",
    }
    d = await make_daemon(remote={**remote_section([f"sftp://127.0.0.1:{sshd.port}/"], sshd=sshd), "watch": [watch]})
    corrected = jsonl(5, 800)

    def put_new() -> None:
        tmp = folder / ".products.jsonl.part"
        tmp.write_bytes(corrected)
        os.utime(tmp, (2_000_000_000, 2_000_000_000))
        tmp.rename(folder / "products.jsonl")

    first = await _replace_while_delivered(d, receiver, put_new)
    assert first["status"] == "completed", first
    for _ in range(1200):
        done = sshd.root / "vdone" / "products.jsonl"
        if done.exists() and not (folder / "products.jsonl").exists() and done.read_bytes() == corrected:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the corrected version was not ingested and moved")
    _, listing = await d.request("GET", "/api/ingestions")
    later = [i for i in listing["ingestions"] if i["ingestion_id"] != first["ingestion_id"]]
    assert [i["status"] for i in later] == ["completed"], later
    assert await records(receiver, later[0]["ingestion_id"]) == canonical(5, 800)


# ---- the reject file's second read is checked against what was delivered (issue 27, item 2) ----------


async def _rejects_after_replacing(
    d: Any, receiver: Receiver, url: str, refused: dict[str, Any], replace: Any
) -> dict[str, Any]:
    """Ingest ``url`` (30 records, 3 chunks) with PIM-Core refusing ``refused``; once two chunks are ACKed (the
    object was read whole by then), ``replace()`` it, then let the last ACK come. The status once ended."""
    import asyncio

    await receiver.faults(
        [
            {"action": "delay_ack", "chunk": 3, "seconds": 2.0},
            {"action": "reject_records", "field": "sku", "values": [refused["sku"]], "reason": "no"},
        ]
    )
    code, answer = await d.ingest(url=url, chunk_records=10)
    assert code == 202, answer
    for _ in range(400):
        st = await d.status(answer["ingestion_id"])
        if st["chunks_acked"] >= 2:
            break
        await asyncio.sleep(0.02)
    assert st["chunks_acked"] == 2 and st["status"] == "running", st
    replace()
    return await d.wait(answer["ingestion_id"])


@pytest.mark.parametrize("replacement", ["longer", "shorter"])
async def test_a_reject_file_is_never_read_from_an_object_replaced_after_delivery(
    make_daemon: MakeDaemon, receiver: Receiver, s3: S3Server, replacement: str
) -> None:
    """The exporter replaces the object once its chunks are delivered. A longer one would put its own record
    at the refused position into the reject file (a record PIM-Core never saw); a shorter one made the
    ingestion fail with every chunk ACKed, and every resume fail the same way. Now no reject file is
    written from the new object, and the ingestion completes."""
    data = jsonl(30)
    key = f"in/replaced-{replacement}.jsonl"
    s3.client().put_object(Bucket=BUCKET, Key=key, Body=data)
    refused = json.loads(data.splitlines()[7])
    new = jsonl(40, 100) if replacement == "longer" else jsonl(3, 100)
    d = await make_daemon(remote=remote_section([f"s3://{BUCKET}/in/"], s3=s3))
    st = await _rejects_after_replacing(
        d, receiver, f"s3://{BUCKET}/{key}", refused, lambda: s3.client().put_object(Bucket=BUCKET, Key=key, Body=new)
    )
    assert st["status"] == "completed" and st["records_rejected"] == 1, st
    code, raw = await d.request("GET", f"/api/ingestions/{st['ingestion_id']}/rejects")
    assert code != 200, raw  # no reject file: the source it would be read from is not the one delivered
    assert not list((d.config.daemon.state_db.parent / "rejects").glob("*unverified*"))


async def test_a_versioned_objects_reject_file_is_read_from_the_version_delivered(
    make_daemon: MakeDaemon, receiver: Receiver, s3: S3Server
) -> None:
    """The control: with S3 versioning the second read is pinned to the version id, so a replaced object
    still gives the refused record, checked by its bytes."""
    client = s3.client()
    client.create_bucket(Bucket="versioned")
    client.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    data = jsonl(30)
    client.put_object(Bucket="versioned", Key="in/p.jsonl", Body=data)
    refused = json.loads(data.splitlines()[7])
    d = await make_daemon(remote=remote_section(["s3://versioned/in/"], s3=s3))
    st = await _rejects_after_replacing(
        d,
        receiver,
        "s3://versioned/in/p.jsonl",
        refused,
        lambda: client.put_object(Bucket="versioned", Key="in/p.jsonl", Body=jsonl(3, 100)),
    )
    assert st["status"] == "completed" and st["version"].startswith("version:"), st
    code, raw = await d.request("GET", f"/api/ingestions/{st['ingestion_id']}/rejects")
    assert code == 200 and {k: v for k, v in raw.items() if k != "_reject"} == refused, raw


def test_a_second_read_of_a_local_file_is_checked_against_its_bytes(tmp_path: Path) -> None:
    """The sibling for local files: the reject file's read of a file replaced (same size, same mtime, other
    bytes) after it was identified raises FileChangedError at ``verify``, whether the records it needed came
    before the change or not; the unchanged file verifies."""
    import os

    from pimingestd.core.spool import SecondRead
    from pimingestd.errors import FileChangedError
    from pimingestd.sources import SourceSpec

    src = tmp_path / "p.jsonl"
    data = jsonl(30)
    src.write_bytes(data)

    def second(name: str = "p.jsonl") -> SecondRead:
        return SecondRead(str(src), size=len(data), file_id=file_id(data), spec=SourceSpec("jsonl"), name=name)

    read = second()
    first = next(iter(read.records()))
    read.verify()  # unchanged: the rest is read and hashed, and matches
    read.close()
    import orjson

    assert orjson.loads(orjson.dumps(first)) == json.loads(data.splitlines()[0])
    stat = src.stat()
    changed = data[:-3] + b"7}\n" if data.endswith(b"}\n") else data[::-1]
    assert len(changed) == len(data) and changed != data
    src.write_bytes(changed)  # rewritten in place; the last record differs, the first does not
    os.utime(src, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    read = second()
    next(iter(read.records()))
    with pytest.raises(FileChangedError, match="not the one delivered"):
        read.verify()
    read.close()


def test_a_local_workbook_rewritten_in_place_after_its_hash_fails_the_second_read(tmp_path: Path) -> None:
    """A local workbook is hashed, then parsed from the same descriptor: a rename cannot reach it, but a
    rewrite in place (same inode) between the hash and the parse, or during it, can. ``verify`` hashes the
    descriptor again once the records are read, so records from other bytes are never kept; the unchanged
    workbook verifies."""
    from pimingestd.core.spool import SecondRead
    from pimingestd.errors import FileChangedError
    from pimingestd.sources import SourceSpec

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["sku", "qty"])
    for i in range(20):
        ws.append([f"S{i}", i])
    src = tmp_path / "book.xlsx"
    wb.save(src)
    data = src.read_bytes()

    def second() -> SecondRead:
        return SecondRead(str(src), size=len(data), file_id=file_id(data), spec=SourceSpec("excel"), name="book.xlsx")

    read = second()
    assert len(list(read.records())) == 20
    read.verify()  # the control: unchanged
    read.close()
    read = second()
    rows = read.records()
    next(rows)  # hashed (it matched), and being parsed
    with open(src, "r+b") as f:  # rewritten in place: the same inode, the same size, other bytes
        f.seek(len(data) - 30)
        f.write(bytes(b ^ 0xFF for b in data[-30:-20]))
    list(rows)
    with pytest.raises(FileChangedError, match="not the one delivered"):
        read.verify()
    read.close()


async def test_http_reads_are_pinned_to_the_version_seen_at_submit(
    make_daemon: MakeDaemon, receiver: Receiver, files: HttpFiles
) -> None:
    """Every GET carries If-Match with the ETag the HEAD gave at submit: an object replaced in between is
    answered 412 by a server that honours it, and never read; the ingestion fails saying it changed."""
    files.files["p.jsonl"] = jsonl(50)
    d = await make_daemon(remote=remote_section([f"http://127.0.0.1:{files.port}/"]))
    code, answer = await d.ingest(url=files.url("p.jsonl"))
    assert code == 202, answer
    st = await d.wait(answer["ingestion_id"])
    assert st["status"] == "completed", st
    etag = st["version"].removeprefix("etag:")
    gets = [h for m, _, h in files.requests if m == "GET"]
    assert gets and all(h.get("If-Match") == etag for h in gets), gets
    received = (await receiver.stats())["chunks_received"]
    files.files["q.jsonl"] = jsonl(50)
    # Replaced after the second HEAD (at submit, then as the run starts), before the GET.
    files.replace_after_head["q.jsonl"] = (2, jsonl(50, 1))
    code, answer = await d.ingest(url=files.url("q.jsonl"))
    assert code == 202, answer
    st = await d.wait(answer["ingestion_id"])
    assert st["status"] == "failed" and "answered 412" in st["error"], st
    assert (await receiver.stats())["chunks_received"] == received
    assert [m for m, p, _ in files.requests if p == "/q.jsonl"][:3] == ["HEAD", "HEAD", "GET"]


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_url_in_any_log_text_is_redacted_tracebacks_included(fmt: str) -> None:
    """The log's last line of defence: a presigned URL in an event's text, in a list, or in the traceback of
    a logged exception (where a library quoted it) is written without its query."""
    import structlog

    from pimingestd import logs

    saved = structlog.get_config()
    out = io.StringIO()
    try:
        logs.setup(fmt, "info", out)
        log = structlog.get_logger("test")
        url = "https://bucket.example.com/p.jsonl?X-Amz-Credential=AKIDLOG1&X-Amz-Signature=s1gnatur3"
        log.warning("read failed", error=f"ClientResponseError: 500, url='{url}'", urls=[url])
        try:
            raise ValueError(f"cannot read {url}")
        except ValueError:
            log.exception("poll failed")
        log.info("query outside a URL", detail="X-Amz-Signature=s1gnatur3&token=t0k3n")
    finally:
        structlog.configure(**saved)
    text = out.getvalue()
    assert "read failed" in text and "poll failed" in text and "ValueError" in text, text
    for secret in ("AKIDLOG1", "s1gnatur3", "t0k3n"):
        assert secret not in text, text
    assert "https://bucket.example.com/p.jsonl?" in text  # where, still said


async def test_an_sftp_host_name_is_checked_and_connected_at_the_address_checked(
    make_daemon: MakeDaemon, receiver: Receiver, sshd: SshServer
) -> None:
    """``localhost`` under a bare ``sftp://`` entry is refused (it reaches this machine); named by an entry, it
    is resolved once, connected at that address, and its host key still matched (known_hosts names
    127.0.0.1, the address)."""
    (sshd.root / "n.jsonl").write_bytes(jsonl(4))
    url = f"sftp://localhost:{sshd.port}{sshd.root}/n.jsonl"
    d = await make_daemon(remote=remote_section(["sftp://"], sshd=sshd))
    code, answer = await d.ingest(url=url)
    assert code == 400 and "must be listed by name" in answer["detail"], answer
    await d.stop()
    d = await make_daemon(remote=remote_section([f"sftp://localhost:{sshd.port}/"], sshd=sshd))
    code, answer = await d.ingest(url=url)
    assert code == 202, answer
    st = await d.wait(answer["ingestion_id"])
    assert st["status"] == "completed", st
    assert await records(receiver, st["ingestion_id"]) == canonical(4)


async def test_sftp_never_follows_an_ssh_config_file(
    make_daemon: MakeDaemon,
    receiver: Receiver,
    sshd: SshServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """asyncssh reads ``~/.ssh/config`` unless told not to, and obeys its ``ProxyCommand``, ``ProxyJump`` and
    ``HostName``: the connection would go where that file says, not to the address that was checked. The
    daemon configures SFTP in [remote.sftp] only; a config file in the daemon user's home changes nothing."""
    marker = tmp_path / "proxy-command-ran"
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        f"Host *\n  ProxyCommand /bin/sh -c 'echo %h:%p > {marker}; exit 1'\n  HostName 192.0.2.1\n"
    )
    monkeypatch.setenv("HOME", str(home))
    (sshd.root / "c.jsonl").write_bytes(jsonl(3))
    d = await make_daemon(remote=remote_section([sshd.url("")], sshd=sshd))
    code, answer = await d.ingest(url=sshd.url("c.jsonl"))
    assert code == 202, answer
    st = await d.wait(answer["ingestion_id"])
    assert st["status"] == "completed", st
    assert await records(receiver, st["ingestion_id"]) == canonical(3)
    assert not marker.exists()


async def test_an_sftp_name_that_resolves_elsewhere_at_connect_time_is_refused(
    make_daemon: MakeDaemon, receiver: Receiver, sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding over SFTP: an outside address to the check, 127.0.0.1 to the connection. The connection
    is made to the address that was checked, so it never reaches the machine's own sshd."""
    import socket

    (sshd.root / "r.jsonl").write_bytes(jsonl(2))
    real = socket.getaddrinfo

    def rebinding(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        if host == "sftp.rebind.test":
            address = "203.0.113.7" if port is None else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port or 0))]
        return real(host, port, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    d = await make_daemon(remote=remote_section(["sftp://"], sshd=sshd))
    code, answer = await d.ingest(url=f"sftp://sftp.rebind.test:{sshd.port}{sshd.root}/r.jsonl")
    assert code == 400 and "resolves to 127.0.0.1" in answer["detail"], answer
    assert (await receiver.stats()).get("chunks_received", 0) == 0


async def test_a_remote_workbooks_reject_file_comes_from_a_checked_staged_copy(
    make_daemon: MakeDaemon, receiver: Receiver, s3: S3Server
) -> None:
    """Excel needs random access: the second read stages the object again, checks its bytes, reads the refused
    row from that copy, and removes it."""
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["sku", "qty"])
    for i in range(12):
        ws.append([f"S{i}", i])
    buf = io.BytesIO()
    wb.save(buf)
    s3.client().put_object(Bucket=BUCKET, Key="in/refused.xlsx", Body=buf.getvalue())
    await receiver.faults([{"action": "reject_records", "field": "sku", "values": ["S5"], "reason": "no"}])
    d = await make_daemon(remote=remote_section([f"s3://{BUCKET}/in/"], s3=s3))
    code, answer = await d.ingest(url=f"s3://{BUCKET}/in/refused.xlsx")
    assert code == 202, answer
    st = await d.wait(answer["ingestion_id"])
    assert st["status"] == "completed" and st["records_rejected"] == 1, st
    spool = d.config.daemon.state_db.parent / "spool"
    assert not list(spool.glob("*.stage"))
    from openpyxl import load_workbook

    book = load_workbook(d.config.daemon.state_db.parent / "rejects" / f"{st['ingestion_id']}.xlsx")
    assert book.active is not None
    rows = list(book.active.iter_rows(values_only=True))
    assert rows[1][:2] == ("S5", 5), rows


def test_an_s3_move_copies_only_the_version_expected(s3: S3Server) -> None:
    """The copy is conditional on the ETag that was ingested: with another one at the key (uploaded between
    the check and the copy), nothing is copied or deleted, and FileChangedError says the object stays."""
    from pimingestd.config import RemoteConfig, S3Config
    from pimingestd.errors import FileChangedError
    from pimingestd.locations.remote import ObjectIdentity, Remote

    client = s3.client()
    client.put_object(Bucket=BUCKET, Key="mv/p.jsonl", Body=jsonl(3))
    remote = Remote(RemoteConfig(allowed_urls=(f"s3://{BUCKET}/",), s3=S3Config(**s3.config())))
    url = f"s3://{BUCKET}/mv/p.jsonl"
    now = remote.stat(url)
    fs = remote._filesystem(url)
    stale = ObjectIdentity(now.size, 'etag:"00000000000000000000000000000000"')
    with pytest.raises(FileChangedError, match="left in place"):
        remote._move_s3_version(fs, url, f"s3://{BUCKET}/mv-done/p.jsonl", stale)
    assert _keys(s3, "mv") == {"mv/p.jsonl"}
    assert remote.move(url, f"s3://{BUCKET}/mv-done/", now) == f"s3://{BUCKET}/mv-done/p.jsonl"
    assert _keys(s3, "mv") == {"mv-done/p.jsonl"}


def test_an_s3_move_never_deletes_a_version_uploaded_after_its_last_check(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without versioning, the copy is checked and then the source deleted: an upload that lands between
    that check and the delete was deleted unread. The delete is conditional on the ETag ingested (S3's
    If-Match on DeleteObject), so the new version stays at its key, to be taken; the copy in done/ is the
    version ingested."""
    from pimingestd.config import RemoteConfig, S3Config
    from pimingestd.errors import FileChangedError
    from pimingestd.locations.remote import Remote

    client = s3.client()
    old, new = jsonl(3), jsonl(4, 50)
    client.put_object(Bucket=BUCKET, Key="mvr/p.jsonl", Body=old)
    remote = Remote(RemoteConfig(allowed_urls=(f"s3://{BUCKET}/",), s3=S3Config(**s3.config())))
    url = f"s3://{BUCKET}/mvr/p.jsonl"
    ingested = remote.stat(url)
    check = Remote._check_version
    checks: list[str] = []

    def check_then_upload(self: Remote, u: str, expected: Any) -> None:
        check(self, u, expected)
        checks.append(u)
        if len(checks) == 2:  # the check after the copy: the exporter's upload lands right after it
            client.put_object(Bucket=BUCKET, Key="mvr/p.jsonl", Body=new)

    monkeypatch.setattr(Remote, "_check_version", check_then_upload)
    with pytest.raises(FileChangedError, match="left in place"):
        remote.move(url, f"s3://{BUCKET}/mvr-done/", ingested)
    assert len(checks) == 2
    assert client.get_object(Bucket=BUCKET, Key="mvr/p.jsonl")["Body"].read() == new
    assert client.get_object(Bucket=BUCKET, Key="mvr-done/p.jsonl")["Body"].read() == old


def test_an_s3_move_in_a_versioned_bucket_takes_that_version_only(s3: S3Server) -> None:
    """With versioning, the version ingested is copied and that version deleted: a newer one uploaded meanwhile
    stays the object's current version, where the inbox takes it."""
    from pimingestd.config import RemoteConfig, S3Config
    from pimingestd.errors import FileChangedError
    from pimingestd.locations.remote import Remote

    client = s3.client()
    client.create_bucket(Bucket="vmove")
    client.put_bucket_versioning(Bucket="vmove", VersioningConfiguration={"Status": "Enabled"})
    client.put_object(Bucket="vmove", Key="in/p.jsonl", Body=jsonl(3))
    remote = Remote(RemoteConfig(allowed_urls=("s3://vmove/",), s3=S3Config(**s3.config())))
    url = "s3://vmove/in/p.jsonl"
    first = remote.stat(url)
    assert first.version.startswith("version:")
    client.put_object(Bucket="vmove", Key="in/p.jsonl", Body=jsonl(4))
    with pytest.raises(FileChangedError, match=r"left in\s+place"):
        remote.move(url, "s3://vmove/done/", first)  # the check sees the new version first
    remote._move_s3_version(remote._filesystem(url), url, "s3://vmove/done/p.jsonl", first)  # past the check
    assert client.get_object(Bucket="vmove", Key="in/p.jsonl")["Body"].read() == jsonl(4)
    assert client.get_object(Bucket="vmove", Key="done/p.jsonl")["Body"].read() == jsonl(3)


def test_an_sftp_move_that_renamed_another_version_puts_it_back(sshd: SshServer) -> None:
    """The rename took a version written between the check and the rename: it is renamed back to the inbox
    (a rename never replaces a file, so one written there since is kept, and the error says where the
    other is)."""
    from pimingestd.config import RemoteConfig, SftpConfig
    from pimingestd.errors import FileChangedError
    from pimingestd.locations.remote import ObjectIdentity, Remote

    (sshd.root / "mb").mkdir()
    (sshd.root / "mb-done").mkdir()
    sftp = SftpConfig(username=sshd.user, key_file=sshd.user_key, known_hosts=sshd.known_hosts)
    remote = Remote(RemoteConfig(allowed_urls=(f"sftp://127.0.0.1:{sshd.port}/",), sftp=sftp))
    url, target = sshd.url("mb/p.jsonl"), sshd.url("mb-done/p.jsonl")
    ingested = ObjectIdentity(5, "modified:2001-01-01T00:00:00")
    (sshd.root / "mb-done" / "p.jsonl").write_bytes(jsonl(2))  # what the rename took: not the one ingested
    fs = remote._filesystem(url)
    with pytest.raises(FileChangedError, match="left in place"):
        remote._check_moved_back(fs, url, target, ingested)
    assert (sshd.root / "mb" / "p.jsonl").read_bytes() == jsonl(2)
    assert not (sshd.root / "mb-done" / "p.jsonl").exists()
    (sshd.root / "mb-done" / "p.jsonl").write_bytes(jsonl(3))  # and once more, with the inbox name taken
    with pytest.raises(FileChangedError, match="not ingested: put it back"):
        remote._check_moved_back(fs, url, target, ingested)
    assert (sshd.root / "mb" / "p.jsonl").read_bytes() == jsonl(2)
    assert (sshd.root / "mb-done" / "p.jsonl").read_bytes() == jsonl(3)
