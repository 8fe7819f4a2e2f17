"""The fast CPU runtime: the exported extractor in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from station.core.errors import ModelError, RuntimeUnavailable
from station.runtime.base import RuntimeKind

ALLOW_SPINNING = "session.intra_op.allow_spinning"


def cpu_session_options(threads: int = 0) -> Any:
    """The options of every ONNX Runtime session the station makes (the extractor's and the
    ONNX kNN graph's): full graph optimisation, `threads` intra-op threads (0: its default),
    and threads that do not spin while they wait."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    # ONNX Runtime's threads spin after every run by default, waiting for the next one; on
    # a few cores they take the cores the kNN search and the screen need between frames.
    # magnetic_tile, 40,000-row bank, HNSW, 2 cores: p50 87 -> 45 ms a part, backbone 40
    # -> 17 ms, kNN 42 -> 21 ms (with OMP_WAIT_POLICY=PASSIVE, station/__init__.py).
    opts.add_session_config_entry(ALLOW_SPINNING, "0")
    return opts


class OnnxRuntime:
    """ONNX Runtime with full graph optimisation (conv+BN fusion, layout transforms)."""

    kind = RuntimeKind.ONNX

    def __init__(self, onnx_path: Path | bytes, threads: int = 0) -> None:
        """`onnx_path` is a file, or the model's bytes (as verified by the artifact loader)."""
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeUnavailable(f"onnxruntime is not installed ({exc})") from None
        try:
            self.session = ort.InferenceSession(
                onnx_path if isinstance(onnx_path, bytes) else str(onnx_path),
                cpu_session_options(threads),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:
            what = "the ONNX model" if isinstance(onnx_path, bytes) else onnx_path
            raise ModelError(f"{what}: ONNX Runtime cannot load it ({exc})") from None
        self._input = self.session.get_inputs()[0].name

    def features(self, batch: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self._input: np.ascontiguousarray(batch, np.float32)})
        return np.asarray(out[0])

    def close(self) -> None:
        pass
