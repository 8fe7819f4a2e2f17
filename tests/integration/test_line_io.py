"""Line integration against real servers on 127.0.0.1: the reject gate's outputs (a Modbus coil
and an OPC UA variable in the PLC's servers), the PLC handshake over Modbus, fail-safe rejects.

The PLC is a real pymodbus TCP server on a free port; its "program" runs in the server's request
hook, as a PLC's scan would: it sets Trigger when the station is Ready, acknowledges each
result, and logs every write with the time it arrived. The station is the real StationApp with
the replay camera on the demo product, the demo model and its SQLite records in tmp_path; what
the PLC saw is compared with the database's rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from station.app import StationApp
from station.config import (
    GenICamConfig,
    GenICamOutputConfig,
    GpiodConfig,
    ModbusCoilConfig,
    OpcUaOutputConfig,
    PlcConfig,
    RejectConfig,
    StationConfig,
)
from station.core.errors import StationError
from station.core.result import StationState, Verdict
from station.model.artifact import load_artifact, write_derived
from station.model.patchcore import PatchCore
from station.model.signing import Signer, Trust, trust_folder
from station.outputs.drivers import (
    GenICamLine,
    GpiodLine,
    ModbusCoil,
    NoOutput,
    OpcUaVariable,
    OutputError,
)
from station.outputs.handshake import ACK, BUSY, ERROR, NOK, OK, READY, RESULT_VALID, TRIGGER
from station.outputs.reject import RejectGate
from station.records import Database, db_path

DEADLINE_S = 0.5  # at 2 parts a second: a decision before the next part comes
POLL_S = 0.01


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class PlcSim:
    """The line's PLC: a pymodbus TCP server whose program runs at each request (see module)."""

    def __init__(self, *, inputs: int = 0, outputs: int = 10, period_s: float = 0.5) -> None:
        self.inputs, self.outputs, self.period_s = inputs, outputs, period_s
        self.port = free_port()
        self.coil_writes: list[tuple[float, int, bool]] = []
        self.status_writes: list[tuple[float, list[int]]] = []
        self.results: list[dict[str, Any]] = []  # one per Result valid the PLC saw
        self.triggers: list[float] = []
        self.max_triggers = 0  # the program triggers this many parts, one per period
        self.recipe = 0
        self.ignore_ready = False  # a PLC that triggers without waiting for Ready
        self.ack = True  # False: a PLC that does not take results (busy, its program stopped)
        self._held = False  # a Result valid seen while not acknowledging
        self._regs: list[int] | None = None
        self._phase = "wait_ready"
        self._next_trigger = 0.0
        self._loop = asyncio.new_event_loop()
        self._server: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    # -- the program, in the server's hook ---------------------------------------------------------
    async def _action(
        self, fc: int, start: int, address: int, count: int, regs: list[int], values: Any
    ) -> None:
        now = time.monotonic()
        if fc in (5, 15):
            if values is not None:
                self.coil_writes.append((now, address, bool(values[0])))
            return None
        self._regs = regs
        regs[self.inputs + 1] = self.recipe
        if fc == 16 and values is not None and address == self.outputs:
            self.status_writes.append((now, list(values)))
            self._on_status(now, list(values))
        elif fc == 3 and address == self.inputs:
            self._before_read(now, regs)
        return None

    def _before_read(self, now: float, regs: list[int]) -> None:
        status = regs[self.outputs]
        if self._held and self.ack:  # acknowledging again: take the result shown now
            self._held = False
            self._on_status(now, list(regs[self.outputs : self.outputs + 6]))
        if (
            self._phase == "wait_ready"
            and (status & READY or self.ignore_ready)
            and len(self.triggers) < self.max_triggers
            and now >= self._next_trigger
        ):
            regs[self.inputs] |= TRIGGER
            self.triggers.append(now)
            self._next_trigger = max(now, self._next_trigger) + self.period_s
            self._phase = "wait_result"

    def _on_status(self, now: float, words: list[int]) -> None:
        assert self._regs is not None
        status = words[0]
        if status & RESULT_VALID and not self._regs[self.inputs] & ACK:
            if not self.ack:
                self._held = True
                return
            self.results.append(
                {
                    "at": now,
                    "ok": bool(status & OK),
                    "nok": bool(status & NOK),
                    "error": bool(status & ERROR),
                    "counter": words[2],
                    "code": words[3],
                    "score": words[4],
                    "part": words[5],
                    "trigger_at": self.triggers[-1] if self.triggers else None,
                }
            )
            self._regs[self.inputs] |= ACK
        elif not status & RESULT_VALID and self._regs[self.inputs] & ACK:
            self._regs[self.inputs] &= ~(ACK | TRIGGER)
            self._phase = "wait_ready"

    # -- server ------------------------------------------------------------------------------
    def _run(self) -> None:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        device = SimDevice(
            id=1,
            simdata=(
                [SimData(0, count=64, values=False, datatype=DataType.BITS)],
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [SimData(0, count=64, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, count=16, values=0, datatype=DataType.REGISTERS)],
            ),
            action=self._action,
        )

        async def main() -> None:
            self._server = ModbusTcpServer(device, address=("127.0.0.1", self.port))
            await self._server.serve_forever()

        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(main())

    def start(self) -> PlcSim:
        self._thread.start()
        wait_until(self._listening, 10, "the PLC's Modbus server")
        return self

    def _listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(10)
        self._thread.join(10)

    def status(self) -> int:
        return self._regs[self.outputs] if self._regs is not None else 0

    def rising_edges(self, coil: int) -> list[float]:
        """When the coil went on (each a reject pulse)."""
        out, on = [], False
        for t, addr, value in self.coil_writes:
            if addr != coil:
                continue
            if value and not on:
                out.append(t)
            on = value
        return out


