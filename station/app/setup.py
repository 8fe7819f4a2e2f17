"""The technician's product setup: the model behind the Setup wizard's screens.

A `SetupSession` is one technician's work on one product: check the camera live, collect good
(and known-bad) parts, build a model in the background, validate it on held-back good parts and
the known-bad ones, choose the limits, save a new sealed version and activate it. The screens
only show what it holds and call its methods; every method that changes something goes through
the app (role checked, audited). Nothing here touches Qt.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from station.app.access import Session
from station.app.roles import Action
from station.camera.base import Camera
from station.core.errors import CameraError, StationError
from station.core.files import write_atomic
from station.core.imageio import list_images, read_image
from station.core.result import BadFrame, Frame
from station.core.worker import Worker
from station.inspect.camera_check import CameraCheck, CameraReport, check_frame, gray_unit
from station.inspect.decision import threshold_for_fnr

if TYPE_CHECKING:
    from station.app.station_app import ModelVersion, StationApp
    from station.model.training import FitProgress, FitReport

log = logging.getLogger(__name__)

TARGET_PARTS = 100
DUPLICATE_DIFF = 0.01  # mean |difference| of 32x32 thumbnails (0..1) below which two parts match
BLUR_SHARE = 0.5  # a part whose focus is under half the collected parts' median is blurred
HOLDOUT = 0.2  # good parts kept out of the bank to validate the limit on
OUTLIER_Z = 3.5  # a training part this many robust deviations above the rest is suspect
CANDIDATES = ".candidates"


# -- collecting parts ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """What happened to one offered part."""

    accepted: bool
    kind: str  # "good" or "bad"
    reason: str  # "accepted as good part 12", "near-duplicate of good part 7", "blurred ..."
    path: Path | None = None


def _thumb(image: np.ndarray) -> np.ndarray:
    return cv2.resize(gray_unit(image), (32, 32), interpolation=cv2.INTER_AREA).ravel()


class Collector:
    """Good and known-bad parts saved into the product's folders, with near-duplicates and
    blurred frames refused (each with its reason)."""

    def __init__(self, folders: dict[str, Path], target: int = TARGET_PARTS) -> None:
        self.folders = folders
        self.target = target
        self._lock = threading.Lock()
        self._thumbs: dict[str, list[np.ndarray]] = {k: [] for k in folders}
        self._focus: dict[str, list[float]] = {k: [] for k in folders}
        self._files: dict[str, list[Path]] = {k: [] for k in folders}
        self.refused = 0
        for kind, folder in folders.items():  # parts collected earlier count and are compared
            for p in list_images(folder) if folder.is_dir() else []:
                try:
                    self._remember(kind, read_image(p), p)
                except StationError as exc:
                    log.warning("collected part %s unreadable, ignored: %s", p, exc)

    def count(self, kind: str = "good") -> int:
        """Parts of `kind` collected so far."""
        with self._lock:
            return len(self._files[kind])

    def files(self, kind: str = "good") -> list[Path]:
        """The collected parts of `kind`, in the order collected."""
        with self._lock:
            return list(self._files[kind])

    def _remember(self, kind: str, image: np.ndarray, path: Path) -> None:
        self._thumbs[kind].append(_thumb(image))
        self._focus[kind].append(check_frame(image).focus)
        self._files[kind].append(path)

    def offer(self, image: np.ndarray, kind: str = "good") -> Decision:
        """Keep `image` as a collected part of `kind`, or say why not."""
        if kind not in self.folders:
            raise ValueError(f"part kind must be one of {sorted(self.folders)}, not {kind!r}")
        thumb = _thumb(image)
        focus = check_frame(image).focus
        with self._lock:
            thumbs = self._thumbs[kind]
            if thumbs:
                diffs = np.abs(np.stack(thumbs) - thumb).mean(axis=1)
                j = int(np.argmin(diffs))
                if diffs[j] < DUPLICATE_DIFF:
                    self.refused += 1
                    return Decision(
                        False,
                        kind,
                        f"near-duplicate of {kind} part {j + 1} ({100 * diffs[j]:.1f} %)",
                    )
            known = self._focus[kind]
            if len(known) >= 5:
                typical = float(np.median(known))
                if focus < BLUR_SHARE * typical:
                    self.refused += 1
                    return Decision(
                        False, kind, f"blurred (focus {focus:.0f}, the parts so far {typical:.0f})"
                    )
            n = len(self._files[kind]) + 1
            folder = self.folders[kind]
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{n:04d}.png"
            while path.exists():
                n += 1
                path = folder / f"{n:04d}.png"
            ok, data = cv2.imencode(".png", image if image.ndim == 2 else image[..., ::-1])
            if not ok:
                raise StationError(f"{path}: the part cannot be encoded as PNG")
            write_atomic(path, data.tobytes())
            self._thumbs[kind].append(thumb)
            self._focus[kind].append(focus)
            self._files[kind].append(path)
            return Decision(True, kind, f"accepted as {kind} part {len(self._files[kind])}", path)

    def drop(self, names: list[str], into: Path) -> int:
        """Move collected good parts out of the good ones (e.g. a training outlier)."""
        into.mkdir(parents=True, exist_ok=True)
        moved = 0
        with self._lock:
            for i in reversed(range(len(self._files["good"]))):
                p = self._files["good"][i]
                if p.name in names:
                    shutil.move(str(p), str(into / p.name))
                    for table in (self._files, self._thumbs, self._focus):
                        del table["good"][i]
                    moved += 1
        return moved


# -- the live camera ----------------------------------------------------------------------------
class SetupCamera(Worker):
    """Streams the product's camera for the camera check and the collection, without a model."""

    name = "setup-camera"

    def __init__(self, camera: Callable[[], Camera]) -> None:
        super().__init__()
        self._make = camera
        self._camera: Camera | None = None
        self._frames: Any = None
        self._lock = threading.Lock()
        self._latest: tuple[Frame, CameraReport] | None = None
        self.check = CameraCheck()
        self.listener: Callable[[Frame], None] | None = None
        self.problem: str | None = None

    @property
    def camera(self) -> Camera | None:
        return self._camera

    def setup(self) -> None:
        self._camera = self._make()
        self._camera.open()
        self._frames = iter(self._camera.frames())

    def step(self) -> bool:
        try:
            frame = next(self._frames)
        except StopIteration:
            self.problem = "the camera delivered its last frame"
            return False
        except CameraError as exc:
            self.problem = f"camera lost: {exc}"
            return False
        if isinstance(frame, BadFrame):
            log.warning("camera check: frame refused: %s", frame.reason)
            return True
        report = self.check.add(frame)
        with self._lock:
            self._latest = (frame, report)
        listener = self.listener
        if listener is not None:
            listener(frame)
        return True

    def stop(self) -> None:
        super().stop()
        cam = self._camera
        if cam is not None:
            try:
                cam.close()  # ends a wait for the next frame
            except Exception:
                log.exception("camera close failed")

    def teardown(self) -> None:
        if self._camera is not None:
            try:
                self._camera.close()
            except Exception:
                log.exception("camera close failed")

    def latest(self) -> tuple[Frame, CameraReport] | None:
        """The newest frame and the figures with it."""
        with self._lock:
            return self._latest


