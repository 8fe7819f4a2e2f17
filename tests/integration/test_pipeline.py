"""The inspection line with real parts, as the app composes it: the replay camera on the demo
product, the demo model from the session fixture, and the recorder's SQLite file in tmp_path."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from station.app import StationApp
from station.config import DriftConfig, StationConfig
from station.core.result import (
    DriftLevel,
    InspectionResult,
    StationEvent,
    StationState,
    Verdict,
)
from station.inspect.pipeline import FrameQueue
from station.model.artifact import ONNX, ModelArtifact, load_artifact, write_artifact
from station.model.patchcore import PatchCore
from station.model.signing import Signer
from station.records import Database, db_path, shift_key

N_TEST_IMAGES = 30  # the conftest demo product: test/good 10 + 4 defect types x 5


def line_config(
    replay: Path,
    *,
    fps: float = 0.0,
    loop: bool = True,
    queue_size: int = 4,
    product: str = "demo",
    drift: DriftConfig | None = None,
) -> StationConfig:
    """The default config with the replay camera on `replay` and the given pacing."""
    cfg = StationConfig()
    replay_cfg = dataclasses.replace(
        cfg.camera.replay, path=str(replay), fps=fps, loop=loop, shuffle=False
    )
    return dataclasses.replace(
        cfg,
        camera=dataclasses.replace(cfg.camera, replay=replay_cfg),
        model=dataclasses.replace(cfg.model, product=product),
        inspection=dataclasses.replace(cfg.inspection, queue_size=queue_size),
        drift=drift or cfg.drift,
    )


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def state_events(events: list[StationEvent]) -> list[StationState | None]:
    return [e.state for e in events if e.kind == "state"]


@pytest.fixture
def station_factory(tmp_path: Path) -> Iterator[Callable[..., StationApp]]:
    """Stations that are always stopped at the end of the test, even when it fails."""
    made: list[StationApp] = []

    def make(cfg: StationConfig, data_dir: Path | None = None, **kwargs: object) -> StationApp:
        station = StationApp(cfg, data_dir or tmp_path / "data", **kwargs)  # type: ignore[arg-type]
        made.append(station)
        return station

    yield make
    for station in made:
        station.close()


def test_line_inspects_records_and_stops_by_itself(
    demo_product: Path,
    demo_patchcore: PatchCore,
    station_factory: Callable[..., StationApp],
    tmp_path,
) -> None:
    # A queue longer than the replay: every part is inspected, in order, none dropped.
    cfg = line_config(demo_product, loop=False, queue_size=64)
    station = station_factory(cfg, model=demo_patchcore)
    results: list[InspectionResult] = []
    events: list[StationEvent] = []
    station.subscribe(results.append, queue_size=64)
    station.subscribe_events(events.append)
    assert station.status().state == StationState.STOPPED
    station.start()
    assert station.wait(90), "the replay ended but the line did not stop by itself"

    st = station.status()
    assert st.state == StationState.STOPPED
    assert "replay finished" in st.reason
    assert st.counters.inspected == N_TEST_IMAGES
    assert st.counters.dropped == 0
    assert st.model_version == demo_patchcore.version
    assert st.threshold == pytest.approx(demo_patchcore.threshold)
    assert st.runtime == "onnx" and st.camera.startswith("replay")
    assert len(results) == N_TEST_IMAGES
    assert station.latest() is results[-1]

    for r in results:
        assert r.threshold == pytest.approx(demo_patchcore.threshold)
        assert r.verdict == (Verdict.NOK if r.score >= r.threshold else Verdict.OK)
        assert (r.anomaly_map is not None) == (r.verdict == Verdict.NOK)
        assert r.model_version == demo_patchcore.version
        assert r.latency_ms >= r.stages_ms.total > 0
        assert r.finished_at >= r.timestamp
    good = [r for r in results if r.label == "good"]
    bad = [r for r in results if r.label != "good"]
    assert len(good) == 10 and len(bad) == 20

    def nok_rate(rs: list[InspectionResult]) -> float:
        return sum(r.verdict == Verdict.NOK for r in rs) / len(rs)

    assert nok_rate(bad) > nok_rate(good)
    assert np.mean([r.score for r in bad]) > np.mean([r.score for r in good])

    # Every result is a row, with the same verdict, score and label.
    db = Database(db_path(tmp_path / "data"))
    try:
        assert db.integrity_check() == "ok"
        rows = sorted(db.query_inspections(), key=lambda r: r.frame_id)
        assert len(rows) == len(results)
        for row, r in zip(rows, sorted(results, key=lambda r: r.frame_id), strict=True):
            assert (row.frame_id, row.verdict, row.label) == (r.frame_id, r.verdict, r.label)
            assert row.score == pytest.approx(r.score)
            assert row.model_version == r.model_version
        # Every state change is an event with its reason, recorded, in order.
        recorded = sorted(db.query_events(kind="state"), key=lambda e: e.id)
        want = [
            StationState.STARTING,
            StationState.RUNNING,
            StationState.STOPPING,
            StationState.STOPPED,
        ]
        assert [e.state for e in recorded] == want
        assert all(e.message for e in recorded)
        assert db.query_events(kind="model"), "the model in use is an event"
    finally:
        db.close()
    assert state_events(events) == want  # subscribers got the same, stop included


def test_max_frames_stops_the_line(
    demo_product: Path, demo_patchcore: PatchCore, station_factory: Callable[..., StationApp]
) -> None:
    station = station_factory(
        line_config(demo_product, fps=50.0), model=demo_patchcore, max_frames=5
    )
    station.start()
    assert station.wait(60)
    st = station.status()
    assert st.state == StationState.STOPPED and st.counters.inspected == 5
    assert "5 frames inspected" in st.reason
    assert station.recorder.stats().recorded == 5


def test_counters_are_the_shifts_and_survive_a_restart(
    demo_product: Path,
    demo_patchcore: PatchCore,
    station_factory: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    """A station restarted mid-shift shows the shift's counts, not zero; the shift is named."""
    data = tmp_path / "data"
    runs = []
    for n in (5, 3):
        station = station_factory(
            line_config(demo_product, fps=50.0), data, model=demo_patchcore, max_frames=n
        )
        station.start()
        assert station.wait(60)
        runs.append(station.status().counters)
        station.stop(10)
    if runs[0].shift != runs[1].shift:
        pytest.skip("a shift began between the two runs")
    assert runs[0].shift == shift_key(time.time())
    assert (runs[0].inspected, runs[1].inspected) == (5, 8)
    assert runs[1].nok >= runs[0].nok


