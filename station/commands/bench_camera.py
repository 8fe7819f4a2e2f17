"""`station bench-camera`: conversion cost per frame and achieved vs configured frame rate."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from station.commands.grab import add_camera_options, camera_config
from station.config import data_dir
from station.core.errors import CameraError, ConfigError
from station.core.result import BadFrame


def register(subparsers: Any) -> None:
    """Add the `bench-camera` subcommand."""
    p = subparsers.add_parser(
        "bench-camera",
        help="measure conversion cost and achieved frame rate of a camera",
        description=(
            "Stream from the camera for --seconds at --fps (GenICam: AcquisitionFrameRate) and "
            "print JSON: conversion+copy cost per frame (ms, p50/p95) at the device's size, "
            "the achieved frame rate against the configured one, and lost frames counted from "
            "the device's frame ids."
        ),
    )
    add_camera_options(p, default_source="genicam")
    p.add_argument("--seconds", type=float, default=60.0, metavar="S", help="duration (60)")
    p.add_argument(
        "--fps",
        type=float,
        default=10.0,
        metavar="F",
        help="rate to configure (10; 0 = leave the device's rate)",
    )
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the JSON to this file")
    p.set_defaults(func=run)


def _ms(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values)
    return {
        "p50": round(float(np.percentile(a, 50)), 4),
        "p95": round(float(np.percentile(a, 95)), 4),
        "mean": round(float(a.mean()), 4),
        "max": round(float(a.max()), 4),
    }


def run(args: argparse.Namespace) -> int:
    """Run the measurement and print its JSON."""
    if args.seconds <= 0:
        raise ConfigError("--seconds must be positive")
    overrides: dict[str, Any] = {}
    if args.fps > 0 and args.source == "genicam":
        overrides["features"] = {"AcquisitionFrameRate": float(args.fps)}
    cfg = camera_config(args, **overrides)
    if args.fps > 0 and cfg.camera.source == "replay":
        replay = dataclasses.replace(cfg.camera.replay, fps=float(args.fps))
        cfg = dataclasses.replace(cfg, camera=dataclasses.replace(cfg.camera, replay=replay))

    from station.app import StationApp
    from station.camera.genicam import GenICamCamera

    cam = StationApp(cfg, data_dir(cfg, args.data_dir)).camera(device=args.device)
    stamps: list[float] = []
    next_ms: list[float] = []  # time the consumer waited in next(), for sources without stats
    shape: tuple[int, ...] = ()
    dtype = ""
    bad = 0  # BadFrames: frames the camera could not deliver
    with cam:
        it = cam.frames()
        try:
            t_end = time.monotonic() + args.seconds
            while time.monotonic() < t_end:
                t0 = time.perf_counter()
                frame = next(it, None)
                next_ms.append((time.perf_counter() - t0) * 1e3)
                if frame is None:
                    break
                if isinstance(frame, BadFrame):
                    bad += 1
                    continue
                stamps.append(frame.timestamp)
                shape, dtype = frame.image.shape, str(frame.image.dtype)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
        info = cam.info()
        stats = cam.stats() if isinstance(cam, GenICamCamera) else None
    if not stamps:
        raise CameraError(f"{info.kind} camera delivered no frame in {args.seconds:g} s")
    span = stamps[-1] - stamps[0]
    achieved = (len(stamps) - 1) / span if span > 0 else 0.0
    result: dict[str, Any] = {
        "source": info.kind,
        "device": " ".join(x for x in (info.vendor, info.model, info.serial) if x),
        "image": {"shape": list(shape), "dtype": dtype, "format": info.extra.get("PixelFormat")},
        "seconds": round(span, 3),
        "configured_fps": info.fps,
        "achieved_fps": round(achieved, 3),
        "frames": len(stamps),
        "bad_frames": bad,
        "lost_frames": stats.lost if stats else None,
        "incomplete_buffers": stats.incomplete if stats else None,
        "producer_underruns": stats.underrun if stats else None,
        "convert_copy_ms": _ms(list(stats.convert_ms)) if stats else None,
    }
    if stats is None:
        result["next_frame_ms"] = _ms(next_ms)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0
