"""Training: fit PatchCore on good parts into a new, sealed model version.

Kept apart from inference (`station.model.patchcore`): the station runs models without ever
importing this module, and a model travels as its artifact, not as training code.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from station.config import ModelConfig
from station.core.errors import ModelError
from station.core.imageio import read_image
from station.model.artifact import Manifest, creator, now_iso, write_artifact
from station.model.backbones import LoadedBackbone, load_backbone
from station.model.extractor import FeatureExtractor
from station.model.memory_bank import MemoryBank, hierarchical_coreset
from station.model.patchcore import extract_features, score_features, valid_patch_features
from station.model.preprocess import Preprocessing, pixel_max_for, prepare

CALIBRATION_QUANTILE = 0.99
EXPORT_OPSET = 17


def build_extractor(cfg: ModelConfig) -> tuple[FeatureExtractor, Preprocessing, LoadedBackbone]:
    """The torch extractor for a config, its preprocessing (pixel_max filled in later)."""
    bb = load_backbone(cfg.backbone, cfg.weights or None)
    for name in cfg.layers:
        if name not in bb.channels:
            raise ModelError(
                f"model.layers: '{name}' is not a layer of {cfg.backbone}; "
                f"choose from {', '.join(bb.channels)}"
            )
    fx = FeatureExtractor(
        bb.module, cfg.layers, bb.channels, cfg.aggregation, cfg.feature_dim, cfg.intensity_weight
    )
    pre = Preprocessing(
        image_size=cfg.image_size,
        mean=bb.spec.mean,
        std=bb.spec.std,
        tile_aspect=2.0 if cfg.tile else 0.0,
        scale=cfg.scale,
        exposure=cfg.exposure,
        max_tiles=cfg.max_tiles,
    )
    return fx.eval(), pre, bb


def export_onnx(fx: FeatureExtractor, image_size: int, out: Path) -> Path:
    """Export the extractor with a dynamic batch (tiles of a long part run as one batch)."""
    import warnings

    dummy = torch.zeros(1, 3, image_size, image_size)
    with warnings.catch_warnings():
        # The tracer warns that shapes become constants: intended, the input size is fixed.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            fx,
            (dummy,),
            str(out),
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": {0: "n"}, "features": {0: "n"}},
            opset_version=EXPORT_OPSET,
            dynamo=False,
        )
    return out


@dataclass(frozen=True)
class FitReport:
    """What `station fit` prints."""

    artifact: Path
    n_train: int
    n_calibration: int
    n_patches: int
    bank_size: int
    fit_seconds: float
    threshold: float


def split_calibration(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out about 10 % of the good images (3..50) to calibrate threshold and drift baseline.

    The bank must not contain them: a part scored against its own patches looks perfect.
    """
    n_cal = 0 if n < 6 else min(50, max(3, round(0.1 * n)))
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_cal:]), np.sort(order[:n_cal])


def fit(
    images: Sequence[Path],
    cfg: ModelConfig,
    out: Path,
    *,
    product: str | None = None,
    progress: bool = True,
) -> FitReport:
    """Fit PatchCore on good images and write a versioned artifact to `out`."""
    from tqdm import tqdm

    t_start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    fx, pre, bb = build_extractor(cfg)
    arrays = [read_image(p) for p in images]
    pixel_max = pixel_max_for(max(float(a.max()) for a in arrays))
    color = any(a.ndim == 3 for a in arrays)
    pre = dataclasses.replace(pre, pixel_max=pixel_max, color=color)
    prepared = [prepare(a, pre) for a in arrays]
    bank_idx, cal_idx = split_calibration(len(images), cfg.seed)

    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = export_onnx(fx, pre.image_size, Path(tmp) / "fx.onnx")
        # Fit with ONNX Runtime: faster than eager torch, and the bank then holds exactly the
        # numbers the station's default runtime produces.
        from station.runtime.onnx_runtime import OnnxRuntime

        rt = OnnxRuntime(onnx_file, threads=cfg.threads)
        bar = tqdm(total=len(prepared), desc="features", unit="img", disable=not progress)
        feats = extract_features(rt, prepared, progress=bar.update)
        bar.close()
        rows = np.concatenate([valid_patch_features(feats[i], prepared[i]) for i in bank_idx])
        k = min(cfg.max_bank, max(1, math.ceil(cfg.coreset_ratio * len(rows))))
        bar = tqdm(total=1, desc="coreset", disable=not progress)

        def _coreset_progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        sel = hierarchical_coreset(
            rows,
            k,
            projection=cfg.coreset_projection,
            seed=cfg.seed,
            progress=_coreset_progress,
        )
        bar.close()
        bank = rows[sel]
        memory = MemoryBank(bank, threads=cfg.threads)
        cal_scores = [
            score_features(memory, feats[i], prepared[i], cfg.score_top, cfg.reweight_neighbors)
            for i in cal_idx
        ]
        threshold = (
            float(np.quantile(cal_scores, CALIBRATION_QUANTILE)) if cal_scores else float("inf")
        )
        fit_seconds = time.perf_counter() - t_start
        out = Path(out)
        manifest = Manifest(
            product=product or cfg.product,
            version=out.name,
            backbone=cfg.backbone,
            weights_file=bb.weights_path.name,
            weights_sha256=bb.weights_sha256,
            preprocessing=pre,
            layers=list(cfg.layers),
            aggregation=cfg.aggregation,
            feature_dim=fx.out_channels,
            intensity_weight=cfg.intensity_weight,
            bank_size=int(bank.shape[0]),
            coreset_ratio=cfg.coreset_ratio,
            reweight_neighbors=cfg.reweight_neighbors,
            score_top=cfg.score_top,
            blur_sigma=cfg.blur_sigma,
            threshold=threshold,
            threshold_source=f"calibration q{CALIBRATION_QUANTILE} of {len(cal_scores)} good parts",
            calibration_scores=[round(float(s), 6) for s in cal_scores],
            created_at=now_iso(),
            created_by=creator(),
            n_train=len(bank_idx),
            fit_seconds=round(fit_seconds, 3),
        )
        write_artifact(out, manifest, bank, onnx_file)
    return FitReport(
        out, len(bank_idx), len(cal_idx), len(rows), int(bank.shape[0]), fit_seconds, threshold
    )


__all__ = ["FitReport", "build_extractor", "export_onnx", "fit", "split_calibration"]
