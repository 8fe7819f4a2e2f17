"""Typed configuration read from TOML files; every error names the file, the key and the reason.

A config file only lists what it changes: anything absent keeps the default below. Unknown keys
are errors (a typo must not silently fall back to a default on a production line).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from station.core.compat import tomllib
from station.core.errors import ConfigError

T = TypeVar("T")

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.toml"

# Backbones a model may name (station.model.backbones.BACKBONES; a test keeps the two equal: the
# config layer sits below the model and cannot import it).
BACKBONE_NAMES = (
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "resnet18",
    "resnet50",
    "wide_resnet50_2",
)

# Nearest-neighbour search methods (station.model.search, which reads them from here), and the
# bank size from which `auto` leaves exact search for HNSW: measured on magnetic_tile's real
# features, exact search over 5,000 rows cost 0.84x the backbone and over 10,000 rows 1.6x.
SEARCH_METHODS = ("auto", "exact", "hnsw", "ivf", "graph")
POSITION_NORM_MODES = ("auto", "on", "off")
# model.exposure: per-image gain ("auto"), none ("fixed"), or fit picks one from the training
# images' brightness ("choose"; station.model.preprocess.choose_exposure)
EXPOSURE_MODES = ("choose", "fixed", "auto")
SEARCH_EXACT_BELOW = 5000


@dataclass(frozen=True)
class Range:
    """The values a number may take: lo..hi, `lo` itself excluded when `above`."""

    lo: float
    hi: float
    above: bool = False  # lo < value (else lo <= value)

    def holds(self, value: float) -> bool:
        low_ok = value > self.lo if self.above else value >= self.lo
        return low_ok and value <= self.hi

    def text(self) -> str:
        low = f"above {self.lo:g}" if self.above else f"at least {self.lo:g}"
        return f"{low} and at most {self.hi:g}"


def num(default: T, lo: float, hi: float, *, above: bool = False) -> T:
    """A numeric setting with its range (checked for every file; a test wants one on each)."""
    return field(default=default, metadata={"range": Range(lo, hi, above)})


@dataclass(frozen=True)
class ReplayConfig:
    path: str = ""  # folder or video; empty = the demo product in the data directory
    loop: bool = True
    fps: float = num(2.0, 0, 1000)  # frames per second; 0 = as fast as the consumer takes them
    shuffle: bool = False  # interleave good and defective parts (seeded) instead of sorted order


@dataclass(frozen=True)
class GenICamConfig:
    cti: list[str] = field(default_factory=list)  # producer files, before GENICAM_GENTL64_PATH
    device: str = ""  # serial number, user-defined name, or index; empty = first found
    # fetch timeout; a timeout is reported as a CameraError
    timeout_s: float = num(2.0, 0, 600, above=True)
    # "off" (free running), "software" (one frame per part, fired by the station: with
    # plc.trigger one per PLC trigger) or "hardware" (the camera waits for an edge on
    # `trigger_source`, e.g. the PLC's or a light barrier's signal wired to Line0)
    trigger: str = "off"
    trigger_source: str = "Line0"  # the camera's input line for trigger = "hardware"
    features: dict[str, Any] = field(
        default_factory=dict
    )  # SFNC feature -> value, applied in order
    # driver buffers: more ride out consumer hiccups; each holds one payload
    buffers: int = num(8, 1, 256)


@dataclass(frozen=True)
class UVCConfig:
    index: int = num(0, 0, 63)
    width: int = num(0, 0, 16384)  # 0 = the camera's
    height: int = num(0, 0, 16384)


@dataclass(frozen=True)
class CameraConfig:
    source: str = "replay"  # replay | genicam | uvc
    # Frames above this many megapixels are refused before they are decoded, inspected or
    # archived (an 8000x8000 image would take gigabytes on its way through the line).
    max_megapixels: float = num(40.0, 0.01, 1000)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    genicam: GenICamConfig = field(default_factory=GenICamConfig)
    uvc: UVCConfig = field(default_factory=UVCConfig)


@dataclass(frozen=True)
class ModelConfig:
    product: str = "demo"  # name of the product whose current model the line uses
    backbone: str = "efficientnet_lite0"
    weights: str = ""  # state-dict file; required for resnet18/resnet50/wide_resnet50_2
    layers: list[str] = field(default_factory=lambda: ["stride8", "stride16"])
    # long side of the network input (aspect kept, padded to square)
    image_size: int = num(320, 32, 4096)
    tile: bool = True  # parts longer than 2:1 are cut into overlapping square tiles
    # 0: fit each part to image_size; > 0: fixed scale, tiles cover the part
    scale: float = num(0.0, 0, 16)
    # with scale > 0: at most this many windows a part (bigger ones shrink)
    max_tiles: int = num(0, 0, 4096)
    # "auto": per-image gain cancels exposure/illumination changes; "fixed"; "choose" = fit
    # picks "auto" when the training images' brightness varies (station.model.preprocess)
    exposure: str = "choose"
    aggregation: int = num(3, 1, 15)  # local neighbourhood (p x p) averaged around each patch
    # channel reduction target; 0 = keep the concatenated channels
    feature_dim: int = num(0, 0, 65536)
    # > 0 adds local brightness as a feature (uneven surfaces)
    intensity_weight: float = num(0.0, 0, 100)
    coreset_ratio: float = num(0.1, 0, 1, above=True)
    # random projection size for the greedy k-center selection
    coreset_projection: int = num(128, 0, 4096)
    max_bank: int = num(40000, 1, 10_000_000)  # hard cap on the memory bank, whatever the ratio
    # b in the paper's score reweighting (used when score_top = 0)
    reweight_neighbors: int = num(9, 1, 1000)
    # image score = mean of the top 1 % of patch scores; 0 = the max
    score_top: float = num(0.01, 0, 0.999)
    # Per-position normalisation of patch distances (station.model.position): each location's
    # distance less the held-back good parts' mean distance there. "auto" = on when every
    # training image has one size (a fixtured part: location means the same place on every
    # part) and enough parts are held back; "on" refuses sets of mixed sizes; "off".
    position_norm: str = "auto"
    # A small discriminator (64 hidden units) over the patch features, trained at fit on
    # synthetic defects drawn into good parts (station.model.discriminator): each patch's
    # distance gains this many standard deviations of the good parts' distances times its
    # centred output. 0 = off.
    discriminator_weight: float = num(0.25, 0, 10)
    blur_sigma: float = num(4.0, 0, 64)  # Gaussian smoothing of the anomaly map, in input pixels
    runtime: str = "onnx"  # torch | onnx | tensorrt
    # Nearest-neighbour search (station.model.search): "auto" = exact below search_exact_below
    # bank rows, HNSW above; "exact", "hnsw", "ivf" (faiss IVF-flat), or "graph" (the ONNX kNN
    # graph on ONNX Runtime, exact). The search_* numbers: 0 = chosen from the bank size.
    search: str = "auto"
    search_exact_below: int = num(SEARCH_EXACT_BELOW, 0, 1_000_000_000)
    search_hnsw_m: int = num(0, 0, 256)  # HNSW links per node
    search_hnsw_ef: int = num(0, 0, 4096)  # HNSW beam width at search (efSearch)
    search_ivf_nprobe: int = num(0, 0, 65536)  # IVF cells scanned per query
    # Signed models (station.model.signing): the key new versions are signed with (a plant's
    # PEM file; empty = this station's own key), the folder of trusted public keys (empty =
    # <data>/trust), and whether unsigned models run (an admin's choice, never a recipe's).
    signing_key: str = ""
    trust_dir: str = ""
    allow_unsigned: bool = False
    threads: int = num(0, 0, 256)  # intra-op threads for torch / onnxruntime; 0 = all cores
    # `station fit --auto`: a recipe whose p95 time per part on this machine is over this is
    # not chosen (the line's budget: 500 ms a board on a Jetson Orin Nano)
    latency_budget_ms: float = num(500.0, 1, 600_000)
    seed: int = num(0, 0, 2**32 - 1)


@dataclass(frozen=True)
class InspectionConfig:
    # frames waiting for the model; the oldest is dropped when full
    queue_size: int = num(4, 1, 1000)
    target_fnr: float = num(0.005, 0, 0.999)


@dataclass(frozen=True)
class RecordsConfig:
    data_dir: str = ""  # empty = STATION_DATA_DIR, else the platform's user data folder
    # archive one OK image in N, 0 = none (every NOK image is archived)
    ok_sample_every: int = num(50, 0, 1_000_000)
    retention_days: int = num(90, 1, 36500)
    disk_budget_mb: int = num(2048, 1, 100_000_000)
    shift_hours: list[int] = field(default_factory=lambda: [6, 14, 22])  # shift start hours
    # durable overflow for results the database cannot take right now
    # When results cannot be recorded (the database not writable, the spool full): "stop" the
    # line in the failed state (a headless run exits non-zero), or "keep" inspecting with an
    # alarm that counts the results at risk.
    on_failure: str = "stop"
    spool_mb: float = num(64.0, 0, 1_000_000)
    # Below this much free space on the data directory's disk the screen warns (an alarm and
    # an event), before anything fails.
    disk_warning_mb: float = num(1024.0, 0, 10_000_000)


@dataclass(frozen=True)
class DriftConfig:
    # recent OK scores compared with the model's calibration scores
    window: int = num(200, 10, 1_000_000)
    min_samples: int = num(50, 2, 1_000_000)
    ks_warning: float = num(0.2, 0, 1, above=True)
    ks_critical: float = num(0.35, 0, 1, above=True)
    # a KS statistic only counts when its p-value is below this
    p_value: float = num(0.01, 0, 1, above=True)
    mean_shift_warning: float = num(1.0, 0, 100, above=True)  # in baseline standard deviations
    mean_shift_critical: float = num(2.0, 0, 100, above=True)


@dataclass(frozen=True)
class GuiConfig:
    theme: str = "dark"  # dark | light
    kiosk: bool = False
    display_hz: float = num(15.0, 0, 120, above=True)
    overlay_opacity: float = num(0.45, 0, 1)


@dataclass(frozen=True)
class AccessConfig:
    operator_pin: bool = False  # false: the touchscreen's default user is the operator, no PIN
    # back to the operator and the home page after this long idle
    idle_logout_s: float = num(120.0, 10, 86400)
    max_tries: int = num(5, 1, 100)  # wrong PINs in a row before a lockout
    # the first lockout; each further one doubles (at most an hour)
    lockout_s: float = num(30.0, 0, 86400, above=True)
    min_pin_digits: int = num(4, 4, 12)


@dataclass(frozen=True)
class ReportsConfig:
    station_name: str = ""  # on every report; empty = the computer's name
    auto: bool = True  # write the report of each shift into `folder` when the shift ends
    folder: str = "reports"  # relative to the data directory, or an absolute path
    gallery: int = num(12, 0, 100)  # highest-scoring NOK parts shown with their overlays


REJECT_OUTPUTS = ("none", "modbus", "gpiod", "genicam", "opcua")
# The PLC handshake's register blocks (station.outputs.handshake holds the map).
PLC_INPUT_WORDS, PLC_OUTPUT_WORDS = 2, 6


@dataclass(frozen=True)
class ModbusCoilConfig:
    host: str = ""  # the PLC's Modbus TCP server
    port: int = num(502, 1, 65535)
    unit: int = num(1, 0, 255)  # the Modbus unit (device) id
    coil: int = num(0, 0, 65535)  # the coil's address (0-based)
    timeout_s: float = num(0.5, 0, 60, above=True)


@dataclass(frozen=True)
class GpiodConfig:
    chip: str = "gpiochip0"  # a name under /dev or a path
    line: str = ""  # the line's offset ("17") or its name (a Jetson's "PQ.05")
    active_low: bool = False  # the pin is low while the output is on


@dataclass(frozen=True)
class GenICamOutputConfig:
    line: str = "Line1"  # LineSelector: the camera's output line
    source: str = "UserOutput1"  # LineSource, and the UserOutputSelector written


@dataclass(frozen=True)
class OpcUaOutputConfig:
    url: str = ""  # the PLC's OPC UA server, opc.tcp://host:4840
    node: str = ""  # a writable Boolean variable, e.g. ns=2;s=Reject
    username: str = ""
    password: str = ""
    timeout_s: float = num(2.0, 0, 60, above=True)


@dataclass(frozen=True)
class RejectConfig:
    output: str = "none"  # none | modbus | gpiod | genicam | opcua
    # Each part's decision must be known this long after its trigger; a part without a result
    # by then is rejected (fail-safe) and counted.
    deadline_s: float = num(0.5, 0, 60, above=True)
    # The pulse starts this long after the trigger (the part's way to the gate), or at once
    # when the decision comes later; it lasts pulse_s.
    delay_s: float = num(0.0, 0, 60)
    pulse_s: float = num(0.1, 0.001, 60)
    reject_check: bool = True  # parts in the check band leave the line too (to the manual check)
    # Where parts begin: "frame" (each frame the camera delivers, or with plc.trigger = true
    # each Trigger of the PLC) or "software" (each StationApp.trigger(), e.g. the OPC UA Trigger
    # method, without a Modbus PLC); one frame is grabbed per trigger as with plc.trigger.
    trigger: str = "frame"
    modbus: ModbusCoilConfig = field(default_factory=ModbusCoilConfig)
    gpiod: GpiodConfig = field(default_factory=GpiodConfig)
    genicam: GenICamOutputConfig = field(default_factory=GenICamOutputConfig)
    opcua: OpcUaOutputConfig = field(default_factory=OpcUaOutputConfig)


@dataclass(frozen=True)
class PlcConfig:
    host: str = ""  # the PLC's Modbus TCP server; empty = no handshake
    port: int = num(502, 1, 65535)
    unit: int = num(1, 0, 255)
    inputs: int = num(0, 0, 65530)  # first holding register the PLC writes (see the README)
    outputs: int = num(10, 0, 65530)  # first holding register the station writes
    poll_s: float = num(0.01, 0.001, 1)  # how often the PLC's registers are read
    timeout_s: float = num(0.5, 0, 60, above=True)
    # true: one part per Trigger from the PLC (the camera grabs one frame each: a GenICam camera
    # with trigger = "software", or a replay at fps = 0); false: parts come from the camera
    # (free running or its hardware trigger) and the handshake only reports their results.
    trigger: bool = False
    # recipe number (1 to 65535) -> product, for the PLC's product switch; empty: no switching
    products: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MqttConfig:
    host: str = ""  # the broker; empty = MQTT off
    port: int = num(1883, 1, 65535)
    prefix: str = "station"  # topics: <prefix>/<station>/result, /event, /online
    station: str = ""  # this station's name in the topics; empty = reports.station_name or host
    username: str = ""
    password: str = ""
    tls: bool = False
    ca_file: str = ""  # with tls: the broker's CA certificate (empty = the system's CAs)
    # Messages kept while the broker is away (sent when it is back); past this the oldest go,
    # counted and an alarm (the database keeps every result whatever MQTT does).
    buffer: int = num(10000, 1, 10_000_000)
    keepalive_s: int = num(30, 5, 3600)


@dataclass(frozen=True)
class HttpConfig:
    port: int = num(0, 0, 65535)  # GET /health and /metrics; 0 = off
    bind: str = "127.0.0.1"
    # Required on every request (`Authorization: Bearer <token>`) when set; a bind that is not a
    # loopback address must set it.
    token: str = ""


@dataclass(frozen=True)
class OpcuaConfig:
    port: int = num(0, 0, 65535)  # the OPC UA server (4840 is usual); 0 = off
    bind: str = "127.0.0.1"
    anonymous: bool = False  # anonymous clients may read (never call methods)
    # The server's certificate and key (PEM or DER): with them only signed and encrypted
    # channels (Basic256Sha256) are offered; a bind that is not a loopback address needs them.
    certificate: str = ""
    private_key: str = ""
    # With a certificate: a folder of client certificates (DER or PEM) the server accepts; a bind
    # that is not a loopback address needs it (only known clients may try a PIN).
    trusted_clients: str = ""


@dataclass(frozen=True)
class StationConfig:
    camera: CameraConfig = field(default_factory=CameraConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    inspection: InspectionConfig = field(default_factory=InspectionConfig)
    records: RecordsConfig = field(default_factory=RecordsConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    gui: GuiConfig = field(default_factory=GuiConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    reports: ReportsConfig = field(default_factory=ReportsConfig)
    reject: RejectConfig = field(default_factory=RejectConfig)
    plc: PlcConfig = field(default_factory=PlcConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    opcua: OpcuaConfig = field(default_factory=OpcuaConfig)
    origin: str = ""  # the file this was read from, for messages


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return _build(tp, value, where)  # type: ignore[arg-type]
    if origin in (list,):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict,):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type[T], table: dict[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in names or (cls is StationConfig and key == "origin"):
            close = difflib.get_close_matches(key, names, n=1)
            hint = (
                f" (did you mean '{close[0]}'?)" if close else f"; known keys: {', '.join(names)}"
            )
            raise ConfigError(f"{where}: unknown key '{key}'{hint}")
        kwargs[key] = _convert(value, hints[key], f"{where}.{key}" if where else key)
    return cls(**kwargs)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "features":
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


# Paths a config file names, resolved against that file's folder: a product config beside its
# data (configs/deeppcb.toml -> ../shared/data/deeppcb/test) works from any working directory.
_FILE_PATHS = (
    ("camera", "replay", "path"),
    ("model", "weights"),
    ("model", "signing_key"),
    ("model", "trust_dir"),
    ("mqtt", "ca_file"),
    ("opcua", "certificate"),
    ("opcua", "private_key"),
    ("opcua", "trusted_clients"),
)
# Station settings a product's recipe may not change: who is trusted is not a product's choice.
STATION_ONLY = (("model", "signing_key"), ("model", "trust_dir"), ("model", "allow_unsigned"))
# Whole sections of the station's wiring, not a product's: the reject output and the PLC (a
# recipe sets the camera's trigger, not where the gate is wired) and how it talks to the plant.
STATION_SECTIONS = ("reject", "plc", "mqtt", "http", "opcua")


def _resolve_paths(table: dict[str, Any], folder: Path) -> dict[str, Any]:
    for keys in _FILE_PATHS:
        node: Any = table
        for k in keys[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict):
            value = node.get(keys[-1])
            if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                node[keys[-1]] = str((folder / Path(value).expanduser()).resolve())
    return table


def load_config(path: str | os.PathLike[str] | None = None) -> StationConfig:
    """Read the default config, then the given file on top; validate every key and type.

    Relative paths in a file (`camera.replay.path`, `model.weights`) are taken from that file's
    folder.
    """
    table: dict[str, Any] = {}
    if DEFAULT_CONFIG.exists():
        table = _read_toml(DEFAULT_CONFIG)
    src = str(DEFAULT_CONFIG)
    if path is not None:
        p = Path(path)
        table = _merge(table, _resolve_paths(_read_toml(p), p.resolve().parent))
        src = str(p)
    try:
        cfg = _build(StationConfig, table, "")
    except ConfigError as exc:
        raise ConfigError(f"{src}: {exc}") from None
    cfg = dataclasses.replace(cfg, origin=src)
    validate(cfg)
    return cfg


def to_table(cfg: StationConfig) -> dict[str, Any]:
    """The config as the nested table a TOML file holds (without `origin`)."""
    d = dataclasses.asdict(cfg)
    d.pop("origin", None)
    return d


def with_overlay(cfg: StationConfig, overlay: dict[str, Any], origin: str) -> StationConfig:
    """`cfg` with the keys of `overlay` (a product's recipe) on top, checked like a file."""
    for section, key in STATION_ONLY:
        if key in (overlay.get(section) or {}):
            raise ConfigError(
                f"{origin}: {section}.{key}: a station setting (the station's config file, an "
                "admin's), not a product's"
            )
    for section in STATION_SECTIONS:
        if section in overlay:
            raise ConfigError(
                f"{origin}: [{section}]: the station's wiring and plant interfaces are set in "
                "its config file, not in a product's recipe"
            )
    try:
        merged = _build(StationConfig, _merge(to_table(cfg), overlay), "")
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    merged = dataclasses.replace(merged, origin=origin)
    validate(merged)
    return merged


def validate(cfg: StationConfig) -> None:
    """Check values that types alone do not catch."""

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{cfg.origin or '<config>'}: {key}: {why}")

    for key, value, rng in _numbers(cfg, ""):
        if not rng.holds(value):
            raise bad(key, f"{value!r} is out of range: must be {rng.text()}")
    if cfg.model.backbone not in BACKBONE_NAMES:
        raise bad(
            "model.backbone",
            f"'{cfg.model.backbone}' is not a known backbone: {', '.join(BACKBONE_NAMES)}",
        )
    if not cfg.records.shift_hours:
        raise bad("records.shift_hours", "needs at least one shift start hour")
    for i, hour in enumerate(cfg.records.shift_hours):
        if not 0 <= hour <= 23:
            raise bad(f"records.shift_hours[{i}]", f"{hour} is not an hour of the day (0 to 23)")
    if len(set(cfg.records.shift_hours)) != len(cfg.records.shift_hours):
        raise bad("records.shift_hours", "names an hour twice")
    if cfg.drift.min_samples > cfg.drift.window:
        raise bad("drift.min_samples", f"must be at most drift.window ({cfg.drift.window})")
    if cfg.drift.ks_critical < cfg.drift.ks_warning:
        raise bad("drift.ks_critical", "must be at least drift.ks_warning")
    if cfg.drift.mean_shift_critical < cfg.drift.mean_shift_warning:
        raise bad("drift.mean_shift_critical", "must be at least drift.mean_shift_warning")

    if cfg.camera.source not in ("replay", "genicam", "uvc"):
        raise bad("camera.source", f"'{cfg.camera.source}' is not one of replay, genicam, uvc")
    if cfg.camera.genicam.trigger not in ("off", "software", "hardware"):
        raise bad("camera.genicam.trigger", "must be 'off', 'software' or 'hardware'")
    if cfg.reject.output not in REJECT_OUTPUTS:
        choices = ", ".join(REJECT_OUTPUTS)
        raise bad("reject.output", f"'{cfg.reject.output}' is not one of {choices}")
    if cfg.reject.output == "genicam" and cfg.camera.source != "genicam":
        raise bad("reject.output", "'genicam' drives the camera's own line: needs a GenICam camera")
    if cfg.reject.delay_s and cfg.reject.delay_s < cfg.reject.deadline_s:
        raise bad(
            "reject.delay_s",
            f"{cfg.reject.delay_s:g} s is before the deadline ({cfg.reject.deadline_s:g} s): a "
            "part would reach the gate before its decision is due (or set 0: pulse at once)",
        )
    if cfg.plc.trigger and not cfg.plc.host:
        raise bad("plc.trigger", "needs plc.host: the Trigger comes from the PLC's registers")
    if cfg.reject.trigger not in ("frame", "software"):
        raise bad("reject.trigger", f"'{cfg.reject.trigger}' is not 'frame' or 'software'")
    paced = cfg.plc.trigger or cfg.reject.trigger == "software"
    if paced:
        tkey = "plc.trigger" if cfg.plc.trigger else "reject.trigger"
        # One frame per Trigger: a camera that runs free or on its own hardware trigger has
        # frames buffered already, and the part's verdict would come from an older image.
        cam = cfg.camera
        if cam.source == "genicam" and cam.genicam.trigger != "software":
            raise bad(
                tkey,
                f"needs camera.genicam.trigger = 'software' (it is '{cam.genicam.trigger}'): "
                "the camera must grab one frame per Trigger",
            )
        if cam.source == "replay" and cam.replay.fps:
            raise bad(
                tkey,
                f"needs camera.replay.fps = 0 (it is {cam.replay.fps:g}): one frame per Trigger",
            )
        if cam.source == "uvc":
            raise bad(tkey, "a UVC camera runs free: it cannot grab one frame per Trigger")
    if (cfg.reject.output != "none" or cfg.plc.host) and not paced:
        # Without the PLC's Trigger every frame is a part: a camera that runs free (or grabs as
        # fast as the line takes frames) delivers frames that are no parts, and each one the
        # line drops would be a fail-safe reject. One frame per part: the hardware trigger.
        cam = cfg.camera
        free = (
            cam.source == "uvc"
            or (cam.source == "genicam" and cam.genicam.trigger != "hardware")
            or (cam.source == "replay" and not cam.replay.fps)
        )
        if free:
            key = "reject.output" if cfg.reject.output != "none" else "plc.host"
            what = {
                "uvc": "a UVC camera runs free",
                "genicam": f"camera.genicam.trigger = '{cam.genicam.trigger}' runs free",
                "replay": "a replay at fps = 0 runs as fast as the line takes frames",
            }[cam.source]
            raise bad(
                key,
                f"{what}: every frame would be a part. Use camera.genicam.trigger = 'hardware' "
                "(one frame per part), or plc.trigger = true with a software trigger",
            )
    for number, product in cfg.plc.products.items():
        if not number.isdigit() or not 1 <= int(number) <= 65535:
            raise bad(f"plc.products.{number}", "a recipe number is 1 to 65535")
        if not isinstance(product, str) or not product:
            raise bad(f"plc.products.{number}", f"expected a product name, got {product!r}")
    if len(set(cfg.plc.products.values())) != len(cfg.plc.products):
        raise bad("plc.products", "names a product under two numbers")
    ins = range(cfg.plc.inputs, cfg.plc.inputs + PLC_INPUT_WORDS)
    outs = range(cfg.plc.outputs, cfg.plc.outputs + PLC_OUTPUT_WORDS)
    if cfg.plc.host and (ins.start in outs or outs.start in ins):
        raise bad(
            "plc.outputs",
            f"registers {outs.start}..{outs.stop - 1} overlap plc.inputs ({ins.start}.."
            f"{ins.stop - 1})",
        )
    for key, allowed in (
        ("runtime", ("torch", "onnx", "tensorrt")),
        ("position_norm", POSITION_NORM_MODES),
        ("exposure", EXPOSURE_MODES),
        ("search", SEARCH_METHODS),
    ):
        value = getattr(cfg.model, key)
        if value not in allowed:
            raise bad(f"model.{key}", f"'{value}' is not one of {', '.join(allowed)}")
    if cfg.model.image_size < 32 or cfg.model.image_size % 16:
        raise bad("model.image_size", "must be a multiple of 16 and at least 32")
    if cfg.records.on_failure not in ("stop", "keep"):
        raise bad("records.on_failure", f"'{cfg.records.on_failure}' is not 'stop' or 'keep'")
    if cfg.gui.theme not in ("dark", "light"):
        raise bad("gui.theme", "must be 'dark' or 'light'")
    _validate_plant(cfg, bad)


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or 'localhost') only reaches this computer."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip()).is_loopback
    except ValueError:
        return False


