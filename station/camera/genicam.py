"""GenICam cameras (GigE Vision, USB3 Vision, ...) through harvesters and GenTL producers.

One `Harvester` serves the whole process: a GenTL producer (`.cti`) can only be opened once per
process, so a second Harvester on the same file sees no device. `Harvester.update()` destroys
every image acquirer, so the device list is only refreshed while no camera is open.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from station.camera.base import CameraContext, CameraInfo
from station.camera.pixel_formats import SUPPORTED_FORMATS, convert
from station.config import GenICamConfig
from station.core.errors import CameraError
from station.core.result import Frame

__all__ = [
    "KEY_FEATURES",
    "AcquisitionStats",
    "DeviceDescription",
    "FeatureInfo",
    "GenICamCamera",
    "apply_features",
    "describe_feature",
    "discover",
    "producer_files",
    "set_feature",
    "simulator_producer",
]

log = logging.getLogger(__name__)

_FETCH_SLICE_S = 0.05  # longest a close/destroy from another thread waits for a fetch

GENTL_PATH_VAR = "GENICAM_GENTL64_PATH"

# What `station cameras` shows and what the issue asks to configure.
KEY_FEATURES = (
    "Width",
    "Height",
    "OffsetX",
    "OffsetY",
    "PixelFormat",
    "ExposureTime",
    "Gain",
    "AcquisitionFrameRate",
    "TriggerMode",
    "TriggerSource",
    "UserSetSelector",
)

# Pre-SFNC-2 names some devices still use for the same quantity.
_ALIASES = {
    "ExposureTime": ("ExposureTimeAbs", "ExposureTimeRaw"),
    "Gain": ("GainRaw", "GainAbs"),
    "AcquisitionFrameRate": ("AcquisitionFrameRateAbs",),
}
# An explicit value only sticks once the matching automatic control is off / the limiter is on.
_AUTO_OFF = {"ExposureTime": "ExposureAuto", "Gain": "GainAuto"}
_ENABLE = {"AcquisitionFrameRate": "AcquisitionFrameRateEnable"}

_ACCESS_STATUS = {
    0: "unknown",
    1: "available",
    2: "read-only",
    3: "no access",
    4: "busy",
    5: "open (read/write)",
    6: "open (read-only)",
}
# GenApi access modes (EAccessMode): not implemented, not available, write/read only, read-write.
_NI, _NA, _WO, _RO, _RW = 0, 1, 2, 3, 4
_ACCESS_TEXT = {_NI: "not implemented", _NA: "not available", _WO: "WO", _RO: "RO", _RW: "RW"}


def simulator_producer() -> Path | None:
    """The simulated GenTL producer shipped in the `genicam` wheel (viky.cti), if installed."""
    try:
        import genicam
    except ImportError:
        return None
    path = Path(genicam.__file__).resolve().parent / "viky.cti"
    return path if path.is_file() else None


def producer_files(configured: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
    """Producer files: the configured ones first, then every .cti on GENICAM_GENTL64_PATH.

    A configured file that does not exist is an error (a typo must not silently fall back).
    """
    found: list[Path] = []
    for item in configured:
        p = Path(item).expanduser()
        if not p.is_file():
            raise CameraError(f"camera.genicam.cti: GenTL producer {p} does not exist")
        found.append(p.resolve())
    for entry in os.environ.get(GENTL_PATH_VAR, "").split(os.pathsep):
        if not entry.strip():
            continue
        p = Path(entry.strip()).expanduser()
        if p.is_dir():
            found += sorted(c.resolve() for c in p.glob("*.cti") if c.is_file())
        elif p.is_file() and p.suffix.lower() == ".cti":
            found.append(p.resolve())
    unique: list[Path] = []
    for p in found:
        if p not in unique:
            unique.append(p)
    return unique


@dataclass(frozen=True)
class DeviceDescription:
    """One device as the producers enumerate it."""

    index: int
    vendor: str
    model: str
    serial: str
    user_name: str
    device_id: str
    tl_type: str
    access: str
    producer: str

    @property
    def label(self) -> str:
        """How messages name the device."""
        name = f"{self.vendor} {self.model}".strip() or self.device_id
        who = f"serial {self.serial}" if self.serial else f"id {self.device_id}"
        if self.user_name:
            who += f", '{self.user_name}'"
        return f"{name} ({who})"


@dataclass(frozen=True)
class FeatureInfo:
    """A feature's current value and what it accepts."""

    name: str
    kind: str  # integer | float | enumeration | boolean | string | command | other
    access: str  # RW | RO | WO | not available | not implemented
    value: str = ""
    minimum: float | None = None
    maximum: float | None = None
    increment: float | None = None
    unit: str = ""
    choices: tuple[str, ...] = ()

    def allowed(self) -> str:
        """The accepted values in words, for messages and `station cameras`."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.minimum is not None and self.maximum is not None:
            text = f"{_num(self.minimum)}..{_num(self.maximum)}"
            if self.increment:
                text += f" step {_num(self.increment)}"
            return text + (f" {self.unit}" if self.unit else "")
        if self.kind == "boolean":
            return "true or false"
        return ""


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


@dataclass
class AcquisitionStats:
    """Counters of one open session: delivered, lost (device frame-id gaps), incomplete."""

    frames: int = 0
    lost: int = 0  # frames the device numbered but never delivered (gaps in device frame ids)
    incomplete: int = 0  # buffers the producer delivered incomplete (harvesters requeues them)
    underrun: int = 0  # producer's count of frames it had no free buffer for
    timeouts: int = 0
    convert_ms: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))

    def snapshot(self) -> AcquisitionStats:
        """A copy that later frames do not change."""
        return AcquisitionStats(
            self.frames,
            self.lost,
            self.incomplete,
            self.underrun,
            self.timeouts,
            deque(self.convert_ms, maxlen=self.convert_ms.maxlen),
        )


# -- GenApi helpers ----------------------------------------------------------------------------
def _feature_names(node_map: Any) -> list[str]:
    names: list[str] = []
    try:
        for n in node_map.nodes:
            try:
                if n.node.is_feature():
                    names.append(n.node.name)
            except Exception:  # a broken node must not hide the others
                continue
    except Exception:
        pass
    return names


def _resolve(node_map: Any, name: str) -> tuple[str, Any] | None:
    """The node for `name` (or its pre-SFNC-2 alias) if the device implements it."""
    for candidate in (name, *_ALIASES.get(name, ())):
        try:
            if not node_map.has_node(candidate):
                continue
            node = node_map.get_node(candidate)
        except Exception:  # GenApi raises LogicalErrorException for unknown nodes
            continue
        try:
            if node.get_access_mode() != _NI:
                return candidate, node
        except Exception:
            continue
    return None


# GenApi EInterfaceType values: the node's principal interface says how to read and set it.
_INTERFACE_KINDS = {
    2: "integer",
    3: "boolean",
    4: "command",
    5: "float",
    6: "string",
    9: "enumeration",
}


def _kind(node: Any) -> str:
    try:
        return _INTERFACE_KINDS.get(int(node.node.principal_interface_type), "other")
    except Exception:
        return "other"


def _choices(node: Any) -> tuple[str, ...]:
    out = []
    for entry in node.entries:
        try:
            if entry.get_access_mode() in (_RO, _RW):
                out.append(entry.symbolic)
        except Exception:
            continue
    return tuple(out)


def _info(name: str, node: Any) -> FeatureInfo:
    kind = _kind(node)
    access = node.get_access_mode()
    info: dict[str, Any] = {"name": name, "kind": kind, "access": _ACCESS_TEXT.get(access, "?")}
    if access in (_RO, _RW) and kind != "command":
        try:
            info["value"] = node.to_string()
        except Exception as exc:  # shown, not fatal
            info["value"] = f"<unreadable: {type(exc).__name__}>"
    try:
        if kind in ("integer", "float"):
            info["minimum"], info["maximum"] = float(node.min), float(node.max)
            try:
                if kind == "integer" or node.has_inc():
                    info["increment"] = float(node.inc)
            except Exception:
                pass
            info["unit"] = str(node.unit or "")
        elif kind == "enumeration":
            info["choices"] = _choices(node)
    except Exception:  # ranges of an unavailable node are not readable
        pass
    return FeatureInfo(**info)


def describe_feature(node_map: Any, name: str) -> FeatureInfo | None:
    """Current value, access and accepted values of a feature; None if the device lacks it."""
    found = _resolve(node_map, name)
    return _info(found[0], found[1]) if found else None


def _missing(node_map: Any, name: str, where: str, device: str) -> CameraError:
    close = difflib.get_close_matches(name, _feature_names(node_map), n=3)
    hint = f" (similar: {', '.join(close)})" if close else ""
    return CameraError(f"{where}: device {device} has no feature '{name}'{hint}")


def set_feature(node_map: Any, name: str, value: Any, *, where: str = "", device: str = "") -> None:
    """Set one feature, checking type, access and range first so the message says what fits."""
    where = where or f"camera.genicam.features.{name}"
    found = _resolve(node_map, name)
    if found is None:
        raise _missing(node_map, name, where, device)
    real, node = found
    info = _info(real, node)
    label = name if real == name else f"{name} (as {real})"
    kind = info.kind
    if kind != "command" and info.access != "RW" and info.access != "WO":
        why = (
            "is read-only"
            if info.access == "RO"
            else "is not available now (it may depend on another feature, e.g. a selector, "
            "or be locked while streaming)"
        )
        raise CameraError(f"{where}: {label} {why} on device {device}")
    bad = f"{where}: {label} = {value!r} is not accepted by device {device}"
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise CameraError(f"{bad}: expected an integer in {info.allowed()}")
        lo, hi, inc = info.minimum, info.maximum, info.increment or 1
        if lo is not None and hi is not None and (not lo <= value <= hi or (value - lo) % inc):
            raise CameraError(f"{bad}: out of range, allowed {info.allowed()}")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CameraError(f"{bad}: expected a number in {info.allowed()}")
        lo, hi = info.minimum, info.maximum
        if lo is not None and hi is not None and not lo <= float(value) <= hi:
            raise CameraError(f"{bad}: out of range, allowed {info.allowed()}")
    elif kind == "enumeration":
        if not isinstance(value, str) or value not in info.choices:
            raise CameraError(f"{bad}: allowed {info.allowed()}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise CameraError(f"{bad}: expected true or false")
    elif kind == "command" and value is not True:
        raise CameraError(f"{bad}: {label} is a command; set it to true to execute it")
    try:
        if kind == "command":
            node.execute()
            deadline = time.monotonic() + 5.0
            while not node.is_done() and time.monotonic() < deadline:
                time.sleep(0.01)
        elif kind in ("integer", "float", "enumeration", "boolean", "string"):
            node.value = float(value) if kind == "float" else value
        else:
            node.from_string(str(value))
    except Exception as exc:
        # The device has the last word (e.g. a range that depends on another feature).
        raise CameraError(f"{bad}: {_first_line(exc)}; allowed {info.allowed()}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.split(" : ")[0]  # GenApi appends "...thrown in node X while calling Y (file ...)"


def _try_set(node_map: Any, name: str, value: Any) -> None:
    """Set a helper feature (auto off, rate enable) when the device has it; never fatal."""
    found = _resolve(node_map, name)
    if found is None:
        return
    _, node = found
    try:
        if node.get_access_mode() == _RW:
            if (
                isinstance(value, str)
                and _kind(node) == "enumeration"
                and value not in _choices(node)
            ):
                return
            node.value = value
    except Exception as exc:  # the main feature's own check reports problems
        log.debug("could not set %s=%r: %s", name, value, exc)


def apply_features(
    node_map: Any,
    features: Mapping[str, Any],
    *,
    trigger: str = "off",
    device: str = "",
    trigger_source: str = "Line0",
) -> None:
    """Apply the configured trigger mode and SFNC features in order (UserSetLoad first)."""
    pending = dict(features)
    if "UserSetLoad" in pending:
        # Loading a user set overwrites everything else, so it goes before the other features.
        which = pending.pop("UserSetLoad")
        if isinstance(which, str):
            where = "camera.genicam.features.UserSetLoad"
            set_feature(node_map, "UserSetSelector", which, where=where, device=device)
            which = True
        set_feature(node_map, "UserSetLoad", which, device=device)
    _configure_trigger(node_map, trigger, device, trigger_source)
    for name, value in pending.items():
        if name in _AUTO_OFF:
            _try_set(node_map, _AUTO_OFF[name], "Off")
        if name in _ENABLE:
            _try_set(node_map, _ENABLE[name], True)
        set_feature(node_map, name, value, device=device)


def _configure_trigger(node_map: Any, trigger: str, device: str, source: str = "Line0") -> None:
    where = "camera.genicam.trigger"
    if trigger in ("hardware", "software"):
        needed, so = {
            "hardware": (
                ("TriggerMode", "TriggerSource"),
                "cannot wait for a trigger input (set trigger = 'off' or 'software')",
            ),
            "software": (
                ("TriggerMode", "TriggerSource", "TriggerSoftware"),
                "can only run free (set trigger = 'off')",
            ),
        }[trigger]
        for name in needed:
            if _resolve(node_map, name) is None:
                raise CameraError(
                    f"{where} = '{trigger}': device {device} has no {name} feature, so it {so}"
                )
        _try_set(node_map, "TriggerSelector", "FrameStart")
        set_feature(node_map, "TriggerMode", "On", where=where, device=device)
        if trigger == "hardware":
            set_feature(
                node_map, "TriggerSource", source,
                where="camera.genicam.trigger_source", device=device,
            )  # fmt: skip
            _try_set(node_map, "TriggerActivation", "RisingEdge")
        else:
            set_feature(node_map, "TriggerSource", "Software", where=where, device=device)
    elif trigger == "off":
        _try_set(node_map, "TriggerSelector", "FrameStart")
        mode = describe_feature(node_map, "TriggerMode")
        if mode is not None and mode.value != "Off":  # a device left in trigger mode never streams
            set_feature(node_map, "TriggerMode", "Off", where=where, device=device)
    else:
        raise CameraError(f"{where}: '{trigger}' is not 'off', 'software' or 'hardware'")


# -- the process-wide harvester -----------------------------------------------------------------
def _producer_of(info: Any) -> str:
    try:
        return str(info.parent.parent.module.parent.path_name)
    except Exception:
        return ""


def _from_producers(info: Any, producers: Sequence[Path]) -> bool:
    """Whether a device comes from one of `producers` (unknown origin counts as yes)."""
    origin = _producer_of(info)
    if not origin:
        return True
    try:
        return Path(origin).resolve() in {p.resolve() for p in producers}
    except OSError:
        return True


def _describe(index: int, info: Any) -> DeviceDescription:
    def get(attr: str) -> str:
        try:
            v = getattr(info, attr)
        except Exception:  # producers raise NotAvailable for optional fields
            return ""
        return "" if v is None else str(v)

    try:
        status = int(info.access_status)
    except Exception:
        status = 0
    return DeviceDescription(
        index=index,
        vendor=get("vendor"),
        model=get("model"),
        serial=get("serial_number"),
        user_name=get("user_defined_name"),
        device_id=get("id_"),
        tl_type=get("tl_type"),
        access=_ACCESS_STATUS.get(status, str(status)),
        producer=_producer_of(info),
    )


def select_device(devices: Sequence[DeviceDescription], spec: str) -> DeviceDescription:
    """Pick a device by serial number, user-defined name, device id, or index ('' = first)."""
    if not devices:
        raise CameraError("no GenICam device found")
    spec = spec.strip()
    if not spec:
        return devices[0]
    for key in ("serial", "user_name", "device_id"):
        hits = [d for d in devices if getattr(d, key) == spec]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise CameraError(f"device '{spec}' is ambiguous: {', '.join(d.label for d in hits)}")
    if spec.isdigit() and int(spec) < len(devices):
        return devices[int(spec)]
    listing = "; ".join(f"[{d.index}] {d.label}" for d in devices)
    raise CameraError(
        f"no GenICam device '{spec}' (by serial, user name, id or index); found: {listing}"
    )


def _pick(devices: Sequence[DeviceDescription], spec: str | int) -> DeviceDescription:
    if isinstance(spec, int):
        if not 0 <= spec < len(devices):
            raise CameraError(f"no GenICam device at index {spec} ({len(devices)} found)")
        return devices[spec]
    return select_device(devices, spec)


class _Hub:
    """The one Harvester of this process, shared by discovery and every open camera."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.harvester: Any = None

    def _new_harvester(self) -> Any:
        from harvesters.core import Harvester, ParameterKey, ParameterSet

        hv_log = logging.getLogger("station.camera.harvesters")
        if hv_log.level == logging.NOTSET and not logging.getLogger().isEnabledFor(logging.DEBUG):
            # harvesters logs a traceback for every loss and timeout we already report as a
            # CameraError, and counts we keep ourselves; show it only when debugging.
            hv_log.setLevel(logging.CRITICAL)
        return Harvester(config=ParameterSet({ParameterKey.LOGGER: hv_log}))

    def live(self) -> bool:
        """Whether any image acquirer of this process is still valid."""
        h = self.harvester
        if h is None:
            return False
        return any(_valid(ia) for ia in list(h.image_acquirers))

    def devices(self, producers: Sequence[Path], *, refresh: bool = False) -> list[Any]:
        """DeviceInfo objects from these producers, refreshing the list when that is safe."""
        if not producers:
            raise CameraError(
                "no GenTL producer: list .cti files in camera.genicam.cti or set "
                f"{GENTL_PATH_VAR} to the folder of your camera vendor's producer"
            )
        with self.lock:
            if self.harvester is None:
                self.harvester = self._new_harvester()
            h = self.harvester
            wanted = [str(p) for p in producers]
            missing = [p for p in wanted if p not in h.files]
            stale = missing or refresh or not h.device_info_list
            if stale and not self.live():
                # Also the way back after someone reset the harvester: files are gone then.
                for p in missing:
                    h.add_file(p)
                h.update()
            elif missing:
                raise CameraError(
                    f"cannot load GenTL producer {missing[0]} while a camera is open in this "
                    "process (loading a producer closes every open camera)"
                )
            return [d for d in h.device_info_list if _from_producers(d, producers)]

    def create(self, producers: Sequence[Path], spec: str | int) -> tuple[Any, DeviceDescription]:
        """Open the device `spec` names (an int: index in these producers' list)."""
        with self.lock:
            infos = self.devices(producers)
            descs = [_describe(i, d) for i, d in enumerate(infos)]
            try:
                chosen = _pick(descs, spec)
            except CameraError:
                if self.live():
                    raise
                infos = self.devices(producers, refresh=True)  # maybe plugged in since
                descs = [_describe(i, d) for i, d in enumerate(infos)]
                if not descs:
                    raise CameraError(
                        "no GenICam device found by "
                        + ", ".join(p.name for p in producers)
                        + " (check power, cable, network settings)"
                    ) from None
                chosen = _pick(descs, spec)
            restore = None
            if threading.current_thread() is threading.main_thread():
                # harvesters installs a SIGINT handler that destroys the acquirer instead of
                # raising KeyboardInterrupt; keep Ctrl-C meaning "stop" for the CLI.
                restore = signal.getsignal(signal.SIGINT)
            try:
                ia = self.harvester.create(infos[chosen.index])
            except Exception as exc:  # GenTL raises its own hierarchy
                raise CameraError(
                    f"cannot open {chosen.label} (status: {chosen.access}): {_first_line(exc)}"
                ) from None
            finally:
                if restore is not None:
                    signal.signal(signal.SIGINT, restore)
            return ia, chosen

    def reset(self) -> None:
        """Release every acquirer and producer (tests, shutdown)."""
        with self.lock:
            if self.harvester is not None:
                self.harvester.reset()