@pytest.fixture
def plc() -> Iterator[PlcSim]:
    sim = PlcSim().start()
    yield sim
    sim.stop()


def config(
    replay: Path, *, fps: float, reject: RejectConfig, plc: PlcConfig | None = None
) -> StationConfig:
    cfg = StationConfig()
    return dataclasses.replace(
        cfg,
        camera=dataclasses.replace(
            cfg.camera,
            replay=dataclasses.replace(
                cfg.camera.replay, path=str(replay), fps=fps, loop=True, shuffle=True
            ),
        ),
        reports=dataclasses.replace(cfg.reports, auto=False),
        reject=reject,
        plc=plc or PlcConfig(),
    )


def coil_reject(port: int, **kw: Any) -> RejectConfig:
    kw.setdefault("deadline_s", DEADLINE_S)
    kw.setdefault("pulse_s", 0.1)
    return RejectConfig(output="modbus", modbus=ModbusCoilConfig(host="127.0.0.1", port=port), **kw)


@pytest.fixture
def stations(tmp_path: Path) -> Iterator[Callable[..., StationApp]]:
    made: list[StationApp] = []

    def make(cfg: StationConfig, **kwargs: Any) -> StationApp:
        station = StationApp(cfg, tmp_path / "data", **kwargs)
        made.append(station)
        return station

    yield make
    for station in made:
        station.close()


def rows(data: Path) -> list[Any]:
    db = Database(db_path(data))
    try:
        return sorted(db.query_inspections(), key=lambda r: r.id)
    finally:
        db.close()


def rejected(verdict: Verdict) -> bool:
    return verdict in (Verdict.NOK, Verdict.CHECK)


