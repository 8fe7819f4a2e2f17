"""Nearest-neighbour indices over the memory bank: exact, HNSW, IVF-flat and the ONNX kNN graph.

The exact search costs P x M distances per frame (P patches, M bank rows): over a 40,000-row bank
that is several times the backbone. A graph index (HNSW) visits a few hundred rows per patch and
finds the exact nearest one for nearly all of them; PatchCore scores by that distance, so a miss
only ever raises a patch score by the gap to its true nearest neighbour. `plan_search` chooses
the index from the bank's size: exact below `exact_below` rows, where it costs about the
backbone's time or less, HNSW above.

Every index counts the distances it computes, so `station bench` can put its floor on the work
the index really does rather than on an exact search it does not run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from station.config import SEARCH_EXACT_BELOW, SEARCH_METHODS, ModelConfig
from station.core.errors import ConfigError

HNSW_EF_BASE = 28  # efSearch up to 40,000 rows (plan_search)
GRAPH_CHUNK = 256  # query rows per ONNX Runtime call: bounds the P x M distance matrix


@dataclass(frozen=True)
class SearchSpec:
    """The configured search (`model.search*`); 0 means "from the bank size"."""

    method: str = "auto"
    exact_below: int = SEARCH_EXACT_BELOW
    hnsw_m: int = 0
    hnsw_ef: int = 0
    ivf_nprobe: int = 0

    @classmethod
    def from_config(cls, m: ModelConfig) -> SearchSpec:
        """The `model.search*` keys of a config."""
        return cls(
            m.search, m.search_exact_below, m.search_hnsw_m, m.search_hnsw_ef, m.search_ivf_nprobe
        )


@dataclass(frozen=True)
class SearchPlan:
    """The index one bank gets: its kind and every parameter resolved."""

    method: str  # exact | hnsw | ivf | graph
    hnsw_m: int = 0
    hnsw_ef: int = 0
    ef_construction: int = 0
    ivf_nlist: int = 0
    ivf_nprobe: int = 0

    def describe(self) -> str:
        """One line for logs and the bench table, e.g. 'hnsw M 16 ef 48'."""
        if self.method == "hnsw":
            return f"hnsw M {self.hnsw_m} ef {self.hnsw_ef}"
        if self.method == "ivf":
            return f"ivf nlist {self.ivf_nlist} nprobe {self.ivf_nprobe}"
        return self.method


def plan_search(spec: SearchSpec, bank_size: int) -> SearchPlan:
    """Resolve `auto` and the zero (from bank size) parameters for a bank of `bank_size` rows."""
    if spec.method not in SEARCH_METHODS:
        raise ConfigError(
            f"model.search: '{spec.method}' is not one of {', '.join(SEARCH_METHODS)}"
        )
    method = spec.method
    if method == "auto":
        method = "exact" if bank_size < spec.exact_below else "hnsw"
    if method == "hnsw":
        # Larger graphs need a wider beam for the same recall. Measured on magnetic_tile's real
        # features with M 16, ef 32: recall@1 0.9996 at 5,000 rows, 0.9987 at 10,000, 0.9974 at
        # 20,000, 0.9948 at 40,000 (ef 48 there: 0.9975); so +16 for each doubling beyond 40,000.
        # The beam starts at 28: the image score does not depend on it (search_for_score's exact
        # look), only the map's other patches do. At 40,000 rows ef 28 found 0.9945 of them
        # (ef 32: 0.9960); ef 24 found 0.9926 over 40 parts but 0.9896 over 3, too close to the
        # 0.99 the station promises. ef 28 took 0.92 to 0.98x ef 32's kNN time (interleaved runs).
        doublings = max(0.0, math.log2(bank_size / 40_000))
        ef = spec.hnsw_ef or int(HNSW_EF_BASE + 16 * math.ceil(doublings))
        m = spec.hnsw_m or (16 if bank_size <= 200_000 else 32)
        return SearchPlan("hnsw", hnsw_m=m, hnsw_ef=ef, ef_construction=max(40, 2 * m))
    if method == "ivf":
        nlist = max(1, min(bank_size // 39, round(4 * math.sqrt(bank_size))))
        nprobe = spec.ivf_nprobe or max(1, min(nlist, round(nlist / 16)))
        return SearchPlan("ivf", ivf_nlist=nlist, ivf_nprobe=nprobe)
    return SearchPlan(method)


class Index(Protocol):
    """A built index over one bank; `distances` counts the distances computed so far."""

    plan: SearchPlan
    distances: int

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(squared L2 float32 Q x k ascending, int64 Q x k rows of the bank)."""
        ...


class FlatIndex:
    """Exact search as faiss computes it (BLAS GEMM for batches)."""

    def __init__(self, bank: np.ndarray) -> None:
        import faiss

        self.plan = SearchPlan("exact")
        self.distances = 0
        self._size = bank.shape[0]
        self._index = faiss.IndexFlatL2(bank.shape[1])
        self._index.add(bank)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.distances += queries.shape[0] * self._size
        d2, idx = self._index.search(queries, k)
        return d2, idx


