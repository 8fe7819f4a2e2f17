"""Per-position normalisation (station.model.position) on the real demo product and backbone:
chosen from the training images alone, sealed in the version, applied only to frames it fits."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from station.config import ModelConfig
from station.core.errors import ModelError
from station.core.imageio import read_image
from station.inspect import evaluation
from station.inspect.metrics import auroc
from station.model import position
from station.model.patchcore import PatchCore, patch_distances, training_images
from station.model.preprocess import prepare, valid_patch_count
from station.model.training import fit, update_bank

HOLDOUT = 0.3  # 12 of the fixture's 40 parts held back: enough for the means (position.MIN_PARTS)


@pytest.fixture(scope="module")
def fitted(
    demo_product: Path, demo_model_config: ModelConfig, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The same parts fitted twice, with the normalisation chosen (auto) and without it; no
    discriminator, whose scale is set on the (normalised or plain) distances, so that the two
    differ only by the offsets."""
    root = tmp_path_factory.mktemp("position")
    images = training_images(demo_product)
    out = {}
    for mode in ("auto", "off"):
        cfg = dataclasses.replace(demo_model_config, position_norm=mode, discriminator_weight=0.0)
        report = fit(images, cfg, root / mode, progress=False, holdout=HOLDOUT, score_training=True)
        out[mode] = report.artifact
        (root / f"{mode}-scores.json").write_text(
            json.dumps({"held": report.calibration, "training": report.training_scores})
        )
    return out


def _test_scores(model_dir: Path, data: Path) -> tuple[np.ndarray, np.ndarray]:
    model = PatchCore.load(model_dir, "onnx")
    try:
        items = evaluation.test_items(data)
        scores = np.array([model.predict(read_image(it.path)).score for it in items])
    finally:
        model.close()
    return scores, np.array([it.defect_type != "good" for it in items])


def test_fixtured_parts_are_normalised_by_position_and_the_offsets_are_sealed(
    fitted: dict[str, Path], demo_product: Path, demo_model_config: ModelConfig
):
    m = json.loads((fitted["auto"] / "manifest.json").read_text())
    h, w = read_image(training_images(demo_product)[0]).shape[:2]
    pre = PatchCore.load(fitted["auto"], "onnx")
    try:
        n = valid_patch_count(h, w, pre.pre)
    finally:
        pre.close()
    assert m["position_hw"] == [h, w]
    offsets = np.array(m["position_offsets"])
    assert offsets.size == n
    # The plate's marking is harder to match than bare metal: locations really differ.
    assert offsets.std() > 0.1 * offsets.mean()
    assert json.loads((fitted["off"] / "manifest.json").read_text())["position_offsets"] == []


def test_normalised_scores_separate_the_demo_defects_better(
    fitted: dict[str, Path], demo_product: Path
):
    s_on, bad = _test_scores(fitted["auto"], demo_product)
    s_off, _ = _test_scores(fitted["off"], demo_product)
    assert auroc(s_on, bad) >= auroc(s_off, bad)

    def caught_above_every_good(s: np.ndarray) -> int:
        return int((s[bad] > s[~bad].max()).sum())

    assert caught_above_every_good(s_on) > caught_above_every_good(s_off)


def test_a_frame_of_another_size_keeps_plain_distances(fitted: dict[str, Path], demo_product: Path):
    """The offsets belong to the trained size; a frame of another size (the line alarms it) is
    scored on plain distances, as by a model without them, never with misplaced offsets."""
    import cv2

    image = read_image(training_images(demo_product)[0])
    other = cv2.resize(image, (image.shape[1] + 64, image.shape[0]))
    on = PatchCore.load(fitted["auto"], "onnx")
    try:
        assert on.offsets_for(other.shape[:2], 10**6) is None
        n = valid_patch_count(image.shape[0], image.shape[1], on.pre)
        assert on.offsets_for(image.shape[:2], n) is on.offsets
        score_other = on.predict(other).score
    finally:
        on.close()
    off = PatchCore.load(fitted["off"], "onnx")
    try:
        # The two fits hold the same bank (same parts, seed and coreset): equal plain scores.
        assert off.predict(other).score == pytest.approx(score_other, rel=1e-5)
    finally:
        off.close()


