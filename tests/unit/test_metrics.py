"""AUROC, AUPRO and the FNR-target threshold on cases computed by hand."""

import numpy as np
import pytest

from station.core.result import Verdict
from station.inspect.decision import threshold_for_fnr, verdict
from station.inspect.metrics import aupro, auroc, pixel_auroc


def test_auroc_perfect_random_and_ties():
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1])) == 0.0
    # one tie between a positive and a negative counts one half: (3 + 0.5) / 4
    assert auroc(np.array([0.1, 0.5, 0.5, 0.9]), np.array([0, 0, 1, 1])) == pytest.approx(0.875)


def test_pixel_auroc_pools_pixels_of_all_images():
    maps = [np.array([[0.0, 1.0]]), np.array([[0.5, 0.2]])]
    masks = [np.array([[0, 1]]), np.array([[0, 0]])]
    assert pixel_auroc(maps, masks) == 1.0


def test_aupro_hand_computed():
    """Two regions and 4 defect-free pixels; worked out on paper.

    Image 1 pixels (score, label): region A = {0.9, 0.3} (size 2), background {0.8, 0.1}.
    Image 2: region B = {0.7} (size 1), background {0.6, 0.2}... listed below.
    Thresholds descending over all pixels:
      0.9 -> A half covered: PRO = (0.5 + 0)/2 = 0.25, FPR 0
      0.8 -> background: FPR 1/4 = 0.25, PRO 0.25
      0.7 -> B covered: PRO = (0.5 + 1)/2 = 0.75, FPR 0.25
      0.6 -> background: FPR 0.5 (beyond limit 0.3)
    Curve up to FPR 0.3: (0,0)->(0,0.25)->(0.25,0.25)->(0.25,0.75)->(0.3, interp 0.75..0.75)
    Area = 0.25*0.25 + 0.05*0.75 = 0.0625 + 0.0375 = 0.1; normalised by 0.3 -> 1/3.
    """
    m1 = np.array([[0.9, 0.3, 0.8, 0.1]])
    g1 = np.array([[1, 1, 0, 0]])
    m2 = np.array([[0.7, 0.6, 0.2]])
    g2 = np.array([[1, 0, 0]])
    assert aupro([m1, m2], [g1, g2], fpr_limit=0.3) == pytest.approx(1 / 3)


def test_aupro_regions_are_connected_components():
    # One mask with two separate blobs counts as two regions, each weighted equally.
    amap = np.zeros((5, 5))
    mask = np.zeros((5, 5), np.uint8)
    mask[0, 0:2] = 1  # region of 2 px, fully detected
    mask[4, 4] = 1  # region of 1 px, missed
    amap[0, 0:2] = 1.0
    amap[4, 4] = -1.0  # below every background pixel: found only after FPR reaches 1
    # At FPR 0 PRO is 0.5 (one of two regions), and it stays there up to FPR 1.
    assert aupro([amap], [mask], fpr_limit=0.3) == pytest.approx(0.5)


def test_aupro_perfect_map():
    mask = np.zeros((8, 8), np.uint8)
    mask[2:4, 2:4] = 1
    assert aupro([mask.astype(float)], [mask]) == pytest.approx(1.0)


def test_threshold_meets_target_fnr_and_reports_cost():
    good = np.array([0.1, 0.2, 0.3, 0.4, 0.55])
    defect = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4])
    c = threshold_for_fnr(good, defect, 0.0)
    assert c.threshold == 0.5 and c.fn == 0 and c.fp == 1 and c.fpr == pytest.approx(0.2)
    c = threshold_for_fnr(good, defect, 0.1)  # one miss allowed -> highest such threshold
    assert c.threshold == 0.6 and c.fn == 1 and c.fnr == pytest.approx(0.1) and c.fp == 0
    assert c.tp + c.fn == 10 and c.tn + c.fp == 5


def test_verdict_fails_safe_at_threshold():
    assert verdict(1.0, 1.0) is Verdict.NOK
    assert verdict(0.99, 1.0) is Verdict.OK


def test_pixel_auroc_against_good_ignores_the_rest_of_defective_images():
    """Defect pixels at 5, good parts all 1, but the unmasked rest of the defective part at 9:
    pooled pixel AUROC is poor, against good parts only it is perfect."""
    from station.inspect.metrics import pixel_auroc_against_good

    good = np.ones((4, 4), np.float32)
    bad = np.full((4, 4), 9.0, np.float32)
    mask = np.zeros((4, 4), np.uint8)
    mask[:2, :2] = 1
    bad[:2, :2] = 5.0
    maps, masks = [good, bad], [np.zeros((4, 4), np.uint8), mask]
    assert pixel_auroc(maps, masks) == pytest.approx(16 / 28)  # beats the 16 good, not the 12
    assert pixel_auroc_against_good(maps, masks) == 1.0
    assert np.isnan(pixel_auroc_against_good([bad], [mask]))


def test_per_type_pixel_auroc_separates_types_and_weighs_their_area():
    """Type 'a' (one pixel) is found, type 'b' (three pixels) is not: per type 1.0 and 0.0 where the
    pooled figure mixes them by area."""
    from station.inspect.metrics import per_type_pixel_auroc

    good = np.ones((2, 2), np.float32)
    a, a_mask = np.array([[9, 1], [1, 1]], np.float32), np.array([[1, 0], [0, 0]], np.uint8)
    b, b_mask = np.array([[0, 0], [0, 5]], np.float32), np.array([[1, 1], [1, 0]], np.uint8)
    maps, masks = [good, a, b], [np.zeros((2, 2), np.uint8), a_mask, b_mask]
    per_type, share = per_type_pixel_auroc(maps, masks, ["good", "a", "b"])
    assert per_type == {"a": 1.0, "b": 0.0}
    assert share == {"a": 0.25, "b": 0.75}
    assert 0.0 < pixel_auroc(maps, masks) < 1.0
