"""TensorRT runtime and GPU kNN.

Three kinds of test:
- pure functions (cache key, metadata check, calibration batching, kNN ONNX graph on
  onnxruntime, error messages when tensorrt/pycuda/GPU are missing): run everywhere;
- the runtime end to end, parametrised over two backends: "emulated" (an in-process stand-in
  for the tensorrt and pycuda APIs, executing engines with onnxruntime on a fake device heap, so
  buffers, chunking, caching, context push/pop and the chained kNN address arithmetic run on
  any PC) and "gpu" (the real libraries; marked `gpu`, skipped without them);
- emulation-only fault injection (out of memory, TensorRT 8.6 code paths, execute_async_v2).

The emulation checks this code against our reading of the TensorRT/pycuda APIs, not the APIs
themselves: only the "gpu" parameters prove it on hardware (`pytest -m gpu`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from station.core.errors import ImageError, ModelError, RuntimeUnavailable
from station.runtime import tensorrt_runtime as trt_rt
from station.runtime.base import Runtime, RuntimeKind
from station.runtime.gpu_knn import GpuKnn, build_knn_engine
from station.runtime.knn_graph import knn_onnx_model, write_knn_onnx
from station.runtime.tensorrt_runtime import (
    TensorRTRuntime,
    build_engine,
    calibration_batches,
    check_engine_metadata,
    engine_cache_key,
    onnx_digest_bytes,
    parse_version,
    unavailable_reason,
)

GPU_REASON = unavailable_reason()
needs_gpu = pytest.mark.skipif(
    GPU_REASON is not None,
    reason=f"tensorrt/pycuda not installed or no NVIDIA GPU: {GPU_REASON}",
)

SIZE = 64  # tiny model input; features come out at SIZE / 8
CHANNELS = 32


# -- models ---------------------------------------------------------------------------------


def export_convnet(
    path: Path, *, seed: int = 0, dynamic: bool = True, batch: int = 2, size: int = SIZE
) -> Path:
    """A tiny stride-8 conv net exported like the station's extractor: images -> features."""
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 24, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(24, CHANNELS, 3, stride=2, padding=1),
    ).eval()
    example = torch.randn(batch, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            net,
            (example,),
            str(path),
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": {0: "n"}, "features": {0: "n"}} if dynamic else None,
            opset_version=17,
            dynamo=False,  # the station's exporter; the dynamo one needs onnxscript
        )
    return path


def ort_features(onnx_path: Path, batch: np.ndarray) -> np.ndarray:
    """Reference features from onnxruntime on the CPU."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"images": batch})[0])


def brute_knn(points: np.ndarray, bank: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest bank rows in float64."""
    d = np.sqrt(
        ((points[:, None, :].astype(np.float64) - bank[None].astype(np.float64)) ** 2).sum(-1)
    )
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, axis=1), idx


def images(n: int, seed: int = 1, size: int = SIZE) -> np.ndarray:
    """Random normalised float32 N x 3 x size x size batch."""
    return np.random.default_rng(seed).normal(size=(n, 3, size, size)).astype(np.float32)


# -- pure functions ----------------------------------------------------------------------------


KEY_ARGS: dict[str, Any] = dict(
    precision="fp16",
    tensorrt_version="10.3.0",
    gpu_name="Orin",
    compute_capability=(8, 7),
    max_batch=8,
    calibration_id="",
)


def test_cache_key_is_deterministic() -> None:
    assert engine_cache_key(b"model", **KEY_ARGS) == engine_cache_key(b"model", **KEY_ARGS)
    assert len(engine_cache_key(b"model", **KEY_ARGS)) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"precision": "fp32"},
        {"precision": "int8"},
        {"tensorrt_version": "8.6.2"},
        {"gpu_name": "NVIDIA GeForce RTX 4090"},
        {"compute_capability": (8, 9)},
        {"max_batch": 4},
    ],
)
def test_cache_key_changes_with_each_input(change: dict[str, Any]) -> None:
    assert engine_cache_key(b"model", **{**KEY_ARGS, **change}) != engine_cache_key(
        b"model", **KEY_ARGS
    )


def test_cache_key_changes_with_onnx_bytes() -> None:
    assert engine_cache_key(b"model-a", **KEY_ARGS) != engine_cache_key(b"model-b", **KEY_ARGS)


def test_cache_key_calibration_id_matters_only_for_int8() -> None:
    fp16 = {**KEY_ARGS, "precision": "fp16"}
    int8 = {**KEY_ARGS, "precision": "int8"}
    assert engine_cache_key(b"m", **fp16) == engine_cache_key(
        b"m", **{**fp16, "calibration_id": "x"}
    )
    assert engine_cache_key(b"m", **int8) != engine_cache_key(
        b"m", **{**int8, "calibration_id": "x"}
    )


def test_onnx_digest_covers_external_weights(tmp_path: Path) -> None:
    model = knn_onnx_model(np.ones((64, 8), np.float32), 1)
    path = tmp_path / "m.onnx"
    onnx.save_model(
        model, str(path), save_as_external_data=True, location="m.data", size_threshold=0
    )
    before = onnx_digest_bytes(path)
    data = bytearray((tmp_path / "m.data").read_bytes())
    data[0] ^= 0xFF
    (tmp_path / "m.data").write_bytes(bytes(data))
    assert onnx_digest_bytes(path) != before


