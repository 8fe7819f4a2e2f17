"""Detection and localisation metrics: image/pixel AUROC and AUPRO (Bergmann et al. 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy.stats import rankdata


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the Mann-Whitney rank statistic (ties count one half)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pixel_auroc(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> float:
    """AUROC over every pixel of every image (masks: nonzero = defect)."""
    scores = np.concatenate([np.asarray(m, np.float32).ravel() for m in maps])
    labels = np.concatenate([(np.asarray(g) > 0).ravel() for g in masks])
    return auroc(scores, labels)


def pixel_auroc_against_good(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> float:
    """Defect pixels against the pixels of defect-free images only.

    Far below `pixel_auroc` when the model finds the unmasked rest of defective parts anomalous
    (unmarked flaws, coarse masks, context spilling around large defects) rather than the
    background of good parts.
    """
    inside = [
        np.asarray(m, np.float32)[np.asarray(g) > 0] for m, g in zip(maps, masks, strict=True)
    ]
    good = [
        np.asarray(m, np.float32).ravel() for m, g in zip(maps, masks, strict=True) if not g.any()
    ]
    if not good:
        return float("nan")
    pos, neg = np.concatenate(inside), np.concatenate(good)
    return auroc(np.r_[pos, neg], np.r_[np.ones(pos.size, bool), np.zeros(neg.size, bool)])


def per_type_pixel_auroc(
    maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], kinds: Sequence[str]
) -> tuple[dict[str, float], dict[str, float]]:
    """Pixel AUROC of each defect type (its images with the good ones) and its share of pixels.

    kinds: the defect type of each image, "good" for defect-free ones.
    """
    good = [i for i, k in enumerate(kinds) if k == "good"]
    area = {k: 0 for k in kinds if k != "good"}
    for m, k in zip(masks, kinds, strict=True):
        if k != "good":
            area[k] += int(np.count_nonzero(m))
    total = sum(area.values())
    per_type, share = {}, {}
    for t in sorted(area):
        idx = good + [i for i, k in enumerate(kinds) if k == t]
        per_type[t] = pixel_auroc([maps[i] for i in idx], [masks[i] for i in idx])
        share[t] = area[t] / total if total else float("nan")
    return per_type, share


def aupro(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], fpr_limit: float = 0.3) -> float:
    """Per-region overlap integrated over FPR in [0, fpr_limit], normalised to [0, 1].

    Regions are the 8-connected components of each mask. Sorting all pixels once gives, for every
    threshold, FPR = defect-free pixels above it / all defect-free pixels, and PRO = mean over
    regions of the region's fraction above it, i.e. a cumulative sum of 1/|region| per pixel.
    """
    scores_l, weights_l, background_l = [], [], []
    n_regions = 0
    for amap, mask in zip(maps, masks, strict=True):
        gt = (np.asarray(mask) > 0).astype(np.uint8)
        n, labels = cv2.connectedComponents(gt, connectivity=8)
        w = np.zeros(gt.shape, np.float64)
        for r in range(1, n):
            region = labels == r
            w[region] = 1.0 / region.sum()
        n_regions += n - 1
        scores_l.append(np.asarray(amap, np.float64).ravel())
        weights_l.append(w.ravel())
        background_l.append((gt == 0).ravel())
    if n_regions == 0:
        return float("nan")
    scores = np.concatenate(scores_l)
    weights = np.concatenate(weights_l)
    background = np.concatenate(background_l)
    n_bg = int(background.sum())
    if n_bg == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    fpr = np.cumsum(background[order]) / n_bg
    pro = np.cumsum(weights[order]) / n_regions
    # Only the last pixel of a run of equal scores is a real threshold.
    last = np.r_[s[1:] != s[:-1], True]
    return pro_area(np.r_[0.0, fpr[last]], np.r_[0.0, pro[last]], fpr_limit)


def pro_area(fpr: np.ndarray, pro: np.ndarray, fpr_limit: float) -> float:
    """Area under a PRO curve (rising FPR, from 0) up to `fpr_limit`, normalised to [0, 1]."""
    if fpr[-1] < fpr_limit:
        fpr = np.r_[fpr, fpr_limit]
        pro = np.r_[pro, pro[-1]]
    cut = int(np.searchsorted(fpr, fpr_limit, side="right"))
    f, p = fpr[:cut], pro[:cut]
    if f[-1] < fpr_limit:
        # Interpolate the PRO value at exactly fpr_limit.
        p_end = np.interp(fpr_limit, fpr[cut - 1 : cut + 1], pro[cut - 1 : cut + 1])
        f, p = np.r_[f, fpr_limit], np.r_[p, p_end]
    return float(np.trapezoid(p, f) / fpr_limit)
