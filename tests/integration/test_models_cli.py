"""`station fit --product`, `station models`, `station threshold`, `station update-bank` on a real
data directory and the real demo product; a running station picks up a version activated from
the command line; frames unlike a model's training images raise an alarm."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from station.app import StationApp
from station.cli import main
from station.config import load_config
from station.core.result import StationState
from station.inspect.pipeline import shape_mismatch
from station.model.artifact import load_artifact
from station.records.db import Database, db_path

pytestmark = pytest.mark.slow


@pytest.fixture
def fast_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "fast.toml"
    cfg.write_text("[model]\nimage_size = 96\n")
    return cfg


def test_fit_models_threshold_update_bank(
    demo_product: Path, tmp_path: Path, fast_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = ["--config", str(fast_config), "--data-dir", str(tmp_path / "data")]
    good = tmp_path / "first"
    shutil.copytree(demo_product / "train" / "good", good)
    later = tmp_path / "later"
    later.mkdir()
    for p in sorted(good.iterdir())[::2]:  # half of them come later, for update-bank
        shutil.move(str(p), later / p.name)

    assert main(["fit", "--data", str(good), "--product", "widget", "--quiet", *d]) == 0
    assert "widget/v0001" in capsys.readouterr().out
    assert main(["models", *d, "list", "--product", "widget", "--json"]) == 0
    (v1,) = json.loads(capsys.readouterr().out)
    assert {"version", "current", "threshold", "created_at", "bank_size"} <= set(v1)
    assert (v1["version"], v1["current"]) == ("v0001", True)

    assert main(["threshold", *d, "--product", "widget", "--value", "99.5", "--check", "90"]) == 0
    assert "widget/v0002: limit 99.5 (not active yet)" in capsys.readouterr().out
    m2 = load_artifact(tmp_path / "data" / "models" / "widget" / "v0002").manifest
    assert (m2.threshold, m2.check_threshold) == (99.5, 90.0)
    assert main(["threshold", *d, "--product", "widget", "--value", "5", "--check", "9"]) == 1
    assert "must be below the reject limit" in capsys.readouterr().err

    assert main(["threshold", *d, "--product", "widget", "--target-fnr", "0.2",
                 "--data", str(demo_product)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "widget/v0003: limit" in out and "for a miss rate <= 0.2" in out
    assert main(["threshold", *d, "--product", "widget", "--target-fnr", "1.5",
                 "--data", str(demo_product)]) == 1  # fmt: skip
    assert "--target-fnr must be in [0, 1)" in capsys.readouterr().err

    assert main(["models", *d, "activate", "--product", "widget", "--version", "v0003"]) == 0
    assert main(["models", *d, "show", "--product", "widget"]) == 0
    shown = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert shown["version"] == "v0003" and "calibration_scores" not in shown
    assert main(["models", *d, "rollback", "--product", "widget"]) == 0
    assert "back to v0001" in capsys.readouterr().out
    assert main(["models", *d, "activate", "--product", "widget", "--version", "v0099"]) == 1
    assert "has no model version v0099" in capsys.readouterr().err

    assert main(["update-bank", *d, "--product", "widget", "--data", str(later),
                 "--json", str(tmp_path / "u.json")]) == 0  # fmt: skip
    u = json.loads((tmp_path / "u.json").read_text())
    m1 = load_artifact(tmp_path / "data" / "models" / "widget" / "v0001").manifest
    m4 = load_artifact(tmp_path / "data" / "models" / "widget" / "v0004").manifest
    assert u["bank_size"] == m4.bank_size > m1.bank_size
    assert m4.threshold == m1.threshold and m4.n_train > m1.n_train

    app = StationApp(load_config(fast_config), tmp_path / "data")
    actions = [r.action for r in app.access.audit.rows()]
    app.close()
    assert actions == [
        "model_fit", "threshold", "threshold", "model_activate", "model_rollback",
        "model_update_bank",
    ]  # fmt: skip

    assert main(["fit", "--data", str(good), "--quiet", "--out", str(tmp_path / "solo")]) == 0
    assert (tmp_path / "solo" / "manifest.json").is_file()  # --out still works


def test_a_running_station_picks_up_an_activation_from_the_command_line(
    demo_product: Path,
    demo_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    trust_plant_key: Any,
) -> None:
    data = trust_plant_key(tmp_path / "data")
    shutil.copytree(demo_model, data / "models" / "demo" / "v0001")
    cfg = load_config()
    replay = dataclasses.replace(cfg.camera.replay, path=str(demo_product / "test"), fps=10.0)
    cfg = dataclasses.replace(cfg, camera=dataclasses.replace(cfg.camera, replay=replay))
    app = StationApp(cfg, data)
    app.start()
    try:
        deadline = time.monotonic() + 60
        while app.status().state != StationState.RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert main(["threshold", "--data-dir", str(data), "--value", "123.0"]) == 0
        assert main(["models", "--data-dir", str(data), "activate", "--version", "v0002"]) == 0
        deadline = time.monotonic() + 30
        while app.status().model_version != "demo/v0002":
            assert time.monotonic() < deadline, "the running line did not switch"
            time.sleep(0.1)
        assert app.status().threshold == 123.0
    finally:
        app.close()


def test_frames_unlike_the_training_images_raise_an_alarm(
    demo_product: Path, demo_patchcore: object, tmp_path: Path
) -> None:
    train = {"min_hw": [256, 256], "max_hw": [256, 256], "channels": [1]}
    assert shape_mismatch(np.zeros((256, 256), np.uint8), train) is None
    assert shape_mismatch(np.zeros((300, 200, 3), np.uint8), train) is None  # colour to grey
    far = shape_mismatch(np.zeros((640, 640), np.uint8), train)
    assert far is not None and "frames are 640x640" in far and "256x256" in far
    assert shape_mismatch(np.zeros((640, 640), np.uint8), {}) is None  # an older model
    # A model normalised by position fits its parts' exact size only.
    assert shape_mismatch(np.zeros((256, 256), np.uint8), train, [256, 256]) is None
    near = shape_mismatch(np.zeros((256, 260), np.uint8), train, [256, 256])
    assert near is not None and "normalised by position for 256x256 parts" in near
    assert shape_mismatch(np.zeros((256, 260), np.uint8), train) is None

    big = tmp_path / "big"
    big.mkdir()
    import cv2

    for p in sorted((demo_product / "test" / "good").iterdir())[:3]:
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(big / p.name), cv2.resize(img, (640, 640)))
    cfg = load_config()
    replay = dataclasses.replace(cfg.camera.replay, path=str(big), fps=20.0)
    cfg = dataclasses.replace(cfg, camera=dataclasses.replace(cfg.camera, replay=replay))
    app = StationApp(cfg, tmp_path / "data", model=demo_patchcore, max_frames=4)  # type: ignore[arg-type]
    app.start()
    assert app.wait(60)
    status = app.status()
    app.close()
    assert any("frames are 640x640" in a for a in status.alarms), status.alarms
    with Database(db_path(tmp_path / "data"), create=False) as db:
        assert any("frames are 640x640" in e.message for e in db.query_events(kind="model"))


def test_a_version_2_database_moves_to_check_verdicts_with_its_rows(tmp_path: Path) -> None:
    """Migration 3 rebuilds the inspections table (a CHECK constraint cannot be altered): every
    row, id and index stays, and CHECK verdicts can be stored."""
    from station.records.migrations import MIGRATIONS, migrate

    path = db_path(tmp_path)
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, "test", MIGRATIONS[:2])
    conn.execute(
        "INSERT INTO inspections (time, frame_id, source, score, threshold, verdict, latency_ms, "
        "model_version, part_id) VALUES (1.0, 7, 'cam', 3.5, 2.0, 'NOK', 9.0, 'demo/v0001', 'P-1')"
    )
    conn.execute(
        "INSERT INTO shift_counters (shift, inspected, nok) VALUES ('2026-12-01/06', 1, 1)"
    )
    conn.close()
    with Database(path) as db:
        (row,) = db.query_inspections()
        assert (row.id, row.frame_id, row.verdict.value, row.part_id) == (1, 7, "NOK", "P-1")
        assert row.check_threshold is None
        assert db.shift_counts("2026-12-01/06").check == 0
        with db.transaction() as cur:
            cur.execute(
                "INSERT INTO inspections (time, frame_id, source, score, threshold, verdict, "
                "latency_ms, model_version, check_threshold) "
                "VALUES (2.0, 8, 'cam', 1.8, 2.0, 'CHECK', 9.0, 'demo/v0002', 1.5)"
            )
        assert db.integrity_check() == "ok"
        names = {r[0] for r in db.fetch("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"inspections_time", "inspections_part_id", "inspections_archived"} <= names
