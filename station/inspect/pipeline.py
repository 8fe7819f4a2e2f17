"""The inspection line: camera -> bounded queue -> inspector -> fan-out, on worker threads.

    AcquisitionWorker  owns the camera; puts frames into a bounded drop-oldest FrameQueue
                       (drops counted); on CameraError: state camera lost, reconnect with
                       exponential backoff (0.5 s .. 10 s), then running again, each an event
    InspectorWorker    loads the model from its source (given by the app), takes frames, runs
                       the engine and the decision, builds InspectionResult, hands it to every
                       sink (the recorder: never lost, never blocks) and to the fan-out
    FanOut             one thread per subscriber with its own bounded drop-oldest queue: a slow
                       display or output only loses its own items (counted), never slows the
                       inspector; the drift monitor is one such subscriber

The line is given its camera (or a factory for it), its model source and its sinks; it builds
none of them and fits nothing. Every thread is a `Worker` (setup -> step -> teardown, stop
checked between frames). The line's state is derived from a few flags (failed, stopping, model
missing, starting, paused, camera lost) in that priority order, and every change of it is a
"state" event with its reason, recorded like any other event. `Line.status()` is a frozen
snapshot, cheap enough for a GUI timer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from station.camera.base import Camera, CameraInfo
from station.config import StationConfig
from station.core.errors import CameraError, ModelError, StationError
from station.core.result import (
    BadFrame,
    Frame,
    InspectionResult,
    LineStatus,
    StationEvent,
    StationState,
    Verdict,
)
from station.core.sinks import LineSink
from station.core.worker import Worker
from station.inspect.decision import verdict
from station.inspect.drift import DriftMonitor, drift_event
from station.inspect.sources import ModelSource
from station.inspect.stats import LineStats

if TYPE_CHECKING:
    from station.model.patchcore import PatchCore

__all__ = [
    "BACKOFF_MAX_S",
    "BACKOFF_MIN_S",
    "AcquisitionWorker",
    "FanOut",
    "FrameQueue",
    "InspectorWorker",
    "Line",
    "Subscription",
    "describe_camera",
]

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0
IDLE_TICK_S = 0.2  # how long an idle worker waits before looking at stop / pause again
BAD_RUN_ALARM = 3  # frames refused in a row before the screen says so (an alarm)
MODEL_POLL_S = 2.0  # while no model exists, how often the model store is looked at again
RESULT_QUEUE = 8  # per result subscriber: results hold images, so keep few
EVENT_QUEUE = 256
DRIFT_QUEUE = 1024  # scores only matter in bulk, but losing them is still counted


def describe_camera(info: CameraInfo) -> str:
    """'kind model serial @ fps' as the status bar shows it."""
    parts = [info.kind, info.vendor, info.model, info.serial or info.user_name]
    # dict.fromkeys: a replay folder named "replay" must not read "replay replay".
    text = " ".join(p for p in dict.fromkeys(parts) if p)
    return f"{text} @ {info.fps:g} fps" if info.fps else text


def _is_current(worker: Worker) -> bool:
    """True when called from the worker's own thread (which cannot join itself)."""
    return worker._thread is threading.current_thread()


class _End:
    """Put in the frame queue when the source is exhausted (a replay without loop)."""


_END = _End()


class FrameQueue:
    """Bounded, drop-oldest: a model slower than the camera sees the newest frames.

    Every drop goes to `on_drop` (the shift counters), so a slow model is visible, never silent.
    """

    def __init__(self, maxsize: int, on_drop: Callable[[int], None] | None = None) -> None:
        self.maxsize = max(1, int(maxsize))
        self._items: deque[Frame | _End] = deque()
        self._cond = threading.Condition()
        self._on_drop = on_drop
        self.dropped = 0

    def put(self, item: Frame | _End) -> None:
        """Add a frame; never blocks (the oldest frame goes when full)."""
        dropped = 0
        with self._cond:
            while len(self._items) >= self.maxsize:
                self._items.popleft()
                dropped += 1
            self._items.append(item)
            self.dropped += dropped
            self._cond.notify()
        if dropped and self._on_drop is not None:
            self._on_drop(dropped)

    def get(self, timeout: float) -> Frame | _End | None:
        """The oldest waiting frame, or None after `timeout` seconds without one."""
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: bool(self._items), timeout):
                return None
            return self._items.popleft()

    def wake(self) -> None:
        """Wake a waiting consumer (used on stop)."""
        with self._cond:
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


T = TypeVar("T")


