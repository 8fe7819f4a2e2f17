"""The reject gate: each part's decision reaches the reject output within a deadline after its
trigger, or the part is rejected (fail-safe) and counted.

A part begins at its trigger: a `trigger()` call (the PLC's, through the handshake) or, for a
camera that runs free or on its own hardware trigger, the frame's arrival (`PartCamera` tells
the gate of every frame before the line sees it). It ends with the line's result for that frame
(the gate is one of the line's sinks), or at `trigger + deadline_s` without one: then it is
rejected, whatever it was. A frame the line dropped, a frame refused before a verdict, an
inspection that hangs, a trigger the camera never answered: each is a part without a result in
time, so a reject. A result that comes after its part's deadline changes nothing (the part is
gone) and is counted as late; it is still recorded by the recorder.

Two threads: the gate's own, which keeps the deadlines and hands each decision to the listeners
(the PLC handshake), and the output's, which drives the driver's pulses, so that a slow or dead
output never delays a deadline.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from station.camera.base import Camera, CameraContext, CameraInfo
from station.config import RejectConfig
from station.core.errors import StationError
from station.core.result import BadFrame, Frame, InspectionResult, StationEvent, Verdict
from station.core.worker import Worker
from station.outputs.drivers import GenICamLine, OutputDriver

__all__ = ["Decision", "GateCounters", "PartCamera", "RejectGate"]

log = logging.getLogger(__name__)

IDLE_TICK_S = 0.2  # longest the gate's threads sleep before looking at stop again
RETRY_OUTPUT_S = 2.0  # an output that cannot start is tried again this often
# RejectGate.start waits at most this long for the output's first connection attempt, so that
# the line's first parts do not fall due while the driver is still connecting.
OUTPUT_START_WAIT_S = 3.0
DRAIN_MARGIN_S = 1.0  # at a stop, pulses are driven until the last ends, plus this much
KEEP_DECIDED_S = 120.0  # a decided part is remembered this long, to know its result as late


@dataclass(frozen=True)
class Decision:
    """What the gate decided for one part, and when (monotonic seconds)."""

    part: int  # the gate's part number: 1, 2, ... since start
    reject: bool
    verdict: Verdict | None  # None: no verdict in time (fail-safe)
    failsafe: str  # "" for a part judged in time, else why it was rejected without a verdict
    trigger_at: float
    decided_at: float
    triggered: bool = False  # the part came from trigger() (the PLC), not from a frame
    part_id: str = ""
    frame_id: int | None = None
    score: float | None = None
    threshold: float | None = None

    @property
    def latency_s(self) -> float:
        """From the trigger to the decision."""
        return self.decided_at - self.trigger_at


@dataclass(frozen=True)
class GateCounters:
    """The gate's counts since start."""

    parts: int = 0
    ok: int = 0
    rejected: int = 0  # by verdict (NOK, and CHECK with reject.reject_check)
    failsafe: int = 0  # rejected without a verdict in time (late, missing, refused frame)
    late: int = 0  # results that came after their part's deadline
    pulses: int = 0  # reject pulses the output was driven with
    output_errors: int = 0
    missed: int = 0  # reject pulses the output could not drive (down, or cut off at a stop)
    pending: int = 0  # parts waiting for their decision now


@dataclass
class _Part:
    number: int
    trigger_at: float
    triggered: bool
    decided: bool = False
    key: tuple[str, int, float] | None = None


def _key(source: str, frame_id: int, timestamp: float) -> tuple[str, int, float]:
    return (source, frame_id, timestamp)


def _monotonic_of(epoch: float) -> float:
    """An epoch time (a frame's timestamp) on the monotonic clock the gate keeps its times on."""
    return time.monotonic() - (time.time() - epoch)


