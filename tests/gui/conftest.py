"""GUI test fixtures: a recalibrated demo model, per-test data folders, the screenshot folder.

Screenshots go to $STATION_SCREENSHOTS, else to a session temp folder; the folder is printed at
the end of the run (terminal summary) and recorded as a property of the tests that write there.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

_SHOTS: list[Path] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say where the screenshots are, with -s or without."""
    if _SHOTS:
        terminalreporter.write_sep("-", "GUI screenshots")
        terminalreporter.write_line(f"screenshots: {_SHOTS[0]}")


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the GUI tests write their PNG files."""
    env = os.environ.get("STATION_SCREENSHOTS")
    path = Path(env) if env else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    if not _SHOTS:
        _SHOTS.append(path)
    print(f"\nGUI screenshots: {path}")
    return path


@pytest.fixture(scope="module")
def shoot(screenshot_dir: Path) -> Any:
    """The module's screenshot taker (tests/gui/screens.py)."""
    from screens import Shooter

    return Shooter(screenshot_dir)


@pytest.fixture(scope="session")
def gui_models(
    demo_product: Path, demo_model: Path, plant_key: Any, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A model store with the demo model recalibrated on the demo product's test/good parts.

    The session's demo model holds out only 4 good parts, fewer than the 10 the drift monitor
    needs; a technician would recalibrate, and so does this fixture: same bank and threshold,
    the held-out scores plus the scores of test/good as the drift baseline (version v0002).
    """
    from station.core.imageio import read_image
    from station.model.artifact import load_artifact, write_artifact
    from station.model.patchcore import PatchCore

    root = tmp_path_factory.mktemp("gui_models")
    artifact = load_artifact(demo_model)
    model = PatchCore.load(demo_model, "onnx")
    try:
        good = sorted((demo_product / "test" / "good").iterdir())
        scores = [float(model.predict(read_image(p)).score) for p in good]
    finally:
        model.close()
    m = artifact.manifest
    manifest = dataclasses.replace(
        m,
        version="v0002",
        calibration_scores=[*m.calibration_scores, *(round(s, 6) for s in scores)],
        threshold_source=f"{m.threshold_source}; baseline + {len(scores)} test/good parts",
        files={},
    )
    write_artifact(root / "demo" / "v0002", manifest, artifact.bank, artifact.onnx_path, plant_key)
    return root


@pytest.fixture(scope="session")
def make_data_dir(
    demo_product: Path,
    gui_models: Path,
    trust_plant_key: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    """Make fresh data folders: the recalibrated model, a replay copy of the demo's test parts
    (a copy, so that a test can take the camera away by renaming it)."""

    def make(*, with_model: bool = True) -> Path:
        data = tmp_path_factory.mktemp("data")
        models = data / "models"
        if with_model:
            models.symlink_to(gui_models, target_is_directory=True)
        else:
            models.mkdir()
        shutil.copytree(demo_product / "test", data / "replay" / "test")
        return trust_plant_key(data)

    return make


@pytest.fixture(scope="session")
def gui_config() -> Any:
    """Build the station config the GUI tests run: replay of `data/replay`, short drift window."""
    return make_config


def make_config(data: Path, *, fps: float = 8.0, product: str = "demo", theme: str = "dark") -> Any:
    """The default config, replaying `data/replay` at `fps`, drift graded after 5 good parts."""
    from station.config import load_config

    cfg = load_config()
    replay = dataclasses.replace(
        cfg.camera.replay, path=str(data / "replay"), fps=fps, shuffle=True, loop=True
    )
    return dataclasses.replace(
        cfg,
        camera=dataclasses.replace(cfg.camera, source="replay", replay=replay),
        model=dataclasses.replace(cfg.model, product=product, threads=0),
        drift=dataclasses.replace(cfg.drift, window=40, min_samples=5),
        gui=dataclasses.replace(cfg.gui, theme=theme),
    )
