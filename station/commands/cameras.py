"""`station cameras`: list GenICam devices of every configured producer and their key features."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from station.config import load_config
from station.core.errors import StationError


def register(subparsers: Any) -> None:
    """Add the `cameras` subcommand."""
    p = subparsers.add_parser(
        "cameras",
        help="list GenICam devices and their key features",
        description=(
            "List the devices of every GenTL producer (camera.genicam.cti, GENICAM_GENTL64_PATH "
            "and --cti): vendor, model, serial, user name and access status, then their key "
            "features with current values and ranges."
        ),
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="station config (TOML)")
    p.add_argument(
        "--cti", action="append", default=[], metavar="FILE", help="extra GenTL producer"
    )
    p.add_argument("--no-features", action="store_true", help="only list devices, do not open them")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Enumerate, then open each available device briefly to read its features."""
    from station.camera.genicam import discover, producer_files, read_device_features

    cfg = load_config(args.config)
    producers = producer_files([*cfg.camera.genicam.cti, *args.cti])
    devices = discover(producers)
    report: list[dict[str, Any]] = []
    for dev in devices:
        entry: dict[str, Any] = dataclasses.asdict(dev)
        entry["features"] = []
        if not args.no_features:
            try:
                # By index within these producers: serials may be empty or repeat.
                feats = read_device_features(producers, dev.index)
                entry["features"] = [dataclasses.asdict(f) for f in feats]
            except StationError as exc:
                entry["error"] = str(exc)
        report.append(entry)

    if args.json:
        print(json.dumps({"producers": [str(p) for p in producers], "devices": report}, indent=2))
        return 0 if devices else 1
    for prod in producers:
        print(f"producer {prod}")
        mine = [e for e in report if not e["producer"] or Path(e["producer"]).resolve() == prod]
        if not mine:
            print("  no device found")
        for e in mine:
            _print_device(e)
    return 0 if devices else 1


def _print_device(e: dict[str, Any]) -> None:
    print(
        f"  [{e['index']}] {e['vendor']} {e['model']}  serial {e['serial'] or '-'}  "
        f"user name {e['user_name'] or '-'}  id {e['device_id']}  status {e['access']}"
    )
    if e.get("error"):
        print(f"      features not read: {e['error']}")
    if e["features"]:
        from station.camera.genicam import KEY_FEATURES

        lacks = [n for n in KEY_FEATURES if n not in {f["name"] for f in e["features"]}]
        if lacks:
            print(f"      (no {', '.join(lacks)})")
    for f in e["features"]:
        allowed = _allowed(f)
        value = f["value"] if f["value"] != "" else "-"
        unit = f" {f['unit']}" if f["unit"] and f["kind"] in ("integer", "float") else ""
        print(f"      {f['name']:<22} {value + unit:<14} {f['access']:<4} {allowed}")


def _allowed(f: dict[str, Any]) -> str:
    from station.camera.genicam import FeatureInfo

    return FeatureInfo(**{**f, "choices": tuple(f["choices"])}).allowed()
