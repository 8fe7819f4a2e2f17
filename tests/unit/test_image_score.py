"""The image score: mean of the top fraction of patch scores, or the paper's reweighted maximum."""

import json
from pathlib import Path

import numpy as np

from station.model.artifact import MANIFEST, Manifest
from station.model.memory_bank import MemoryBank
from station.model.patchcore import image_score


def _scene(rng: np.random.Generator, bank: MemoryBank, anomalies: np.ndarray):
    normal = rng.normal(0, 0.1, (2000, 8)).astype(np.float32)
    rows = np.vstack([normal, anomalies]).astype(np.float32)
    return rows, bank.search(rows, 1)


def test_top_fraction_ranks_a_defect_cluster_above_a_lone_outlier():
    """A lone rare patch wins on the maximum; a cluster of anomalous patches (a real defect, or
    several) must win on the top-fraction mean, which is why it is the default."""
    rng = np.random.default_rng(0)
    bank = MemoryBank(rng.normal(0, 0.1, (400, 8)).astype(np.float32))
    lone = np.full((1, 8), 1.2, np.float32)  # one patch far from everything nominal
    cluster = rng.normal(0.6, 0.05, (40, 8)).astype(np.float32)  # 40 moderately odd patches
    rows_a, nn_a = _scene(rng, bank, lone)
    rows_b, nn_b = _scene(rng, bank, cluster)
    assert nn_a.distances.max() > nn_b.distances.max()
    top_a = image_score(bank, rows_a, nn_a, 0.01, 9)
    top_b = image_score(bank, rows_b, nn_b, 0.01, 9)
    assert top_b > 1.5 * top_a
    # top = 0: the paper's reweighted maximum, at most the largest distance.
    paper = image_score(bank, rows_a, nn_a, 0.0, 9)
    assert 0 < paper <= float(nn_a.distances.max())


def test_top_fraction_takes_at_least_one_patch_and_is_a_mean():
    rng = np.random.default_rng(1)
    bank = MemoryBank(rng.normal(0, 0.1, (300, 8)).astype(np.float32))
    rows, nn = _scene(rng, bank, np.full((3, 8), 2.0, np.float32))
    d = np.sort(nn.distances[:, 0])[::-1]
    assert image_score(bank, rows, nn, 1e-9, 9) == float(d[0])
    k = round(0.01 * d.size)
    assert abs(image_score(bank, rows, nn, 0.01, 9) - float(d[:k].mean())) < 1e-5


def test_models_from_before_score_top_keep_the_maximum(demo_model: Path):
    """A manifest written before score_top existed loads with 0: its threshold was calibrated on
    the maximum, so the score it is compared with must stay the maximum."""
    d = json.loads((demo_model / MANIFEST).read_text())
    d.pop("score_top", None)
    assert Manifest.from_json(d).score_top == 0.0
