"""Pixel metrics of a whole test set in bounded memory: histograms filled image by image.

Keeping every anomaly map for an exact pixel AUROC and AUPRO costs the set's pixels many times
over (190 strips of 500 x 1260 px took 6.4 GB). Here each map is folded into a few histograms
over one shared set of bins as it is scored and then dropped, so memory is a few MB whatever
the set's size. Bins start fine (`BINS` over [0, 1)) and the range doubles, merging neighbouring
bins, whenever a larger value arrives: the result does not depend on the order of the images
beyond the bin width, which is at most max score / (BINS / 2).

Binned AUROC counts the defect and good pixels that share a bin as ties (one half). It can
differ from the exact value by at most the weight of those pairs, which is reported as
`auroc_error` (a bound, not an estimate); AUPRO interpolates linearly inside a bin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from station.inspect.metrics import pro_area

BINS = 1 << 16  # 65536: on the sets here the AUROC error bound stays below 1e-4


def _auroc(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """AUROC of two histograms over the same bins, and the bound on its binning error."""
    p, n = float(pos.sum()), float(neg.sum())
    if p == 0 or n == 0:
        return float("nan"), float("nan")
    below = np.cumsum(neg) - neg  # good pixels in lower bins
    area = float(np.dot(pos, below + 0.5 * neg)) / (p * n)
    return area, float(0.5 * np.dot(pos, neg)) / (p * n)


@dataclass
class PixelMetrics:
    """Accumulates anomaly maps with their masks; `pixel_auroc`, `aupro` etc. at any time."""

    fpr_limit: float = 0.3
    top: float = 1.0  # the bins cover [0, top)
    defect: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.float64))
    background: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.float64))
    good_images: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.float64))
    region_weight: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.float64))
    regions: int = 0
    # defect type -> (its defect pixels, the rest of its images' pixels)
    by_type: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def add(self, amap: np.ndarray, mask: np.ndarray, kind: str) -> None:
        """One image's map and mask (nonzero = defect); `kind` "good" or its defect type."""
        scores = np.nan_to_num(np.asarray(amap, np.float64), nan=0.0, posinf=0.0).ravel()
        np.maximum(scores, 0.0, out=scores)
        high = float(scores.max()) if scores.size else 0.0
        while high >= self.top:
            self._double()
        idx = np.minimum((scores * (BINS / self.top)).astype(np.int64), BINS - 1)
        gt = np.asarray(mask) > 0
        flat = gt.ravel()
        inside = np.bincount(idx[flat], minlength=BINS)
        outside = np.bincount(idx[~flat], minlength=BINS)
        self.defect += inside
        self.background += outside
        if kind == "good":
            self.good_images += outside
        else:
            pos, rest = self.by_type.setdefault(
                kind, (np.zeros(BINS, np.float64), np.zeros(BINS, np.float64))
            )
            pos += inside
            rest += outside
        if flat.any():
            n, labels = cv2.connectedComponents(gt.astype(np.uint8), connectivity=8)
            lab = labels.ravel()
            sizes = np.bincount(lab, minlength=n).astype(np.float64)
            sizes[0] = np.inf  # background: weight 0
            self.region_weight += np.bincount(idx, weights=1.0 / sizes[lab], minlength=BINS)
            self.regions += n - 1

    def _double(self) -> None:
        """Twice the range: each pair of bins becomes one in the lower half."""
        for name in ("defect", "background", "good_images", "region_weight"):
            setattr(self, name, _merge(getattr(self, name)))
        self.by_type = {k: (_merge(p), _merge(r)) for k, (p, r) in self.by_type.items()}
        self.top *= 2.0

    @property
    def bin_width(self) -> float:
        return self.top / BINS

    def pixel_auroc(self) -> tuple[float, float]:
        """Pooled pixel AUROC and its error bound."""
        return _auroc(self.defect, self.background)

    def pixel_auroc_good(self) -> tuple[float, float]:
        """Defect pixels against the pixels of defect-free images only."""
        return _auroc(self.defect, self.good_images)

    def per_type(self) -> tuple[dict[str, float], dict[str, float]]:
        """Each defect type's pixel AUROC (its images with the good ones) and pixel share."""
        total = sum(float(p.sum()) for p, _ in self.by_type.values())
        per, share = {}, {}
        for t in sorted(self.by_type):
            pos, rest = self.by_type[t]
            per[t] = _auroc(pos, rest + self.good_images)[0]
            share[t] = float(pos.sum()) / total if total else float("nan")
        return per, share

    def aupro(self) -> float:
        """Per-region overlap integrated over FPR in [0, fpr_limit], normalised to [0, 1]."""
        n_bg = float(self.background.sum())
        if self.regions == 0 or n_bg == 0:
            return float("nan")
        # From the highest bin down: each bin's lower edge is a threshold.
        fpr = np.r_[0.0, np.cumsum(self.background[::-1]) / n_bg]
        pro = np.r_[0.0, np.cumsum(self.region_weight[::-1]) / self.regions]
        return pro_area(fpr, pro, self.fpr_limit)


def _merge(h: np.ndarray) -> np.ndarray:
    out = np.zeros_like(h)
    half = h.reshape(-1, 2).sum(axis=1)
    out[: half.size] = half
    return out
