"""TensorRT runtime: ONNX -> engine cached on disk -> pinned, asynchronous inference on one stream.

Supports TensorRT 8.6 and 10.x with pycuda. Nothing here imports `tensorrt` or `pycuda` at module
import time: a PC without them can import the station and gets `RuntimeUnavailable`, with the
reason, only when it asks for this runtime.

CUDA context choice: every object here retains the device's *primary* context (the one the CUDA
runtime, TensorRT and torch use) and pushes it around each call, popping it before returning. So a
runtime built in one thread may be used from the inspector thread (or any single thread at a time,
calls are serialised by a lock), and no thread is left with a context current that it did not ask
for. A push/pop costs microseconds, negligible next to a frame.

Engines are cached as `<cache_dir>/<onnx stem>.<precision>.<key[:16]>.engine` with a JSON sidecar.
The key (`engine_cache_key`) covers the ONNX bytes (external weights included), the TensorRT
version, the GPU name and compute capability, the precision, the batch limit and, for INT8, the
calibration set: a changed model or a disk moved to another GPU never loads a stale engine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from station.core.errors import ConfigError, ImageError, ModelError, RuntimeUnavailable
from station.core.files import write_atomic
from station.runtime.base import EngineSeal, RuntimeKind
from station.runtime.knn_graph import load_bank, write_knn_onnx

log = logging.getLogger(__name__)

MIN_TENSORRT = (8, 6)
PRECISIONS = ("fp32", "fp16", "int8")
INPUT_NAME = "images"
OUTPUT_NAME = "features"
# Bump when the build options below change, so engines built by older code are not reused.
CACHE_FORMAT = 1

_INSTALL_HINT = (
    "on an x86 PC with an NVIDIA GPU run installers/linux/install.sh --with-tensorrt "
    "(pip extra 'station[tensorrt]'); on Jetson run installers/jetson/install.sh, which uses "
    "JetPack's TensorRT and pycuda"
)
# TensorRT requires I/O tensor addresses aligned to 256 bytes (cudaMalloc gives at least that).
_ADDRESS_ALIGNMENT = 256
# One build at a time per process: two threads building the same engine would waste minutes.
_BUILD_LOCK = threading.Lock()


# -- pure helpers (tested without a GPU) ------------------------------------------------------


def parse_version(text: str) -> tuple[int, ...]:
    """'8.6.1.post1' -> (8, 6, 1): the leading numeric components of a version string."""
    parts: list[int] = []
    for piece in text.split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break
    return tuple(parts)


def engine_cache_key(
    onnx_bytes: bytes,
    *,
    precision: str,
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: tuple[int, int],
    max_batch: int = 8,
    calibration_id: str = "",
) -> str:
    """The sha256 naming an engine: same inputs, same key; any change, a different key."""
    fields = {
        "format": CACHE_FORMAT,
        "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "precision": precision,
        "tensorrt": tensorrt_version,
        "gpu": gpu_name,
        "compute_capability": f"{compute_capability[0]}.{compute_capability[1]}",
        "max_batch": int(max_batch),
        # Only INT8 engines depend on the calibration images.
        "calibration": calibration_id if precision == "int8" else "",
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def check_engine_metadata(
    meta: Mapping[str, Any],
    *,
    engine_path: Path,
    gpu_name: str,
    compute_capability: tuple[int, int],
    tensorrt_version: str,
    key: str | None = None,
) -> None:
    """Raise ModelError, naming both sides, when an engine was built for another GPU or TensorRT."""
    built_gpu = meta.get("gpu", "?")
    built_cc = str(meta.get("compute_capability", "?"))
    here_cc = f"{compute_capability[0]}.{compute_capability[1]}"
    if built_gpu != gpu_name or built_cc != here_cc:
        raise ModelError(
            f"{engine_path}: engine was built for {built_gpu} (compute {built_cc}), this machine "
            f"has {gpu_name} (compute {here_cc}); rebuild it from the ONNX model on this machine"
        )
    built_trt = meta.get("tensorrt", "?")
    if built_trt != tensorrt_version:
        raise ModelError(
            f"{engine_path}: engine was built with TensorRT {built_trt}, this machine has "
            f"TensorRT {tensorrt_version}; rebuild it from the ONNX model"
        )
    if key is not None and meta.get("key") != key:
        raise ModelError(
            f"{engine_path}: engine cache key does not match its ONNX model and settings; "
            "delete the file to rebuild it"
        )


def calibration_batches(
    images: Iterable[np.ndarray], batch_shape: Sequence[int]
) -> Iterator[np.ndarray]:
    """Regroup calibration arrays (C x H x W or N x C x H x W) into batches of exactly batch_shape.

    TensorRT calibrates with the engine's input shape, whatever batch size the caller's loader
    uses. A short last batch is padded by repeating its own images (dropping it could leave no
    batch at all when there are fewer images than the batch size).
    """
    shape = tuple(int(d) for d in batch_shape)
    size, sample = shape[0], shape[1:]
    pending: list[np.ndarray] = []
    for item in images:
        arr = np.asarray(item, dtype=np.float32)
        if arr.shape == sample:
            arr = arr[None]
        if arr.ndim != len(shape) or arr.shape[1:] != sample:
            raise ModelError(
                f"calibration batch of shape {arr.shape} does not match the model input "
                f"{' x '.join(map(str, sample))} (float32, normalised, NCHW)"
            )
        for one in arr:
            pending.append(one)
            if len(pending) == size:
                yield np.stack(pending)
                pending = []
    if pending:
        fill = [pending[i % len(pending)] for i in range(size)]
        yield np.stack(fill)


def onnx_digest_bytes(onnx_path: Path) -> bytes:
    """The ONNX file's bytes followed by any external-data files it references (weights)."""
    try:
        data = onnx_path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{onnx_path}: ONNX model not found") from None
    except OSError as exc:
        raise ModelError(f"{onnx_path}: cannot read ONNX model: {exc}") from None
    import onnx

    try:
        model = onnx.load_from_string(data)  # never follows external data
    except Exception as exc:  # protobuf raises several types for damaged files
        raise ModelError(f"{onnx_path}: not a valid ONNX model: {exc}") from None
    # Exporters (torch dynamo) may keep weights in side files: new weights must change the key.
    locations: list[str] = []
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location" and entry.value not in locations:
                    locations.append(entry.value)
    chunks = [data]
    for loc in locations:
        side = onnx_path.parent / loc
        try:
            chunks.append(loc.encode() + b"\0" + side.read_bytes())
        except OSError as exc:
            raise ModelError(
                f"{onnx_path}: external weight file {side} unreadable: {exc}"
            ) from None
    return b"".join(chunks)


