"""The linear discriminator (station.model.discriminator) on the real demo product and backbone:
trained at fit on synthetic defects in good parts only, deterministic with its seed, sealed in
the version, and scored by the line exactly as the fit calibrated it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from station.config import ModelConfig
from station.core.errors import ModelError
from station.core.imageio import read_image
from station.inspect.metrics import auroc
from station.model import discriminator_fit
from station.model.artifact import ModelArtifact, format_needed, load_artifact
from station.model.discriminator import Discriminator, combined_offsets
from station.model.patchcore import PatchCore, training_images, valid_patch_features
from station.model.preprocess import patch_cover, prepare
from station.model.synthetic import KINDS, inject
from station.model.training import fit, split_calibration
from station.runtime.onnx_runtime import OnnxRuntime

HOLDOUT = 0.3


@pytest.fixture(scope="module")
def fitted(
    demo_product: Path, demo_model_config: ModelConfig, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The demo parts fitted with the discriminator (the default) and without it; without
    per-position offsets, whose leave-one-out calibration would make the held-back parts score
    differently at the line (station.model.position)."""
    root = tmp_path_factory.mktemp("disc")
    images = training_images(demo_product)
    out = {}
    for name, weight in (("on", demo_model_config.discriminator_weight), ("off", 0.0)):
        cfg = dataclasses.replace(
            demo_model_config, discriminator_weight=weight, position_norm="off"
        )
        report = fit(images, cfg, root / name, progress=False, holdout=HOLDOUT)
        out[name] = report.artifact
        (root / f"{name}.json").write_text(
            json.dumps({"why": report.discriminator, "held": report.calibration})
        )
    return out


def _train(artifact: ModelArtifact, images: list[Path], seed: int) -> Discriminator:
    """The discriminator trained on `images` with `seed`."""
    pre = artifact.manifest.preprocessing
    rt = OnnxRuntime(artifact.onnx_model, threads=1)
    try:
        own = []
        for path in images:
            p = prepare(read_image(path), pre)
            own.append(valid_patch_features(rt.features(p.batch), p))
        t = discriminator_fit.train(rt, images, own, pre, seed)
    finally:
        rt.close()
    return t.net


def test_training_is_deterministic_with_its_seed(demo_model: Path, demo_product: Path) -> None:
    """The same images and seed give the same weights, bit for bit; another seed (other
    defects, another sample of good patches, other mini-batches) gives other weights."""
    artifact = load_artifact(demo_model)
    images = training_images(demo_product)[:12]
    a = np.array(_train(artifact, images, seed=7).to_list())
    b = np.array(_train(artifact, images, seed=7).to_list())
    c = np.array(_train(artifact, images, seed=8).to_list())
    c_dim, hidden = artifact.manifest.feature_dim, discriminator_fit.HIDDEN
    assert a.shape == (c_dim * hidden + 2 * hidden + 1,)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_it_tells_synthetic_defect_patches_from_good_ones_on_parts_it_never_saw(
    demo_model: Path, demo_product: Path
) -> None:
    """Trained on 20 parts, it ranks the defect patches of new synthetic defects in 10 other
    parts above their good patches (patch AUROC), for every kind of defect together."""
    artifact = load_artifact(demo_model)
    images = training_images(demo_product)
    disc = _train(artifact, images[:20], seed=0)
    pre = artifact.manifest.preprocessing
    rt = OnnxRuntime(artifact.onnx_model, threads=1)
    logits, labels = [], []
    try:
        for j, path in enumerate(images[20:30]):
            d = inject(read_image(path), KINDS[j % len(KINDS)], 500 + j)
            p = prepare(d.image, pre)
            cover = patch_cover(d.mask, p)
            keep = (cover >= discriminator_fit.COVER) | (cover == 0)
            logits.append(disc.shift(valid_patch_features(rt.features(p.batch), p))[keep])
            labels.append(cover[keep] >= discriminator_fit.COVER)
    finally:
        rt.close()
    assert auroc(np.concatenate(logits), np.concatenate(labels)) > 0.8


def test_the_fit_seals_it_and_the_line_scores_as_the_fit_calibrated(
    fitted: dict[str, Path], demo_product: Path, demo_model_config: ModelConfig
) -> None:
    """With the default weight the version holds the discriminator's layers (format 5, so
    an older station refuses it rather than score without it); the held-back parts score at
    the line as the fit recorded them; with weight 0 there is none (format 3 or 4)."""
    on = load_artifact(fitted["on"]).manifest
    off = load_artifact(fitted["off"]).manifest
    disc = Discriminator.stored(on.discriminator, on.feature_dim)
    assert disc is not None and disc.w1.shape == (on.feature_dim, discriminator_fit.HIDDEN)
    assert disc.to_list() == pytest.approx(on.discriminator) and format_needed(on) == 5
    assert off.discriminator == [] and format_needed(off) < 5
    why = json.loads((fitted["on"].parent / "on.json").read_text())["why"]
    assert why.startswith(f"on (weight {demo_model_config.discriminator_weight:g})")
    off_why = json.loads((fitted["on"].parent / "off.json").read_text())["why"]
    assert off_why == "off (model.discriminator_weight = 0)"
    # The held-back parts: scored by PatchCore.predict as the fit scored them for the limit.
    images = training_images(demo_product)
    _, cal_idx = split_calibration(len(images), demo_model_config.seed, HOLDOUT)
    held = json.loads((fitted["on"].parent / "on.json").read_text())["held"]
    model = PatchCore.load(fitted["on"], "onnx")
    try:
        assert model.discriminator is not None
        for i, (name, score) in zip(cal_idx, held, strict=True):
            assert Path(images[int(i)]).name == name
            assert model.predict(read_image(images[int(i)])).score == pytest.approx(score, abs=1e-4)
    finally:
        model.close()


def test_a_manifest_whose_discriminator_does_not_fit_the_features_is_refused(
    fitted: dict[str, Path],
) -> None:
    """The weights must match the feature channels and be finite: a hand-edited or corrupt
    list is a clear ModelError, not a shape error at the first part."""
    m = load_artifact(fitted["on"]).manifest
    n = len(m.discriminator) - 1
    with pytest.raises(ModelError, match=rf"discriminator has {n} numbers"):
        Discriminator.stored(m.discriminator[:-1], m.feature_dim)
    with pytest.raises(ModelError, match=rf"{m.feature_dim + 3} per hidden unit"):
        Discriminator.stored(m.discriminator, m.feature_dim + 1)
    with pytest.raises(ModelError, match="not finite"):
        Discriminator.stored([*m.discriminator[:-1], float("nan")], m.feature_dim)
    assert Discriminator.stored([], m.feature_dim) is None


def test_its_shift_joins_the_per_position_offsets() -> None:
    """The search and the scores subtract one offset per patch: the position's less the
    discriminator's shift, or the negative shift alone, or nothing."""
    # One hidden unit per channel, passing it through (ReLU cuts the negative one).
    disc = Discriminator(
        np.eye(2, dtype=np.float32), np.zeros(2, np.float32), np.array([1.0, -2.0], np.float32), 0.5
    )
    rows = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    assert np.allclose(disc.shift(rows), [1.5, -1.5])
    assert np.allclose(disc.shift(np.array([[-1.0, -1.0]], np.float32)), [0.5])
    assert np.allclose(combined_offsets(disc, rows, None), [-1.5, 1.5])
    pos = np.array([0.25, 0.5], np.float32)
    assert np.allclose(combined_offsets(disc, rows, pos), [-1.25, 2.0])
    assert combined_offsets(None, rows, pos) is pos
    assert combined_offsets(None, rows, None) is None