# -- building ------------------------------------------------------------------------------------
class BuildJob:
    """A fit on its own thread: progress, the time left, cancel; the line keeps inspecting."""

    def __init__(self, run: Callable[[Callable[[FitProgress], None], threading.Event], FitReport]):
        self.cancel_event = threading.Event()
        self.progress: FitProgress | None = None
        self.report: FitReport | None = None
        self.error: BaseException | None = None
        self.state = "running"  # running | done | cancelled | failed
        self._thread = threading.Thread(target=self._run, args=(run,), name="setup-build")
        self._thread.daemon = True
        self._thread.start()

    def _run(self, run: Callable[..., FitReport]) -> None:
        from station.model.training import FitCancelled

        try:
            self.report = run(self._progress, self.cancel_event)
            self.state = "done"
        except FitCancelled:
            self.state = "cancelled"
        except BaseException as exc:  # shown to the technician; the log has the traceback
            log.exception("build failed")
            self.error = exc
            self.state = "failed"

    def _progress(self, p: FitProgress) -> None:
        self.progress = p

    def cancel(self) -> None:
        """Stop at the next step; nothing is written."""
        self.cancel_event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until it ended; True when it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


# -- validating ----------------------------------------------------------------------------------
def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson interval of a rate k / n (0..1 when n is 0)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Rates:
    """What a limit (and a check band) does to the validation parts."""

    limit: float
    check: float | None
    n_good: int
    n_bad: int
    false_rejects: int  # good parts at or above the limit
    misses: int  # bad parts below the limit (and below the check band)
    checked_good: int  # good parts in the check band
    checked_bad: int  # bad parts in the check band (caught by the manual check)

    @property
    def fpr(self) -> float:
        return self.false_rejects / self.n_good if self.n_good else float("nan")

    @property
    def fnr(self) -> float:
        return self.misses / self.n_bad if self.n_bad else float("nan")

    @property
    def fpr_interval(self) -> tuple[float, float]:
        return wilson(self.false_rejects, self.n_good)

    @property
    def fnr_interval(self) -> tuple[float, float]:
        return wilson(self.misses, self.n_bad)


