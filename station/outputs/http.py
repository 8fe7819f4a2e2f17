"""HTTP: `GET /health` (JSON) and `GET /metrics` (Prometheus text) for the plant's monitoring.

A line sink like the other outputs: `submit()` counts the part into the metrics (a few
lock-protected additions, no I/O); the server answers from its own threads, reading the app's
status snapshot. It only reads: nothing over HTTP changes the station. With `[http] token` set,
every request needs `Authorization: Bearer <token>` (the config refuses a bind beyond loopback
without one).

Metrics (counters since this run started; Prometheus handles the restarts):
`inspections_total{verdict}` counts the parts as their rows are committed (the records'
`on_commit`), so it equals the rows this run wrote into the database; the parts judged are the
count of `inspection_latency_seconds` (frame arrival to verdict), judged but not yet written
or never written (`results_unrecorded`) is the difference. Also `frames_dropped_total`,
`bad_frames_total`, and read at each scrape: `failsafe_rejects_total` (parts the reject gate
rejected without a verdict in time, this run), `late_results_total` (results that came after
their part's deadline, this run), `results_unrecorded` (this shift), `drift_level`
(0 none, 1 warning, 2 critical, -1 off), `station_state{state}`, `station_alarms`.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from station.config import HttpConfig
from station.core.result import DriftLevel, InspectionResult, LineStatus, StationEvent, StationState
from station.outputs.plant import EventSink, Link, iso

__all__ = ["HttpOutput"]

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
DRIFT_VALUE = {DriftLevel.NONE: 0, DriftLevel.WARNING: 1, DriftLevel.CRITICAL: 2}


class _Snapshot(Collector):
    """The values read from the app's status at each scrape."""

    def __init__(self, status: Callable[[], LineStatus]) -> None:
        self._status = status

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        st = self._status()
        yield CounterMetricFamily(
            "failsafe_rejects",
            "Parts the reject gate rejected without a verdict in time (late, missing, refused)",
            value=st.counters.failsafe_rejects,
        )
        yield CounterMetricFamily(
            "late_results",
            "Results that came after their part's reject deadline (the part went fail-safe)",
            value=st.counters.late_results,
        )
        yield GaugeMetricFamily(
            "results_unrecorded",
            "Results of this shift that could not be recorded",
            value=st.counters.unrecorded,
        )
        drift = DRIFT_VALUE.get(st.drift.level, -1) if st.drift is not None else -1
        yield GaugeMetricFamily(
            "drift_level", "Score drift: 0 none, 1 warning, 2 critical, -1 off", value=drift
        )
        state = GaugeMetricFamily(
            "station_state", "The line's state (1 = current)", labels=["state"]
        )
        for s in StationState:
            state.add_metric([s.value], 1.0 if s == st.state else 0.0)
        yield state
        yield GaugeMetricFamily("station_alarms", "Active alarms", value=len(st.alarms))


