"""ReplayCamera: folders (flat and MVTec), videos, pacing, loss and reopen; the camera factory."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from station.camera import Camera, ReplayCamera, open_camera
from station.camera.genicam import GenICamCamera
from station.camera.uvc import UVCCamera
from station.config import CameraConfig, GenICamConfig, ReplayConfig, UVCConfig
from station.core.errors import CameraError
from station.core.result import BadFrame, Frame


def _write(path: Path, value: int, size: tuple[int, int] = (24, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.zeros((*size, 3), np.uint8)
    img[..., 2] = value  # OpenCV writes BGR: this is the red channel
    assert cv2.imwrite(str(path), img)


@pytest.fixture
def flat(tmp_path: Path) -> Path:
    root = tmp_path / "flat"
    for i, name in enumerate(["c.png", "a.png", "b.png"]):
        _write(root / name, 10 * (i + 1))
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def mvtec(tmp_path: Path) -> Path:
    root = tmp_path / "product"
    for i in range(3):
        _write(root / "train" / "good" / f"{i:03d}.png", 1)
    for i in range(4):
        _write(root / "test" / "good" / f"{i:03d}.png", 2)
    for i in range(2):
        _write(root / "test" / "scratch" / f"{i:03d}.png", 3)
        _write(root / "test" / "spot" / f"{i:03d}.png", 4)
    (root / "ground_truth" / "scratch").mkdir(parents=True)
    return root


def test_flat_folder_sorted_unlabelled_rgb(flat: Path) -> None:
    cam = ReplayCamera(flat, fps=0, loop=False)
    assert isinstance(cam, Camera)
    with cam:
        frames = list(cam.frames())
    assert [Path(f.path or "").name for f in frames] == ["a.png", "b.png", "c.png"]
    assert [f.frame_id for f in frames] == [0, 1, 2]
    assert all(f.label is None and f.device_frame_id is None for f in frames)
    img = frames[0].image
    assert img.shape == (24, 32, 3) and img.dtype == np.uint8
    assert img[0, 0].tolist() == [20, 0, 0]  # a.png was written second: red = 20, in RGB order
    assert frames[0].source == f"replay:{flat}"
    assert cam.info().kind == "replay" and cam.info().extra["layout"] == "flat"


def test_mvtec_layout_replays_test_with_labels(mvtec: Path) -> None:
    with ReplayCamera(mvtec, fps=0, loop=False) as cam:
        frames = list(cam.frames())
    assert len(frames) == 8  # test/ only, never train/
    labels = [f.label for f in frames]
    assert labels == ["good"] * 4 + ["scratch"] * 2 + ["spot"] * 2
    assert all("/test/" in (f.path or "") for f in frames)
    assert cam.info().extra["labels"] == "good, scratch, spot"


def test_shuffle_interleaves_reproducibly(mvtec: Path) -> None:
    def order(seed: int) -> list[str]:
        cam = ReplayCamera(mvtec, fps=0, loop=False, shuffle=True, seed=seed)
        with cam:
            return [f.path or "" for f in cam.frames()]

    a, b = order(0), order(0)
    assert a == b
    assert sorted(a) == sorted(order(1))
    labels = [Path(p).parent.name for p in a]
    assert labels != sorted(labels)  # a line sees mixed parts, not all good then all bad


def test_loop_repeats_and_stops_when_not_looping(flat: Path) -> None:
    with ReplayCamera(flat, fps=0, loop=True) as cam:
        frames = list(itertools.islice(cam.frames(), 7))
    assert [Path(f.path or "").name for f in frames] == ["a.png", "b.png", "c.png"] * 2 + ["a.png"]
    assert [f.frame_id for f in frames] == list(range(7))


def test_rate_is_paced(flat: Path) -> None:
    with ReplayCamera(flat, fps=20, loop=True) as cam:
        it = cam.frames()
        t0 = time.monotonic()
        for _ in range(6):
            next(it)
        elapsed = time.monotonic() - t0
    assert 0.2 <= elapsed < 1.0  # 5 intervals of 50 ms


def test_close_from_another_thread_wakes_a_paced_wait(flat: Path) -> None:
    cam = ReplayCamera(flat, fps=0.2, loop=True)
    cam.open()
    it = cam.frames()
    next(it)
    threading.Timer(0.1, cam.close).start()
    t0 = time.monotonic()
    assert next(it, None) is None
    assert time.monotonic() - t0 < 2.0


def test_folder_gone_mid_stream_then_reopen(flat: Path) -> None:
    cam = ReplayCamera(flat, fps=0, loop=True)
    it = cam.frames()
    assert Path(next(it).path or "").name == "a.png"
    moved = flat.with_name("flat_moved")
    flat.rename(moved)
    with pytest.raises(CameraError, match="lost: the folder is gone"):
        next(it)
    with pytest.raises(CameraError, match="does not exist"):
        cam.open()
    moved.rename(flat)
    cam.open()
    names = [Path(f.path or "").name for f in itertools.islice(cam.frames(), 3)]
    assert names == [
        "c.png",
        "a.png",
        "b.png",
    ]  # resumes; b.png went with the folder
    cam.close()


def test_empty_missing_and_unreadable(tmp_path: Path, flat: Path) -> None:
    with pytest.raises(CameraError, match="does not exist"):
        ReplayCamera(tmp_path / "nowhere").open()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CameraError, match="holds no images"):
        ReplayCamera(tmp_path / "empty").open()
    (flat / "b.png").write_bytes(b"not a png")
    with ReplayCamera(flat, fps=0, loop=False) as cam:
        items = list(cam.frames())
    names = [Path(f.path or "").name for f in items if isinstance(f, Frame)]
    bad = [f for f in items if isinstance(f, BadFrame)]
    assert names == ["a.png", "c.png"] and cam.skipped == 1
    # The unreadable file is not skipped in silence: the line gets its reason to count.
    assert len(bad) == 1 and Path(bad[0].path or "").name == "b.png"
    assert "not a readable image" in bad[0].reason
    for name in ("a.png", "c.png"):
        (flat / name).write_bytes(b"junk")
    with pytest.raises(CameraError, match="none of its 3 images can be read"):
        list(ReplayCamera(flat, fps=0, loop=True).frames())


def test_video_file(tmp_path: Path) -> None:
    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 10, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), (0, 0, 40 * i), np.uint8))
    writer.release()
    with ReplayCamera(video, fps=0, loop=False) as cam:
        frames = list(cam.frames())
    assert len(frames) == 5 and frames[0].image.shape == (48, 64, 3)
    assert frames[4].image[..., 0].mean() > frames[1].image[..., 0].mean()  # red grows, RGB
    assert frames[2].path == f"{video}#2"
    with ReplayCamera(video, fps=0, loop=True) as cam:
        assert len(list(itertools.islice(cam.frames(), 12))) == 12
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"nothing")
    with pytest.raises(CameraError, match="cannot be opened"):
        ReplayCamera(bad).open()


def test_factory_builds_each_source(tmp_path: Path, flat: Path) -> None:
    cam = open_camera(CameraConfig(source="replay", replay=ReplayConfig(path=str(flat), fps=0)))
    assert isinstance(cam, ReplayCamera) and cam.path == flat and cam.fps == 0
    cam = open_camera(CameraConfig(source="replay"), device=str(flat))
    assert isinstance(cam, ReplayCamera) and cam.path == flat
    gc = open_camera(CameraConfig(source="genicam", genicam=GenICamConfig(device="7")))
    assert isinstance(gc, GenICamCamera) and gc.device_spec == "7"
    assert isinstance(open_camera(CameraConfig(source="genicam"), device="X"), GenICamCamera)
    uvc = open_camera(CameraConfig(source="uvc", uvc=UVCConfig(index=2)), device="3")
    assert isinstance(uvc, UVCCamera) and uvc.index == 3
    with pytest.raises(CameraError, match="index"):
        open_camera(CameraConfig(source="uvc"), device="front")
    with pytest.raises(CameraError, match="not one of"):
        open_camera(CameraConfig(source="firewire"))


def test_app_camera_writes_the_demo_product_once(tmp_path: Path) -> None:
    from station.app import StationApp
    from station.app.demo import is_complete
    from station.config import StationConfig

    cfg = StationConfig(camera=CameraConfig(replay=ReplayConfig(fps=0, shuffle=True)))
    app = StationApp(cfg, tmp_path)
    cam = app.camera()
    assert isinstance(cam, ReplayCamera) and cam.path == tmp_path / "demo_product"
    assert is_complete(tmp_path / "demo_product")
    with cam:
        frames = list(itertools.islice(cam.frames(), 20))
    assert {f.label for f in frames} >= {"good"} and len({f.label for f in frames}) > 1
    stamp = (tmp_path / "demo_product").stat().st_mtime_ns
    assert app.camera().path == tmp_path / "demo_product"
    assert (tmp_path / "demo_product").stat().st_mtime_ns == stamp  # not written again


def test_factory_without_a_replay_path_says_so() -> None:
    with pytest.raises(CameraError, match=r"camera\.replay\.path is empty"):
        open_camera(CameraConfig())


def test_grab_command_from_a_folder(
    tmp_path: Path, mvtec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from station.cli import main

    config = tmp_path / "fast.toml"
    config.write_text("[camera.replay]\nfps = 0\nshuffle = false\n")
    out = tmp_path / "out"
    args = ["grab", "--config", str(config), "--source", "replay", "--device", str(mvtec)]
    assert main([*args, "--n", "5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "saved 5 frames (24x32x3 uint8)" in text and "lost frames: n/a" in text
    names = sorted(p.name for p in out.glob("*.png"))
    assert names[0] == "frame_000000_good.png" and len(names) == 5
    saved = cv2.imread(str(out / names[0]))
    assert saved is not None and saved[0, 0].tolist() == [0, 0, 2]  # written back as BGR
    assert main([*args, "--n", "1", "--out", str(out), "--set", "Width=64"]) == 1
    assert "--set applies to GenICam features only" in capsys.readouterr().err


def test_status_text_names_a_replay_folder_once():
    """The demo replays a folder called 'replay': the status bar said 'replay replay @ 2 fps'."""
    from station.camera.base import CameraInfo
    from station.inspect.pipeline import describe_camera

    assert describe_camera(CameraInfo(kind="replay", model="replay", fps=2.0)) == "replay @ 2 fps"
    assert describe_camera(CameraInfo(kind="replay", model="boards", fps=None)) == "replay boards"
    genicam = CameraInfo(kind="genicam", vendor="Basler", model="a2A1920", serial="4012")
    assert describe_camera(genicam) == "genicam Basler a2A1920 4012"
