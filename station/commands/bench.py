"""`station bench`: per-image latency by stage, throughput, memory, and distance to the floor."""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from station.commands._tables import print_table
from station.config import SEARCH_METHODS, load_config
from station.core.errors import StationError
from station.core.imageio import list_images, read_image
from station.model.backbones import load_backbone
from station.model.flops import distance_flops, extractor_flops, gemm_gflops
from station.model.patchcore import PatchCore, extractor_for, valid_patch_features
from station.model.preprocess import prepare
from station.model.search import SearchSpec

RUNTIMES = ["torch", "onnx", "tensorrt"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark a model: latency by stage, throughput, peak RSS, x over the FLOP floor",
    )
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path, help="folder or MVTec-layout set")
    p.add_argument("--runtime", choices=RUNTIMES, help="default from config")
    p.add_argument(
        "--compare",
        nargs="*",
        default=[],
        choices=RUNTIMES,
        help="also run these runtimes on the same model in the same run",
    )
    p.add_argument(
        "--search",
        choices=SEARCH_METHODS,
        help="nearest-neighbour search (default from config: model.search)",
    )
    p.add_argument(
        "--compare-search",
        nargs="*",
        default=[],
        choices=SEARCH_METHODS,
        help="also run these searches with the first runtime in the same run",
    )
    p.add_argument("--images", type=int, default=40, help="distinct images to cycle (40)")
    p.add_argument(
        "--iterations",
        type=int,
        default=120,
        help="timed predictions (120: each of 40 images 3 times, for the same-image p95/p50)",
    )
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--config", type=Path)
    p.add_argument("--json", type=Path, help="write the JSON report here too")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
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


def search_recall(model: PatchCore, images: list[np.ndarray]) -> dict[str, float]:
    """recall@1 of the model's search against exact search over every patch of `images`.

    A patch counts as found when the index returns a bank row at the exact nearest distance
    (within float rounding: ties and the ONNX graph's own arithmetic count as found). Also the
    mean and largest excess of the found distance over the exact one, relative.
    """
    found, excess = [], []
    for img in images:
        prepared = prepare(img, model.pre)
        rows = valid_patch_features(model.runtime.features(prepared.batch), prepared)
        got = model.bank.search(rows, 1).distances[:, 0].astype(np.float64)
        exact = model.bank.exact_search(rows, 1).distances[:, 0].astype(np.float64)
        found.append(got <= exact * (1 + 1e-4) + 1e-5)
        excess.append((got - exact) / np.maximum(exact, 1e-9))
    f, e = np.concatenate(found), np.maximum(np.concatenate(excess), 0.0)
    return {
        "recall_at_1": round(float(f.mean()), 5),
        "mean_excess": round(float(e.mean()), 6),
        "max_excess": round(float(e.max()), 4),
        "patches": int(f.size),
    }


def same_image_spread(lat: list[float], which: list[int], min_repeats: int = 3) -> float | None:
    """p95 over p50 of each timing against the median of its own image's *other* timings: the
    jitter of the station itself, apart from what differs between parts. A line's camera gives
    one frame size, while a set like magnetic_tile's crops ranges over 0.4 to 2.5 in aspect and
    6x in area, so the plain p95 over p50 mostly measures the set. (Against a median that
    includes the timing itself, a third of the ratios would be exactly 1 at 3 timings each.)
    None when an image is timed fewer than `min_repeats` times (raise --iterations)."""
    lat_a, img = np.asarray(lat, np.float64), np.asarray(which, np.int64)
    if lat_a.size == 0:
        return None
    counts = np.bincount(img)
    if counts[counts > 0].min() < min_repeats:
        return None
    rel = np.empty_like(lat_a)
    for i in np.flatnonzero(counts):
        at = np.flatnonzero(img == i)
        for j in at:
            rel[j] = lat_a[j] / np.median(lat_a[at[at != j]])
    return round(float(np.percentile(rel, 95) / np.percentile(rel, 50)), 2)


