"""Evaluate a model on an MVTec-layout test set: detection, localisation, threshold for a target."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from station.core.errors import StationError
from station.core.imageio import list_images, read_image
from station.core.result import Verdict
from station.inspect.decision import ThresholdChoice, threshold_for_fnr, verdict
from station.inspect.metrics import auroc
from station.inspect.pixel_metrics import PixelMetrics
from station.model.patchcore import PatchCore


@dataclass(frozen=True)
class TestItem:
    path: Path
    defect_type: str  # "good" or the defect folder name
    mask: Path | None


def test_items(data: Path) -> list[TestItem]:
    """test/<type>/* with ground_truth/<type>/<stem>_mask.png (absent for good parts)."""
    test = Path(data) / "test"
    if not test.is_dir():
        raise StationError(f"{data}: no test/ folder (MVTec layout: test/good, test/<defect>)")
    items: list[TestItem] = []
    for folder in sorted(p for p in test.iterdir() if p.is_dir()):
        for img in list_images(folder):
            mask = None
            if folder.name != "good":
                m = Path(data) / "ground_truth" / folder.name / f"{img.stem}_mask.png"
                mask = m if m.is_file() else None
            items.append(TestItem(img, folder.name, mask))
    if not items:
        raise StationError(f"{test}: no test images")
    return items


@dataclass(frozen=True)
class EvaluationReport:
    """`station evaluate` output; the JSON keys are relied on by later tooling."""

    image_auroc: float
    pixel_auroc: float
    aupro: float
    per_type: dict[str, float]
    threshold: float
    target_fnr: float
    fnr: float
    fpr: float
    n_good: int
    n_defect: int
    confusion: dict[str, int]
    model: str
    data: str
    pixel_auroc_good: float = float("nan")  # defect pixels against good parts' pixels only
    # Per defect type: pixel AUROC over that type's images and the good ones, and the type's share
    # of all defect pixels. Pooled pixel AUROC is weighted by area: one large, faint type (e.g.
    # magnetic_tile 'uneven', 71 % of its defect pixels) can set it on its own.
    per_type_pixel: dict[str, float] = field(default_factory=dict)
    defect_pixel_share: dict[str, float] = field(default_factory=dict)
    # Defective images without a mask, or with an empty one: in the image metrics, kept out of
    # the pixel metrics (counted there they would be defect-free parts full of "false" alarms).
    unmasked_defects: list[str] = field(default_factory=list)
    # What the line does with the model as it is: its stored limit on this set.
    stored_threshold: float = float("nan")
    stored_fnr: float = float("nan")
    stored_fpr: float = float("nan")
    # Every test image, in test-folder order: {"file", "type", "score"}; the highest good
    # scores and the lowest defect scores are the parts that set the limit.
    scores: list[dict[str, Any]] = field(default_factory=list)
    # Pixel metrics come from histograms (bounded memory): the largest possible difference of
    # the pixel AUROC from the exact value over every pixel.
    pixel_auroc_error: float = float("nan")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _read_mask(item: TestItem, shape: tuple[int, int]) -> np.ndarray:
    if item.mask is None:
        return np.zeros(shape, np.uint8)
    mask = read_image(item.mask)
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if mask.shape != shape:
        raise StationError(f"{item.mask}: mask is {mask.shape[::-1]}, image is {shape[::-1]}")
    return (mask > 0).astype(np.uint8)


def evaluate(
    model: PatchCore,
    data: Path,
    target_fnr: float = 0.005,
    progress: Callable[[int], None] | None = None,
) -> EvaluationReport:
    """Score every test image and compute the metrics and the FNR-target threshold.

    Each anomaly map is folded into the pixel metrics as it is made and then dropped, so
    memory does not grow with the set (station.inspect.pixel_metrics)."""
    if not 0.0 <= target_fnr < 1.0:
        raise StationError(f"target miss rate {target_fnr:g} must be in [0, 1), e.g. 0.005")
    items = test_items(data)
    scores, kinds_all = [], []
    pixels = PixelMetrics()  # images with a usable ground truth only
    unmasked = []
    for item in items:
        image = read_image(item.path)
        pred = model.predict(image)
        del image
        scores.append(float(pred.score))
        kinds_all.append(item.defect_type)
        mask = _read_mask(item, pred.anomaly_map.shape)
        if item.defect_type != "good" and not mask.any():
            unmasked.append(str(item.path))
        else:
            pixels.add(pred.anomaly_map, mask, item.defect_type)
        del pred, mask
        if progress:
            progress(1)
    s = np.asarray(scores)
    k = np.asarray(kinds_all)
    is_defect = k != "good"
    per_type = {
        t: auroc(
            np.r_[s[k == "good"], s[k == t]],
            np.r_[np.zeros((k == "good").sum()), np.ones((k == t).sum())],
        )
        for t in sorted(set(kinds_all) - {"good"})
    }
    per_type_pixel, share = pixels.per_type()
    if is_defect.any():
        choice = threshold_for_fnr(s[~is_defect], s[is_defect], target_fnr)
    else:
        choice = ThresholdChoice(float("nan"), target_fnr, float("nan"), float("nan"), 0, 0, 0, 0)
    stored = float(model.threshold)
    rejected = np.array([verdict(x, stored) == Verdict.NOK for x in s], bool)
    pixel_auc, pixel_err = pixels.pixel_auroc()
    return EvaluationReport(
        image_auroc=auroc(s, is_defect),
        pixel_auroc=pixel_auc,
        aupro=pixels.aupro(),
        per_type=per_type,
        threshold=choice.threshold,
        target_fnr=target_fnr,
        fnr=choice.fnr,
        fpr=choice.fpr,
        n_good=int((~is_defect).sum()),
        n_defect=int(is_defect.sum()),
        confusion={"tp": choice.tp, "fn": choice.fn, "fp": choice.fp, "tn": choice.tn},
        model=str(model.artifact.path),
        data=str(data),
        pixel_auroc_good=pixels.pixel_auroc_good()[0],
        per_type_pixel=per_type_pixel,
        defect_pixel_share=share,
        unmasked_defects=unmasked,
        stored_threshold=stored,
        stored_fnr=_share(~rejected[is_defect]),
        stored_fpr=_share(rejected[~is_defect]),
        scores=[
            {"file": str(it.path), "type": it.defect_type, "score": round(sc, 6)}
            for it, sc in zip(items, scores, strict=True)
        ],
        pixel_auroc_error=pixel_err,
    )


def _share(flags: np.ndarray) -> float:
    return float(flags.mean()) if flags.size else float("nan")
