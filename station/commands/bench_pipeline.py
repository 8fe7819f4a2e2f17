"""`station bench-pipeline`: replay as fast as possible through the real line and measure it.

Overhead is what the line costs beyond the model: frame time (1 / throughput of the inspector)
minus the model's own time (the engine's stage times), as a share of the frame time. The replay
runs at fps 0 and loops, so the camera outruns the model: the queue drops frames (counted) and
the latency must stay bounded by the queue length. `--soak` samples RSS every 500 frames and
reports its growth after warm-up, and the archive's size against its budget.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from station.config import StationConfig, load_config
from station.core.errors import ConfigError, StationError
from station.core.result import InspectionResult

log = logging.getLogger("station.bench")

RSS_EVERY = 500  # frames between RSS samples
ISOLATED_FRAMES = 20  # frames timed through the model alone, before the line starts


def register(subparsers: Any) -> None:
    """Add the `bench-pipeline` subcommand."""
    p = subparsers.add_parser(
        "bench-pipeline",
        help="measure the line's overhead, drops and latency on a fast replay",
        description=(
            "Replay a folder (MVTec layout or flat) as fast as possible through the real line "
            "(camera, queue, model, recorder, drift, fan-out) and print JSON: throughput, the "
            "model's own time, the pipeline's overhead beyond it, drops, latency p50/p95 and "
            "peak RSS. --soak also samples RSS every 500 frames and checks the archive budget."
        ),
    )
    p.add_argument("--data", required=True, metavar="DIR|demo", help="replay folder, or 'demo'")
    p.add_argument(
        "--model",
        type=Path,
        metavar="MODEL",
        help="model artifact folder (with --data demo: default fits one with the config)",
    )
    p.add_argument("--frames", type=int, metavar="N", help="frames to inspect (300; soak 10000)")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the JSON to this file")
    p.add_argument("--soak", action="store_true", help="RSS growth and archive size vs budget")
    p.add_argument("--config", type=Path, metavar="FILE", help="station config (TOML)")
    p.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="where records go (default: a temporary folder, removed afterwards)",
    )
    p.add_argument("--queue-size", type=int, metavar="N", help="inspection queue (config: 4)")
    p.add_argument("--image-size", type=int, metavar="PX", help="model input when fitting demo")
    p.add_argument(
        "--fps",
        type=float,
        default=0.0,
        metavar="F",
        help="replay rate (0 = as fast as possible, the default)",
    )
    p.add_argument("--runtime", choices=("torch", "onnx", "tensorrt"), help="override the config")
    p.add_argument("--threads", type=int, metavar="N", help="runtime threads (0 = all cores)")
    p.add_argument(
        "--warmup", type=int, metavar="N", help="first frames left out of the figures (2%%, >=5)"
    )
    p.set_defaults(func=run)


def _config(args: argparse.Namespace, data: Path) -> StationConfig:
    cfg = load_config(args.config)
    model = cfg.model
    if args.image_size:
        model = dataclasses.replace(model, image_size=args.image_size)
    if args.runtime:
        model = dataclasses.replace(model, runtime=args.runtime)
    if args.threads is not None:
        model = dataclasses.replace(model, threads=args.threads)
    inspection = cfg.inspection
    if args.queue_size:
        inspection = dataclasses.replace(inspection, queue_size=args.queue_size)
    # By default as fast as the acquisition takes them, mixed good and bad parts, looping
    # (the line stops after --frames).
    replay = dataclasses.replace(cfg.camera.replay, path=str(data), fps=args.fps, loop=True)
    replay = dataclasses.replace(replay, shuffle=True)
    camera = dataclasses.replace(cfg.camera, source="replay", replay=replay)
    return dataclasses.replace(cfg, camera=camera, model=model, inspection=inspection)


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 1e6


def _peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes; the station runs on Linux).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def _folder_mb(path: Path) -> float:
    if not path.exists():
        return 0.0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def _pct(a: np.ndarray, q: float) -> float:
    return round(float(np.percentile(a, q)), 2) if a.size else 0.0


class _Collector:
    """The bench's own subscriber: a few floats per result, RSS every RSS_EVERY frames."""

    def __init__(self) -> None:
        self.finished: list[float] = []
        self.latency: list[float] = []
        self.model_ms: list[float] = []
        self.nok = 0
        self.rss: list[tuple[int, float]] = []
        self.progress = threading.Event()

    def __call__(self, r: InspectionResult) -> None:
        self.finished.append(r.finished_at)
        self.latency.append(r.latency_ms)
        self.model_ms.append(r.stages_ms.total)
        self.nok += r.verdict.value == "NOK"
        n = len(self.finished)
        if n % RSS_EVERY == 0:
            self.rss.append((n, round(_rss_mb(), 1)))
            log.info("%d frames, RSS %.1f MB", n, self.rss[-1][1])


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print its JSON."""
    frames = args.frames or (10000 if args.soak else 300)
    if frames < 20:
        raise ConfigError("--frames must be at least 20")
    with tempfile.TemporaryDirectory(prefix="station-bench-") as tmp:
        work = Path(tmp)
        report = bench(args, work, frames)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


def bench(args: argparse.Namespace, work: Path, frames: int) -> dict[str, Any]:
    """The measurement itself (records and any fitted model go under `work`)."""
    from station.app import StationApp
    from station.camera.replay import scan_folder
    from station.core.imageio import read_image
    from station.model.patchcore import PatchCore, training_images
    from station.model.search import SearchSpec
    from station.model.training import fit

    fit_s = None
    if args.data == "demo":
        from station.demo_product import generate_demo_product

        data = work / "demo_product"
        generate_demo_product(data)
    else:
        data = Path(args.data).expanduser()
        if not data.is_dir():
            raise ConfigError(f"--data {data}: folder not found")
    cfg = _config(args, data)
    model_path = args.model
    if model_path is None:
        if args.data != "demo":
            raise ConfigError("--model is required unless --data demo")
        model_path = work / "models" / "demo" / "v0001"
        t0 = time.perf_counter()
        fit(training_images(data), cfg.model, model_path, product="demo", progress=False)
        fit_s = round(time.perf_counter() - t0, 1)
    model = PatchCore.load(
        model_path,
        cfg.model.runtime,
        threads=cfg.model.threads,
        search=SearchSpec.from_config(cfg.model),
    )

    # The model alone on the same parts: what the engine costs without the line around it.
    items, _ = scan_folder(data)
    if not items:
        raise StationError(f"{data}: no images to replay")
    pick = np.linspace(0, len(items) - 1, min(len(items), ISOLATED_FRAMES + 3)).astype(int)
    images = [read_image(items[i][0]) for i in pick]
    isolated: list[tuple[float, float]] = []

    def _isolated() -> None:
        for k, image in enumerate(images):
            t0 = time.perf_counter()
            pred = model.predict(image)
            wall = (time.perf_counter() - t0) * 1e3
            if k >= 3:  # the first runs warm caches and allocators
                isolated.append((pred.stages_ms.total, wall))

    # On a thread, as the inspector runs it: on this 2-core machine the engine's kNN stage was
    # ~2.5x slower called from the main thread than from any other, which would skew the figure.
    t = threading.Thread(target=_isolated, name="bench-isolated")
    t.start()
    t.join()
    images.clear()

    data_dir = args.data_dir or work / "data"
    app = StationApp(cfg, data_dir, model=model, max_frames=frames)
    col = _Collector()
    sub = app.subscribe(col, queue_size=4096)
    rss_start = _rss_mb()
    t_start = time.perf_counter()
    app.start()
    try:
        app.wait()
    except KeyboardInterrupt:
        log.warning("interrupted: reporting what was measured")
    finally:
        app.stop(30)
    wall_s = time.perf_counter() - t_start
    status = app.status()
    rec = app.recorder.stats()
    app.close()
    model.close()

    n = len(col.finished)
    warm = args.warmup if args.warmup is not None else max(5, n // 50)
    if n - warm < 10:
        raise StationError(f"only {n} frames inspected: too few to measure")
    fin = np.asarray(col.finished[warm:])
    lat = np.asarray(col.latency[warm:])
    mdl = np.asarray(col.model_ms[warm:])
    throughput = (fin.size - 1) / (fin[-1] - fin[0])
    frame_ms = 1e3 / throughput
    # The span from the first to the last finish holds the work of every frame but the first.
    model_ms = float(mdl[1:].mean())
    iso_model = float(np.mean([m for m, _ in isolated]))
    iso_wall = float(np.mean([w for _, w in isolated]))
    q = cfg.inspection.queue_size
    c = status.counters
    report: dict[str, Any] = {
        "data": str(data),
        "model": str(model_path),
        "runtime": cfg.model.runtime,
        "image_size": model.pre.image_size,
        "queue_size": q,
        "replay_fps": cfg.camera.replay.fps,
        "frames": n,
        "warmup_frames": warm,
        "wall_s": round(wall_s, 2),
        "throughput_fps": round(throughput, 3),
        "frame_ms": round(frame_ms, 3),
        "model_ms": round(model_ms, 3),
        "pipeline_overhead_ms": round(frame_ms - model_ms, 3),
        "overhead_pct": round(100 * (frame_ms - model_ms) / frame_ms, 2),
        "model_ms_isolated": round(iso_model, 3),
        "predict_wall_ms_isolated": round(iso_wall, 3),
        "overhead_vs_isolated_pct": round(100 * (frame_ms - iso_model) / frame_ms, 2),
        "dropped": c.dropped,
        "dropped_pct": round(100 * c.dropped / max(1, c.dropped + c.inspected), 1),
        "nok": col.nok,
        "latency_p50_ms": _pct(lat, 50),
        "latency_p95_ms": _pct(lat, 95),
        "latency_max_ms": _pct(lat, 100),
        "latency_bound_ms": round((q + 1) * frame_ms, 1),  # q frames waiting + the one in work
        "peak_rss_mb": round(max(_peak_rss_mb(), *(r for _, r in col.rss), 0.0), 1),
        "rss_start_mb": round(rss_start, 1),
        "recorded": rec.recorded,
        "unrecorded": rec.unrecorded,
        "images_archived": rec.images_archived,
        "subscriber_dropped": sub.dropped,
        "final_state": status.state.value,
        "alarms": list(status.alarms),
    }
    if fit_s is not None:
        report["fit_s"] = fit_s
    if args.soak:
        report.update(_soak(col.rss, n, data_dir, cfg))
    return report


def _soak(
    rss: list[tuple[int, float]], n: int, data_dir: Path, cfg: StationConfig
) -> dict[str, Any]:
    """RSS growth after warm-up (the first fifth of the run) and the archive against budget."""
    after = [(f, r) for f, r in rss if f >= max(RSS_EVERY, n // 5)]
    out: dict[str, Any] = {"rss_samples": rss}
    if len(after) >= 2:
        base = after[0][1]
        out["rss_warm_mb"] = base
        out["rss_end_mb"] = after[-1][1]
        out["rss_growth_pct"] = round(100 * (after[-1][1] - base) / base, 2)
        out["rss_max_growth_pct"] = round(100 * (max(r for _, r in after) - base) / base, 2)
    else:
        print("soak: too few RSS samples after warm-up for a growth figure", file=sys.stderr)
    archive_mb = _folder_mb(data_dir / "archive")
    out["archive_mb"] = round(archive_mb, 1)
    out["db_mb"] = round(sum(p.stat().st_size for p in data_dir.glob("station.db*")) / 1e6, 1)
    out["archive_budget_mb"] = cfg.records.disk_budget_mb
    out["archive_within_budget"] = archive_mb <= cfg.records.disk_budget_mb
    return out
