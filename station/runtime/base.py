"""The runtime contract: turn a preprocessed batch into aggregated patch features."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from station.core.compat import StrEnum


class RuntimeKind(StrEnum):
    TORCH = "torch"
    ONNX = "onnx"
    TENSORRT = "tensorrt"


@runtime_checkable
class Runtime(Protocol):
    """Runs the feature extractor (backbone + local aggregation + concatenation).

    `features(batch)` takes float32 NCHW, normalised, at the model's input size, and returns
    float32 N x C x h x w patch features (h, w = input / 8). Every runtime gives the same numbers
    within floating-point tolerance; the conformance test checks it.
    """

    kind: RuntimeKind

    def features(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


class EngineSeal(Protocol):
    """Seals what a runtime builds on this machine (TensorRT engines) and checks seals on
    reuse: a model's signature covers its ONNX file, not an engine built from it later."""

    def seal(self, data: bytes) -> bytes:
        """The seal record for `data`."""
        ...

    def check(self, data: bytes, record: bytes, what: str) -> None:
        """ModelError naming `what` unless `record` is a trusted seal of `data`."""
        ...