def test_onnx_digest_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        onnx_digest_bytes(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\x00 not protobuf")
    with pytest.raises(ModelError, match=r"bad\.onnx"):
        onnx_digest_bytes(bad)


def test_engine_metadata_for_another_gpu_is_refused() -> None:
    meta = {"gpu": "NVIDIA GeForce RTX 3060", "compute_capability": "8.6", "tensorrt": "10.3.0"}
    with pytest.raises(ModelError, match=r"built for NVIDIA GeForce RTX 3060 .* has Orin"):
        check_engine_metadata(
            meta,
            engine_path=Path("x.engine"),
            gpu_name="Orin",
            compute_capability=(8, 7),
            tensorrt_version="10.3.0",
        )
    with pytest.raises(ModelError, match=r"TensorRT 10\.3\.0, this machine has TensorRT 8\.6\.2"):
        check_engine_metadata(
            meta,
            engine_path=Path("x.engine"),
            gpu_name="NVIDIA GeForce RTX 3060",
            compute_capability=(8, 6),
            tensorrt_version="8.6.2",
        )
    with pytest.raises(ModelError, match="cache key"):
        check_engine_metadata(
            {**meta, "key": "a"},
            engine_path=Path("x.engine"),
            gpu_name="NVIDIA GeForce RTX 3060",
            compute_capability=(8, 6),
            tensorrt_version="10.3.0",
            key="b",
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8.6.1.post1", (8, 6, 1, 1)), ("10.3.0", (10, 3, 0)), ("8.5.3.1", (8, 5, 3, 1)), ("x", ())],
)
def test_parse_version(text: str, expected: tuple[int, ...]) -> None:
    assert parse_version(text)[: len(expected)] == expected[: len(parse_version(text))]
    assert parse_version(text)[:2] == expected[:2]


def test_calibration_batches_regroup_and_pad() -> None:
    src = [np.full((3, 2, 4, 4), i, np.float32) for i in range(3)]  # 9 images
    out = list(calibration_batches(src, (4, 2, 4, 4)))
    assert [b.shape for b in out] == [(4, 2, 4, 4)] * 3
    assert out[2][0, 0, 0, 0] == 2 and out[2][1, 0, 0, 0] == 2  # image 9, then repeated
    single = list(calibration_batches([np.zeros((2, 4, 4))], (2, 2, 4, 4)))
    assert len(single) == 1 and single[0].dtype == np.float32
    with pytest.raises(ModelError, match="does not match the model input"):
        list(calibration_batches([np.zeros((1, 3, 5, 5))], (2, 2, 4, 4)))


# -- kNN graph on onnxruntime (CPU) ---------------------------------------------------------------


def run_onnx(model: onnx.ModelProto, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run a kNN graph on onnxruntime's CPU provider."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    dist, idx = sess.run(["distances", "indices"], {"features": features})
    return np.asarray(dist), np.asarray(idx)


@pytest.mark.parametrize(("m", "c", "p", "k"), [(500, 32, 100, 1), (300, 64, 37, 3), (9, 4, 5, 9)])
def test_knn_onnx_model_matches_brute_force(m: int, c: int, p: int, k: int) -> None:
    rng = np.random.default_rng(m + c)
    bank = (rng.normal(size=(m, c)) + 5.0).astype(np.float32)  # offset: norms >> distances
    points = (rng.normal(size=(p, c)) + 5.0).astype(np.float32)
    dist, idx = run_onnx(knn_onnx_model(bank, k), points)
    ref_d, ref_i = brute_knn(points, bank, k)
    assert dist.dtype == np.float32 and idx.dtype == np.int32
    assert dist.shape == idx.shape == (p, k)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-4, atol=1e-3)
    assert (idx == ref_i).all()
    assert (np.diff(dist, axis=1) >= 0).all()


def test_knn_onnx_model_exact_matches_are_near_zero() -> None:
    rng = np.random.default_rng(3)
    bank = (rng.normal(size=(200, 48)) * 2 + 10).astype(np.float32)
    rows = np.array([0, 17, 199])
    dist, idx = run_onnx(knn_onnx_model(bank, 1), bank[rows])
    assert (idx[:, 0] == rows).all()
    assert np.isfinite(dist).all() and (dist >= 0).all()  # clamp before sqrt: no NaN
    assert dist.max() < 0.02  # d² cancellation error, sqrt-amplified; centring keeps it small


def test_knn_onnx_model_on_feature_maps() -> None:
    rng = np.random.default_rng(4)
    bank = rng.normal(size=(120, 16)).astype(np.float32)
    fmap = rng.normal(size=(2, 16, 3, 5)).astype(np.float32)
    dist, idx = run_onnx(knn_onnx_model(bank, 2, feature_shape=(2, 16, 3, 5)), fmap)
    points = fmap.transpose(0, 2, 3, 1).reshape(-1, 16)  # row order n, y, x
    ref_d, ref_i = brute_knn(points, bank, 2)
    assert dist.shape == (2 * 3 * 5, 2)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-4, atol=1e-4)
    assert (idx == ref_i).all()


