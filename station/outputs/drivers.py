"""The reject gate's digital outputs: a GenICam camera's output line, a Linux GPIO line, a Modbus
TCP coil, an OPC UA variable in the PLC's server. Each is one on/off signal; the gate times the
pulses (station.outputs.reject).

`start()` connects and checks everything the output needs, and raises OutputError naming what is
missing (the node, the chip, the line, the server); `set()` raises OutputError when a write
fails, and the gate counts it and tries again at the next pulse (the line keeps inspecting).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from station.config import (
    REJECT_OUTPUTS,
    GenICamOutputConfig,
    GpiodConfig,
    ModbusCoilConfig,
    OpcUaOutputConfig,
    RejectConfig,
)
from station.core.errors import StationError

__all__ = [
    "GENICAM_OUTPUT_NODES",
    "GenICamLine",
    "GpiodLine",
    "ModbusCoil",
    "NoOutput",
    "OpcUaVariable",
    "OutputDriver",
    "OutputError",
    "build_driver",
]

log = logging.getLogger(__name__)

# What a GenICam digital output needs (SFNC Digital IO Control): which line, that it drives
# out, from which source, and the user output's value.
GENICAM_OUTPUT_NODES = ("LineSelector", "LineMode", "LineSource", "UserOutputSelector")
GENICAM_VALUE_NODE = "UserOutputValue"


class OutputError(StationError):
    """A reject output cannot be reached, set up or written; the message names what is wrong."""


class OutputDriver(Protocol):
    """One digital output: on (reject) or off."""

    name: str  # e.g. "modbus coil 3 on 10.0.0.5:502", for messages

    def start(self) -> None:
        """Connect and check the output (OutputError naming what is missing); output off."""
        ...

    def set(self, on: bool) -> None:
        """Drive the output (OutputError when the write fails)."""
        ...

    def close(self) -> None:
        """Output off (best effort) and disconnect; safe twice."""
        ...


def switch_off(driver: OutputDriver) -> None:
    """Best effort before a driver lets go: an output left on would reject every part after."""
    try:
        driver.set(False)
    except OutputError as exc:
        log.warning("%s", exc)


class NoOutput:
    """`reject.output = "none"`: decisions are timed and counted, nothing is driven (the PLC
    handshake may be the only consumer)."""

    name = "no output"

    def start(self) -> None:
        """Nothing to connect."""

    def set(self, on: bool) -> None:
        """Nothing to drive."""

    def close(self) -> None:
        """Nothing to release."""


class ModbusCoil:
    """A coil in the PLC's Modbus TCP server (the station is the client)."""

    def __init__(self, cfg: ModbusCoilConfig) -> None:
        self.cfg = cfg
        self.name = f"Modbus coil {cfg.coil} (unit {cfg.unit}) on {cfg.host}:{cfg.port}"
        self._client: Any = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Connect, and write the coil off (which also proves the address is writable)."""
        from pymodbus.client import ModbusTcpClient

        if not self.cfg.host:
            raise OutputError("reject.modbus.host is empty: name the PLC's address")
        self._client = ModbusTcpClient(
            self.cfg.host, port=self.cfg.port, timeout=self.cfg.timeout_s, retries=0
        )
        self.set(False)

    def set(self, on: bool) -> None:
        """Write the coil."""
        from pymodbus.exceptions import ModbusException

        with self._lock:
            client = self._client
            if client is None:
                raise OutputError(f"{self.name}: not started")
            try:
                if not client.connected and not client.connect():
                    raise OutputError(f"{self.name}: cannot connect (is the PLC's server up?)")
                reply = client.write_coil(self.cfg.coil, on, device_id=self.cfg.unit)
            except ModbusException as exc:
                client.close()  # the next write connects again
                raise OutputError(f"{self.name}: write failed: {exc}") from None
            if reply.isError():
                raise OutputError(f"{self.name}: the PLC refused the write: {reply}")

    def close(self) -> None:
        """Coil off if still reachable, then disconnect."""
        if self._client is None:
            return
        switch_off(self)
        self._client.close()
        self._client = None


class GpiodLine:
    """A Linux GPIO line through libgpiod 2 (`gpiod`): a Raspberry Pi, a Jetson header pin."""

    def __init__(self, cfg: GpiodConfig) -> None:
        self.cfg = cfg
        self.name = f"GPIO line {cfg.line or '?'} of {cfg.chip}"
        self._request: Any = None
        self._offset: int | None = None

    def start(self) -> None:
        """Find the chip and the line (by offset or name) and request it as an output, off."""
        chip_path = self.cfg.chip if "/" in self.cfg.chip else f"/dev/{self.cfg.chip}"
        if not Path(chip_path).exists():
            raise OutputError(
                f"reject.gpiod.chip: GPIO chip {chip_path} does not exist on this computer "
                "(`gpiodetect` lists the chips; a Jetson's header is usually gpiochip0)"
            )
        try:
            import gpiod
            from gpiod.line import Direction, Value
        except ImportError:
            raise OutputError(
                "reject.output = gpiod needs the 'gpiod' package (pip install -e '.[gpio]')"
            ) from None
        if not gpiod.is_gpiochip_device(chip_path):
            raise OutputError(f"reject.gpiod.chip: {chip_path} is not a GPIO chip")
        line: int | str = int(self.cfg.line) if self.cfg.line.isdigit() else self.cfg.line
        if line == "":
            raise OutputError("reject.gpiod.line is empty: name the line's offset or name")
        try:
            with gpiod.Chip(chip_path) as chip:
                info = chip.get_info()
                if isinstance(line, int):
                    if line >= info.num_lines:
                        raise OutputError(
                            f"reject.gpiod.line: {chip_path} ({info.label}) has lines 0 to "
                            f"{info.num_lines - 1}, not {line}"
                        )
                    offset = line
                else:
                    try:
                        offset = chip.line_offset_from_id(line)
                    except (OSError, ValueError):
                        raise OutputError(
                            f"reject.gpiod.line: {chip_path} ({info.label}) has no line named "
                            f"'{line}' (`gpioinfo` lists them)"
                        ) from None
            settings = gpiod.LineSettings(
                direction=Direction.OUTPUT,
                output_value=Value.INACTIVE,
                active_low=self.cfg.active_low,
            )
            self._request = gpiod.request_lines(
                chip_path, consumer="station-reject", config={offset: settings}
            )
        except OSError as exc:
            raise OutputError(
                f"{self.name}: cannot request it as an output: {exc} (is another program "
                "using it? does this user have access to the chip?)"
            ) from None
        self._offset = offset

    def set(self, on: bool) -> None:
        """Drive the line (active = on; `active_low` inverts the pin)."""
        from gpiod.line import Value

        if self._request is None or self._offset is None:
            raise OutputError(f"{self.name}: not started")
        try:
            self._request.set_value(self._offset, Value.ACTIVE if on else Value.INACTIVE)
        except OSError as exc:
            raise OutputError(f"{self.name}: write failed: {exc}") from None

    def close(self) -> None:
        """Line off and released."""
        if self._request is None:
            return
        switch_off(self)
        self._request.release()
        self._request = None


class GenICamLine:
    """A digital output of the line's own GenICam camera, driven by a user output
    (LineSelector = line, LineMode = Output, LineSource = UserOutputN, UserOutputValue).

    The camera is the line's: `node_map` returns its node map while it is open (the driver is
    started when the camera opens, and checks the nodes then)."""

    def __init__(self, cfg: GenICamOutputConfig, node_map: Callable[[], Any]) -> None:
        self.cfg = cfg
        self.name = f"GenICam output {cfg.line} ({cfg.source})"
        self._node_map = node_map
        self._lock = threading.Lock()

    def start(self) -> None:
        """Select the line, make it an output driven by the user output, and set it off."""
        from station.camera.genicam import describe_feature, set_feature

        nm = self._node_map()
        needed = (*GENICAM_OUTPUT_NODES, GENICAM_VALUE_NODE)
        missing = [n for n in needed if describe_feature(nm, n) is None]
        if missing:
            raise OutputError(
                f"reject.output = genicam: the camera has no {', '.join(missing)} node"
                f"{'s' if len(missing) > 1 else ''}, so it cannot drive a digital output "
                "(use reject.output = gpiod, modbus or opcua)"
            )
        where = "reject.genicam"
        with self._lock:
            set_feature(nm, "LineSelector", self.cfg.line, where=f"{where}.line")
            set_feature(nm, "LineMode", "Output", where=f"{where}.line")
            set_feature(nm, "LineSource", self.cfg.source, where=f"{where}.source")
            set_feature(nm, "UserOutputSelector", self.cfg.source, where=f"{where}.source")
        self.set(False)

    def set(self, on: bool) -> None:
        """Write UserOutputValue of the configured user output."""
        from station.camera.genicam import set_feature

        try:
            with self._lock:
                nm = self._node_map()
                set_feature(nm, "UserOutputSelector", self.cfg.source, where="reject.genicam")
                set_feature(nm, GENICAM_VALUE_NODE, bool(on), where="reject.genicam")
        except StationError as exc:
            raise OutputError(f"{self.name}: {exc}") from None

    def close(self) -> None:
        """Output off while the camera is still open."""
        try:
            self.set(False)
        except OutputError as exc:
            log.debug("%s", exc)


class OpcUaVariable:
    """A Boolean variable in the PLC's OPC UA server, written with an asyncua client."""

    def __init__(self, cfg: OpcUaOutputConfig) -> None:
        self.cfg = cfg
        self.name = f"OPC UA variable {cfg.node} on {cfg.url}"
        self._client: Any = None
        self._node: Any = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Connect, find the node and check that it is a writable Boolean; write it off."""
        from asyncua import ua
        from asyncua.sync import Client

        if not self.cfg.url:
            raise OutputError("reject.opcua.url is empty: name the PLC's server (opc.tcp://...)")
        if not self.cfg.node:
            raise OutputError("reject.opcua.node is empty: name the variable (ns=2;s=Reject)")
        client = Client(self.cfg.url, timeout=self.cfg.timeout_s)
        if self.cfg.username:
            client.set_user(self.cfg.username)
            client.set_password(self.cfg.password)
        try:
            client.connect()
        except Exception as exc:
            client.tloop.stop()
            raise OutputError(f"{self.name}: cannot connect: {exc or type(exc).__name__}") from None
        try:
            node = client.get_node(self.cfg.node)
            value = node.read_data_value()
            kind = value.Value.VariantType if value.Value is not None else None
        except Exception as exc:
            client.disconnect()
            raise OutputError(f"reject.opcua.node: {self.cfg.node} cannot be read: {exc}") from None
        if kind != ua.VariantType.Boolean:
            client.disconnect()
            raise OutputError(
                f"reject.opcua.node: {self.cfg.node} holds {getattr(kind, 'name', kind)}, "
                "not a Boolean"
            )
        self._client, self._node = client, node
        self.set(False)

    def set(self, on: bool) -> None:
        """Write the variable."""
        from asyncua import ua

        with self._lock:
            if self._node is None:
                raise OutputError(f"{self.name}: not started")
            try:
                self._node.write_value(ua.DataValue(ua.Variant(bool(on), ua.VariantType.Boolean)))
            except Exception as exc:
                raise OutputError(f"{self.name}: write failed: {exc}") from None

    def close(self) -> None:
        """Variable off if reachable, then disconnect."""
        if self._client is None:
            return
        try:
            self.set(False)
        except OutputError as exc:
            log.warning("%s", exc)
        try:
            self._client.disconnect()
        except Exception as exc:  # a server that is gone cannot be said goodbye to
            log.debug("OPC UA disconnect: %s", exc)
        self._client = self._node = None


def build_driver(cfg: RejectConfig, node_map: Callable[[], Any] | None = None) -> OutputDriver:
    """The driver `reject.output` names (`node_map`: the line's GenICam camera's, for genicam)."""
    if cfg.output == "none":
        return NoOutput()
    if cfg.output == "modbus":
        return ModbusCoil(cfg.modbus)
    if cfg.output == "gpiod":
        return GpiodLine(cfg.gpiod)
    if cfg.output == "opcua":
        return OpcUaVariable(cfg.opcua)
    if cfg.output == "genicam":
        if node_map is None:
            raise OutputError("reject.output = genicam needs camera.source = genicam")
        return GenICamLine(cfg.genicam, node_map)
    raise OutputError(f"reject.output: '{cfg.output}' is not one of {', '.join(REJECT_OUTPUTS)}")
