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
