"""`station run`: run the inspection line, with the GUI or headless with a summary a minute."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from station.config import data_dir, load_config
from station.core.errors import ConfigError
from station.core.result import LineStatus, StationState

log = logging.getLogger("station.run")

STOP_TIMEOUT_S = 30.0  # the recorder's last batch and a camera close can take a while


def register(subparsers: Any) -> None:
    """Add the `run` subcommand."""
    p = subparsers.add_parser(
        "run",
        help="run the inspection line (GUI, or --headless)",
        description=(
            "Run the line: camera, model, verdicts, records and drift monitor. With the default "
            "config it replays the synthetic demo product and builds the demo model on first "
            "start. Headless, it logs a one-line summary every --summary-interval seconds; "
            "Ctrl-C or SIGTERM stops it cleanly."
        ),
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="station config (TOML)")
    p.add_argument(
        "--data-dir", metavar="DIR", help="database, archive and models (default: config/env)"
    )
    p.add_argument(
        "--max-frames", type=int, metavar="N", help="stop by itself after N inspected frames"
    )
    p.add_argument("--headless", action="store_true", help="no window: log a summary instead")
    p.add_argument("--kiosk", action="store_true", help="GUI: full screen, no window controls")
    p.add_argument(
        "--summary-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="headless: seconds between summary lines (60)",
    )
    p.set_defaults(func=run)


def summary_line(status: LineStatus) -> str:
    """The headless one-line summary: counts, rate, throughput, latency, drops, drift, state."""
    c = status.counters
    drift = status.drift.level.value if status.drift is not None else "off"
    # The counts are the shift's (earlier runs in it included): say which shift.
    shift = f"shift {c.shift} " if c.shift else ""
    line = (
        f"{status.state.value}: {shift}inspected {c.inspected}, NOK {c.nok} ({c.nok_rate:.1%}), "
        f"{c.throughput_per_min:.0f}/min, latency p50 {c.latency_p50_ms:.0f} ms "
        f"p95 {c.latency_p95_ms:.0f} ms, dropped {c.dropped}, unrecorded {c.unrecorded}, "
        f"drift {drift}"
    )
    if status.state not in (StationState.RUNNING, StationState.STOPPED) and status.reason:
        line += f" ({status.reason})"
    if status.alarms:
        line += f"; ALARM: {'; '.join(status.alarms)}"
    return line


def run(args: argparse.Namespace) -> int:
    """Run the line until stopped (or N frames); exit 0 on a clean stop, 1 if it failed."""
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError("--max-frames must be at least 1")
    if args.summary_interval <= 0:
        raise ConfigError("--summary-interval must be positive")
    cfg = load_config(args.config)
    ddir = data_dir(cfg, args.data_dir)
    if not args.headless:
        return _run_gui(cfg, ddir, args)
    return run_headless(cfg, ddir, max_frames=args.max_frames, interval=args.summary_interval)


def _run_gui(cfg: Any, ddir: Path, args: argparse.Namespace) -> int:
    try:
        # Imported here: Qt lives only in station.gui, and headless runs must not need it.
        app = importlib.import_module("station.gui.app")
    except ImportError as exc:
        print(
            f"station run: the GUI cannot start ({exc}); run the line without a window with "
            "`station run --headless`",
            file=sys.stderr,
        )
        return 2
    kiosk = args.kiosk or cfg.gui.kiosk
    return int(app.run_gui(cfg, ddir, kiosk=kiosk, max_frames=args.max_frames))


def run_headless(cfg: Any, ddir: Path, *, max_frames: int | None, interval: float) -> int:
    """Run the line without a window until SIGTERM / Ctrl-C or `max_frames`."""
    from station.app import StationApp

    stop = threading.Event()
    why: list[str] = []

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        why.append(signal.Signals(signum).name)
        stop.set()

    app = StationApp(cfg, ddir, max_frames=max_frames)
    app.start()  # DataDirInUse when another station runs here: exit 1
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    log.info("data directory %s; product %s", ddir, cfg.model.product)
    try:
        next_summary = time.monotonic() + interval
        while not stop.is_set():
            # Short waits: signal handlers run in the main thread between them.
            if app.wait(min(0.5, max(0.0, next_summary - time.monotonic()))):
                break
            if time.monotonic() >= next_summary:
                log.info("%s", summary_line(app.status()))
                next_summary += interval
    finally:
        reason = f"{why[0]} received" if why else "stopped"
        clean = app.stop(STOP_TIMEOUT_S, reason=reason)
        for s, handler in previous.items():
            signal.signal(s, handler)
    status = app.status()
    app.close()
    log.info("%s", summary_line(status))
    if not clean:
        log.error("the line did not stop within %.0f s", STOP_TIMEOUT_S)
    if status.state == StationState.FAILED:
        log.error("the line failed: %s", status.reason)
        return 1
    return 0 if clean else 1
