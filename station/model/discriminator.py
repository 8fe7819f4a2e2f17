"""A small discriminator over the frozen patch features, scored with the kNN distance.

The nearest-neighbour distance says how unlike the good parts a patch is, whatever the
difference; a discriminator trained on synthetic defects drawn into good parts (station.model.
synthetic: scratches, spots, cracks, blotches, moved patches) says how much a patch looks like
a defect. Together a faint defect on a busy part stands out from a rare-but-good patch a little
more than by distance alone (SimpleNet and DRAEM score a learned discriminator; here it is a
64-unit hidden layer on the frozen features, trained at fit: station.model.discriminator_fit).

At the line it adds to each patch's distance, in the distance's own units, `weight` times its
centred logit scaled to the spread of good patches' distances, with that scale and centre
folded into the last layer at fit. Per patch that is about 10,000 multiply-adds for the default
backbone's 152 channels: small next to the search. The shift is handed to the search and the
scores as a negative per-patch offset, the way per-position offsets are (station.model.
position), so the exact re-search of the top patches and the image score stay exact.

Chosen on a prototype (patch distances of each set's default model, exact search, trained on
100 bank images with one synthetic defect each), image AUROC / false rejects at the 0.5 % miss
target, before -> linear -> 64 hidden units, weight 0.25:
- demo product: 0.998 / 0.067 -> 0.999 / 0.033 -> 0.999 / 0.033;
- deeppcb: 0.581 / 0.890 -> 0.647 / 0.840 -> 0.677 / 0.860;
- magnetic_tile: 0.956 / 0.826 -> 0.955 / 0.726 -> 0.963 / 0.642.
Weight 0.35 did a little better on all three (0.999 / 0.033, 0.702 / 0.850, 0.964 / 0.558) and
0.15 a little worse; 0.25 is kept as the smaller change on sets not seen. Weights of 0.5 and
more, scored on the image instead of the patch, lost image AUROC on magnetic_tile (0.950 at 0.5,
0.931 at 2). The station's own figures are in the README.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from station.core.errors import ModelError


@dataclass(frozen=True)
class Discriminator:
    """The stored discriminator: each patch's score shift is relu(rows @ w1 + b1) @ w2 + b2."""

    w1: np.ndarray  # float32, C x H
    b1: np.ndarray  # float32, H
    w2: np.ndarray  # float32, H
    b2: float

    @classmethod
    def stored(cls, values: Sequence[float], feature_dim: int) -> Discriminator | None:
        """From a manifest's `discriminator` list (w1 row by row, b1, w2, b2); None when empty."""
        if not len(values):
            return None
        hidden, extra = divmod(len(values) - 1, feature_dim + 2)
        if extra or hidden < 1:
            raise ModelError(
                f"the manifest's discriminator has {len(values)} numbers; a model of "
                f"{feature_dim} feature channels needs {feature_dim + 2} per hidden unit and one "
                "more (w1, b1, w2, b2)"
            )
        arr = np.asarray(values, np.float32)
        if not np.isfinite(arr).all():
            raise ModelError("the manifest's discriminator holds a number that is not finite")
        c, h = feature_dim, hidden
        w1 = arr[: c * h].reshape(c, h).copy()
        return cls(w1, arr[c * h : c * h + h].copy(), arr[c * h + h : -1].copy(), float(arr[-1]))

    def to_list(self) -> list[float]:
        """As a manifest stores it: w1 row by row, b1, w2, b2."""
        parts = [self.w1.ravel(), self.b1, self.w2, np.array([self.b2], np.float32)]
        return [float(x) for x in np.concatenate(parts)]

    def shift(self, rows: np.ndarray) -> np.ndarray:
        """Each patch's addition to its distance (V x C rows -> V)."""
        hidden = np.maximum(rows @ self.w1 + self.b1, np.float32(0))
        return (hidden @ self.w2 + np.float32(self.b2)).astype(np.float32)


def combined_offsets(
    disc: Discriminator | None, rows: np.ndarray, offsets: np.ndarray | None
) -> np.ndarray | None:
    """The per-patch offsets the search and the scores subtract: the per-position offsets (or
    none) less the discriminator's shift; None when there is neither."""
    if disc is None:
        return offsets
    shift = disc.shift(rows)
    return -shift if offsets is None else (offsets - shift).astype(np.float32)
