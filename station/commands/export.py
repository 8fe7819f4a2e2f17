"""`station export`: build and store a runtime's engine for a model (TensorRT on NVIDIA)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from station.core.errors import StationError
from station.core.imageio import read_image
from station.model.artifact import ENGINES, load_artifact
from station.model.patchcore import training_images
from station.model.preprocess import prepare

CALIBRATION_IMAGES = 64  # TensorRT's INT8 entropy calibration needs a few hundred tiles at most


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="build a runtime engine for a model (TensorRT FP16, or INT8 on good parts)",
        description="The ONNX feature extractor is part of every model folder. This builds the "
        "TensorRT engine from it, cached in MODEL/engines keyed by ONNX hash, TensorRT version "
        "and GPU, and reports the build time.",
    )
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--runtime", choices=["onnx", "tensorrt"], default="tensorrt")
    p.add_argument("--int8", action="store_true", help="INT8, calibrated on --data good images")
    p.add_argument("--data", type=Path, help="good images for INT8 calibration (train/good)")
    p.add_argument("--json", type=Path)
    p.add_argument("--config", type=Path, help="TOML config (default configs/default.toml)")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (its key seals the engine)")
    p.set_defaults(func=run)


def _calibration(model: Path, data: Path) -> Iterator[np.ndarray]:
    pre = load_artifact(model).manifest.preprocessing
    for path in training_images(data)[:CALIBRATION_IMAGES]:
        yield prepare(read_image(path), pre).batch


def run(args: argparse.Namespace) -> int:
    artifact = load_artifact(args.model)
    if args.runtime == "onnx":
        print(f"{artifact.onnx_path}: ONNX extractor already in the model (nothing to build)")
        return 0
    if args.int8 and args.data is None:
        raise StationError("--int8 needs --data with the product's good images for calibration")
    from station.config import data_dir, load_config
    from station.model.signing import EngineSealer, Trust, station_signer, trust_folder
    from station.runtime.tensorrt_runtime import build_engine

    # Sealed with this station's key: the line reuses an engine only with a seal it trusts
    # (the model's signature covers its ONNX file, not an engine built from it).
    cfg = load_config(args.config)
    root = data_dir(cfg, args.data_dir)
    signer = station_signer(root, cfg.model.signing_key, cfg.model.trust_dir)
    seal = EngineSealer(signer, Trust.load(trust_folder(root, cfg.model.trust_dir)))
    build = build_engine(
        artifact.onnx_path,
        precision="int8" if args.int8 else "fp16",
        calibration=_calibration(args.model, args.data) if args.int8 else None,
        calibration_id=f"{artifact.manifest.product}/{artifact.version}" if args.int8 else "",
        cache_dir=artifact.path / ENGINES,
        seal=seal,
    )
    summary = {
        "engine": str(build.path),
        "build_seconds": round(build.seconds, 2),
        "from_cache": build.from_cache,
        "precision": "int8" if args.int8 else "fp16",
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0
