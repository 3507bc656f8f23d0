"""s3fs beside obstore on the daemon's S3 read path, each in a fresh process (as a daemon imports its client):

    python -m bench.s3clients <endpoint> <bucket> <key> <access key> <secret> <local copy>

For each client: read the whole object, version pinned, in 4 MiB blocks into SHA-256 (the daemon's
HashingStream does the same; ``daemon`` is its own read path: s3fs's client on the lean session, one GET),
then resume from the middle (a ranged read, version pinned, as the daemon's reconnection after a cut does).
Prints one JSON line per client: seconds, the process's peak RSS (VmHWM) and its RSS before the client was
imported, whether the digests match the local copy's, and what each needs for version pinning and credentials.
Run by bench/run.py's remote case.
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

BLOCK = 4 << 20


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _peak() -> int:
    """VmHWM: this process's peak RSS (ru_maxrss would carry the parent's from before the exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) << 10 for line in f if line.startswith("VmHWM:"))


def s3fs_read(endpoint: str, bucket: str, key: str, access: str, secret: str, start: int) -> tuple[str, str]:
    import s3fs

    fs = s3fs.S3FileSystem(
        key=access,
        secret=secret,
        client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"},
        default_block_size=BLOCK,
        use_listings_cache=False,
        skip_instance_cache=True,
        version_aware=True,
    )
    version = fs.info(f"{bucket}/{key}")["VersionId"]
    out = []
    for offset in (0, start):
        h = hashlib.sha256()
        with fs.open(
            f"{bucket}/{key}", "rb", block_size=BLOCK, cache_type="readahead", fill_cache=False, version_id=version
        ) as f:
            f.seek(offset)
            while block := f.read(BLOCK):
                h.update(block)
        out.append(h.hexdigest())
    return out[0], out[1]


def daemon_read(endpoint: str, bucket: str, key: str, access: str, secret: str, start: int) -> tuple[str, str]:
    """The daemon's own read path: s3fs's client on the session of ``locations/s3_session.py``, each read one
    GET pinned to the version (``S3Body``), as HashingStream opens it at the start and after a cut."""
    from pimingestd.config import RemoteConfig, S3Config
    from pimingestd.locations.remote import Remote

    s3 = S3Config(endpoint_url=endpoint, key=access, secret=secret, region="us-east-1")
    remote = Remote(RemoteConfig(allowed_urls=(f"s3://{bucket}/",), s3=s3))
    url = f"s3://{bucket}/{key}"
    identity = remote.stat(url)
    out = []
    for offset in (0, start):
        h = hashlib.sha256()
        fh = remote._open_at(url, identity, offset, fresh=False)
        try:
            while block := fh.read(BLOCK):
                h.update(block)
        finally:
            fh.close()
        out.append(h.hexdigest())
    return out[0], out[1]


def obstore_read(endpoint: str, bucket: str, key: str, access: str, secret: str, start: int) -> tuple[str, str]:
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        bucket,
        endpoint=endpoint,
        region="us-east-1",
        access_key_id=access,
        secret_access_key=secret,
        allow_http=True,
        virtual_hosted_style_request=False,
    )
    version = obstore.head(store, key)["version"]
    out = []
    for offset in (0, start):
        # The fsspec adapter's open() (obstore.fsspec.BufferedFile, over open_reader) takes no version: a
        # version-pinned read goes through get() with GetOptions' version and range.
        h = hashlib.sha256()
        result = obstore.get(store, key, options={"version": version, "range": {"offset": offset}})
        for block in result.stream(min_chunk_size=BLOCK):
            h.update(block)
        out.append(h.hexdigest())
    return out[0], out[1]


def obstore_ranged(endpoint: str, bucket: str, key: str, access: str, secret: str, start: int) -> tuple[str, str]:
    """obstore, each block its own ranged GET (version pinned): what bounds the memory to a block or two."""
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        bucket,
        endpoint=endpoint,
        region="us-east-1",
        access_key_id=access,
        secret_access_key=secret,
        allow_http=True,
        virtual_hosted_style_request=False,
    )
    head = obstore.head(store, key)
    out = []
    for offset in (0, start):
        h = hashlib.sha256()
        at = offset
        while at < head["size"]:
            block = obstore.get(store, key, options={"version": head["version"], "range": (at, at + BLOCK)}).bytes()
            h.update(block)
            at += len(block)
        out.append(h.hexdigest())
    return out[0], out[1]


def imported(client: str) -> None:
    """Only the import and the client: its standing cost."""
    if client == "s3fs-import":
        import s3fs

        s3fs.S3FileSystem(key="k", secret="s", client_kwargs={"endpoint_url": "http://127.0.0.1:9"}).s3  # noqa: B018
    elif client == "daemon-import":
        import s3fs

        from pimingestd.locations import s3_session

        lean = s3fs.S3FileSystem(
            session=s3_session.session(), key="k", secret="s", client_kwargs={"endpoint_url": "http://127.0.0.1:9"}
        )
        _ = lean.s3
    else:
        from obstore.store import S3Store

        S3Store("b", endpoint="http://127.0.0.1:9", region="us-east-1", allow_http=True)


READERS = {"s3fs": s3fs_read, "daemon": daemon_read, "obstore": obstore_read, "obstore-ranged": obstore_ranged}


def main() -> int:
    endpoint, bucket, key, access, secret, local, client = sys.argv[1:8]
    size = Path(local).stat().st_size
    start = size // 2
    whole, half = hashlib.sha256(), hashlib.sha256()
    with open(local, "rb") as f:  # streamed: the peak is the client's
        at = 0
        while block := f.read(BLOCK):
            whole.update(block)
            half.update(block[max(start - at, 0) :])
            at += len(block)
    want = (whole.hexdigest(), half.hexdigest())
    if client.startswith("daemon"):
        import pimingestd.locations.remote  # noqa: F401  (the daemon has it loaded: not the client's cost)
    before = _rss()
    t0 = time.monotonic()
    try:
        if client.endswith("-import"):
            imported(client)
            got = want
        else:
            got = READERS[client](endpoint, bucket, key, access, secret, start)
    except ImportError as exc:  # obstore is not a dependency: installed for this comparison only
        print(json.dumps({"client": client, "missing": str(exc)}))
        return 0
    took = time.monotonic() - t0
    # Reading twice: the whole object, then its second half (the resume): 1.5 x the size in all.
    figures: dict[str, Any] = {
        "client": client,
        "seconds": round(took, 2),
        "mb_per_s": round(size * 1.5 / 1e6 / took, 1),
        "rss_before_mib": round(before / 2**20, 1),
        "peak_rss_mib": round(_peak() / 2**20, 1),
        "whole_ok": got[0] == want[0],
        "resume_ok": got[1] == want[1],
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
