"""Arithmetic floors for the benchmark: FLOPs of the extractor and of the kNN, and a GEMM rate."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn


def extractor_flops(module: nn.Module, image_size: int) -> float:
    """Multiply-adds x 2 of every convolution and linear layer for one 3 x S x S input."""
    total = 0.0

    def conv_hook(m: nn.Conv2d, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += 2.0 * out.numel() * k

    hooks = [
        m.register_forward_hook(conv_hook) for m in module.modules() if isinstance(m, nn.Conv2d)
    ]
    try:
        with torch.inference_mode():
            module(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in hooks:
            h.remove()
    return total


def knn_flops(queries: int, bank: int, dim: int) -> float:
    """Exact L2 search as one GEMM (2 P M C) plus norms and the min (about 3 P M)."""
    return 2.0 * queries * bank * dim + 3.0 * queries * bank


def distance_flops(distances: int, dim: int) -> float:
    """The floor of `distances` query-to-bank L2 distances, at exact search's cost per distance.

    knn_flops(P, M, C) == distance_flops(P * M, C): an index that computes fewer distances
    (HNSW, IVF) gets a floor for the work it does. A direct distance costs 3C, more than the
    GEMM's 2C + 3, so the floor stays a lower bound.
    """
    return float(distances) * (2.0 * dim + 3.0)


def gemm_gflops(n: int = 1024, repeats: int = 5) -> float:
    """Best sustained float32 GEMM rate of this machine right now, in GFLOP/s."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    a @ b  # warm-up: BLAS thread pool start
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best / 1e9