class RejectGate(Worker):
    """The line's sink that turns results into timed reject pulses, with fail-safe deadlines.

    `paced`: parts come from `trigger()` and the camera grabs one frame per trigger (PartCamera
    asks `take_trigger()`); otherwise every frame is a part.
    """

    name = "reject-gate"

    def __init__(
        self,
        cfg: RejectConfig,
        driver: OutputDriver,
        *,
        paced: bool = False,
        on_event: Callable[[StationEvent], None] | None = None,
        hold: Callable[[], bool] | None = None,
        on_failure: Callable[[Worker, BaseException], None] | None = None,
    ) -> None:
        """`hold`: True while the line is paused (the camera is not handed triggers then);
        `on_failure`: the gate's or the output's thread died (it must raise an alarm)."""
        super().__init__(on_failure)
        self.cfg = cfg
        self.driver = driver
        self.paced = paced
        self._hold = hold or (lambda: False)
        self._on_event = on_event
        self._cond = threading.Condition()
        self._numbers = itertools.count(1)
        self._deadlines: list[tuple[float, int, _Part]] = []
        self._by_key: OrderedDict[tuple[str, int, float], _Part] = OrderedDict()
        self._decided: deque[_Part] = deque()  # in decision order, pruned after KEEP_DECIDED_S
        self._requests: deque[_Part] = deque()  # triggers the camera has not taken yet
        self._outbox: deque[Decision] = deque()
        self._listeners: list[Callable[[Decision], None]] = []
        self._counts = dict.fromkeys(("parts", "ok", "rejected", "failsafe", "late"), 0)
        self._last_failsafe = ""
        self.output = _Output(self, on_failure)

    # -- wiring --------------------------------------------------------------------------------
    def add_listener(self, callback: Callable[[Decision], None]) -> None:
        """`callback` with every decision, on the gate's thread (it must return quickly)."""
        self._listeners.append(callback)

    def start(self, wait_s: float = OUTPUT_START_WAIT_S) -> None:
        """Start the gate's and the output's threads, then wait up to `wait_s` for the output's
        first try to connect to its device (it ends at once when the device is refused).

        Without the wait the line judged its first part while an OPC UA client was still
        connecting (a loaded CI machine): that part's pulse fell due with the output down and
        was a missed reject. Bounded, because an output that does not answer is an alarm, not
        a station that does not start; it keeps trying in its own thread."""
        super().start()
        self.output.start()
        if not self.output.tried.wait(wait_s):
            log.warning(
                "reject output %s still connecting after %.1f s: the line starts; parts due "
                "before it is up are missed rejects (counted and alarmed)",
                self.driver.name, wait_s,
            )  # fmt: skip

    def stop(self) -> None:
        """Stop taking parts: every part still waiting for its result is rejected now (the line
        has ended, no result will come); the decisions are handed out and their pulses driven
        (the parts are on their way to the gate), then the output is set off (see join)."""
        with self._cond:
            now = time.monotonic()
            for _, _, part in self._deadlines:
                if not part.decided:
                    self._fail(part, "station stopped", now)
            self._deadlines.clear()
            self._requests.clear()
        super().stop()
        with self._cond:
            self._cond.notify_all()

    @property
    def drain_s(self) -> float:
        """How long the output may need after a stop: the last part's delay and pulse."""
        return self.cfg.delay_s + self.cfg.pulse_s + DRAIN_MARGIN_S

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the gate's thread, then for the output to drive the pulses it was given."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ok = super().join(timeout)
        self.output.stop()
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self.output.join(left) and ok

    # -- parts in ------------------------------------------------------------------------------
    def trigger(self) -> int:
        """A part is at the camera now (the PLC's trigger): its deadline starts; the camera
        grabs a frame for it. Returns the part's number; StationError when the gate is not
        running (no deadline would be kept)."""
        with self._cond:
            if self.stopping or not self.alive:
                why = "stopped" if self.stopping else "not running"
                raise StationError(f"trigger refused: the reject gate is {why}")
            part = self._new_part(time.monotonic(), triggered=True)
            self._requests.append(part)
            self._cond.notify_all()
        return part.number

    def take_trigger(self, closed: threading.Event) -> _Part | None:
        """For the camera: the oldest trigger still waiting for its frame (triggers whose
        deadline has passed are skipped: their part is gone); None once `closed` is set or the
        line is paused (the camera is released then; a trigger meanwhile is a fail-safe reject
        at its deadline)."""
        with self._cond:
            while True:
                if closed.is_set() or self.stopping or self._hold():
                    return None
                while self._requests and self._requests[0].decided:
                    self._requests.popleft()
                if self._requests:
                    return self._requests.popleft()
                self._cond.wait(IDLE_TICK_S)

    def wake(self) -> None:
        """Wake a camera waiting in take_trigger (it is being closed)."""
        with self._cond:
            self._cond.notify_all()

    def frame_seen(self, frame: Frame, part: _Part | None = None) -> None:
        """A frame the line is about to get: the frame of `part` (a trigger's), or a part of
        its own that began when the frame arrived."""
        with self._cond:
            if part is None:
                part = self._new_part(_monotonic_of(frame.timestamp), triggered=False)
            part.key = _key(frame.source, frame.frame_id, frame.timestamp)
            self._by_key[part.key] = part

    def bad_frame(self, bad: BadFrame, part: _Part | None = None) -> None:
        """A frame that will get no verdict: its part is rejected now."""
        with self._cond:
            if part is None:
                part = self._new_part(_monotonic_of(bad.timestamp), triggered=False)
            if not part.decided:
                self._fail(part, f"frame refused: {bad.reason}", time.monotonic())

    def _new_part(self, at: float, *, triggered: bool) -> _Part:
        part = _Part(next(self._numbers), at, triggered)
        self._counts["parts"] += 1
        heapq.heappush(self._deadlines, (at + self.cfg.deadline_s, part.number, part))
        self._cond.notify_all()
        return part

    # -- the LineSink protocol (the inspector's thread: never blocks) --------------------------
    def submit(self, result: InspectionResult) -> bool:
        """The result of a part: its decision, unless its deadline has passed."""
        now = time.monotonic()
        key = _key(result.source, result.frame_id, result.timestamp)
        with self._cond:
            part = self._by_key.pop(key, None)
            if part is None:  # a frame that went round PartCamera: its part begins now
                part = self._new_part(_monotonic_of(result.timestamp), triggered=False)
            if part.decided:
                self._counts["late"] += 1
                late = now - part.trigger_at
                message = (
                    f"result of part {part.number} ({result.part_id}, {result.verdict.value}) "
                    f"came {late:.2f} s after its trigger, after the deadline: the part had "
                    "been rejected"
                )
            elif now > part.trigger_at + self.cfg.deadline_s:
                self._fail(part, f"result {now - part.trigger_at:.2f} s after the trigger", now)
                self._counts["late"] += 1
                message = ""
            else:
                reject = result.verdict == Verdict.NOK or (
                    result.verdict == Verdict.CHECK and self.cfg.reject_check
                )
                self._counts["rejected" if reject else "ok"] += 1
                self._decide(
                    part,
                    Decision(
                        part=part.number, reject=reject, verdict=result.verdict, failsafe="",
                        trigger_at=part.trigger_at, decided_at=now, triggered=part.triggered,
                        part_id=result.part_id, frame_id=result.frame_id, score=result.score,
                        threshold=result.threshold,
                    ),
                )  # fmt: skip
                return True
        if message:
            self._event(message, {"part": part.number, "late": True})
        return True

    def submit_event(self, event: StationEvent) -> bool:
        """Events do not concern the gate."""
        return True

    def count_dropped(self, n: int = 1, when: float | None = None) -> None:
        """Dropped frames are parts without a result: their deadline rejects them."""

    # -- decisions -----------------------------------------------------------------------------
    def _fail(self, part: _Part, why: str, now: float) -> None:
        """Reject `part` without a verdict (the lock is held)."""
        self._counts["failsafe"] += 1
        self._last_failsafe = why
        self._decide(
            part,
            Decision(
                part=part.number, reject=True, verdict=None, failsafe=why,
                trigger_at=part.trigger_at, decided_at=now, triggered=part.triggered,
                frame_id=part.key[1] if part.key else None,
            ),
        )  # fmt: skip

    def _decide(self, part: _Part, decision: Decision) -> None:
        part.decided = True
        self._decided.append(part)
        self._outbox.append(decision)
        self._cond.notify_all()

    def step(self) -> bool:
        """Reject the parts whose deadline passed; hand out the decisions; drive the output."""
        with self._cond:
            now = time.monotonic()
            while self._deadlines and self._deadlines[0][0] <= now:
                _, _, part = heapq.heappop(self._deadlines)
                if not part.decided:
                    self._fail(part, f"no result within {self.cfg.deadline_s:g} s", now)
            while self._decided and self._decided[0].trigger_at < now - KEEP_DECIDED_S:
                old = self._decided.popleft()
                if old.key is not None:
                    self._by_key.pop(old.key, None)
            if not self._outbox:
                wait = IDLE_TICK_S
                if self._deadlines:
                    wait = min(wait, max(0.0, self._deadlines[0][0] - now))
                self._cond.wait(wait)
                return True
        self._deliver()
        return True

    def _deliver(self) -> None:
        with self._cond:
            out = list(self._outbox)
            self._outbox.clear()
        for d in out:
            if d.reject:
                start = max(d.decided_at, d.trigger_at + self.cfg.delay_s)
                self.output.pulse(start, start + self.cfg.pulse_s, d.part)
            for listener in self._listeners:
                try:
                    listener(d)
                except Exception:
                    log.exception("reject decision listener failed")
            if d.failsafe:
                self._event(
                    f"part {d.part} rejected fail-safe: {d.failsafe}",
                    {"part": d.part, "failsafe": d.failsafe, "frame_id": d.frame_id},
                )

    def teardown(self) -> None:
        """Hand out the decisions made (stop() has decided every part)."""
        with self._cond:
            left = bool(self._outbox)
        if left:
            self._deliver()

    def _event(self, message: str, data: dict[str, object]) -> None:
        log.warning("%s", message)
        if self._on_event is not None:
            self._on_event(StationEvent(kind="reject", message=message, data=data))

    # -- observation ---------------------------------------------------------------------------
    def counters(self) -> GateCounters:
        """A snapshot of the counts."""
        with self._cond:
            c = dict(self._counts)
            pending = sum(1 for _, _, p in self._deadlines if not p.decided)
        return GateCounters(
            **c, pulses=self.output.pulses, output_errors=self.output.errors,
            missed=self.output.missed, pending=pending,
        )  # fmt: skip

    def alarms(self) -> tuple[str, ...]:
        """What the operator must see: fail-safe rejects, an output that does not work."""
        out = []
        c = self.counters()
        if c.failsafe:
            out.append(
                f"{c.failsafe} part{'s' if c.failsafe > 1 else ''} rejected fail-safe "
                f"(last: {self._last_failsafe})"
            )
        if c.missed:
            out.append(f"{c.missed} reject pulse{'s' if c.missed > 1 else ''} missed")
        if self.output.problem:
            out.append(f"reject output: {self.output.problem}")
        for worker in (self, self.output):
            if worker.error is not None:
                out.append(f"{worker.name} not alive: {worker.error}")
        return tuple(out)


