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
        ("score_top = 5", r"model.score_top: must be in \[0, 1\)"),
        ("scale = -1.0", r"model.scale: must be 0 .* or a positive scale"),
        ("max_tiles = -2", r"model.max_tiles: must be 0 \(no cap\)"),
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
