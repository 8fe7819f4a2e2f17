"""The model artifact: round trip, and refusal of truncated, tampered or newer-format files."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from station.core.errors import ModelError
from station.model.artifact import BANK, MANIFEST, ONNX, ModelStore, load_artifact


@pytest.fixture
def artifact_copy(demo_model: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "v0001"
    shutil.copytree(demo_model, dst)
    return dst


def test_round_trip(demo_model: Path):
    a = load_artifact(demo_model)
    m = a.manifest
    assert a.bank.shape == (m.bank_size, m.feature_dim) and a.bank.dtype == np.float32
    assert m.backbone == "efficientnet_lite0" and len(m.weights_sha256) == 64
    assert m.threshold > 0 and len(m.calibration_scores) >= 3
    assert m.layers == ["stride8", "stride16"] and m.preprocessing.image_size == 224
    assert (demo_model / ONNX).is_file()
    # No pickle anywhere: the bank loads as a plain array.
    np.load(demo_model / BANK, allow_pickle=False)


def test_truncated_bank_is_refused(artifact_copy: Path):
    f = artifact_copy / BANK
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(ModelError, match=r"memory_bank.npy is truncated"):
        load_artifact(artifact_copy)


def test_tampered_bank_is_refused(artifact_copy: Path):
    f = artifact_copy / BANK
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF  # same size, one byte changed
    f.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"memory_bank.npy was modified"):
        load_artifact(artifact_copy)


def test_tampered_manifest_threshold_is_refused(artifact_copy: Path):
    f = artifact_copy / MANIFEST
    d = json.loads(f.read_text())
    d["threshold"] = d["threshold"] * 10  # someone "tunes" the threshold by hand
    f.write_text(json.dumps(d))
    with pytest.raises(ModelError, match="manifest was modified"):
        load_artifact(artifact_copy)


def test_truncated_manifest_is_refused(artifact_copy: Path):
    f = artifact_copy / MANIFEST
    f.write_text(f.read_text()[:200])
    with pytest.raises(ModelError, match="damaged or truncated"):
        load_artifact(artifact_copy)


def test_newer_format_is_refused(artifact_copy: Path):
    f = artifact_copy / MANIFEST
    d = json.loads(f.read_text())
    d["format_version"] = 99
    f.write_text(json.dumps(d))
    with pytest.raises(ModelError, match=r"format 99 is newer"):
        load_artifact(artifact_copy)


def test_format_1_model_still_loads_with_its_old_meaning(artifact_copy: Path):
    """A model written before the score and tiling settings existed keeps the maximum as its
    image score and fit-to-canvas preprocessing."""
    from station.model.artifact import FORMAT_VERSION, _manifest_hash

    f = artifact_copy / MANIFEST
    d = json.loads(f.read_text())
    needed = 5 if d["discriminator"] else 4 if d["position_offsets"] else 3
    assert FORMAT_VERSION == 5 and d["format_version"] == needed
    d["format_version"] = 1
    for key in ("score_top", "intensity_weight", "check_threshold", "notes", "validation"):
        d.pop(key)
    for key in ("position_offsets", "position_hw", "discriminator"):
        d.pop(key)
    d.pop("train_shape")
    for key in ("scale", "exposure", "max_tiles"):
        d["preprocessing"].pop(key)
    d["content_sha256"] = _manifest_hash(d)
    f.write_text(json.dumps(d))
    art = load_artifact(artifact_copy)
    assert art.manifest.score_top == 0.0 and art.manifest.preprocessing.max_tiles == 0
    assert art.manifest.preprocessing.scale == 0.0
    assert art.manifest.check_threshold is None  # no CHECK band: OK / NOK as then
    assert art.manifest.discriminator == [] and art.manifest.position_offsets == []


def test_a_version_is_written_in_the_oldest_format_that_holds_its_fields(
    artifact_copy: Path, tmp_path: Path
):
    """Per-position offsets need format 4 and a discriminator 5, so an older station refuses
    such a version by name instead of scoring without them; a version without them stays
    readable by a format-3 one, and a version derived from a format-3 base that has them is
    written as 4 (5)."""
    from station.model.artifact import write_derived

    base = load_artifact(artifact_copy)
    plain = dataclasses.replace(
        base.manifest, threshold=1.0, position_offsets=[], position_hw=[], discriminator=[]
    )
    out = write_derived(tmp_path / "plain", plain, base, None)
    assert json.loads((out / MANIFEST).read_text())["format_version"] == 3
    normalised = dataclasses.replace(
        plain, format_version=3, position_offsets=[0.5] * 16, position_hw=[32, 32]
    )
    out = write_derived(tmp_path / "normalised", normalised, base, None)
    assert json.loads((out / MANIFEST).read_text())["format_version"] == 4
    assert load_artifact(out).manifest.position_offsets == [0.5] * 16
    judged = dataclasses.replace(plain, format_version=3, discriminator=base.manifest.discriminator)
    out = write_derived(tmp_path / "judged", judged, base, None)
    assert json.loads((out / MANIFEST).read_text())["format_version"] == 5
    assert load_artifact(out).manifest.discriminator == base.manifest.discriminator != []


def test_missing_onnx_is_refused(artifact_copy: Path):
    (artifact_copy / ONNX).unlink()
    with pytest.raises(ModelError, match=r"feature_extractor\.onnx is missing"):
        load_artifact(artifact_copy)


def test_store_versions_current_and_roll_back(demo_model: Path, tmp_path: Path):
    store = ModelStore(tmp_path / "models")
    for v in ("v0001", "v0002"):
        shutil.copytree(demo_model, store.product_dir("demo") / v)
    assert store.versions("demo") == ["v0001", "v0002"]
    assert store.current("demo").name == "v0002"  # newest by default
    store.set_current("demo", "v0001")  # roll back
    assert store.current("demo").name == "v0001"
    assert store.next_version_dir("demo").name == "v0003"
    with pytest.raises(ModelError, match="no model version v0009"):
        store.set_current("demo", "v0009")


def test_preprocessing_settings_survive_the_manifest_and_old_ones_default():
    """Every setting that changes the network input is read back; a manifest written before a
    setting existed gets the behaviour it was fitted with (no cap, fit-to-canvas, fixed gain)."""
    import json

    from station.model.preprocess import Preprocessing

    pre = Preprocessing(
        image_size=320,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        pixel_max=4095.0,
        color=True,
        tile_aspect=0.0,
        scale=1.0,
        exposure="auto",
        max_tiles=4,
    )
    assert Preprocessing.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
    old = {k: v for k, v in pre.to_dict().items() if k not in ("scale", "exposure", "max_tiles")}
    back = Preprocessing.from_dict(old)
    assert (back.scale, back.exposure, back.max_tiles) == (0.0, "fixed", 0)