class FanOut(Worker, Generic[T]):
    """Delivers items to one subscriber on its own thread, from its own bounded queue.

    `offer()` never blocks: when the subscriber is behind, its oldest item goes (counted in
    `dropped`). An exception in the callback is logged and counted, and delivery goes on.
    """

    def __init__(
        self,
        callback: Callable[[T], None],
        *,
        maxsize: int,
        name: str,
        drain_on_stop: bool = False,
    ) -> None:
        super().__init__()
        self.name = name
        self.callback = callback
        self.maxsize = max(1, maxsize)
        self.drain_on_stop = drain_on_stop
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self.dropped = 0
        self.delivered = 0
        self.errors = 0

    def offer(self, item: T) -> None:
        """Queue one item for the subscriber; drops its oldest when full."""
        with self._cond:
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def stop(self) -> None:
        """Ask the thread to end after the item it is delivering."""
        super().stop()
        with self._cond:
            self._cond.notify_all()

    def step(self) -> bool:
        """Deliver one item (or wait a tick for one)."""
        with self._cond:
            if not self._items:
                self._cond.wait(IDLE_TICK_S)
            if not self._items:
                return True
            item = self._items.popleft()
        self._deliver(item)
        return True

    def teardown(self) -> None:
        """Deliver what is still queued when asked to (events), else let it go."""
        while self.drain_on_stop:
            with self._cond:
                if not self._items:
                    break
                item = self._items.popleft()
            self._deliver(item)

    def _deliver(self, item: T) -> None:
        try:
            self.callback(item)
            self.delivered += 1
        except Exception:  # a subscriber's bug must not stop the others or the line
            self.errors += 1
            if self.errors == 1 or self.errors % 1000 == 0:
                log.exception("%s: subscriber failed (%d times)", self.name, self.errors)


class Subscription:
    """What `subscribe()` returns: call it to unsubscribe; `dropped` counts items it lost."""

    def __init__(self, hub: _Hub[T], fanout: FanOut[T]) -> None:
        self._hub = hub
        self.fanout = fanout

    @property
    def dropped(self) -> int:
        """Items this subscriber lost because it was behind."""
        return self.fanout.dropped

    @property
    def delivered(self) -> int:
        """Items handed to the callback."""
        return self.fanout.delivered

    def __call__(self) -> None:
        """Unsubscribe: no more items; the delivery thread ends after its current one."""
        self._hub.remove(self.fanout)


class _Hub(Generic[T]):
    """The subscribers of one kind of item; publishing costs one deque append per subscriber."""

    def __init__(self, name: str, maxsize: int, drain_on_stop: bool = False) -> None:
        self.name = name
        self.maxsize = maxsize
        self.drain_on_stop = drain_on_stop
        self._lock = threading.Lock()
        self._fanouts: tuple[FanOut[T], ...] = ()  # replaced, never mutated: lock-free publish
        self._count = 0

    def add(self, callback: Callable[[T], None], maxsize: int | None = None) -> Subscription:
        with self._lock:
            self._count += 1
            fanout: FanOut[T] = FanOut(
                callback,
                maxsize=maxsize or self.maxsize,
                name=f"fanout-{self.name}-{self._count}",
                drain_on_stop=self.drain_on_stop,
            )
            self._fanouts = (*self._fanouts, fanout)
        fanout.start()
        return Subscription(self, fanout)

    def remove(self, fanout: FanOut[T]) -> None:
        with self._lock:
            self._fanouts = tuple(f for f in self._fanouts if f is not fanout)
        fanout.drain_on_stop = False  # unsubscribed means no more calls, queued or not
        fanout.stop()
        if not _is_current(fanout):
            fanout.join(1.0)

    def publish(self, item: T) -> None:
        for fanout in self._fanouts:
            fanout.offer(item)

    def stop_all(self, deadline: float) -> bool:
        fanouts = self._fanouts
        for f in fanouts:
            f.stop()
        ok = True
        for f in fanouts:
            if not _is_current(f):
                ok &= f.join(max(0.0, deadline - time.monotonic()))
        return ok


