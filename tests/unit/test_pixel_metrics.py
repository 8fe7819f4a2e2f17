"""Pixel metrics from histograms equal the exact ones over every pixel, within their bound."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from station.core.imageio import read_image
from station.inspect import evaluation
from station.inspect.metrics import (
    aupro,
    per_type_pixel_auroc,
    pixel_auroc,
    pixel_auroc_against_good,
)
from station.inspect.pixel_metrics import PixelMetrics


@pytest.fixture(scope="module")
def real_maps(demo_patchcore, demo_product: Path):
    """The demo model's anomaly maps of the demo product's test set, with masks and types."""
    maps, masks, kinds = [], [], []
    for item in evaluation.test_items(demo_product):
        pred = demo_patchcore.predict(read_image(item.path))
        mask = evaluation._read_mask(item, pred.anomaly_map.shape)
        if item.defect_type != "good" and not mask.any():
            continue
        maps.append(pred.anomaly_map)
        masks.append(mask)
        kinds.append(item.defect_type)
    return maps, masks, kinds


def test_binned_metrics_equal_the_exact_ones_on_real_maps(real_maps) -> None:
    maps, masks, kinds = real_maps
    acc = PixelMetrics()
    for m, g, k in zip(maps, masks, kinds, strict=True):
        acc.add(m, g, k)
    auc, bound = acc.pixel_auroc()
    exact = pixel_auroc(maps, masks)
    assert 0 < bound < 1e-3
    assert abs(auc - exact) <= bound + 1e-12, (auc, exact, bound)
    assert acc.pixel_auroc_good()[0] == pytest.approx(
        pixel_auroc_against_good(maps, masks), abs=1e-3
    )
    assert acc.aupro() == pytest.approx(aupro(maps, masks), abs=2e-3)
    per, share = acc.per_type()
    per_exact, share_exact = per_type_pixel_auroc(maps, masks, kinds)
    assert per.keys() == per_exact.keys() and len(per) >= 3
    for t in per:
        assert per[t] == pytest.approx(per_exact[t], abs=1e-3)
        assert share[t] == pytest.approx(share_exact[t])


def test_the_order_of_the_images_and_a_late_large_score_do_not_matter(real_maps) -> None:
    """Bins double when a larger score comes; the result must not depend on when it came."""
    maps, masks, kinds = real_maps
    loud = maps[0] * 50.0  # forces several doublings when it comes last
    forward, backward = PixelMetrics(), PixelMetrics()
    items = [*zip(maps, masks, kinds, strict=True), (loud, masks[0], kinds[0])]
    for m, g, k in items:
        forward.add(m, g, k)
    for m, g, k in reversed(items):
        backward.add(m, g, k)
    assert forward.top == backward.top > 1.0
    assert forward.pixel_auroc() == pytest.approx(backward.pixel_auroc())
    assert forward.aupro() == pytest.approx(backward.aupro())
    exact = pixel_auroc([m for m, _, _ in items], [g for _, g, _ in items])
    auc, bound = forward.pixel_auroc()
    assert abs(auc - exact) <= bound + 1e-12


def test_nan_and_negative_values_do_not_break_the_bins() -> None:
    acc = PixelMetrics()
    m = np.array([[np.nan, -1.0], [0.5, 2.0]], np.float32)
    acc.add(m, np.array([[0, 0], [0, 1]], np.uint8), "crack")
    acc.add(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8), "good")
    assert acc.pixel_auroc()[0] == 1.0 and acc.regions == 1
