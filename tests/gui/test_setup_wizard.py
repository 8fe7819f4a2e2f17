"""The Setup wizard driven by taps on a running station (replay camera, real model, SQLite): a
new product from a demo product folder, 60 good parts collected from its camera, 20 known-bad
imported, the model built, the limit from the miss target, saved and activated; the line's next
results carry the new version. Every step is saved as PNG in both themes and sizes."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

from PySide6.QtCore import Qt
from screens import SIZES, Shooter, discard, settle, wait_until  # tests/gui/screens.py

from station.core.result import InspectionResult, StationState

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo product with 80 distinct good parts (the wizard collects 60) and 20 defective."""
    from station.demo_product import generate_demo_product

    root = tmp_path_factory.mktemp("plate") / "demo_product"
    generate_demo_product(root, n_train=80, n_test_good=10, n_per_defect=5, seed=7)
    return root


@pytest.fixture(scope="module")
def wizard(
    qapp: Any, gui_models: Path, demo_product: Path, gui_config: Any,
    tmp_path_factory: pytest.TempPathFactory, trust_plant_key: Any,
) -> Iterator[tuple[Any, Any, list[InspectionResult]]]:  # fmt: skip
    """(app, window, results): a running station with a technician, its window on Setup."""
    from station.app import StationApp
    from station.gui.main_window import MainWindow

    data = tmp_path_factory.mktemp("wizard")
    shutil.copytree(gui_models, data / "models")  # a copy: this test writes new versions
    trust_plant_key(data)
    shutil.copytree(demo_product / "test", data / "replay" / "test")
    cfg = gui_config(data)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, image_size=224))
    app = StationApp(cfg, data)
    app.access.add_user(app.shell_session(), "tom", "technician", "2222")
    results: list[InspectionResult] = []
    app.subscribe(results.append, queue_size=4096)
    app.start()
    window = MainWindow(app, cfg)
    window.resize(*SIZES[0])
    window.show()
    wait_until(lambda: app.status().state == StationState.RUNNING, what="the line running")
    yield app, window, results
    window._can_close = True
    app.stop(30.0)
    discard(window)
    app.close()


def tap(qtbot: Any, button: Any) -> None:
    assert button.isEnabled(), button.text()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    settle(30)