class AcquisitionWorker(Worker):
    """Owns the camera: frames into the queue; on loss, reconnects with exponential backoff."""

    name = "acquisition"

    def __init__(self, line: Line, camera: Camera | Callable[[], Camera]) -> None:
        super().__init__(on_failure=line._worker_failed)
        self.line = line
        # A factory is called on the first open, in this thread: building a GenICam camera
        # already talks to the device, and its failure is a camera loss like any other.
        self._factory = None if isinstance(camera, Camera) else camera
        self.camera: Camera | None = camera if isinstance(camera, Camera) else None
        self._frames: Iterator[Frame | BadFrame] | None = None
        self._opened = False  # close() only once per open: a GenICam close is not free
        self._next_try = 0.0  # monotonic time of the next open attempt
        self._attempts = 0
        self._lost_at: float | None = None
        self._replacement: Camera | Callable[[], Camera] | None = None
        self._replace_lock = threading.Lock()

    def replace(self, camera: Camera | Callable[[], Camera]) -> None:
        """Use another camera: the current one is closed (which ends a blocking wait for its
        next frame) and the new one opened by the next step."""
        with self._replace_lock:
            self._replacement = camera
        cam = self.camera
        if cam is not None:
            try:
                cam.close()
            except Exception:
                log.exception("camera close failed")

    def stop(self) -> None:
        """Stop, and wake a frames() iterator blocked in its pacing wait."""
        super().stop()
        cam = self.camera
        if cam is not None:
            try:
                cam.close()
            except Exception:  # a camera that cannot close must not hang the stop
                log.exception("camera close failed")

    def step(self) -> bool:
        """Deliver one frame, or wait for the model / resume / the next reconnect attempt."""
        line = self.line
        with self._replace_lock:
            replacement, self._replacement = self._replacement, None
        if replacement is not None:
            self._close()
            self._factory = None if isinstance(replacement, Camera) else replacement
            self.camera = replacement if isinstance(replacement, Camera) else None
            self._next_try = 0.0
        if not line._model_ready.is_set():
            line._model_ready.wait(IDLE_TICK_S)
            return True
        if line._paused:
            self._close()  # a paused line releases the camera; resume reopens where it was
            self.wait(IDLE_TICK_S)
            return True
        if self._frames is None:
            wait = self._next_try - time.monotonic()
            if wait > 0:  # backing off; short naps so that stop and pause stay prompt
                self.wait(min(wait, IDLE_TICK_S))
                return True
            self._open()
            return True
        try:
            frame = next(self._frames)
        except StopIteration:
            self._frames = None
            with self._replace_lock:
                replacing = self._replacement is not None
            # Closed by a stop, a pause or a camera change: not the end of the parts.
            if self.stopping or line._paused or replacing:
                return True
            line._queue.put(_END)  # the source is exhausted: the inspector finishes the queue
            return False
        except CameraError as exc:
            self._close()
            self._lost(str(exc))
            return True
        if isinstance(frame, BadFrame):
            line._bad_frame(frame.reason, path=frame.path)
            return True
        line._queue.put(frame)
        return True

    def teardown(self) -> None:
        """Release the camera."""
        self._close()

    def _open(self) -> None:
        line = self.line
        try:
            if self.camera is None:
                assert self._factory is not None
                self.camera = self._factory()
            self._opened = True
            self.camera.open()
            self._frames = iter(self.camera.frames())
            desc = describe_camera(self.camera.info())
        except CameraError as exc:
            self._close()
            self._lost(str(exc))
            return
        was_down = self._lost_at
        self._next_try, self._attempts, self._lost_at = 0.0, 0, None
        if was_down is None:
            line._camera_up(desc, f"camera {desc} open")
        else:
            line._camera_up(desc, f"camera back after {time.monotonic() - was_down:.1f} s: {desc}")

    def _lost(self, message: str) -> None:
        if self._lost_at is None:
            self._lost_at = time.monotonic()
        self._attempts += 1
        # Exponential backoff: a camera that is being re-plugged is back within a second, a
        # cable that is gone should not be hammered (nor flood the log) for hours.
        backoff = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** (self._attempts - 1))
        self._next_try = time.monotonic() + backoff
        self.line._camera_lost(message, self._attempts, backoff)

    def _close(self) -> None:
        self._frames = None
        if self.camera is not None and self._opened:
            self._opened = False
            try:
                self.camera.close()
            except Exception:
                log.exception("camera close failed")


