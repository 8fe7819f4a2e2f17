"""MQTT: every result and event as JSON, QoS 1, through a bounded offline buffer.

Topics: `<prefix>/<station>/result` (one message a part), `<prefix>/<station>/event` (state,
drift, model, camera, storage, the plant links), `<prefix>/<station>/online` ("online", retained;
the last will says "offline" when the station vanishes without a goodbye).

`submit()` only appends to the buffer (it never waits for the network). The output's own thread
connects, publishes from the buffer with at most `INFLIGHT` messages awaiting their PUBACK, and
a message leaves the buffer only when the broker has acknowledged it: a broker that goes away
(restart, network) loses nothing, the messages not acknowledged are sent again when it is back
(at least once: a consumer that must see each part once keys on `part_id`). Each connection is a
new paho client, so paho never resends on its own as well. When the buffer is full the oldest
message goes, counted and an alarm; the database keeps every result whatever MQTT does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from station.config import MqttConfig
from station.core.result import InspectionResult, StationEvent
from station.core.worker import Worker
from station.outputs.plant import EventSink, Link, event_json, result_json

__all__ = ["MqttOutput", "topics"]

log = logging.getLogger(__name__)

INFLIGHT = 32  # messages published and not yet acknowledged
CONNECT_TIMEOUT_S = 5.0
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0
TICK_S = 0.05


def topics(cfg: MqttConfig, station: str) -> dict[str, str]:
    """The station's topics: result, event, online."""
    base = f"{cfg.prefix.strip('/')}/{station}"
    return {k: f"{base}/{k}" for k in ("result", "event", "online")}


@dataclass(frozen=True)
class _Message:
    seq: int
    topic: str
    payload: bytes


