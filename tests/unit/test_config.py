"""Configuration errors name the file, the key and the reason."""

from pathlib import Path

import pytest

from station.config import load_config
from station.core.errors import ConfigError


def test_defaults_load():
    cfg = load_config()
    assert cfg.camera.source == "replay" and cfg.model.runtime in ("onnx", "torch")


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (Path(__file__).parents[2] / "configs").glob("*.toml"))
)
def test_shipped_configs_load_and_name_real_layers(name: str):
    """Every product config in configs/ loads, and its layers exist in its backbone."""
    from station.model.backbones import load_backbone

    cfg = load_config(Path(__file__).parents[2] / "configs" / name)
    if cfg.model.backbone.startswith("efficientnet"):
        assert set(cfg.model.layers) <= set(load_backbone(cfg.model.backbone).channels)


def test_unknown_key_names_file_key_and_suggestion(tmp_path: Path):
    f = tmp_path / "line3.toml"
    f.write_text("[model]\nbackbon = 'resnet18'\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert "line3.toml" in msg and "backbon" in msg and "did you mean 'backbone'" in msg


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("image_size = 'big'", r"model.image_size: expected an integer"),
        ("runtime = 'cuda'", r"model.runtime: 'cuda' is not one of"),
        ("score_top = 5", r"model.score_top: 5.0 is out of range: must be at least 0 and at most"),
        ("scale = -1.0", r"model.scale: -1.0 is out of range: must be at least 0"),
        ("max_tiles = -2", r"model.max_tiles: -2 is out of range: must be at least 0"),
        ("position_norm = 'yes'", r"model.position_norm: 'yes' is not one of auto, on, off"),
        ("exposure = 'manual'", r"model.exposure: 'manual' is not one of choose, fixed, auto"),
    ],
)
def test_wrong_type_and_value(tmp_path: Path, line: str, message: str):
    f = tmp_path / "c.toml"
    f.write_text(f"[model]\n{line}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(f)


def test_missing_and_broken_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_paths_in_a_file_are_taken_from_its_folder(tmp_path: Path):
    (tmp_path / "parts").mkdir()
    (tmp_path / "cfg").mkdir()
    f = tmp_path / "cfg" / "line.toml"
    f.write_text('[camera.replay]\npath = "../parts"\n[model]\nweights = "w.pth"\n')
    cfg = load_config(f)
    assert cfg.camera.replay.path == str((tmp_path / "parts").resolve())
    assert cfg.model.weights == str((tmp_path / "cfg" / "w.pth").resolve())
    f.write_text(f'[camera.replay]\npath = "{tmp_path}"\n')  # absolute: as written
    assert load_config(f).camera.replay.path == str(tmp_path)


def test_product_configs_name_their_camera():
    root = Path(__file__).parents[2] / "configs"
    for name in ("deeppcb.toml", "magnetic_tile.toml"):
        cfg = load_config(root / name)
        assert cfg.camera.source == "replay" and cfg.camera.replay.path.endswith("/test"), name


@pytest.mark.parametrize(
    ("section", "line", "key", "expect"),
    [
        ("camera.replay", "fps = -5", "camera.replay.fps", "at least 0"),
        ("records", "ok_sample_every = -3", "records.ok_sample_every", "at least 0"),
        ("records", "retention_days = -1", "records.retention_days", "at least 1"),
        ("records", "disk_budget_mb = -100", "records.disk_budget_mb", "at least 1"),
        ("records", "shift_hours = [25, -3]", "records.shift_hours[0]", "0 to 23"),
        ("camera.genicam", "timeout_s = -1", "camera.genicam.timeout_s", "above 0"),
        ("camera.genicam", "buffers = -4", "camera.genicam.buffers", "at least 1"),
        ("drift", "window = -10", "drift.window", "at least 10"),
        ("gui", "overlay_opacity = 7.0", "gui.overlay_opacity", "at most 1"),
        ("model", "threads = -2", "model.threads", "at least 0"),
        ("model", 'backbone = "nonexistent"', "model.backbone", "efficientnet_lite0"),
        ("records", "shift_hours = []", "records.shift_hours", "at least one"),
        ("drift", "min_samples = 500", "drift.min_samples", "at most drift.window"),
    ],
)
def test_out_of_range_values_name_file_key_and_range(
    tmp_path: Path, section: str, line: str, key: str, expect: str
):
    f = tmp_path / "line7.toml"
    f.write_text(f"[{section}]\n{line}\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert "line7.toml" in msg and f"{key}:" in msg and expect in msg, msg


def test_every_number_has_a_range_and_the_backbones_match_the_model():
    from station.config import BACKBONE_NAMES, unranged_numbers
    from station.model.backbones import BACKBONES

    assert unranged_numbers() == []
    assert sorted(BACKBONE_NAMES) == sorted(BACKBONES)


def test_a_recipe_is_checked_against_the_ranges_too():
    from station.config import with_overlay

    with pytest.raises(ConfigError, match=r"recipe.json: model.max_bank: 0 is out of range"):
        with_overlay(load_config(), {"model": {"max_bank": 0}}, "recipe.json")