def test_knn_onnx_model_rejects_bad_input() -> None:
    bank = np.zeros((4, 3), np.float32)
    with pytest.raises(ModelError, match="k must be between 1 and 4"):
        knn_onnx_model(bank, 5)
    with pytest.raises(ModelError, match="M x C"):
        knn_onnx_model(np.zeros((4,), np.float32), 1)
    with pytest.raises(ModelError, match="NaN"):
        knn_onnx_model(np.full((4, 3), np.nan, np.float32), 1)
    with pytest.raises(ModelError, match="8 channels, the memory bank 3"):
        knn_onnx_model(bank, 1, feature_shape=(1, 8, 2, 2))


def test_write_knn_onnx_is_named_by_content(tmp_path: Path) -> None:
    bank = np.eye(6, dtype=np.float32)
    a = write_knn_onnx(bank, 1, cache_dir=tmp_path)
    assert write_knn_onnx(bank, 1, cache_dir=tmp_path) == a
    assert write_knn_onnx(bank, 2, cache_dir=tmp_path) != a
    assert write_knn_onnx(bank * 2, 1, cache_dir=tmp_path) != a
    onnx.checker.check_model(str(a))
    # A cached graph edited in place (same size, other bank values) is written again.
    good = a.read_bytes()
    edited = bytearray(good)
    edited[-40] ^= 0xFF
    a.write_bytes(bytes(edited))
    assert write_knn_onnx(bank, 1, cache_dir=tmp_path) == a and a.read_bytes() == good


# -- missing libraries and GPU --------------------------------------------------------------------


