"""Measure the GUI's cost: GUI-thread time per display update, and inspection throughput with the
window open against the same line headless, in one run on the same data and model."""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from station.config import StationConfig
from station.core.errors import StationError
from station.core.result import StationState

READY_TIMEOUT_S = 600.0  # the first start may build the demo model
_DONE = (StationState.STOPPED, StationState.FAILED)


def replay_at(cfg: StationConfig, fps: float) -> StationConfig:
    """The config with the replay camera at `fps` (0: its full rate, as fast as it is read)."""
    replay = dataclasses.replace(cfg.camera.replay, fps=float(fps))
    return dataclasses.replace(cfg, camera=dataclasses.replace(cfg.camera, replay=replay))


def _ms(values: Any) -> dict[str, float] | None:
    a = np.asarray(list(values), np.float64)
    if a.size == 0:
        return None
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {
        "n": int(a.size),
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
        "mean": round(float(a.mean()), 3),
        "max": round(float(a.max()), 3),
    }


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _wait_running(line: Any, pump: Any = None) -> None:
    """Until the first part is inspected (model loaded or built, camera open)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        st = line.status()
        if st.counters.inspected > 0 and st.state == StationState.RUNNING:
            return
        if st.state in _DONE or st.state == StationState.MODEL_MISSING:
            raise StationError(f"the line did not start: {st.state.value}: {st.reason}")
        if pump is not None:
            pump(100)
        else:
            time.sleep(0.1)
    raise StationError(f"the line did not inspect a part within {READY_TIMEOUT_S:.0f} s")


def _measure(line: Any, seconds: float, pump: Any = None) -> dict[str, Any]:
    """Inspected parts per second over `seconds` (counted from the line's own counters)."""
    s0 = line.status().counters
    t0 = time.monotonic()
    if pump is not None:
        pump(int(seconds * 1000))
    else:
        time.sleep(seconds)
    t1 = time.monotonic()
    s1 = line.status()
    if s1.state in _DONE:
        raise StationError(f"the line stopped during the measurement: {s1.reason}")
    n = s1.counters.inspected - s0.inspected
    return {
        "seconds": round(t1 - t0, 3),
        "inspected": n,
        "parts_per_s": round(n / (t1 - t0), 3),
        "dropped_frames": s1.counters.dropped - s0.dropped,
        "latency_p50_ms": round(s1.counters.latency_p50_ms, 1),
        "latency_p95_ms": round(s1.counters.latency_p95_ms, 1),
    }


def run_headless(
    cfg: StationConfig, data_dir: Path, seconds: float, warmup: float
) -> dict[str, Any]:
    """The line alone: warm up, then count parts for `seconds`."""
    from station.app import StationApp

    line = StationApp(cfg, data_dir)
    try:
        line.start()
        _wait_running(line)
        time.sleep(warmup)
        return _measure(line, seconds)
    finally:
        line.stop(30.0, reason="bench finished")
        line.close()


def run_with_gui(
    cfg: StationConfig,
    data_dir: Path,
    seconds: float,
    warmup: float,
    size: tuple[int, int],
    screenshot: Path | None = None,
) -> dict[str, Any]:
    """The same line with the operator window open, driven by a real Qt event loop."""
    from PySide6.QtCore import QEventLoop, Qt, QTimer

    from station.app import StationApp
    from station.gui.app import application
    from station.gui.main_window import MainWindow

    app = application()
    line = StationApp(cfg, data_dir)
    window = MainWindow(line, cfg)

    def pump(ms: int) -> None:
        # A real event loop (timers, posted paints), not a polling processEvents() loop.
        loop = QEventLoop()
        timer = QTimer()
        timer.setSingleShot(True)
        timer.setTimerType(Qt.TimerType.PreciseTimer)
        timer.timeout.connect(loop.quit)
        timer.start(ms)
        loop.exec()

    try:
        window.resize(*size)
        window.show()
        line.start()
        _wait_running(line, pump)
        pump(int(warmup * 1000))
        window.reset_stats()
        throughput = _measure(line, seconds, pump)
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            window.grab().save(str(screenshot))
        return {
            "throughput": throughput,
            "update_ms": list(window.update_ms),
            "update_cpu_ms": list(window.update_cpu_ms),
            "idle_tick_ms": list(window.idle_tick_ms),
            "pictures_shown": window.operator.shown_count,
        }
    finally:
        window._can_close = True  # the bench closes without the operator's confirmation
        line.stop(30.0, reason="bench finished")
        window.close()
        app.processEvents()
        line.close()


def _total(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Parts per second over several measurement periods (their sums, not a mean of rates)."""
    secs = sum(r["seconds"] for r in runs)
    n = sum(r["inspected"] for r in runs)
    return {
        "seconds": round(secs, 3),
        "inspected": n,
        "parts_per_s": round(n / secs, 3) if secs else 0.0,
        "dropped_frames": sum(r["dropped_frames"] for r in runs),
        "rounds": runs if len(runs) > 1 else None,
    }


def bench_gui(
    cfg: StationConfig,
    data_dir: Path,
    *,
    seconds: float = 120.0,
    warmup: float = 10.0,
    size: tuple[int, int] = (1280, 800),
    screenshot: Path | None = None,
    fps: float = 0.0,
    rounds: int = 1,
) -> dict[str, Any]:
    """Headless, then with the GUI, `seconds` each (after `warmup`); both figures and the ratio.

    `rounds` > 1 splits each duration into alternating headless / GUI periods, so that a change
    in the machine's other load during the run falls on both sides alike.
    """
    cfg = replay_at(cfg, fps)
    rounds = max(1, int(rounds))
    part = seconds / rounds
    load_before = _load()
    headless: list[dict[str, Any]] = []
    gui_runs: list[dict[str, Any]] = []
    for i in range(rounds):
        headless.append(run_headless(cfg, data_dir, part, warmup))
        shot = screenshot if i == rounds - 1 else None
        gui_runs.append(run_with_gui(cfg, data_dir, part, warmup, size, shot))
    h = _total(headless)
    g = _total([r["throughput"] for r in gui_runs])
    ratio = g["parts_per_s"] / h["parts_per_s"] if h["parts_per_s"] else float("nan")
    updates = [u for r in gui_runs for u in r["update_ms"]]
    cpu = [u for r in gui_runs for u in r["update_cpu_ms"]]
    idle = [u for r in gui_runs for u in r["idle_tick_ms"]]
    shown = sum(r["pictures_shown"] for r in gui_runs)
    upd = _ms(updates) or {}
    return {
        "camera": f"replay at {'full rate (fps 0)' if fps <= 0 else f'{fps:g} fps'}",
        "camera_source": cfg.camera.source,
        "model_runtime": cfg.model.runtime,
        "data_dir": str(data_dir),
        "rounds": rounds,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "qt_platform": os.environ.get("QT_QPA_PLATFORM", ""),
            "loadavg_before": load_before,
            "loadavg_after": _load(),
        },
        "headless": h,
        "with_gui": g,
        "gui": {
            "display_hz": cfg.gui.display_hz,
            "window": f"{size[0]}x{size[1]}",
            "update_ms": upd or None,
            "update_cpu_ms": _ms(cpu),
            "idle_tick_ms": _ms(idle),
            "updates_over_16ms": int(sum(u > 16.0 for u in updates)),
            "pictures_shown": shown,
            "pictures_skipped": max(0, g["inspected"] - shown),
        },
        "throughput_ratio_gui_vs_headless": round(ratio, 4),
        "verdict": {
            "gui_update_p95_ms_le_16": bool(upd.get("p95", float("inf")) <= 16.0),
            "throughput_within_5_percent": bool(ratio >= 0.95),
        },
    }