class TorchFlatIndex:
    """Exact search in torch: the reference the torch runtime is checked against."""

    def __init__(self, bank: np.ndarray) -> None:
        import torch

        self.plan = SearchPlan("exact")
        self.distances = 0
        self._bank = torch.from_numpy(bank)
        self._sq = (self._bank * self._bank).sum(1)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        self.distances += queries.shape[0] * self._bank.shape[0]
        tq = torch.from_numpy(queries)
        d2 = (tq * tq).sum(1, keepdim=True) - 2.0 * tq @ self._bank.T + self._sq
        vals, ind = torch.topk(d2, k, dim=1, largest=False)
        return vals.numpy(), ind.numpy()


class HnswIndex:
    """faiss HNSW-flat: a navigable small-world graph over the bank, built at load.

    Built on one thread: faiss inserts points in parallel in whatever order the threads reach
    them, so a multi-threaded build gives a slightly different graph at each load, and with it
    different scores for the same part. One thread keeps a model's scores reproducible.
    """

    def __init__(self, bank: np.ndarray, plan: SearchPlan) -> None:
        import faiss

        self.plan = plan
        self.distances = 0
        self._faiss: Any = faiss  # its stubs lack the search parameters and stats
        self._index = faiss.IndexHNSWFlat(bank.shape[1], plan.hnsw_m)
        self._index.hnsw.efConstruction = plan.ef_construction
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            self._index.add(bank)
        finally:
            faiss.omp_set_num_threads(threads)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        params = self._faiss.SearchParametersHNSW()
        params.efSearch = max(self.plan.hnsw_ef, k)
        stats = self._faiss.cvar.hnsw_stats
        stats.reset()  # process-wide: the count is exact for one searching thread at a time
        d2, idx = self._index.search(queries, k, params=params)
        self.distances += int(stats.ndis)
        return d2, idx


class IvfIndex:
    """faiss IVF-flat: k-means cells over the bank, each query scans the `nprobe` nearest cells."""

    def __init__(self, bank: np.ndarray, plan: SearchPlan) -> None:
        import faiss

        self.plan = plan
        self.distances = 0
        self._faiss: Any = faiss  # its stubs lack the search parameters and stats
        self._quantizer = faiss.IndexFlatL2(bank.shape[1])
        self._index = faiss.IndexIVFFlat(self._quantizer, bank.shape[1], plan.ivf_nlist)
        self._index.cp.seed = 0  # the same cells at every load
        self._index.train(bank)
        self._index.add(bank)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        params = self._faiss.SearchParametersIVF()
        params.nprobe = self.plan.ivf_nprobe
        stats = self._faiss.cvar.indexIVF_stats
        stats.reset()
        d2, idx = self._index.search(queries, k, params=params)
        # Distances to the cell centroids, then to every row in the scanned cells.
        self.distances += queries.shape[0] * self.plan.ivf_nlist + int(stats.ndis)
        return d2, idx


class GraphIndex:
    """The ONNX kNN graph (station.runtime.knn_graph: Gemm + TopK) on ONNX Runtime's CPU.

    The same graph TensorRT compiles for the GPU (station.runtime.gpu_knn), so running it here
    checks on any PC the search the GPU would do. Exact, with k fixed when the graph is built;
    other k go to an exact faiss search.
    """

    def __init__(self, bank: np.ndarray, *, k: int = 1, threads: int = 0) -> None:
        import onnxruntime as ort

        from station.runtime.knn_graph import knn_onnx_model
        from station.runtime.onnx_runtime import cpu_session_options

        self.plan = SearchPlan("graph")
        self.distances = 0
        self.k = k
        self._bank = bank
        self._flat: FlatIndex | None = None
        model = knn_onnx_model(bank, k).SerializeToString()
        self._session = ort.InferenceSession(
            model, cpu_session_options(threads), providers=["CPUExecutionProvider"]
        )

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k != self.k:
            if self._flat is None:
                self._flat = FlatIndex(self._bank)
            return self._flat.search(queries, k)
        self.distances += queries.shape[0] * self._bank.shape[0]
        dist, idx = [], []
        for start in range(0, max(1, queries.shape[0]), GRAPH_CHUNK):
            d, i = self._session.run(None, {"features": queries[start : start + GRAPH_CHUNK]})
            dist.append(d)
            idx.append(i)
        d = np.concatenate(dist)
        return d * d, np.concatenate(idx).astype(np.int64)


def build_index(
    bank: np.ndarray, plan: SearchPlan, *, torch_exact: bool = False, threads: int = 0
) -> Index:
    """The index a plan names, over a C-contiguous float32 bank."""
    if plan.method == "exact":
        return TorchFlatIndex(bank) if torch_exact else FlatIndex(bank)
    if plan.method == "hnsw":
        return HnswIndex(bank, plan)
    if plan.method == "ivf":
        return IvfIndex(bank, plan)
    if plan.method == "graph":
        return GraphIndex(bank, threads=threads)
    raise ConfigError(f"model.search: unknown index '{plan.method}'")


__all__ = [
    "GraphIndex",
    "Index",
    "SearchPlan",
    "SearchSpec",
    "build_index",
    "plan_search",
]
