"""HTTP health and metrics: `station run --headless --max-frames 50` as a real process answers
/health and /metrics during the run, and `inspections_total` equals the database's rows; the
token; a port that is taken is an alarm, not a stopped line."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import free_port
from test_pipeline import line_config, wait_until
from test_run_cli import REPO, count_rows, install_model, write_config

from station.app import StationApp
from station.config import ConfigError, load_config
from station.model.patchcore import PatchCore
from station.records import Database, db_path


def get(url: str, token: str = "") -> tuple[int, str]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def inspections_total(metrics: str) -> int:
    found = re.findall(r'^inspections_total\{verdict="\w+"\} (\S+)$', metrics, re.M)
    assert len(found) == 3, metrics
    return int(sum(float(x) for x in found))


def test_headless_run_answers_health_and_metrics_equal_to_the_rows(
    demo_product: Path, demo_model: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    install_model(data, demo_model)
    port = free_port()
    cfg = write_config(
        tmp_path / "station.toml", demo_product, fps=15.0,
        extra=f'\n[http]\nport = {port}\nbind = "127.0.0.1"\n',
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    log_file = tmp_path / "run.log"
    with log_file.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "station", "run", "--headless", "--config", str(cfg),
             "--data-dir", str(data), "--max-frames", "50"],
            cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            health: dict[str, object] = {}
            deadline = time.monotonic() + 90
            while health.get("state") != "running" or not health.get("last_part_id"):
                assert proc.poll() is None, log_file.read_text()
                assert time.monotonic() < deadline, f"no running /health: {health}"
                try:
                    code, text = get(base + "/health")
                    health = json.loads(text)
                except (urllib.error.URLError, ConnectionError):
                    pass
                time.sleep(0.05)
            assert code == 200
            assert health["product"] == "demo" and health["model_version"] == "demo/v0001"
            assert isinstance(health["last_result_time"], float) and health["alarms"] == []
            # The metric and the rows, read between two scrapes that agree: no commit between.
            seen: list[tuple[int, int]] = []
            while True:
                assert proc.poll() is None, f"the run ended before metrics and rows agreed: {seen}"
                m1 = inspections_total(get(base + "/metrics")[1])
                rows = count_rows(data)
                m2 = inspections_total(get(base + "/metrics")[1])
                seen.append((m1, rows))
                if m1 == m2 == rows and 0 < rows < 50:
                    break
                time.sleep(0.1)
            text = get(base + "/metrics")[1]
            for name in (
                "inspection_latency_seconds_bucket",
                "frames_dropped_total",
                "results_unrecorded",
                "drift_level",
                'station_state{state="running"} 1.0',
            ):
                assert name in text, name  # fmt: skip
            assert proc.wait(90) == 0, log_file.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert count_rows(data) == 50
    with pytest.raises(urllib.error.URLError):  # closed with the station
        urllib.request.urlopen(base + "/health", timeout=2)


def test_a_token_is_required_when_set_and_off_loopback(
    demo_product: Path,
    demo_patchcore: PatchCore,
    station_factory: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[http]\nport = 8080\nbind = "0.0.0.0"\n')
    with pytest.raises(ConfigError, match=r"http.token: http.bind = '0.0.0.0' is reachable"):
        load_config(bad)
    cfg = line_config(demo_product, fps=20.0)
    port = free_port()
    cfg = dataclasses.replace(cfg, http=dataclasses.replace(cfg.http, port=port, token="s3cret"))
    station = station_factory(cfg, model=demo_patchcore, max_frames=5)
    station.start()
    base = f"http://127.0.0.1:{port}"
    code, text = get(base + "/metrics")
    assert code == 401 and "token" in text
    assert get(base + "/health", token="wrong")[0] == 401
    wait_until(lambda: get(base + "/health", token="s3cret")[0] == 200, 30, "a healthy line")
    assert get(base + "/nothing", token="s3cret")[0] == 404
    assert station.wait(60)


def test_a_taken_port_is_an_alarm_and_the_line_runs(
    demo_product: Path,
    demo_patchcore: PatchCore,
    station_factory: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = line_config(demo_product, fps=20.0)
        cfg = dataclasses.replace(cfg, http=dataclasses.replace(cfg.http, port=port))
        station = station_factory(cfg, model=demo_patchcore, max_frames=5)
        station.start()
        assert station.wait(60)
        assert any(f"HTTP endpoint 127.0.0.1:{port} not reachable: cannot listen" in a
                   for a in station.status().alarms)  # fmt: skip
    with Database(db_path(tmp_path / "data"), create=False) as db:
        assert db.count_inspections() == 5
        assert len(db.query_events(kind="http")) == 1


def test_failsafe_rejects_and_late_results_are_in_metrics_and_health() -> None:
    from station.config import HttpConfig
    from station.core.result import Counters, LineStatus, StationState
    from station.outputs.http import HttpOutput

    def status() -> LineStatus:
        counters = Counters(failsafe_rejects=3, late_results=2)
        return LineStatus(StationState.RUNNING, counters=counters)

    out = HttpOutput(HttpConfig(port=free_port()), status, dict)
    out.start()
    try:
        base = f"http://127.0.0.1:{out.port}"
        assert re.search(r"^failsafe_rejects_total 3\.0$", get(base + "/metrics")[1], re.M)
        assert re.search(r"^late_results_total 2\.0$", get(base + "/metrics")[1], re.M)
        counters = json.loads(get(base + "/health")[1])["counters"]
        assert counters["failsafe_rejects"] == 3 and counters["late_results"] == 2
    finally:
        out.close()
