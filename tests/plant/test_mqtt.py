"""MQTT against a real Mosquitto on a random port: every result as the database has it, the
events, the online state and last will, a broker restart mid-run that loses nothing, and a
station that inspects on without a broker."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from conftest import Mosquitto, free_port
from paho.mqtt.enums import CallbackAPIVersion
from test_pipeline import line_config, wait_until

from station.app import StationApp
from station.config import MqttConfig, StationConfig
from station.core.result import InspectionResult, StationEvent, Verdict
from station.model.patchcore import PatchCore
from station.outputs.mqtt import MqttOutput
from station.records import Database, db_path


class Subscriber:
    """A plain paho client on `<prefix>/#`, QoS 1; a persistent session when `client_id`."""

    def __init__(self, port: int, topic: str, client_id: str = "") -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not client_id
        )
        self.client.reconnect_delay_set(0.1, 0.5)
        self.topic = topic
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "no SUBACK from the broker"

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload))

    def on(self, suffix: str) -> list[Any]:
        with self.lock:
            got = [p for t, p in self.messages if t.endswith(suffix)]
        return [p.decode() if suffix == "/online" else json.loads(p) for p in got]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def mqtt_config(cfg: StationConfig, port: int, **kw: Any) -> StationConfig:
    mq = dataclasses.replace(
        cfg.mqtt, host="127.0.0.1", port=port, prefix="plant", station="st1", **kw
    )
    return dataclasses.replace(cfg, mqtt=mq)


def rows_by_part(data: Path) -> dict[str, Any]:
    with Database(db_path(data), create=False) as db:
        return {r.part_id: r for r in db.query_inspections()}


def assert_results_equal_rows(results: list[dict[str, Any]], data: Path, n: int) -> None:
    rows = rows_by_part(data)
    assert len(rows) == n
    by_part = {r["part_id"]: r for r in results}  # a redelivery (at least once) counts once
    assert set(by_part) == set(rows)
    for part, msg in by_part.items():
        row = rows[part]
        assert msg["verdict"] == row.verdict.value
        assert msg["score"] == row.score
        assert msg["limit"] == row.threshold
        assert msg["model_version"] == row.model_version
        assert msg["time"] == row.time
        assert msg["station"] == "st1" and msg["product"] == "demo"


def test_results_events_and_online_state_reach_the_broker(
    demo_product: Path,
    demo_patchcore: PatchCore,
    station_factory: Callable[..., StationApp],
    mosquitto: Mosquitto,
    tmp_path: Path,
) -> None:
    sub = Subscriber(mosquitto.port, "plant/st1/#")
    try:
        cfg = mqtt_config(line_config(demo_product, fps=0.0), mosquitto.port)
        station = station_factory(cfg, model=demo_patchcore, max_frames=12)
        station.start()
        assert station.wait(60)
        wait_until(lambda: len(sub.on("/result")) >= 12, 10, "12 results on the broker")
        station.close()  # the plant links close with the station, saying goodbye
        assert_results_equal_rows(sub.on("/result"), tmp_path / "data", 12)
        wait_until(lambda: sub.on("/online")[-1:] == ["offline"], 10, "the goodbye")
        assert sub.on("/online")[0] == "online"
        events = sub.on("/event")
        states = [e["state"] for e in events if e["kind"] == "state"]
        assert states[0] == "starting" and states[-1] == "stopped"
        assert any(e["kind"] == "model" for e in events)
        assert next(e for e in events if e["kind"] == "mqtt")["data"]["up"] is True
    finally:
        sub.close()


def test_a_broker_restart_mid_run_loses_no_message(
    demo_product: Path,
    demo_patchcore: PatchCore,
    station_factory: Callable[..., StationApp],
    persistent_mosquitto: Mosquitto,
    tmp_path: Path,
) -> None:
    """The broker keeps the subscriber's session over its restart (persistence on); what the
    station published while the broker was away waits in the station's buffer."""
    broker = persistent_mosquitto
    sub = Subscriber(broker.port, "plant/st1/#", client_id="plant-historian")
    try:
        cfg = mqtt_config(line_config(demo_product, fps=12.0), broker.port)
        station = station_factory(cfg, model=demo_patchcore, max_frames=30)
        station.start()
        wait_until(lambda: len(sub.on("/result")) >= 6, 30, "the first results")
        broker.stop()
        wait_until(
            lambda: any("MQTT broker" in a and "lost" in a for a in station.status().alarms),
            10, "the alarm",
        )  # fmt: skip
        waiting = station.plant.mqtt.waiting
        wait_until(lambda: station.plant.mqtt.waiting > waiting + 3, 10, "parts while away")
        assert station.line.state.value == "running"  # inspecting on, broker or not
        broker.start()
        assert station.wait(60)
        wait_until(lambda: len({r["part_id"] for r in sub.on("/result")}) >= 30, 20, "all 30")
        assert_results_equal_rows(sub.on("/result"), tmp_path / "data", 30)
        assert station.plant.mqtt.overflowed == 0
        with Database(db_path(tmp_path / "data"), create=False) as db:
            mq = [e.message for e in reversed(db.query_events(kind="mqtt"))]
        assert [re.match(r"MQTT broker \S+ (\w+)", m).group(1) for m in mq] == [  # type: ignore[union-attr]
            "connected",
            "lost",
            "back",
        ]
        assert any("lost" in e["message"] for e in sub.on("/event") if e["kind"] == "mqtt")
    finally:
        sub.close()