def test_camera_lost_and_back(
    demo_product: Path,
    demo_patchcore: PatchCore,
    station_factory: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    replay = tmp_path / "replay"
    shutil.copytree(demo_product / "test", replay)
    station = station_factory(line_config(replay, fps=20.0), model=demo_patchcore)
    events: list[StationEvent] = []
    station.subscribe_events(events.append)
    station.start()
    wait_until(lambda: station.status().counters.inspected >= 3, 30, "first inspections")

    gone = tmp_path / "replay_gone"
    replay.rename(gone)  # the share is unmounted / the cable pulled
    wait_until(lambda: station.status().state == StationState.CAMERA_LOST, 15, "camera lost")
    st = station.status()
    assert "camera lost" in st.reason and str(replay) in st.reason
    time.sleep(1.0)  # a few reconnect attempts fail meanwhile
    assert station.status().state == StationState.CAMERA_LOST
    n_lost = station.status().counters.inspected

    gone.rename(replay)
    wait_until(lambda: station.status().state == StationState.RUNNING, 20, "camera back")
    assert "camera back after" in station.status().reason
    wait_until(lambda: station.status().counters.inspected > n_lost + 2, 30, "inspections again")
    assert station.stop(10)

    seq = state_events(events)
    i_lost = seq.index(StationState.CAMERA_LOST)
    assert seq[i_lost - 1] == StationState.RUNNING
    assert seq[i_lost + 1] == StationState.RUNNING  # by itself, no operator involved
    assert seq.count(StationState.CAMERA_LOST) == 1  # retries are not events
    db = Database(db_path(tmp_path / "data"))
    try:
        recorded = sorted(db.query_events(kind="state"), key=lambda e: e.id)
        states = [e.state for e in recorded]
        j = states.index(StationState.CAMERA_LOST)
        assert states[j + 1] == StationState.RUNNING
        assert "camera lost" in recorded[j].message
        assert "camera back" in recorded[j + 1].message
    finally:
        db.close()


def test_pause_and_resume(
    demo_product: Path, demo_patchcore: PatchCore, station_factory: Callable[..., StationApp]
) -> None:
    station = station_factory(line_config(demo_product, fps=20.0), model=demo_patchcore)
    station.start()
    wait_until(lambda: station.status().counters.inspected >= 2, 30, "first inspections")
    station.pause(station.shell_session())
    assert station.status().state == StationState.PAUSED
    time.sleep(0.6)  # queued frames are still inspected, then nothing
    n = station.status().counters.inspected
    time.sleep(0.6)
    assert station.status().counters.inspected == n
    station.resume(station.shell_session())
    assert station.status().state == StationState.RUNNING
    wait_until(lambda: station.status().counters.inspected > n, 30, "inspections after resume")


def _inspector_gap_ms(results: list[InspectionResult]) -> float:
    """Inspector time per frame not spent in the model (frame time - model time).

    Compared instead of raw throughput: the model's own speed follows whatever else the shared
    CPU is doing, while this gap only grows if something holds up the inspector thread.
    """
    rs = sorted(results, key=lambda r: r.finished_at)
    frame_ms = (rs[-1].finished_at - rs[0].finished_at) * 1e3 / (len(rs) - 1)
    return frame_ms - float(np.mean([r.stages_ms.total for r in rs[1:]]))


def test_drops_counted_and_slow_subscriber_does_not_slow_inspection(
    demo_product: Path,
    demo_patchcore: PatchCore,
    station_factory: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    n = 16
    cfg = line_config(demo_product, fps=0.0, queue_size=1)  # the camera outruns the model

    def run(data: Path, slow: bool) -> tuple[StationApp, list[InspectionResult], int]:
        station = station_factory(cfg, data, model=demo_patchcore, max_frames=n)
        got: list[InspectionResult] = []
        station.subscribe(got.append, queue_size=n)
        slow_seen: list[int] = []
        sub = None
        if slow:

            def sleepy(r: InspectionResult) -> None:
                time.sleep(0.5)  # a display that froze, an output on a dead network share
                slow_seen.append(r.frame_id)

            sub = station.subscribe(sleepy, queue_size=2)
        station.start()
        assert station.wait(60)
        return station, got, (sub.dropped if sub is not None else 0)

    fast_line, fast, _ = run(tmp_path / "a", slow=False)
    slow_line, slow, slow_dropped = run(tmp_path / "b", slow=True)
    for station, got in ((fast_line, fast), (slow_line, slow)):
        st = station.status()
        assert st.counters.inspected == n == len(got)
        assert st.counters.dropped > 0, "a camera faster than the model drops frames"
        assert station.recorder.shift_counts().dropped == st.counters.dropped
        # Latency stays bounded: at most the frame in the queue plus the one in the model.
        model_ms = max(r.stages_ms.total for r in got)
        assert max(r.latency_ms for r in got) < 3 * model_ms + 250
    assert slow_dropped > 0, "the slow subscriber loses its own items"
    # A subscriber that held up the inspector would add its 500 ms to every frame.
    gap_fast, gap_slow = _inspector_gap_ms(fast), _inspector_gap_ms(slow)
    assert gap_slow < 50.0, (gap_fast, gap_slow)
    assert gap_slow < gap_fast + 30.0, (gap_fast, gap_slow)


def test_model_missing_then_installed(
    demo_product: Path,
    demo_model: Path,
    station_factory: Callable[..., StationApp],
    tmp_path: Path,
    trust_plant_key: Callable[[Path], Path],
    plant_key: Signer,
) -> None:
    data = trust_plant_key(tmp_path / "data")
    station = station_factory(line_config(demo_product, fps=20.0, product="widget"), data)
    station.start()
    wait_until(lambda: station.status().state == StationState.MODEL_MISSING, 15, "model missing")
    st = station.status()
    assert "no model for product 'widget'" in st.reason
    assert st.counters.inspected == 0 and not (data / "models" / "demo").exists()

    # Another product's model copied into this product's folder is refused, naming both.
    wrong = data / "models" / "widget" / "v0001"
    shutil.copytree(demo_model, wrong)
    station.line.reload_model()
    wait_until(lambda: "made for product 'demo'" in station.status().reason, 30, "refusal")
    assert station.status().state == StationState.MODEL_MISSING
    assert "not 'widget'" in station.status().reason and station.status().counters.inspected == 0

    # A technician installs a model made for the product: picked up without a restart.
    demo = load_artifact(demo_model)
    shutil.rmtree(wrong)
    widget = dataclasses.replace(demo.manifest, product="widget", version="v0002", files={})
    write_artifact(
        data / "models" / "widget" / "v0002", widget, demo.bank, demo_model / ONNX, plant_key
    )
    station.line.reload_model()
    wait_until(
        lambda: station.status().state == StationState.RUNNING, 30, "running with the new model"
    )
    wait_until(lambda: station.status().counters.inspected >= 2, 30, "inspections")
    assert station.status().model_version == "widget/v0002"
    assert station.stop(10)
    db = Database(db_path(data))
    try:
        states = [e.state for e in sorted(db.query_events(kind="state"), key=lambda e: e.id)]
    finally:
        db.close()
    # Missing, then the same state with its new reason (the wrong product), then running.
    missing = StationState.MODEL_MISSING
    assert states[:3] == [StationState.STARTING, missing, missing]
    assert states.index(StationState.RUNNING) > 2


def test_drift_level_changes_are_events(
    demo_product: Path,
    demo_patchcore: PatchCore,
    station_factory: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    # The same engine with a manifest whose baseline sits far below today's scores: the line
    # must feed OK scores to the drift monitor and record its level change.
    a = demo_patchcore.artifact
    baseline = [1.0 + 0.01 * i for i in range(40)]
    manifest = dataclasses.replace(a.manifest, calibration_scores=baseline, threshold=1e9)
    shifted = PatchCore(
        ModelArtifact(a.path, manifest, a.bank), demo_patchcore.runtime, demo_patchcore.bank
    )
    drift = DriftConfig(window=20, min_samples=8)
    station = station_factory(
        line_config(demo_product, queue_size=1, drift=drift), model=shifted, max_frames=12
    )
    events: list[StationEvent] = []
    station.subscribe_events(events.append)
    station.start()
    assert station.wait(60)
    st = station.status()
    assert st.drift is not None and st.drift.level == DriftLevel.CRITICAL
    drift_events = [e for e in events if e.kind == "drift"]
    assert drift_events and drift_events[0].data["level"] == "critical"
    db = Database(db_path(tmp_path / "data"))
    try:
        assert [e.data["level"] for e in db.query_events(kind="drift")] == ["critical"]
    finally:
        db.close()


def test_frame_queue_drops_oldest_and_counts() -> None:
    dropped: list[int] = []
    q = FrameQueue(2, on_drop=dropped.append)
    from station.core.result import Frame

    frames = [Frame(np.zeros((2, 2), np.uint8), time.time(), i, "t") for i in range(5)]
    for f in frames:
        q.put(f)
    assert q.dropped == 3 and sum(dropped) == 3
    got = [q.get(0.01), q.get(0.01)]
    assert [f.frame_id for f in got if isinstance(f, Frame)] == [3, 4]
    assert q.get(0.01) is None
    # A consumer waiting on an empty queue wakes as soon as a frame arrives.
    t = threading.Timer(0.05, q.put, args=(frames[0],))
    t.start()
    assert q.get(2.0) is frames[0]
