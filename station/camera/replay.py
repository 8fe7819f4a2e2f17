"""Replay a folder of images or a video file as if it were a camera on the line."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import cv2
import numpy as np

from station.camera.base import CameraContext, CameraInfo
from station.config import ReplayConfig
from station.core.errors import CameraError, ImageError
from station.core.imageio import IMAGE_SUFFIXES, read_image, to_engine_image
from station.core.result import BadFrame, Frame

__all__ = ["VIDEO_SUFFIXES", "ReplayCamera", "scan_folder"]

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _labelled(folder: Path) -> list[tuple[Path, str | None]]:
    """Images in each sub-folder of `folder`, labelled with the sub-folder's name."""
    items: list[tuple[Path, str | None]] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        items += [(img, sub.name) for img in _images_in(sub)]
    return items


def scan_folder(root: Path) -> tuple[list[tuple[Path, str | None]], str]:
    """List (image, label) pairs under `root` and name the layout found.

    MVTec layout (a `test/` and/or `train/` folder): the images of `test/<type>/`, labelled with
    `<type>` ("good" or the defect type); `train/<type>/` only when there is no `test/`. A flat
    folder: its images, unlabelled. A folder of sub-folders only: each sub-folder's name is the
    label (e.g. an MVTec `test/` folder given directly).
    """
    try:
        if (root / "test").is_dir():
            return _labelled(root / "test"), "mvtec"
        if (root / "train").is_dir():
            return _labelled(root / "train"), "mvtec"
        flat = _images_in(root)
        if flat:
            return [(p, None) for p in flat], "flat"
        return _labelled(root), "labelled-folders"
    except FileNotFoundError:
        raise CameraError(f"replay folder {root} is gone (renamed, deleted or unmounted)") from None
    except OSError as exc:
        raise CameraError(f"replay folder {root} cannot be read: {exc}") from None


