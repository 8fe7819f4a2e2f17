"""Nearest-neighbour indices: the plan from the bank size, the config keys, counted distances,
and each index against brute force (random data here; real features in
tests/integration/test_search_real.py)."""

from pathlib import Path

import numpy as np
import pytest

from station.config import SEARCH_EXACT_BELOW, load_config
from station.core.errors import ConfigError
from station.model.memory_bank import MemoryBank
from station.model.search import SearchPlan, SearchSpec, plan_search


def _clustered(n: int, dim: int = 24, seed: int = 0) -> np.ndarray:
    """Points in 50 clusters of low intrinsic dimension (4), like patch features: dense in
    places and near a thin manifold. Full-dimensional noise is the worst case for any graph
    index and unlike what a backbone gives."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).normal(0, 1, (4, dim))
    centres = np.random.default_rng(98).normal(0, 4, (50, dim))
    x = centres[rng.integers(0, 50, n)] + rng.normal(0, 1, (n, 4)) @ basis
    return (x + rng.normal(0, 0.05, (n, dim))).astype(np.float32)


def _brute(bank: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    d = np.sqrt(((q[:, None, :].astype(np.float64) - bank[None]) ** 2).sum(-1))
    order = np.argsort(d, axis=1)[:, :k]
    return np.take_along_axis(d, order, 1), order


def test_auto_is_exact_below_the_size_and_hnsw_from_it():
    spec = SearchSpec()
    assert plan_search(spec, SEARCH_EXACT_BELOW - 1).method == "exact"
    at = plan_search(spec, SEARCH_EXACT_BELOW)
    assert (at.method, at.hnsw_m, at.hnsw_ef) == ("hnsw", 16, 28)
    assert plan_search(SearchSpec(exact_below=0), 10).method == "hnsw"


def test_hnsw_beam_widens_with_the_bank():
    efs = [plan_search(SearchSpec("hnsw"), n).hnsw_ef for n in (10_000, 40_000, 80_000, 320_000)]
    assert efs == [28, 28, 44, 76]
    assert plan_search(SearchSpec("hnsw"), 1_000_000).hnsw_m == 32
    # Set values win over the bank size.
    p = plan_search(SearchSpec("hnsw", hnsw_m=8, hnsw_ef=100), 1_000_000)
    assert (p.hnsw_m, p.hnsw_ef) == (8, 100)
    ivf = plan_search(SearchSpec("ivf"), 40_000)
    assert ivf.ivf_nlist == 800 and ivf.ivf_nprobe == 50
    assert plan_search(SearchSpec("ivf", ivf_nprobe=7), 40_000).ivf_nprobe == 7


def test_unknown_search_is_an_error_naming_the_choices():
    with pytest.raises(ConfigError, match=r"model\.search: 'fast' is not one of auto, exact, hnsw"):
        plan_search(SearchSpec("fast"), 100)


def test_config_keys_are_checked(tmp_path: Path):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('[model]\nsearch = "hnsw"\nsearch_hnsw_ef = 64\n')
    m = load_config(cfg_file).model
    assert SearchSpec.from_config(m) == SearchSpec("hnsw", SEARCH_EXACT_BELOW, 0, 64, 0)
    cfg_file.write_text('[model]\nsearch = "approximate"\n')
    with pytest.raises(ConfigError, match=r"c\.toml: model\.search: 'approximate' is not one of"):
        load_config(cfg_file)
    cfg_file.write_text("[model]\nsearch_hnsw_ef = 5000\n")
    with pytest.raises(ConfigError, match=r"model\.search_hnsw_ef: 5000 is out of range"):
        load_config(cfg_file)


@pytest.mark.parametrize(
    "plan",
    [SearchPlan("graph"), SearchPlan("exact")],
    ids=lambda p: p.method,
)
def test_exact_indices_match_brute_force(plan: SearchPlan):
    bank, q = _clustered(3000), _clustered(200, seed=1)
    nn = MemoryBank(bank, plan=plan).search(q, 1)
    d, order = _brute(bank, q, 1)
    np.testing.assert_array_equal(nn.indices, order)
    np.testing.assert_allclose(nn.distances, d, rtol=1e-4, atol=1e-4)


def test_approximate_indices_find_nearly_every_nearest_neighbour():
    bank, q = _clustered(6000), _clustered(500, seed=1)
    d, order = _brute(bank, q, 1)
    for spec in (SearchSpec("hnsw"), SearchSpec("ivf")):
        mem = MemoryBank(bank, plan=plan_search(spec, len(bank)))
        nn = mem.search(q, 1)
        recall = float((nn.indices[:, 0] == order[:, 0]).mean())
        assert recall >= 0.98, (spec.method, recall)
        # A miss returns a real bank row: never closer than the exact nearest one.
        assert (nn.distances[:, 0] >= d[:, 0] * (1 - 1e-5) - 1e-5).all()
        exact = mem.exact_search(q, 1)
        np.testing.assert_array_equal(exact.indices, order)


def test_counted_distances_are_the_work_done():
    bank, q = _clustered(6000), _clustered(100, seed=1)
    flat = MemoryBank(bank)
    flat.search(q, 1)
    assert flat.distances_computed == 100 * 6000
    hnsw = MemoryBank(bank, plan=plan_search(SearchSpec("hnsw"), len(bank)))
    hnsw.search(q, 1)
    first = hnsw.distances_computed
    assert 100 * 50 < first < 100 * 6000 / 4  # a few hundred a query, far below exact
    hnsw.search(q, 1)
    assert hnsw.distances_computed == 2 * first  # cumulative, and the same work again
    hnsw.exact_search(q, 1)  # the reference for recall is not the index's work
    assert hnsw.distances_computed == 2 * first


def test_hnsw_build_is_reproducible():
    """The same bank gives the same graph at every load, so a part scores the same after a
    restart (faiss's multi-threaded insertion would depend on thread timing)."""
    bank, q = _clustered(4000), _clustered(300, seed=1)
    plan = plan_search(SearchSpec("hnsw"), len(bank))
    a, b = MemoryBank(bank, plan=plan).search(q, 3), MemoryBank(bank, plan=plan).search(q, 3)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.distances, b.distances)