class HttpOutput:
    """The health and metrics endpoint; a line sink that counts every part."""

    def __init__(
        self,
        cfg: HttpConfig,
        status: Callable[[], LineStatus],
        health: Callable[[], dict[str, Any]],
        *,
        on_event: EventSink | None = None,
    ) -> None:
        self.cfg = cfg
        self._status = status
        self._health = health
        self.link = Link("http", f"HTTP endpoint {cfg.bind}:{cfg.port}", on_event)
        self.registry = CollectorRegistry()
        self.inspections = Counter(
            "inspections", "Parts inspected and recorded, by verdict", ["verdict"],
            registry=self.registry,
        )  # fmt: skip
        for v in ("OK", "CHECK", "NOK"):
            self.inspections.labels(v)  # every verdict listed, at 0 until it happens
        self.latency = Histogram(
            "inspection_latency_seconds", "Frame arrival to verdict, queue wait included",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.dropped = Counter(
            "frames_dropped", "Frames the queue dropped (the model slower than the camera)",
            registry=self.registry,
        )  # fmt: skip
        self.bad_frames = Counter(
            "bad_frames", "Frames refused before a verdict", registry=self.registry
        )
        self.registry.register(_Snapshot(status))
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- LineSink ----------------------------------------------------------------------------
    def submit(self, result: InspectionResult) -> bool:
        """Count one part judged (its latency)."""
        self.latency.observe(max(0.0, result.latency_ms) / 1000.0)
        return True

    def submit_event(self, event: StationEvent) -> bool:
        """Count the frames refused (the rest is read from the status at each scrape)."""
        if event.kind == "bad_frame":
            self.bad_frames.inc()
        return True

    def count_dropped(self, n: int = 1, when: float | None = None) -> None:
        """Count frames the queue dropped."""
        self.dropped.inc(n)

    def committed(self, rows: Sequence[Any]) -> None:
        """Count parts now in the database (the recorder's `on_commit`: rows with a verdict)."""
        for row in rows:
            self.inspections.labels(row.verdict.value).inc()

    # -- the server --------------------------------------------------------------------------
    @property
    def alarm(self) -> str | None:
        """Why the endpoint does not answer, while it does not."""
        return self.link.alarm

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1]) if self._server is not None else 0

    def start(self) -> None:
        """Listen on `bind:port`; a port that cannot be taken is an event and an alarm."""
        try:
            self._server = ThreadingHTTPServer((self.cfg.bind, self.cfg.port), self._handler())
        except OSError as exc:
            self.link.lost(f"cannot listen: {exc.strerror or exc}")
            return
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="http",
            daemon=True,
        )  # fmt: skip
        self._thread.start()
        self.link.back("GET /health, /metrics")

    def close(self, timeout: float = 3.0) -> bool:
        """Stop answering."""
        server, self._server = self._server, None
        if server is None:
            return True
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
        return True

    def health(self) -> tuple[int, dict[str, Any]]:
        """The /health answer: 200 while the line can inspect, 503 when it failed or stopped."""
        st = self._status()
        body: dict[str, Any] = {
            "state": st.state.value,
            "reason": st.reason,
            "model_version": st.model_version,
            "alarms": list(st.alarms),
            "counters": {
                "inspected": st.counters.inspected,
                "nok": st.counters.nok,
                "check": st.counters.check,
                "dropped": st.counters.dropped,
                "unrecorded": st.counters.unrecorded,
                "bad_frames": st.counters.bad_frames,
                "failsafe_rejects": st.counters.failsafe_rejects,
                "late_results": st.counters.late_results,
                "shift": st.counters.shift,
            },
            "drift": st.drift.level.value if st.drift is not None else None,
            **self._health(),
        }
        t = body.get("last_result_time")
        body["last_result_time_iso"] = iso(t) if isinstance(t, int | float) else None
        code = 503 if st.state in (StationState.FAILED, StationState.STOPPED) else 200
        return code, body

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        output = self
        token = self.cfg.token

        class Handler(BaseHTTPRequestHandler):
            server_version = "station"

            def do_GET(self) -> None:  # the http.server name
                if token:
                    given = self.headers.get("Authorization", "")
                    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                        self._send(401, b'{"error": "a token is required"}', "application/json",
                                   {"WWW-Authenticate": "Bearer"})  # fmt: skip
                        return
                path = self.path.split("?", 1)[0]
                try:
                    if path == "/health":
                        code, body = output.health()
                        self._send(code, json.dumps(body).encode(), "application/json")
                    elif path == "/metrics":
                        self._send(200, generate_latest(output.registry), CONTENT_TYPE_LATEST)
                    else:
                        self._send(404, b'{"error": "GET /health or /metrics"}', "application/json")
                except Exception as exc:  # the station's problem must not kill the server
                    log.exception("HTTP %s failed", path)
                    self._send(500, json.dumps({"error": str(exc)}).encode(), "application/json")

            def _send(
                self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http %s: " + format, self.client_address[0], *args)

        return Handler