_HUB = _Hub()


def _valid(ia: Any) -> bool:
    try:
        return bool(ia.is_valid())
    except Exception:
        return False


def discover(
    producers: Sequence[str | os.PathLike[str]] | None = None, *, refresh: bool = True
) -> list[DeviceDescription]:
    """Devices of the given producers (default: GENICAM_GENTL64_PATH), without opening them."""
    files = producer_files(producers or ())
    infos = _HUB.devices(files, refresh=refresh)
    return [_describe(i, d) for i, d in enumerate(infos)]


def read_device_features(
    producers: Sequence[str | os.PathLike[str]],
    device: str | int,
    names: Sequence[str] = KEY_FEATURES,
) -> list[FeatureInfo]:
    """Open a device briefly and read the given features (those it lacks are left out).

    `device` is a serial / user name / id / index string, or an int index into the list of
    devices these producers enumerate.
    """
    ia, _ = _HUB.create(producer_files(producers), device)
    try:
        nm = ia.remote_device.node_map
        return [f for f in (describe_feature(nm, n) for n in names) if f is not None]
    finally:
        _destroy(ia)


# -- the camera ---------------------------------------------------------------------------------
class GenICamCamera(CameraContext):
    """A GenICam device through harvesters, configured from `[camera.genicam]`.

    `frames()` starts acquisition and stops it when the iterator is closed or dropped; with
    `trigger = "software"` every `next()` fires one TriggerSoftware and returns that frame (one
    frame per part). Each buffer is converted and copied while held and handed straight back to
    the producer. A timeout or a lost device raises CameraError; `open()` reconnects after a loss.
    """

    kind = "genicam"

    def __init__(
        self,
        cfg: GenICamConfig | None = None,
        *,
        device: str | None = None,
        producers: Sequence[str | os.PathLike[str]] = (),
    ) -> None:
        self.cfg = cfg or GenICamConfig()
        self.device_spec = self.cfg.device if device is None else device
        self._extra_producers = list(producers)
        self._lock = threading.RLock()  # open / close / reconnect
        self._io_lock = threading.RLock()  # buffer access vs. destroy/stop from any thread
        self._ia: Any = None
        self._desc: DeviceDescription | None = None
        self._closing = False
        self._frame_id = 0
        self._last_device_id: int | None = None
        self._stats = AcquisitionStats()
        self._underrun_base = 0

    # -- exposed for the pipeline and tests ------------------------------------------------------
    @property
    def harvester(self) -> Any:
        """The process-wide harvesters.core.Harvester (shared by every GenICam camera)."""
        return _HUB.harvester

    @property
    def image_acquirer(self) -> Any:
        """The harvesters ImageAcquirer while open, else None."""
        return self._ia

    @property
    def device(self) -> DeviceDescription | None:
        """The opened device's description."""
        return self._desc

    @property
    def node_map(self) -> Any:
        """The remote device's GenApi node map (CameraError when not open)."""
        ia = self._ia
        if ia is None or not _valid(ia):
            raise CameraError("GenICam camera is not open")
        return ia.remote_device.node_map

    def stats(self) -> AcquisitionStats:
        """Counters since open: frames, lost, incomplete, underrun, timeouts, convert times."""
        snap = self._stats.snapshot()
        snap.underrun = self._underrun() + self._underrun_base
        return snap

    def feature(self, name: str) -> FeatureInfo | None:
        """Current value and range of one feature, None if the device lacks it."""
        return describe_feature(self.node_map, name)

    def set_feature(self, name: str, value: Any) -> None:
        """Set one feature now (checked like the configured ones); not while streaming."""
        set_feature(self.node_map, name, value, where=name, device=self._label())

    # -- Camera protocol ---------------------------------------------------------------------
    def open(self) -> None:
        """Find, open and configure the device; idempotent; reconnects after a loss."""
        with self._lock:
            if self._ia is not None and _valid(self._ia):
                return
            self._release()  # a dead acquirer left by a loss
            producers = producer_files([*self.cfg.cti, *self._extra_producers])
            ia, desc = _HUB.create(producers, self.device_spec)
            _guard(ia, self._io_lock)
            try:
                self._configure(ia, desc)
            except BaseException:
                _destroy(ia)
                raise
            self._ia, self._desc = ia, desc
            self._closing = False
            self._frame_id = 0
            self._stats = AcquisitionStats()
            self._underrun_base = 0
            log.info("opened %s", desc.label)

    def close(self) -> None:
        """Stop acquisition and release the device; safe twice, after a loss, from any thread."""
        self._closing = True
        with self._lock:
            self._release()

    def frames(self) -> Generator[Frame, None, None]:
        """Yield converted frames; CameraError on timeout or loss (see the class doc)."""
        self.open()
        ia = self._ia
        self._start(ia)
        try:
            while not self._closing:
                if self.cfg.trigger == "software":
                    self._fire(ia)
                frame = self._fetch(ia)
                if frame is None:
                    return
                yield frame
        finally:
            self._stop(ia)

    def info(self) -> CameraInfo:
        """Vendor, model, serial, rate and image format of the opened device."""
        d = self._desc
        extra: dict[str, str] = {"trigger": self.cfg.trigger}
        fps = None
        if d is not None:
            extra["producer"] = d.producer
            extra["device_id"] = d.device_id
        ia = self._ia
        if ia is not None and _valid(ia):
            nm = ia.remote_device.node_map
            for name in ("Width", "Height", "PixelFormat"):
                f = describe_feature(nm, name)
                if f is not None:
                    extra[name] = f.value
            rate = describe_feature(nm, "AcquisitionFrameRate")
            if rate is not None and rate.value:
                with contextlib.suppress(ValueError):
                    fps = float(rate.value)
        return CameraInfo(
            kind=self.kind,
            vendor=d.vendor if d else "",
            model=d.model if d else "",
            serial=d.serial if d else "",
            user_name=d.user_name if d else "",
            fps=fps,
            extra=extra,
        )

    # -- internals -----------------------------------------------------------------------------
    def _label(self) -> str:
        return self._desc.label if self._desc else f"'{self.device_spec or 'first found'}'"

    def _configure(self, ia: Any, desc: DeviceDescription) -> None:
        nm = ia.remote_device.node_map
        wanted = max(int(self.cfg.buffers), 1)
        try:
            ia.num_buffers = max(wanted, int(ia.min_num_buffers))
        except (ValueError, AttributeError) as exc:
            log.debug("keeping the producer's buffer count: %s", exc)
        apply_features(
            nm, self.cfg.features, trigger=self.cfg.trigger, device=desc.label,
            trigger_source=self.cfg.trigger_source,
        )  # fmt: skip
        pf = describe_feature(nm, "PixelFormat")
        if pf is not None and pf.value and pf.value not in SUPPORTED_FORMATS:
            usable = [c for c in pf.choices if c in SUPPORTED_FORMATS]
            raise CameraError(
                f"device {desc.label} delivers PixelFormat {pf.value}, which the station cannot "
                f"convert; set camera.genicam.features.PixelFormat to one of {', '.join(usable)}"
            )
        from harvesters.core import Callback, ImageAcquirer

        stats_owner = self

        class _Incomplete(Callback):
            def emit(self, context: Any = None) -> None:
                stats_owner._stats.incomplete += 1

        ia.add_callback(ImageAcquirer.Events.INCOMPLETE_BUFFER, _Incomplete())

    def _underrun(self) -> int:
        with self._io_lock:
            ia = self._ia
            if ia is None or not _valid(ia):
                return 0
            try:
                return int(ia.data_streams[0].module.num_underrun)
            except Exception:  # optional in GenTL
                return 0

    def _start(self, ia: Any) -> None:
        self._last_device_id = None  # device counters restart with each acquisition
        failure = ""
        with self._io_lock:
            try:
                if not _valid(ia):
                    failure = "its image acquirer was destroyed"
                elif not ia.is_acquiring():
                    ia.start()
            except Exception as exc:
                failure = f"cannot start acquisition: {_first_line(exc)}"
        if failure:
            raise self._lost(failure)

    def _stop(self, ia: Any) -> None:
        if self._closing or ia is not self._ia or not _valid(ia):
            return
        self._underrun_base += self._underrun()
        with self._io_lock:
            try:
                ia.stop()
            except Exception as exc:  # stopping a half-dead device is best effort
                log.debug("stop failed on %s: %s", self._label(), exc)

    def _fire(self, ia: Any) -> None:
        failure = ""
        with self._io_lock:
            if self._closing:
                return
            try:
                if not _valid(ia):
                    failure = "its image acquirer was destroyed"
                else:
                    ia.remote_device.node_map.TriggerSoftware.execute()
            except Exception as exc:
                failure = f"TriggerSoftware failed: {_first_line(exc)}"
        if failure and not self._closing:
            raise self._lost(failure)

    def _fetch(self, ia: Any) -> Frame | None:
        """Wait for the next complete buffer, convert and copy it, and hand the buffer back."""
        timeout = self.cfg.timeout_s
        # On a hardware trigger the parts set the pace: a quiet line is no lost camera (a lost
        # one shows as a failed fetch or a destroyed acquirer).
        hardware = self.cfg.trigger == "hardware"
        deadline = time.monotonic() + timeout if timeout > 0 and not hardware else None
        while True:
            failure = ""
            got = False
            # Short slices under the I/O lock: a destroy or stop from another thread (ours or
            # anyone's, see _guard) waits for the slice instead of freeing buffers under us.
            with self._io_lock:
                if self._closing:
                    return None
                if not _valid(ia):
                    failure = "its image acquirer was destroyed"
                elif not ia.is_acquiring():
                    failure = "acquisition was stopped from outside the station"
                else:
                    try:
                        buffer = ia.try_fetch(timeout=_FETCH_SLICE_S)
                        if buffer is not None:
                            with buffer:  # queued back to the producer on exit
                                received = time.time()
                                t0 = time.perf_counter()
                                image, device_id = self._convert(buffer)
                                self._stats.convert_ms.append((time.perf_counter() - t0) * 1e3)
                            got = True
                    except CameraError:
                        raise
                    except Exception as exc:  # GenTL/GenApi/harvesters all mean "lost" here
                        failure = _first_line(exc)
            if failure:
                if self._closing:
                    return None
                raise self._lost(failure)  # outside the I/O lock: _lost takes the open lock
            if got:
                break
            if deadline is not None and time.monotonic() > deadline:
                self._stats.timeouts += 1
                hint = (
                    "no TriggerSoftware answer: check TriggerSelector/Source"
                    if self.cfg.trigger == "software"
                    else "check the frame rate, exposure time and a hardware trigger left on"
                )
                raise CameraError(
                    f"no frame from {self._label()} within {timeout:g} s "
                    f"(camera.genicam.timeout_s; {hint})"
                )
        if device_id is not None:
            last = self._last_device_id
            if last is not None and device_id > last + 1:
                self._stats.lost += device_id - last - 1
            self._last_device_id = device_id
        self._stats.frames += 1
        frame = Frame(
            image=image,
            timestamp=received,
            frame_id=self._frame_id,
            source=f"genicam:{self._desc.serial or self._desc.device_id}" if self._desc else "",
            device_frame_id=device_id,
        )
        self._frame_id += 1
        return frame

    def _convert(self, buffer: Any) -> tuple[np.ndarray, int | None]:
        """Copy the image out of the held buffer in the engine's form."""
        payload = buffer.payload
        comps = payload.components if payload is not None else []
        comp = comps[0] if comps else None
        if comp is None:
            raise CameraError(
                f"{self._label()} delivered a buffer without a 2D image this station can read"
            )
        try:
            device_id: int | None = int(buffer.frame_id)
        except Exception:  # frame ids are optional in GenTL
            device_id = None
        raw = np.frombuffer(buffer.module.raw_buffer, dtype=np.uint8)[comp.data_offset :]
        image = convert(raw, comp.width, comp.height, comp.data_format, padding_x=comp.x_padding)
        return image, device_id

    def _lost(self, why: str) -> CameraError:
        """Release what is left of the device and describe the loss."""
        label = self._label()
        with self._lock:
            self._release()
        return CameraError(f"GenICam device {label} lost: {why}; open() again to reconnect")

    def _release(self) -> None:
        ia, self._ia = self._ia, None
        if ia is not None:
            _destroy(ia)


def _guard(ia: Any, io_lock: threading.RLock) -> None:
    """Make the acquirer's destroy() and stop() wait for a fetch in progress, whoever calls them.

    harvesters frees the announced buffers in both; doing that while another thread builds or
    converts a buffer crashes the process (seen with reset() of the harvester from a thread).
    """
    for name in ("destroy", "stop"):
        original = getattr(ia, name)

        def guarded(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            if not _valid(ia):
                return _original(*args, **kwargs)  # a no-op then; never wait on a dead one
            with io_lock:
                return _original(*args, **kwargs)

        setattr(ia, name, guarded)


def _destroy(ia: Any) -> None:
    try:
        if _valid(ia):
            ia.stop()
            ia.destroy()
    except Exception as exc:  # the device may already be gone
        log.debug("releasing the image acquirer failed: %s", exc)
    h = _HUB.harvester
    if h is not None and ia in h.image_acquirers:
        h.image_acquirers.remove(ia)  # harvesters keeps destroyed ones until reset()
