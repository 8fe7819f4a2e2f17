"""model.exposure = "choose": fit gives each part its own gain only where the training images'
brightness varies (real magnetic tiles shot at six exposures), keeps it fixed where good parts
are lit alike (real deeppcb boards, the demo product), and seals what it chose in the version."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from station.config import ModelConfig
from station.core.imageio import list_images
from station.model.preprocess import EXPOSURE_SPREAD, Preprocessing, choose_exposure
from station.model.training import fit, survey_images

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _good(name: str, n: int) -> list[Path]:
    folder = SHARED / name / "train" / "good"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (the shared real-image sets live beside the repository)")
    files = list_images(folder)
    return files[:: max(1, len(files) // n)][:n]


def _pre(exposure: str) -> Preprocessing:
    return Preprocessing(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), exposure=exposure)


def _survey(images: list[Path], exposure: str) -> tuple[str, str]:
    pre, _, _, why = survey_images(images, _pre(exposure), lambda *_: None)
    return pre.exposure, why


def test_parts_shot_at_varying_exposure_get_a_gain_and_steady_ones_stay_fixed(
    demo_product: Path,
) -> None:
    tiles = _good("magnetic_tile", 24)
    assert len({p.name.split("_")[0] for p in tiles}) >= 4  # several of the six exposures
    mode, why = _survey(tiles, "choose")
    assert mode == "auto" and why.startswith("auto (per-image gain)"), why
    mode, why = _survey(_good("deeppcb", 24), "choose")
    assert mode == "fixed" and f"at most {EXPOSURE_SPREAD}" in why, why
    mode, why = _survey(list_images(demo_product / "train" / "good"), "choose")
    assert mode == "fixed", why
    # An explicit setting is kept whatever the set, and says so.
    assert _survey(tiles, "fixed") == ("fixed", "fixed (model.exposure)")
    assert _survey(_good("deeppcb", 6), "auto") == ("auto", "auto (model.exposure)")


def test_the_spread_rule_at_its_edges() -> None:
    assert choose_exposure([100.0] * 19 + [500.0])[0] == "fixed"  # one odd part is not a spread
    assert choose_exposure([100.0, 100.0 * EXPOSURE_SPREAD])[0] == "fixed"
    assert choose_exposure([100.0, 130.0] * 5)[0] == "auto"
    assert choose_exposure([0.0, 0.0, 50.0])[0] == "auto"  # black parts: any gain is a spread
    assert choose_exposure([80.0])[1] == "fixed: 1 training image, the spread needs 2"


def test_the_choice_is_sealed_in_the_version_and_printed_by_fit(tmp_path: Path) -> None:
    cfg = dataclasses.replace(ModelConfig(), image_size=128, coreset_ratio=0.05)
    report = fit(_good("magnetic_tile", 12), cfg, tmp_path / "m", progress=False)
    assert report.exposure.startswith("auto (per-image gain)")
    manifest = json.loads((report.artifact / "manifest.json").read_text())
    assert manifest["preprocessing"]["exposure"] == "auto"


def test_a_manifest_exposure_other_than_fixed_or_auto_is_refused() -> None:
    d = _pre("fixed").to_dict()
    d["exposure"] = "choose"  # fit resolves it: a version never holds it
    with pytest.raises(ValueError, match=r"exposure 'choose' is not 'fixed' or 'auto'"):
        Preprocessing.from_dict(d)
