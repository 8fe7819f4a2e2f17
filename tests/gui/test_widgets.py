"""Fast checks of the GUI's pure parts: banner decisions, overlay composition, themes, texts."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("PySide6")

from station.core.overlay import View, compose, crop_box, fit_size
from station.core.result import (
    Counters,
    InspectionResult,
    LineStatus,
    StationState,
    Verdict,
)
from station.gui.counters import CountersPanel, counter_texts
from station.gui.status_bar import disk_text, runtime_name, status_texts
from station.gui.theme import THEMES, load_theme, parse_theme
from station.gui.verdict_banner import banner_state


def result(verdict: Verdict = Verdict.OK, score: float = 1.0) -> InspectionResult:
    """A small inspection result."""
    return InspectionResult(
        frame_id=7,
        timestamp=time.time(),
        source="test",
        score=score,
        threshold=2.0,
        verdict=verdict,
        latency_ms=10.0,
        model_version="demo/v0001",
        image=np.zeros((8, 8), np.uint8),
    )


@pytest.mark.parametrize(
    ("state", "title"),
    [
        (StationState.MODEL_MISSING, "NO MODEL"),
        (StationState.CAMERA_LOST, "CAMERA LOST"),
        (StationState.PAUSED, "PAUSED"),
        (StationState.STARTING, "STARTING"),
        (StationState.STOPPED, "STOPPED"),
        (StationState.FAILED, "STOPPED: ERROR"),
    ],
)
def test_non_verdict_states_are_amber_with_a_reason(state: StationState, title: str) -> None:
    b = banner_state(LineStatus(state, reason="because"), result(Verdict.NOK))
    assert (b.kind, b.title) == ("amber", title)
    assert "because" in b.detail


def test_verdicts_and_disk_full() -> None:
    running = LineStatus(StationState.RUNNING)
    assert banner_state(running, result(Verdict.OK)).kind == "ok"
    nok = banner_state(running, result(Verdict.NOK, 3.25))
    assert (nok.kind, nok.title) == ("nok", "NOK") and "3.25" in nok.detail
    assert banner_state(running, None).kind == "idle"
    full = LineStatus(StationState.RUNNING, alarms=("disk full: 3 results not recorded",))
    b = banner_state(full, result(Verdict.NOK))
    assert (b.kind, b.title) == ("amber", "DISK FULL")
    assert "3 results not recorded" in b.detail and "last part NOK" in b.detail
    low = LineStatus(StationState.RUNNING, disk_free_mb=10.0)
    assert banner_state(low, result()).title == "DISK FULL"
    # Other alarms (archive behind) leave the verdict on the banner.
    slow = LineStatus(StationState.RUNNING, alarms=("archive behind (disk too slow): 1",))
    assert banner_state(slow, result()).kind == "ok"


def test_overlay_toggle_opacity_and_outline_change_the_picture() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(60, 200, (120, 160, 3), dtype=np.uint8)
    amap = np.full((120, 160), 1.0, np.float32)
    amap[40:70, 60:100] = 5.0  # a defect over the threshold of 2
    plain = compose(image, amap, 2.0, (320, 240), show_overlay=False)
    weak = compose(image, amap, 2.0, (320, 240), opacity=0.2)
    strong = compose(image, amap, 2.0, (320, 240), opacity=0.9)
    assert plain.shape == weak.shape == (240, 320, 3)
    assert not np.array_equal(plain, weak) and not np.array_equal(weak, strong)
    # Far from the defect (score 1 < 0.7 x 2) the part is shown untouched.
    assert np.array_equal(plain[:40, :40], strong[:40, :40])
    # The outline is white somewhere around the defect.
    assert (strong[60:160, 100:220] == 255).all(axis=2).any()
    # No map (an OK part) or no threshold: the plain picture.
    assert np.array_equal(compose(image, None, 2.0, (320, 240)), plain)


def test_overlay_marks_the_peak_of_a_smoothed_nok_map() -> None:
    image = np.full((100, 100), 128, np.uint8)
    amap = np.zeros((100, 100), np.float32)
    amap[40:60, 40:60] = 1.8  # under the threshold of 2 after smoothing, but the part is NOK

    def outlined(picture: np.ndarray) -> bool:
        return bool((picture == 255).all(axis=2).any())

    assert not outlined(compose(image, amap, 2.0, (100, 100)))  # nothing reaches the limit
    assert outlined(compose(image, amap, 2.0, (100, 100), mark_peak=True))


def test_zoom_crop_and_fit() -> None:
    assert fit_size(100, 200, 400, 400) == (400, 200)
    assert crop_box(100, 200, View(2.0, 0.0, 0.0)) == (0, 50, 0, 100)  # clamped to the corner
    assert crop_box(100, 200, View(2.0, 1.0, 1.0)) == (50, 100, 100, 200)
    img16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096).astype(np.uint16)
    out = compose(img16, None, None, (64, 64))
    assert out.dtype == np.uint8 and out.max() == 255  # 12-bit data scaled to 8 bits


@pytest.mark.parametrize("name", THEMES)
def test_themes_resolve_every_colour(name: str) -> None:
    theme = load_theme(name)
    assert "@" not in theme.qss.replace("@name", "")  # every @colour substituted
    for key in ("ok", "nok", "amber", "text", "bg", "plot_bg"):
        assert theme.color(key).startswith("#")
    assert theme.color("ok") != theme.color("nok")


def test_theme_parser_keeps_unknown_names_and_falls_back() -> None:
    t = parse_theme("x", "/* @text: #123456; */\nQLabel { color: @text; background: @nope; }")
    assert "#123456" in t.qss and "@nope" in t.qss
    assert t.color("amber").startswith("#")  # from the built-in fallback


def test_texts_operators_read() -> None:
    c = Counters(
        inspected=1234,
        nok=56,
        dropped=2,
        throughput_per_min=119.6,
        latency_p50_ms=80.4,
        latency_p95_ms=120.6,
    )
    t = counter_texts(c)
    assert t["inspected"] == "1,234" and t["nok_rate"] == "4.5 %"
    assert t["throughput"] == "120" and t["latency"] == "80 / 121 ms"
    assert runtime_name("tensorrt") == "TensorRT" and runtime_name("onnx") == "ONNX Runtime"
    assert disk_text(2048.0) == "disk 2.0 GB free" and disk_text(None) == "disk ?"
    s = status_texts(LineStatus(StationState.RUNNING, camera="Basler a2A @ 10 fps", threshold=3.5))
    assert s["camera"] == "Camera: Basler a2A @ 10 fps" and "limit 3.50" in s["model"]


def test_counters_panel_names_the_shift(qtbot) -> None:
    """The first caption says since when the shift counts, follows a shift change, and is
    shortened rather than cut off in a narrow column."""
    panel = CountersPanel()
    qtbot.addWidget(panel)
    panel.resize(900, 160)
    panel.show()
    assert panel.set_counters(Counters(inspected=7, shift="2026-11-22/06"))
    assert panel.captions["inspected"].text() == "Inspected since 06:00"
    assert panel.text("inspected") == "7"
    assert panel.set_counters(Counters(inspected=0, shift="2026-11-22/14"))
    assert panel.captions["inspected"].text() == "Inspected since 14:00"
    assert not panel.set_counters(Counters(inspected=0, shift="2026-11-22/14"))
    panel.resize(330, 160)
    qtbot.waitUntil(lambda: panel.captions["inspected"].text() == "Since 14:00", timeout=2000)
    panel.set_counters(Counters(inspected=3))  # records unreadable: no shift to name
    assert panel.captions["inspected"].text() == "Inspected"


def test_missing_x11_libraries_are_named_before_qt_aborts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Uninstalling a system library is not a fault a test may cause, so one soname that cannot
    exist stands in for it; the check itself dlopens for real."""
    import subprocess
    from pathlib import Path

    from station.gui import app as gui_app

    repo = Path(__file__).resolve().parents[2]
    lib = repo / "installers" / "common" / "lib.sh"
    listed = subprocess.run(
        ["bash", "-c", f"source {lib}; echo ${{QT_XCB_PACKAGES[@]}}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert sorted(listed) == sorted(set(gui_app.X11_LIBRARIES.values()))  # one list, two places
    readme = (repo / "README.md").read_text()
    assert all(p in readme for p in listed), "the README names every package"

    monkeypatch.setitem(gui_app.X11_LIBRARIES, "libxcb-doesnotexist.so.9", "libxcb-doesnotexist9")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":0")
    problem = gui_app.display_problem()
    assert problem is not None and "libxcb-doesnotexist.so.9" in problem
    assert "sudo apt-get install" in problem and "libxcb-doesnotexist9" in problem
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert gui_app.display_problem() is None  # not X11: nothing of this is needed


def test_trend_plot_draws_each_verdict_and_forgets_points_that_leave(qtbot) -> None:
    from station.gui.bridge import ScorePoint
    from station.gui.trend import TrendPlot

    plot = TrendPlot(load_theme("dark"), points=10)
    qtbot.addWidget(plot)
    seq = iter(range(1000))

    def add(verdict: Verdict, n: int = 1) -> None:
        seqs = [next(seq) for _ in range(n)]
        plot.add_points([ScorePoint(s, s, 1.0 + s / 100, 2.0, verdict, 0.0) for s in seqs])
        assert plot.redraw(force=True)

    add(Verdict.OK, 4)
    assert plot.counts() == (4, 0) and len(plot.check_item.data) == 0
    add(Verdict.NOK)
    add(Verdict.CHECK)
    assert plot.counts() == (4, 1) and len(plot.check_item.data) == 1
    # The newest part sits at 0 "parts ago", the NOK one two parts before it.
    assert list(plot.nok_item.data["x"]) == [-1.0]
    add(Verdict.OK)
    assert list(plot.nok_item.data["x"]) == [-2.0]
    add(Verdict.OK, 10)  # both flagged parts leave the last 10
    assert plot.counts() == (10, 0) and len(plot.check_item.data) == 0
    assert not plot.redraw()  # nothing new: nothing to draw
    assert plot.waiting_s(time.monotonic() + 5) == 0.0  # and nothing waits for a redraw
    plot.add_points([ScorePoint(99, 99, 1.0, 2.0, Verdict.OK, 0.0)])
    assert plot.waiting_s(plot.last_draw + 0.6) == pytest.approx(0.6)