def test_mixed_sizes_and_few_parts_keep_plain_distances(
    demo_product: Path, demo_model_config: ModelConfig, tmp_path: Path
):
    import cv2

    images = training_images(demo_product)[:24]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i, p in enumerate(images):
        a = read_image(p)
        if i % 2:
            a = cv2.resize(a, (a.shape[1] + 32, a.shape[0] + 16))
        cv2.imwrite(str(mixed / f"{i:03d}.png"), a)
    files = training_images(mixed)
    report = fit(files, demo_model_config, tmp_path / "m1", progress=False, holdout=0.5)
    assert report.position_norm.startswith("off: the training images differ in size")
    on = dataclasses.replace(demo_model_config, position_norm="on")
    with pytest.raises(ModelError, match=r"model.position_norm = 'on' needs training images"):
        fit(files, on, tmp_path / "m2", progress=False, holdout=0.5)
    assert not (tmp_path / "m2").exists()
    few = fit(images, demo_model_config, tmp_path / "m3", progress=False)  # 10 %: 3 parts
    need = f"{position.MIN_PARTS} needed for the means"
    assert few.position_norm == f"off: 3 held-back good parts, {need}"


def test_leave_one_out_offsets_are_the_other_parts_means():
    rng = np.random.default_rng(0)
    d = [rng.uniform(0, 5, 7).astype(np.float32) for _ in range(4)]
    loo = position.leave_one_out(d)
    for i in range(4):
        others = np.mean([d[j] for j in range(4) if j != i], axis=0)
        np.testing.assert_allclose(loo[i], others, rtol=1e-6)
    np.testing.assert_allclose(position.offsets(d), np.mean(d, axis=0), rtol=1e-6)
    with pytest.raises(ModelError, match="one size"):
        position.offsets([np.zeros(3), np.zeros(4)])


def test_training_scores_share_the_held_back_parts_scale(fitted: dict[str, Path]):
    """The setup page plots training images' scores (each against the bank without its own
    patches) beside the held-back parts' and the limit: with offsets both are normalised."""
    for mode in ("auto", "off"):
        d = json.loads((fitted[mode].parent / f"{mode}-scores.json").read_text())
        held = np.median([s for _, s in d["held"]])
        training = np.median([s for _, s in d["training"]])
        assert 0.5 < training / held < 2.0, (mode, training, held)


@pytest.fixture(scope="module")
def updated(
    demo_product: Path, demo_model_config: ModelConfig, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, object, object, list[Path]]:
    """A base normalised by position, fitted on 20 parts, updated with the other 20 (by default
    10 of them held back: enough to measure the offsets again) and with 3 held back."""
    root = tmp_path_factory.mktemp("update")
    images = training_images(demo_product)
    base = fit(images[:20], demo_model_config, root / "base", progress=False, holdout=0.5)
    again = update_bank(base.artifact, images[20:], demo_model_config, root / "v2")
    few = update_bank(base.artifact, images[20:], demo_model_config, root / "v3", holdout=0.15)
    return base.artifact, again.artifact, again, few, images[20:]


def test_update_bank_measures_the_offsets_again_against_the_new_bank(updated):
    base, new, report, _, added = updated
    old = np.array(json.loads((base / "manifest.json").read_text())["position_offsets"])
    got = np.array(json.loads((new / "manifest.json").read_text())["position_offsets"])
    assert old.size and got.size == old.size
    assert "measured again" in report.position_norm and "10 new parts" in report.position_norm
    # They are the held-back new parts' mean exact distance at each location, new bank.
    held = {name for name, _ in report.calibration}
    model = PatchCore.load(new, "onnx")
    try:
        dists = []
        for path in added:
            if path.name in held:
                p = prepare(read_image(path), model.pre)
                dists.append(patch_distances(model.bank, model.runtime.features(p.batch), p))
    finally:
        model.close()
    assert len(dists) == 10
    np.testing.assert_allclose(got, np.mean(dists, axis=0), rtol=1e-3, atol=1e-3)
    # The denser bank is nearer to good parts everywhere: the old offsets were too large.
    assert got.mean() < old.mean()


def test_update_bank_keeps_the_offsets_with_too_few_new_parts_and_says_so(updated):
    base, _, _, few, _ = updated
    old = json.loads((base / "manifest.json").read_text())["position_offsets"]
    kept = json.loads((few.artifact / "manifest.json").read_text())
    assert kept["position_offsets"] == old
    assert (
        "kept from base" in few.position_norm
        and f"{position.MIN_PARTS} needed" in few.position_norm
    )
    assert few.position_norm in kept["notes"]
