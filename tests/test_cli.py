"""The pimingestd CLI against a running daemon: ingest (by path or upload) with progress, status, resume, cancel."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from .conftest import MakeDaemon
from .helpers import REPO, Receiver, free_port, product, write_json
from .test_inbox import inbox_config


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pimingestd",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_ingest_wait_shows_progress(
    make_daemon: MakeDaemon, receiver: Receiver, tmp_path: Path, data_dir: Path
) -> None:
    """`ingest --wait` prints the id, a progress line per change (records, rate, ETA, chunk), and exits 0."""
    await receiver.faults(
        [
            {"action": "delay_ack", "seconds": 0.15, "times": 1000},
        ]
    )
    src = write_json(data_dir / "p.json", [product(i) for i in range(80)])
    d = await make_daemon(inbox=inbox_config(tmp_path, watch="off"))
    code, out, err = await cli("ingest", str(src), "--wait", "--url", d.url)
    assert code == 0, err
    ing = out.split()[0]
    assert "completed: 80 records in 8 chunks" in out
    lines = [line for line in err.splitlines() if "records" in line]
    assert len(lines) >= 3, err
    assert any("chunk " in line and "running" in line and "rec/s" in line and "ETA" in line for line in lines), err
    assert "80/80 records" in lines[-1] and "100.0%" in lines[-1] and lines[-1].endswith("completed")
    assert len(await receiver.records(ing)) == 80


async def test_ingest_falls_back_to_upload(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    """A file outside the daemon's allowed roots is uploaded instead, and the options travel along."""
    outside = write_json(tmp_path / "elsewhere.json", [product(i) for i in range(9)])
    d = await make_daemon(inbox=inbox_config(tmp_path, watch="off"))
    code, out, err = await cli("ingest", str(outside), "--chunk-records", "4", "--wait", "--url", d.url)
    assert code == 0, err
    assert "uploading it" in err
    st = await d.status(out.split()[0])
    assert st["source"] == "upload" and st["total_chunks"] == 3


async def test_status_resume_cancel(
    make_daemon: MakeDaemon, receiver: Receiver, tmp_path: Path, data_dir: Path
) -> None:
    """status (table, detail, --json), resume and cancel, with exit codes."""
    await receiver.faults([{"action": "reject_final", "chunk": 2}])
    src = write_json(data_dir / "p.json", [product(i) for i in range(30)])
    d = await make_daemon(inbox=inbox_config(tmp_path, watch="off"), http={"api_token": "tok"})
    code, out, err = await cli("ingest", str(src), "--wait", "--url", d.url, "--token", "tok")
    assert code == 1 and "failed: chunk 2 rejected by PIM-Core" in err
    ing = out.split()[0]
    code, out, _ = await cli("status", "--url", d.url, "--token", "tok")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["INGESTION", "STATUS", "SOURCE"] and ing in out
    code, out, _ = await cli("status", ing, "--json", "--url", d.url, "--token", "tok")
    detail = json.loads(out)
    assert code == 0 and detail["status"] == "failed" and [c["chunk"] for c in detail["chunks"]] == [1, 2, 3]
    code, out, _ = await cli("status", ing, "--url", d.url, "--token", "tok")
    assert "CHUNK" in out and "injected reject_final" in out
    code, _, err = await cli("status", ing, "--url", d.url, "--token", "wrong")
    assert code == 1 and "401" in err
    code, out, _ = await cli("resume", ing, "--url", d.url, "--token", "tok")
    assert code == 0 and out.strip() == f"{ing}: queued"
    assert (await d.wait(ing))["status"] == "completed"
    code, _, err = await cli("cancel", ing, "--url", d.url, "--token", "tok")
    assert code == 1 and "409" in err


async def test_url_and_token_from_config(make_daemon: MakeDaemon, tmp_path: Path, data_dir: Path) -> None:
    """Without --url the CLI reads the address and token from the config's [http]."""
    src = write_json(data_dir / "p.json", [product(1)])
    d = await make_daemon(inbox=inbox_config(tmp_path, watch="off"), http={"api_token": "tok"})
    code, out, err = await cli("ingest", str(src), "--wait", "--config", str(d.config.path))
    assert code == 0, err
    assert (await d.status(out.split()[0]))["status"] == "completed"


async def test_unreachable_and_usage() -> None:
    """No daemon: exit 3. Both chunk options: exit 2. Every command's --help has an example."""
    code, _, err = await cli("status", "--url", f"http://127.0.0.1:{free_port()}")
    assert code == 3 and "cannot reach the daemon" in err
    code, _, _ = await cli("ingest", str(REPO / "README.md"), "--chunk-records", "1", "--chunk-bytes", "9")
    assert code == 2
    for command in ("run", "check-config", "ingest", "status", "resume", "cancel", "receiver"):
        code, out, _ = await cli(command, "--help")
        assert code == 0 and "Example" in out, command


