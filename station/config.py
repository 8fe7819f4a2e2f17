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


@dataclass(frozen=True)
class ReplayConfig:
    path: str = ""  # folder or video; empty = the demo product in the data directory
    loop: bool = True
    fps: float = 2.0  # frames per second; 0 = as fast as the consumer takes them
    shuffle: bool = False  # interleave good and defective parts (seeded) instead of sorted order


@dataclass(frozen=True)
class GenICamConfig:
    cti: list[str] = field(default_factory=list)  # producer files, before GENICAM_GENTL64_PATH
    device: str = ""  # serial number, user-defined name, or index; empty = first found
    timeout_s: float = 2.0  # fetch timeout; a timeout is reported as a CameraError
    trigger: str = "off"  # "off" (free running) or "software" (one frame per part)
    features: dict[str, Any] = field(
        default_factory=dict
    )  # SFNC feature -> value, applied in order
    buffers: int = 8  # driver buffers: more ride out consumer hiccups; each holds one payload


@dataclass(frozen=True)
class UVCConfig:
    index: int = 0
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class CameraConfig:
    source: str = "replay"  # replay | genicam | uvc
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    genicam: GenICamConfig = field(default_factory=GenICamConfig)
    uvc: UVCConfig = field(default_factory=UVCConfig)


@dataclass(frozen=True)
class ModelConfig:
    product: str = "demo"  # name of the product whose current model the line uses
    backbone: str = "efficientnet_lite0"
    weights: str = ""  # state-dict file; required for resnet18/resnet50/wide_resnet50_2
    layers: list[str] = field(default_factory=lambda: ["stride8", "stride16"])
    image_size: int = 320  # long side of the network input (aspect kept, padded to square)
    tile: bool = True  # parts longer than 2:1 are cut into overlapping square tiles
    scale: float = 0.0  # 0: fit each part to image_size; > 0: fixed scale, tiles cover the part
    max_tiles: int = 0  # with scale > 0: at most this many windows a part (bigger ones shrink)
    exposure: str = "fixed"  # "auto": per-image gain cancels exposure/illumination changes
    aggregation: int = 3  # local neighbourhood (p x p) averaged around each patch
    feature_dim: int = 0  # channel reduction target; 0 = keep the concatenated channels
    intensity_weight: float = 0.0  # > 0 adds local brightness as a feature (uneven surfaces)
    coreset_ratio: float = 0.1
    coreset_projection: int = 128  # random projection size for the greedy k-center selection
    max_bank: int = 40000  # hard cap on the memory bank, whatever the ratio
    reweight_neighbors: int = 9  # b in the paper's score reweighting (used when score_top = 0)
    score_top: float = 0.01  # image score = mean of the top 1 % of patch scores; 0 = the max
    blur_sigma: float = 4.0  # Gaussian smoothing of the anomaly map, in input pixels
    runtime: str = "onnx"  # torch | onnx | tensorrt
    threads: int = 0  # intra-op threads for torch / onnxruntime; 0 = all cores
    seed: int = 0


@dataclass(frozen=True)
class InspectionConfig:
    queue_size: int = 4  # frames waiting for the model; the oldest is dropped when full
    target_fnr: float = 0.005


@dataclass(frozen=True)
class RecordsConfig:
    data_dir: str = ""  # empty = STATION_DATA_DIR, else the platform's user data folder
    ok_sample_every: int = 50  # archive one OK image in N (every NOK image is archived)
    retention_days: int = 90
    disk_budget_mb: int = 2048
    shift_hours: list[int] = field(default_factory=lambda: [6, 14, 22])  # shift start hours
    spool_mb: float = 64.0  # durable overflow for results the database cannot take right now


@dataclass(frozen=True)
class DriftConfig:
    window: int = 200  # recent OK scores compared with the model's calibration scores
    min_samples: int = 50
    ks_warning: float = 0.2
    ks_critical: float = 0.35
    p_value: float = 0.01  # a KS statistic only counts when its p-value is below this
    mean_shift_warning: float = 1.0  # in baseline standard deviations
    mean_shift_critical: float = 2.0


@dataclass(frozen=True)
class GuiConfig:
    theme: str = "dark"  # dark | light
    kiosk: bool = False
    display_hz: float = 15.0
    overlay_opacity: float = 0.45


@dataclass(frozen=True)
class AccessConfig:
    operator_pin: bool = False  # false: the touchscreen's default user is the operator, no PIN
    idle_logout_s: float = 120.0  # back to the operator and the home page after this long idle
    max_tries: int = 5  # wrong PINs in a row before a lockout
    lockout_s: float = 30.0  # the first lockout; each further one doubles (at most an hour)
    min_pin_digits: int = 4


@dataclass(frozen=True)
class ReportsConfig:
    station_name: str = ""  # on every report; empty = the computer's name
    auto: bool = True  # write the report of each shift into `folder` when the shift ends
    folder: str = "reports"  # relative to the data directory, or an absolute path
    gallery: int = 12  # highest-scoring NOK parts shown with their overlays


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
_FILE_PATHS = (("camera", "replay", "path"), ("model", "weights"))


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

    if cfg.camera.source not in ("replay", "genicam", "uvc"):
        raise bad("camera.source", f"'{cfg.camera.source}' is not one of replay, genicam, uvc")
    if cfg.camera.genicam.trigger not in ("off", "software"):
        raise bad("camera.genicam.trigger", "must be 'off' or 'software'")
    if cfg.model.runtime not in ("torch", "onnx", "tensorrt"):
        raise bad("model.runtime", f"'{cfg.model.runtime}' is not one of torch, onnx, tensorrt")
    if not 0.0 < cfg.model.coreset_ratio <= 1.0:
        raise bad("model.coreset_ratio", "must be in (0, 1]")
    if not 0.0 <= cfg.model.score_top < 1.0:
        raise bad("model.score_top", "must be in [0, 1): a share of the patches, 0 = the max")
    if cfg.model.image_size < 32 or cfg.model.image_size % 16:
        raise bad("model.image_size", "must be a multiple of 16 and at least 32")
    if cfg.model.scale < 0:
        raise bad("model.scale", "must be 0 (fit the part to image_size) or a positive scale")
    if cfg.model.max_tiles < 0:
        raise bad("model.max_tiles", "must be 0 (no cap) or a positive number of windows")
    if cfg.inspection.queue_size < 1:
        raise bad("inspection.queue_size", "must be at least 1")
    if not 0.0 <= cfg.inspection.target_fnr < 1.0:
        raise bad("inspection.target_fnr", "must be in [0, 1)")
    if cfg.gui.theme not in ("dark", "light"):
        raise bad("gui.theme", "must be 'dark' or 'light'")
    if cfg.records.spool_mb < 0:
        raise bad("records.spool_mb", "must be 0 (no spool) or a positive size in MB")
    if cfg.access.idle_logout_s < 10:
        raise bad("access.idle_logout_s", "must be at least 10 seconds")
    if cfg.access.max_tries < 1:
        raise bad("access.max_tries", "must be at least 1")
    if cfg.access.lockout_s <= 0:
        raise bad("access.lockout_s", "must be a positive number of seconds")
    if not 4 <= cfg.access.min_pin_digits <= 12:
        raise bad("access.min_pin_digits", "must be between 4 and 12")


def data_dir(cfg: StationConfig, override: str | None = None) -> Path:
    """The one folder holding database, image archive and models (flag, env, config, platform)."""
    chosen = override or os.environ.get("STATION_DATA_DIR") or cfg.records.data_dir
    if chosen:
        return Path(chosen).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("station", appauthor=False))
