"""`station bench`: per-image latency by stage, throughput, memory, and distance to the floor."""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from station.config import load_config
from station.core.errors import StationError
from station.core.imageio import list_images, read_image
from station.model.backbones import load_backbone
from station.model.flops import extractor_flops, gemm_gflops, knn_flops
from station.model.patchcore import PatchCore, extractor_for
from station.model.preprocess import prepare


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark a model: latency by stage, throughput, peak RSS, x over the FLOP floor",
    )
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path, help="folder or MVTec-layout set")
    p.add_argument("--runtime", choices=["torch", "onnx", "tensorrt"], help="default from config")
    p.add_argument(
        "--compare",
        nargs="*",
        default=[],
        choices=["torch", "onnx", "tensorrt"],
        help="also run these runtimes on the same model in the same run",
    )
    p.add_argument("--images", type=int, default=40, help="distinct images to cycle (40)")
    p.add_argument("--iterations", type=int, default=60, help="timed predictions (60)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--config", type=Path)
    p.add_argument("--json", type=Path, help="write the JSON report here too")
    p.set_defaults(func=run)


def _bench_images(data: Path, n: int) -> list[np.ndarray]:
    test = data / "test"
    if test.is_dir():
        files = sorted(f for d in sorted(test.iterdir()) if d.is_dir() for f in list_images(d))
    else:
        files = list_images(data)
    if not files:
        raise StationError(f"{data}: no images to benchmark on")
    step = max(1, len(files) // n)
    return [read_image(f) for f in files[::step][:n]]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def bench_runtime(
    model_path: Path,
    runtime: str,
    images: list[np.ndarray],
    iterations: int,
    warmup: int,
    threads: int,
    gemm_rate: float,
    flops_per_tile: float,
) -> dict[str, Any]:
    """Time `iterations` predictions cycling over `images` with one runtime."""
    model = PatchCore.load(model_path, runtime, threads=threads)
    for i in range(warmup):
        model.predict(images[i % len(images)])
    lat, stages, floors = [], [], []
    t_all = time.perf_counter()
    for i in range(iterations):
        img = images[i % len(images)]
        t = time.perf_counter()
        pred = model.predict(img)
        lat.append((time.perf_counter() - t) * 1e3)
        s = pred.stages_ms
        stages.append((s.preprocess, s.backbone, s.knn, s.postprocess))
        prepared = prepare(img, model.pre)
        patches = int(prepared.valid_patches().sum())
        flops = flops_per_tile * len(prepared.tiles) + knn_flops(
            patches, model.bank.size, model.bank.dim
        )
        floors.append(flops / (gemm_rate * 1e9) * 1e3)
    wall = time.perf_counter() - t_all
    model.close()
    st = np.asarray(stages)
    p50 = float(np.percentile(lat, 50))
    floor = float(np.median(floors))
    return {
        "runtime": runtime,
        "latency_ms": {"p50": round(p50, 2), "p95": round(float(np.percentile(lat, 95)), 2)},
        "stages_ms": {
            name: round(float(np.median(st[:, i])), 2)
            for i, name in enumerate(("preprocess", "backbone", "knn", "postprocess"))
        },
        "throughput_fps": round(iterations / wall, 2),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "floor_ms": round(floor, 2),
        "x_floor": round(p50 / floor, 2),
        "bank_size": model.bank.size,
    }


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    runtime = args.runtime or cfg.model.runtime
    images = _bench_images(args.data, args.images)
    probe = PatchCore.load(args.model, "onnx")
    m = probe.artifact.manifest
    bb = load_backbone(m.backbone)
    fx = extractor_for(m, bb)
    flops_per_tile = extractor_flops(fx, m.preprocessing.image_size)
    probe.close()
    rate = gemm_gflops()

    def measure(kind: str) -> dict[str, Any]:
        # Every runtime on the same images, iterations and GEMM rate: the ratios compare like
        # with like.
        return bench_runtime(
            args.model,
            kind,
            images,
            args.iterations,
            args.warmup,
            cfg.model.threads,
            rate,
            flops_per_tile,
        )

    report = measure(runtime)
    report.update(
        {
            "gemm_gflops": round(rate, 1),
            "extractor_gflops_per_tile": round(flops_per_tile / 1e9, 3),
            "images": len(images),
            "model": str(args.model),
        }
    )
    compared = []
    for other in args.compare:
        if other == runtime:
            continue
        r = measure(other)
        r["throughput_ratio"] = round(report["throughput_fps"] / r["throughput_fps"], 2)
        compared.append(r)
    if compared:
        report["compare"] = compared
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0