async def test_check_config_masks_secrets(tmp_path: Path) -> None:
    """check-config prints the resolved config with secrets masked; exit 78 names a bad key."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[chunking]\nrecords = 5\n[pimcore]\nsecret = "hush"\n[http]\napi_token = "tok-9"\n')
    code, out, _ = await cli("check-config", "--config", str(cfg))
    assert code == 0 and "hush" not in out and "tok-9" not in out and json.loads(out)["pimcore"]["secret"] == "***"
    cfg.write_text("[chunking]\nrecords = 5\nfoo = 1\n")
    code, _, err = await cli("check-config", "--config", str(cfg))
    assert code == 78 and "chunking.foo" in err


async def test_ingest_passes_format_options(
    make_daemon: MakeDaemon, receiver: Receiver, tmp_path: Path, data_dir: Path
) -> None:
    """`-o KEY=VALUE` carries any format option (a JSON object as one); a malformed one is a usage error (2)."""
    src = data_dir / "p.csv"
    src.write_text("sku;price\nA;19.90\n", newline="")
    d = await make_daemon(inbox=inbox_config(tmp_path, watch="off"))
    code, out, err = await cli(
        "ingest", str(src), "-o", "delimiter=;", "-o", 'types={"price": "decimal"}', "--wait", "--url", d.url
    )
    assert code == 0, err
    assert [a["record"] for a in await receiver.records(out.split()[0])] == ['{"price":19.90,"sku":"A"}']
    code, _, err = await cli("ingest", str(src), "-o", "types={bad", "--url", d.url)
    assert code == 2 and "not valid JSON" in err
    code, _, err = await cli("ingest", str(src), "-o", "delimiter=ab", "--url", d.url, "--re-ingest")
    assert code == 1 and "delimiter must be" in err
    # Uploaded, the options travel in the query string, a JSON object as JSON.
    src.write_text("sku;price\nB;5.5\n", newline="")
    code, out, err = await cli(
        "ingest", str(src), "--upload", "-o", "delimiter=;", "-o", 'types={"price": "decimal"}', "--wait",
        "--url", d.url,
    )  # fmt: skip
    assert code == 0, err
    assert [a["record"] for a in await receiver.records(out.split()[0])] == ['{"price":5.5,"sku":"B"}']
    feed = data_dir / "feed.xml"
    feed.write_bytes(b'<rss><channel><item><g:id>7</g:id></item><item a="1"/></channel></rss>')
    for how in ([], ["--upload"]):
        code, out, err = await cli(
            "ingest", str(feed), *how, "-o", "record_path=rss/channel/item", "--re-ingest", "--wait", "--url", d.url
        )
        assert code == 0, err
        assert [a["record"] for a in await receiver.records(out.split()[0])] == ['{"g:id":"7"}', '{"@a":"1"}']


async def test_completed_with_rejects_exits_4_and_rejects_writes_the_reject_file(
    make_daemon: MakeDaemon, receiver: Receiver, tmp_path: Path, data_dir: Path
) -> None:
    """`ingest --wait` exits 4 when records were rejected and says how to get them; `rejects ID` writes the
    reject file to stdout, byte for byte the API's; the rules travel as -o (by path, and by upload)."""
    await receiver.faults([{"action": "reject_records", "field": "sku", "values": ["SKU-000002"], "reason": "no"}])
    src = data_dir / "p.jsonl"
    src.write_text("".join(json.dumps(product(i)) + "\n" for i in range(6)))
    d = await make_daemon(inbox=inbox_config(tmp_path, watch="off"))
    code, out, err = await cli("ingest", str(src), "-o", "key=sku", "-o", "delta=true", "--wait", "--url", d.url)
    assert code == 4, err
    ing = out.split()[0]
    assert f"1 records rejected: pimingestd rejects {ing}" in err
    assert (await d.status(ing))["delta_scope"] == "p.jsonl"
    code, out, err = await cli("rejects", ing, "--url", d.url)
    assert code == 0, err
    _, api = await d.request("GET", f"/api/ingestions/{ing}/rejects")
    assert json.loads(out) == api and api["sku"] == "SKU-000002" and api["_reject"]["reason"] == "no"
    code, out, err = await cli("status", "--url", d.url)
    assert code == 0 and "REJECTED" in out.splitlines()[0], out
    outside = tmp_path / "other.jsonl"
    outside.write_text("".join(json.dumps(product(i)) + "\n" for i in range(3)))
    code, out, err = await cli(
        "ingest", str(outside), "-o", "key=sku", "-o", "delta=true", "-o", "max_deletions=50", "--wait", "--url", d.url
    )
    assert code == 4 and "uploading it" in err, err  # SKU-000002 is refused here too
    st = await d.status(out.split()[0])
    assert st["source"] == "upload" and st["delta_scope"] is not None
    code, _, err = await cli("rejects", "nope", "--url", d.url)
    assert code == 1 and "404" in err


