"""The PLC handshake over Modbus TCP: Trigger / Ready / Result valid / Result acknowledged /
OK / NOK / Error, and the recipe (product) number to run.

The PLC is the Modbus server (as line PLCs are); the station is the client and polls its
holding registers every `plc.poll_s`. The register map (offsets from `plc.inputs` and
`plc.outputs`; the README has the timing diagram):

    PLC -> station   inputs + 0   control word: bit 0 Trigger, bit 1 Result acknowledged
                     inputs + 1   recipe number to run (0: no request)
    station -> PLC   outputs + 0  status word: bit 0 Ready, bit 1 Result valid, bit 2 OK,
                                  bit 3 NOK, bit 4 Error, bit 5 Busy
                     outputs + 1  recipe number running (0: the product has no number)
                     outputs + 2  result counter (+1 with each Result valid, wraps at 65536)
                     outputs + 3  error code (ERROR_CODES)
                     outputs + 4  score in per mille of the reject limit (capped at 65535)
                     outputs + 5  the gate's part number of the result (wraps at 65536)

One cycle: Ready -> the PLC sets Trigger -> Busy (Ready off) -> the decision (at the latest the
reject deadline after the Trigger was read) -> OK or NOK (+ Error when fail-safe) with Result
valid -> the PLC sets Result acknowledged -> Result valid, OK, NOK off -> the PLC clears Trigger
and Result acknowledged -> Ready. With `plc.trigger = false` the parts come from the camera
(free running or its hardware trigger) and each decision is reported the same way, in order,
without waiting for a Trigger; a decision that waited longer than the reject deadline for the
PLC (a slow or absent PLC) is dropped, counted and an event, so a Result valid is never for a
part long gone.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from station.config import PLC_INPUT_WORDS, PLC_OUTPUT_WORDS, PlcConfig
from station.core.errors import StationError
from station.core.result import StationEvent
from station.core.worker import Worker
from station.outputs.reject import Decision, RejectGate

__all__ = [
    "ACK",
    "BUSY",
    "ERROR",
    "ERROR_CODES",
    "NOK",
    "OK",
    "READY",
    "RESULT_VALID",
    "TRIGGER",
    "PlcHandshake",
]

log = logging.getLogger(__name__)

# Control word (PLC -> station).
TRIGGER, ACK = 1 << 0, 1 << 1
# Status word (station -> PLC).
READY, RESULT_VALID, OK, NOK, ERROR, BUSY = (1 << i for i in range(6))

ERROR_CODES = {
    0: "none",
    1: "no result within the reject deadline: the part was rejected (fail-safe)",
    2: "the line is not running (stopped, paused, camera lost, no model)",
    3: "the requested recipe number is not in plc.products",
    4: "the product switch was refused (see the station's events)",
    5: "the reject output does not work",
}
RECONNECT_S = 1.0


class PlcHandshake(Worker):
    """Polls the PLC's registers and answers them; decisions come from the reject gate."""

    name = "plc-handshake"

    def __init__(
        self,
        cfg: PlcConfig,
        gate: RejectGate,
        *,
        line_ready: Callable[[], bool],
        product: Callable[[], str],
        switch: Callable[[str, int], None],
        on_event: Callable[[StationEvent], None] | None = None,
        on_failure: Callable[[Worker, BaseException], None] | None = None,
    ) -> None:
        """`on_failure`: the handshake's thread died (it must raise an alarm)."""
        super().__init__(on_failure)
        self.cfg = cfg
        self.gate = gate
        self._line_ready = line_ready
        self._product = product
        self._switch = switch
        self._on_event = on_event
        self._numbers = {name: int(n) for n, name in cfg.products.items()}
        self._decisions: deque[Decision] = deque()
        gate.add_listener(self._decisions.append)
        self._client: Any = None
        self._connected = False
        self._next_connect = 0.0
        self.problem = ""  # why the PLC cannot be reached now ("" when it can)
        self._phase = "idle"  # idle | busy | result | release
        self._waiting_for: int | None = None  # the part of the Trigger being answered
        self._last_control = 0
        self._recipe_seen = 0
        self._recipe_error = 0
        self._status = 0
        self._counter = 0
        self._code = 0  # the error code of the result shown
        self._shown_code = 0
        self._score = 0
        self._part = 0  # the gate's part number of the result shown
        self.overruns = 0  # decisions dropped: the PLC did not take them within the deadline
        self._written: list[int] | None = None
        self.cycles = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def setup(self) -> None:
        """Make the Modbus client (it connects in step)."""
        from pymodbus.client import ModbusTcpClient

        self._client = ModbusTcpClient(
            self.cfg.host, port=self.cfg.port, timeout=self.cfg.timeout_s, retries=0
        )

    def teardown(self) -> None:
        """Tell the PLC the station is gone (Ready off), then disconnect. Stopped after the gate,
        so the part being answered has its decision: one last Result valid reports it."""
        if self._client is None:
            return
        if self._connected:
            try:
                self._write(self._last_words())
            except StationError as exc:
                log.debug("PLC: %s", exc)
        self._client.close()

    def _last_words(self) -> list[int]:
        if self._phase == "busy":
            for d in self._decisions:
                if d.part == self._waiting_for:
                    self._result(d)
                    break
        elif self._phase == "idle" and not self.cfg.trigger and self._decisions:
            self._result(self._decisions.popleft())
        if self._phase == "result":  # the result stays valid; Ready and Busy off
            status = self._status & (RESULT_VALID | OK | NOK) | (ERROR if self._code else 0)
            words = [status, self._recipe_number(), self._counter, self._code, self._score]
            return [*words, self._part]
        return [ERROR, self._recipe_number(), self._counter & 0xFFFF, 2, 0, 0]

    def step(self) -> bool:
        """One poll: read the PLC's words, move the handshake on, write the station's words."""
        now = time.monotonic()
        if not self._connected:
            if now < self._next_connect:
                self.wait(min(0.2, self._next_connect - now))
                return True
            self._connect()
            if not self._connected:
                return True
        try:
            control, recipe = self._read()
            self._advance(control, recipe)
            self._publish_words()
        except StationError as exc:
            self._lost(str(exc))
            return True
        except OSError as exc:  # a socket error the client did not wrap
            self._lost(f"{type(exc).__name__}: {exc}")
            return True
        self.wait(self.cfg.poll_s)
        return True

    # -- the handshake -------------------------------------------------------------------------
    def _drop_stale(self, now: float) -> None:
        """Drop the decisions that waited longer than the reject deadline for the PLC."""
        limit = self.gate.cfg.deadline_s
        dropped: list[int] = []
        while self._decisions and now - self._decisions[0].decided_at > limit:
            dropped.append(self._decisions.popleft().part)
        if dropped:
            self.overruns += len(dropped)
            parts = ", ".join(map(str, dropped[:10])) + (", ..." if len(dropped) > 10 else "")
            self._event(
                f"PLC: {len(dropped)} result{'s' if len(dropped) > 1 else ''} not reported, not "
                f"taken within {limit:g} s (parts {parts}); {self.overruns} in all"
            )

    def _advance(self, control: int, recipe: int) -> None:
        self._drop_stale(time.monotonic())
        rising = control & TRIGGER and not self._last_control & TRIGGER
        self._last_control = control
        if self._phase == "idle":
            if recipe != self._recipe_seen:
                self._recipe_seen = recipe
                self._take_recipe(recipe)
            if self.cfg.trigger:
                if rising:
                    try:
                        self._waiting_for = self.gate.trigger()
                        self._phase = "busy"
                    except StationError:  # the gate has stopped: NOK, Error, code 2
                        self._refused()
            elif self._decisions:
                self._result(self._decisions.popleft())
        if self._phase == "busy":
            while self._decisions:
                d = self._decisions.popleft()
                if d.part == self._waiting_for:
                    self._result(d)
                    break
        elif self._phase == "result" and control & ACK:
            self._status &= ~(RESULT_VALID | OK | NOK)
            self._code = 0
            self._phase = "release"
        elif (
            self._phase == "release"
            and not control & ACK
            and not (self.cfg.trigger and control & TRIGGER)
        ):
            self._phase = "idle"
            self.cycles += 1
        ready = self._phase == "idle" and self._line_ready()
        self._status = (self._status & ~(READY | BUSY | ERROR)) | (READY if ready else 0)
        if self._phase == "busy":
            self._status |= BUSY
        code = self._code or self._fault_code()
        if code:
            self._status |= ERROR
        self._shown_code = code

    def _result(self, d: Decision) -> None:
        self._counter = (self._counter + 1) & 0xFFFF
        self._status |= RESULT_VALID | (NOK if d.reject else OK)
        self._code = 1 if d.failsafe else 0
        self._part = d.part & 0xFFFF
        if d.score is not None and d.threshold:
            self._score = min(65535, max(0, round(1000 * d.score / d.threshold)))
        else:
            self._score = 0
        self._phase = "result"
        self._waiting_for = None

    def _refused(self) -> None:
        """A Trigger no part can be made for: answered at once, NOK with Error code 2."""
        self._counter = (self._counter + 1) & 0xFFFF
        self._status |= RESULT_VALID | NOK
        self._code, self._score, self._part, self._phase = 2, 0, 0, "result"

    def _fault_code(self) -> int:
        if self._recipe_error:
            return self._recipe_error
        if self.gate.output.problem:
            return 5
        if not self._line_ready():
            return 2
        return 0

    def _take_recipe(self, number: int) -> None:
        self._recipe_error = 0
        if number == 0 or number == self._recipe_number():
            return
        name = next((p for p, n in self._numbers.items() if n == number), None)
        if name is None:
            self._recipe_error = 3
            self._event(f"PLC asks for recipe {number}, which plc.products does not name")
            return
        try:
            self._switch(name, number)
        except Exception as exc:  # a refusal (StationError) or a fault: never the thread's end
            self._recipe_error = 4
            self._event(f"PLC's switch to recipe {number} ({name}) refused: {exc}")

    def _recipe_number(self) -> int:
        return self._numbers.get(self._product(), 0)

    # -- Modbus --------------------------------------------------------------------------------
    def _connect(self) -> None:
        try:
            ok = self._client.connect()
        except Exception as exc:  # pymodbus raises ConnectionException on some failures
            ok, why = False, str(exc)
        else:
            why = "no answer"
        if not ok:
            self._lost(f"cannot connect to the PLC at {self.cfg.host}:{self.cfg.port}: {why}")
            return
        self._connected = True
        self._written = None  # write everything again: the PLC may have restarted
        if self.problem:
            self.problem = ""
            self._event(f"PLC at {self.cfg.host}:{self.cfg.port} reachable again", alarm=False)

    def _lost(self, why: str) -> None:
        self._connected = False
        self._next_connect = time.monotonic() + RECONNECT_S
        self._client.close()
        if why != self.problem:
            self.problem = why
            self._event(f"PLC handshake: {why}")

    def _read(self) -> tuple[int, int]:
        from pymodbus.exceptions import ModbusException

        try:
            reply = self._client.read_holding_registers(
                self.cfg.inputs, count=PLC_INPUT_WORDS, device_id=self.cfg.unit
            )
        except ModbusException as exc:
            raise StationError(f"reading registers {self.cfg.inputs}..: {exc}") from None
        if reply.isError():
            raise StationError(f"the PLC refused reading registers {self.cfg.inputs}..: {reply}")
        control, recipe = reply.registers[:PLC_INPUT_WORDS]
        return int(control), int(recipe)

    def _publish_words(self) -> None:
        words = [
            self._status,
            self._recipe_number(),
            self._counter,
            self._shown_code,
            self._score,
            self._part,
        ]
        assert len(words) == PLC_OUTPUT_WORDS
        if words != self._written:
            self._write(words)

    def _write(self, words: list[int]) -> None:
        from pymodbus.exceptions import ModbusException

        try:
            reply = self._client.write_registers(self.cfg.outputs, words, device_id=self.cfg.unit)
        except ModbusException as exc:
            raise StationError(f"writing registers {self.cfg.outputs}..: {exc}") from None
        if reply.isError():
            raise StationError(f"the PLC refused writing registers {self.cfg.outputs}..: {reply}")
        self._written = words

    def _event(self, message: str, *, alarm: bool = True) -> None:
        log.warning("%s", message)
        if self._on_event is not None:
            self._on_event(StationEvent(kind="plc", message=message, data={"alarm": alarm}))

    def alarms(self) -> tuple[str, ...]:
        """What the operator must see about the PLC link."""
        out = []
        if self.problem:
            out.append(f"PLC: {self.problem}")
        if self.overruns:
            out.append(f"PLC: {self.overruns} results not taken in time (not reported)")
        if self._recipe_error:
            out.append(f"PLC: {ERROR_CODES[self._recipe_error]} ({self._recipe_seen})")
        if self.error is not None:
            out.append(f"{self.name} not alive: {self.error}")
        return tuple(out)