def test_graph_index_serves_other_k_exactly():
    bank, q = _clustered(2000), _clustered(20, seed=1)
    mem = MemoryBank(bank, plan=SearchPlan("graph"))
    nn = mem.search(q, 5)  # the graph is built for k = 1: the reweighting's k goes to faiss
    np.testing.assert_array_equal(nn.indices, _brute(bank, q, 5)[1])


@pytest.mark.parametrize("top", [0.05, 0.0])
def test_the_patches_of_the_image_score_are_searched_exactly(top: float):
    """A poor index (HNSW with a beam of 1) misses many nearest rows, most of all for queries far
    from the bank; the patches that make the image score still get their exact distances."""
    from station.model.patchcore import image_score

    bank = _clustered(5000)
    rng = np.random.default_rng(3)
    q = np.vstack([_clustered(400, seed=1), rng.normal(0, 6, (30, 24))]).astype(np.float32)
    d, order = _brute(bank, q, 1)
    poor = MemoryBank(bank, plan=SearchPlan("hnsw", hnsw_m=4, hnsw_ef=1, ef_construction=8))
    exact = MemoryBank(bank)
    plain = poor.search(q, 1)
    k = max(1, round(top * len(q)))
    top_rows = np.argsort(-d[:, 0])[:k]
    assert (plain.indices[top_rows, 0] != order[top_rows, 0]).any(), "the index must miss here"
    before = poor.distances_computed
    nn = poor.search_for_score(q, top)
    assert 0 < poor.distances_computed - before < len(q) * len(bank)  # the look is counted
    got_top = np.sort(nn.distances[:, 0])[-k:]
    np.testing.assert_allclose(got_top, np.sort(d[:, 0])[-k:], rtol=1e-4)
    ref = image_score(exact, q, exact.search(q, 1), top, 9)
    assert image_score(poor, q, nn, top, 9) == pytest.approx(ref, rel=1e-5)
    # The other patches keep the index's answer: never below the exact distance.
    assert (nn.distances[:, 0] >= d[:, 0] * (1 - 1e-4) - 1e-4).all()


@pytest.mark.parametrize("top", [0.05, 0.0])
def test_the_second_look_ranks_patches_by_their_distance_less_the_position_offset(top: float):
    """With per-position offsets the image score is made of the patches highest above their
    location's offset, not the farthest ones: the poor index must still give the exact score.
    The offsets here lift the far queries' locations so that other patches make the score."""
    from station.model.patchcore import image_score

    bank = _clustered(5000)
    rng = np.random.default_rng(4)
    q = np.vstack([_clustered(400, seed=2), rng.normal(0, 6, (30, 24))]).astype(np.float32)
    d = _brute(bank, q, 1)[0][:, 0]
    offsets = rng.uniform(0, 2, len(q)).astype(np.float32)
    offsets[-30:] = d[-30:] - 0.5  # the farthest patches sit where good parts are far too
    poor = MemoryBank(bank, plan=SearchPlan("hnsw", hnsw_m=4, hnsw_ef=1, ef_construction=8))
    exact = MemoryBank(bank)
    k = max(1, round(top * len(q)))
    assert not set(np.argsort(-(d - offsets))[:k]) & set(np.argsort(-d)[:k])
    ref = image_score(exact, q, exact.search(q, 1), top, 9, offsets)
    nn = poor.search_for_score(q, top, offsets)
    assert image_score(poor, q, nn, top, 9, offsets) == pytest.approx(ref, rel=1e-5)
    plain = image_score(exact, q, exact.search(q, 1), top, 9)
    assert ref < plain - 1.0  # the offsets really changed which patches count