# -- lazy imports and device discovery --------------------------------------------------------


def _import_tensorrt() -> Any:
    """Import tensorrt, or raise RuntimeUnavailable saying why it cannot be used."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RuntimeUnavailable(f"TensorRT is not installed ({exc}); {_INSTALL_HINT}") from None
    version = str(getattr(trt, "__version__", "0"))
    if parse_version(version)[:2] < MIN_TENSORRT:
        raise RuntimeUnavailable(
            f"TensorRT {version} is too old: the station needs TensorRT "
            f"{MIN_TENSORRT[0]}.{MIN_TENSORRT[1]} or newer (JetPack 6 / CUDA 12); {_INSTALL_HINT}"
        )
    return trt


def _import_cuda() -> Any:
    """Import pycuda.driver and start the driver, or raise RuntimeUnavailable with the reason."""
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        if "libcuda" in str(exc):
            raise RuntimeUnavailable(
                f"no NVIDIA GPU driver: pycuda cannot load libcuda ({exc})"
            ) from None
        raise RuntimeUnavailable(f"pycuda is not installed ({exc}); {_INSTALL_HINT}") from None
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:  # pycuda.driver.Error, driver load failures
        raise RuntimeUnavailable(f"no NVIDIA GPU: the CUDA driver did not start ({exc})") from None
    if count == 0:
        raise RuntimeUnavailable("no NVIDIA GPU: the CUDA driver reports no device")
    return cuda


@dataclass(frozen=True)
class GpuInfo:
    """What identifies a GPU for engine compatibility."""

    index: int
    name: str
    compute_capability: tuple[int, int]
    total_memory: int


def _gpu_info(cuda: Any, device: int) -> GpuInfo:
    """Name, compute capability and memory of device `device`."""
    count = cuda.Device.count()
    if not 0 <= device < count:
        raise RuntimeUnavailable(f"no NVIDIA GPU {device}: {count} device(s) found")
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    return GpuInfo(device, str(dev.name()), (int(major), int(minor)), int(dev.total_memory()))


def unavailable_reason(device: int = 0) -> str | None:
    """None when TensorRT, pycuda and an NVIDIA GPU are all usable here; else why not."""
    try:
        _import_tensorrt()
        cuda = _import_cuda()
        _gpu_info(cuda, device)
    except RuntimeUnavailable as exc:
        return str(exc)
    return None


def _memory_report(cuda: Any) -> str:
    """'123 MiB free of 8000 MiB' for out-of-memory messages, or '' if the driver cannot say."""
    try:
        free, total = cuda.mem_get_info()
    except Exception:  # only decorates another error
        return ""
    return f" ({free >> 20} MiB free of {total >> 20} MiB)"


class _TrtLogger:
    """Factory for the process-wide TensorRT logger (TensorRT wants one logger per process)."""

    instance: Any = None
    lock = threading.Lock()

    @classmethod
    def get(cls, trt: Any) -> Any:
        """The logger; forwards to `logging` and keeps recent errors for exception messages."""
        with cls.lock:
            if cls.instance is None:

                class Logger(trt.ILogger):
                    def __init__(self) -> None:
                        trt.ILogger.__init__(self)
                        self.errors: deque[str] = deque(maxlen=20)

                    def log(self, severity: Any, msg: str) -> None:
                        level = int(severity)  # 0 internal error, 1 error, 2 warning, 3 info
                        if level <= 1:
                            self.errors.append(msg)
                            log.error("TensorRT: %s", msg)
                        elif level == 2:
                            log.warning("TensorRT: %s", msg)
                        else:
                            log.debug("TensorRT: %s", msg)

                    def take_errors(self) -> str:
                        text = "; ".join(self.errors)
                        self.errors.clear()
                        return text

                cls.instance = Logger()
            return cls.instance


# -- CUDA session: context, stream, lock ------------------------------------------------------


class _GpuSession:
    """TensorRT + pycuda + the device's primary context, pushed only around each use."""

    def __init__(self, device: int = 0) -> None:
        self.trt = _import_tensorrt()
        self.cuda = _import_cuda()
        self.gpu = _gpu_info(self.cuda, device)
        self.trt_version = str(self.trt.__version__)
        self.logger = _TrtLogger.get(self.trt)
        self._lock = threading.Lock()
        self._closed = False
        self._ctx = self.cuda.Device(device).retain_primary_context()
        self._stream: Any = None
        self.on_close: list[Callable[[], None]] = []

    @property
    def stream(self) -> Any:
        """The one CUDA stream all copies and executions of this session go on."""
        if self._stream is None:
            self._stream = self.cuda.Stream()  # created lazily: needs the context current
        return self._stream

    @contextmanager
    def active(self) -> Iterator[None]:
        """Hold the lock with the context current in this thread; translate CUDA errors."""
        with self._lock:
            if self._closed:
                raise RuntimeUnavailable("the TensorRT runtime was closed")
            self._ctx.push()
            try:
                yield
            except self.cuda.MemoryError as exc:
                raise RuntimeUnavailable(
                    f"out of GPU memory on {self.gpu.name}{_memory_report(self.cuda)}: {exc}"
                ) from None
            except self.cuda.Error as exc:
                raise RuntimeUnavailable(f"CUDA error on {self.gpu.name}: {exc}") from None
            finally:
                self.cuda.Context.pop()

    def close(self) -> None:
        """Free everything on the device, then release the primary context; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._ctx.push()
            try:
                try:
                    if self._stream is not None:
                        self._stream.synchronize()  # nothing in flight uses what is freed next
                except Exception:  # a failed GPU must still release what it can
                    log.exception("CUDA stream synchronisation failed while closing")
                for free in reversed(self.on_close):
                    try:
                        free()
                    except Exception:  # keep freeing the rest
                        log.exception("freeing TensorRT resources failed")
                self.on_close.clear()
                # Dropped while the context is current, so pycuda frees it in the right context.
                self._stream = None
            finally:
                self.cuda.Context.pop()
                self._ctx.detach()
                self._closed = True


# -- engine building --------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineBuild:
    """Where an engine is, how long it took to build, and whether it came from the cache."""

    path: Path
    seconds: float
    from_cache: bool
    key: str


def _write_file(path: Path, data: bytes | memoryview) -> None:
    """Write atomically, creating the cache folder: a crash never leaves half an engine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)


