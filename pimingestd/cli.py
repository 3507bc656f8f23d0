"""Command line: parse arguments, load config, set up logs, call the daemon or the receiver.

Exit codes: 0 success; 1 runtime failure; 2 usage error; 74 state database
unusable or locked by another daemon; 78 configuration error (EX_CONFIG).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from . import __version__, logs
from . import config as config_mod
from .errors import ConfigError, StateError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_STATE = 74
EXIT_CONFIG = 78


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pimingestd",
        description="Exactly-once, resumable ingestion of JSON, JSON Lines and Excel files into PIM-Core.",
    )
    p.add_argument("--version", action="version", version=f"pimingestd {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run the daemon",
        description="Run the daemon. Example: pimingestd run --config /etc/pimingestd/config.toml",
    )
    run.add_argument("--config", required=True, type=Path, help="TOML config file")

    check = sub.add_parser(
        "check-config",
        help="validate a config file and print it resolved (secrets masked)",
        description="Validate a config file. Example: pimingestd check-config --config config.example.toml",
    )
    check.add_argument("--config", required=True, type=Path)

    rec = sub.add_parser(
        "receiver",
        help="run the reference PIM-Core receiver",
        description="Run the reference PIM-Core receiver. Example: pimingestd receiver --port 8081 --data var/receiver",
    )
    rec.add_argument("--host", default="127.0.0.1")
    rec.add_argument("--port", type=int, default=8081)
    rec.add_argument("--data", type=Path, required=True, help="folder for its SQLite state")
    rec.add_argument("--secret", default=None, help="HMAC secret (default: $PIMINGESTD_PIMCORE_SECRET)")
    rec.add_argument(
        "--mode",
        choices=("store", "count"),
        default="store",
        help="store: parse and store every record; count: check framing and order only",
    )
    rec.add_argument("--log-format", choices=("json", "console"), default="json")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "receiver":
        return _receiver(args)
    try:
        cfg = config_mod.load(args.config)
    except ConfigError as exc:
        print(f"pimingestd: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        print(json.dumps(cfg.masked(), indent=2))
        return EXIT_OK
    logs.setup(cfg.logging.format, cfg.logging.level)
    from .daemon import run

    try:
        return asyncio.run(run(cfg))
    except StateError as exc:
        print(f"pimingestd: {exc}", file=sys.stderr)
        return EXIT_STATE
    except OSError as exc:
        print(f"pimingestd: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _receiver(args: argparse.Namespace) -> int:
    import os

    from .receiver.app import serve

    logs.setup(args.log_format, "info")
    secret = args.secret if args.secret is not None else os.environ.get(config_mod.SECRET_ENV, "")
    with suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.data.resolve(), secret=secret, mode=args.mode))
    return EXIT_OK
