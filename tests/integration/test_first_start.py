"""One data directory, one station; the first start builds the demo product and model atomically.

Real processes (`python -m station run --headless`) on real folders: a second station on the same
data directory exits at once naming the first one's PID; two first starts at once, and SIGKILLs
in the middle of writing the demo product or fitting the demo model, all end with one complete
demo product and one complete model, never a half-written image set or a model fitted on part of
it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from station.app.demo import COMPLETE, DEMO_PRODUCT_DIR
from station.model.artifact import ModelStore, load_artifact
from station.records.db import Database, db_path

REPO = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)"),
]
# Tiny model settings: the demo product is written in full, the fit stays a few seconds.
FAST = "[camera.replay]\nfps = 0.0\n\n[model]\nimage_size = 64\n"


def station(data: Path, config: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "station", "run", "--headless", "--config", str(config),
         "--data-dir", str(data), *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def wait_for(
    cond: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[str]
) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"station exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def check_demo(data: Path) -> None:
    """Nothing half-written: the product is absent or complete, every model version complete,
    and a model's images are exactly the product's training images."""
    root = data / DEMO_PRODUCT_DIR
    if root.exists():
        marker = json.loads((root / COMPLETE).read_text())  # no marker: a half-written product
        for folder, n in marker["counts"].items():
            assert len(list((root / folder).glob("*.png"))) == n, folder
    store = ModelStore(data / "models")
    for v in store.versions("demo"):
        m = load_artifact(store.product_dir("demo") / v).manifest  # hashes checked
        n_cal = len(m.calibration_scores)
        assert m.n_train + n_cal == marker["counts"]["train/good"], v


def leftovers(data: Path) -> list[str]:
    hidden = [p.name for p in data.glob(".*") if p.is_dir()]
    models = data / "models" / "demo"
    if models.is_dir():
        hidden += [p.name for p in models.iterdir() if p.name.startswith(".") and p.is_dir()]
    return hidden


def test_a_second_station_on_one_data_directory_exits_naming_the_first(
    tmp_path: Path, demo_model: Path, demo_product: Path, trust_plant_key: Any
) -> None:
    data = trust_plant_key(tmp_path / "data")
    (data / "models" / "demo").mkdir(parents=True)
    import shutil

    shutil.copytree(demo_model, data / "models" / "demo" / "v0001")
    config = tmp_path / "line.toml"
    config.write_text(f'[camera.replay]\npath = "{demo_product / "test"}"\nfps = 10.0\n')
    first = station(data, config)
    try:
        wait_for(lambda: (data / "station.lock").is_file() and (data / "station.lock").read_text()
                 .strip() == str(first.pid), 60, "the first station's lock", first)  # fmt: skip
        t0 = time.monotonic()
        second = station(data, config)
        out, _ = second.communicate(timeout=60)
        took = time.monotonic() - t0
        assert second.returncode == 1, out
        assert f"data directory {data} is in use by another station (PID {first.pid})" in out
        assert took < 30  # at once: no model loaded, no camera opened
        assert first.poll() is None  # the first one runs on, undisturbed
    finally:
        first.send_signal(signal.SIGTERM)
        out, _ = first.communicate(timeout=60)
    assert first.returncode == 0, out
    with Database(db_path(data), create=False) as db:
        starts = [e for e in db.query_events(kind="state") if e.message.startswith("starting")]
    assert len(starts) == 1  # the second station never wrote a thing


def test_two_first_starts_at_once_build_one_demo(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "fast.toml"
    config.write_text(FAST)
    procs = [station(data, config, "--max-frames", "3") for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outs
    loser = outs[[p.returncode for p in procs].index(1)]
    assert "is in use by another station" in loser
    check_demo(data)
    assert (data / DEMO_PRODUCT_DIR / COMPLETE).is_file()
    assert ModelStore(data / "models").versions("demo") == ["v0001"]
    assert not leftovers(data)


def test_kill9_in_the_first_start_leaves_nothing_half_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "fast.toml"
    config.write_text(FAST)

    def temporaries() -> set[str]:
        return {p.name for p in data.glob(f".{DEMO_PRODUCT_DIR}.*")}

    def writing_product(before: set[str]) -> bool:
        # A temporary folder of this start (not the one an earlier killed start left), with
        # images already in it.
        return any(any((data / n).rglob("*.png")) for n in temporaries() - before)

    def fitting(before: set[str]) -> bool:
        return (data / DEMO_PRODUCT_DIR / COMPLETE).is_file()

    moments = [
        ("while the demo product is written", writing_product),
        ("again, while the demo product is written", writing_product),
        ("while the demo model is fitted", fitting),
    ]
    for what, moment in moments:
        before = temporaries()
        proc = station(data, config, "--max-frames", "3")
        try:
            wait_for(lambda m=moment, b=before: m(b), 120, what, proc)
        finally:
            proc.kill()  # SIGKILL
            proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, what
        check_demo(data)  # a killed start leaves nothing anyone would use
    assert not ModelStore(data / "models").versions("demo"), "the fit cannot have finished"

    proc = station(data, config, "--max-frames", "3")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    check_demo(data)
    assert ModelStore(data / "models").versions("demo") == ["v0001"]
    assert not leftovers(data), "the next start removes what the killed ones left"
    with Database(db_path(data), create=False) as db:
        assert db.count_inspections() == 3