def test_module_imports_without_tensorrt() -> None:
    # A fresh interpreter where `import tensorrt` / `import pycuda` fail, as on a plain PC.
    code = (
        "import sys; sys.modules['tensorrt'] = None; sys.modules['pycuda'] = None\n"
        "import station.runtime.tensorrt_runtime as m, station.runtime.gpu_knn\n"
        "print(m.unavailable_reason())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("TensorRT is not installed"), out.stdout + out.stderr


def test_runtime_without_tensorrt_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(RuntimeUnavailable, match=r"TensorRT is not installed.*install\.sh"):
        TensorRTRuntime(tmp_path / "m.onnx", cache_dir=tmp_path)
    with pytest.raises(RuntimeUnavailable, match="TensorRT is not installed"):
        build_engine(tmp_path / "m.onnx", cache_dir=tmp_path)


def test_tensorrt_too_old(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.5.3.1"))
    with pytest.raises(RuntimeUnavailable, match=r"TensorRT 8\.5\.3\.1 is too old.*8\.6 or newer"):
        TensorRTRuntime(tmp_path / "m.onnx", cache_dir=tmp_path)


def test_pycuda_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(RuntimeUnavailable, match="pycuda is not installed"):
        TensorRTRuntime(tmp_path / "m.onnx", cache_dir=tmp_path)


def test_no_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = FakeGpu(no_gpu=True)
    fake.install(monkeypatch)
    with pytest.raises(RuntimeUnavailable, match=r"no NVIDIA GPU: .*no CUDA-capable device"):
        TensorRTRuntime(tmp_path / "m.onnx", cache_dir=tmp_path)


# -- emulated tensorrt + pycuda -----------------------------------------------------------------


class FakeGpu:
    """Stand-ins for the `tensorrt` and `pycuda.driver` modules, sharing one fake device.

    Device memory is a heap of numpy blocks addressed by integers (so pointer arithmetic works);
    every device operation demands a context pushed in the calling thread; engines run their
    ONNX file on onnxruntime, reading inputs from and writing outputs to device addresses.
    """

    def __init__(
        self,
        *,
        trt_version: str = "10.3.0",
        gpu_name: str = "Fake Orin",
        v3: bool = True,
        no_gpu: bool = False,
        memory_limit: int | None = None,
        fail_context: bool = False,
    ) -> None:
        self.trt_version, self.gpu_name, self.v3 = trt_version, gpu_name, v3
        self.no_gpu, self.memory_limit, self.fail_context = no_gpu, memory_limit, fail_context
        self.blocks: dict[int, np.ndarray] = {}
        self.next_addr = 1 << 32
        self.host_live = 0
        self.retained = 0
        self.builds = 0
        self.network_flags: list[int] = []
        self.builder_flags: list[set[str]] = []
        self.calibrated_batches: list[np.ndarray] = []
        self.executions = 0
        self._local = threading.local()
        self.cuda = self._make_cuda()
        self.trt = self._make_trt()

    # -- shared state
    def stack(self) -> list[Any]:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def require_context(self) -> None:
        if not self.stack():
            raise self.cuda.LogicError("no CUDA context current in this thread")

    def alloc(self, nbytes: int) -> int:
        self.require_context()
        used = sum(b.nbytes for b in self.blocks.values())
        if self.memory_limit is not None and used + nbytes > self.memory_limit:
            raise self.cuda.MemoryError("cuMemAlloc failed: out of memory")
        addr = self.next_addr
        self.next_addr += (nbytes + 255) // 256 * 256 + 256
        self.blocks[addr] = np.zeros(nbytes, np.uint8)
        return addr

    def view(self, addr: int, nbytes: int) -> np.ndarray:
        for start, block in self.blocks.items():
            if start <= addr < start + max(block.nbytes, 1):
                off = addr - start
                assert off + nbytes <= block.nbytes, "device access past the end of a buffer"
                return block[off : off + nbytes]
        raise AssertionError(f"invalid device address {addr:#x}")

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeGpu:
        pycuda = types.ModuleType("pycuda")
        pycuda.driver = self.cuda  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "tensorrt", self.trt)
        monkeypatch.setitem(sys.modules, "pycuda", pycuda)
        monkeypatch.setitem(sys.modules, "pycuda.driver", self.cuda)
        monkeypatch.setattr(trt_rt._TrtLogger, "instance", None)  # logger of the fake module
        return self

    def assert_released(self) -> None:
        assert self.blocks == {}, f"{len(self.blocks)} device allocations leaked"
        assert self.host_live == 0, f"{self.host_live} pinned host allocations leaked"
        assert self.stack() == [], "a context was left pushed"
        assert self.retained == 0, "primary context still retained"

    # -- pycuda.driver
    def _make_cuda(self) -> types.ModuleType:
        gpu = self
        cuda = types.ModuleType("pycuda.driver")

        class Error(Exception):
            pass

        class MemoryError_(Error):
            pass

        class LogicError(Error):
            pass

        cuda.Error, cuda.MemoryError, cuda.LogicError = Error, MemoryError_, LogicError  # type: ignore[attr-defined]

        def init() -> None:
            if gpu.no_gpu:
                raise Error("cuInit failed: no CUDA-capable device is detected")

        class Context:
            def push(self) -> None:
                gpu.stack().append(self)

            @staticmethod
            def pop() -> None:
                if not gpu.stack():
                    raise LogicError("context stack empty")
                gpu.stack().pop()

            def detach(self) -> None:
                gpu.retained -= 1

        class Device:
            def __init__(self, index: int) -> None:
                assert index == 0

            @staticmethod
            def count() -> int:
                return 1

            def name(self) -> str:
                return gpu.gpu_name

            def compute_capability(self) -> tuple[int, int]:
                return (8, 7)

            def total_memory(self) -> int:
                return 8 << 30

            def retain_primary_context(self) -> Context:
                gpu.retained += 1
                return Context()

        class DeviceAllocation:
            def __init__(self, nbytes: int) -> None:
                self.addr = gpu.alloc(nbytes)

            def __int__(self) -> int:
                return self.addr

            def free(self) -> None:
                gpu.require_context()
                assert self.addr in gpu.blocks, "double free"
                del gpu.blocks[self.addr]

        class HostAllocation:
            def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
                dt = np.dtype(dtype)
                self._buf = np.zeros(int(np.prod(shape)) * dt.itemsize + 1, np.uint8)
                self.__array_interface__ = {
                    "version": 3,
                    "shape": tuple(shape),
                    "typestr": dt.str,
                    "data": (self._buf.ctypes.data, False),
                }
                self.freed = False
                gpu.host_live += 1

            def free(self) -> None:
                assert not self.freed, "pinned memory freed twice"
                self.freed = True
                gpu.host_live -= 1

        def pagelocked_empty(shape: Any, dtype: Any) -> np.ndarray:
            gpu.require_context()
            shape = (shape,) if isinstance(shape, int) else tuple(shape)
            return np.asarray(HostAllocation(shape, dtype))

        class Stream:
            def __init__(self) -> None:
                gpu.require_context()
                self.handle = id(self)

            def synchronize(self) -> None:
                gpu.require_context()

        def memcpy_htod(dest: Any, src: np.ndarray, stream: Any = None) -> None:
            gpu.require_context()
            src = np.ascontiguousarray(src)
            gpu.view(int(dest), src.nbytes)[:] = src.reshape(-1).view(np.uint8)

        def memcpy_dtoh(dest: np.ndarray, src: Any, stream: Any = None) -> None:
            gpu.require_context()
            assert dest.flags.c_contiguous
            data = gpu.view(int(src), dest.nbytes).copy()
            np.copyto(dest, data.view(dest.dtype).reshape(dest.shape))

        def memcpy_dtod(dest: Any, src: Any, size: int, stream: Any = None) -> None:
            gpu.require_context()
            gpu.view(int(dest), size)[:] = gpu.view(int(src), size)

        def memset_d8(dest: Any, value: int, count: int) -> None:
            gpu.require_context()
            gpu.view(int(dest), count)[:] = value

        def mem_get_info() -> tuple[int, int]:
            return (1 << 30, 8 << 30)

        for name, obj in dict(
            init=init,
            Context=Context,
            Device=Device,
            Stream=Stream,
            mem_alloc=DeviceAllocation,
            pagelocked_empty=pagelocked_empty,
            memcpy_htod=memcpy_htod,
            memcpy_htod_async=memcpy_htod,
            memcpy_dtoh=memcpy_dtoh,
            memcpy_dtoh_async=memcpy_dtoh,
            memcpy_dtod_async=memcpy_dtod,
            memset_d8=memset_d8,
            mem_get_info=mem_get_info,
        ).items():
            setattr(cuda, name, obj)
        return cuda

    # -- tensorrt
    def _make_trt(self) -> types.ModuleType:
        gpu = self
        trt = types.ModuleType("tensorrt")
        trt.__version__ = gpu.trt_version  # type: ignore[attr-defined]

        class ILogger:
            def __init__(self) -> None:
                pass

        class IInt8EntropyCalibrator2:
            def __init__(self) -> None:
                pass

        ns = types.SimpleNamespace
        trt.NetworkDefinitionCreationFlag = ns(EXPLICIT_BATCH=0)  # type: ignore[attr-defined]
        trt.MemoryPoolType = ns(WORKSPACE="workspace")  # type: ignore[attr-defined]
        trt.BuilderFlag = ns(FP16="FP16", INT8="INT8", TF32="TF32")  # type: ignore[attr-defined]
        trt.TensorIOMode = ns(INPUT="input", OUTPUT="output")  # type: ignore[attr-defined]
        trt.nptype = lambda dt: dt  # type: ignore[attr-defined]
        trt.ILogger, trt.IInt8EntropyCalibrator2 = ILogger, IInt8EntropyCalibrator2  # type: ignore[attr-defined]

        class Network:
            def __init__(self) -> None:
                self.inputs: list[Any] = []
                self.onnx = ""

            @property
            def num_inputs(self) -> int:
                return len(self.inputs)

            def get_input(self, i: int) -> Any:
                return self.inputs[i]

        class OnnxParser:
            def __init__(self, network: Network, logger: Any) -> None:
                self.network, self.num_errors = network, 0

            def parse_from_file(self, path: str) -> bool:
                model = onnx.load(path)
                init = {t.name for t in model.graph.initializer}
                for vi in model.graph.input:
                    if vi.name in init:
                        continue
                    dims = [
                        d.dim_value if d.HasField("dim_value") else -1
                        for d in vi.type.tensor_type.shape.dim
                    ]
                    self.network.inputs.append(ns(name=vi.name, shape=tuple(dims)))
                self.network.onnx = path
                return True

        class Profile:
            def __init__(self) -> None:
                self.shapes: dict[str, list[list[int]]] = {}

            def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
                self.shapes[name] = [list(lo), list(opt), list(hi)]

        class Config:
            def __init__(self) -> None:
                self.flags = {"TF32"}  # TensorRT's default
                self.profiles: list[Profile] = []
                self.int8_calibrator: Any = None
                self.pool: dict[str, int] = {}

            def set_memory_pool_limit(self, pool: str, size: int) -> None:
                self.pool[pool] = size

            def set_flag(self, flag: str) -> None:
                self.flags.add(flag)

            def clear_flag(self, flag: str) -> None:
                self.flags.discard(flag)

            def add_optimization_profile(self, profile: Profile) -> int:
                self.profiles.append(profile)
                return len(self.profiles) - 1

            def set_calibration_profile(self, profile: Profile) -> None:
                assert profile in self.profiles

        class Builder:
            def __init__(self, logger: Any) -> None:
                self.logger = logger

            def create_network(self, flags: int) -> Network:
                gpu.network_flags.append(flags)
                return Network()

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network: Network, config: Config) -> Any:
                gpu.require_context()
                gpu.builds += 1
                gpu.builder_flags.append(set(config.flags))
                profiles = config.profiles[0].shapes if config.profiles else {}
                if "INT8" in config.flags:
                    calib = config.int8_calibrator
                    if calib.read_calibration_cache() is None:
                        name = network.inputs[0].name
                        shape = profiles[name][1] if profiles else list(network.inputs[0].shape)
                        assert calib.get_batch_size() == shape[0]
                        while (ptrs := calib.get_batch([name])) is not None:
                            nbytes = int(np.prod(shape)) * 4
                            data = gpu.view(ptrs[0], nbytes).copy().view(np.float32)
                            gpu.calibrated_batches.append(data.reshape(shape))
                        calib.write_calibration_cache(memoryview(b"fake calibration table"))
                plan = {"magic": "fake-trt", "onnx": network.onnx, "profiles": profiles}
                return memoryview(json.dumps({**plan, "gpu": gpu.gpu_name}).encode())

        class Engine:
            def __init__(self, plan: dict[str, Any]) -> None:
                import onnxruntime as ort

                self.sess = ort.InferenceSession(plan["onnx"], providers=["CPUExecutionProvider"])
                self.profiles = plan["profiles"]
                types_ = {"tensor(float)": np.float32, "tensor(int32)": np.int32}
                self.io: list[tuple[str, str, tuple[int, ...], Any]] = []
                for mode, items in (
                    ("input", self.sess.get_inputs()),
                    ("output", self.sess.get_outputs()),
                ):
                    for t in items:
                        shape = tuple(d if isinstance(d, int) else -1 for d in t.shape)
                        self.io.append((t.name, mode, shape, types_[t.type]))
                self.num_io_tensors = self.num_bindings = len(self.io)

            def _find(self, name: str) -> tuple[str, str, tuple[int, ...], Any]:
                return next(t for t in self.io if t[0] == name)

            def get_tensor_name(self, i: int) -> str:
                return self.io[i][0]

            def get_tensor_mode(self, name: str) -> str:
                return self._find(name)[1]

            def get_tensor_shape(self, name: str) -> tuple[int, ...]:
                return self._find(name)[2]

            def get_tensor_dtype(self, name: str) -> Any:
                return self._find(name)[3]

            def get_tensor_profile_shape(self, name: str, profile: int) -> list[list[int]]:
                return self.profiles[name]

            def get_binding_index(self, name: str) -> int:
                return [t[0] for t in self.io].index(name)

            def create_execution_context(self) -> Any:
                gpu.require_context()
                if gpu.fail_context:
                    return None
                return (V3Context if gpu.v3 else V2Context)(self)

        class V2Context:
            def __init__(self, engine: Engine) -> None:
                self.engine = engine
                self.shapes = {n: s for n, mode, s, _ in engine.io if mode == "input"}
                self.addresses: dict[str, int] = {}

            def set_input_shape(self, name: str, shape: Any) -> bool:
                lo, _, hi = self.engine.profiles[name]
                if not all(a <= b <= c for a, b, c in zip(lo, shape, hi, strict=True)):
                    return False
                self.shapes[name] = tuple(shape)
                return True

            def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                names = [t[0] for t in self.engine.io if t[1] == "output"]
                return dict(zip(names, self.engine.sess.run(names, feeds), strict=True))

            def get_tensor_shape(self, name: str) -> tuple[int, ...]:
                if name in self.shapes:
                    return self.shapes[name]
                feeds = {n: np.zeros(s, self.engine._find(n)[3]) for n, s in self.shapes.items()}
                return tuple(self._run(feeds)[name].shape)

            def _execute(self, addresses: dict[str, int]) -> bool:
                gpu.require_context()
                gpu.executions += 1
                feeds = {}
                for n, s in self.shapes.items():
                    assert all(d >= 0 for d in s), "input shape not set"
                    dt = np.dtype(self.engine._find(n)[3])
                    raw = gpu.view(addresses[n], int(np.prod(s)) * dt.itemsize).copy()
                    feeds[n] = raw.view(dt).reshape(s)
                for n, value in self._run(feeds).items():
                    value = np.ascontiguousarray(value)
                    gpu.view(addresses[n], value.nbytes)[:] = value.reshape(-1).view(np.uint8)
                return True

            def execute_async_v2(self, bindings: list[int], stream_handle: int) -> bool:
                assert all(b % 256 == 0 for b in bindings), "binding not 256-byte aligned"
                return self._execute({t[0]: bindings[i] for i, t in enumerate(self.engine.io)})

        class V3Context(V2Context):
            def set_tensor_address(self, name: str, address: int) -> None:
                assert address % 256 == 0, f"{name}: address {address:#x} not 256-byte aligned"
                self.addresses[name] = address

            def execute_async_v3(self, stream_handle: int) -> bool:
                return self._execute(self.addresses)

        class Runtime:
            def __init__(self, logger: Any) -> None:
                self.logger = logger

            def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
                gpu.require_context()
                try:
                    plan = json.loads(bytes(data))
                    assert plan["magic"] == "fake-trt" and plan["gpu"] == gpu.gpu_name
                except (ValueError, KeyError, AssertionError):
                    self.logger.log(
                        1, "The engine plan file is generated on an incompatible device"
                    )
                    return None
                return Engine(plan)

        trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime  # type: ignore[attr-defined]
        return trt