def test_the_whole_wizard_from_new_product_to_the_running_line(
    wizard: Any, plate: Path, qtbot: Any, shoot: Shooter, tmp_path: Path
) -> None:
    app, window, results = wizard
    tap(qtbot, window.nav_buttons["setup"])
    panel = window.login_panel
    tap(qtbot, panel.name_buttons["tom"])
    for d in "2222":
        tap(qtbot, panel.keypad.keys[d])
    tap(qtbot, panel.keypad.keys["OK"])
    page = window.pages["setup"]
    assert window.stack.currentWidget() is page and page.steps.currentIndex() == 0
    assert "demo (running)" in [b.text() for b in page.product_buttons.values()]
    page.new_name.setText("plate")
    page.replay_folder.setText(str(plate / "train" / "good"))
    shoot(window, "40-setup-product")

    # 1 -> 2: create the product; the camera check streams its camera.
    tap(qtbot, page.create_button)
    assert page.setup is not None and page.setup.product == "plate"
    assert page.steps.currentIndex() == 1
    wait_until(lambda: page.focus_label.text() != "-", what="the camera figures")
    assert "best seen" in page.focus_label.text() and "frames/s" in page.rate_label.text()
    assert not page.feature_buttons[0].isEnabled()  # replay: no exposure to set
    shoot(window, "41-setup-camera")

    # 3: collect 60 good parts from the camera, import 20 known-bad ones.
    tap(qtbot, page.next_button)
    assert page.steps.currentIndex() == 2
    page.setup.collector.target = 60
    tap(qtbot, page.collect_good)
    wait_until(lambda: page.setup.collector.count("good") >= 60, 120, "60 good parts")
    wait_until(lambda: page.good_count.text() == "Good 60 / 60", what="the count shown")
    assert page.setup.collecting is None  # the target stops the collection
    for kind in ("scratch", "spot", "crack", "missing_print"):
        page.import_folder.setText(str(plate / "test" / kind))
        tap(qtbot, page.import_bad)
    assert page.setup.collector.count("bad") == 20
    again = tmp_path / "again"
    again.mkdir()
    for f in page.setup.collector.files("good")[:5]:
        shutil.copy(f, again / f.name)
    page.import_folder.setText(str(again))
    tap(qtbot, page.import_good)  # parts collected already: each one a near-duplicate
    assert page.setup.collector.count("good") == 60
    wait_until(lambda: "near-duplicate of good part" in page.decisions.text(), 5, "reasons")
    shoot(window, "42-setup-collect")

    # 4: build in the background (the line keeps inspecting), with progress and the time left.
    tap(qtbot, page.next_button)
    assert page.steps.currentIndex() == 3
    before = len(results)
    tap(qtbot, page.build_button)
    job = page.setup.state.build
    wait_until(lambda: job.progress is not None and job.progress.fraction > 0.3, 120, "progress")
    wait_until(lambda: "left" in page.build_stage.text(), 30, "the time left")
    shoot(window, "43-setup-building")
    wait_until(lambda: job.state != "running", 300, "the build")
    assert job.state == "done", job.error
    assert len(results) > before
    wait_until(lambda: "Built from 48 parts (12 held back" in page.build_summary.text(), 5, "sum")

    # 5: the limit from the miss target; the rates with their intervals; a check band.
    tap(qtbot, page.next_button)
    assert page.steps.currentIndex() == 4
    v = page.setup.state.validation
    assert v is not None and len(v.good) == 12 and len(v.bad) == 20
    assert page.setup.state.limit == pytest.approx(v.suggested)
    assert "Misses: 0 of 20 bad" in page.rates_label.text()
    assert "False rejects:" in page.rates_label.text() and "95 %" in page.rates_label.text()
    tap(qtbot, page.limit_up)
    assert page.setup.state.limit == pytest.approx(v.suggested * 1.01)
    tap(qtbot, page.band_button)
    assert page.setup.state.check is not None and page.setup.state.check < page.setup.state.limit
    assert "To manual check:" in page.rates_label.text()
    shoot(window, "44-setup-limit")
    tap(qtbot, page.band_button)
    tap(qtbot, page.suggested_button)
    assert page.setup.state.check is None

    # 6: save and activate: the running line's next results carry the new version.
    tap(qtbot, page.next_button)
    assert page.steps.currentIndex() == 5
    page.notes.setText("first plate model, lot 24")
    tap(qtbot, page.save_now)
    assert "plate/v0001" in page.saved_label.text()
    shoot(window, "45-setup-saved")
    at = len(results)
    wait_until(
        lambda: any(r.model_version == "plate/v0001" for r in results[at:]), 60, "new results"
    )
    assert app.flush(20)
    assert any(r.model_version == "plate/v0001" for r in app.db().query_inspections(limit=50))
    tap(qtbot, page.back_button)
    tap(qtbot, page.back_button)
    tap(qtbot, page.back_button)
    tap(qtbot, page.back_button)
    tap(qtbot, page.back_button)
    assert page.steps.currentIndex() == 0
    assert "plate/v0001" in page.running_label.text()


def test_cancel_during_the_build_leaves_the_store_unchanged(
    wizard: Any, plate: Path, qtbot: Any
) -> None:
    app, window, _ = wizard
    page = window.pages["setup"]
    page.go(0)
    page.new_name.setText("bracket")
    page.replay_folder.setText(str(plate / "train" / "good"))
    tap(qtbot, page.create_button)
    page.go(2)
    page.import_folder.setText(str(plate / "train" / "good"))
    tap(qtbot, page.import_good)
    page.go(3)
    tap(qtbot, page.build_button)
    job = page.setup.state.build
    wait_until(lambda: job.progress is not None and job.progress.stage == "features", 60, "work")
    tap(qtbot, page.cancel_button)
    wait_until(lambda: job.state != "running", 60, "the cancel")
    assert job.state == "cancelled"
    wait_until(lambda: "Cancelled: nothing was written" in page.build_summary.text(), 5, "text")
    assert app.store.versions("bracket") == []
    assert app.product == "plate"  # the line still runs what it ran
