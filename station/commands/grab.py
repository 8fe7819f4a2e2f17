"""`station grab`: save N converted frames from a camera and report the achieved rate and losses."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from station.config import StationConfig, data_dir, load_config
from station.core.errors import CameraError, ConfigError, StationError
from station.core.result import BadFrame

SOURCES = ("genicam", "replay", "uvc")


def parse_feature(text: str) -> tuple[str, Any]:
    """Parse NAME=VALUE into a feature and a TOML-like value (int, float, true/false, text)."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    raw = raw.strip()
    value: Any = raw
    if raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    else:
        for conv in (int, float):
            try:
                value = conv(raw)
                break
            except ValueError:
                continue
    return name.strip(), value


def add_camera_options(p: argparse.ArgumentParser, *, default_source: str | None = None) -> None:
    """The options every camera command shares."""
    p.add_argument("--config", type=Path, metavar="FILE", help="station config (TOML)")
    p.add_argument(
        "--source",
        choices=SOURCES,
        default=default_source,
        help="camera source (default: camera.source from the config)",
    )
    p.add_argument(
        "--device",
        metavar="ID",
        help="GenICam serial / user name / index, USB index, or replay folder (default: first)",
    )
    p.add_argument(
        "--cti",
        action="append",
        default=[],
        metavar="FILE",
        help="GenTL producer to load, besides camera.genicam.cti and GENICAM_GENTL64_PATH",
    )
    p.add_argument(
        "--set",
        dest="features",
        action="append",
        type=parse_feature,
        default=[],
        metavar="NAME=VALUE",
        help="GenICam feature to set after the configured ones (repeatable), e.g. Width=640",
    )
    p.add_argument("--data-dir", metavar="DIR", help="data folder (for the demo product)")


def camera_config(args: argparse.Namespace, **genicam_overrides: Any) -> StationConfig:
    """The config file with the command line's source, producers and features on top."""
    cfg = load_config(args.config)
    cam = cfg.camera
    if args.source:
        cam = dataclasses.replace(cam, source=args.source)
    gc = cam.genicam
    features = {**gc.features, **dict(args.features), **genicam_overrides.pop("features", {})}
    gc = dataclasses.replace(gc, cti=[*gc.cti, *args.cti], features=features, **genicam_overrides)
    if args.features and cam.source != "genicam":
        raise ConfigError("--set applies to GenICam features only (use --source genicam)")
    return dataclasses.replace(cfg, camera=dataclasses.replace(cam, genicam=gc))


def register(subparsers: Any) -> None:
    """Add the `grab` subcommand."""
    p = subparsers.add_parser(
        "grab",
        help="save N frames from the camera as images",
        description=(
            "Open the configured camera (or --source), save N converted frames as PNG files "
            "(RGB or mono, 8 or 16 bit) and print the achieved frame rate and any lost or "
            "incomplete buffers. Without --device the first device found is used."
        ),
    )
    add_camera_options(p)
    p.add_argument("--n", type=int, required=True, metavar="N", help="number of frames to save")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


def save_frame(path: Path, image: np.ndarray) -> None:
    """Write an engine image (RGB order) losslessly; StationError if it cannot be written."""
    out = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), out):
        raise StationError(f"{path}: could not write image")


def run(args: argparse.Namespace) -> int:
    """Grab the frames and print a summary."""
    if args.n < 1:
        raise ConfigError("--n must be at least 1")
    cfg = camera_config(args)
    from station.app import StationApp
    from station.camera.genicam import GenICamCamera

    # --device overrides the configured device only when given.
    cam = StationApp(cfg, data_dir(cfg, args.data_dir)).camera(device=args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    stamps: list[float] = []
    last = None
    with cam:
        it = cam.frames()
        try:
            for frame in it:
                if isinstance(frame, BadFrame):
                    print(f"frame refused: {frame.reason}", file=sys.stderr)
                    continue
                stamps.append(frame.timestamp)
                last = frame
                suffix = f"_{frame.label}" if frame.label else ""
                save_frame(args.out / f"frame_{frame.frame_id:06d}{suffix}.png", frame.image)
                if len(stamps) >= args.n:
                    break
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
        stats = cam.stats() if isinstance(cam, GenICamCamera) else None
        info = cam.info()
    if last is None:
        raise CameraError(f"{info.kind} camera delivered no frame")
    shape = "x".join(str(s) for s in last.image.shape)
    print(f"saved {len(stamps)} frames ({shape} {last.image.dtype}) to {args.out}")
    achieved = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
    configured = f"{info.fps:g} fps" if info.fps else "as fast as possible"
    print(f"achieved {achieved:.2f} fps (configured: {configured})")
    if stats is not None:
        print(
            f"lost frames: {stats.lost} (device frame-id gaps), incomplete buffers: "
            f"{stats.incomplete}, producer underruns: {stats.underrun}"
        )
    else:
        print("lost frames: n/a for this source, incomplete buffers: n/a")
    return 0