@dataclass
class _Pulse:
    start: float  # monotonic
    end: float
    part: int
    driven: bool = False  # the output was on during it


class _Output(Worker):
    """Drives the reject output: on from each pulse's start to its end (overlapping pulses
    merge); starts the driver, and starts it again after a failure. A pulse that ends while
    the output cannot be driven is a missed reject: counted, an event naming the part."""

    name = "reject-output"

    def __init__(
        self, gate: RejectGate, on_failure: Callable[[Worker, BaseException], None] | None = None
    ) -> None:
        super().__init__(on_failure)
        self.gate = gate
        self.driver = gate.driver
        self._cond = threading.Condition()
        # Every driver call holds this: the output's thread and release() (the camera's
        # thread, for an output on the camera) never drive the device at once.
        self._io = threading.Lock()
        self._pulses: list[_Pulse] = []  # sorted by start
        self._on = False
        self._started = False
        self._next_try = 0.0
        self.pulses = 0
        self.errors = 0
        self.missed = 0  # reject pulses that could not be driven (output down, stop)
        self.problem = ""  # why the output does not work now ("" when it does)
        self.tried = threading.Event()  # the driver's first start has succeeded or failed
        self.on_times: list[float] = []  # when each "on" write returned (monotonic)

    @property
    def up(self) -> bool:
        """Whether the driver is started now (the device connected and switched off)."""
        return self._started

    def pulse(self, start: float, end: float, part: int = 0) -> None:
        """Drive the output on from `start` to `end` (for the gate's part `part`)."""
        with self._cond:
            self._pulses.append(_Pulse(start, end, part))
            self._pulses.sort(key=lambda p: p.start)
            self._cond.notify_all()

    def stop(self) -> None:
        super().stop()
        with self._cond:
            self._cond.notify_all()

    def step(self) -> bool:
        now = time.monotonic()
        if not self._started:
            self._prune(now)  # the output is down: pulses that end meanwhile are missed
            if now < self._next_try:
                with self._cond:
                    self._cond.wait(min(IDLE_TICK_S, self._next_try - now))
                return True
            self._start_driver()
            if not self._started:
                return True
        self._drive()
        return True

    def _prune(self, now: float) -> None:
        """Drop the pulses that have ended; those never driven are missed rejects."""
        with self._cond:
            gone = [p for p in self._pulses if p.end <= now]
            self._pulses = [p for p in self._pulses if p.end > now]
        for p in gone:
            if not p.driven:
                self._missed(p, f"the output was down ({self.problem or 'not started'})")

    def _missed(self, pulse: _Pulse, why: str) -> None:
        self.missed += 1
        self.gate._event(
            f"part {pulse.part} not rejected: its reject pulse was missed, {why}",
            {"part": pulse.part, "missed": True, "alarm": True},
        )

    def _drive(self) -> None:
        """Set the output as the pulses want it now, or wait for the next edge."""
        self._prune(time.monotonic())
        with self._cond:
            now = time.monotonic()
            want = any(p.start <= now for p in self._pulses)
            new_pulse = want and not self._on
            if want == self._on:
                if want:
                    for p in self._pulses:
                        if p.start <= now:
                            p.driven = True
                edges = [t for p in self._pulses for t in (p.start, p.end) if t > now]
                self._cond.wait(min([IDLE_TICK_S, *(t - now for t in edges)]))
                return
        try:
            with self._io:
                if not self._started:  # released meanwhile (the camera closed)
                    return
                self.driver.set(want)
        except Exception as exc:  # OutputError; anything else from a driver is a failure too
            self._failed(str(exc) or type(exc).__name__)
            return
        self._on = want
        if want:
            with self._cond:
                for p in self._pulses:
                    if p.start <= now:
                        p.driven = True
        if new_pulse:
            self.pulses += 1
            self.on_times.append(time.monotonic())
        if self.problem:
            self._report("", f"reject output {self.driver.name} works again")

    def release(self) -> None:
        """The output's device goes away (the camera it is on closes): output off and closed
        now, from the caller's thread; the output's thread starts it again once it can."""
        with self._io:
            if not self._started:
                return
            self._started, self._on = False, False
            self._next_try = time.monotonic() + RETRY_OUTPUT_S
            try:
                self.driver.close()
            except Exception:
                log.exception("switching the reject output off failed")

    def _start_driver(self) -> None:
        try:
            with self._io:
                self.driver.start()
        except Exception as exc:  # OutputError, or a CameraError while the camera is away
            self._next_try = time.monotonic() + RETRY_OUTPUT_S
            self._report(str(exc), f"reject output {self.driver.name} not working: {exc}")
            self.tried.set()
            return
        self._started, self._on = True, False
        self.tried.set()  # after _started: whoever waits on it sees the output up
        if self.problem:
            self._report("", f"reject output {self.driver.name} works again")
        log.info("reject output: %s", self.driver.name)

    def _failed(self, why: str) -> None:
        self.errors += 1
        self._started = False
        self._next_try = time.monotonic() + min(RETRY_OUTPUT_S, 0.1 * self.errors)
        try:
            with self._io:
                self.driver.close()
        except Exception:
            log.debug("closing a failed output", exc_info=True)
        self._report(why, f"reject output {self.driver.name} failed: {why}")

    def _report(self, problem: str, message: str) -> None:
        if problem == self.problem:
            return  # the same trouble again: one event, not one per retry
        self.problem = problem
        self.gate._event(message, {"output": self.driver.name, "alarm": bool(problem)})

    def teardown(self) -> None:
        """Drive the pulses still due until the last has ended (the parts in flight reach the
        gate), then the output off and closed; a pulse cut off is a missed reject."""
        self.tried.set()  # a thread that ends before its first try keeps no one waiting
        end = time.monotonic() + self.gate.drain_s
        while self._pulses and time.monotonic() < end:
            if self._started:
                self._drive()
            else:
                self.step()
        with self._cond:
            left, self._pulses = self._pulses, []
        for pulse in left:
            self._missed(pulse, "the station stopped before its pulse ended")
        try:
            with self._io:
                self.driver.close()
        except Exception:
            log.exception("closing the reject output failed")


