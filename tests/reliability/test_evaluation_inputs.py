"""`station evaluate` on odd test sets: a miss-rate target out of range, defective parts whose
mask is missing or empty (real demo images and the session's real demo model)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from station.cli import main
from station.core.errors import StationError
from station.inspect.evaluation import evaluate


def _view(demo_product: Path, dst: Path) -> Path:
    """The demo product's test split as symlinks; its ground truth copied (the test edits it)."""
    for folder in sorted((demo_product / "test").iterdir()):
        (dst / "test" / folder.name).mkdir(parents=True)
        for f in sorted(folder.iterdir()):
            os.symlink(f, dst / "test" / folder.name / f.name)
    for folder in sorted((demo_product / "ground_truth").iterdir()):
        (dst / "ground_truth" / folder.name).mkdir(parents=True)
        for f in sorted(folder.iterdir()):
            (dst / "ground_truth" / folder.name / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize("target", [1.5, -0.1, 1.0])
def test_a_target_out_of_range_is_named(demo_patchcore, demo_product: Path, target: float):
    with pytest.raises(StationError, match=r"target miss rate .* must be in \[0, 1\)"):
        evaluate(demo_patchcore, demo_product, target)


def test_the_command_names_a_bad_target(
    demo_model: Path, demo_product: Path, capsys: pytest.CaptureFixture[str]
):
    code = main(
        ["evaluate", "--model", str(demo_model), "--data", str(demo_product),
         "--target-fnr", "1.5", "--quiet"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0
    assert "--target-fnr 1.5 must be in [0, 1)" in err and "IndexError" not in err


def test_defects_without_a_mask_are_reported_and_kept_out_of_pixel_metrics(
    demo_patchcore, demo_product: Path, tmp_path: Path
):
    full = evaluate(demo_patchcore, demo_product)
    assert full.unmasked_defects == []
    view = _view(demo_product, tmp_path / "set")
    masks = sorted((view / "ground_truth").rglob("*_mask.png"))
    gone, emptied = masks[0], masks[-1]
    gone.unlink()
    shape = cv2.imread(str(emptied), cv2.IMREAD_GRAYSCALE).shape
    cv2.imwrite(str(emptied), np.zeros(shape, np.uint8))
    odd = evaluate(demo_patchcore, view)
    stems = {Path(p).stem for p in odd.unmasked_defects}
    assert stems == {gone.stem.removesuffix("_mask"), emptied.stem.removesuffix("_mask")}
    # The image metrics still count both parts as defective ...
    assert (odd.n_good, odd.n_defect) == (full.n_good, full.n_defect)
    assert odd.image_auroc == pytest.approx(full.image_auroc)
    # ... and the pixel metrics are those of the set without them, not of a set where they are
    # good parts (whose whole anomalous area would count as false alarms).
    assert odd.pixel_auroc_good == pytest.approx(
        _without(demo_patchcore, demo_product, tmp_path / "without", {gone, emptied}, view)
    )


def _without(model, demo_product: Path, dst: Path, drop: set[Path], view: Path) -> float:
    rel = {p.relative_to(view / "ground_truth") for p in drop}
    out = _view(demo_product, dst)
    for r in rel:
        stem = r.name.removesuffix("_mask.png")
        for f in (out / "test" / r.parent).glob(f"{stem}.*"):
            f.unlink()
        (out / "ground_truth" / r).unlink()
    return evaluate(model, out).pixel_auroc_good
