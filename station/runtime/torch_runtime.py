"""The reference runtime: the feature extractor in eager PyTorch on the CPU."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from station.runtime.base import RuntimeKind


class TorchRuntime:
    """Runs the extractor module as written; slow but the definition every runtime must match."""

    kind = RuntimeKind.TORCH

    def __init__(self, extractor: nn.Module, threads: int = 0) -> None:
        self.extractor = extractor.eval()
        if threads:
            torch.set_num_threads(threads)

    def features(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.extractor(torch.from_numpy(np.ascontiguousarray(batch))).numpy()

    def close(self) -> None:
        pass
