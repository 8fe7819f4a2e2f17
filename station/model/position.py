"""Per-position normalisation of patch distances, for fixtured parts.

On a fixtured part a patch location shows the same place of every part: an edge of the
marking, a hole, the border of the picture. Some places are harder to match in the bank than
bare surface, so good parts score high there, and a faint defect elsewhere must beat them to be
caught. Subtracting each location's mean distance over held-back good parts puts every location
on the same footing: a score then says how much worse a patch is than good parts are *there*.

Measured at the 0.5 % miss target, patch distances of each set's recipe, the bank and the
offsets from disjoint good training images (`/work/exp/s23/posnorm.py`):
- demo product (fixtured plate): image AUROC 0.985 -> 0.998, false rejects 0.333 -> 0.033;
- deeppcb (one board size, native recipe): 0.845 -> 0.883, false rejects 0.600 -> 0.380.
Ratios (d / the location's 90th percentile) and z-scores did no better than the difference,
and need more parts to estimate; smoothing the offsets over 3 or 5 patches changed nothing.

It is chosen from the training images alone: a location means the same place only when every
part has one size, and a mean needs enough held-back parts. Parts of mixed sizes (magnetic_tile's
tiles, 200 to 600 px, cut by hand) keep plain distances.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from station.core.errors import ModelError

# Held-back good parts a location's mean needs: with fewer, the offsets are mostly noise.
MIN_PARTS = 10


def same_size(train_shape: Mapping[str, Any]) -> bool:
    """Whether every training image had one size (fit's `train_shape` summary)."""
    lo, hi = train_shape.get("min_hw"), train_shape.get("max_hw")
    return lo is not None and list(lo) == list(hi or [])


def choose(mode: str, train_shape: Mapping[str, Any], n_parts: int) -> tuple[bool, str]:
    """Whether a fit normalises by position (`model.position_norm`) and why, in words."""
    if mode == "off":
        return False, "off (model.position_norm)"
    sized = same_size(train_shape)
    if mode == "on":
        if not sized:
            raise ModelError(
                "model.position_norm = 'on' needs training images of one size: these range from "
                f"{train_shape.get('min_hw')} to {train_shape.get('max_hw')} (h, w)"
            )
        if n_parts < 2:
            raise ModelError("model.position_norm = 'on' needs at least 2 held-back good parts")
        return True, f"on (model.position_norm), from {n_parts} held-back good parts"
    if not sized:
        return False, "off: the training images differ in size, so locations do not match"
    if n_parts < MIN_PARTS:
        return False, f"off: {n_parts} held-back good parts, {MIN_PARTS} needed for the means"
    return True, f"on: one image size, means from {n_parts} held-back good parts"


def offsets(distances: Sequence[np.ndarray]) -> np.ndarray:
    """Each location's mean nearest-neighbour distance over good parts (rows of one length)."""
    mean: np.ndarray = _stack(distances).astype(np.float64).mean(axis=0)
    return mean.astype(np.float32)


def leave_one_out(distances: Sequence[np.ndarray]) -> np.ndarray:
    """Per part, the offsets from all the *other* parts: the held-back parts also set the limit,
    and a part in its own mean would look better than a new part does."""
    d = _stack(distances).astype(np.float64)
    n = d.shape[0]
    if n < 2:
        raise ModelError("per-position offsets need at least 2 good parts")
    return ((d.sum(axis=0) - d) / (n - 1)).astype(np.float32)


def measured(
    distances: Sequence[np.ndarray], hw: tuple[int, int]
) -> tuple[np.ndarray, list[Offsets]]:
    """What fit and update-bank take from held-back good parts' patch distances: the offsets,
    and per part the leave-one-out offsets its own calibration score is made with."""
    return offsets(distances), [Offsets(o, hw) for o in leave_one_out(distances)]


@dataclass(frozen=True)
class Offsets:
    """A model's per-location offsets and the part size (h, w) they belong to."""

    values: np.ndarray  # float32, one per valid patch of a part of size `hw`
    hw: tuple[int, int]

    @classmethod
    def stored(cls, values: Sequence[float], hw: Sequence[int]) -> Offsets | None:
        """The offsets a manifest holds (position_offsets, position_hw); None: plain distances."""
        if not len(values):
            return None
        return cls(np.asarray(values, np.float32), (int(hw[0]), int(hw[1])))

    def for_part(self, hw: Sequence[int], n_patches: int) -> np.ndarray | None:
        """The offsets when they fit a part, else None (plain distances): its size, since a
        transposed part has as many patches in another layout, and its patch count."""
        same = (int(hw[0]), int(hw[1])) == self.hw and n_patches == self.values.size
        return self.values if same else None


def _stack(distances: Sequence[np.ndarray]) -> np.ndarray:
    sizes = {len(d) for d in distances}
    if len(sizes) != 1:
        raise ModelError(
            f"per-position offsets need parts of one size; patch counts {sorted(sizes)}"
        )
    return np.stack([np.asarray(d, np.float32) for d in distances])
