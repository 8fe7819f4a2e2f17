"""GenICam acquisition through harvesters against the simulated producer of the genicam wheel.

The `camera` tests drive the real GenTL producer `viky.cti` (three simulated devices); they skip
only when that file is missing. The tests without the marker use a stand-in node map / image
acquirer for what the simulator cannot do (software trigger, SFNC helpers, lost frame ids).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from station.camera import Camera, CameraError, GenICamCamera
from station.camera import genicam as gmod
from station.camera.genicam import (
    DeviceDescription,
    apply_features,
    discover,
    producer_files,
    select_device,
    simulator_producer,
)
from station.cli import main as cli_main
from station.config import GenICamConfig
from station.core.result import Frame

VIKY = simulator_producer()
needs_viky = pytest.mark.skipif(
    VIKY is None, reason="the genicam wheel's simulated GenTL producer (viky.cti) is not installed"
)
camera = [pytest.mark.camera, needs_viky]


def _cfg(**kw: Any) -> GenICamConfig:
    kw.setdefault("cti", [str(VIKY)])
    kw.setdefault("device", "1")
    return GenICamConfig(**kw)


def _device_ids(frames: list[Frame]) -> list[int]:
    ids = [f.device_frame_id for f in frames]
    assert all(i is not None for i in ids), "the simulator numbers its frames"
    return [int(i or 0) for i in ids]


@pytest.fixture
def cam() -> Iterator[GenICamCamera]:
    c = GenICamCamera(_cfg(features={"Width": 320, "Height": 240, "AcquisitionFrameRate": 100.0}))
    yield c
    c.close()


# -- against the simulated device ----------------------------------------------------------------
@pytest.mark.camera
@needs_viky
def test_discover_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = discover([str(VIKY)])
    assert len(devices) >= 1
    d = devices[0]
    assert d.vendor and d.model == "Viky" and d.serial == "0" and d.access == "available"
    assert Path(d.producer).resolve() == VIKY
    # The standard variable alone finds the producer too, after the configured ones.
    assert VIKY is not None
    monkeypatch.setenv("GENICAM_GENTL64_PATH", str(VIKY.parent))
    assert producer_files([]) == [VIKY]
    assert producer_files([str(VIKY)]) == [VIKY]
    with pytest.raises(CameraError, match=r"camera.genicam.cti: GenTL producer .*nope.cti"):
        producer_files(["/nope.cti"])


@pytest.mark.camera
@needs_viky
def test_open_by_serial_set_and_read_back(cam: GenICamCamera) -> None:
    with cam:
        assert cam.device is not None and cam.device.serial == "1"
        assert cam.feature("Width").value == "320"  # type: ignore[union-attr]
        assert cam.feature("Height").value == "240"  # type: ignore[union-attr]
        assert float(cam.feature("AcquisitionFrameRate").value) == 100.0  # type: ignore[union-attr]
        info = cam.info()
        assert isinstance(cam, Camera)
    assert info.kind == "genicam" and info.serial == "1" and info.model == "Viky"
    assert info.fps == 100.0 and info.extra["PixelFormat"] == "RGBa8"


@pytest.mark.camera
@needs_viky
def test_open_by_index_and_by_device_id() -> None:
    for spec, serial in (("2", "2"), ("VikyTL_DEV_red", "0"), ("", "0")):
        with GenICamCamera(_cfg(device=spec)) as c:
            assert c.device is not None and c.device.serial == serial
    with pytest.raises(CameraError, match=r"no GenICam device 'XYZ'.*found: \[0\]"):
        GenICamCamera(_cfg(device="XYZ")).open()


@pytest.mark.camera
@needs_viky
def test_stream_100_frames_stop_restart(cam: GenICamCamera) -> None:
    with cam:
        it = cam.frames()
        frames = [next(it) for _ in range(100)]
        it.close()  # stops acquisition
        assert not cam.image_acquirer.is_acquiring()
        ids = _device_ids(frames)
        assert all(f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8 for f in frames)
        assert ids == list(range(ids[0], ids[0] + 100))  # no lost frame id
        assert [f.frame_id for f in frames] == list(range(100))
        assert cam.stats().lost == 0 and cam.stats().frames == 100
        assert len(cam.stats().convert_ms) == 100
        # Restart: the device counts again from its start, still without gaps.
        again = [f for _, f in zip(range(20), cam.frames(), strict=False)]
        ids2 = _device_ids(again)
        assert ids2 == list(range(ids2[0], ids2[0] + 20))
        assert cam.stats().lost == 0


@pytest.mark.camera
@needs_viky
def test_mono8_and_destroy_reopen() -> None:
    c = GenICamCamera(_cfg(features={"PixelFormat": "Mono8", "Width": 200, "Height": 100}))
    for _ in range(2):
        with c:
            f = next(iter(c.frames()))
            assert f.image.shape == (100, 200) and f.image.dtype == np.uint8
        assert c.image_acquirer is None
    c.close()  # twice is fine


@pytest.mark.camera
@needs_viky
@pytest.mark.parametrize(
    "features,message",
    [
        ({"Nope": 1}, r"features.Nope: device .*Viky \(serial 1\) has no feature 'Nope'"),
        ({"Widht": 640}, r"no feature 'Widht' \(similar: Width\)"),
        ({"Width": 100000}, r"Width = 100000 .* out of range, allowed 100..800 step 1"),
        ({"AcquisitionFrameRate": 1000.0}, r"out of range, allowed 1..200 step 1 Hz"),
        ({"PixelFormat": "Mono16"}, r"PixelFormat = 'Mono16' .* allowed one of RGBa8, Mono8"),
        ({"Width": "wide"}, r"expected an integer in 100..800"),
        ({"PayloadSize": 8}, r"PayloadSize is read-only"),
        ({"ExposureTime": 1000.0}, r"has no feature 'ExposureTime'"),
    ],
)
def test_rejects_unknown_or_out_of_range_features(features: dict[str, Any], message: str) -> None:
    c = GenICamCamera(_cfg(features=features))
    with pytest.raises(CameraError, match=message):
        c.open()
    assert c.image_acquirer is None
    with GenICamCamera(_cfg()) as ok:  # the device was released: it opens again
        assert ok.device is not None


@pytest.mark.camera
@needs_viky
def test_software_trigger_on_a_device_without_trigger() -> None:
    with pytest.raises(CameraError, match=r"trigger = 'software'.*has no TriggerMode"):
        GenICamCamera(_cfg(trigger="software")).open()


@pytest.mark.camera
@needs_viky
def test_fetch_timeout_is_reported(cam: GenICamCamera) -> None:
    slow = GenICamCamera(_cfg(features={"AcquisitionFrameRate": 1.0}, timeout_s=0.2))
    with slow, pytest.raises(CameraError, match=r"no frame from .* within 0.2 s"):
        for _ in slow.frames():
            pass
    assert slow.stats().timeouts == 1


@pytest.mark.camera
@needs_viky
@pytest.mark.parametrize("how", ["destroy the image acquirer", "reset the harvester"])
def test_device_lost_mid_stream_then_reopen(cam: GenICamCamera, how: str) -> None:
    cam.open()
    it = cam.frames()
    next(it)

    def pull_the_plug() -> None:
        time.sleep(0.2)
        if how == "reset the harvester":
            cam.harvester.reset()
        else:
            cam.image_acquirer.destroy()

    threading.Thread(target=pull_the_plug).start()
    with pytest.raises(CameraError, match=r"GenICam device .*Viky \(serial 1\) lost: .*reconnect"):
        for _ in it:
            pass
    assert cam.image_acquirer is None
    cam.close()  # safe after a loss
    cam.open()
    frames = [f for _, f in zip(range(10), cam.frames(), strict=False)]
    ids = _device_ids(frames)
    assert ids == list(range(ids[0], ids[0] + 10)) and frames[0].image.shape == (240, 320, 3)


@pytest.mark.camera
@needs_viky
def test_close_from_another_thread_ends_the_stream_quietly(cam: GenICamCamera) -> None:
    cam.open()
    it = cam.frames()
    next(it)
    threading.Timer(0.2, cam.close).start()
    t0 = time.monotonic()
    for _ in it:  # ends without an error once closed
        pass
    assert time.monotonic() - t0 < 2.0 and cam.image_acquirer is None


@pytest.mark.camera
@needs_viky
def test_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["cameras", "--cti", str(VIKY)]) == 0
    out = capsys.readouterr().out
    assert "serial 1" in out and "Width" in out and "100..800 step 1" in out

    assert cli_main(["cameras", "--cti", str(VIKY), "--json", "--no-features"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [d["serial"] for d in listing["devices"]] == ["0", "1", "2"]

    args = ["grab", "--source", "genicam", "--cti", str(VIKY), "--n", "5", "--out"]
    assert cli_main([*args, str(tmp_path / "grab"), "--set", "PixelFormat=Mono8"]) == 0
    out = capsys.readouterr().out
    assert "saved 5 frames (400x400 uint8)" in out and "lost frames: 0" in out
    assert len(list((tmp_path / "grab").glob("*.png"))) == 5

    report = tmp_path / "bench.json"
    bench = ["bench-camera", "--cti", str(VIKY), "--seconds", "1", "--fps", "50"]
    assert cli_main([*bench, "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["configured_fps"] == 50.0 and result["lost_frames"] == 0
    assert result["frames"] >= 40 and result["convert_copy_ms"]["p50"] > 0


# -- stand-ins for what the simulator lacks ------------------------------------------------------
_KINDS = {"integer": 2, "boolean": 3, "command": 4, "float": 5, "string": 6, "enumeration": 9}


class FakeNode:
    """Just enough of a GenApi node for set_feature / describe_feature."""

    def __init__(self, nm: FakeNodeMap, name: str, kind: str, value: Any = None, **kw: Any) -> None:
        self._nm, self.name, self._value = nm, name, value
        self.node = SimpleNamespace(
            principal_interface_type=_KINDS[kind], name=name, is_feature=lambda: True
        )
        self.access = kw.get("access", 4)
        self.min, self.max, self.inc = kw.get("lo"), kw.get("hi"), kw.get("inc", 1)
        self.unit = kw.get("unit", "")
        self.entries = [
            SimpleNamespace(symbolic=c, get_access_mode=lambda: 3) for c in kw.get("choices", ())
        ]

    def get_access_mode(self) -> int:
        return self.access

    def has_inc(self) -> bool:
        return False

    def to_string(self) -> str:
        return str(self._value)

    @property
    def value(self) -> Any:
        return self._value

    @value.setter
    def value(self, v: Any) -> None:
        self._nm.log.append((self.name, v))
        self._value = v

    def execute(self) -> None:
        self._nm.log.append((self.name, "execute"))

    def is_done(self) -> bool:
        return True


class FakeNodeMap:
    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []
        self._nodes: dict[str, FakeNode] = {}

    def add(self, name: str, kind: str, value: Any = None, **kw: Any) -> FakeNodeMap:
        self._nodes[name] = FakeNode(self, name, kind, value, **kw)
        return self

    @property
    def nodes(self) -> list[FakeNode]:
        return list(self._nodes.values())

    def has_node(self, name: str) -> bool:
        return name in self._nodes

    def get_node(self, name: str) -> FakeNode:
        return self._nodes[name]

    def __getattr__(self, name: str) -> FakeNode:
        try:
            return self.__dict__["_nodes"][name]
        except KeyError:
            raise AttributeError(name) from None


def _triggerable() -> FakeNodeMap:
    nm = FakeNodeMap()
    nm.add("TriggerSelector", "enumeration", "AcquisitionStart", choices=("FrameStart",))
    nm.add("TriggerMode", "enumeration", "Off", choices=("Off", "On"))
    nm.add("TriggerSource", "enumeration", "Line1", choices=("Line1", "Software"))
    nm.add("TriggerSoftware", "command")
    nm.add("PixelFormat", "enumeration", "Mono12", choices=("Mono8", "Mono12"))
    return nm


def test_apply_features_order_and_sfnc_helpers() -> None:
    nm = _triggerable()
    nm.add("UserSetSelector", "enumeration", "Default", choices=("Default", "UserSet1"))
    nm.add("UserSetLoad", "command")
    nm.add("ExposureAuto", "enumeration", "Continuous", choices=("Off", "Continuous"))
    nm.add("ExposureTimeAbs", "float", 100.0, lo=10.0, hi=1e6, unit="us")  # pre-SFNC-2 name
    nm.add("AcquisitionFrameRateEnable", "boolean", False)
    nm.add("AcquisitionFrameRate", "float", 10.0, lo=1.0, hi=60.0, unit="Hz")
    features = {"ExposureTime": 5000.0, "AcquisitionFrameRate": 25.0, "UserSetLoad": "UserSet1"}
    apply_features(nm, features, trigger="software", device="cam")
    assert nm.log == [
        ("UserSetSelector", "UserSet1"),
        ("UserSetLoad", "execute"),
        ("TriggerSelector", "FrameStart"),
        ("TriggerMode", "On"),
        ("TriggerSource", "Software"),
        ("ExposureAuto", "Off"),
        ("ExposureTimeAbs", 5000.0),
        ("AcquisitionFrameRateEnable", True),
        ("AcquisitionFrameRate", 25.0),
    ]
    with pytest.raises(
        CameraError, match=r"ExposureTime \(as ExposureTimeAbs\) = 1.0 .* allowed 10..1000000 us"
    ):
        apply_features(nm, {"ExposureTime": 1.0}, device="cam")
    nm.add("Gain", "float", 0.0, lo=0.0, hi=24.0, access=1)
    with pytest.raises(CameraError, match="Gain is not available now"):
        apply_features(nm, {"Gain": 3.0}, device="cam")
    nm.TriggerMode.value = "On"
    nm.log.clear()
    apply_features(nm, {}, trigger="off", device="cam")  # a device left triggered is set free
    assert ("TriggerMode", "Off") in nm.log


def test_select_device_by_user_name_and_ambiguity() -> None:
    def dev(i: int, serial: str, user: str) -> DeviceDescription:
        return DeviceDescription(i, "V", "M", serial, user, f"id{i}", "GEV", "available", "")

    devices = [dev(0, "A1", "left"), dev(1, "B2", "right"), dev(2, "C3", "right")]
    assert select_device(devices, "left").serial == "A1"
    assert select_device(devices, "B2").index == 1
    assert select_device(devices, "id2").index == 2
    assert select_device(devices, "0").serial == "A1"
    with pytest.raises(CameraError, match="ambiguous"):
        select_device(devices, "right")
    with pytest.raises(CameraError, match="no GenICam device found"):
        select_device([], "")


class FakeBuffer:
    def __init__(self, ia: FakeAcquirer, frame_id: int) -> None:
        self.ia, self.frame_id = ia, frame_id
        image = (np.arange(ia.h * ia.w, dtype=np.uint16).reshape(ia.h, ia.w) + frame_id) % 4096
        self.module = SimpleNamespace(raw_buffer=image.astype("<u2").tobytes())
        comp = SimpleNamespace(
            width=ia.w, height=ia.h, data_format="Mono12", x_padding=0, data_offset=0
        )
        self.payload = SimpleNamespace(components=[comp])

    def __enter__(self) -> FakeBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.ia.queued += 1  # handed back to the producer


class FakeAcquirer:
    """Delivers one buffer per TriggerSoftware, numbered by `ids`."""

    def __init__(self, nm: FakeNodeMap, ids: list[int]) -> None:
        self.remote_device = SimpleNamespace(node_map=nm)
        self.data_streams = [SimpleNamespace(module=SimpleNamespace(num_underrun=0))]
        self.h, self.w = 20, 30
        self.ids = ids
        self.fetched = self.queued = 0
        self.num_buffers = self.min_num_buffers = 1
        self.valid, self.acquiring = True, False

    def try_fetch(self, timeout: float = 0) -> FakeBuffer | None:
        triggers = sum(1 for name, v in self.remote_device.node_map.log if v == "execute")
        if triggers <= self.fetched or self.fetched >= len(self.ids):
            time.sleep(timeout)
            return None
        self.fetched += 1
        return FakeBuffer(self, self.ids[self.fetched - 1])

    def is_valid(self) -> bool:
        return self.valid

    def is_acquiring(self) -> bool:
        return self.acquiring

    def start(self) -> None:
        self.acquiring = True

    def stop(self) -> None:
        self.acquiring = False

    def destroy(self) -> None:
        self.valid = False

    def add_callback(self, event: Any, callback: Any) -> None:
        pass


def test_software_trigger_one_frame_per_part(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("harvesters")  # GenICamCamera registers a harvesters callback
    nm = _triggerable()
    ia = FakeAcquirer(nm, ids=[1, 2, 5, 6])
    desc = DeviceDescription(0, "V", "M", "S1", "", "id0", "U3V", "available", "")
    monkeypatch.setattr(gmod._HUB, "create", lambda producers, spec: (ia, desc))
    cam = GenICamCamera(GenICamConfig(trigger="software", timeout_s=0.05))
    with cam:
        it = cam.frames()
        first = next(it)
        assert sum(v == "execute" for _, v in nm.log) == 1  # nothing fired ahead of the part
        rest = [next(it) for _ in range(3)]
        assert sum(v == "execute" for _, v in nm.log) == 4
        with pytest.raises(CameraError, match=r"no frame from V M \(serial S1\) within 0.05 s"):
            next(it)
    assert ("TriggerMode", "On") in nm.log and ("TriggerSource", "Software") in nm.log
    assert first.image.dtype == np.uint16 and first.image.shape == (20, 30)
    assert int(first.image[0, 1]) == 2 and int(first.image.max()) < 4096  # Mono12 kept as is
    assert [f.device_frame_id for f in [first, *rest]] == [1, 2, 5, 6]
    assert cam.stats().lost == 2 and cam.stats().frames == 4
    assert ia.queued == ia.fetched == 4  # every buffer went back to the producer
    assert not ia.valid  # closed
    assert ia.num_buffers == 8  # camera.genicam.buffers