def read_engine_metadata(engine_path: Path) -> dict[str, Any]:
    """The JSON sidecar written next to an engine; {} when missing or unreadable."""
    try:
        meta = json.loads(engine_path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


SEAL_SUFFIX = ".seal"


def _sealed_bytes(engine_path: Path, plan: bytes | memoryview) -> bytes:
    """What a seal covers: the plan's hash and the engine's name (its cache key)."""
    return hashlib.sha256(plan).digest() + Path(engine_path).name.encode()


def seal_engine(engine_path: Path, plan: bytes | memoryview, seal: EngineSeal | None) -> None:
    """Seal an engine this station built: the model's signature covers the ONNX file, not an
    engine built from it later, so without a seal anyone who can write the cache could swap in
    an engine that computes anything."""
    if seal is not None:
        _write_file(
            Path(engine_path).with_suffix(SEAL_SUFFIX), seal.seal(_sealed_bytes(engine_path, plan))
        )


def check_sealed(engine_path: Path, plan: bytes, seal: EngineSeal | None) -> None:
    """ModelError unless `plan` (the bytes about to be deserialized) carries a trusted seal."""
    if seal is None:
        return
    record_path = Path(engine_path).with_suffix(SEAL_SUFFIX)
    try:
        record = record_path.read_bytes()
    except OSError:
        raise ModelError(
            f"{engine_path}: not sealed by this station ({record_path.name} missing); "
            "it is rebuilt from the signed ONNX model"
        ) from None
    seal.check(_sealed_bytes(engine_path, plan), record, str(engine_path))


def _make_calibrator(
    session: _GpuSession, batches: Iterator[np.ndarray], cache_path: Path, shape: tuple[int, ...]
) -> Any:
    """An IInt8EntropyCalibrator2 feeding `batches` through one pinned + one device buffer."""
    trt, cuda = session.trt, session.cuda

    base: Any = trt.IInt8EntropyCalibrator2

    class Calibrator(base):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.host = cuda.pagelocked_empty(shape, np.float32)
            self.device = cuda.mem_alloc(self.host.nbytes)
            self.count = 0
            self.error: BaseException | None = None
            self.used_cache = False

        def get_batch_size(self) -> int:
            return int(shape[0])

        def get_batch(self, names: list[str]) -> list[int] | None:
            # Called from inside TensorRT, which would hide the reason of an exception: keep it
            # and end calibration; _build_plan raises it after the build returns.
            try:
                batch = next(batches, None)
                if batch is None:
                    return None
                np.copyto(self.host, batch)
                cuda.memcpy_htod(self.device, self.host)
            except BaseException as exc:
                self.error = exc
                return None
            self.count += 1
            return [int(self.device)]

        def read_calibration_cache(self) -> bytes | None:
            # A cached table skips calibration entirely (minutes on a Jetson).
            if not cache_path.is_file():
                return None
            self.used_cache = True
            return cache_path.read_bytes()

        def write_calibration_cache(self, cache: Any) -> None:
            _write_file(cache_path, memoryview(cache))

        def free(self) -> None:
            self.device.free()
            _free_pinned(self.host)

    return Calibrator()


def _build_plan(
    session: _GpuSession,
    onnx_path: Path,
    *,
    precision: str,
    calibration: Iterable[np.ndarray] | None,
    calibration_cache: Path,
    workspace_mb: int,
    max_batch: int,
) -> Any:
    """Parse the ONNX file and build a serialized engine; the context must be current."""
    trt = session.trt
    logger = session.logger
    logger.take_errors()
    builder = trt.Builder(logger)
    if parse_version(session.trt_version)[0] >= 10:
        flags = 0  # TensorRT 10 networks are always explicit-batch; the flag is deprecated
    else:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file (not parse(bytes)) so weights kept in external-data files are found.
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"{onnx_path}: TensorRT cannot parse this ONNX model: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    profile = builder.create_optimization_profile()
    dynamic = False
    calib_shape: tuple[int, ...] = ()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(int(d) for d in tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise ModelError(
                f"{onnx_path}: input '{tensor.name}' has shape {shape}: only the batch dimension "
                "may be dynamic; export the model at its fixed input size"
            )
        if shape and shape[0] < 0:
            dynamic = True
            lo, hi = (1, *shape[1:]), (max_batch, *shape[1:])
            profile.set_shape(tensor.name, lo, hi, hi)
            shape = hi
        if i == 0:
            calib_shape = shape
    if dynamic:
        config.add_optimization_profile(profile)

    if precision == "fp32":
        # Ampere+ (Orin included) would otherwise use TF32 matmuls: 10-bit mantissas break
        # parity with the other runtimes and the kNN distances.
        config.clear_flag(trt.BuilderFlag.TF32)
    # INT8 also sets FP16 so layers without an INT8 kernel fall back to FP16, not FP32.
    wanted = {"fp32": (), "fp16": ("FP16",), "int8": ("FP16", "INT8")}[precision]
    for name in wanted:
        flag = getattr(trt.BuilderFlag, name, None)
        if flag is None:
            raise RuntimeUnavailable(
                f"TensorRT {session.trt_version} has no BuilderFlag.{name} (removed after 10.x); "
                "use precision 'fp32' or TensorRT 8.6-10.x"
            )
        config.set_flag(flag)

    calibrator: Any = None
    try:
        if precision == "int8":
            if calibration is None and not calibration_cache.is_file():
                raise ModelError(
                    f"{onnx_path}: INT8 needs calibration images (the product's good images, "
                    f"float32 NCHW) or an existing calibration cache {calibration_cache}"
                )
            batches = calibration_batches(calibration or [], calib_shape)
            calibrator = _make_calibrator(session, batches, calibration_cache, calib_shape)
            config.int8_calibrator = calibrator
            if dynamic:
                config.set_calibration_profile(profile)
        plan = builder.build_serialized_network(network, config)
        calibrated = calibrator is not None and not calibrator.used_cache
        if calibrated and (calibrator.error is not None or calibrator.count == 0):
            # A table computed from no images must not be reused by the next build.
            calibration_cache.unlink(missing_ok=True)
            if calibrator.error is not None:
                raise calibrator.error
            raise ModelError(f"{onnx_path}: INT8 calibration got no images")
    finally:
        if calibrator is not None:
            calibrator.free()
    if plan is None:
        errors = logger.take_errors() or "no reason logged"
        if "memory" in errors.lower():
            raise RuntimeUnavailable(
                f"out of GPU memory while building the TensorRT engine for {onnx_path}"
                f"{_memory_report(session.cuda)}: {errors}; lower workspace_mb or max_batch"
            )
        raise ModelError(f"{onnx_path}: TensorRT could not build an engine: {errors}")
    return plan


def _engine_file(onnx_path: Path, cache_dir: Path, precision: str, key: str) -> Path:
    """Engine file name: readable prefix, key suffix."""
    return Path(cache_dir) / f"{onnx_path.stem}.{precision}.{key[:16]}.engine"


def _build_in(
    session: _GpuSession,
    onnx_path: Path,
    *,
    precision: str,
    calibration: Iterable[np.ndarray] | None,
    cache_dir: Path,
    workspace_mb: int,
    max_batch: int,
    calibration_id: str,
    force: bool = False,
    seal: EngineSeal | None = None,
) -> EngineBuild:
    """build_engine on an open session."""
    if precision not in PRECISIONS:
        raise ConfigError(f"TensorRT precision '{precision}' is not one of {', '.join(PRECISIONS)}")
    if max_batch < 1:
        raise ConfigError(f"TensorRT max_batch must be at least 1, got {max_batch}")
    onnx_path = Path(onnx_path)
    digest = onnx_digest_bytes(onnx_path)
    gpu = session.gpu
    key = engine_cache_key(
        digest,
        precision=precision,
        tensorrt_version=session.trt_version,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        max_batch=max_batch,
        calibration_id=calibration_id,
    )
    engine_path = _engine_file(onnx_path, Path(cache_dir), precision, key)
    with _BUILD_LOCK:
        if not force and engine_path.is_file() and engine_path.stat().st_size > 0:
            if read_engine_metadata(engine_path).get("key") == key:
                log.info("TensorRT engine from cache: %s", engine_path)
                return EngineBuild(engine_path, 0.0, True, key)
            log.warning("%s: sidecar missing or key mismatch; rebuilding", engine_path)
        # The calibration table depends on model + images + TensorRT, not on the GPU: keep it
        # when the disk moves to another device so only the (fast) build is repeated.
        calib_key = hashlib.sha256(
            b"%s\0%s\0%s"
            % (
                hashlib.sha256(digest).hexdigest().encode(),
                calibration_id.encode(),
                ".".join(map(str, parse_version(session.trt_version)[:2])).encode(),
            )
        ).hexdigest()
        calibration_cache = Path(cache_dir) / f"{onnx_path.stem}.{calib_key[:16]}.calib"
        log.info("building TensorRT %s engine for %s on %s", precision, onnx_path, gpu.name)
        start = time.perf_counter()
        with session.active():
            plan = _build_plan(
                session,
                onnx_path,
                precision=precision,
                calibration=calibration,
                calibration_cache=calibration_cache,
                workspace_mb=workspace_mb,
                max_batch=max_batch,
            )
        seconds = time.perf_counter() - start
        _write_file(engine_path, memoryview(plan))
        seal_engine(engine_path, memoryview(plan), seal)
        meta = {
            "key": key,
            "onnx": str(onnx_path),
            "onnx_sha256": hashlib.sha256(digest).hexdigest(),
            "precision": precision,
            "tensorrt": session.trt_version,
            "gpu": gpu.name,
            "compute_capability": f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}",
            "max_batch": max_batch,
            "calibration_id": calibration_id,
            "build_seconds": round(seconds, 3),
        }
        _write_file(engine_path.with_suffix(".json"), json.dumps(meta, indent=2).encode())
        log.info("built %s in %.1f s", engine_path, seconds)
        return EngineBuild(engine_path, seconds, False, key)


def build_engine(
    onnx_path: Path,
    *,
    precision: str = "fp16",
    calibration: Iterable[np.ndarray] | None = None,
    cache_dir: Path,
    workspace_mb: int = 1024,
    max_batch: int = 8,
    calibration_id: str = "",
    device: int = 0,
    seal: EngineSeal | None = None,
) -> EngineBuild:
    """Build (or find in cache_dir) the TensorRT engine for an ONNX model on this GPU; with
    `seal`, the engine is sealed (and a cached one must carry a valid seal to be reused).

    `calibration` (INT8 only) yields float32 NCHW batches of the product's good images; name
    the set with `calibration_id` (e.g. product + model version) so engines calibrated on other
    images are not reused. `max_batch` bounds a dynamic batch dimension; fixed shapes ignore it.
    """
    session = _GpuSession(device)
    try:
        return _build_in(
            session,
            Path(onnx_path),
            precision=precision,
            calibration=calibration,
            cache_dir=Path(cache_dir),
            workspace_mb=workspace_mb,
            max_batch=max_batch,
            calibration_id=calibration_id,
            seal=seal,
        )
    finally:
        session.close()


def _free_pinned(array: np.ndarray) -> None:
    """Unpin a pycuda.pagelocked_empty array now (its .base is the host allocation)."""
    base: Any = array.base
    if base is not None and hasattr(base, "free"):
        base.free()


# -- running engines --------------------------------------------------------------------------


@dataclass
class _Buffer:
    """One I/O tensor at full capacity: pinned host array and device allocation."""

    name: str
    is_input: bool
    shape: tuple[int, ...]
    host: np.ndarray
    device: Any

    @classmethod
    def allocate(
        cls, cuda: Any, name: str, is_input: bool, shape: tuple[int, ...], dtype: Any
    ) -> _Buffer:
        """Pinned host + device memory for one tensor; nothing stays allocated on failure."""
        host = cuda.pagelocked_empty(shape, dtype)
        try:
            device = cuda.mem_alloc(max(host.nbytes, 1))
        except BaseException:
            _free_pinned(host)
            raise
        # Zeroed once: padding slots of a fixed-batch engine then never hold garbage (NaN/Inf).
        host.fill(0)
        cuda.memset_d8(device, 0, host.nbytes)
        return cls(name, is_input, shape, host, device)

    def free(self) -> None:
        """Release both allocations; the context must be current."""
        self.device.free()
        _free_pinned(self.host)

    @property
    def address(self) -> int:
        return int(self.device)


class _EngineRunner:
    """A deserialized engine, its execution context and buffers; context must be current."""

    def __init__(
        self, session: _GpuSession, engine_path: Path, seal: EngineSeal | None = None
    ) -> None:
        trt, cuda = session.trt, session.cuda
        self._session = session
        try:
            plan = Path(engine_path).read_bytes()
        except OSError as exc:
            raise ModelError(f"{engine_path}: cannot read TensorRT engine: {exc}") from None
        check_sealed(engine_path, plan, seal)  # on the bytes that are deserialized below
        session.logger.take_errors()
        self._runtime = trt.Runtime(session.logger)
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            errors = session.logger.take_errors() or "no reason logged"
            raise ModelError(
                f"{engine_path}: TensorRT {session.trt_version} cannot load this engine on "
                f"{session.gpu.name} ({errors}); it was built for another GPU or TensorRT version, "
                "or the file is damaged: delete it to rebuild from the ONNX model"
            )
        self.engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        shapes = {n: tuple(int(d) for d in engine.get_tensor_shape(n)) for n in names}
        self.dynamic = any(d < 0 for n in self.inputs for d in shapes[n])
        if self.dynamic:
            # Profile 0's max shape is the largest batch the engine accepts.
            self.capacity = int(engine.get_tensor_profile_shape(self.inputs[0], 0)[2][0])
        else:
            self.capacity = shapes[self.inputs[0]][0]
        self.sample_shapes = {n: shapes[n][1:] for n in self.inputs}

        self.context = engine.create_execution_context()
        if self.context is None:
            errors = session.logger.take_errors()
            raise RuntimeUnavailable(
                f"out of GPU memory: cannot create a TensorRT execution context for {engine_path}"
                f"{_memory_report(cuda)}; {errors}"
            )
        if self.dynamic:
            for n in self.inputs:
                self.context.set_input_shape(n, (self.capacity, *self.sample_shapes[n]))
            shapes = {n: tuple(int(d) for d in self.context.get_tensor_shape(n)) for n in names}
        # execute_async_v3 exists from TensorRT 8.5 and is the only one left in 10.x; v2 with a
        # bindings list stays as the fallback for 8.x Python bindings that lack it.
        self._v3 = hasattr(self.context, "execute_async_v3")
        self.buffers: dict[str, _Buffer] = {}
        try:
            for n in names:
                dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(n)))
                self.buffers[n] = _Buffer.allocate(cuda, n, n in self.inputs, shapes[n], dtype)
        except cuda.MemoryError as exc:
            self.free()
            raise RuntimeUnavailable(
                f"out of GPU memory allocating buffers for {engine_path}{_memory_report(cuda)}: "
                f"{exc}"
            ) from None

    def enqueue(self, n: int, stream: Any, addresses: Mapping[str, int] | None = None) -> None:
        """Queue one execution on `stream` for n items; `addresses` rebinds tensors elsewhere."""
        if self.dynamic:
            for name in self.inputs:
                if not self.context.set_input_shape(name, (n, *self.sample_shapes[name])):
                    raise ModelError(f"TensorRT rejected batch {n} for input '{name}'")
        bound = {name: buf.address for name, buf in self.buffers.items()}
        bound.update(addresses or {})
        if self._v3:
            for name, address in bound.items():
                self.context.set_tensor_address(name, address)
            ok = self.context.execute_async_v3(stream.handle)
        else:
            bindings = [0] * len(bound)
            for name, address in bound.items():
                bindings[self.engine.get_binding_index(name)] = address
            ok = self.context.execute_async_v2(bindings, stream.handle)
        if not ok:
            errors = self._session.logger.take_errors() or "no reason logged"
            raise ModelError(f"TensorRT failed to run the engine: {errors}")

    def free(self) -> None:
        """Release device and pinned memory and the TensorRT objects; context must be current."""
        for buf in self.buffers.values():
            buf.free()
        self.buffers.clear()
        # TensorRT frees activation memory when these go; drop them while the context is current.
        self.context = None
        self.engine = None
        self._runtime = None


