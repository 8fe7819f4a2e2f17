"""The `station` command. Each subcommand lives in its own module under `station.commands`.

A command module defines `register(subparsers)`, which adds its parser and sets `func` to a
callable taking the parsed namespace and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import station.commands
from station import __version__
from station.core.errors import StationError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="station", description="Industrial inspection station: camera, anomaly model, records."
    )
    parser.add_argument("--version", action="version", version=f"station {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(station.commands.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"station.commands.{mod.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # faiss logs each CPU-specific build it tries ("Could not load library with AVX512
        # support ... ModuleNotFoundError") at INFO: normal, but it reads like a failure.
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except StationError as exc:
        # A person reads this on a line PC: the reason, not a traceback.
        print(f"station {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
