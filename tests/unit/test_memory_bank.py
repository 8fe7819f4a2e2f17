"""Coreset selection and nearest-neighbour search against brute force."""

import numpy as np
import pytest

from station.model.memory_bank import MemoryBank, greedy_coreset, hierarchical_coreset


def brute_force_greedy(x: np.ndarray, k: int, first: int) -> list[int]:
    chosen = [first]
    for _ in range(1, k):
        d = np.array([min(np.sum((p - x[c]) ** 2) for c in chosen) for p in x])
        chosen.append(int(np.argmax(d)))
    return chosen


def covering_radius(x: np.ndarray, centres: np.ndarray) -> float:
    d = ((x[:, None, :] - x[centres][None, :, :]) ** 2).sum(-1)
    return float(np.sqrt(d.min(1).max()))


def test_greedy_coreset_equals_brute_force_without_projection():
    x = np.random.default_rng(1).standard_normal((120, 6)).astype(np.float32)
    got = greedy_coreset(x, 15, projection=0, start=7)
    assert list(got) == brute_force_greedy(x.astype(np.float64), 15, 7)


def test_greedy_coreset_keeps_rare_points():
    rng = np.random.default_rng(2)
    common = rng.normal(0, 0.1, (500, 8))
    rare = rng.normal(5, 0.1, (3, 8))  # a rare but nominal pattern
    x = np.vstack([common, rare]).astype(np.float32)
    sel = greedy_coreset(x, 10, projection=0, seed=0)
    assert any(i >= 500 for i in sel), "the farthest-point rule must keep the rare cluster"


def test_projection_keeps_covering_radius_close():
    x = np.random.default_rng(3).standard_normal((600, 256)).astype(np.float32)
    exact = covering_radius(x, greedy_coreset(x, 60, projection=0, seed=0))
    projected = covering_radius(x, greedy_coreset(x, 60, projection=128, seed=0))
    assert projected <= 1.15 * exact


def test_hierarchical_coreset_radius_within_bound():
    rng = np.random.default_rng(4)
    centres = rng.normal(0, 10, (40, 16))
    x = (centres[rng.integers(0, 40, 3000)] + rng.normal(0, 0.5, (3000, 16))).astype(np.float32)
    exact = covering_radius(x, greedy_coreset(x, 80, projection=0, seed=0))
    hier = hierarchical_coreset(x, 80, projection=0, seed=0, chunk=500)
    assert len(set(hier.tolist())) == 80
    # Composable k-center coresets are a constant-factor approximation (4x worst case).
    assert covering_radius(x, hier) <= 2.0 * exact


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_search_matches_brute_force(backend):
    rng = np.random.default_rng(5)
    bank = rng.standard_normal((300, 24)).astype(np.float32)
    q = rng.standard_normal((50, 24)).astype(np.float32)
    nn = MemoryBank(bank, backend=backend).search(q, 3)
    d = np.sqrt(((q[:, None, :] - bank[None]) ** 2).sum(-1))
    order = np.argsort(d, axis=1)[:, :3]
    np.testing.assert_array_equal(nn.indices, order)
    np.testing.assert_allclose(nn.distances, np.take_along_axis(d, order, 1), rtol=1e-4, atol=1e-4)


def test_reweighting_trusts_dense_neighbourhoods_more():
    rng = np.random.default_rng(6)
    dense = rng.normal(0, 0.05, (50, 4))
    lone = np.array([[3.0, 0, 0, 0]])
    bank = MemoryBank(np.vstack([dense, lone]).astype(np.float32))
    probe_dense = np.array([0.5, 0, 0, 0], np.float32)
    probe_lone = np.array([3.5, 0, 0, 0], np.float32)
    s_dense = bank.reweighted_score(probe_dense, *_nn(bank, probe_dense), 9)
    s_lone = bank.reweighted_score(probe_lone, *_nn(bank, probe_lone), 9)
    # Same raw distance (~0.5) but the lone match is weighted up: it could be a defect in the bank.
    assert s_lone > s_dense


def _nn(bank: MemoryBank, p: np.ndarray) -> tuple[int, float]:
    r = bank.search(p[None], 1)
    return int(r.indices[0, 0]), float(r.distances[0, 0])


def test_bank_rejects_empty():
    with pytest.raises(ValueError, match="non-empty"):
        MemoryBank(np.zeros((0, 4), np.float32))


def test_the_bounded_scan_finds_the_dense_scans_nearest_row_reading_few_rows():
    """The exact look's projection bound (station.model.bounded_scan) never rules out the nearest
    row, whatever the upper bound it is given, as long as it is one."""
    from station.model.bounded_scan import BoundedScan

    rng = np.random.default_rng(3)
    centres = rng.normal(0, 4, (20, 64))
    bank = (centres[rng.integers(0, 20, 6000)] + rng.normal(0, 1, (6000, 64))).astype(np.float32)
    near = bank[rng.integers(0, 6000, 30)] + rng.normal(0, 0.5, (30, 64)).astype(np.float32)
    far = rng.normal(0, 9, (10, 64)).astype(np.float32)  # outliers: the patches a score is made of
    q = np.concatenate([near, far])
    d2 = ((q[:, None, :].astype(np.float64) - bank[None]) ** 2).sum(-1)
    want_idx, want = d2.argmin(1), np.sqrt(d2.min(1))
    scan = BoundedScan(bank, directions=16)
    # Upper bounds as an approximate index gives them: a row it found, here a random one's
    # distance (loose) or the exact one (tight); and no bound at all.
    loose = np.sqrt(d2[np.arange(len(q)), rng.integers(0, 6000, len(q))])
    for upper in (loose, want, np.full(len(q), np.inf)):
        dist, idx = scan.nearest(q, upper)
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_allclose(dist, want, rtol=1e-4)
    scan.read = 0
    scan.nearest(near, want[: len(near)])
    assert scan.read < 0.2 * len(near) * len(bank)  # a tight bound reads a fraction of the bank


def test_the_bounded_scan_finds_patches_that_are_bank_rows():
    """A patch equal to a bank row (a uniform border, a part seen in training) has distance 0: its
    bound must survive float32 rounding of terms far larger than 0."""
    from station.model.bounded_scan import BoundedScan

    rng = np.random.default_rng(5)
    bank = (rng.normal(0, 1, (5000, 64)) + rng.normal(0, 6, (1, 64))).astype(np.float32)
    bank[:, :8] *= 20  # most of the spread on a few directions, as in real features
    picked = rng.choice(5000, 40, replace=False)
    q = bank[picked].copy()
    scan = BoundedScan(bank, directions=16)
    dist, idx = scan.nearest(q, np.zeros(len(q)))  # the index found the row itself: u = 0
    np.testing.assert_array_equal(idx, picked)
    assert np.all(dist < 1e-3)
    # Through the bank's search: every such patch's exact distance is 0, not a neighbour's.
    from station.model.memory_bank import MemoryBank
    from station.model.search import SearchPlan

    mb = MemoryBank(bank, plan=SearchPlan("hnsw", hnsw_m=16, hnsw_ef=28, ef_construction=40))
    patches = np.concatenate([q, rng.normal(0, 3, (300, 64)).astype(np.float32) + bank.mean(0)])
    nn = mb.search_for_score(patches, 1.0)  # top 1.0: every patch is looked at exactly
    exact = mb.exact_search(patches, 1)
    np.testing.assert_allclose(nn.distances[:, 0], exact.distances[:, 0], rtol=1e-4, atol=1e-3)