# -- the handshake at line rate ---------------------------------------------------------------
def test_plc_handshake_two_parts_per_second_matches_the_records(
    demo_product: Path,
    demo_patchcore: PatchCore,
    plc: PlcSim,
    stations: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    """The PLC triggers 10 parts, one every 0.5 s; each answer comes within the deadline of the
    Trigger as the PLC measures it, with OK/NOK equal to the recorded verdict, and every NOK
    part drives the reject coil once."""
    n = 10
    cfg = config(
        demo_product,
        fps=0,  # one part per trigger: the replay reads the next file when asked
        reject=coil_reject(plc.port, pulse_s=0.1),
        plc=PlcConfig(host="127.0.0.1", port=plc.port, poll_s=POLL_S, trigger=True),
    )
    station = stations(cfg, model=demo_patchcore)
    station.start()
    wait_until(lambda: station.status().state == StationState.RUNNING, 60, "the line running")
    plc.max_triggers = n
    wait_until(lambda: len(plc.results) == n, 30, f"{n} results at the PLC")
    wait_until(lambda: plc.status() & READY, 5, "Ready after the last part")
    assert station.flush(10)
    gate = station.gate
    assert gate is not None
    counters = gate.counters()
    station.stop()

    recorded = rows(tmp_path / "data")
    assert len(recorded) == n
    latencies = [r["at"] - r["trigger_at"] for r in plc.results]
    print(
        f"PLC-side Trigger -> Result valid: median {sorted(latencies)[n // 2] * 1e3:.0f} ms, "
        f"max {max(latencies) * 1e3:.0f} ms"
    )
    for r, row in zip(plc.results, recorded, strict=True):
        assert not r["error"] and r["code"] == 0, f"fail-safe at 2 parts/s: {r}"
        assert r["nok"] == rejected(row.verdict) and r["ok"] != r["nok"]
        assert r["score"] == min(65535, round(1000 * row.score / row.threshold))
        # Read at most one poll after it was set, answered within the deadline.
        assert r["at"] - r["trigger_at"] <= DEADLINE_S + 2 * POLL_S
    assert [r["counter"] for r in plc.results] == list(range(1, n + 1))
    # Busy while a part is being judged, never Ready then.
    busy = [w[0] for _, w in plc.status_writes if w[0] & BUSY]
    assert busy and not any(s & READY for s in busy)
    # The coil: one pulse per rejected part, none for the good ones.
    edges = plc.rising_edges(0)
    assert len(edges) == sum(rejected(r.verdict) for r in recorded) > 0
    assert counters.failsafe == 0 and counters.parts == n
    assert counters.rejected == len(edges) and counters.ok == n - len(edges)
    # Stopped: Ready off, and the coil off.
    assert not plc.status() & READY
    assert plc.coil_writes[-1][2] is False


def test_a_trigger_while_the_line_is_paused_is_answered_nok_with_error(
    demo_product: Path,
    demo_patchcore: PatchCore,
    plc: PlcSim,
    stations: Callable[..., StationApp],
) -> None:
    """Ready is off while paused (Error, code 2); a PLC that triggers anyway gets, at the
    deadline, NOK with Error code 1: the part is rejected, never left without an answer."""
    cfg = config(
        demo_product,
        fps=0,
        reject=coil_reject(plc.port),
        plc=PlcConfig(host="127.0.0.1", port=plc.port, poll_s=POLL_S, trigger=True),
    )
    station = stations(cfg, model=demo_patchcore)
    station.start()
    wait_until(lambda: plc.status() & READY, 60, "Ready")
    station.pause(station.default_session())
    wait_until(lambda: plc.status() & ERROR and not plc.status() & READY, 5, "not Ready")
    assert plc.status_writes[-1][1][3] == 2
    plc.ignore_ready, plc.max_triggers = True, 1
    wait_until(lambda: len(plc.results) == 1, 5, "the answer")
    r = plc.results[0]
    assert r["nok"] and r["error"] and not r["ok"] and r["code"] == 1, plc.status_writes[-6:]
    assert DEADLINE_S <= r["at"] - r["trigger_at"] <= DEADLINE_S + 0.1
    wait_until(lambda: len(plc.rising_edges(0)) == 1, 2, "the reject pulse")


def test_plc_switches_the_product_as_its_own_audited_session(
    demo_product: Path,
    demo_model: Path,
    plant_key: Signer,
    trust_plant_key: Callable[[Path], Path],
    plc: PlcSim,
    stations: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    """The recipe number the PLC writes switches the product, through the app's role-checked,
    audited switch, as the session 'plc@host:port' (technician); an unknown number is an Error
    with code 3 and switches nothing."""
    data = trust_plant_key(tmp_path / "data")
    shutil.copytree(demo_model, data / "models" / "demo" / "v0001")
    # "other" gets a model sealed for it: the line refuses a model copied in from another
    # product's folder (and would then never deliver a part of "other").
    base = load_artifact(demo_model, Trust.load(trust_folder(data)))
    manifest = dataclasses.replace(base.manifest, product="other")
    write_derived(data / "models" / "other" / "v0001", manifest, base, plant_key)
    cfg = config(
        demo_product,
        fps=4,
        reject=RejectConfig(deadline_s=2.0),
        plc=PlcConfig(
            host="127.0.0.1", port=plc.port, poll_s=POLL_S, products={"1": "demo", "2": "other"}
        ),
    )
    station = stations(cfg)
    station.start()
    wait_until(lambda: station.status().state == StationState.RUNNING, 60, "the line running")
    wait_until(lambda: plc.status_writes and plc.status_writes[-1][1][1] == 1, 5, "recipe 1")

    plc.recipe = 2
    wait_until(lambda: station.product == "other", 10, "the switch to recipe 2")
    wait_until(lambda: plc.status_writes[-1][1][1] == 2, 5, "recipe 2 reported")
    audit = [a for a in station.audit_rows(station.shell_session()) if a.action == "product_switch"]
    assert audit[-1].user == f"plc@127.0.0.1:{plc.port}"
    assert audit[-1].role == "technician" and audit[-1].via == "plc"
    assert audit[-1].object == "other" and "recipe 2" in audit[-1].reason

    plc.recipe = 9
    wait_until(lambda: plc.status_writes[-1][1][3] == 3, 5, "error code 3")
    assert plc.status_writes[-1][1][0] & ERROR
    assert station.product == "other"
    assert any("recipe" in a for a in station.status().alarms)
    # Without a Trigger (plc.trigger = false), each part the camera delivers is reported too,
    # by the other product's model. The camera waits while that model loads (seconds on a
    # loaded CI machine): the time allowed is the first start's.
    seen = len(plc.results)
    wait_until(lambda: len(plc.results) >= seen + 3, 60, "results of free-running parts")
    assert station.status().model_version == "other/v0001"


# -- fail-safe ---------------------------------------------------------------------------------
class StallingModel:
    """The demo model, whose predict() hangs from the (after+1)-th part until released.

    A fake for a fault that cannot be caused otherwise: a hung inference (a wedged GPU driver,
    a runaway kernel). It counts as a real stall because the inspector thread really blocks
    inside the model call and nothing tells the line or the gate: the real acquisition keeps
    delivering, the real queue drops the oldest frames, and only the gate's own clock can
    reject the parts.
    """

    def __init__(self, model: PatchCore, after: int) -> None:
        self._model, self.after, self.calls = model, after, 0
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def predict(self, image: Any) -> Any:
        self.calls += 1
        if self.calls > self.after:
            self.release.wait(30)
        return self._model.predict(image)


def test_stalled_inspection_parts_are_rejected_fail_safe(
    demo_product: Path,
    demo_patchcore: PatchCore,
    plc: PlcSim,
    stations: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    """Parts whose inspection hangs are rejected at their deadline, each pulsed on the coil and
    counted; the app's status shows the count and an alarm; the late result changes nothing."""
    stall = StallingModel(demo_patchcore, after=3)
    station = stations(
        config(demo_product, fps=2, reject=coil_reject(plc.port)),
        model=stall,  # type: ignore[arg-type]
    )
    decisions: list[Any] = []
    assert station.gate is not None
    station.gate.add_listener(decisions.append)
    station.start()
    wait_until(lambda: sum(bool(d.failsafe) for d in decisions) >= 4, 30, "4 fail-safe rejects")
    judged = [d for d in decisions if not d.failsafe]
    failed = [d for d in decisions if d.failsafe]
    assert len(judged) == 3 and all(d.latency_s <= DEADLINE_S for d in judged)
    for d in failed:
        assert d.reject and d.verdict is None and "no result within 0.5 s" in d.failsafe
        assert DEADLINE_S <= d.latency_s <= DEADLINE_S + 0.1  # at the deadline, not later
    wait_until(
        lambda: len(plc.rising_edges(0)) >= sum(d.reject for d in decisions), 5, "the pulses"
    )
    st = station.status()
    assert st.counters.failsafe_rejects >= 4
    assert any("rejected fail-safe" in a for a in st.alarms)

    stall.release.set()  # the hung part's result comes, long after its deadline
    wait_until(lambda: station.gate is not None and station.gate.counters().late >= 1, 10, "late")
    assert station.status().counters.late_results >= 1  # what /metrics and /health report
    station.stop()
    counters = station.gate.counters()
    assert sum(d.reject for d in decisions) == counters.rejected + counters.failsafe
    # Every rejected decision was driven and the late result added none: one pulse for each run
    # of overlapping reject windows (two fail-safe deadlines a moment apart, at the stop for
    # example, hold the output on once, by design).
    delay, width = station.gate.cfg.delay_s, station.gate.cfg.pulse_s
    starts = sorted(max(d.decided_at, d.trigger_at + delay) for d in decisions if d.reject)
    runs = [s for i, s in enumerate(starts) if i == 0 or s > starts[i - 1] + width]
    assert len(plc.rising_edges(0)) == counters.pulses == len(runs)
    assert counters.missed == 0
    db = Database(db_path(tmp_path / "data"))
    try:
        events = db.query_events(kind="reject")
        assert sum("rejected fail-safe" in e.message for e in events) == counters.failsafe
        assert any("after the deadline" in e.message for e in events)
        # The late part is still recorded (the recorder never loses a result).
        assert len(db.query_inspections()) == stall.calls
    finally:
        db.close()


def test_outputs_down_the_line_keeps_inspecting(
    demo_product: Path, demo_patchcore: PatchCore, stations: Callable[..., StationApp], tmp_path
) -> None:
    """No coil server and no PLC: each is an alarm and an event naming the address, recorded
    and handed to the plant interfaces (MQTT; here a collecting sink in their place); the line
    inspects and records all the same."""
    dead = free_port()
    cfg = config(
        demo_product,
        fps=10,
        reject=coil_reject(dead),
        plc=PlcConfig(host="127.0.0.1", port=dead, timeout_s=0.2),
    )
    station = stations(cfg, model=demo_patchcore, max_frames=6)
    plant_events = EventSink()
    station.plant.sinks.append(plant_events)
    station.start()
    assert station.wait(60)
    alarms = " | ".join(station.status().alarms)
    assert f"127.0.0.1:{dead}" in alarms and "reject output" in alarms and "PLC" in alarms
    db = Database(db_path(tmp_path / "data"))
    try:
        assert len(db.query_inspections()) == 6
        messages = [e.message for e in db.query_events()]
        assert any("reject output" in m and "cannot connect" in m for m in messages)
        assert any(m.startswith("PLC handshake: cannot connect") for m in messages)
    finally:
        db.close()
    kinds = {e.kind for e in plant_events.events}
    assert {"reject", "plc"} <= kinds, kinds


class EventSink:
    """Collects the events handed to the plant interfaces (in MQTT's place)."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def submit(self, result: Any) -> bool:
        return True

    def submit_event(self, event: Any) -> bool:
        self.events.append(event)
        return True

    def count_dropped(self, n: int = 1, when: float | None = None) -> None:
        pass


# -- OPC UA variable in the PLC's server ---------------------------------------------------------
@pytest.fixture
def opcua_plc() -> Iterator[tuple[str, str, list[tuple[float, bool]]]]:
    """An asyncua server with a writable Boolean 'Reject'; yields url, node id and its writes."""
    from asyncua import ua
    from asyncua.common.callback import CallbackType
    from asyncua.sync import Server

    url = f"opc.tcp://127.0.0.1:{free_port()}/plc/"
    server = Server()
    server.set_endpoint(url)
    idx = server.register_namespace("urn:test-plc")
    var = server.nodes.objects.add_variable(ua.NodeId("Reject", idx), "Reject", False)
    var.set_writable()
    writes: list[tuple[float, bool]] = []

    def post_write(event: Any, dispatcher: Any) -> None:
        # Every write, the server's own too (its status and clock each second): only Reject's.
        for wv in event.request_params.NodesToWrite:
            if wv.NodeId == var.nodeid:
                writes.append((time.monotonic(), bool(wv.Value.Value.Value)))

    server.start()
    server.aio_obj.iserver.subscribe_server_callback(CallbackType.PostWrite, post_write)
    yield url, var.nodeid.to_string(), writes
    server.stop()


def test_opcua_variable_pulses_equal_the_records(
    demo_product: Path,
    demo_patchcore: PatchCore,
    opcua_plc: tuple[str, str, list[tuple[float, bool]]],
    stations: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    url, node, writes = opcua_plc
    reject = RejectConfig(
        output="opcua", deadline_s=DEADLINE_S, pulse_s=0.15, opcua=OpcUaOutputConfig(url, node)
    )
    station = stations(config(demo_product, fps=2, reject=reject), model=demo_patchcore)
    station.start()
    gate = station.gate
    assert gate is not None
    wait_until(lambda: gate.counters().parts >= 8, 30, "8 parts")
    station.stop()
    counters = gate.counters()
    recorded = rows(tmp_path / "data")
    edges = sum(1 for (_, a), (_, b) in itertools.pairwise(writes) if b and not a)
    assert counters.failsafe == 0
    # On a loaded machine the OPC UA client may still be connecting when the first part is
    # judged: that pulse is missed and counted as missed (the gate alarms it), never lost
    # unseen. Every other reject is one rising edge at the server.
    assert edges + counters.missed == sum(rejected(r.verdict) for r in recorded)
    assert sum(rejected(r.verdict) for r in recorded) == counters.rejected > counters.missed
    assert writes[-1][1] is False, writes[-4:]  # off at stop
    with pytest.raises(OutputError, match=r"ns=2;s=Nope cannot be read"):
        OpcUaVariable(OpcUaOutputConfig(url, "ns=2;s=Nope")).start()


# -- GenICam output and trigger, gpiod -----------------------------------------------------------
def _output_node_map() -> Any:
    """The simulator's node map with the SFNC digital-I/O features it lacks: Line0 an input,
    Line1 an output that UserOutput1 drives."""
    from test_genicam import _triggerable

    nm = _triggerable()
    nm.add("LineSelector", "enumeration", "Line0", choices=("Line0", "Line1"))
    nm.add("LineMode", "enumeration", "Input", choices=("Input", "Output"))
    nm.add("LineSource", "enumeration", "Off", choices=("Off", "UserOutput1"))
    nm.add(
        "UserOutputSelector", "enumeration", "UserOutput0", choices=("UserOutput0", "UserOutput1")
    )
    nm.add("UserOutputValue", "boolean", False)
    return nm


def test_genicam_output_names_the_nodes_the_simulator_lacks() -> None:
    """viky.cti (the genicam wheel's simulated camera) has no digital I/O nodes (checked: none
    of LineSelector, LineMode, LineSource, UserOutputSelector, UserOutputValue, TriggerMode):
    the output driver and a hardware trigger say so, naming the nodes."""
    from station.camera.genicam import GenICamCamera, simulator_producer
    from station.core.errors import CameraError

    viky = simulator_producer()
    if viky is None:
        pytest.skip("the genicam wheel's simulated GenTL producer (viky.cti) is not installed")
    cam = GenICamCamera(GenICamConfig(cti=[str(viky)], device="1"))
    cam.open()
    try:
        driver = GenICamLine(GenICamOutputConfig(), lambda: cam.node_map)
        with pytest.raises(OutputError) as err:
            driver.start()
        for node in ("LineSelector", "LineMode", "LineSource", "UserOutputValue"):
            assert node in str(err.value)
    finally:
        cam.close()
    triggered = GenICamCamera(GenICamConfig(cti=[str(viky)], device="1", trigger="hardware"))
    with pytest.raises(CameraError, match=r"trigger = 'hardware'.*no TriggerMode feature"):
        triggered.open()
    triggered.close()


def test_gpiod_names_the_missing_chip_and_line(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"GPIO chip /dev/gpiochip9 does not exist"):
        GpiodLine(GpiodConfig(chip="gpiochip9", line="17")).start()
    pytest.importorskip("gpiod", reason="the optional 'gpio' extra is not installed")
    not_a_chip = tmp_path / "gpiochip0"
    not_a_chip.write_text("")
    with pytest.raises(OutputError, match=rf"{not_a_chip} is not a GPIO chip"):
        GpiodLine(GpiodConfig(chip=str(not_a_chip), line="17")).start()


GPIO_SIM = Path("/sys/kernel/config/gpio-sim")


@pytest.mark.skipif(
    not GPIO_SIM.is_dir(),
    reason="no gpio-sim: this kernel has no /sys/kernel/config/gpio-sim (configfs not mounted or "
    "the gpio-sim module not loaded; a container cannot load it)",
)
def test_gpiod_line_on_a_simulated_chip(tmp_path: Path) -> None:
    """A gpio-sim chip with 8 lines: the driver drives line 3, the simulator's pull value of
    that line follows; an offset past the end and an unknown name are named."""
    bank = GPIO_SIM / f"station-{time.monotonic_ns()}"
    (bank / "bank0").mkdir(parents=True)
    (bank / "bank0" / "num_lines").write_text("8")
    (bank / "live").write_text("1")
    try:
        chip = (bank / "bank0" / "chip_name").read_text().strip()
        line = GpiodLine(GpiodConfig(chip=chip, line="3"))
        line.start()
        sysfs = next(Path("/sys/devices/platform").glob(f"gpio-sim.*/{chip}/sim_gpio3/value"))
        line.set(True)
        assert sysfs.read_text().strip() == "1"
        line.set(False)
        assert sysfs.read_text().strip() == "0"
        line.close()
        with pytest.raises(OutputError, match=r"has lines 0 to 7, not 8"):
            GpiodLine(GpiodConfig(chip=chip, line="8")).start()
        with pytest.raises(OutputError, match=r"has no line named 'PQ.05'"):
            GpiodLine(GpiodConfig(chip=chip, line="PQ.05")).start()
    finally:
        (bank / "live").write_text("0")
        (bank / "bank0").rmdir()
        bank.rmdir()


def test_modbus_coil_names_the_server_it_cannot_reach() -> None:
    port = free_port()
    coil = ModbusCoil(ModbusCoilConfig(host="127.0.0.1", port=port, coil=4, timeout_s=0.2))
    with pytest.raises(OutputError, match=rf"Modbus coil 4 \(unit 1\) on 127.0.0.1:{port}"):
        coil.start()


def test_genicam_output_and_hardware_trigger_on_a_stand_in_node_map() -> None:
    """What viky.cti lacks, on the stand-in node map of test_genicam (a fake, for nodes the
    simulator does not have): the output selects its line as an output driven by the user
    output and writes UserOutputValue; a hardware trigger waits on the configured line."""
    from station.camera.genicam import apply_features

    nm = _output_node_map()
    line = GenICamLine(GenICamOutputConfig(line="Line1", source="UserOutput1"), lambda: nm)
    line.start()
    line.set(True)
    line.close()
    writes = [w for w in nm.log if w[0] != "UserOutputSelector"]
    assert writes == [
        ("LineSelector", "Line1"),
        ("LineMode", "Output"),
        ("LineSource", "UserOutput1"),
        ("UserOutputValue", False),
        ("UserOutputValue", True),
        ("UserOutputValue", False),
    ]
    assert nm.UserOutputSelector.value == "UserOutput1"
    nm.log.clear()
    apply_features(nm, {}, trigger="hardware", device="cam", trigger_source="Line1")
    assert nm.log == [
        ("TriggerSelector", "FrameStart"),
        ("TriggerMode", "On"),
        ("TriggerSource", "Line1"),
    ]


# -- stops, outages, backlogs ------------------------------------------------------------------
def test_a_stop_rejects_the_part_in_flight_and_reports_it_to_the_plc(
    demo_product: Path,
    demo_patchcore: PatchCore,
    plc: PlcSim,
    stations: Callable[..., StationApp],
) -> None:
    """A part triggered but not yet judged when the station stops (here: triggered while
    paused, deadline 5 s) is rejected at the stop ("station stopped"): its pulse is still
    driven at trigger + delay_s, after the stop, and the PLC gets one last Result valid with
    NOK, Error and code 1 instead of a Busy that never ends."""
    cfg = config(
        demo_product,
        fps=0,
        reject=coil_reject(plc.port, deadline_s=5.0, delay_s=5.0, pulse_s=0.1),
        plc=PlcConfig(host="127.0.0.1", port=plc.port, poll_s=POLL_S, trigger=True),
    )
    station = stations(cfg, model=demo_patchcore)
    decisions: list[Any] = []
    assert station.gate is not None
    station.gate.add_listener(decisions.append)
    station.start()
    wait_until(lambda: plc.status() & READY, 60, "Ready")
    station.pause(station.default_session())
    plc.ignore_ready, plc.max_triggers = True, 1
    wait_until(lambda: plc.status() & BUSY, 5, "Busy")
    stopped_at = time.monotonic()
    assert station.stop(10)
    assert [d.failsafe for d in decisions] == ["station stopped"] and decisions[0].reject
    assert decisions[0].decided_at - stopped_at < 1.0  # at the stop, not at the 5 s deadline
    assert len(plc.results) == 1, plc.status_writes[-4:]
    r = plc.results[0]
    assert r["at"] - stopped_at < 1.0
    assert r["nok"] and r["error"] and not r["ok"] and r["code"] == 1
    edges = plc.rising_edges(0)
    assert len(edges) == 1 and edges[0] >= plc.triggers[0] + 5.0 - 0.1
    assert plc.coil_writes[-1][2] is False
    counters = station.gate.counters()
    assert counters.failsafe == 1 and counters.missed == 0 and counters.pulses == 1


def test_reject_pulses_while_the_output_is_down_are_counted_as_missed(
    demo_product: Path,
    demo_patchcore: PatchCore,
    stations: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    """The coil's server goes away between pulses: each reject that falls due meanwhile is a
    missed reject, counted, an event naming its part, and an alarm (every part here is a
    fail-safe reject: the model stalls from the first part)."""
    sim = PlcSim().start()
    stall = StallingModel(demo_patchcore, after=0)
    station = stations(
        config(demo_product, fps=4, reject=coil_reject(sim.port)),
        model=stall,  # type: ignore[arg-type]
    )
    gate = station.gate
    assert gate is not None
    try:
        station.start()
        wait_until(lambda: len(sim.rising_edges(0)) >= 1, 30, "a reject pulse")
    finally:
        sim.stop()
    wait_until(lambda: gate.counters().missed >= 2, 10, "missed rejects")
    stall.release.set()
    assert any("reject pulses missed" in a for a in station.status().alarms)
    station.stop()
    c = gate.counters()
    assert c.pulses + c.missed == c.rejected + c.failsafe  # every reject either driven or counted
    db = Database(db_path(tmp_path / "data"))
    try:
        missed = [e for e in db.query_events(kind="reject") if "not rejected" in e.message]
    finally:
        db.close()
    assert len(missed) == c.missed
    assert all(e.message.startswith(f"part {e.data['part']} not rejected") for e in missed)


def test_the_gate_starts_with_its_output_connected() -> None:
    """start() returns once the output's first connection attempt is over, so the line's first
    part cannot fall due while the driver is still connecting: against a real Modbus server the
    output is up when start() returns and a reject at once is driven, not missed."""
    sim = PlcSim().start()
    try:
        cfg = coil_reject(sim.port, deadline_s=0.05, pulse_s=0.05)
        gate = RejectGate(cfg, ModbusCoil(cfg.modbus), paced=True)
        gate.start()
        try:
            assert gate.output.up and not gate.output.problem
            gate.trigger()  # no camera: rejected fail-safe at the deadline, its pulse driven
            wait_until(lambda: len(sim.rising_edges(0)) == 1, 5, "the reject pulse")
            wait_until(lambda: gate.counters().pulses == 1, 5, "the pulse counted")
            assert gate.counters().missed == 0
        finally:
            gate.stop()
            assert gate.join(5)
    finally:
        sim.stop()


def test_the_gate_waits_for_its_output_no_longer_than_the_bound() -> None:
    """A device that takes the connection and never answers (a listening socket on 127.0.0.1
    that reads nothing) does not hold the station's start: start() returns after its bound with
    the output still trying; the first try then fails at the driver's own timeout, naming it."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        coil = ModbusCoilConfig(host="127.0.0.1", port=port, timeout_s=2.0)
        cfg = RejectConfig(output="modbus", deadline_s=0.05, pulse_s=0.05, modbus=coil)
        gate = RejectGate(cfg, ModbusCoil(coil), paced=True)
        gate.start(wait_s=0.2)
        try:
            assert not gate.output.tried.is_set() and not gate.output.up
            assert gate.output.tried.wait(10)
            assert not gate.output.up and f"127.0.0.1:{port}" in gate.output.problem
        finally:
            gate.stop()
            assert gate.join(5)


class BrokenDriver:
    """An output whose write raises something other than OutputError (a driver bug, a library
    raising its own error): a fake, because a real driver wraps the faults it knows."""

    name = "broken output"

    def __init__(self) -> None:
        self.started = 0

    def start(self) -> None:
        self.started += 1

    def set(self, on: bool) -> None:
        raise RuntimeError("driver bug")

    def close(self) -> None:
        pass


def test_a_driver_fault_is_an_output_error_not_a_dead_thread() -> None:
    """Any exception from a write is counted and retried like an OutputError; the output's
    thread stays alive and the pulse that could not be driven is a missed reject."""
    driver = BrokenDriver()
    failed: list[Any] = []
    gate = RejectGate(
        RejectConfig(deadline_s=0.05, pulse_s=0.05), driver, paced=True,
        on_failure=lambda w, e: failed.append(w),
    )  # fmt: skip
    gate.start()
    try:
        gate.trigger()  # no camera: rejected fail-safe at the deadline
        wait_until(lambda: gate.counters().missed == 1, 5, "the missed pulse")
        c = gate.counters()
        assert gate.output.alive and c.output_errors >= 1 and driver.started >= 1
        assert "1 reject pulse missed" in gate.alarms()
    finally:
        gate.stop()
        assert gate.join(5)
    assert failed == []


def test_a_dead_gate_thread_is_reported() -> None:
    """The gate's thread dies (here its event callback raises, a fake fault): on_failure is
    called with the gate (the app fails the line then) and alarms() says it is not alive."""
    failed: list[Any] = []

    def on_event(event: Any) -> None:
        raise RuntimeError("event sink gone")

    gate = RejectGate(
        RejectConfig(deadline_s=0.05), NoOutput(), paced=True, on_event=on_event,
        on_failure=lambda w, e: failed.append(w),
    )  # fmt: skip
    gate.start()
    gate.trigger()
    wait_until(lambda: bool(failed), 5, "the failure")
    assert failed == [gate] and gate.join(5)
    assert any("reject-gate not alive: event sink gone" in a for a in gate.alarms())
    gate.stop()
    gate.join(5)


def test_triggers_are_refused_unless_the_gate_and_line_run(
    demo_product: Path, stations: Callable[..., StationApp]
) -> None:
    """A trigger no deadline would be kept for (the gate stopped or never started, the line not
    running) is a StationError, not a part number (the OPC UA Trigger would say ok)."""
    gate = RejectGate(RejectConfig(), NoOutput(), paced=True)
    with pytest.raises(StationError, match="reject gate is not running"):
        gate.trigger()
    gate.start()
    assert gate.trigger() == 1
    gate.stop()
    with pytest.raises(StationError, match="reject gate is stopped"):
        gate.trigger()
    assert gate.join(5)
    cfg = config(
        demo_product,
        fps=0,
        reject=RejectConfig(),
        plc=PlcConfig(host="127.0.0.1", port=free_port(), trigger=True),
    )
    station = stations(cfg)  # not started
    with pytest.raises(StationError, match=r"trigger refused: the line is .* not running"):
        station.trigger()


def test_a_plc_that_does_not_take_results_gets_only_fresh_ones(
    demo_product: Path,
    demo_patchcore: PatchCore,
    plc: PlcSim,
    stations: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    """Without plc.trigger every part's result is reported in order; a PLC that stops
    acknowledging for 2 s does not get a backlog of old results afterwards: decisions older
    than the deadline are dropped, counted and an event; each Result valid names its part,
    and its OK/NOK equals that part's recorded verdict."""
    cfg = config(
        demo_product,
        fps=4,
        reject=RejectConfig(deadline_s=DEADLINE_S),
        plc=PlcConfig(host="127.0.0.1", port=plc.port, poll_s=POLL_S),
    )
    station = stations(cfg, model=demo_patchcore)
    assert station.plc is not None
    station.start()
    wait_until(lambda: len(plc.results) >= 3, 60, "results of free-running parts")
    plc.ack = False
    time.sleep(2.0)
    held = len(plc.results)
    plc.ack = True
    wait_until(lambda: len(plc.results) >= held + 3, 10, "results after the pause")
    station.stop()
    assert station.plc.overruns >= 3  # about 8 parts came while the PLC was not taking them
    recorded = rows(tmp_path / "data")
    parts = [r["part"] for r in plc.results]
    assert parts == sorted(parts) and len(set(parts)) == len(parts)
    # The result shown when the PLC stopped is taken when it acknowledges again; the next is
    # a fresh part's, not one of those that waited meanwhile.
    assert parts[held + 1] - parts[held] > 3
    for r in plc.results:
        row = recorded[r["part"] - 1]  # the gate numbers the parts in frame order, as the rows
        assert r["nok"] == rejected(row.verdict) and r["ok"] != r["nok"]
    assert [r["counter"] for r in plc.results] == list(range(1, len(plc.results) + 1))
    db = Database(db_path(tmp_path / "data"))
    try:
        assert any("not reported, not taken within 0.5 s" in e.message for e in db.query_events())
    finally:
        db.close()


class ClosingCamera:
    """A stand-in for the line's GenICam camera around the stand-in node map (a fake: the
    simulator has no output nodes): its node map is there only while it is open."""

    def __init__(self, nm: Any) -> None:
        self.nm, self.is_open = nm, True

    def node_map(self) -> Any:
        if not self.is_open:
            raise StationError("the camera is closed")
        return self.nm

    def open(self) -> None:
        self.is_open = True

    def close(self) -> None:
        self.nm.log.append(("camera", "closed"))
        self.is_open = False

    def info(self) -> Any:
        return None

    def frames(self) -> Iterator[Any]:
        return iter(())


def test_a_genicam_output_is_switched_off_before_its_camera_closes() -> None:
    """The gate's output on the camera's own line is switched off by PartCamera.close(),
    before the camera closes (afterwards its node map is gone and nothing could switch it off);
    the output's thread starts it again when the camera is back."""
    from station.outputs.reject import PartCamera

    nm = _output_node_map()
    cam = ClosingCamera(nm)
    out_cfg = GenICamOutputConfig(line="Line1", source="UserOutput1")
    gate = RejectGate(
        RejectConfig(output="genicam", genicam=out_cfg), GenICamLine(out_cfg, cam.node_map)
    )
    part_camera = PartCamera(cam, gate)  # type: ignore[arg-type]
    gate.start()
    try:
        now = time.monotonic()
        gate.output.pulse(now, now + 30.0, 1)  # on, and still on when the camera closes
        wait_until(lambda: nm.UserOutputValue.value is True, 5, "the output on")
        part_camera.close()
        assert nm.UserOutputValue.value is False
        writes = [w for w in nm.log if w[0] in ("UserOutputValue", "camera")]
        assert writes[-2:] == [("UserOutputValue", False), ("camera", "closed")]
        nm.log.clear()
        cam.open()
        wait_until(lambda: ("LineMode", "Output") in nm.log, 5, "the output started again")
    finally:
        gate.stop()
        gate.join(5)


def test_software_triggers_without_a_modbus_plc(
    demo_product: Path,
    demo_patchcore: PatchCore,
    stations: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    """reject.trigger = "software": StationApp.trigger() (the OPC UA Trigger method's hook)
    makes one part per call with no PLC configured; each gets one frame and its verdict in
    time, and the records hold exactly those parts."""
    cfg = config(demo_product, fps=0, reject=RejectConfig(trigger="software", deadline_s=2.0))
    station = stations(cfg, model=demo_patchcore)
    assert station.plc is None and station.plant.control.trigger_hook is not None
    decisions: list[Any] = []
    assert station.gate is not None
    station.gate.add_listener(decisions.append)
    station.start()
    wait_until(lambda: station.status().state == StationState.RUNNING, 60, "the line running")
    for n in range(1, 4):
        assert station.trigger() == n
        wait_until(lambda n=n: len(decisions) == n, 5, f"decision {n}")
    assert station.flush(10)
    station.stop()
    assert all(d.triggered and not d.failsafe for d in decisions)
    recorded = rows(tmp_path / "data")
    assert [r.frame_id for r in recorded] == [d.frame_id for d in decisions]