async def test_the_receiver_holds_its_faults_file_from_the_first_request(tmp_path: Path) -> None:
    """`receiver --faults FILE`: the rules are there before anything is answered (a chunk sent the moment a
    restarted receiver is up meets them); a malformed file is refused before it listens, naming the file."""
    bad = tmp_path / "bad.json"
    bad.write_text('[{"action": "explode"}]')
    code, _, err = await cli("receiver", "--data", str(tmp_path / "r"), "--faults", str(bad))
    assert code == 2 and str(bad) in err and "faults[0]: action must be one of" in err, err
    good = tmp_path / "faults.json"
    good.write_text(json.dumps([{"action": "http_500", "times": 3}]))
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pimingestd", "receiver", "--port", str(port), "--data", str(tmp_path / "r"),
        "--faults", str(good), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import hashlib

        import aiohttp

        from pimingestd.protocol.v1 import ChunkHeaders

        body = b'[{"sku":"A"}]'
        meta = ChunkHeaders("ing-1", "sha256:" + "0" * 64, 1, 1, 1, 0, "p.json")
        headers = meta.headers(hashlib.sha256(body).digest(), "http://127.0.0.1:9/callbacks/ack")
        async with aiohttp.ClientSession() as s:
            for _ in range(200):
                try:
                    async with s.post(f"http://127.0.0.1:{port}/ingest/chunks", data=body, headers=headers) as r:
                        first = r.status
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("the receiver did not start")
        assert first == 500  # the very first request met the rule
    finally:
        proc.kill()
        await proc.wait()


async def test_the_receiver_reads_the_secret_as_the_daemon_does(tmp_path: Path) -> None:
    """`receiver` without --secret takes the PIM-Core secret as the daemon does: the credential
    `$CREDENTIALS_DIRECTORY/pimcore-secret` first (a Docker secret in the image), then PIMINGESTD_PIMCORE_SECRET;
    an unreadable credential is refused before it listens, naming the file (exit 78)."""
    import os

    import aiohttp

    from pimingestd.protocol import signing
    from pimingestd.testing import spawn, wait_http

    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "pimcore-secret").write_text("from-credential\n")
    port = free_port()
    env = {"CREDENTIALS_DIRECTORY": str(creds), "PIMINGESTD_PIMCORE_SECRET": "from-env"}
    proc = spawn(["receiver", "--port", str(port), "--data", str(tmp_path / "r")], env=env)
    try:
        await wait_http(f"http://127.0.0.1:{port}/stats", alive=lambda: proc.poll() is None)
        raw = b"{}"
        async with aiohttp.ClientSession() as s:
            for secret, expected in (("from-credential", 400), ("from-env", 401), (None, 401)):
                headers = {"Idempotency-Key": "x:complete"}
                if secret is not None:
                    headers[signing.HEADER] = signing.sign(secret, raw, key="x:complete")
                async with s.post(f"http://127.0.0.1:{port}/ingest/complete", data=raw, headers=headers) as r:
                    assert r.status == expected, (secret, r.status, await r.text())
    finally:
        proc.kill()
        proc.wait()
    (creds / "pimcore-secret").write_bytes(b"\xff\xfe")
    code, _, err = await cli("receiver", "--data", str(tmp_path / "r"), env={**os.environ, **env})
    assert code == 78 and str(creds / "pimcore-secret") in err, err


async def test_the_daemons_process_never_imports_rich(tmp_path: Path) -> None:
    """structlog imports rich whenever it is installed (the test tools bring it along: 100 modules, about 5 MiB
    of RSS), and a daemon installed from requirements/run.txt never has it; ``python -m pimingestd`` keeps
    it out, so the bench measures what an installed daemon pays (issue 30). Checked on the running process:
    every module it imported, listed by -X importtime."""
    import importlib.util

    assert importlib.util.find_spec("rich") is not None  # else this test proves nothing here
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "pimingestd",
        "check-config",
        "--config",
        str(REPO / "config.example.toml"),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in err.decode().splitlines() if line.startswith("import time:")
    }
    assert "structlog" in imported, err.decode()[-2000:]
    # An import that finds None in sys.modules is still listed, as "rich" alone, and fails at once: a real one
    # brings rich's submodules (rich.console, rich.traceback, ...) along.
    assert not {m for m in imported if m.startswith("rich.")}