class InspectorWorker(Worker):
    """Runs the engine on each frame and turns the score into a verdict and a result.

    Model changes never stop the frames: a new version of the same product is loaded on a helper
    thread while this one goes on inspecting with the old model, and swapped in between two
    frames (the next frame uses it). The source is asked every MODEL_POLL_S which version is
    current, so an activation made elsewhere (the command line, another screen) is picked up
    too. A switch to another product is different: the old product's model must not judge the
    new product's parts, so it is dropped at once and frames wait for the new one.
    """

    name = "inspector"

    def __init__(self, line: Line, models: ModelSource) -> None:
        super().__init__(on_failure=line._worker_failed)
        self.line = line
        self.models = models
        self.model: PatchCore | None = None
        self._next_poll = 0.0
        self._errors = 0
        self._loader: threading.Thread | None = None
        self._locate_error = ""  # the last reason the current version could not be found
        self._incoming: PatchCore | ModelError | None = None  # loaded by the helper thread
        self._incoming_lock = threading.Lock()
        self._new_source: ModelSource | None = None
        self._mismatch_for: str | None = None  # model version the shape alarm was raised for

    def setup(self) -> None:
        """Let the source prepare (the demo's first start), then load the model in this thread."""
        self.models.prepare(self.line._set_starting, self.line._emit)
        self._load_now()

    def switch_source(self, source: ModelSource) -> None:
        """Use another product's models from the next frame on (see the class docstring)."""
        with self._incoming_lock:
            self._new_source = source
        self.line._reload.set()

    def step(self) -> bool:
        """Inspect one frame (or, without a model, wait for one to be installed)."""
        line = self.line
        self._take_incoming()
        with self._incoming_lock:
            new_source, self._new_source = self._new_source, None
        if new_source is not None:
            self._drop_model()
            line._model_ready.clear()  # the camera waits: no frame is judged by the old product
            self.models = new_source
            line._set_starting("switching the product")
            new_source.prepare(line._set_starting, line._emit)
            self._load_now()
        if line._reload.is_set() and not self.stopping:
            line._reload.clear()
            self._begin_load()
        if self.model is None:
            if time.monotonic() >= self._next_poll:
                self._load_now()
            line._reload.wait(IDLE_TICK_S)
            return True
        if time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + MODEL_POLL_S
            self._begin_load()
        item = line._queue.get(IDLE_TICK_S)
        if item is None:
            return True
        if isinstance(item, _End):
            line._finish_reason = "replay finished"
            return False
        try:
            result = self.inspect(item)
        except StationError as exc:
            # One bad frame must not stop the line; it is counted and an event, not a verdict.
            self._errors += 1
            line._bad_frame(f"frame {item.frame_id} not inspected: {exc}", frame_id=item.frame_id)
            return True
        line._publish(result)
        if line.max_frames is not None and line.stats.inspected >= line.max_frames:
            line._finish_reason = f"{line.max_frames} frames inspected"
            return False
        return True

    def inspect(self, frame: Frame) -> InspectionResult:
        """Score one frame and decide."""
        model = self.model
        assert model is not None
        h, w = frame.image.shape[:2]
        limit = self.line.cfg.camera.max_megapixels
        if h * w > limit * 1e6:
            raise StationError(
                f"{w}x{h} px ({w * h / 1e6:.1f} MP) is over the limit of {limit:g} MP "
                "(camera.max_megapixels)"
            )
        self._check_shape(frame, model)
        pred = model.predict(frame.image)
        if not np.isfinite(pred.score):
            # Never a verdict: a NaN compares false with any limit and would pass as OK.
            raise StationError(f"the model's score is {pred.score}, not a number")
        threshold = model.threshold
        check = model.check_threshold
        v = verdict(pred.score, threshold, check)
        now = time.time()
        part_ids = self.line.part_ids
        return InspectionResult(
            frame_id=frame.frame_id,
            timestamp=frame.timestamp,
            source=frame.source,
            score=float(pred.score),
            threshold=float(threshold),
            verdict=v,
            latency_ms=(now - frame.timestamp) * 1e3,
            model_version=model.version,
            image=frame.image,
            # OK maps are never shown or archived: do not keep an image-sized array alive.
            anomaly_map=pred.anomaly_map if v != Verdict.OK else None,
            stages_ms=pred.stages_ms,
            label=frame.label,
            device_frame_id=frame.device_frame_id,
            finished_at=now,
            part_id=part_ids(frame.timestamp) if part_ids is not None else "",
            check_threshold=check,
            product=model.product,
        )

    def teardown(self) -> None:
        """Release the model (and one still loading), and let the line shut down if it ended."""
        loader = self._loader
        if loader is not None:
            loader.join(30.0)
        with self._incoming_lock:
            incoming, self._incoming = self._incoming, None
        if incoming is not None and not isinstance(incoming, ModelError):
            self._release(incoming)
        self._drop_model()
        self.line._inspector_ended()

    def _release(self, model: PatchCore) -> None:
        try:
            self.models.release(model)
        except Exception:
            log.exception("model release failed")

    def _drop_model(self) -> None:
        if self.model is not None:
            self._release(self.model)
            self.model = None

    def _load_now(self) -> None:
        """Load the current version in this thread (there is no model to keep running)."""
        line = self.line
        self._next_poll = time.monotonic() + MODEL_POLL_S
        try:
            path = self.models.locate()
        except ModelError as exc:  # e.g. a CURRENT pointer that names no version
            line._model_missing(str(exc))
            return
        if path is None:
            line._model_missing(self.models.missing())
            return
        try:
            model = self.models.load(path)
        except ModelError as exc:
            line._model_missing(f"model {path} cannot be loaded: {exc}")
            return
        self._use(model, "model loaded")

    def _begin_load(self) -> None:
        """Load the current version on a helper thread if it is not the one in use."""
        if self._loader is not None and self._loader.is_alive():
            return
        try:
            path = self.models.locate()
        except ModelError as exc:
            # The running model stays (it was trusted when loaded); say so once per reason.
            if str(exc) != self._locate_error:
                self._locate_error = str(exc)
                self.line._emit(StationEvent(kind="error", message=f"model not switched: {exc}"))
            return
        self._locate_error = ""
        current = self.model.artifact.path if self.model is not None else None
        if path is None or path == current:
            return
        source = self.models

        def load() -> None:
            try:
                outcome: PatchCore | ModelError = source.load(path)
            except ModelError as exc:
                outcome = exc
            with self._incoming_lock:
                self._incoming = outcome

        self._loader = threading.Thread(target=load, name="model-loader", daemon=True)
        self._loader.start()

    def _take_incoming(self) -> None:
        """Between two frames: swap in a model the helper thread has loaded."""
        with self._incoming_lock:
            incoming, self._incoming = self._incoming, None
        if incoming is None:
            return
        outcome = incoming
        if isinstance(outcome, ModelError):
            self.line._emit(StationEvent(kind="error", message=f"model not switched: {outcome}"))
            return
        old = self.model
        self._use(outcome, "model loaded" if old is None else f"model switched from {old.version}")
        if old is not None and old is not outcome:
            self._release(old)

    def _use(self, model: PatchCore, why: str) -> None:
        self.model = model
        self._mismatch_for = None
        self.line._model_loaded(model, why)

    def _check_shape(self, frame: Frame, model: PatchCore) -> None:
        """Alarm (once a model) when frames are far from what the model was trained on."""
        if self._mismatch_for == model.version:
            return
        m = model.artifact.manifest
        problem = shape_mismatch(frame.image, m.train_shape, m.position_hw)
        self._mismatch_for = model.version
        self.line._frames_mismatch(
            None if problem is None else f"{problem}: is {model.version} this product's model?"
        )


