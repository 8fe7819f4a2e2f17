"""The plant interfaces against real servers and clients on 127.0.0.1: Mosquitto (the Debian
package) for MQTT, an asyncua client on the station's own OPC UA server, HTTP with urllib."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# test_pipeline's line_config / wait_until / station_factory: one set of helpers for all folders.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from test_pipeline import station_factory  # noqa: F401  (a fixture, shared)

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Mosquitto:
    """A real broker on a random port, from a config file; stop and start it again at will."""

    def __init__(self, folder: Path, *, persistence: bool, extra: list[str] | None = None) -> None:
        self.port = free_port()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            *(extra or ["allow_anonymous true"]),
            # Run as whoever runs the tests: as root it would switch to the mosquitto user, who
            # cannot read (nor persist into) the test's private temporary folder.
            f"user {getpass.getuser()}",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {folder}/",
            "autosave_interval 1",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "max_queued_messages 100000",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "mosquitto.log", "ab"),  # noqa: SIM115 (the child keeps it)
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: with persistence on it saves its state first
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running broker without persistence."""
    if not Path(MOSQUITTO).exists():
        pytest.fail(f"mosquitto is not installed ({MOSQUITTO}): apt-get install mosquitto")
    broker = Mosquitto(tmp_path / "broker", persistence=False)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def persistent_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running broker that keeps sessions and queued messages across a restart."""
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    broker.start()
    yield broker
    broker.stop()