def bench_runtime(
    model_path: Path,
    runtime: str,
    images: list[np.ndarray],
    iterations: int,
    warmup: int,
    threads: int,
    gemm_rate: float,
    flops_per_tile: float,
    search: SearchSpec | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Time `iterations` predictions cycling over `images` with one runtime and search.

    The floor is the arithmetic of the extractor plus the distances the search actually
    computed for that frame (all P x M for exact search, a few hundred per patch for HNSW).
    """
    from tqdm import tqdm

    t_load = time.perf_counter()
    model = PatchCore.load(model_path, runtime, threads=threads, search=search)
    load_s = time.perf_counter() - t_load
    label = f"{runtime} {model.bank.plan.method}"
    for i in range(warmup):
        model.predict(images[i % len(images)])
    lat, stages, floors, dists, which = [], [], [], [], []
    bar = tqdm(total=iterations, desc=f"bench {label}", unit="img", disable=not progress)
    t_all = time.perf_counter()
    for i in range(iterations):
        img = images[i % len(images)]
        before = model.bank.distances_computed
        t = time.perf_counter()
        pred = model.predict(img)
        lat.append((time.perf_counter() - t) * 1e3)
        which.append(i % len(images))
        computed = model.bank.distances_computed - before
        s = pred.stages_ms
        stages.append((s.preprocess, s.backbone, s.knn, s.postprocess))
        tiles = len(prepare(img, model.pre).tiles)
        flops = flops_per_tile * tiles + distance_flops(computed, model.bank.dim)
        floors.append(flops / (gemm_rate * 1e9) * 1e3)
        dists.append(computed)
        bar.update(1)
    wall = time.perf_counter() - t_all
    bar.close()
    recall = (
        search_recall(model, images)
        if model.bank.plan.method != "exact"
        else {"recall_at_1": 1.0, "mean_excess": 0.0, "max_excess": 0.0}
    )
    model.close()
    st = np.asarray(stages)
    p50 = float(np.percentile(lat, 50))
    p95 = float(np.percentile(lat, 95))
    floor = float(np.median(floors))
    stage_ms = {
        name: round(float(np.median(st[:, i])), 2)
        for i, name in enumerate(("preprocess", "backbone", "knn", "postprocess"))
    }
    return {
        "runtime": runtime,
        "search": model.bank.plan.describe(),
        "latency_ms": {"p50": round(p50, 2), "p95": round(p95, 2)},
        "p95_over_p50": round(p95 / p50, 2),
        "p95_over_p50_same_image": same_image_spread(lat, which),
        "stages_ms": stage_ms,
        "knn_over_backbone": round(stage_ms["knn"] / max(stage_ms["backbone"], 1e-9), 3),
        "throughput_fps": round(iterations / wall, 2),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "floor_ms": round(floor, 2),
        "x_floor": round(p50 / floor, 2),
        "bank_size": model.bank.size,
        "knn_distances_per_frame": int(np.median(dists)),
        "index_build_s": round(model.bank.build_s, 3),
        "load_s": round(load_s, 3),
        "search_vs_exact": recall,
    }


def _table(runs: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in runs:
        s, lat = r["stages_ms"], r["latency_ms"]
        rows.append(
            [
                r["runtime"],
                r["search"],
                f"{lat['p50']:.1f}",
                f"{lat['p95']:.1f}",
                "-" if (j := r["p95_over_p50_same_image"]) is None else f"{j:.2f}",
                f"{s['backbone']:.1f}",
                f"{s['knn']:.1f}",
                f"{r['knn_over_backbone']:.2f}",
                f"{r['search_vs_exact']['recall_at_1']:.4f}",
                f"{r['knn_distances_per_frame']:,}",
                f"{r['throughput_fps']:.2f}",
                f"{r['x_floor']:.1f}",
            ]
        )
    return rows


TABLE_HEADER = [
    "runtime",
    "search",
    "p50 ms",
    "p95 ms",
    "p95/p50 same image",
    "backbone",
    "kNN",
    "kNN/bb",
    "recall@1",
    "distances",
    "fps",
    "x floor",
]


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    runtime = args.runtime or cfg.model.runtime
    base = SearchSpec.from_config(cfg.model)
    if args.search:
        base = dataclasses.replace(base, method=args.search)
    images = _bench_images(args.data, args.images)
    probe = PatchCore.load(args.model, "onnx", search=SearchSpec("exact"))
    m = probe.artifact.manifest
    bb = load_backbone(m.backbone)
    fx = extractor_for(m, bb)
    flops_per_tile = extractor_flops(fx, m.preprocessing.image_size)
    probe.close()
    rate = gemm_gflops()
    progress = not args.quiet

    def measure(kind: str, search: SearchSpec) -> dict[str, Any]:
        # Every runtime and search on the same images, iterations and GEMM rate: the ratios
        # compare like with like.
        return bench_runtime(
            args.model,
            kind,
            images,
            args.iterations,
            args.warmup,
            cfg.model.threads,
            rate,
            flops_per_tile,
            search,
            progress,
        )

    report = measure(runtime, base)
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
        r = measure(other, base)
        r["throughput_ratio"] = round(report["throughput_fps"] / r["throughput_fps"], 2)
        compared.append(r)
    if compared:
        report["compare"] = compared
    searches = []
    for method in args.compare_search:
        if method == base.method:
            continue
        r = measure(runtime, dataclasses.replace(base, method=method))
        r["throughput_ratio"] = round(report["throughput_fps"] / r["throughput_fps"], 2)
        searches.append(r)
    if searches:
        report["compare_search"] = searches
    print_table(TABLE_HEADER, _table([report, *compared, *searches]), sys.stdout)
    print(
        f"bank {report['bank_size']:,} rows; GEMM {rate:.0f} GFLOP/s; kNN/bb = kNN stage over "
        "backbone stage (medians); p95/p50 same image = each timing over its own image's median; "
        "recall@1 against exact search; distances computed per frame"
    )
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0