def shape_mismatch(
    image: np.ndarray, train: dict[str, Any], exact_hw: Sequence[int] = ()
) -> str | None:
    """Why a frame does not fit a model's training images (another product?), else None.

    Channels must be among the trained ones (a colour frame fits a grey model: it is converted);
    each side must lie within half the smallest and twice the largest training image (parts vary
    in size, a model of another product does not fit them). A model normalised by position
    (`exact_hw`, its manifest's position_hw) fits frames of exactly its parts' size only: any
    other size is scored without its offsets, on another scale than its limit.
    """
    if not train:
        return None  # a model from before the shape was recorded
    h, w = image.shape[:2]
    ch = 1 if image.ndim == 2 else int(image.shape[2])
    lo = [int(x) for x in train.get("min_hw", [0, 0])]
    hi = [int(x) for x in train.get("max_hw", [0, 0])]
    chans = [int(c) for c in train.get("channels", [])]
    seen = f"frames are {h}x{w} with {ch} channel{'s' if ch > 1 else ''}"
    trained = f"the model was trained on {lo[0]}x{lo[1]} to {hi[0]}x{hi[1]}"
    if chans and ch not in chans and not (ch >= 3 and 1 in chans):
        return f"{seen}, {trained} with {'/'.join(map(str, chans))} channel(s)"
    if not (lo[0] / 2 <= h <= hi[0] * 2 and lo[1] / 2 <= w <= hi[1] * 2):
        return f"{seen}, {trained}"
    if exact_hw and [h, w] != [int(x) for x in exact_hw]:
        return (
            f"{seen}, the model is normalised by position for {exact_hw[0]}x{exact_hw[1]} parts "
            "only (set the camera's region back, or build the model again)"
        )
    return None