def test_without_a_broker_the_line_inspects_and_records_with_an_alarm(
    demo_product: Path,
    demo_patchcore: PatchCore,
    station_factory: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there
    cfg = mqtt_config(line_config(demo_product, fps=20.0), port)
    station = station_factory(cfg, model=demo_patchcore, max_frames=10)
    station.start()
    wait_until(lambda: bool(station.status().alarms), 20, "the alarm")
    alarm = station.status().alarms[0]
    assert f"MQTT broker 127.0.0.1:{port} not reachable" in alarm and "refused" in alarm
    assert station.wait(60)
    assert len(rows_by_part(tmp_path / "data")) == 10
    with Database(db_path(tmp_path / "data"), create=False) as db:
        events = db.query_events(kind="mqtt")
    assert len(events) == 1 and "not reachable" in events[0].message


def _result(i: int) -> InspectionResult:
    import numpy as np

    return InspectionResult(
        frame_id=i, timestamp=1.0e9 + i, source="test", score=0.5, threshold=1.0,
        verdict=Verdict.OK, latency_ms=1.0, model_version="v0001",
        image=np.zeros((1, 1), np.uint8), part_id=f"P-{i}",
    )  # fmt: skip


def test_a_full_buffer_drops_the_oldest_counted_and_sends_the_rest(mosquitto: Mosquitto) -> None:
    events: list[StationEvent] = []
    cfg = MqttConfig(host="127.0.0.1", port=mosquitto.port, prefix="plant", station="b", buffer=3)
    out = MqttOutput(cfg, "b", on_event=events.append)
    for i in range(5):  # before the thread runs: nothing can be sent yet
        assert out.submit(_result(i))
    assert out.overflowed == 2 and out.waiting == 3
    assert out.alarm == "MQTT buffer full: 2 oldest messages not sent"
    sub = Subscriber(mosquitto.port, "plant/b/result")
    try:
        out.start()
        wait_until(lambda: len(sub.on("/result")) == 3, 10, "the three kept")
        assert [m["part_id"] for m in sub.on("/result")] == ["P-2", "P-3", "P-4"]
        assert out.close(3.0)
        assert [e.data["up"] for e in events] == [True]
    finally:
        sub.close()


def test_an_error_in_the_mqtt_thread_is_an_alarm_and_the_thread_lives(tmp_path: Path) -> None:
    """A CA file removed after the config was read: tls_set raises in the thread."""
    events: list[StationEvent] = []
    gone = tmp_path / "ca.pem"
    cfg = MqttConfig(host="127.0.0.1", port=free_port(), tls=True, ca_file=str(gone))
    out = MqttOutput(cfg, "b", on_event=events.append)
    out.start()
    try:
        wait_until(lambda: out.alarm is not None, 10, "the alarm")
        assert str(gone) in (out.alarm or "") and out.alive
        assert len(events) == 1 and str(gone) in events[0].message
    finally:
        assert out.close(1.0)


class _Broken(MqttOutput):
    def step(self) -> bool:
        raise RuntimeError("boom")


def test_a_dead_mqtt_thread_is_an_alarm_and_an_event() -> None:
    """A fake fault (step raises): no real fault left that ends the thread."""
    events: list[StationEvent] = []
    out = _Broken(MqttConfig(host="127.0.0.1"), "b", on_event=events.append)
    out.start()
    assert out.join(5)
    assert out.alarm is not None and "MQTT output stopped (RuntimeError: boom)" in out.alarm
    assert [e.data["alarm"] for e in events] == [True] and "boom" in events[0].message
