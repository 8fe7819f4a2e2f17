"""The nearest-neighbour search against the memory bank as a small ONNX graph.

The bank (float32 M x C) becomes a constant of the graph:

    d²(x, b) = ||x||² - 2 x·b + ||b||²   (one Gemm with the bank and its squared norms)
    top-k of -d² along the bank axis     (TopK, largest: the k smallest distances)
    distances = sqrt(max(d², 0))         (rounding can make d² slightly negative)

TensorRT compiles it like any model (`station.runtime.gpu_knn`), and it runs on ONNX Runtime too.
This module needs neither TensorRT nor pycuda, so the TensorRT runtime and the GPU kNN both import
it and nothing here imports them back.

Accuracy: the expansion loses precision when two points are much closer than their norms, so
the bank is centred (its mean subtracted from bank and queries; distances do not change) to keep
norms small; on TensorRT the engine is built in fp32 with TF32 off.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from station.core.errors import ModelError
from station.core.files import write_atomic

# ONNX opset / IR pair that TensorRT 8.6's parser and current onnxruntime both accept.
OPSET = 17
IR_VERSION = 8
# TensorRT's TopK layer handles k up to 3840.
MAX_K = 3840


def load_bank(path: Path | str) -> np.ndarray:
    """Read a memory bank .npy (float32 M x C) or raise ModelError naming the file."""
    try:
        bank = np.load(Path(path), allow_pickle=False)
    except FileNotFoundError:
        raise ModelError(f"{path}: memory bank not found") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable .npy memory bank: {exc}") from None
    if bank.ndim != 2 or bank.shape[0] == 0:
        raise ModelError(f"{path}: memory bank must be M x C with M > 0, got shape {bank.shape}")
    return np.ascontiguousarray(bank, dtype=np.float32)


def knn_onnx_model(
    bank: np.ndarray, k: int, *, feature_shape: tuple[int, int, int, int] | None = None
) -> onnx.ModelProto:
    """ONNX graph: features -> (distances, indices) of the k nearest bank rows per point.

    Without `feature_shape` the input "features" is P x C (P dynamic). With feature_shape
    (N, C, h, w) the input is the feature map itself, transposed on the device to N*h*w x C
    points (row order n, y, x). Outputs: "distances" float32 P x k (ascending), "indices"
    int32 P x k (rows of the bank).
    """
    bank = np.asarray(bank, dtype=np.float32)
    if bank.ndim != 2 or bank.shape[0] == 0 or bank.shape[1] == 0:
        raise ModelError(f"memory bank must be M x C with M, C > 0, got shape {bank.shape}")
    if not np.isfinite(bank).all():
        raise ModelError("memory bank contains NaN or infinite values")
    m, c = bank.shape
    if not 1 <= k <= min(m, MAX_K):
        raise ModelError(f"k must be between 1 and {min(m, MAX_K)} for a bank of {m} rows")

    shift = bank.mean(axis=0, dtype=np.float64)
    centred = (bank - shift).astype(np.float32)
    sq_norms = np.einsum("mc,mc->m", centred.astype(np.float64), centred.astype(np.float64))
    inits = [
        numpy_helper.from_array(centred, "bank"),
        numpy_helper.from_array(sq_norms.astype(np.float32)[None, :], "bank_sq"),
        numpy_helper.from_array(shift.astype(np.float32)[None, :], "shift"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([k], dtype=np.int64), "k"),
    ]
    nodes = []
    points_dim: int | str
    if feature_shape is None:
        points_dim = "P"
        inp = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["P", c])
        points = "features"
    else:
        n, fc, h, w = (int(d) for d in feature_shape)
        if fc != c:
            raise ModelError(f"features have {fc} channels, the memory bank {c}")
        points_dim = n * h * w
        inp = helper.make_tensor_value_info("features", TensorProto.FLOAT, [n, fc, h, w])
        inits.append(numpy_helper.from_array(np.array([-1, c], dtype=np.int64), "points_shape"))
        nodes += [
            helper.make_node("Transpose", ["features"], ["nhwc"], perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", ["nhwc", "points_shape"], ["points"]),
        ]
        points = "points"
    nodes += [
        helper.make_node("Sub", [points, "shift"], ["x"]),
        helper.make_node("Mul", ["x", "x"], ["xx"]),
        helper.make_node("ReduceSum", ["xx", "axis1"], ["x_sq"], keepdims=1),
        # -2 x·bᵀ + ||b||² in one Gemm: TensorRT maps it to a single matrix multiply + bias.
        helper.make_node(
            "Gemm", ["x", "bank", "bank_sq"], ["cross"], alpha=-2.0, beta=1.0, transB=1
        ),
        helper.make_node("Add", ["cross", "x_sq"], ["d2"]),
        helper.make_node("Neg", ["d2"], ["neg_d2"]),
        helper.make_node(
            "TopK", ["neg_d2", "k"], ["top_neg", "top_idx"], axis=1, largest=1, sorted=1
        ),
        helper.make_node("Neg", ["top_neg"], ["top_d2"]),
        helper.make_node("Relu", ["top_d2"], ["top_d2_pos"]),  # clamp at 0 before the sqrt
        helper.make_node("Sqrt", ["top_d2_pos"], ["distances"]),
        # int32: TensorRT 8.6 has no int64 outputs, and 2^31 bank rows is far beyond need.
        helper.make_node("Cast", ["top_idx"], ["indices"], to=TensorProto.INT32),
    ]
    outputs = [
        helper.make_tensor_value_info("distances", TensorProto.FLOAT, [points_dim, k]),
        helper.make_tensor_value_info("indices", TensorProto.INT32, [points_dim, k]),
    ]
    graph = helper.make_graph(nodes, "station_knn", [inp], outputs, initializer=inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="station.gpu_knn",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def write_knn_onnx(
    bank: np.ndarray,
    k: int,
    *,
    cache_dir: Path,
    feature_shape: tuple[int, int, int, int] | None = None,
) -> Path:
    """Save knn_onnx_model under cache_dir, named by its content hash; reuse it if present."""
    data = knn_onnx_model(bank, k, feature_shape=feature_shape).SerializeToString()
    path = Path(cache_dir) / f"knn-{hashlib.sha256(data).hexdigest()[:16]}.onnx"
    # Reused only when its bytes are these: a file of the same size with other content
    # (another bank, an edit) would give other neighbours.
    try:
        same = path.is_file() and path.read_bytes() == data
    except OSError:
        same = False
    if not same:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
    return path