class TensorRTRuntime:
    """The feature extractor on TensorRT: pinned buffers, one stream, no per-frame GPU allocation.

    Build it in any thread; call it from one thread at a time (the inspector's). Each call pushes
    the GPU's primary context and pops it before returning (see the module docstring).
    """

    kind = RuntimeKind.TENSORRT

    def __init__(
        self,
        onnx_path: Path,
        *,
        cache_dir: Path,
        precision: str = "fp16",
        calibration: Iterable[np.ndarray] | None = None,
        calibration_id: str = "",
        workspace_mb: int = 1024,
        max_batch: int = 8,
        device: int = 0,
        seal: EngineSeal | None = None,
    ) -> None:
        self._setup(_GpuSession(device), Path(cache_dir), workspace_mb, seal)
        options: dict[str, Any] = dict(
            precision=precision,
            calibration=calibration,
            cache_dir=self._cache_dir,
            workspace_mb=workspace_mb,
            max_batch=max_batch,
            calibration_id=calibration_id,
            seal=seal,
        )
        try:
            self.build = _build_in(self._session, Path(onnx_path), **options)
            try:
                self._runner = self._open(self.build.path)
            except ModelError as exc:
                if not self.build.from_cache:
                    raise
                # A cached engine that no longer loads (driver update, damaged file, no valid
                # seal): rebuild, which is what a person would do by hand.
                log.warning("cached engine unusable, rebuilding: %s", exc)
                self.build = _build_in(self._session, Path(onnx_path), force=True, **options)
                self._runner = self._open(self.build.path)
            self._check_io()
        except BaseException:
            self._session.close()
            raise

    @classmethod
    def from_engine(
        cls,
        engine_path: Path,
        *,
        cache_dir: Path | None = None,
        device: int = 0,
        seal: EngineSeal | None = None,
    ) -> TensorRTRuntime:
        """Open a prebuilt engine (with its JSON sidecar); ModelError if built for another GPU."""
        engine_path = Path(engine_path)
        meta = read_engine_metadata(engine_path)
        if not meta:
            raise ModelError(
                f"{engine_path}: no metadata sidecar {engine_path.with_suffix('.json').name}; "
                "engines must come from build_engine so their GPU and TensorRT can be checked"
            )
        self = cls.__new__(cls)
        self._setup(_GpuSession(device), Path(cache_dir or engine_path.parent), 1024, seal)
        try:
            check_engine_metadata(
                meta,
                engine_path=engine_path,
                gpu_name=self._session.gpu.name,
                compute_capability=self._session.gpu.compute_capability,
                tensorrt_version=self._session.trt_version,
            )
            self.build = EngineBuild(engine_path, 0.0, True, str(meta.get("key", "")))
            self._runner = self._open(engine_path)
            self._check_io()
        except BaseException:
            self._session.close()
            raise
        return self

    def _setup(
        self, session: _GpuSession, cache_dir: Path, workspace_mb: int, seal: EngineSeal | None
    ) -> None:
        """State shared by both constructors."""
        self._session = session
        self._seal = seal
        self._cache_dir = cache_dir
        self._workspace_mb = workspace_mb
        self._knn: _EngineRunner | None = None
        self._knn_out: dict[str, _Buffer] = {}
        self.knn_k = 0
        session.on_close.append(self._release_knn_buffers)

    def _check_io(self) -> None:
        """The engine must be the station's feature extractor: images in, features out."""
        runner = self._runner
        if runner.inputs != [INPUT_NAME] or runner.outputs != [OUTPUT_NAME]:
            raise ModelError(
                f"{self.build.path}: expected one input '{INPUT_NAME}' and one output "
                f"'{OUTPUT_NAME}', found inputs {runner.inputs} and outputs {runner.outputs}"
            )
        in_buf, out_buf = runner.buffers[INPUT_NAME], runner.buffers[OUTPUT_NAME]
        if in_buf.host.dtype != np.float32 or out_buf.host.dtype != np.float32:
            raise ModelError(f"{self.build.path}: input and output must be float32")
        if len(in_buf.shape) != 4 or len(out_buf.shape) != 4:
            raise ModelError(
                f"{self.build.path}: expected N x C x H x W input and output, got "
                f"{in_buf.shape} and {out_buf.shape}"
            )
        self.input_shape: tuple[int, ...] = in_buf.shape
        self.output_shape: tuple[int, ...] = out_buf.shape
        self.capacity = runner.capacity

    def _open(self, engine_path: Path) -> _EngineRunner:
        """Deserialize an engine with the session's context current; freed on close()."""
        with self._session.active():
            runner = _EngineRunner(self._session, engine_path, self._seal)
        self._session.on_close.append(runner.free)
        return runner

    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        """The batch as C-contiguous float32 N x C x H x W matching the engine, else ImageError."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != self.input_shape[1:]:
            want = " x ".join(map(str, self.input_shape[1:]))
            raise ImageError(f"batch of shape {x.shape} does not match the engine input N x {want}")
        return x

    def _enqueue_features(self, chunk: np.ndarray) -> int:
        """Copy a chunk in and queue the feature engine; returns its item count."""
        runner, cuda, stream = self._runner, self._session.cuda, self._session.stream
        m = chunk.shape[0]
        in_buf = runner.buffers[INPUT_NAME]
        np.copyto(in_buf.host[:m], chunk)
        cuda.memcpy_htod_async(in_buf.device, in_buf.host[:m], stream)
        runner.enqueue(m, stream)
        return m

    def features(self, batch: np.ndarray) -> np.ndarray:
        """float32 N x 3 x H x W in, float32 N x C x h x w patch features out."""
        x = self._check_batch(batch)
        n, cap = x.shape[0], self.capacity
        out = np.empty((n, *self.output_shape[1:]), dtype=np.float32)
        with self._session.active():
            cuda, stream = self._session.cuda, self._session.stream
            out_buf = self._runner.buffers[OUTPUT_NAME]
            for start in range(0, n, cap):
                m = self._enqueue_features(x[start : start + cap])
                cuda.memcpy_dtoh_async(out_buf.host[:m], out_buf.device, stream)
                stream.synchronize()
                # Copied out: the pinned buffer is overwritten by the next frame.
                out[start : start + m] = out_buf.host[:m]
        return out

    def enable_knn(self, bank: np.ndarray | Path, k: int = 1) -> EngineBuild:
        """Chain a GPU nearest-neighbour engine on the memory bank after the feature engine."""

        bank_arr = load_bank(bank) if isinstance(bank, str | Path) else bank
        _, c, h, w = self.output_shape
        # One image per kNN execution: its P x M distance matrix is the big activation
        # (1600 patches x 40000 bank rows = 256 MB); a whole batch at once would not fit a Jetson.
        one_image = (1, c, h, w)
        build = _build_knn_in(
            self._session, bank_arr, k, self._cache_dir, one_image, self._workspace_mb, self._seal
        )
        self._free_knn()
        try:
            self._knn = self._open(build.path)
        except ModelError as exc:
            if not build.from_cache:
                raise
            log.warning("cached kNN engine unusable, rebuilding: %s", exc)
            build = _build_knn_in(
                self._session, bank_arr, k, self._cache_dir, one_image, self._workspace_mb,
                self._seal, force=True,
            )  # fmt: skip
            self._knn = self._open(build.path)
        self.knn_k = k
        try:
            with self._session.active():
                for name in ("distances", "indices"):
                    # Results of a whole chunk of images, copied back with one transfer each.
                    one = self._knn.buffers[name]
                    shape = (self.capacity * one.shape[0], k)
                    self._knn_out[name] = _Buffer.allocate(
                        self._session.cuda, name, False, shape, one.host.dtype
                    )
        except BaseException:
            self._free_knn()
            raise
        return build

    def _release_knn_buffers(self) -> None:
        """Free the chained kNN output buffers; context must be current; idempotent."""
        for buf in self._knn_out.values():
            buf.free()
        self._knn_out = {}

    def _free_knn(self) -> None:
        """Drop a previous kNN engine at once (a new bank replaces it, memory is tight)."""
        if self._knn is None:
            return
        with self._session.active():
            self._knn.free()
            self._release_knn_buffers()
        self._knn = None

    def patch_knn(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distances (float32) and bank indices (int32), N x h x w x k; features stay on the GPU."""
        x = self._check_batch(batch)
        n, cap = x.shape[0], self.capacity
        _, _, h, w = self.output_shape
        k = self.knn_k
        dist = np.empty((n, h, w, k), dtype=np.float32)
        idx = np.empty((n, h, w, k), dtype=np.int32)
        with self._session.active():
            if self._knn is None:
                raise RuntimeUnavailable("call enable_knn(bank) before patch_knn")
            cuda, stream = self._session.cuda, self._session.stream
            feat = self._runner.buffers[OUTPUT_NAME]
            knn, outs = self._knn, self._knn_out
            per_image = {name: buf.host.nbytes // cap for name, buf in outs.items()}
            feat_bytes = feat.host.nbytes // cap
            knn_in = knn.buffers["features"]
            for start in range(0, n, cap):
                m = self._enqueue_features(x[start : start + cap])
                for i in range(m):
                    # All on one stream, so each step sees the finished output of the previous.
                    src = feat.address + i * feat_bytes
                    if src % _ADDRESS_ALIGNMENT:
                        # TensorRT wants aligned tensor addresses: copy this image's features
                        # to the kNN engine's own input (device to device, no CPU involved).
                        cuda.memcpy_dtod_async(knn_in.device, src, feat_bytes, stream)
                        src = knn_in.address
                    knn.enqueue(1, stream, {"features": src})
                    for name, one in ((nm, knn.buffers[nm]) for nm in ("distances", "indices")):
                        dest = outs[name].address + i * per_image[name]
                        cuda.memcpy_dtod_async(dest, one.device, one.host.nbytes, stream)
                rows = m * h * w
                cuda.memcpy_dtoh_async(
                    outs["distances"].host[:rows], outs["distances"].device, stream
                )
                cuda.memcpy_dtoh_async(outs["indices"].host[:rows], outs["indices"].device, stream)
                stream.synchronize()
                dist[start : start + m] = outs["distances"].host[:rows].reshape(m, h, w, k)
                idx[start : start + m] = outs["indices"].host[:rows].reshape(m, h, w, k)
        return dist, idx

    def close(self) -> None:
        """Free GPU memory and release the context; safe to call twice."""
        self._session.close()

    def __enter__(self) -> TensorRTRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _build_knn_in(
    session: _GpuSession,
    bank: np.ndarray,
    k: int,
    cache_dir: Path,
    feature_shape: tuple[int, int, int, int] | None,
    workspace_mb: int,
    seal: EngineSeal | None = None,
    *,
    force: bool = False,
    max_points: int = 1,
) -> EngineBuild:
    """Write the kNN ONNX graph into the cache (named by its hash) and build its fp32 engine."""
    onnx_path = write_knn_onnx(bank, k, cache_dir=cache_dir, feature_shape=feature_shape)
    return _build_in(
        session,
        onnx_path,
        precision="fp32",  # fp16 distances lose the small differences PatchCore scores on
        calibration=None,
        cache_dir=cache_dir,
        workspace_mb=workspace_mb,
        max_batch=max_points,
        calibration_id="",
        force=force,
        seal=seal,
    )
