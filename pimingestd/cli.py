"""Command line: parse arguments, load config, set up logs, call the daemon or the API client.

Exit codes:
  0   success (for `ingest --wait`: the ingestion completed)
  1   failure: the ingestion failed or was cancelled, or the daemon refused the request
  2   bad command line
  3   the daemon could not be reached
  74  the state database is unusable or its folder unwritable, or another daemon holds it (`run`)
  78  configuration error
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from . import __version__, allocator, checks, logs  # noqa: F401  (checks: before any config is parsed)
from . import config as config_mod
from .errors import ConfigError, StateError
from .model import REMOTE_SCHEMES, STATUSES, Status
from .sources import FORMATS

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_REJECTS = 4  # ingest --wait: completed, and some records were rejected (see `pimingestd rejects ID`)
EXIT_STATE = 74
EXIT_CONFIG = 78

DEFAULT_CONFIG = "/etc/pimingestd/config.toml"
_RULE_JSON = (
    "unique_key",
    "delta",
    "max_deletions",
    "window",
)  # record rules whose -o value is JSON (true, 20), not text
_EPILOG = (
    "Exit codes: 0 success, 1 failure, 2 usage, 3 daemon unreachable, 4 completed with rejected records"
    " (ingest --wait), 74 state unusable, 78 bad config."
)


def _client_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("daemon address")
    g.add_argument("--url", help="daemon URL (default: $PIMINGESTD_URL, else [http] of --config)")
    g.add_argument("--token", help="API token (default: $PIMINGESTD_TOKEN, else [http] api_token of --config)")
    g.add_argument(
        "--config",
        type=Path,
        help=f"config to read the URL and token from (default: $PIMINGESTD_CONFIG or {DEFAULT_CONFIG})",
    )


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="pimingestd",
        description="Exactly-once, resumable ingestion of JSON, JSON Lines and Excel files into PIM-Core.",
        epilog=_EPILOG,
    )
    p.add_argument("--version", action="version", version=f"pimingestd {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the daemon",
        formatter_class=fmt,
        epilog=_EPILOG,
        description="Run the daemon in the foreground.\n\nExample:\n  pimingestd run --config /etc/pimingestd/config.toml",
    )
    run.add_argument("--config", required=True, type=Path, help="TOML config file")

    check = sub.add_parser(
        "check-config",
        help="validate a config file",
        formatter_class=fmt,
        epilog=_EPILOG,
        description="Validate a config file and print it resolved, secrets masked.\n\n"
        "Example:\n  pimingestd check-config --config config.example.toml",
    )
    check.add_argument("--config", required=True, type=Path)

    prune = sub.add_parser(
        "prune",
        help="apply [retention] now (or show what it would remove)",
        formatter_class=fmt,
        epilog=_EPILOG,
        description="Remove what [retention] says is old: chunk rows of ended ingestions (their summaries\n"
        "stay), files in done/ and failed/. Safe while the daemon runs.\n\n"
        "Example:\n  pimingestd prune --config /etc/pimingestd/config.toml --dry-run",
    )
    prune.add_argument("--config", required=True, type=Path)
    prune.add_argument("--dry-run", action="store_true", help="show what would go; remove nothing")

    ing = sub.add_parser(
        "ingest",
        help="ingest a file through the running daemon",
        formatter_class=fmt,
        epilog=_EPILOG,
        description="Ask the running daemon to ingest PATH. Files the daemon cannot read by path "
        "(outside its allowed roots, or on another machine) are uploaded. A URL (s3://, sftp://, "
        "https://) is read by the daemon itself, under its [remote] allowed_urls.\n\n"
        "Examples:\n  pimingestd ingest exports/products.json --json-path products.item --wait\n"
        "  pimingestd ingest s3://feeds/in/products.jsonl.gz --wait",
    )
    ing.add_argument("path", metavar="PATH|URL")
    ing.add_argument("--format", choices=FORMATS)
    ing.add_argument("--json-path", help="JSON: the array of records, e.g. catalog.products.item")
    ing.add_argument("--sheet", help="Excel: the worksheet (default: the first)")
    ing.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any format option or record rule, repeatable: -o delimiter=';' -o encoding=cp1252 (CSV),"
        " -o record_path=rss/channel/item (XML), -o key=sku -o delta=true -o on_invalid=skip;"
        ' a JSON object or array as VALUE is passed as one, e.g. -o \'types={"price": "decimal"}\'',
    )
    size = ing.add_mutually_exclusive_group()
    size.add_argument("--chunk-records", type=int, metavar="N")
    size.add_argument("--chunk-bytes", type=int, metavar="N")
    ing.add_argument("--re-ingest", action="store_true", help="ingest again even if these bytes were ingested before")
    ing.add_argument("--upload", action="store_true", help="always upload the file instead of passing its path")
    ing.add_argument("--name", help="name to upload under (default: the file's name); subfolders select profiles")
    ing.add_argument(
        "--wait",
        action="store_true",
        help="show progress until the ingestion ends; exit 0 only if it completed, 4 if it completed with rejects",
    )
    _client_options(ing)

    st = sub.add_parser(
        "status",
        help="show recent ingestions or one in detail",
        formatter_class=fmt,
        epilog=_EPILOG,
        description="Without ID: a table of recent ingestions. With ID: that ingestion and its last chunks.\n\n"
        "Examples:\n  pimingestd status\n  pimingestd status 3f2a... --json",
    )
    st.add_argument("id", nargs="?", metavar="ID")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--limit", type=int, default=20, help="rows in the table (default 20)")
    st.add_argument("--status", choices=STATUSES)
    _client_options(st)

    for name, what in (
        ("resume", "resume a failed ingestion after its last ACKed chunk"),
        ("cancel", "cancel an ingestion for good"),
    ):
        c = sub.add_parser(
            name,
            help=what,
            formatter_class=fmt,
            epilog=_EPILOG,
            description=f"{what[0].upper()}{what[1:]}.\n\nExample:\n  pimingestd {name} 3f2a...",
        )
        c.add_argument("id", metavar="ID")
        _client_options(c)

    rj = sub.add_parser(
        "rejects",
        help="write an ingestion's reject file to stdout",
        formatter_class=fmt,
        epilog=_EPILOG,
        description="The records PIM-Core refused, or validation skipped, in the source's own format, each with its"
        " reason (a _reject object; _reject_reason and _reject_field columns for CSV and Excel). Fix them and"
        " drop the file into the inbox again.\n\nExample:\n  pimingestd rejects 3f2a... > fixed.jsonl",
    )
    rj.add_argument("id", metavar="ID")
    _client_options(rj)

    rec = sub.add_parser(
        "receiver",
        help="run the reference PIM-Core receiver",
        formatter_class=fmt,
        description="Run the reference PIM-Core receiver (PIM-Core's side of protocol v1, and v2 when asked).\n\n"
        "Example:\n  pimingestd receiver --port 8081 --data var/receiver\n"
        "  pimingestd receiver --port 8081 --data var/bench --mode count --workers 4 --apply-ms-per-record 2",
    )
    rec.add_argument("--host", default="127.0.0.1")
    rec.add_argument("--port", type=int, default=8081)
    rec.add_argument("--data", type=Path, required=True, help="folder for its SQLite state")
    rec.add_argument(
        "--secret",
        default=None,
        help="HMAC secret (default: $CREDENTIALS_DIRECTORY/pimcore-secret, else $PIMINGESTD_PIMCORE_SECRET)",
    )
    rec.add_argument(
        "--mode",
        choices=("store", "count"),
        default="store",
        help="store: parse and store every record; count: check framing and order only",
    )
    rec.add_argument("--protocol", type=int, choices=(1, 2), default=2, help="the highest protocol it speaks")
    rec.add_argument("--window", type=int, default=16, help="v2: the chunks in flight it announces")
    rec.add_argument("--workers", type=int, default=1, help="appliers working at once (by_key chunks)")
    rec.add_argument(
        "--apply-ms-per-record",
        type=float,
        default=0.0,
        help="a model of PIM-Core's cost, for benchmarks: each record takes this long of a worker",
    )
    rec.add_argument(
        "--faults",
        type=Path,
        default=None,
        help="a JSON file of fault rules (as PUT /_faults takes) held from the first request on: for tests",
    )
    rec.add_argument("--log-format", choices=("json", "console"), default="json")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "receiver":
        return _receiver(args)
    if args.command in ("ingest", "status", "resume", "cancel", "rejects"):
        return _client_command(args)
    if args.command == "run" and argv is None:  # this process's own command line: it can start it again
        allocator.start_without_thread_caches()
    try:
        cfg = config_mod.load(args.config)
    except ConfigError as exc:
        print(f"pimingestd: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        print(json.dumps(cfg.masked(), indent=2))
        return EXIT_OK
    if args.command == "prune":
        logs.setup(cfg.logging.format, cfg.logging.level, sys.stderr)  # stdout carries the JSON answer
        try:
            plan = asyncio.run(_prune(cfg, args.dry_run))
        except StateError as exc:
            print(f"pimingestd: {exc}", file=sys.stderr)
            return EXIT_STATE
        print(json.dumps({"dry_run": args.dry_run, **plan}, indent=2))
        return EXIT_OK
    logs.setup(cfg.logging.format, cfg.logging.level)
    from .app import run

    try:
        return asyncio.run(run(cfg))
    except (StateError, ConfigError) as exc:
        print(f"pimingestd: {exc}", file=sys.stderr)
        return EXIT_STATE if isinstance(exc, StateError) else EXIT_CONFIG
    except OSError as exc:
        print(f"pimingestd: {exc}", file=sys.stderr)
        return EXIT_FAILURE


async def _prune(cfg: config_mod.Config, dry_run: bool) -> dict[str, Any]:
    from .metrics import Metrics
    from .retention import Retention
    from .state.sqlite import Store

    if not cfg.daemon.state_db.exists():
        raise StateError(f"no state database at {cfg.daemon.state_db}")
    store = await Store.open(cfg.daemon.state_db)
    try:
        retention = Retention(cfg, store, Metrics())
        plan = await (retention.plan() if dry_run else retention.run())
        return plan.as_dict()
    finally:
        await store.close()


def _receiver(args: argparse.Namespace) -> int:
    from .receiver.app import Options, serve
    from .receiver.faults import Faults

    logs.setup(args.log_format, "info")
    try:  # as the daemon takes it, so one Docker secret or systemd credential serves both
        secret = args.secret if args.secret is not None else config_mod.pimcore_secret(os.environ)
    except ConfigError as exc:
        print(f"pimingestd receiver: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    faults = None
    if args.faults is not None:
        try:
            faults = json.loads(args.faults.read_text(encoding="utf-8"))
            Faults().set(faults)  # checked here, so a bad file is named before anything listens
        except (OSError, ValueError) as exc:
            print(f"pimingestd receiver: --faults {args.faults}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    with suppress(KeyboardInterrupt):
        options = Options(args.mode, args.protocol, args.window, args.workers, args.apply_ms_per_record)
        asyncio.run(serve(args.host, args.port, args.data.resolve(), secret=secret, options=options, faults=faults))
    return EXIT_OK


# ---- client commands ------------------------------------------------------------------


def _address(args: argparse.Namespace) -> tuple[str, str]:
    url, token = args.url or os.environ.get("PIMINGESTD_URL"), args.token or os.environ.get("PIMINGESTD_TOKEN")
    if url and token:
        return url, token
    path = args.config or os.environ.get("PIMINGESTD_CONFIG") or DEFAULT_CONFIG
    cfg = None
    if args.config is not None or Path(path).exists():
        cfg = config_mod.load(path)
    if cfg is not None:
        host = "127.0.0.1" if cfg.http.host in ("0.0.0.0", "::", "") else cfg.http.host
        url = url or f"http://{host}:{cfg.http.port}"
        token = token or cfg.http.api_token
    return url or "http://127.0.0.1:8080", token or ""


def is_url(text: str) -> bool:
    return text.partition("://")[0] in REMOTE_SCHEMES and "://" in text


def _client_command(args: argparse.Namespace) -> int:
    from .errors import DaemonUnreachable

    if args.command == "ingest" and is_url(args.path):
        if args.upload:
            print("pimingestd: --upload takes a local file, not a URL", file=sys.stderr)
            return EXIT_USAGE
    elif args.command == "ingest":
        args.path = Path(args.path).resolve()
        if not args.path.is_file():
            print(f"pimingestd: no such file: {args.path}", file=sys.stderr)
            return EXIT_FAILURE
    try:
        url, token = _address(args)
    except ConfigError as exc:
        print(f"pimingestd: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return asyncio.run(_client_main(args, url, token))
    except DaemonUnreachable as exc:
        print(f"pimingestd: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 130


def _refused(code: int, body: Any) -> int:
    detail = body.get("detail") if isinstance(body, dict) else None
    error = body.get("error") if isinstance(body, dict) else body
    print(f"pimingestd: {code} {error}" + (f": {detail}" if detail else ""), file=sys.stderr)
    return EXIT_FAILURE


async def _client_main(args: argparse.Namespace, url: str, token: str) -> int:
    from .client import ApiClient
    from .console import detail, table

    async with ApiClient(url, token) as api:
        if args.command == "ingest":
            return await _ingest(api, args)
        if args.command == "rejects":
            code, body = await api.rejects(args.id, sys.stdout.buffer)
            if code != 200:
                return _refused(code, body)
            sys.stdout.buffer.flush()
            return EXIT_OK
        if args.command in ("resume", "cancel"):
            code, body = await (api.resume(args.id) if args.command == "resume" else api.cancel(args.id))
            if code >= 300:
                return _refused(code, body)
            print(f"{body['ingestion_id']}: {body['status']}")
            return EXIT_OK
        if args.id is None:
            code, body = await api.ingestions(args.limit, args.status)
            if code != 200:
                return _refused(code, body)
            print(json.dumps(body["ingestions"], indent=2) if args.json else table(body["ingestions"]))
            return EXIT_OK
        code, st = await api.ingestion(args.id)
        if code != 200:
            return _refused(code, st)
        start = max(st["chunks_acked"] - 4, 1)
        code, chunks = await api.chunks(args.id, start, 10)
        rows = chunks["chunks"] if code == 200 else []
        print(json.dumps({**st, "chunks": rows}, indent=2) if args.json else detail(st, rows))
        return EXIT_OK


async def _ingest(api: Any, args: argparse.Namespace) -> int:
    from .console import ProgressBar

    path: Path | str = args.path  # a URL, or a file resolved and checked before the loop started
    options = {
        "format": args.format,
        "json_path": args.json_path,
        "sheet": args.sheet,
        "chunk_records": args.chunk_records,
        "chunk_bytes": args.chunk_bytes,
    }
    options = {k: v for k, v in options.items() if v is not None}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"pimingestd: --option {item!r}: expected KEY=VALUE", file=sys.stderr)
            return EXIT_USAGE
        try:
            if value[:1] in ("{", "[") or (key in _RULE_JSON and value.lower() in ("true", "false")):
                options[key] = json.loads(value.lower() if key in _RULE_JSON else value)
            elif key in _RULE_JSON:
                options[key] = json.loads(value)  # max_deletions: a number
            else:
                options[key] = value
        except ValueError as exc:
            print(f"pimingestd: --option {key}: not valid JSON: {exc}", file=sys.stderr)
            return EXIT_USAGE
    code: int = 0
    body: Any = None
    if isinstance(path, str):
        code, body = await api.ingest({"url": path, "re_ingestion": args.re_ingest, **options})
    elif not args.upload:
        code, body = await api.ingest({"path": str(path), "re_ingestion": args.re_ingest, **options})
        if code in (403, 404):
            print(
                f"pimingestd: the daemon cannot read {path} by path ({body.get('error')}); uploading it",
                file=sys.stderr,
            )
    if isinstance(path, Path) and (args.upload or code in (403, 404)):
        params = {k: v if isinstance(v, str) else json.dumps(v) for k, v in options.items()}
        if args.re_ingest:
            params["re_ingestion"] = "true"
        code, body = await api.upload(path, args.name or path.name, params)
    if code >= 300:
        return _refused(code, body)
    ing = body["ingestion_id"]
    print(f"{ing} {body['status']} {body['file_id'] or '-'}")  # a remote object's file_id comes once it is read
    if not args.wait:
        return EXIT_OK
    bar = ProgressBar(sys.stderr)
    while True:
        code, st = await api.ingestion(ing)
        if code != 200:
            bar.close()
            return _refused(code, st)
        bar.update(st)
        if st["status"] in (Status.COMPLETED, Status.FAILED, Status.CANCELLED):
            bar.close()
            break
        await asyncio.sleep(0.25)
    if st["status"] == Status.COMPLETED:
        print(f"completed: {st['records_acked']} records in {st['chunks_acked']} chunks")
        if st.get("records_rejected"):
            print(
                f"{st['records_rejected']} records rejected: pimingestd rejects {ing} > {ing}.rejects",
                file=sys.stderr,
            )
            return EXIT_REJECTS
        return EXIT_OK
    print(f"{st['status']}: {st['error']}", file=sys.stderr)
    return EXIT_FAILURE