class Line:
    """The inspection line: start, pause, resume, stop; status snapshots; result subscribers."""

    def __init__(
        self,
        cfg: StationConfig,
        *,
        camera: Camera | Callable[[], Camera],
        models: ModelSource,
        sinks: Sequence[LineSink] = (),
        part_ids: Callable[[float], str] | None = None,
        max_frames: int | None = None,
        on_stopped: Callable[[bool], None] | None = None,
    ) -> None:
        """Prepare the workers; nothing runs (nor opens) before `start()`.

        `camera` is the camera, or a factory called on the acquisition thread at the first open.
        `models` says which model to run; `sinks` take every result and event and must never
        lose one (the recorder); `part_ids` gives each result its id from the frame time.
        `on_stopped(ended)` runs once the stop is over, before `wait()` returns (the app closes
        the records there); `ended` is False when a thread did not end in time.
        """
        self.cfg = cfg
        self.max_frames = max_frames if max_frames and max_frames > 0 else None
        self.sinks = tuple(sinks)
        self.part_ids = part_ids
        self._on_stopped = on_stopped
        self.stats = LineStats()
        self._lock = threading.RLock()
        self._bad_run: tuple[int, str] = (0, "")  # frames refused in a row, the last reason
        self._queue = FrameQueue(cfg.inspection.queue_size, on_drop=self._dropped)
        self._results: _Hub[InspectionResult] = _Hub("results", RESULT_QUEUE)
        self._events: _Hub[StationEvent] = _Hub("events", EVENT_QUEUE, drain_on_stop=True)
        self._acquisition = AcquisitionWorker(self, camera)
        self._inspector = InspectorWorker(self, models)
        self._model_ready = threading.Event()
        self._reload = threading.Event()
        self._finished = threading.Event()
        self._latest: InspectionResult | None = None
        self._drift: DriftMonitor | None = None
        self._drift_sub: Subscription | None = None
        # State flags; the shown state is derived from them (see _derive).
        self._phase = "idle"  # idle | starting | up | stopping | stopped | failed
        self._model_missing_reason: str | None = None
        self._camera_lost_reason: str | None = None
        self._paused = False
        self._failure = ""
        self._finish_reason: str | None = None
        self._stop_claimed = False
        self._state = StationState.STOPPED
        self._reason = "not started"
        self._camera_desc = ""
        self._model_version = ""
        self._threshold: float | None = None
        self._check_threshold: float | None = None
        self._runtime = ""
        self._shape_alarm: str | None = None

    # -- control -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the threads; returns at once (the model loads in the inspector's thread).

        A line runs once: after `stop()`, build a new one to run again.
        """
        with self._lock:
            if self._phase != "idle":
                raise RuntimeError(f"line already started ({self._state.value})")
            self._phase = "starting"
            self._update("starting the line")
        self._drift_sub = self._results.add(self._feed_drift, DRIFT_QUEUE)
        self._inspector.start()
        self._acquisition.start()

    def stop(self, timeout: float = 10.0, *, reason: str = "stopped") -> bool:
        """Stop every thread in order (the last events reach the sinks); True when all ended."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._phase == "idle":
                self._phase = "stopped"
                self._finished.set()
                return True
            if self._stop_claimed or self._phase == "stopped":
                claimed = False
            else:
                claimed = self._stop_claimed = True
                if self._phase != "failed":
                    self._phase = "stopping"
                    self._update(reason)
        if not claimed:
            return self._finished.wait(max(0.0, deadline - time.monotonic()))
        ok = True
        for worker in (self._acquisition, self._inspector):
            worker.stop()
        self._queue.wake()
        self._reload.set()  # wakes an inspector waiting for a model
        for worker in (self._acquisition, self._inspector):
            if not _is_current(worker):
                ok &= worker.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            if self._phase != "failed":
                self._phase = "stopped"
                stats = self.stats
                self._update(f"{reason} ({stats.inspected} inspected, {stats.dropped} dropped)")
        ok &= self._results.stop_all(deadline)
        ok &= self._events.stop_all(deadline)
        if self._on_stopped is not None:
            try:
                self._on_stopped(ok)
            except Exception:
                log.exception("on_stopped failed")
        self._finished.set()
        return ok

    @property
    def paused(self) -> bool:
        """True from pause() until resume(): the flag the acquisition itself goes by (the state
        follows it a moment later)."""
        return self._paused

    def pause(self) -> None:
        """Stop taking frames (the camera is released); queued frames are still inspected."""
        with self._lock:
            if self._paused or self._phase not in ("starting", "up"):
                return
            self._paused = True
            self._update("paused by the operator")

    def resume(self) -> None:
        """Take frames again after `pause()`."""
        with self._lock:
            if not self._paused:
                return
            self._paused = False
            self._update("resumed by the operator")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the line has finished (stopped, failed, or done its max frames)."""
        return self._finished.wait(timeout)

    def reload_model(self) -> None:
        """Load the current model version on a helper thread; the next frame after it is
        loaded uses it (no frame waits for the load)."""
        self._reload.set()

    def switch_models(self, models: ModelSource) -> None:
        """Another product: its models from the next frame on; frames wait until one loads."""
        self._inspector.switch_source(models)

    def replace_camera(self, camera: Camera | Callable[[], Camera]) -> None:
        """Another camera (a product's own settings): the current one closes, this one opens
        at the next frame."""
        self._acquisition.replace(camera)

    # -- observation ---------------------------------------------------------------------------
    def status(self) -> LineStatus:
        """A frozen snapshot of state, this run's counters, drift, camera and model.

        The counters are this run's; the app puts the shift's (from the records) in their place.
        """
        counters = self.stats.counters()
        drift = self._drift.status() if self._drift is not None else None
        with self._lock:
            return LineStatus(
                state=self._state,
                reason=self._reason,
                counters=counters,
                drift=drift,
                camera=self._camera_desc,
                model_version=self._model_version,
                threshold=self._threshold,
                check_threshold=self._check_threshold,
                runtime=self._runtime,
                alarms=tuple(a for a in (self._shape_alarm, self._bad_alarm()) if a),
            )

    def _bad_alarm(self) -> str | None:
        # The screen still shows the last judged part; parts refused one after another must not
        # sit under its verdict unnoticed.
        run, reason = self._bad_run
        if run < BAD_RUN_ALARM:
            return None
        return f"{run} frames in a row not inspected (last: {reason})"

    @property
    def state(self) -> StationState:
        """The current state."""
        return self._state

    def latest(self) -> InspectionResult | None:
        """The newest result (for a display that only ever shows the last part)."""
        return self._latest

    def subscribe(
        self, callback: Callable[[InspectionResult], None], *, queue_size: int = RESULT_QUEUE
    ) -> Subscription:
        """Call `callback` with every result on its own thread; returns the unsubscriber."""
        return self._results.add(callback, queue_size)

    def subscribe_events(
        self, callback: Callable[[StationEvent], None], *, queue_size: int = EVENT_QUEUE
    ) -> Subscription:
        """Call `callback` with every event (state, drift, model, ...) on its own thread."""
        return self._events.add(callback, queue_size)

    # -- called by the workers ---------------------------------------------------------------
    def _emit(self, event: StationEvent) -> None:
        for sink in self.sinks:
            sink.submit_event(event)
        self._events.publish(event)

    def _publish(self, result: InspectionResult) -> None:
        self._bad_run = (0, "")
        self._latest = result
        self.stats.add(result)
        for sink in self.sinks:
            sink.submit(result)  # never blocks; a sink keeps (or counts) what it cannot take now
        self._results.publish(result)

    def _bad_frame(
        self, reason: str, *, path: str | None = None, frame_id: int | None = None
    ) -> None:
        """A frame refused before a verdict: counted on the screen and an event, every one."""
        n = self.stats.add_bad()
        self._bad_run = (self._bad_run[0] + 1, reason)
        data: dict[str, object] = {"bad_frames": n}
        if path:
            data["path"] = path
        if frame_id is not None:
            data["frame_id"] = frame_id
        self._emit(StationEvent(kind="bad_frame", message=f"frame refused: {reason}", data=data))

    def _dropped(self, n: int) -> None:
        self.stats.add_dropped(n)
        for sink in self.sinks:
            sink.count_dropped(n)

    def _feed_drift(self, result: InspectionResult) -> None:
        monitor = self._drift
        if monitor is None or result.verdict != Verdict.OK:
            return  # NOK parts are defects, not drift
        status = monitor.update(result.score)
        if status is not None:
            event = drift_event(status)
            log.warning("%s", event.message)
            self._emit(event)

    def _set_starting(self, reason: str) -> None:
        with self._lock:
            self._update(reason, force=True)

    def _model_loaded(self, model: PatchCore, why: str) -> None:
        m = model.artifact.manifest
        try:
            monitor: DriftMonitor | None = DriftMonitor(
                np.asarray(m.calibration_scores, np.float64), self.cfg.drift
            )
            drift_note = f"drift baseline {len(m.calibration_scores)} scores"
        except ModelError as exc:
            monitor, drift_note = None, f"drift monitor off: {exc}"
        with self._lock:
            self._drift = monitor
            self._model_version = model.version
            self._threshold = float(model.threshold)
            self._check_threshold = model.check_threshold
            self._runtime = str(getattr(model.runtime.kind, "value", model.runtime.kind))
            message = (
                f"{why}: {model.version} ({self._runtime}), threshold {model.threshold:.4g}, "
                f"{drift_note}"
            )
            self._emit(
                StationEvent(
                    kind="model",
                    message=message,
                    data={
                        "version": model.version,
                        "path": str(model.artifact.path),
                        "threshold": float(model.threshold),
                        "runtime": self._runtime,
                        "drift": monitor is not None,
                    },
                )
            )
            log.info("%s", message)
            if self._model_missing_reason is not None:
                self._model_missing_reason = None
                self._update(message)
        self._model_ready.set()

    def _frames_mismatch(self, problem: str | None) -> None:
        with self._lock:
            was, self._shape_alarm = self._shape_alarm, problem
        if problem is not None and problem != was:
            log.warning("%s", problem)
            self._emit(StationEvent(kind="model", message=problem, data={"alarm": "shape"}))

    def _model_missing(self, reason: str) -> None:
        with self._lock:
            if self._model_missing_reason == reason:
                return
            self._model_missing_reason = reason
            # Forced while already without a model: "no model" turning into "model refused:
            # made for another product" must reach the screen, not only the first reason.
            self._update(reason, force=self._state == StationState.MODEL_MISSING)

    def _camera_up(self, desc: str, reason: str) -> None:
        with self._lock:
            self._camera_desc = desc
            self._camera_lost_reason = None
            if self._phase == "starting":
                self._phase = "up"
            self._update(reason)

    def _camera_lost(self, message: str, attempts: int, backoff: float) -> None:
        with self._lock:
            if self._phase == "starting":
                self._phase = "up"
            first = self._camera_lost_reason is None
            self._camera_lost_reason = f"camera lost: {message}"
            if first:
                self._update(self._camera_lost_reason, data={"error": message})
            elif self._state == StationState.CAMERA_LOST:
                # Same state, newer detail: the status shows it, the log gets a line, no event.
                self._reason = f"{self._camera_lost_reason} (attempt {attempts})"
        log.warning("camera: %s; retry %d in %.1f s", message, attempts, backoff)

    def _worker_failed(self, worker: Worker, exc: BaseException) -> None:
        self.fail(f"{worker.name} failed: {type(exc).__name__}: {exc}")

    def fail(self, reason: str) -> None:
        """Stop the line in the failed state with `reason` (shown, and a non-zero exit for a
        headless run): for faults that make inspecting wrong, e.g. records that cannot be
        written when the policy says stop."""
        with self._lock:
            if self._phase in ("stopped", "failed"):
                return
            self._phase = "failed"
            self._failure = reason
            self._update(self._failure)
        self._stop_in_background("failure")

    def _inspector_ended(self) -> None:
        with self._lock:
            done = self._phase in ("starting", "up") and self._finish_reason is not None
            reason = self._finish_reason or ""
        if done:
            self._stop_in_background(reason)

    def _stop_in_background(self, reason: str) -> None:
        # A worker cannot join itself: the ordered shutdown runs on a thread of its own.
        threading.Thread(
            target=self.stop, kwargs={"reason": reason}, name="line-stop", daemon=True
        ).start()

    def _derive(self) -> StationState:
        if self._phase == "failed":
            return StationState.FAILED
        if self._phase == "stopping":
            return StationState.STOPPING
        if self._phase in ("idle", "stopped"):
            return StationState.STOPPED
        if self._model_missing_reason is not None:
            return StationState.MODEL_MISSING
        if self._phase == "starting":
            return StationState.STARTING
        if self._paused:
            return StationState.PAUSED
        if self._camera_lost_reason is not None:
            return StationState.CAMERA_LOST
        return StationState.RUNNING

    def _update(
        self, reason: str, *, data: dict[str, object] | None = None, force: bool = False
    ) -> None:
        """Re-derive the state (lock held); a change (or `force`) is logged and an event."""
        new = self._derive()
        if new == self._state and not force:
            return
        old = self._state
        self._state, self._reason = new, reason
        log.info("state %s -> %s: %s", old.value, new.value, reason)
        self._emit(
            StationEvent(
                kind="state",
                message=f"{new.value}: {reason}",
                state=new,
                data={"from": old.value, **(data or {})},
            )
        )
