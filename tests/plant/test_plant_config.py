"""The plant sections of the config: nothing reachable from the network without a credential,
topic names MQTT can carry, and none of it in a product's recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from station.config import ConfigError, StationConfig, is_loopback, load_config, with_overlay


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[opcua]\nport = 4840\nbind = "0.0.0.0"\n', r"opcua.certificate: opcua.bind = '0.0.0.0'"),
        ('[opcua]\ncertificate = "c.der"\n', "set opcua.certificate and opcua.private_key"),
        (
            '[opcua]\nport = 4840\nbind = "0.0.0.0"\ncertificate = "c"\nprivate_key = "k"\n',
            r"opcua.trusted_clients: opcua.bind = '0.0.0.0' is reachable from the network",
        ),
        ('[mqtt]\nhost = "b"\nprefix = "a/#"\n', "mqtt.prefix: 'a/#' must be a topic level"),
        ('[mqtt]\nhost = "b"\nstation = "a/b"\n', "mqtt.station: 'a/b' must not contain"),
        ("[mqtt]\nport = 0\n", r"mqtt.port: 0 is out of range"),
        (
            '[mqtt]\nhost = "10.0.0.5"\nusername = "u"\npassword = "p"\n',
            r"mqtt.password: mqtt.host = '10.0.0.5' is reached over the network",
        ),
        ("[http]\nport = 70000\n", r"http.port: 70000 is out of range"),
        ('[mqtt]\nhots = "b"\n', "unknown key 'hots' \\(did you mean 'host'"),
        (
            '[mqtt]\nhost = "b"\ntls = true\nca_file = "gone.pem"\n',
            r"mqtt.ca_file: \S*gone.pem is not a file",
        ),
    ],
)
def test_bad_plant_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "station.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_recipe_cannot_change_the_plant_interfaces() -> None:
    with pytest.raises(ConfigError, match=r"\[mqtt\]: the station's wiring and plant interfaces"):
        with_overlay(StationConfig(), {"mqtt": {"host": "elsewhere"}}, "recipe other")


def test_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("plc")


def test_the_readme_example_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Plant interfaces (OPC UA, MQTT, HTTP)", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "station.toml"
    path.write_text(example)
    cfg = load_config(path)
    assert (cfg.mqtt.host, cfg.http.port, cfg.opcua.port) == ("10.0.0.5", 9100, 4840)
    assert cfg.mqtt.station == "line3-cam1" and not cfg.opcua.anonymous
