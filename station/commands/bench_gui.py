"""`station bench-gui`: GUI-thread time per display update, and throughput with vs without GUI."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from station.commands.demo_data import parse_size
from station.config import data_dir, load_config
from station.core.errors import ConfigError


def register(subparsers: Any) -> None:
    """Add the `bench-gui` subcommand."""
    p = subparsers.add_parser(
        "bench-gui",
        help="measure the operator GUI's cost on a full-rate replay",
        description=(
            "Run the line on the replay camera at its full rate (fps 0) headless for --seconds, "
            "then the same with the operator window open (offscreen) for --seconds, and print "
            "JSON: GUI-thread time per display update (p50/p95/max, wall and CPU, paint "
            "included), pictures shown vs skipped, and the inspection throughput of both runs "
            "with their ratio. Without --data-dir it uses a fresh temporary data folder, where "
            "the line writes the demo product and builds the demo model first."
        ),
    )
    p.add_argument("--seconds", type=float, default=120.0, metavar="S", help="per run (120)")
    p.add_argument("--warmup", type=float, default=10.0, metavar="S", help="before each (10)")
    p.add_argument(
        "--fps", type=float, default=0.0, metavar="F", help="replay rate (0 = full rate)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        metavar="N",
        help="alternate headless and GUI N times, S/N seconds each (1: one of each, in turn)",
    )
    p.add_argument(
        "--size",
        type=parse_size,
        default=(800, 1280),
        metavar="HxW",
        help="window size, height x width (800x1280)",
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="station config (TOML)")
    p.add_argument("--data-dir", metavar="DIR", help="data folder (default: a temporary one)")
    p.add_argument("--screenshot", type=Path, metavar="PNG", help="save the window at the end")
    p.add_argument("--on-screen", action="store_true", help="show the window (default offscreen)")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the JSON to this file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run both measurements and print the JSON."""
    if args.seconds <= 0 or args.warmup < 0 or args.fps < 0 or args.rounds < 1:
        raise ConfigError(
            "--seconds must be positive, --warmup and --fps not negative, --rounds at least 1"
        )
    if not args.on_screen:
        # Before Qt is imported: the bench must run the same on a line PC and over SSH.
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    cfg = load_config(args.config)
    from station.gui.bench import bench_gui  # Qt lives in station.gui only

    h, w = args.size
    with tempfile.TemporaryDirectory(prefix="station-bench-gui-") as tmp:
        ddir = Path(data_dir(cfg, args.data_dir)) if args.data_dir else Path(tmp)
        result = bench_gui(
            cfg,
            ddir,
            seconds=args.seconds,
            warmup=args.warmup,
            size=(w, h),
            screenshot=args.screenshot,
            fps=args.fps,
            rounds=args.rounds,
        )
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    # After building and tearing down several windows, PySide6 6.12 can abort in the interpreter's
    # final garbage collection ("none_dealloc"), after every result is written. The bench owns no
    # other state worth finalising, so end the process here with a clean exit code.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
