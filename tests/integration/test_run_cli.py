"""`station run`: headless runs in-process and as a real process stopped with SIGTERM; the demo
model built on first start; the GUI's absence reported; `station bench-pipeline` JSON."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from station.cli import main
from station.core.result import StationState
from station.records import Database, db_path, shift_key

REPO = Path(__file__).resolve().parents[2]


def write_config(path: Path, replay: Path, *, fps: float, extra: str = "") -> Path:
    path.write_text(
        f"""
[camera.replay]
path = "{replay}"
fps = {fps}
loop = true
shuffle = true

[records]
ok_sample_every = 5
{extra}
"""
    )
    return path


def install_model(data: Path, model: Path, product: str = "demo") -> None:
    """Copy a model made elsewhere into the store and sign it there, as an admin does."""
    shutil.copytree(model, data / "models" / product / "v0001")
    args = ["models", "--data-dir", str(data), "sign", "--product", product, "--version", "v0001"]
    assert main(args) == 0


def count_rows(data: Path) -> int:
    if not db_path(data).exists():
        return 0
    try:
        with Database(db_path(data), create=False) as db:
            return db.count_inspections()
    except Exception:  # created but not migrated yet
        return 0


def test_headless_max_frames_and_summary(
    demo_product: Path, demo_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    install_model(data, demo_model)
    cfg = write_config(tmp_path / "station.toml", demo_product, fps=20.0)
    caplog.set_level(logging.INFO)
    rc = main(
        [
            "run",
            "--headless",
            "--config",
            str(cfg),
            "--data-dir",
            str(data),
            "--max-frames",
            "6",
            "--summary-interval",
            "0.2",
        ]
    )
    assert rc == 0
    assert count_rows(data) == 6
    summaries = [r.getMessage() for r in caplog.records if r.name == "station.run"]
    assert any("inspected 6," in s and "latency p50" in s and "dropped" in s for s in summaries)
    shift = shift_key(time.time())
    assert any(s.startswith(f"stopped: shift {shift} inspected 6,") for s in summaries)


def test_gui_missing_is_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "station.gui.app", None)  # as if not installed
    rc = main(["run", "--data-dir", str(tmp_path), "--kiosk"])
    assert rc == 2
    assert "--headless" in capsys.readouterr().err


def test_sigterm_stops_a_real_process_cleanly(
    demo_product: Path, demo_model: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    install_model(data, demo_model)
    cfg = write_config(tmp_path / "station.toml", demo_product, fps=10.0)
    log_file = tmp_path / "run.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_file.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "station", "run", "--headless", "--config", str(cfg),
             "--data-dir", str(data), "--summary-interval", "1"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 90
            while count_rows(data) < 3:
                assert proc.poll() is None, log_file.read_text()
                assert time.monotonic() < deadline, "no committed rows: " + log_file.read_text()
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log_file.read_text()
    assert rc == 0, text
    assert "SIGTERM received" in text
    with Database(db_path(data), create=False) as db:
        assert db.integrity_check() == "ok"
        states = [e.state for e in sorted(db.query_events(kind="state"), key=lambda e: e.id)]
        assert states[-2:] == [StationState.STOPPING, StationState.STOPPED]
        stopped = db.query_events(kind="state", limit=1)[0]
        assert "SIGTERM" in stopped.message
        n = db.count_inspections()
    assert n >= 3 and f"inspected {n}," in text.splitlines()[-1]


def test_demo_model_built_on_first_start(tmp_path: Path) -> None:
    # The README's command on a fresh data directory: demo product written, demo model fitted
    # with the configured settings (kept tiny here), then the line runs.
    data = tmp_path / "data"
    cfg = tmp_path / "station.toml"
    cfg.write_text("[camera.replay]\nfps = 0.0\n\n[model]\nimage_size = 64\n")
    rc = main(["run", "--headless", "--config", str(cfg), "--data-dir", str(data),
               "--max-frames", "3"])  # fmt: skip
    assert rc == 0
    assert (data / "demo_product" / "train" / "good").is_dir()
    manifest = json.loads((data / "models" / "demo" / "v0001" / "manifest.json").read_text())
    assert manifest["preprocessing"]["image_size"] == 64
    with Database(db_path(data), create=False) as db:
        assert db.count_inspections() == 3
        assert any("demo model built" in e.message for e in db.query_events(kind="model"))


def test_bench_pipeline_json(demo_product: Path, demo_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    rc = main(["bench-pipeline", "--data", str(demo_product / "test"),
               "--model", str(demo_model), "--frames", "25", "--queue-size", "1",
               "--json", str(out)])  # fmt: skip
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["frames"] == 25 and r["recorded"] == 25 and r["final_state"] == "stopped"
    assert r["throughput_fps"] > 0 and r["model_ms"] > 0 and r["dropped"] > 0
    assert r["overhead_pct"] == pytest.approx(
        100 * (r["frame_ms"] - r["model_ms"]) / r["frame_ms"], abs=0.05
    )
    assert r["latency_p95_ms"] <= r["latency_max_ms"]
