"""Synthetic defects drawn into good parts: what an automatic recipe is judged on.

A recipe must be chosen from the training images alone (never from test images or their
labels), yet judged by what the line lives by: how many good parts it rejects while it catches
the defects. Good parts held back from the bank stand for the good side; copies of them with a
defect drawn in stand for the bad side. The kinds follow the demo product's defects and what
inspection lines see: thin scratches, spots, branching cracks, large low-contrast blotches, and
a patch of the part moved elsewhere (missing or misplaced print, CutPaste style).

Every defect is drawn at a contrast relative to the image's own spread, so that a faint defect
on a flat part is as faint as on a busy one. Seeded: the same image and seed give the same
defect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

KINDS = ("scratch", "spot", "crack", "blotch", "cutpaste")


@dataclass(frozen=True)
class SyntheticDefect:
    """A good part with a defect drawn in, and where."""

    image: np.ndarray  # same shape and dtype as the good part
    mask: np.ndarray  # uint8, 1 = defect
    kind: str


def inject(image: np.ndarray, kind: str, seed: int) -> SyntheticDefect:
    """Draw one defect of `kind` into a copy of `image` (HxW or HxWx3, uint8 or uint16)."""
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic defect '{kind}' (one of {', '.join(KINDS)})")
    rng = np.random.default_rng(seed)
    img = np.asarray(image)
    h, w = img.shape[:2]
    work = img.astype(np.float32)
    gray = work if work.ndim == 2 else work.mean(axis=2)
    # Contrast unit: the part's own spread (robust), at least 4 % of full scale.
    full = 65535.0 if img.dtype == np.uint16 else 255.0
    lo, hi = np.percentile(gray, [5, 95])
    unit = max(float(hi - lo), 0.04 * full)
    side = min(h, w)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if kind == "cutpaste":
        mask, work = _cutpaste(work, rng, side)
    else:
        alpha = {
            "scratch": _scratch,
            "spot": _spot,
            "crack": _crack,
            "blotch": _blotch,
        }[kind](rng, h, w, side)
        strength = {"scratch": 0.6, "spot": 0.7, "crack": 0.8, "blotch": 0.3}[kind]
        if kind == "crack":
            sign = -1.0  # cracks are dark: an opening in the surface
        delta = (sign * strength * unit * alpha).astype(np.float32)
        work = work + (delta if work.ndim == 2 else delta[..., None])
        mask = (alpha > 0.25).astype(np.uint8)
    out = np.clip(work, 0, full).astype(img.dtype)
    return SyntheticDefect(out, mask, kind)


def defects_for(image: np.ndarray, n: int, seed: int) -> list[SyntheticDefect]:
    """`n` defects of the kinds in turn, each drawn into its own copy of `image`."""
    return [inject(image, KINDS[i % len(KINDS)], seed * 1000 + i) for i in range(n)]


def _polyline(rng: np.random.Generator, h: int, w: int, length: float, bend: float) -> np.ndarray:
    x, y = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
    heading = rng.uniform(0, 2 * math.pi)
    steps = 12
    pts = [(x, y)]
    for _ in range(steps):
        heading += rng.normal(0, bend)
        x += math.cos(heading) * length / steps
        y += math.sin(heading) * length / steps
        pts.append((x, y))
    return np.array(pts, np.float32)


def _draw(h: int, w: int, lines: list[np.ndarray], width: int) -> np.ndarray:
    canvas = np.zeros((h, w), np.float32)
    for pts in lines:
        cv2.polylines(canvas, [np.round(pts).astype(np.int32)], False, 1.0, width, cv2.LINE_AA)
    return canvas


def _scratch(rng: np.random.Generator, h: int, w: int, side: int) -> np.ndarray:
    line = _polyline(rng, h, w, rng.uniform(0.15, 0.35) * side, 0.05)
    return _draw(h, w, [line], max(1, round(side / 200)))


def _crack(rng: np.random.Generator, h: int, w: int, side: int) -> np.ndarray:
    trunk = _polyline(rng, h, w, rng.uniform(0.12, 0.3) * side, 0.5)
    lines = [trunk]
    for _ in range(int(rng.integers(1, 3))):  # a branch or two from points on the trunk
        x, y = trunk[int(rng.integers(2, len(trunk) - 2))]
        branch = _polyline(rng, h, w, rng.uniform(0.05, 0.12) * side, 0.6)
        lines.append(branch - branch[0] + (x, y))
    return _draw(h, w, lines, max(1, round(side / 250)))


def _spot(rng: np.random.Generator, h: int, w: int, side: int) -> np.ndarray:
    canvas = np.zeros((h, w), np.float32)
    r = rng.uniform(0.015, 0.04) * side
    centre = (int(rng.uniform(0.15, 0.85) * w), int(rng.uniform(0.15, 0.85) * h))
    axes = (max(1, round(r)), max(1, round(r * rng.uniform(0.5, 1.0))))
    cv2.ellipse(canvas, centre, axes, rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_AA)
    return cv2.GaussianBlur(canvas, (0, 0), max(0.5, r / 4))


def _blotch(rng: np.random.Generator, h: int, w: int, side: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
    s = rng.uniform(0.08, 0.18) * side
    blob = np.exp(-(((xx - cx) / s) ** 2 + ((yy - cy) / (s * rng.uniform(0.5, 1.0))) ** 2))
    return blob.astype(np.float32)


def _cutpaste(
    work: np.ndarray, rng: np.random.Generator, side: int
) -> tuple[np.ndarray, np.ndarray]:
    h, w = work.shape[:2]
    ph = max(4, int(rng.uniform(0.1, 0.2) * side))
    pw = max(4, int(rng.uniform(0.1, 0.2) * side))
    # The busiest of a few places: a patch of plain background moved is no defect at all.
    spots = [(int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))) for _ in range(8)]
    sy, sx = max(spots, key=lambda p: float(work[p[0] : p[0] + ph, p[1] : p[1] + pw].std()))
    patch = work[sy : sy + ph, sx : sx + pw].copy()
    patch = np.rot90(patch, 2) if rng.random() < 0.5 else patch[:, ::-1]
    # Placed away from where it came from, so that it is out of place.
    for _ in range(20):
        ty, tx = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        if abs(ty - sy) > ph or abs(tx - sx) > pw:
            break
    out = work.copy()
    out[ty : ty + ph, tx : tx + pw] = patch
    mask = np.zeros((h, w), np.uint8)
    mask[ty : ty + ph, tx : tx + pw] = 1
    return mask, out
