"""The plant interfaces as the app composes them: MQTT, the OPC UA server, HTTP health and
metrics, each from its config section (none of them when the section leaves it off).

They are line sinks (they see every result and event) and they get from the app what they may
not reach themselves: the status snapshot, and for the OPC UA methods the app's own role-checked,
audited actions (`PlantControl`). An OPC UA client acts as the station user it logged in as
(user name and PIN; `via = "opcua"`), with that user's role; anonymous clients, where allowed,
may only read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from station.app.access import Session
from station.app.roles import Action
from station.core.errors import StationError
from station.core.result import InspectionResult, StationEvent
from station.core.sinks import LineSink
from station.outputs.plant import station_name

if TYPE_CHECKING:
    from station.app.station_app import StationApp

log = logging.getLogger(__name__)

VIA_OPCUA = "opcua"
ANONYMOUS = "anonymous"


class PlantControl:
    """What an OPC UA client may ask of the station, as the app's checked, audited actions."""

    def __init__(self, app: StationApp, trigger: Callable[[], object] | None = None) -> None:
        self.app = app
        # The line's software trigger, where the trigger input gives the app one; without it a
        # trigger is refused with the reason (the camera runs free or takes its own trigger).
        self.trigger_hook = trigger

    def login(self, name: str, password: str) -> Session | None:
        """The session of a station user whose PIN is `password` (the lockout applies), else
        None (audited either way by the app's login)."""
        try:
            return self.app.login(name, password, via=VIA_OPCUA)
        except StationError as exc:
            log.warning("OPC UA login of %r refused: %s", name, exc)
            return None

    def logout(self, session: Session) -> None:
        """The OPC UA session closed: end the station user's session (audited)."""
        self.app.logout(session, reason="OPC UA session closed")

    def _session(self, session: Session | None) -> Session:
        # Not issued by this station: the app refuses it, and writes the refusal into the audit.
        return session or Session(ANONYMOUS, None, VIA_OPCUA)

    def switch_product(self, session: Session | None, product: str) -> None:
        """Run `product` (technician, admin; audited)."""
        self.app.switch_product(self._session(session), product, reason="OPC UA SwitchProduct")

    def trigger(self, session: Session | None) -> None:
        """Inspect the next part now (any logged-in role that may run the line)."""
        s = self._session(session)
        self.app.authorize(s, Action.PAUSE, "trigger")
        if self.trigger_hook is None:
            raise StationError(
                "this line takes no software trigger (its camera runs free or on its own "
                "trigger input)"
            )
        part = self.trigger_hook()
        self.app.access.record(s, "trigger", object=self.app.product, after=part)

    def acknowledge(self, session: Session | None, alarm: str) -> None:
        """Note that a person has seen an alarm (any logged-in role; audited). The alarm stays
        active until its cause is gone."""
        s = self._session(session)
        self.app.authorize(s, Action.PAUSE, "acknowledge alarm")
        self.app.access.record(s, "alarm_acknowledge", object=alarm)


class PlantOutputs:
    """The configured plant interfaces of one station: built cheaply, started with the line."""

    def __init__(self, app: StationApp) -> None:
        cfg = app.cfg
        self.app = app
        self.station = station_name(cfg.mqtt.station, cfg.reports.station_name)
        # The PLC's software trigger (plc.trigger = true) is also the OPC UA Trigger method.
        gate = app.gate
        self.control = PlantControl(app, app.trigger if gate is not None and gate.paced else None)
        self.sinks: list[LineSink] = []
        self._parts: list[Any] = []  # each has start(), close(timeout), alarm
        if cfg.mqtt.host:
            from station.outputs.mqtt import MqttOutput

            self.mqtt: Any = MqttOutput(cfg.mqtt, self.station, on_event=self.event)
            self._add(self.mqtt)
        if cfg.http.port:
            from station.outputs.http import HttpOutput

            self.http: Any = HttpOutput(cfg.http, app.status, self._health, on_event=self.event)
            self._add(self.http)
            app.recorder.on_commit = self.http.committed
        if cfg.opcua.port:
            from station.outputs.opcua_server import OpcuaOutput

            self.opcua: Any = OpcuaOutput(
                cfg.opcua, self.station, app.status, self._product, self.control,
                on_event=self.event,
            )  # fmt: skip
            self._add(self.opcua)

    def _add(self, part: Any) -> None:
        self.sinks.append(part)
        self._parts.append(part)

    def _product(self) -> str:
        return self.app.product

    def _health(self) -> dict[str, Any]:
        latest: InspectionResult | None = self.app.latest()
        return {
            "station": self.station,
            "product": self.app.product,
            "last_result_time": latest.timestamp if latest is not None else None,
            "last_part_id": latest.part_id if latest is not None else None,
        }

    def event(self, event: StationEvent) -> None:
        """A plant link's event: into the records and out to every plant interface."""
        self.app.record_event(event)
        for sink in self.sinks:
            sink.submit_event(event)

    def start(self) -> None:
        """Start each interface's thread (a port that cannot be taken is an event and an
        alarm; the line runs anyway)."""
        for part in self._parts:
            part.start()

    def close(self, timeout: float = 3.0) -> None:
        """Send what is left (MQTT) and close every interface."""
        for part in self._parts:
            try:
                part.close(timeout)
            except Exception:
                log.exception("closing %s failed", type(part).__name__)

    def alarms(self) -> tuple[str, ...]:
        """Each interface's alarm while it lasts."""
        return tuple(a for a in (p.alarm for p in self._parts) if a)
