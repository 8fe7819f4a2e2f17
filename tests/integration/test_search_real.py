"""Nearest-neighbour search on real features (magnetic_tile, ../shared/data): HNSW against exact
search (recall@1, scores, AUROC), the ONNX kNN graph on ONNX Runtime against faiss (maps,
AUROC), and `station bench`'s recall and counted distances on the same model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from station.cli import main
from station.config import ModelConfig
from station.core.imageio import list_images, read_image
from station.inspect.metrics import auroc
from station.model.patchcore import PatchCore, training_images
from station.model.search import SearchSpec
from station.model.training import fit

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "magnetic_tile"
N_TRAIN = 120


@pytest.fixture(scope="module")
def tile_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model fitted on 120 real tiles with the default config: a bank of about 12,000 rows,
    above the size where `auto` leaves exact search."""
    if not DATA.is_dir():
        pytest.skip(f"{DATA} is absent (the shared real-image sets live beside the repository)")
    files = training_images(DATA)
    out = tmp_path_factory.mktemp("search") / "mt"
    fit(files[:: len(files) // N_TRAIN][:N_TRAIN], ModelConfig(), out)
    return out


def _test_set() -> tuple[list[np.ndarray], list[int]]:
    """6 good tiles and 1 of each defect type, spread over the test folders."""
    images, labels = [], []
    for folder in sorted((DATA / "test").iterdir()):
        files = list_images(folder)
        n = 6 if folder.name == "good" else 1
        for f in files[:: max(1, len(files) // n)][:n]:
            images.append(read_image(f))
            labels.append(int(folder.name != "good"))
    return images, labels


def _run(model: PatchCore, images: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    preds = [model.predict(img) for img in images]
    return np.array([p.score for p in preds]), [p.anomaly_map for p in preds]


@pytest.mark.slow
def test_hnsw_finds_the_exact_nearest_patch_on_real_features(tile_model: Path):
    from station.commands.bench import search_recall

    images, labels = _test_set()
    auto = PatchCore.load(tile_model, "onnx")  # the default: auto
    exact = PatchCore.load(tile_model, "onnx", search=SearchSpec("exact"))
    try:
        assert auto.bank.size > SearchSpec().exact_below
        assert auto.bank.plan.method == "hnsw"
        r = search_recall(auto, images)
        assert r["patches"] > 8_000
        assert r["recall_at_1"] >= 0.99, r
        s_auto, _ = _run(auto, images)
        s_exact, _ = _run(exact, images)
    finally:
        auto.close()
        exact.close()
    # A miss only finds a farther nominal patch: scores never fall, and barely rise.
    assert (s_auto >= s_exact * (1 - 1e-5)).all()
    assert np.abs(s_auto / s_exact - 1).max() < 0.01
    assert round(auroc(s_auto, labels), 3) == round(auroc(s_exact, labels), 3)


@pytest.mark.slow
def test_onnx_knn_graph_gives_the_maps_of_faiss(tile_model: Path):
    """Issue 17's CPU half: the kNN graph TensorRT compiles, on ONNX Runtime, against faiss."""
    images, labels = _test_set()
    graph = PatchCore.load(tile_model, "onnx", search=SearchSpec("graph"))
    exact = PatchCore.load(tile_model, "onnx", search=SearchSpec("exact"))
    try:
        assert graph.bank.plan.method == "graph"
        s_graph, m_graph = _run(graph, images)
        s_exact, m_exact = _run(exact, images)
    finally:
        graph.close()
        exact.close()
    for a, b in zip(m_graph, m_exact, strict=True):
        rel = float(np.abs(a - b).max() / np.abs(b).max())
        assert rel < 1e-4, rel
    np.testing.assert_allclose(s_graph, s_exact, rtol=1e-4)
    assert auroc(s_graph, labels) == auroc(s_exact, labels)


@pytest.mark.slow
def test_bench_reports_recall_and_counts_the_distances_computed(tile_model: Path, tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["bench", "--model", str(tile_model), "--data", str(DATA), "--runtime", "onnx"]
    args += ["--search", "hnsw", "--compare-search", "exact", "graph"]
    args += ["--images", "3", "--iterations", "9", "--warmup", "1", "--quiet", "--json", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "recall@1" in text.splitlines()[0] and "hnsw M 16 ef 28" in text  # the table
    r = json.loads(out.read_text())
    exact, graph = r["compare_search"]
    assert r["search"] == "hnsw M 16 ef 28" and exact["search"] == "exact"
    assert r["search_vs_exact"]["recall_at_1"] >= 0.99
    assert exact["search_vs_exact"]["recall_at_1"] == 1.0
    assert graph["search_vs_exact"]["recall_at_1"] >= 0.999
    # Exact search computes every patch-to-row distance; HNSW a few hundred per patch, and its
    # floor counts only those.
    assert exact["knn_distances_per_frame"] % r["bank_size"] == 0
    assert r["knn_distances_per_frame"] < exact["knn_distances_per_frame"] / 5
    assert r["floor_ms"] < exact["floor_ms"]
    for run in (r, exact, graph):
        assert run["index_build_s"] >= 0 and run["knn_over_backbone"] > 0
        assert run["p95_over_p50_same_image"] >= 1.0  # each of the 3 images timed 3 times
