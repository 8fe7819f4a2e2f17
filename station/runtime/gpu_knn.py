"""Nearest-neighbour search against the memory bank on the GPU, as a TensorRT engine.

The graph is `station.runtime.knn_graph`'s (the bank as a constant of a Gemm + TopK); TensorRT
compiles it like any model, so the feature engine's output can feed it on the device
(`TensorRTRuntime.enable_knn`): a frame goes from input batch to patch distances without its
features crossing to the CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from station.core.errors import ModelError
from station.runtime.knn_graph import load_bank
from station.runtime.tensorrt_runtime import (
    EngineBuild,
    _Buffer,
    _build_knn_in,
    _EngineRunner,
    _GpuSession,
)


def build_knn_engine(
    bank: np.ndarray | Path,
    k: int = 1,
    *,
    cache_dir: Path,
    feature_shape: tuple[int, int, int, int] | None = None,
    max_points: int = 2048,
    workspace_mb: int = 1024,
    device: int = 0,
) -> EngineBuild:
    """Build (or find cached) the fp32 kNN engine for a bank; P up to max_points when dynamic."""
    arr = load_bank(bank) if isinstance(bank, str | Path) else np.asarray(bank, np.float32)
    session = _GpuSession(device)
    try:
        return _build_knn_in(
            session, arr, k, Path(cache_dir), feature_shape, workspace_mb, max_points=max_points
        )
    finally:
        session.close()


class GpuKnn:
    """k nearest bank rows for P x C host features, on the GPU (standalone, host in/host out).

    `max_points` bounds one execution: its P x M distance matrix is the engine's big activation
    (2048 x 40000 x 4 bytes = 328 MB). Larger inputs run in chunks. Context handling as in
    TensorRTRuntime: pushed around each call, any one thread at a time.
    """

    def __init__(
        self,
        bank: np.ndarray | Path,
        k: int = 1,
        *,
        cache_dir: Path,
        max_points: int = 2048,
        workspace_mb: int = 1024,
        device: int = 0,
    ) -> None:
        arr = load_bank(bank) if isinstance(bank, str | Path) else np.asarray(bank, np.float32)
        self.k = k
        self.channels = int(arr.shape[1]) if arr.ndim == 2 else 0
        self._session = _GpuSession(device)
        try:
            self.build = _build_knn_in(
                self._session, arr, k, Path(cache_dir), None, workspace_mb, max_points=max_points
            )
            with self._session.active():
                self._runner = _EngineRunner(self._session, self.build.path)
            self._session.on_close.append(self._runner.free)
        except BaseException:
            self._session.close()
            raise

    def search(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distances float32 P x k ascending, indices int32 P x k) for features P x C."""
        x = np.ascontiguousarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise ModelError(
                f"features of shape {x.shape} do not match the bank's {self.channels} channels"
            )
        p, cap = x.shape[0], self._runner.capacity
        dist = np.empty((p, self.k), dtype=np.float32)
        idx = np.empty((p, self.k), dtype=np.int32)
        bufs: dict[str, _Buffer] = self._runner.buffers
        with self._session.active():
            cuda, stream = self._session.cuda, self._session.stream
            for start in range(0, p, cap):
                chunk = x[start : start + cap]
                m = chunk.shape[0]
                np.copyto(bufs["features"].host[:m], chunk)
                cuda.memcpy_htod_async(bufs["features"].device, bufs["features"].host[:m], stream)
                self._runner.enqueue(m, stream)
                cuda.memcpy_dtoh_async(bufs["distances"].host[:m], bufs["distances"].device, stream)
                cuda.memcpy_dtoh_async(bufs["indices"].host[:m], bufs["indices"].device, stream)
                stream.synchronize()
                dist[start : start + m] = bufs["distances"].host[:m]
                idx[start : start + m] = bufs["indices"].host[:m]
        return dist, idx

    def close(self) -> None:
        """Free GPU memory and release the context; safe to call twice."""
        self._session.close()

    def __enter__(self) -> GpuKnn:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