def _validate_plant(cfg: StationConfig, bad: typing.Callable[[str, str], ConfigError]) -> None:
    """The plant interfaces: nothing reachable from the network without a credential."""
    if cfg.mqtt.prefix.strip("/") == "" or any(c in cfg.mqtt.prefix for c in "+#"):
        raise bad("mqtt.prefix", f"{cfg.mqtt.prefix!r} must be a topic level without + or #")
    if any(c in cfg.mqtt.station for c in "/+#"):
        raise bad("mqtt.station", f"{cfg.mqtt.station!r} must not contain /, + or #")
    if cfg.mqtt.password and not cfg.mqtt.username:
        raise bad("mqtt.password", "set mqtt.username too")
    if cfg.mqtt.password and not cfg.mqtt.tls and not is_loopback(cfg.mqtt.host):
        raise bad(
            "mqtt.password",
            f"mqtt.host = {cfg.mqtt.host!r} is reached over the network: the password would "
            "travel in the clear, set mqtt.tls = true",
        )
    if cfg.mqtt.ca_file and not cfg.mqtt.tls:
        raise bad("mqtt.ca_file", "is only used with mqtt.tls = true")
    if cfg.mqtt.host and cfg.mqtt.ca_file and not Path(cfg.mqtt.ca_file).expanduser().is_file():
        raise bad("mqtt.ca_file", f"{cfg.mqtt.ca_file} is not a file (the broker's CA certificate)")
    for section, bind in (("http", cfg.http.bind), ("opcua", cfg.opcua.bind)):
        if not bind.strip():
            raise bad(f"{section}.bind", "must name an address (127.0.0.1, 0.0.0.0, ...)")
    if cfg.http.port and not is_loopback(cfg.http.bind) and not cfg.http.token:
        raise bad(
            "http.token",
            f"http.bind = {cfg.http.bind!r} is reachable from the network: set a token",
        )
    if bool(cfg.opcua.certificate) != bool(cfg.opcua.private_key):
        raise bad("opcua.private_key", "set opcua.certificate and opcua.private_key together")
    if cfg.opcua.trusted_clients and not cfg.opcua.certificate:
        raise bad("opcua.trusted_clients", "needs opcua.certificate (encrypted channels)")
    if cfg.opcua.port and not is_loopback(cfg.opcua.bind) and not cfg.opcua.certificate:
        raise bad(
            "opcua.certificate",
            f"opcua.bind = {cfg.opcua.bind!r} is reachable from the network: passwords must not "
            "travel in the clear, set a certificate and key",
        )
    if cfg.opcua.port and not is_loopback(cfg.opcua.bind) and not cfg.opcua.trusted_clients:
        # Without it any client certificate opens a channel, and a stranger guessing PINs
        # would lock the station's users (admins too) out of the touchscreen as well.
        raise bad(
            "opcua.trusted_clients",
            f"opcua.bind = {cfg.opcua.bind!r} is reachable from the network: name the folder of "
            "the client certificates accepted",
        )
    if cfg.opcua.port and cfg.opcua.port == cfg.http.port:
        raise bad("opcua.port", f"{cfg.opcua.port} is http.port too")


def _numbers(section: Any, prefix: str) -> typing.Iterator[tuple[str, float, Range]]:
    """(key, value, range) of every numeric setting with a range, sections walked in order."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from _numbers(value, key + ".")
        elif "range" in f.metadata and not isinstance(value, bool):
            yield key, value, f.metadata["range"]


def unranged_numbers(section: Any = None, prefix: str = "") -> list[str]:
    """Numeric settings without a declared range (a test keeps this empty)."""
    section = StationConfig() if section is None else section
    out = []
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            out += unranged_numbers(value, f"{prefix}{f.name}.")
        elif (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and "range" not in f.metadata
        ):
            out.append(f"{prefix}{f.name}")
    return out


def data_dir(cfg: StationConfig, override: str | None = None) -> Path:
    """The one folder holding database, image archive and models (flag, env, config, platform)."""
    chosen = override or os.environ.get("STATION_DATA_DIR") or cfg.records.data_dir
    if chosen:
        return Path(chosen).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("station", appauthor=False))