class MqttOutput(Worker):
    """A line sink that publishes to one broker from its own thread."""

    name = "mqtt"

    def __init__(self, cfg: MqttConfig, station: str, *, on_event: EventSink | None = None) -> None:
        super().__init__(on_failure=self._failed)
        self.cfg = cfg
        self.station = station
        self.topics = topics(cfg, station)
        self.link = Link("mqtt", f"MQTT broker {cfg.host}:{cfg.port}", on_event)
        self._lock = threading.Lock()
        self._pending: deque[_Message] = deque()
        self._inflight: dict[int, _Message] = {}  # mid -> message (the worker's thread only)
        self._seq = 0
        self._client: mqtt.Client | None = None
        self._connecting_since = 0.0
        self._connected = threading.Event()
        self._next_try = 0.0
        self._backoff = BACKOFF_MIN_S
        self.sent = 0  # acknowledged by the broker
        self.overflowed = 0  # dropped from a full buffer (oldest first)
        self._refused: str | None = None

    # -- LineSink (the inspector's thread: never blocks) -----------------------------------------
    def submit(self, result: InspectionResult) -> bool:
        """Queue one result for `<prefix>/<station>/result`."""
        return self._put(self.topics["result"], result_json(result, self.station))

    def submit_event(self, event: StationEvent) -> bool:
        """Queue one event for `<prefix>/<station>/event`."""
        return self._put(self.topics["event"], event_json(event, self.station))

    def count_dropped(self, n: int = 1, when: float | None = None) -> None:
        """Dropped frames are not parts: nothing to publish (the metrics count them)."""

    def _put(self, topic: str, body: dict[str, Any]) -> bool:
        payload = json.dumps(body, separators=(",", ":")).encode()
        with self._lock:
            self._seq += 1
            if len(self._pending) >= self.cfg.buffer:
                self._pending.popleft()
                self.overflowed += 1
            self._pending.append(_Message(self._seq, topic, payload))
        return True

    # -- observation -------------------------------------------------------------------------
    @property
    def waiting(self) -> int:
        """Messages not yet acknowledged by the broker (buffered or in flight)."""
        with self._lock:
            return len(self._pending) + len(self._inflight)

    @property
    def alarm(self) -> str | None:
        """What the screen shows while MQTT is not delivering; None while it is."""
        parts = []
        if self.error is not None or (self.started and not self.alive and not self.stopping):
            why = f"{type(self.error).__name__}: {self.error}" if self.error else "ended"
            parts.append(f"MQTT output stopped ({why}): nothing is sent ({self.waiting} waiting)")
        down = self.link.alarm if not parts else None
        if down:
            parts.append(f"{down} ({self.waiting} messages waiting)")
        if self.overflowed:
            parts.append(f"MQTT buffer full: {self.overflowed} oldest messages not sent")
        return "; ".join(parts) or None

    def drain(self, timeout: float) -> bool:
        """Wait until every message so far is acknowledged (True), or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while self.waiting:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self, timeout: float = 3.0) -> bool:
        """Send what the broker will take within `timeout`, say "offline", stop the thread."""
        if self.link.up:
            self.drain(timeout)
        self.stop()
        return self.join(timeout + CONNECT_TIMEOUT_S)

    @property
    def started(self) -> bool:
        """Whether `start()` has run (a thread not alive after it has ended)."""
        return self._thread is not None

    def _failed(self, worker: Worker, exc: BaseException) -> None:
        self.link.failed(f"the MQTT thread ended: {type(exc).__name__}: {exc}")

    # -- the worker's thread -----------------------------------------------------------------
    def step(self) -> bool:
        client = self._client
        if client is None:
            if time.monotonic() < self._next_try:
                self.wait(TICK_S)
                return True
            self._connect()
            return True
        try:
            rc = client.loop(timeout=TICK_S)
        except (OSError, ValueError) as exc:  # a socket that broke between two calls
            rc, why = mqtt.MQTT_ERR_CONN_LOST, str(exc)
        else:
            why = mqtt.error_string(rc)
        if rc != mqtt.MQTT_ERR_SUCCESS or (not self._connected.is_set() and self._connecting_since):
            if rc != mqtt.MQTT_ERR_SUCCESS:
                self._drop_connection(self._refused or why)
            elif time.monotonic() - self._connecting_since > CONNECT_TIMEOUT_S:
                self._drop_connection("no answer to CONNECT")
            return True
        self._publish_some(client)
        return True

    def teardown(self) -> None:
        client = self._client
        if client is None:
            return
        try:
            if self._connected.is_set():
                info = client.publish(self.topics["online"], b"offline", qos=1, retain=True)
                end = time.monotonic() + 1.0
                while not info.is_published() and time.monotonic() < end:
                    client.loop(timeout=TICK_S)
            client.disconnect()
            client.loop(timeout=TICK_S)
        except Exception as exc:  # going away anyway: the last will says offline
            log.debug("mqtt: goodbye not sent: %s", exc)
        self._client = None

    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"station-{self.station}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        client.max_inflight_messages_set(INFLIGHT)
        client.max_queued_messages_set(0)
        if self.cfg.username:
            client.username_pw_set(self.cfg.username, self.cfg.password or None)
        if self.cfg.tls:
            try:
                client.tls_set(
                    ca_certs=self.cfg.ca_file or None, tls_version=ssl.PROTOCOL_TLS_CLIENT
                )
            except (OSError, ssl.SSLError) as exc:  # ssl's message does not name the file
                raise OSError(f"mqtt.ca_file {self.cfg.ca_file or '(system CAs)'}: {exc}") from exc
        client.will_set(self.topics["online"], b"offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _connect(self) -> None:
        self._refused = None
        try:
            # tls_set reads the CA file here: a file gone since the config was read is a reason
            # to retry with an alarm, not the end of the thread.
            client = self._new_client()
            client.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        except Exception as exc:
            self._retry_later(f"{type(exc).__name__}: {exc}")
            return
        self._client = client
        self._connecting_since = time.monotonic()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self._refused = f"the broker refused the connection: {reason}"
            client.disconnect()
            return
        self._connecting_since = 0.0
        self._backoff = BACKOFF_MIN_S
        self._connected.set()
        client.publish(self.topics["online"], b"online", qos=1, retain=True)
        self.link.back(f"{self.waiting} messages to send")

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if client is self._client and self._connected.is_set() and not self.stopping:
            self._refused = self._refused or f"disconnected ({reason})"

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        with self._lock:
            if self._inflight.pop(mid, None) is not None:
                self.sent += 1

    def _publish_some(self, client: mqtt.Client) -> None:
        if not self._connected.is_set():
            return
        while True:
            with self._lock:
                if len(self._inflight) >= INFLIGHT or not self._pending:
                    return
                message = self._pending.popleft()
                info = client.publish(message.topic, message.payload, qos=1)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    self._pending.appendleft(message)
                    return
                self._inflight[info.mid] = message

    def _drop_connection(self, why: str) -> None:
        """The connection is gone: what was in flight goes back to the front of the buffer,
        in order, and a new client connects after a back-off."""
        client, self._client = self._client, None
        self._connected.clear()
        self._connecting_since = 0.0
        with self._lock:
            back = sorted(self._inflight.values(), key=lambda m: m.seq)
            self._inflight.clear()
            self._pending.extendleft(reversed(back))
            while len(self._pending) > self.cfg.buffer:
                self._pending.popleft()
                self.overflowed += 1
        if client is not None:
            with contextlib.suppress(Exception):  # already closed
                client.disconnect()
        self._retry_later(why)

    def _retry_later(self, why: str) -> None:
        self.link.lost(why)
        self._next_try = time.monotonic() + self._backoff
        self._backoff = min(BACKOFF_MAX_S, self._backoff * 2)