class ReplayCamera(CameraContext):
    """Frames from a folder (sorted or seeded-shuffled, optionally looping) or a video file.

    `fps` paces delivery like a line (0 = as fast as the consumer takes them). Each frame carries
    the ground-truth label when the folder is in MVTec layout. If the folder or video disappears
    mid-stream, `frames()` raises CameraError; `open()` works again once it is back, and resumes
    where the replay stopped when the folder's content is unchanged.
    """

    kind = "replay"

    def __init__(
        self,
        path: str | Path,
        *,
        loop: bool = True,
        fps: float = 2.0,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        self.path = Path(path).expanduser()
        self.loop = loop
        self.fps = max(0.0, float(fps))
        self.shuffle = shuffle
        self._rng = random.Random(seed)
        self._closed = threading.Event()
        self._closed.set()
        self._lock = threading.Lock()
        self._layout = ""
        self._items: list[tuple[Path, str | None]] = []
        self._order: list[tuple[Path, str | None]] = []
        self._cursor = 0  # next index into _order; kept across a reopen
        self._video_pos = 0
        self._frame_id = 0
        self._next_due: float | None = None
        self.skipped = 0  # unreadable files passed over (each also given as a BadFrame)
        self.max_megapixels: float | None = 40.0  # bigger files are refused before decoding

    @classmethod
    def from_config(
        cls, cfg: ReplayConfig, path: str | Path | None = None, *, max_megapixels: float = 40.0
    ) -> ReplayCamera:
        """Build from `[camera.replay]`; `path` overrides `cfg.path` (e.g. the demo product)."""
        camera = cls(path or cfg.path, loop=cfg.loop, fps=cfg.fps, shuffle=cfg.shuffle)
        camera.max_megapixels = max_megapixels
        return camera

    # -- Camera protocol -------------------------------------------------------------------
    def open(self) -> None:
        """Check the source exists and list it; idempotent."""
        with self._lock:
            if not self._closed.is_set():
                return
            if not self.path.exists():
                raise CameraError(f"replay source {self.path} does not exist")
            if self._is_video():
                self._layout = "video"
                self._probe_video()
            else:
                items, layout = scan_folder(self.path)
                if not items:
                    raise CameraError(
                        f"replay folder {self.path} holds no images "
                        f"({', '.join(IMAGE_SUFFIXES)}) directly or in its sub-folders"
                    )
                if items != self._items or self._cursor >= len(self._order):
                    # New or changed content, or a finished replay: start a fresh pass.
                    self._items, self._order, self._cursor = items, [], 0
                self._layout = layout
            self._frame_id = 0
            self._next_due = None
            self._closed.clear()

    def close(self) -> None:
        """Stop delivering; a frames() iterator blocked in its pacing wait returns at once."""
        self._closed.set()

    def frames(self) -> Generator[Frame | BadFrame, None, None]:
        """Yield frames until closed or (without loop) exhausted; CameraError if the source goes."""
        self.open()
        if self._layout == "video":
            yield from self._video_frames()
        else:
            yield from self._file_frames()

    def info(self) -> CameraInfo:
        """Describe the replay source."""
        extra = {"path": str(self.path), "layout": self._layout, "loop": str(self.loop)}
        if self._layout != "video":
            extra["images"] = str(len(self._items))
            labels = sorted({lab for _, lab in self._items if lab is not None})
            if labels:
                extra["labels"] = ", ".join(labels)
        return CameraInfo(kind=self.kind, model=self.path.name, fps=self.fps or None, extra=extra)

    # -- internals ---------------------------------------------------------------------------
    def _is_video(self) -> bool:
        return self.path.is_file() and self.path.suffix.lower() not in IMAGE_SUFFIXES

    def _wait_turn(self) -> bool:
        """Sleep until the next frame is due at the configured rate; False once closed."""
        if self.fps > 0:
            now = time.monotonic()
            due = self._next_due if self._next_due is not None else now
            if due > now and self._closed.wait(due - now):
                return False
            # A slow consumer does not earn a burst of catch-up frames: parts arrive at a rate.
            self._next_due = max(due, time.monotonic() - 1.0 / self.fps) + 1.0 / self.fps
        return not self._closed.is_set()

    def _lost(self, why: str) -> CameraError:
        self._closed.set()  # the next frames()/open() rescans the source
        return CameraError(f"replay source {self.path} lost: {why}")

    def _next_pass(self) -> bool:
        """Prepare the order of the next pass over the folder; False when replay is over."""
        if self._order and self._cursor < len(self._order):
            return True
        if self._order and not self.loop:
            return False
        if self._order:  # looping: pick up files added or removed since the last pass
            if not self.path.is_dir():
                raise self._lost("the folder is gone (renamed, deleted or unmounted)")
            items, _ = scan_folder(self.path)
            if not items:
                raise self._lost("the folder no longer holds any image")
            self._items = items
        self._order = list(self._items)
        if self.shuffle:
            self._rng.shuffle(self._order)  # seeded: a line sees mixed parts, reproducibly
        self._cursor = 0
        return True

    def _file_frames(self) -> Iterator[Frame | BadFrame]:
        unreadable_in_a_row = 0
        while self._next_pass():
            path, label = self._order[self._cursor]
            if not self._wait_turn():
                return
            self._cursor += 1
            try:
                image = read_image(path, self.max_megapixels)
            except ImageError as exc:
                if not self.path.is_dir():
                    raise self._lost("the folder is gone (renamed, deleted or unmounted)") from None
                # One bad file must not stop a demo; a folder of bad files must not spin.
                self.skipped += 1
                unreadable_in_a_row += 1
                log.warning("replay: skipping unreadable image: %s", exc)
                if unreadable_in_a_row >= len(self._order):
                    raise self._lost(f"none of its {len(self._order)} images can be read") from None
                yield BadFrame(str(exc), f"replay:{self.path}", str(path))
                continue
            unreadable_in_a_row = 0
            frame = Frame(
                image=image,
                timestamp=time.time(),
                frame_id=self._frame_id,
                source=f"replay:{self.path}",
                label=label,
                path=str(path),
            )
            self._frame_id += 1
            yield frame

    def _probe_video(self) -> None:
        cap = cv2.VideoCapture(str(self.path))
        try:
            if not cap.isOpened():
                raise CameraError(f"replay video {self.path} cannot be opened (codec or file)")
        finally:
            cap.release()

    def _video_frames(self) -> Iterator[Frame]:
        while True:
            if not self.path.is_file():
                raise self._lost("the video file is gone (renamed, deleted or unmounted)")
            cap = cv2.VideoCapture(str(self.path))
            try:
                if not cap.isOpened():
                    raise self._lost("the video file cannot be opened any more")
                total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
                if self._video_pos:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, self._video_pos)
                while True:
                    if not self._wait_turn():
                        return
                    ok, bgr = cap.read()
                    if not ok:
                        if not self.path.is_file():
                            raise self._lost("the video file is gone mid-stream")
                        if total > 0 and self._video_pos < total - 1:
                            raise self._lost(f"cannot decode frame {self._video_pos} of {total}")
                        break  # end of the video
                    image = self._to_rgb(bgr)
                    frame = Frame(
                        image=image,
                        timestamp=time.time(),
                        frame_id=self._frame_id,
                        source=f"replay:{self.path}",
                        path=f"{self.path}#{self._video_pos}",
                    )
                    self._frame_id += 1
                    self._video_pos += 1
                    yield frame
            finally:
                cap.release()
            if self._video_pos == 0:
                raise self._lost("the video holds no decodable frame")
            self._video_pos = 0
            if not self.loop:
                return

    def _to_rgb(self, bgr: np.ndarray) -> np.ndarray:
        if bgr.ndim == 3 and bgr.shape[2] == 3:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        try:
            return to_engine_image(bgr, f"{self.path}#{self._video_pos}")
        except ImageError as exc:
            raise CameraError(str(exc)) from None
