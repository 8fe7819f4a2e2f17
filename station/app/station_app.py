"""`StationApp`: the composition root. The GUI, the command line and (later) HTTP call this and
nothing else below it.

It owns what the line is given: the data-directory lock, the recorder (the line's sink), the
model source of the configured product, the camera factory, the part ids. It answers for every
action a person takes: the session's role is checked against `station.app.roles` here, and the
action (or its refusal) goes into the audit trail, whoever called.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from station.app.access import Access, Session
from station.app.demo import ensure_demo_product, remove_stale_temporaries
from station.app.lock import DataDirLock
from station.app.models import ProductModels
from station.app.part_ids import PartIds
from station.app.plant import PlantOutputs
from station.app.products import Product, ProductStore
from station.app.quality import (
    FalseReject,
    InspectionDetail,
    ReportFiles,
    ShiftReporter,
    check_disposition,
    default_names,
    export_destinations,
    false_rejects,
    fitting,
    load_detail,
    reports_folder,
    thumbnail,
    write_report,
)
from station.app.roles import Action, allowed
from station.app.setup import SetupSession
from station.camera.base import Camera
from station.camera.factory import open_camera
from station.config import CameraConfig, ModelConfig, StationConfig
from station.core.errors import ModelError, StationError, StorageError
from station.core.result import (
    Counters,
    InspectionResult,
    LineStatus,
    StationEvent,
    StationState,
    Verdict,
)
from station.core.sinks import LineSink
from station.core.worker import Worker
from station.inspect.pipeline import Line, Subscription
from station.inspect.sources import FixedModel, ModelSource
from station.model.artifact import (
    check_product_name,
    load_artifact,
    now_iso,
    read_manifest,
    sign_artifact,
    write_derived,
)
from station.model.signing import Trust, station_signer, trust_folder
from station.outputs.drivers import build_driver
from station.outputs.handshake import PlcHandshake
from station.outputs.reject import PartCamera, RejectGate
from station.records.audit import AuditRow, AuditTrail, Verification
from station.records.db import (
    Database,
    EventRow,
    InspectionRow,
    TimeArg,
    db_path,
    set_aside_if_damaged,
    writable,
)
from station.records.dispositions import (
    ON_REJECTS,
    Disposition,
    DispositionRow,
    add_disposition,
    parse_disposition,
)
from station.records.history import HistoryPage, HistoryQuery, PageKey, query_page, versions_seen
from station.records.recorder import Recorder
from station.records.shifts import Shift, parse_shift, recent_shifts

if TYPE_CHECKING:
    from station.model.patchcore import PatchCore
    from station.model.training import FitReport

__all__ = ["ModelVersion", "StationApp"]

log = logging.getLogger(__name__)

DISK_FREE_EVERY_S = 5.0  # status() is polled by a GUI timer: do not stat the disk every time
_PAUSABLE = (
    StationState.STARTING,
    StationState.RUNNING,
    StationState.CAMERA_LOST,
    StationState.MODEL_MISSING,
)


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    """One model version of a product, as listings show it."""

    product: str
    version: str
    current: bool
    threshold: float
    threshold_source: str
    created_at: str
    created_by: str
    bank_size: int
    backbone: str
    n_train: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class StationApp:
    """One station on one data directory: the line, its records, users, audit, models."""

    def __init__(
        self,
        cfg: StationConfig,
        data_dir: str | Path,
        *,
        camera: Camera | Callable[[], Camera] | None = None,
        model: PatchCore | None = None,
        max_frames: int | None = None,
    ) -> None:
        """Cheap: nothing is opened (nor any thread started) until used; `start()` runs the line.

        `camera` and `model` replace the configured ones (tests, benchmarks); with `max_frames`
        the line stops by itself after that many parts.
        """
        self.cfg = cfg
        self.data_dir = Path(data_dir)
        self.products = ProductStore(
            self.data_dir,
            signer=lambda: station_signer(
                self.data_dir, cfg.model.signing_key, cfg.model.trust_dir
            ),
        )
        self.store = self.products.models
        # The product the line runs: the one it was last switched to (a person's audited
        # choice), else the config's.
        self.product = check_product_name(self.products.active() or cfg.model.product)
        self.line_cfg = self.products.config(self.product, cfg)
        self.recorder = Recorder(
            self.data_dir, cfg.records, on_failure=self._recorder_failed, on_lost=self._lost
        )
        source: ModelSource = (
            FixedModel(model)
            if model is not None
            else ProductModels(
                self.line_cfg, self.data_dir, self.store, self.product, trust=self.trust
            )
        )
        self._fixed_camera = camera is not None
        self._part_camera: PartCamera | None = None  # the line's camera as the gate sees it
        self.gate, self.plc = self._line_io()
        line_camera: Camera | Callable[[], Camera]
        if camera is None:
            line_camera = self._line_camera
        elif isinstance(camera, Camera):
            line_camera = PartCamera(camera, self.gate) if self.gate is not None else camera
        else:
            made, gate = camera, self.gate
            line_camera = made if gate is None else (lambda: PartCamera(made(), gate))
        # MQTT, OPC UA, HTTP: sinks beside the recorder, each only where its section is on.
        self.plant = PlantOutputs(self)
        self.line = Line(
            self.line_cfg,
            camera=line_camera,
            models=source,
            sinks=[self.recorder, *self._gate_sinks(), *self.plant.sinks],
            part_ids=PartIds(self.product, self._last_part_sequence),
            max_frames=max_frames,
            on_stopped=self._line_stopped,
        )
        self._started = False
        self._records_closed = True
        self._stop_deadline = 0.0
        self._last_counters: Counters | None = None  # shown while the records cannot be read
        self._lock = DataDirLock(self.data_dir)
        self._db: Database | None = None
        self._access: Access | None = None
        self._open_lock = threading.Lock()
        self._recorder_alarm: str | None = None
        self._db_aside: str | None = None  # the damaged database moved aside at this start
        self._failing_records = False  # the line was told to fail for lost results
        self._disk_free: tuple[float, float | None] = (0.0, None)
        self.reporter: ShiftReporter | None = None
        self._plc_session: Session | None = None

    # -- line integration: reject output, PLC handshake ------------------------------------------
    def _gate_sinks(self) -> list[LineSink]:
        return [self.gate] if self.gate is not None else []

    def _line_io(self) -> tuple[RejectGate | None, PlcHandshake | None]:
        """The reject gate (when an output or a PLC is configured) and the PLC handshake; built,
        not started. Station settings, not a product's: the wiring is the station's."""
        reject, plc = self.cfg.reject, self.cfg.plc
        software = reject.trigger == "software"  # OPC UA triggers without a Modbus PLC
        if reject.output == "none" and not plc.host and not software:
            return None, None
        node_map = self._genicam_node_map if reject.output == "genicam" else None
        gate = RejectGate(
            reject,
            build_driver(reject, node_map),
            paced=plc.trigger or software,
            on_event=self._line_io_event,
            # The line's own flag, not its state: resume clears the flag before the state
            # changes, and a camera released on a stale state would end the line's frames.
            hold=lambda: self.line.paused,
            on_failure=self._line_io_failed,
        )
        if not plc.host:
            return gate, None
        handshake = PlcHandshake(
            plc,
            gate,
            line_ready=lambda: self.line.state == StationState.RUNNING,
            product=lambda: self.product,
            switch=self._plc_switch,
            on_event=self._line_io_event,
            on_failure=self._line_io_failed,
        )
        return gate, handshake

    def _line_io_event(self, event: StationEvent) -> None:
        """An event of the gate or the PLC link: into the records and out to the plant
        interfaces (MQTT), like the plant links' own (the plant is built after the gate, and
        the gate's events come only once the station runs)."""
        self.plant.event(event)

    def _line_io_failed(self, worker: Worker, exc: BaseException) -> None:
        """A thread of the gate, its output or the handshake died: an alarm (the workers'
        alarms() say "not alive"); without the gate no part is rejected, so the line fails."""
        message = f"{worker.name} failed: {type(exc).__name__}: {exc}"
        try:
            self._line_io_event(StationEvent(kind="reject", message=message, data={"alarm": True}))
        except Exception:
            log.exception("recording %s", message)
        if worker is not self.plc:
            self.line.fail(f"{message}: parts are no longer rejected")

    def _line_camera(self) -> Camera:
        """The camera the line opens: the product's, wrapped so that the gate sees each part."""
        cam = self.camera()
        if self.gate is None:
            return cam
        self._part_camera = PartCamera(cam, self.gate)
        return self._part_camera

    def _genicam_node_map(self) -> Any:
        """The node map of the line's GenICam camera while it is open (for its output line)."""
        from station.camera.genicam import GenICamCamera

        part = self._part_camera
        inner = part.inner if part is not None else None
        if not isinstance(inner, GenICamCamera):
            raise StationError("reject.output = genicam: the line's GenICam camera is not open yet")
        return inner.node_map

    def _plc_switch(self, product: str, number: int) -> None:
        """The PLC's recipe request: a product switch as the PLC's session (technician)."""
        if self._plc_session is None:
            self._plc_session = self.access.plc_session(f"{self.cfg.plc.host}:{self.cfg.plc.port}")
        self.switch_product(self._plc_session, product, reason=f"recipe {number} from the PLC")

    def trigger(self) -> int:
        """A software trigger (the PLC's, an OPC UA method): a part is at the camera now; its
        reject deadline starts and the camera grabs one frame for it. Needs plc.trigger = true
        or reject.trigger = "software"; returns the part's number at the gate."""
        if self.gate is None or not self.gate.paced:
            raise StationError(
                "software triggers need plc.trigger = true or reject.trigger = 'software' (and "
                "the camera in software trigger, or a replay at fps = 0)"
            )
        state = self.line.state
        if state != StationState.RUNNING or not self.gate.alive or self.gate.stopping:
            raise StationError(
                f"trigger refused: the line is {state.value}"
                + ("" if self.gate.alive else " and the reject gate is not running")
            )
        return self.gate.trigger()

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def db_file(self) -> Path:
        """The records database's file (it may not exist yet)."""
        return db_path(self.data_dir)

    def _lost(self, reason: str, lost: int) -> None:
        # Called with the recorder's lock held, and failing the line records an event through
        # the recorder: fail it from another thread, once.
        if self.cfg.records.on_failure != "stop" or self._failing_records:
            return
        self._failing_records = True
        message = (
            f"results are not being recorded ({reason}; {lost} lost): the line stops "
            "(records.on_failure = stop)"
        )
        threading.Thread(
            target=self.line.fail, args=(message,), name="records-failed", daemon=True
        ).start()

    def _records_refused(self) -> str | None:
        """With `records.on_failure = "stop"`: why the line must not run (records that cannot
        be written), else None. With "keep" the line runs and the recorder's alarm counts."""
        try:
            why = writable(self.db().path)
        except StorageError as exc:
            why = str(exc)
        if why is None:
            return None
        message = f"records database {db_path(self.data_dir)} cannot be written: {why}"
        if self.cfg.records.on_failure == "keep":
            log.error("%s; inspecting anyway (records.on_failure = keep)", message)
            self._recorder_alarm = f"{message}: results go to the spool or are counted as lost"
            return None
        return (
            f"{message}. The station does not inspect parts it cannot record "
            "(records.on_failure = keep would inspect anyway, with an alarm)"
        )

    def _check_database(self) -> None:
        """Never write into a damaged database: one that fails its check is moved aside and a
        new one started, with an alarm for the whole run (the station holds the lock here)."""
        with self._open_lock:
            if self._db is not None:  # opened before the start: let go of it for the check
                self._db.close()
                self._db, self._access = None, None
        aside = set_aside_if_damaged(db_path(self.data_dir))
        if aside is not None:
            where, why = aside
            self._db_aside = (
                f"records database was damaged ({why}): moved to {where.name}, a new one was "
                "started; users and the audit trail start empty, restore them from a backup"
            )

    def db(self) -> Database:
        """The app's own connection to the records (users, audit, queries)."""
        with self._open_lock:
            if self._db is None:
                self._db = Database(db_path(self.data_dir))
            return self._db

    @property
    def access(self) -> Access:
        """Users, sessions and the audit trail."""
        db = self.db()
        with self._open_lock:
            if self._access is None:
                self._access = Access(db, AuditTrail(db, self.data_dir), self.cfg.access)
            return self._access

    def close(self) -> None:
        """Stop the line if it runs and close every connection (the plant interfaces last: a
        PLC or a monitor reads "stopped" or "failed" until the station closes)."""
        self.stop()
        self.plant.close()
        self.recorder.close_reader()
        with self._open_lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            self._access = None

    # -- sessions ------------------------------------------------------------------------------
    def default_session(self, via: str = "touchscreen") -> Session:
        """The touchscreen's session while nobody has logged in (the operator, or nobody)."""
        return self.access.default_session(via)

    def shell_session(self) -> Session:
        """The command line's session (see `station.app.access`)."""
        return self.access.shell_session()

    def login(self, name: str, pin: str, *, via: str = "touchscreen") -> Session:
        """A session for `name` when the PIN is right; LoginRefused says why not."""
        return self.access.login(name, pin, via=via)

    def logout(self, session: Session, *, reason: str = "") -> None:
        """End a session (audited)."""
        self.access.logout(session, reason=reason)

    def has_users(self) -> bool:
        """Whether any user exists; without users the station runs operator-only."""
        return self.access.has_users()

    def login_names(self) -> list[str]:
        """The names the keypad offers."""
        return self.access.login_names()

    def may(self, session: Session, action: Action) -> bool:
        """Whether the session may do `action` (no audit: for showing what is possible)."""
        return allowed(session.role, action)

    def authorize(self, session: Session, action: Action, object: str = "") -> None:
        """PermissionDenied (audited) unless the session may do `action`."""
        self.access.authorize(session, action, object)

    # -- the line ------------------------------------------------------------------------------
    def start(self) -> None:
        """Take the data directory, open the records and start the line (returns at once).

        DataDirInUse when another station runs on the same directory. A start that fails half
        way stops what it started and lets the data directory go again.
        """
        if self._started:
            raise RuntimeError("the station is already started")
        self._lock.acquire()
        try:
            remove_stale_temporaries(self.data_dir)
            self._check_database()
            try:
                moved = self.recorder.recover_spool()
                if moved:
                    log.warning("moved %d results from the records spool into the database", moved)
            except StorageError as exc:  # the writer thread will fail the same way, visibly
                log.error("records spool not recovered: %s", exc)
            refused = self._records_refused()
            self._started = True
            self.recorder.start()
            self.plant.start()
            if self.gate is not None:
                self.gate.start()  # before the line: its first frames are parts with deadlines
            self.line.start()
            if self.plc is not None:
                self.plc.start()
            if refused is not None:
                self.line.fail(refused)
            if self._db_aside is not None:
                self.record_event(
                    StationEvent(kind="storage", message=self._db_aside, data={"alarm": True})
                )
            if self.cfg.reports.auto and refused is None:  # a failed line writes no reports
                self.reporter = ShiftReporter(
                    self._auto_report, self._shift_has_parts,
                    reports_folder(self.cfg, self.data_dir), self.cfg.records.shift_hours,
                    self.record_event,
                )  # fmt: skip
                self.reporter.start()
        except BaseException:
            self._started = False
            try:
                self.line.stop(10.0, reason="start failed")
                self._stop_line_io(10.0)
            finally:
                self.plant.close(1.0)
                self.recorder.stop()
                self.recorder.join(10.0)
                self._lock.release()
            raise

    def camera(self, device: str | None = None) -> Camera:
        """The line's camera (its product's settings), not opened (the line calls this on its
        acquisition thread); an empty replay path is the demo product, written if missing."""
        return self.camera_for(self.line_cfg.camera, device)

    def camera_for(self, cfg: CameraConfig, device: str | None = None) -> Camera:
        """A camera of these settings, not opened (an empty replay path: the demo product)."""
        demo = cfg.source == "replay" and not cfg.replay.path and device is None
        default = ensure_demo_product(self.data_dir) if demo else None
        return open_camera(cfg, device=device, replay_default=default)

    def shares_camera(self, cfg: CameraConfig) -> bool:
        """Whether a camera of these settings is the line's own device (one of them must let
        go of it); replay folders and videos can be read twice."""
        line = self.line_cfg.camera
        if cfg.source != line.source or cfg.source == "replay" or self._fixed_camera:
            return False
        if cfg.source == "genicam":
            return cfg.genicam.device == line.genicam.device
        return cfg.uvc.index == line.uvc.index

    def _last_part_sequence(self, prefix: str) -> int:
        try:
            return self.db().max_part_sequence(prefix)
        except StorageError as exc:
            # The records cannot say where the day's numbering is: start above anything this
            # day can have used (fewer than 10 parts a second so far), so no id repeats.
            now = datetime.now()
            start = int(
                (now - now.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds()
            )
            log.error("part ids: records unreadable (%s); numbering from %d", exc, 10 * start)
            return 10 * start

    def stop(
        self, timeout: float = 30.0, *, reason: str = "stopped", session: Session | None = None
    ) -> bool:
        """Stop the line, write the last records, release the data directory; True when all
        ended within `timeout`. With a `session` this is a person's action (role checked,
        audited before it happens)."""
        if session is not None:
            self.authorize(session, Action.STOP)
            self.access.record(session, "stop", object=self.product, reason=reason)
        self._stop_deadline = time.monotonic() + timeout
        ok = self.line.stop(timeout, reason=reason)
        return ok and self._records_closed

    def _line_stopped(self, ended: bool) -> None:
        # The line has ended (stopped, failed, or finished its frames): write the last records,
        # then let the next station have the data directory, but only when nothing of this one
        # can still write there.
        left = self._stop_deadline - time.monotonic() if self._stop_deadline else 30.0
        self._stop_line_io(max(1.0, left))
        reporter = self.reporter
        if reporter is not None:
            reporter.stop()
            reporter.join(max(1.0, left))
        self.recorder.stop()
        self._records_closed = self.recorder.join(max(1.0, left))
        if ended and self._records_closed:
            self._lock.release()
        else:
            log.error(
                "a thread of the station did not end in time: %s stays locked until this "
                "process ends",
                self.data_dir,
            )

    def _stop_line_io(self, timeout: float) -> None:
        """After the line: stop the gate (every part still waiting is rejected, the pulses of
        the parts in flight are driven, the output set off), then the handshake (one last
        Result valid for the part it was answering, then Ready off)."""
        for worker in (self.gate, self.plc):
            if worker is not None and worker.alive:
                worker.stop()
                # The gate drives the last pulse to its end: delay_s + pulse_s after the stop.
                wait = max(timeout, worker.drain_s) if isinstance(worker, RejectGate) else timeout
                if not worker.join(wait):
                    log.error("%s did not stop within %.0f s", worker.name, wait)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the line has finished (stopped, failed, or done its max frames)."""
        return self.line.wait(timeout)

    def pause(self, session: Session, *, reason: str = "") -> None:
        """Stop taking frames (operator and up; audited). Pausing a paused line does nothing."""
        self.authorize(session, Action.PAUSE)
        state = self.line.state
        if state == StationState.PAUSED:
            return
        if state not in _PAUSABLE:
            raise StationError(f"the line cannot be paused while {state.value}")
        self.access.record(
            session, "pause", object=self.product, before=state.value, after="paused",
            reason=reason,
        )  # fmt: skip
        self.line.pause()

    def resume(self, session: Session) -> None:
        """Take frames again (operator and up; audited). Resuming a running line does nothing."""
        self.authorize(session, Action.PAUSE)
        state = self.line.state
        if state != StationState.PAUSED:
            return
        self.access.record(
            session, "resume", object=self.product, before=state.value, after="running"
        )
        self.line.resume()

    # -- observation (cheap, any thread) --------------------------------------------------------
    def status(self) -> LineStatus:
        """The line's snapshot with the shift's counters, the records' alarms and free disk."""
        st = self.line.status()
        if not self._started:
            return st
        rec = self.recorder
        counters = st.counters
        try:
            counters = rec.shift_counts().to_counters(counters)
            self._last_counters = counters
        except StorageError as exc:
            # Records unreadable: the last shift counts read (never a smaller number that
            # would look like lost parts), this run's throughput and latency.
            if self._last_counters is not None:
                counters = dataclasses.replace(
                    self._last_counters,
                    throughput_per_min=counters.throughput_per_min,
                    latency_p50_ms=counters.latency_p50_ms,
                    latency_p95_ms=counters.latency_p95_ms,
                )
            log.debug("shift counters unavailable: %s", exc)
        low = self.recorder.disk_warning
        alarms = tuple(a for a in (self._db_aside, low, self._recorder_alarm, rec.alarm) if a)
        if self.gate is not None:
            gate = self.gate.counters()
            counters = dataclasses.replace(
                counters, failsafe_rejects=gate.failsafe, late_results=gate.late
            )
            alarms += self.gate.alarms()
        if self.plc is not None:
            alarms += self.plc.alarms()
        alarms += self.plant.alarms()
        return dataclasses.replace(
            st, counters=counters, alarms=st.alarms + alarms, disk_free_mb=self._disk_free_mb()
        )

    def latest(self) -> InspectionResult | None:
        """The newest result (a display only ever shows the last part)."""
        return self.line.latest()

    def subscribe(
        self, callback: Callable[[InspectionResult], None], *, queue_size: int = 8
    ) -> Subscription:
        """`callback` with every result on its own thread (it may lose some when behind)."""
        return self.line.subscribe(callback, queue_size=queue_size)

    def subscribe_events(
        self, callback: Callable[[StationEvent], None], *, queue_size: int = 256
    ) -> Subscription:
        """`callback` with every station event on its own thread."""
        return self.line.subscribe_events(callback, queue_size=queue_size)

    def record_event(self, event: StationEvent) -> None:
        """Record an event from outside the line (e.g. a GUI error)."""
        if self._started:
            self.recorder.submit_event(event)  # counted when it cannot be queued
        else:
            self.db().add_event(event)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every result so far is in the database."""
        return self.recorder.flush(timeout)

    def _recorder_failed(self, worker: Worker, exc: BaseException) -> None:
        # Storage problems never stop the line: the operator sees the alarm, parts keep flowing.
        self._recorder_alarm = f"records unavailable: {exc}"
        log.error("records unavailable: %s", exc)

    def _disk_free_mb(self) -> float | None:
        now = time.monotonic()
        at, value = self._disk_free
        if now - at >= DISK_FREE_EVERY_S or value is None:
            value = self.recorder.disk_free_mb()
            self._disk_free = (now, value)
        return value

    # -- records -------------------------------------------------------------------------------
    def inspections(
        self,
        session: Session,
        since: TimeArg = None,
        until: TimeArg = None,
        verdict: Verdict | str | None = None,
        limit: int | None = None,
    ) -> list[InspectionRow]:
        """Recorded inspections, newest first (technician, QA, admin)."""
        self.authorize(session, Action.VIEW_HISTORY)
        return self.db().query_inspections(since, until, verdict, limit)

    def events(
        self,
        session: Session,
        since: TimeArg = None,
        until: TimeArg = None,
        kind: str | None = None,
        limit: int | None = None,
    ) -> list[EventRow]:
        """Recorded events, newest first (technician, QA, admin)."""
        self.authorize(session, Action.VIEW_HISTORY)
        return self.db().query_events(since, until, kind, limit)

    # -- history, dispositions, reports ---------------------------------------------------------
    def history(
        self, session: Session, query: HistoryQuery, after: PageKey | None = None
    ) -> HistoryPage:
        """One page of the history browser (technician, QA, admin)."""
        self.authorize(session, Action.VIEW_HISTORY)
        return query_page(self.db(), query, after)

    def history_versions(self, session: Session, product: str | None = None) -> list[str]:
        """The model versions that judged recorded parts ('demo/v0002'), newest first."""
        self.authorize(session, Action.VIEW_HISTORY)
        return versions_seen(self.db(), product)

    def inspection(self, session: Session, part: str | int) -> InspectionDetail:
        """A recorded part by its part id or row id: image, overlay, dispositions, the events
        around it (technician, QA, admin)."""
        self.authorize(session, Action.VIEW_HISTORY)
        return load_detail(self.db(), self.data_dir, self._find_part(part))

    def dispose(
        self, session: Session, part: str | int, kind: Disposition | str, reason: str
    ) -> DispositionRow:
        """Record what happened to a part: on a rejected part a confirmed defect, a false
        reject or rework (operator and up), on a part that passed a missed defect (QA, admin).
        Append-only and audited in the same transaction; the latest one stands."""
        d = kind if isinstance(kind, Disposition) else parse_disposition(kind)
        row = self._find_part(part)
        name = row.part_id or f"#{row.id}"
        self.authorize(
            session, Action.DISPOSITION_NOK if d in ON_REJECTS else Action.DISPOSITION_ANY, name
        )
        text = check_disposition(row, d, reason)
        role = session.role.value if session.role is not None else ""
        with self.access.writing(f"disposition of {name}") as (cur, audit):
            written = add_disposition(
                cur, row.id, d, reason=text, user=session.user, role=role, via=session.via
            )
            audit.append(
                self.access.audit_in(
                    cur,
                    session,
                    "disposition",
                    object=name,
                    before=row.disposition,
                    after=d.value,
                    reason=text,
                )
            )
        return written

    def _find_part(self, part: str | int) -> InspectionRow:
        """The recorded row of a part id ('DEMO-20261201-000123', any case) or a row id (an int
        or '#123'). A part just inspected may still be on its way to the database: the records
        are flushed once before it is declared unknown."""
        text = str(part).strip()
        by_id = isinstance(part, int) or (text.startswith("#") and text[1:].isdigit())
        for attempt in range(2):
            db = self.db()
            row = db.get_inspection(int(text.lstrip("#"))) if by_id else db.get_part(text.upper())
            if row is not None:
                return row
            if attempt == 0 and self._started:
                self.flush(5.0)
        raise StationError(f"no recorded part '{text}'")

    def false_rejects(self, session: Session, product: str | None = None) -> list[FalseReject]:
        """Parts the product's current model rejected that were confirmed good: what a bank
        update should learn (technician, admin)."""
        product = check_product_name(product or self.product)
        self.authorize(session, Action.MODEL, product)
        current = self.store.current(product)
        if current is None:
            return []
        return false_rejects(self.db(), self.data_dir, product, current.name)

    def shifts(self, n: int = 21) -> list[Shift]:
        """The current shift and the ones before it, newest first (for a shift picker)."""
        return recent_shifts(n, shift_hours=self.cfg.records.shift_hours)

    def parse_shift(self, text: str) -> Shift:
        """'current', 'previous' or '2026-12-01/06' with this station's shift hours."""
        return parse_shift(text, shift_hours=self.cfg.records.shift_hours)

    def shift_report(
        self,
        session: Session,
        shift: Shift | str = "current",
        *,
        product: str | None = None,
        pdf: str | Path | None = None,
        csv: str | Path | None = None,
        folder: str | Path | None = None,
    ) -> ReportFiles:
        """Write a shift's report: to `pdf` / `csv`, or both under their default names into
        `folder` (default: the reports folder) (QA, admin; audited)."""
        s = shift if isinstance(shift, Shift) else self.parse_shift(shift)
        if product is not None:
            product = check_product_name(product)
        self.authorize(session, Action.REPORT, s.key)
        if pdf is None and csv is None:
            pdf, csv = default_names(
                Path(folder) if folder is not None else reports_folder(self.cfg, self.data_dir),
                s, product,
            )  # fmt: skip
        files = write_report(
            self.db(), self.data_dir, self.cfg, s, product=product,
            pdf=Path(pdf) if pdf is not None else None,
            csv=Path(csv) if csv is not None else None,
            audit=self.access.audit.rows(s.start, s.end), by=f"{session.user} ({session.via})",
        )  # fmt: skip
        self.access.record(
            session, "report", object=s.key,
            after={"product": product, "pdf": str(files.pdf or ""), "csv": str(files.csv or ""),
                   "parts": files.rows},
        )  # fmt: skip
        return files

    def report_destinations(self) -> list[tuple[str, Path]]:
        """Where a report can be exported: the reports folder and mounted USB drives."""
        return export_destinations(reports_folder(self.cfg, self.data_dir))

    def preview_report(
        self, session: Session, shift: Shift | str, *, product: str | None = None, pages: int = 3
    ) -> tuple[ReportFiles, list[Path]]:
        """The report written into a temporary folder and its first `pages` pages as PNG
        pictures (none without pdftoppm) (QA, admin). The folder is the caller's to delete
        (the parent of the PDF)."""
        import tempfile

        from station.reports.preview import can_render, render_pages

        folder = Path(tempfile.mkdtemp(prefix="station-preview-"))
        files = self.shift_report(session, shift, product=product, pdf=folder / "report.pdf")
        pictures = (
            render_pages(folder / "report.pdf", folder, dpi=110, last=pages) if can_render() else []
        )
        return files, pictures

    def disposition_choices(self, session: Session, verdict: Verdict) -> tuple[Disposition, ...]:
        """The dispositions this session may record on a part with `verdict`."""
        return tuple(
            d
            for d in fitting(verdict)
            if self.may(
                session, Action.DISPOSITION_NOK if d in ON_REJECTS else Action.DISPOSITION_ANY
            )
        )

    def thumbnail(self, session: Session, row: InspectionRow, size: int) -> Any:
        """A recorded part's small picture with its overlay (RGB array), None without an image
        (technician, QA, admin)."""
        self.authorize(session, Action.VIEW_HISTORY)
        return thumbnail(self.data_dir, row, size)

    def _auto_report(self, shift: Shift, pdf: Path, csv: Path) -> ReportFiles:
        return write_report(
            self.db(), self.data_dir, self.cfg, shift, product=None, pdf=pdf, csv=csv,
            audit=self.access.audit.rows(shift.start, shift.end), by="station (end of shift)",
        )  # fmt: skip

    def _shift_has_parts(self, shift: Shift) -> bool:
        return bool(self.db().query_inspections(shift.start, shift.end, limit=1))

    # -- audit ---------------------------------------------------------------------------------
    def audit_rows(
        self, session: Session, since: TimeArg = None, until: TimeArg = None
    ) -> list[AuditRow]:
        """The audit trail, oldest first (QA, admin)."""
        self.authorize(session, Action.AUDIT)
        return self.access.audit.rows(since, until)

    def verify_audit(self, session: Session) -> Verification:
        """Check the audit trail's hash chain and head (QA, admin)."""
        self.authorize(session, Action.AUDIT)
        return self.access.audit.verify()

    # -- models --------------------------------------------------------------------------------
    def model_versions(self, product: str | None = None) -> list[ModelVersion]:
        """A product's versions (default: the configured one), oldest first."""
        product = check_product_name(product or self.product)
        current = self.store.current_or_none(product)
        out = []
        for v in self.store.versions(product):
            path = self.store.product_dir(product) / v
            try:
                m, _ = read_manifest(path)
            except ModelError as exc:
                log.warning("%s: %s", path, exc)
                continue
            out.append(
                ModelVersion(
                    product=product,
                    version=v,
                    current=current is not None and current.name == v,
                    threshold=m.threshold,
                    threshold_source=m.threshold_source,
                    created_at=m.created_at,
                    created_by=m.created_by,
                    bank_size=m.bank_size,
                    backbone=m.backbone,
                    n_train=m.n_train,
                )
            )
        return out

    def set_threshold(
        self,
        session: Session,
        value: float,
        *,
        product: str | None = None,
        check: float | None = None,
        reason: str = "",
    ) -> ModelVersion:
        """Write a new version of the product's current model with the reject limit `value`
        (and a check band from `check`; technician, admin; audited). Versions are sealed: the
        old one stays as it was, and the new one runs only once activated."""
        product = check_product_name(product or self.product)
        self.authorize(session, Action.THRESHOLD, product)
        for name, x in (("reject limit", value), ("check limit", check)):
            if x is not None and (not isinstance(x, int | float) or not math.isfinite(x) or x <= 0):
                raise StationError(f"a {name} must be a positive number, not {x!r}")
        if check is not None and check >= value:
            raise StationError(f"the check limit {check:.6g} must be below the reject limit")
        base = self.store.current(product)
        if base is None:
            raise StationError(f"product '{product}' has no model to set a limit on")
        old, _ = read_manifest(base)
        out = self.store.derive(
            product,
            base,
            trust=self.trust(),
            threshold=float(value),
            check_threshold=None if check is None else float(check),
            threshold_source=f"set by {session.user}" + (f": {reason}" if reason else ""),
            created_by=f"{session.user} ({session.via})",
        )
        band = f", check from {check:.6g}" if check is not None else ""
        self.access.record(
            session,
            "threshold",
            object=f"{product}/{out.name}",
            before=f"{base.name}: {old.threshold:.6g}",
            after=f"{out.name}: {float(value):.6g}{band}",
            reason=reason,
        )
        return next(v for v in self.model_versions(product) if v.version == out.name)

    def threshold_for_target(
        self,
        session: Session,
        data: Path,
        target_fnr: float,
        *,
        product: str | None = None,
        check: float | None = None,
    ) -> tuple[ModelVersion, Any]:
        """Evaluate the product's current model on a labelled set (MVTec layout) and write a
        new version whose limit meets the miss-rate target (technician, admin; audited).
        Returns the version and the evaluation report."""
        from station.inspect.evaluation import evaluate
        from station.model.patchcore import PatchCore
        from station.model.search import SearchSpec

        product = check_product_name(product or self.product)
        self.authorize(session, Action.THRESHOLD, product)
        if not 0.0 <= target_fnr < 1.0:
            raise StationError(f"--target-fnr must be in [0, 1), not {target_fnr}")
        base = self.store.current(product)
        if base is None:
            raise StationError(f"product '{product}' has no model to set a limit on")
        model = PatchCore.load(
            base,
            self.cfg.model.runtime,
            threads=self.cfg.model.threads,
            trust=self.trust(),
            search=SearchSpec.from_config(self.cfg.model),
        )
        try:
            report = evaluate(model, Path(data), target_fnr)
        finally:
            model.close()
        why = (
            f"miss rate <= {target_fnr:g} on {data}: misses {report.fnr:.4f}, "
            f"false rejects {report.fpr:.4f} ({report.n_good} good, {report.n_defect} defective)"
        )
        version = self.set_threshold(
            session, report.threshold, product=product, check=check, reason=why
        )
        return version, report

    def trust(self) -> Trust:
        """The keys whose models the line runs: the trust folder as it is now (from the
        station's config, never a recipe's)."""
        return Trust.load(
            trust_folder(self.data_dir, self.cfg.model.trust_dir),
            allow_unsigned=self.cfg.model.allow_unsigned,
        )

    def sign_model(self, session: Session, product: str, version: str) -> str:
        """Sign an intact version with this station's key (or the plant key): for versions
        made before signing, or brought from elsewhere and checked (admin; audited)."""
        product = check_product_name(product)
        self.authorize(session, Action.SETTINGS, f"{product}/{version}")
        if version not in self.store.versions(product):
            raise StationError(f"product '{product}' has no model version {version}")
        signer = self.store.signer()
        assert signer is not None
        kid = sign_artifact(self.store.product_dir(product) / version, signer)
        self.access.record(session, "model_sign", object=f"{product}/{version}", after=kid)
        return kid

    def activate_model(
        self, session: Session, version: str, *, product: str | None = None, reason: str = ""
    ) -> None:
        """Make `version` the product's current model (technician, admin; audited); a running
        line on that product switches at the next frame."""
        product = check_product_name(product or self.product)
        self.authorize(session, Action.MODEL, f"{product}/{version}")
        if version not in self.store.versions(product):
            raise StationError(f"product '{product}' has no model version {version}")
        self._point_at(session, "model_activate", product, version, reason)

    def _point_at(
        self, session: Session, action: str, product: str, version: str, reason: str
    ) -> None:
        """Make `version` current (audited as `action`); the running line switches to it.
        A version the line would refuse (unsigned, foreign, altered) is refused here, with the
        reason, instead of being pointed at and then not run."""
        load_artifact(self.store.product_dir(product) / version, self.trust(), product=product)
        before = self.store.current_or_none(product)
        self._audited(
            session,
            action,
            lambda: self.store.set_current(product, version, by=session.user),
            object=product,
            before=before.name if before is not None else None,
            after=version,
            reason=reason,
        )
        if product == self.product:
            self.line.reload_model()

    def rollback_model(
        self, session: Session, *, product: str | None = None, reason: str = ""
    ) -> str:
        """Back to the version that was current before this one (technician, admin; audited)."""
        product = check_product_name(product or self.product)
        self.authorize(session, Action.MODEL, product)
        previous = self.store.previous(product)
        if previous is None:
            raise StationError(f"product '{product}' has no earlier active version to go back to")
        self._point_at(session, "model_rollback", product, previous, reason)
        return previous

    # -- products ------------------------------------------------------------------------------
    def product_names(self) -> list[str]:
        """Every product with a recipe or a model (the line's own included)."""
        return sorted({*self.products.names(), self.product})

    def create_product(
        self, session: Session, name: str, overlay: dict[str, Any] | None = None, notes: str = ""
    ) -> Product:
        """A new product: its recipe (camera and model settings over the station's config)."""
        self.authorize(session, Action.PRODUCT, name)
        product = self.products.create(
            name, overlay or {}, self.cfg, by=f"{session.user} ({session.via})", notes=notes
        )
        self.access.record(session, "product_create", object=name, after=overlay or {})
        return product

    def set_product_camera_feature(
        self, session: Session, product: str, name: str, value: float
    ) -> None:
        """Save a camera feature (ExposureTime, Gain) into a product's recipe (audited)."""
        self.authorize(session, Action.PRODUCT, product)
        if name not in ("ExposureTime", "Gain"):
            raise StationError(f"'{name}' is not a feature set from the camera check")
        recipe = self.products.get(product)
        overlay = dict(recipe.overlay) if recipe is not None else {}
        camera = dict(overlay.get("camera", {}))
        genicam = dict(camera.get("genicam", {}))
        features = dict(genicam.get("features", {}))
        before = features.get(name)
        features[name] = float(value)
        genicam["features"] = features
        camera["genicam"] = genicam
        overlay["camera"] = camera
        self._audited(
            session, "camera_feature",
            lambda: self.products.update(product, overlay, self.cfg),
            object=f"{product}: {name}", before=before, after=float(value),
        )  # fmt: skip

    def switch_product(self, session: Session, product: str, *, reason: str = "") -> None:
        """Run another product: its camera settings and models from the next frame on, its part
        ids, and after a restart too (technician, admin; audited)."""
        product = check_product_name(product)
        self.authorize(session, Action.PRODUCT, product)
        if product not in self.product_names():
            raise StationError(f"there is no product '{product}'")
        if product == self.product:
            return
        cfg = self.products.config(product, self.cfg)
        before = self.product

        def switch() -> None:
            self.products.set_active(product)
            self.product, old_camera, self.line_cfg = product, self.line_cfg.camera, cfg
            self.line.part_ids = PartIds(product, self._last_part_sequence)
            self.line.switch_models(
                ProductModels(cfg, self.data_dir, self.store, product, trust=self.trust)
            )
            if cfg.camera != old_camera and not self._fixed_camera:
                self.line.replace_camera(self._line_camera)

        self._audited(
            session, "product_switch", switch, object=product, before=before, after=product,
            reason=reason,
        )  # fmt: skip

    def setup(self, session: Session, product: str) -> SetupSession:
        """The product setup (the wizard's model) for an existing product (technician)."""
        if product not in self.product_names():
            raise StationError(f"there is no product '{product}': create it first")
        return SetupSession(self, session, product)

    def save_version(
        self,
        session: Session,
        product: str,
        candidate: Path,
        *,
        threshold: float,
        check_threshold: float | None = None,
        notes: str = "",
        validation: dict[str, Any] | None = None,
        threshold_source: str = "",
    ) -> ModelVersion:
        """A built model (`candidate`) with its limits as the product's next sealed version,
        not yet active (technician, admin; audited)."""
        product = check_product_name(product)
        self.authorize(session, Action.MODEL, product)
        self.authorize(session, Action.THRESHOLD, product)
        if not math.isfinite(threshold) or threshold <= 0:
            raise StationError(f"a reject limit must be a positive number, not {threshold}")
        artifact = load_artifact(candidate, self.trust())
        self.store.pin_current(product)
        out = self.store.next_version_dir(product)
        manifest = dataclasses.replace(
            artifact.manifest,
            product=product,
            version=out.name,
            threshold=float(threshold),
            check_threshold=None if check_threshold is None else float(check_threshold),
            threshold_source=threshold_source or f"set by {session.user}",
            notes=notes,
            validation=validation or {},
            created_by=f"{session.user} ({session.via})",
            created_at=now_iso(),
            files={},
        )
        write_derived(out, manifest, artifact, self.store.signer())
        self.access.record(
            session,
            "model_save",
            object=f"{product}/{out.name}",
            after={"threshold": threshold, "check_threshold": check_threshold},
            reason=notes,
        )
        return next(v for v in self.model_versions(product) if v.version == out.name)

    def fit_version(
        self,
        session: Session,
        product: str,
        images: list[Path],
        *,
        progress: bool = False,
        model_cfg: ModelConfig | None = None,
    ) -> FitReport:
        """Fit on good images into the product's store as its next version (technician,
        admin; audited); it runs only once activated (the first version of a new product
        counts as current, there being no other)."""
        from station.model.training import fit

        product = check_product_name(product)
        self.authorize(session, Action.MODEL, product)
        self.store.pin_current(product)
        out = self.store.next_version_dir(product)
        cfg = model_cfg or self.products.config(product, self.cfg).model
        report = fit(
            images, cfg, out, product=product, progress=progress,
            created_by=f"{session.user} ({session.via})", signer=self.store.signer(),
        )  # fmt: skip
        self.access.record(
            session, "model_fit", object=f"{product}/{out.name}",
            after={"images": len(images), "bank": report.bank_size},
        )  # fmt: skip
        return report

    def update_bank(
        self, session: Session, product: str, images: list[Path], *, base: str | None = None
    ) -> FitReport:
        """A new version of the product's current model (or `base`) that also knows `images`,
        new good parts, by a coreset over its bank and their patches (technician, admin;
        audited); it runs only once activated."""
        from station.model.training import update_bank

        product = check_product_name(product)
        self.authorize(session, Action.MODEL, product)
        src = self.store.product_dir(product) / base if base else self.store.current(product)
        if src is None or not src.is_dir():
            raise StationError(f"product '{product}' has no model to update")
        self.store.pin_current(product)
        out = self.store.next_version_dir(product)
        report = update_bank(
            src, images, self.products.config(product, self.cfg).model, out,
            created_by=f"{session.user} ({session.via})", signer=self.store.signer(),
            trust=self.trust(),
        )  # fmt: skip
        self.access.record(
            session, "model_update_bank", object=f"{product}/{out.name}", before=src.name,
            after={"new_parts": len(images), "bank": report.bank_size},
        )  # fmt: skip
        return report

    def _audited(self, session: Session, action: str, do: Callable[[], object], **row: Any) -> None:
        """Write the audit row, then act; an act that fails gets a second row saying so (the
        trail never lacks a change that happened)."""
        self.access.record(session, action, **row)
        try:
            do()
        except Exception as exc:
            self.access.record(
                session, f"{action}_failed", object=row.get("object", ""), reason=str(exc)
            )
            raise