# -- the runtime end to end: emulated everywhere, real on a GPU ---------------------------------


@pytest.fixture(
    params=[
        pytest.param("emulated"),
        pytest.param("gpu", marks=[pytest.mark.gpu, needs_gpu]),
    ]
)
def backend(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeGpu | None]:
    """FakeGpu installed in place of tensorrt/pycuda, or None for the real libraries."""
    if request.param == "emulated":
        fake = FakeGpu().install(monkeypatch)
        yield fake
        fake.assert_released()
    else:
        yield None


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return export_convnet(tmp_path / "extractor.onnx")


def fp16_tolerance(backend: FakeGpu | None) -> float:
    """Emulation runs fp32 whatever the flags; a real fp16 engine differs by ~1e-3 relative."""
    return 1e-5 if backend is not None else 2e-2


def test_parity_with_onnxruntime_fp32(backend: FakeGpu | None, model: Path, tmp_path: Path) -> None:
    batch = images(3)
    with TensorRTRuntime(model, cache_dir=tmp_path / "eng", precision="fp32") as rt:
        assert isinstance(rt, Runtime) and rt.kind is RuntimeKind.TENSORRT
        out = rt.features(batch)
    ref = ort_features(model, batch)
    assert out.shape == ref.shape == (3, CHANNELS, SIZE // 8, SIZE // 8) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    if backend is not None:
        assert "TF32" not in backend.builder_flags[-1]  # fp32 means fp32, not TF32


def test_parity_fp16_any_batch_size(backend: FakeGpu | None, model: Path, tmp_path: Path) -> None:
    tol = fp16_tolerance(backend)
    with TensorRTRuntime(model, cache_dir=tmp_path / "eng", precision="fp16", max_batch=4) as rt:
        assert rt.capacity == 4
        for n in (1, 4, 5, 11):  # below, at and above the engine's batch limit (chunked)
            batch = images(n, seed=n)
            np.testing.assert_allclose(
                rt.features(batch), ort_features(model, batch), rtol=tol, atol=tol
            )
    if backend is not None:
        assert "FP16" in backend.builder_flags[-1]


def test_fixed_batch_engine_pads_and_chunks(
    backend: FakeGpu | None, model: Path, tmp_path: Path
) -> None:
    fixed = export_convnet(tmp_path / "fixed.onnx", dynamic=False, batch=2)  # same weights
    with TensorRTRuntime(fixed, cache_dir=tmp_path / "eng", precision="fp32") as rt:
        assert rt.capacity == 2
        for n in (1, 2, 5):
            batch = images(n, seed=10 + n)
            np.testing.assert_allclose(
                rt.features(batch), ort_features(model, batch), rtol=1e-4, atol=1e-4
            )


def test_engine_cache_hit_and_miss(backend: FakeGpu | None, model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "eng"
    first = build_engine(model, cache_dir=cache, precision="fp16")
    second = build_engine(model, cache_dir=cache, precision="fp16")
    assert not first.from_cache and second.from_cache
    assert second.path == first.path and second.key == first.key
    assert json.loads(first.path.with_suffix(".json").read_text())["key"] == first.key
    other_precision = build_engine(model, cache_dir=cache, precision="fp32")
    assert not other_precision.from_cache and other_precision.path != first.path
    export_convnet(model, seed=1)  # same file name, new weights
    changed = build_engine(model, cache_dir=cache, precision="fp16")
    assert not changed.from_cache and changed.key != first.key and changed.path != first.path
    if backend is not None:
        assert backend.builds == 3


def test_damaged_cached_engine_is_rebuilt(
    backend: FakeGpu | None, model: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "eng"
    built = build_engine(model, cache_dir=cache, precision="fp32")
    built.path.write_bytes(b"not an engine")
    with TensorRTRuntime(model, cache_dir=cache, precision="fp32") as rt:
        assert not rt.build.from_cache
        np.testing.assert_allclose(
            rt.features(images(1)), ort_features(model, images(1)), atol=1e-4
        )


def test_from_engine_refuses_another_gpu(
    backend: FakeGpu | None, model: Path, tmp_path: Path
) -> None:
    built = build_engine(model, cache_dir=tmp_path, precision="fp32")
    with TensorRTRuntime.from_engine(built.path) as rt:
        assert rt.features(images(2)).shape[0] == 2
    meta = json.loads(built.path.with_suffix(".json").read_text())
    meta["gpu"] = "Some Other GPU"
    built.path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="built for Some Other GPU"):
        TensorRTRuntime.from_engine(built.path)


def test_used_from_another_thread(backend: FakeGpu | None, model: Path, tmp_path: Path) -> None:
    rt = TensorRTRuntime(model, cache_dir=tmp_path, precision="fp32")
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def inspector() -> None:
        try:
            results.append(rt.features(images(2)))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=inspector)
    thread.start()
    thread.join()
    rt.close()
    assert not errors, errors
    np.testing.assert_allclose(results[0], ort_features(model, images(2)), rtol=1e-4, atol=1e-4)


def test_close_is_idempotent_and_final(
    backend: FakeGpu | None, model: Path, tmp_path: Path
) -> None:
    rt = TensorRTRuntime(model, cache_dir=tmp_path, precision="fp32")
    rt.close()
    rt.close()
    with pytest.raises(RuntimeUnavailable, match="closed"):
        rt.features(images(1))


def test_wrong_batch_shape(backend: FakeGpu | None, model: Path, tmp_path: Path) -> None:
    rt = TensorRTRuntime(model, cache_dir=tmp_path, precision="fp32")
    try:
        with pytest.raises(ImageError, match="does not match the engine input N x 3 x 64 x 64"):
            rt.features(np.zeros((1, 3, 32, 32), np.float32))
    finally:
        rt.close()


def test_int8_calibration_and_cache(backend: FakeGpu | None, model: Path, tmp_path: Path) -> None:
    good = [images(3, seed=s) for s in range(4)]  # 12 good images, loader batch 3
    cache = tmp_path / "eng"
    first = build_engine(
        model, cache_dir=cache, precision="int8", calibration=good, max_batch=4, calibration_id="p1"
    )
    calib_files = list(cache.glob("*.calib"))
    assert len(calib_files) == 1 and calib_files[0].stat().st_size > 0
    if backend is not None:
        assert len(backend.calibrated_batches) == 3  # 12 images regrouped to the engine's 4
        np.testing.assert_array_equal(backend.calibrated_batches[0][:3], good[0])
        assert {"INT8", "FP16"} <= backend.builder_flags[-1]
    first.path.unlink()
    # The engine is gone but the calibration table is kept: no images needed to rebuild.
    rebuilt = build_engine(
        model, cache_dir=cache, precision="int8", max_batch=4, calibration_id="p1"
    )
    assert rebuilt.key == first.key and not rebuilt.from_cache
    with pytest.raises(ModelError, match="does not match the model input 3 x 64 x 64"):
        bad = [np.zeros((2, 3, 32, 32), np.float32)]
        build_engine(model, cache_dir=cache, precision="int8", calibration=bad, calibration_id="x")
    with pytest.raises(ModelError, match="calibration got no images"):
        build_engine(model, cache_dir=cache, precision="int8", calibration=[], calibration_id="y")
    assert len(list(cache.glob("*.calib"))) == 1  # no table left behind from the failures
    with pytest.raises(ModelError, match="INT8 needs calibration images"):
        build_engine(model, cache_dir=cache, precision="int8", calibration_id="another product")
    with TensorRTRuntime(
        model, cache_dir=cache, precision="int8", max_batch=4, calibration_id="p1"
    ) as rt:
        assert rt.build.from_cache
        out, ref = rt.features(images(2)), ort_features(model, images(2))
        assert np.isfinite(out).all()
        corr = np.corrcoef(out.ravel(), ref.ravel())[0, 1]
        assert corr > 0.95, corr  # INT8 is approximate; the features must still agree


def test_gpu_knn_matches_numpy(backend: FakeGpu | None, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    bank = rng.normal(size=(300, CHANNELS)).astype(np.float32)
    points = rng.normal(size=(150, CHANNELS)).astype(np.float32)
    np.save(tmp_path / "bank.npy", bank)
    with GpuKnn(tmp_path / "bank.npy", k=3, cache_dir=tmp_path / "eng", max_points=64) as knn:
        dist, idx = knn.search(points)  # 150 points in chunks of 64
    ref_d, ref_i = brute_knn(points, bank, 3)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-4, atol=1e-3)
    assert (idx == ref_i).mean() > 0.99  # a near-tie may swap at fp32 precision
    again = build_knn_engine(bank, 3, cache_dir=tmp_path / "eng", max_points=64)
    assert again.from_cache


@pytest.mark.parametrize("size", [64, 40])  # 40: per-image feature offsets not 256-aligned
def test_chained_patch_knn_matches_numpy(
    backend: FakeGpu | None, tmp_path: Path, size: int
) -> None:
    model = export_convnet(tmp_path / "extractor.onnx", size=size)
    rng = np.random.default_rng(8)
    bank = rng.normal(size=(200, CHANNELS)).astype(np.float32)
    batch = images(5, seed=3, size=size)
    with TensorRTRuntime(model, cache_dir=tmp_path, precision="fp32", max_batch=2) as rt:
        rt.enable_knn(bank, k=2)
        dist, idx = rt.patch_knn(batch)  # 5 images through a batch-2 engine: chunks 2, 2, 1
        rt.enable_knn(bank, k=1)  # a new bank or k replaces the kNN engine
        d1, _ = rt.patch_knn(batch[:1])
    h = w = size // 8
    feats = ort_features(model, batch)
    points = feats.transpose(0, 2, 3, 1).reshape(-1, CHANNELS)
    ref_d, ref_i = brute_knn(points, bank, 2)
    assert dist.shape == idx.shape == (5, h, w, 2)
    np.testing.assert_allclose(dist.reshape(-1, 2), ref_d, rtol=1e-3, atol=1e-3)
    assert (idx.reshape(-1, 2) == ref_i).mean() > 0.99
    np.testing.assert_allclose(d1[..., 0], dist[:1, ..., 0], rtol=1e-5, atol=1e-5)


# -- emulation-only fault injection and version paths -------------------------------------------


def test_tensorrt_86_uses_explicit_batch_and_v2_fallback(
    monkeypatch: pytest.MonkeyPatch, model: Path, tmp_path: Path
) -> None:
    fake = FakeGpu(trt_version="8.6.1.post1", v3=False).install(monkeypatch)
    with TensorRTRuntime(model, cache_dir=tmp_path, precision="fp32") as rt:
        np.testing.assert_allclose(
            rt.features(images(3)), ort_features(model, images(3)), atol=1e-4
        )
    assert fake.network_flags == [1]  # 1 << EXPLICIT_BATCH on 8.x
    fake.assert_released()


def test_tensorrt_10_creates_network_without_flags(
    monkeypatch: pytest.MonkeyPatch, model: Path, tmp_path: Path
) -> None:
    fake = FakeGpu(trt_version="10.3.0").install(monkeypatch)
    build_engine(model, cache_dir=tmp_path, precision="fp32")
    assert fake.network_flags == [0]


def test_out_of_device_memory(monkeypatch: pytest.MonkeyPatch, model: Path, tmp_path: Path) -> None:
    fake = FakeGpu(memory_limit=4096).install(monkeypatch)
    with pytest.raises(RuntimeUnavailable, match=r"out of GPU memory.*MiB free"):
        TensorRTRuntime(model, cache_dir=tmp_path, precision="fp32")
    fake.assert_released()
    fake2 = FakeGpu(fail_context=True).install(monkeypatch)
    with pytest.raises(RuntimeUnavailable, match="out of GPU memory: cannot create"):
        TensorRTRuntime(model, cache_dir=tmp_path, precision="fp32")
    fake2.assert_released()


def test_engine_from_another_gpu_in_cache_dir_is_not_loaded(
    monkeypatch: pytest.MonkeyPatch, model: Path, tmp_path: Path
) -> None:
    FakeGpu(gpu_name="GPU A").install(monkeypatch)
    a = build_engine(model, cache_dir=tmp_path, precision="fp16")
    fake_b = FakeGpu(gpu_name="GPU B").install(monkeypatch)
    with TensorRTRuntime(model, cache_dir=tmp_path, precision="fp16") as rt:
        assert not rt.build.from_cache and rt.build.path != a.path
    assert fake_b.builds == 1
    with pytest.raises(ModelError, match="built for GPU A"):
        TensorRTRuntime.from_engine(a.path)


def test_model_with_other_io_names_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    FakeGpu().install(monkeypatch)
    knn = write_knn_onnx(np.eye(4, dtype=np.float32), 1, cache_dir=tmp_path)
    with pytest.raises(ModelError, match="expected one input 'images' and one output 'features'"):
        TensorRTRuntime(knn, cache_dir=tmp_path, precision="fp32")


def test_unknown_precision(monkeypatch: pytest.MonkeyPatch, model: Path, tmp_path: Path) -> None:
    from station.core.errors import ConfigError

    FakeGpu().install(monkeypatch)
    with pytest.raises(ConfigError, match="'bf16' is not one of fp32, fp16, int8"):
        build_engine(model, cache_dir=tmp_path, precision="bf16")
