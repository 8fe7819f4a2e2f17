"""`station fit --auto` chooses its recipe from the good images alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from station.cli import main
from station.core.imageio import read_image
from station.model.synthetic import KINDS, defects_for, inject


def test_synthetic_defects_are_seeded_and_keep_the_part(demo_product: Path) -> None:
    good = read_image(sorted((demo_product / "train" / "good").iterdir())[0])
    for kind in KINDS:
        a, b = inject(good, kind, 7), inject(good, kind, 7)
        assert np.array_equal(a.image, b.image) and a.kind == kind
        assert a.image.shape == good.shape and a.image.dtype == good.dtype
        assert a.mask.any(), kind
        changed = np.abs(a.image.astype(int) - good.astype(int))
        if changed.ndim == 3:
            changed = changed.max(axis=2)
        assert changed[a.mask > 0].mean() > changed[a.mask == 0].mean(), kind
    assert not np.array_equal(inject(good, "spot", 1).image, inject(good, "spot", 2).image)
    with pytest.raises(ValueError, match="unknown synthetic defect 'dent'"):
        inject(good, "dent", 0)


def test_synthetic_defects_score_above_the_good_parts(demo_patchcore, demo_product: Path) -> None:
    """The demo model (fitted on good parts only) sees most synthetic defects: they are a
    usable stand-in for defects when no real ones exist yet."""
    goods = [read_image(p) for p in sorted((demo_product / "test" / "good").iterdir())[:6]]
    good_s = [demo_patchcore.predict(g).score for g in goods]
    bad_s = [demo_patchcore.predict(d.image).score for g in goods[:3] for d in defects_for(g, 5, 1)]
    assert np.median(bad_s) > max(good_s)


def test_auto_never_reads_the_test_folder(demo_product: Path, tmp_path: Path) -> None:
    """Only train/good exists: the test images and their labels cannot have been read."""
    data = tmp_path / "only_good"
    shutil.copytree(demo_product / "train" / "good", data / "train" / "good")
    assert not (data / "test").exists() and not (data / "ground_truth").exists()
    summary = tmp_path / "fit.json"
    out = tmp_path / "model"
    args = ["fit", "--auto", "--data", str(data), "--out", str(out), "--json", str(summary)]
    assert main([*args, "--quiet"]) == 0
    auto = json.loads(summary.read_text())["auto"]
    names = [c["name"] for c in auto["candidates"]]
    assert names == ["default", "native", "context"] and auto["chosen"] in names
    assert auto["n_judge"] >= 3 and auto["n_defects"] == 5 * auto["n_judge"]
    for c in auto["candidates"]:
        assert 0.0 <= c["fpr"] <= 1.0 and 0.5 <= c["auroc"] <= 1.0 and c["p95_ms"] > 0
        # judged without the discriminator, which learns the judge's own synthetic defects
        assert c["discriminator"].startswith("off"), c["discriminator"]
    assert json.loads(summary.read_text())["discriminator"].startswith("on")
    chosen = next(c for c in auto["candidates"] if c["name"] == auto["chosen"])
    manifest = json.loads((out / "manifest.json").read_text())
    for key, value in chosen["changes"].items():  # the model is fitted with the chosen recipe
        where = manifest["preprocessing"] if key in manifest["preprocessing"] else manifest
        if key in where:
            assert where[key] == value, key