@dataclass(frozen=True)
class Validation:
    """Scores of the validation parts and what a limit does to them."""

    good: tuple[tuple[str, float], ...]  # held-back good parts (never in the bank)
    bad: tuple[tuple[str, float], ...]  # known-bad parts
    training: tuple[tuple[str, float], ...]  # training parts, each without its own patches
    target_fnr: float
    suggested: float
    note: str  # how the suggestion was made, in words
    outliers: tuple[str, ...] = ()

    @property
    def miss_rate_known(self) -> bool:
        return bool(self.bad)

    def rates(self, limit: float, check: float | None = None) -> Rates:
        g = np.array([s for _, s in self.good], np.float64)
        b = np.array([s for _, s in self.bad], np.float64)
        lo = limit if check is None else min(check, limit)
        return Rates(
            limit=float(limit),
            check=check,
            n_good=int(g.size),
            n_bad=int(b.size),
            false_rejects=int(np.sum(g >= limit)),
            misses=int(np.sum(b < lo)),
            checked_good=int(np.sum((g >= lo) & (g < limit))) if check is not None else 0,
            checked_bad=int(np.sum((b >= lo) & (b < limit))) if check is not None else 0,
        )

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(limits, miss rate, false-reject rate) over the range of the scores."""
        scores = [s for _, s in self.good + self.bad]
        lo, hi = min(scores), max(scores)
        span = max(hi - lo, 1e-6)
        limits = np.linspace(lo - 0.05 * span, hi + 0.05 * span, 200)
        g = np.array([s for _, s in self.good])
        b = np.array([s for _, s in self.bad])
        fpr = np.array([np.mean(g >= t) if g.size else np.nan for t in limits])
        fnr = np.array([np.mean(b < t) if b.size else np.nan for t in limits])
        return limits, fnr, fpr

    def summary(self, limit: float, check: float | None) -> dict[str, Any]:
        """What the saved version carries about how its limits were chosen."""
        r = self.rates(limit, check)
        return {
            "held_back_good": [[n, round(s, 6)] for n, s in self.good],
            "known_bad": [[n, round(s, 6)] for n, s in self.bad],
            "target_fnr": self.target_fnr,
            "limit": limit,
            "check_limit": check,
            "fpr": r.fpr if r.n_good else None,
            "fpr_95": list(r.fpr_interval),
            "fnr": r.fnr if r.n_bad else None,
            "fnr_95": list(r.fnr_interval) if r.n_bad else None,
            "miss_rate_known": self.miss_rate_known,
            "suggested": self.suggested,
            "suggestion": self.note,
            "training_outliers": list(self.outliers),
        }


def suggest(
    good: list[tuple[str, float]], bad: list[tuple[str, float]], target_fnr: float
) -> tuple[float, str]:
    """The limit to start from, and how it was found."""
    g = np.array([s for _, s in good], np.float64)
    if bad:
        choice = threshold_for_fnr(g, np.array([s for _, s in bad]), target_fnr)
        return choice.threshold, (
            f"the highest limit that misses at most {100 * target_fnr:.1f} % of the "
            f"{len(bad)} known-bad parts"
        )
    q = float(np.quantile(g, 0.99))
    margin = 0.1 * (q - float(np.median(g)))
    return q + margin, (
        "the 99th percentile of the held-back good parts plus a margin: with no known-bad "
        "parts the miss rate is unknown"
    )


def outliers(training: list[tuple[str, float]], z: float = OUTLIER_Z) -> tuple[str, ...]:
    """Training parts scoring far above the others (robust z-score), worst first."""
    if len(training) < 8:
        return ()
    s = np.array([v for _, v in training], np.float64)
    med = float(np.median(s))
    mad = float(np.median(np.abs(s - med))) * 1.4826 or 1e-9
    flagged = [(v, n) for n, v in training if (v - med) / mad > z]
    return tuple(n for _, n in sorted(flagged, reverse=True))


# -- the session ---------------------------------------------------------------------------------
@dataclass
class SetupState:
    """What the wizard shows between its steps."""

    product: str
    build: BuildJob | None = None
    candidate: Path | None = None  # the built model, not yet a version of the product
    validation: Validation | None = None
    limit: float | None = None
    check: float | None = None
    saved: ModelVersion | None = None
    decisions: list[Decision] = field(default_factory=list)


class SetupSession:
    """One technician's setup of one product (see the module docstring)."""

    def __init__(self, app: StationApp, session: Session, product: str) -> None:
        app.authorize(session, Action.SETUP, product)
        self.app = app
        self.session = session
        self.state = SetupState(product)
        self.camera: SetupCamera | None = None
        self.collecting: str | None = None
        self._paused_line = False
        store = app.products
        self.collector = Collector({k: store.parts(product, k) for k in ("good", "bad")})

    @property
    def product(self) -> str:
        return self.state.product

    @property
    def cfg(self) -> Any:
        """The station's config with this product's recipe on top."""
        return self.app.products.config(self.product, self.app.cfg)

    # -- camera check and collection
    def open_camera(self) -> None:
        """Stream the product's camera. When it is the line's own device, the line pauses first
        (audited) and resumes when the camera closes."""
        self.app.authorize(self.session, Action.SETUP, self.product)
        if self.camera is not None:
            return
        cfg = self.cfg
        if self.app.shares_camera(cfg.camera):
            self.app.pause(self.session, reason=f"camera check of {self.product}")
            self._paused_line = True
        self.camera = SetupCamera(lambda: self.app.camera_for(cfg.camera))
        self.camera.listener = self._on_frame
        self.camera.start()

    def close_camera(self) -> None:
        """Stop streaming (and give the camera back to the line)."""
        cam, self.camera = self.camera, None
        self.collecting = None
        if cam is not None:
            cam.stop()
            cam.join(10.0)
        if self._paused_line:
            self._paused_line = False
            self.app.resume(self.session)

    def set_camera_feature(self, name: str, value: float) -> None:
        """Change ExposureTime or Gain on the live camera and save it into the recipe."""
        self.app.set_product_camera_feature(self.session, self.product, name, value)
        cam = self.camera.camera if self.camera is not None else None
        setter = getattr(cam, "set_feature", None)
        if setter is not None:
            setter(name, value)

    def collect(self, kind: str | None) -> None:
        """Offer every frame from the camera as a part of `kind` (None: stop)."""
        if kind is not None:
            self.app.authorize(self.session, Action.SETUP, self.product)
        self.collecting = kind

    def _on_frame(self, frame: Frame) -> None:
        kind = self.collecting
        if kind is None:
            return
        if kind == "good" and self.collector.count("good") >= self.collector.target:
            self.collecting = None
            return
        self._decided(self.collector.offer(frame.image, kind))
        if kind == "good" and self.collector.count("good") >= self.collector.target:
            self.collecting = None  # the target is reached: the technician moves on

    def _decided(self, decision: Decision) -> None:
        self.state.decisions.append(decision)
        del self.state.decisions[:-200]

    def import_folder(self, folder: Path, kind: str = "good") -> list[Decision]:
        """Offer every image of a folder (and its sub-folders) as a part of `kind`."""
        self.app.authorize(self.session, Action.SETUP, self.product)
        folder = Path(folder)
        if not folder.is_dir():
            raise StationError(f"{folder}: folder not found")
        files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
        images = [p for p in files if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif")]
        out = []
        for p in images:
            try:
                d = self.collector.offer(read_image(p), kind)
            except StationError as exc:
                d = Decision(False, kind, f"{p.name}: {exc}")
            self._decided(d)
            out.append(d)
        return out

    # -- build
    def build(self) -> BuildJob:
        """Fit on the collected good parts in the background (the line keeps inspecting)."""
        self.app.authorize(self.session, Action.MODEL, self.product)
        images = self.collector.files("good")
        if len(images) < 10:
            raise StationError(f"{len(images)} good parts collected: at least 10 are needed")
        if self.state.build is not None and self.state.build.state == "running":
            raise StationError("a build is running already")
        self.discard_candidate()
        cfg = self.cfg
        out = (
            self.app.products.folder(self.product)
            / CANDIDATES
            / f"build-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**6:06d}"
        )

        def run(progress: Callable[[FitProgress], None], cancel: threading.Event) -> FitReport:
            from station.model.training import fit

            return fit(
                images, cfg.model, out, product=self.product, progress=False,
                on_progress=progress, cancel=cancel, holdout=HOLDOUT, score_training=True,
                created_by=f"{self.session.user} (setup)", signer=self.app.store.signer(),
            )  # fmt: skip

        self.state.build = BuildJob(run)
        self.state.validation = None
        return self.state.build

    def discard_candidate(self) -> None:
        """Remove built models that were not saved (this session's and any a crash left)."""
        self.state.candidate = None
        shutil.rmtree(self.app.products.folder(self.product) / CANDIDATES, ignore_errors=True)

    # -- validate and choose the limits
    def validate(self, target_fnr: float | None = None) -> Validation:
        """Score the known-bad parts with the built model; suggest a limit for the miss target."""
        job = self.state.build
        if job is None or job.state != "done" or job.report is None:
            raise StationError("build a model first")
        from station.model.patchcore import PatchCore
        from station.model.search import SearchSpec

        report = job.report
        self.state.candidate = report.artifact
        target = self.app.cfg.inspection.target_fnr if target_fnr is None else target_fnr
        model = PatchCore.load(
            report.artifact,
            self.cfg.model.runtime,
            threads=self.cfg.model.threads,
            search=SearchSpec.from_config(self.cfg.model),
        )
        try:
            bad = [
                (p.name, float(model.predict(read_image(p)).score))
                for p in self.collector.files("bad")
            ]
        finally:
            model.close()
        good = list(report.calibration)
        if not good:
            raise StationError("no good parts were held back: collect more good parts")
        limit, note = suggest(good, bad, target)
        v = Validation(
            good=tuple(good),
            bad=tuple(bad),
            training=report.training_scores,
            target_fnr=target,
            suggested=limit,
            note=note,
            outliers=outliers(list(report.training_scores)),
        )
        self.state.validation = v
        self.state.limit, self.state.check = limit, None
        return v

    def set_limits(self, limit: float, check: float | None = None) -> Rates:
        """Choose the reject limit (and a check band below it); returns what they do."""
        v = self.state.validation
        if v is None:
            raise StationError("validate the built model first")
        if not math.isfinite(limit) or limit <= 0:
            raise StationError(f"a reject limit must be a positive number, not {limit}")
        if check is not None and not 0 < check < limit:
            raise StationError(f"the check limit ({check:.3g}) must be below the reject limit")
        self.state.limit, self.state.check = float(limit), check
        return v.rates(limit, check)

    def drop_outliers(self, names: list[str] | None = None) -> int:
        """Take training outliers out of the good parts (into parts/dropped) to rebuild."""
        v = self.state.validation
        names = list(names if names is not None else (v.outliers if v else ()))
        moved = self.collector.drop(names, self.app.products.parts(self.product, "dropped"))
        self.state.build, self.state.validation = None, None
        self.discard_candidate()
        return moved

    # -- save and activate
    def save(self, notes: str = "", *, activate: bool = False) -> ModelVersion:
        """Save the built model with the chosen limits as the product's next version; with
        `activate` the line runs it from the next frame on (audited)."""
        v, limit = self.state.validation, self.state.limit
        candidate = self.state.candidate
        if v is None or limit is None or candidate is None:
            raise StationError("build and validate a model first")
        saved = self.app.save_version(
            self.session,
            self.product,
            candidate,
            threshold=limit,
            check_threshold=self.state.check,
            notes=notes,
            validation=v.summary(limit, self.state.check),
            threshold_source=f"chosen in setup by {self.session.user}: {v.note}",
        )
        self.state.saved = saved
        self.discard_candidate()
        if activate:
            self.app.activate_model(self.session, saved.version, product=self.product)
            if self.product != self.app.product:
                self.app.switch_product(self.session, self.product)
        return saved

    def close(self) -> None:
        """Leave the setup: the camera back to the line, the unsaved build removed."""
        self.close_camera()
        job = self.state.build
        if job is not None and job.state == "running":
            job.cancel()
            job.wait(60.0)
        self.discard_candidate()