class PartCamera(CameraContext):
    """The line's camera as the gate sees it: it tells the gate of every frame (a part begins),
    and when paced grabs one frame per trigger."""

    def __init__(self, inner: Camera, gate: RejectGate) -> None:
        self.inner = inner
        self.gate = gate
        self._closed = threading.Event()

    def open(self) -> None:
        """Open the camera."""
        self._closed.clear()
        self.inner.open()

    def close(self) -> None:
        """Close the camera (and end a wait for a trigger); an output on the camera itself is
        switched off first, while it still can be."""
        self._closed.set()
        self.gate.wake()
        if isinstance(self.gate.driver, GenICamLine):
            self.gate.output.release()
        self.inner.close()

    def info(self) -> CameraInfo:
        """The camera's own description."""
        return self.inner.info()

    def frames(self) -> Iterator[Frame | BadFrame]:
        """The camera's frames, each announced to the gate; when paced, one per trigger."""
        frames = iter(self.inner.frames())
        try:
            while True:
                part = None
                if self.gate.paced:
                    part = self.gate.take_trigger(self._closed)
                    if part is None:
                        return
                try:
                    frame = next(frames)
                except StopIteration:
                    return
                if isinstance(frame, BadFrame):
                    self.gate.bad_frame(frame, part)
                else:
                    self.gate.frame_seen(frame, part)
                yield frame
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()
