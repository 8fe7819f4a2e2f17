"""The `[reject]` and `[plc]` sections: every wrong value names the file, the key and why."""

from pathlib import Path

import pytest

from station.config import load_config, with_overlay
from station.core.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[reject]\noutput = 'relay'", r"reject.output: 'relay' is not one of none, modbus"),
        ("[reject]\noutput = 'genicam'", r"reject.output: 'genicam' .* needs a GenICam camera"),
        ("[reject]\ndeadline_s = 0", r"reject.deadline_s: 0.0 is out of range: must be above 0"),
        ("[reject]\npulse_s = 0", r"reject.pulse_s: 0.0 is out of range"),
        ("[reject]\ndeadline_s = 1.0\ndelay_s = 0.5", r"reject.delay_s: 0.5 s is before the dead"),
        ("[reject.modbus]\nport = 70000", r"reject.modbus.port: 70000 is out of range"),
        ("[reject.gpiod]\nline = 17", r"reject.gpiod.line: expected a string, got 17"),
        ("[reject.opcua]\nnode_id = 'x'", r"reject.opcua: unknown key 'node_id' \(did you mean"),
        ("[plc]\ntrigger = true", r"plc.trigger: needs plc.host"),
        ("[reject]\ntrigger = 'plc'", r"reject.trigger: 'plc' is not 'frame' or 'software'"),
        ("[reject]\ntrigger = 'software'", r"reject.trigger: needs camera.replay.fps = 0"),
        (
            "[reject]\noutput = 'modbus'\n[camera]\nsource = 'genicam'",
            r"reject.output: camera.genicam.trigger = 'off' runs free: every frame would be a",
        ),
        ("[plc]\nhost = 'plc'\n[camera]\nsource = 'uvc'", r"plc.host: a UVC camera runs free"),
        ("[plc]\nhost = 'plc'\n[camera.replay]\nfps = 0", r"plc.host: a replay at fps = 0"),
        (
            "[plc]\nhost = 'plc'\ntrigger = true\n[camera.replay]\nfps = 2",
            r"plc.trigger: needs camera.replay.fps = 0 \(it is 2\)",
        ),
        (
            "[plc]\nhost = 'plc'\ntrigger = true\n[camera]\nsource = 'genicam'",
            r"plc.trigger: needs camera.genicam.trigger = 'software' \(it is 'off'\)",
        ),
        (
            "[plc]\nhost = 'plc'\ntrigger = true\n[camera]\nsource = 'uvc'",
            r"plc.trigger: a UVC camera runs free",
        ),
        ("[plc]\nhost = 'plc'\noutputs = 1", r"plc.outputs: registers 1..6 overlap plc.inputs"),
        ("[plc]\npoll_s = 5", r"plc.poll_s: 5.0 is out of range"),
        ("[plc.products]\nx = 'demo'", r"plc.products.x: a recipe number is 1 to 65535"),
        ("[plc.products]\n0 = 'demo'", r"plc.products.0: a recipe number is 1 to 65535"),
        ("[plc.products]\n1 = 2", r"plc.products.1: expected a product name, got 2"),
        ("[plc.products]\n1 = 'a'\n2 = 'a'", r"plc.products: names a product under two numbers"),
        ("[camera.genicam]\ntrigger = 'line0'", r"trigger: must be 'off', 'software' or 'hard"),
    ],
)
def test_wrong_values_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "line4.toml"
    f.write_text(text + "\n")
    with pytest.raises(ConfigError, match=message) as e:
        load_config(f)
    assert "line4.toml" in str(e.value)


def test_example_and_defaults() -> None:
    cfg = load_config(Path(__file__).parents[2] / "configs" / "line-io-example.toml")
    assert cfg.reject.output == "modbus" and cfg.reject.modbus.host == "192.168.0.10"
    assert cfg.plc.products == {"1": "demo"} and cfg.camera.genicam.trigger == "hardware"
    default = load_config()
    assert default.reject.output == "none" and default.plc.host == ""


def test_a_recipe_cannot_rewire_the_station() -> None:
    for section in ("reject", "plc"):
        with pytest.raises(ConfigError, match=rf"recipe.json: \[{section}\]: the station's wir"):
            with_overlay(load_config(), {section: {"deadline_s": 1.0}}, "recipe.json")
    # The trigger is the recipe's: it is a camera setting.
    cfg = with_overlay(load_config(), {"camera": {"genicam": {"trigger": "hardware"}}}, "r.json")
    assert cfg.camera.genicam.trigger == "hardware"


def test_a_recipe_cannot_free_run_the_camera_of_a_plc_trigger(tmp_path: Path) -> None:
    """plc.trigger needs one frame per Trigger; a recipe that sets the camera's own trigger
    (or a replay rate) is refused when merged, naming the recipe."""
    f = tmp_path / "station.toml"
    f.write_text(
        "[plc]\nhost = 'plc'\ntrigger = true\n[camera]\nsource = 'genicam'\n"
        "[camera.genicam]\ntrigger = 'software'\n"
    )
    base = load_config(f)
    with pytest.raises(ConfigError, match=r"r.json: plc.trigger: needs camera.genicam.trigger"):
        with_overlay(base, {"camera": {"genicam": {"trigger": "hardware"}}}, "r.json")
