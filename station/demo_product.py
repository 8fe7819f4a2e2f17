"""The built-in synthetic demo product: a machined, laser-marked metal plate on a conveyor.

It is the station's default data (replay camera, first model) and the data of fast tests, so it
is written in the MVTec-AD layout that the training and evaluation code reads:

    root/train/good/000.png
    root/test/good/000.png
    root/test/<defect>/000.png
    root/ground_truth/<defect>/000_mask.png   (uint8 0/255, same size as the image)

Every image is derived from its own random stream (seed, folder, index), so any single image
can be re-rendered with `render_sample`, together with its defect-free twin, without writing
the whole set.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from station.core.errors import ConfigError, StationError

DEFECT_TYPES = ("scratch", "spot", "crack", "missing_print")
GOOD_FOLDERS = ("train/good", "test/good")
FOLDERS = (*GOOD_FOLDERS, *(f"test/{d}" for d in DEFECT_TYPES))
README_NAME = "README.txt"
# First line of README.txt; its presence marks a folder this module may overwrite.
README_MARKER = "Station synthetic demo product"
MIN_DEMO_SIDE = 64  # below this the marking is no longer a marking
MAX_DEMO_SIDE = 4096
REFERENCE_SIDE = 256.0  # defect sizes in the spec are pixels at this image size

# Supersampling factor for drawn shapes: cv2 draws hard edges; area-averaging a 4x drawing
# gives exact sub-pixel coverage, which keeps edges and masks consistent between parts.
_SS = 4
_MASK_THRESHOLD = 0.1  # a pixel is defective when the defect moved it by >10 % of its contrast
_PSF_SIGMA = 0.6  # lens blur in pixels; a real camera never images a 1 px line as 1 px


class DemoDataError(StationError):
    """The demo product cannot be written where asked (folder in use, not writable)."""


@dataclass(frozen=True)
class DemoSummary:
    """What `generate_demo_product` wrote: image counts per folder, relative to `root`."""

    root: Path
    size: tuple[int, int]  # (h, w)
    seed: int
    counts: tuple[tuple[str, int], ...]  # ("train/good", 120), ("test/scratch", 10), ...
    elapsed_s: float = 0.0

    def count(self, folder: str) -> int:
        """Number of images in `folder` (e.g. "train/good", "test/crack"); 0 if unknown."""
        return dict(self.counts).get(folder, 0)

    @property
    def n_images(self) -> int:
        """All images written, good and defective."""
        return sum(n for _, n in self.counts)

    @property
    def n_masks(self) -> int:
        """Ground-truth masks written (one per defective image)."""
        return sum(n for f, n in self.counts if f not in GOOD_FOLDERS)

    def one_line(self) -> str:
        """A one-line human summary for logs and the CLI."""
        h, w = self.size
        parts = ", ".join(f"{f} {n}" for f, n in self.counts)
        return (
            f"demo product in {self.root}: {parts} ({self.n_images} images, {self.n_masks} "
            f"masks, {h}x{w}, seed {self.seed}) in {self.elapsed_s:.2f} s"
        )


@dataclass(frozen=True)
class DemoSample:
    """One rendered part: the image, its defect mask (None for good parts) and its clean twin."""

    image: np.ndarray  # HxW uint8
    mask: np.ndarray | None  # HxW uint8 0/255
    clean: np.ndarray  # the same part, pose, light and noise without the defect


# --------------------------------------------------------------------------------------------
# The part's fixed geometry, in the part's own (unwarped) frame.


@dataclass(frozen=True)
class _Layout:
    h: int
    w: int
    scale: float  # min side / 256: converts spec pixel sizes to this image size
    plate: np.ndarray  # float32 coverage of the plate outline
    holes: np.ndarray  # through holes and the bore (coverage)
    chamfer: np.ndarray  # bright machined rings around the holes
    chamfer_shade: np.ndarray  # -1..1, which side of each ring faces the light
    facing: np.ndarray  # spot-faced (turned) annulus around the bore
    facing_r: np.ndarray  # radius from the bore centre, for the turning marks
    bevel: np.ndarray  # -1..1 plate edge shading (lit top-left edges, dark bottom-right)
    shadow: np.ndarray  # plate's soft shadow on the belt, 0..1
    ink: np.ndarray  # laser marking coverage
    ink_boxes: tuple[tuple[int, int, int, int], ...]  # x0, y0, x1, y1 of each marking element
    surface: np.ndarray  # uint8: 1 bare plate (defects may extend here), 2 also away from ink
    vignette: np.ndarray  # the lens' fixed fall-off
    yy: np.ndarray  # normalised -1..1 coordinates for illumination gradients
    xx: np.ndarray


def _coverage(h: int, w: int, draw: Callable[[np.ndarray, int], None]) -> np.ndarray:
    """Draw at _SS x resolution on a uint8 canvas and area-average to float32 coverage 0..1."""
    canvas = np.zeros((h * _SS, w * _SS), np.uint8)
    draw(canvas, _SS)
    small = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


def _pt(x: float, y: float, ss: int) -> tuple[int, int]:
    """A canvas point at supersampled resolution (pixel centres at +0.5)."""
    return (round((x + 0.5) * ss - 0.5), round((y + 0.5) * ss - 0.5))


def _data_matrix_modules(n: int = 12) -> np.ndarray:
    """A fixed Data-Matrix-like module pattern: L finder, clock track, fixed random payload."""
    rng = np.random.default_rng(20240611)  # the product's own code: same for every seed
    m = rng.random((n, n)) < 0.5
    m[:, 0] = True  # solid left edge
    m[-1, :] = True  # solid bottom edge
    m[0, :] = np.arange(n) % 2 == 0  # clock track on top
    m[:, -1] = np.arange(n) % 2 == 1  # and on the right
    return m


@functools.lru_cache(maxsize=4)
def _layout(h: int, w: int) -> _Layout:
    """Render the part's fixed features once per image size."""
    s = min(h, w)
    scale = s / REFERENCE_SIDE
    x0, x1, y0, y1 = 0.07 * w, 0.93 * w, 0.12 * h, 0.88 * h
    corner = 0.07 * s

    def plate_draw(c: np.ndarray, ss: int) -> None:
        r = corner
        for x, y, wd, ht in (
            (x0 + r, y0, x1 - x0 - 2 * r, y1 - y0),
            (x0, y0 + r, x1 - x0, y1 - y0 - 2 * r),
        ):
            cv2.rectangle(c, _pt(x, y, ss), _pt(x + wd, y + ht, ss), 255, -1)
        for cx, cy in ((x0 + r, y0 + r), (x1 - r, y0 + r), (x0 + r, y1 - r), (x1 - r, y1 - r)):
            cv2.circle(c, _pt(cx, cy, ss), round(r * ss), 255, -1)

    hole_r = 0.034 * s
    bore_r = 0.085 * s
    ring = max(1.2, 0.014 * s)
    bore_c = (0.72 * w, 0.52 * h)
    mounts = [(0.145 * w, 0.235 * h), (0.855 * w, 0.235 * h)]
    mounts += [(0.145 * w, 0.765 * h), (0.855 * w, 0.765 * h)]
    circles = [(cx, cy, hole_r) for cx, cy in mounts] + [(*bore_c, bore_r)]

    def holes_draw(c: np.ndarray, ss: int) -> None:
        for cx, cy, r in circles:
            cv2.circle(c, _pt(cx, cy, ss), round(r * ss), 255, -1)

    def rings_draw(c: np.ndarray, ss: int) -> None:
        for cx, cy, r in circles:
            cv2.circle(c, _pt(cx, cy, ss), round((r + ring) * ss), 255, -1)

    facing_outer = bore_r * 1.75

    def facing_draw(c: np.ndarray, ss: int) -> None:
        cv2.circle(c, _pt(*bore_c, ss), round(facing_outer * ss), 255, -1)

    plate = _coverage(h, w, plate_draw)
    holes = _coverage(h, w, holes_draw)
    rings = _coverage(h, w, rings_draw)
    chamfer = np.clip(rings - holes, 0.0, 1.0)
    facing = np.clip(_coverage(h, w, facing_draw) - rings, 0.0, 1.0)

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    facing_r = np.hypot(xx - bore_c[0], yy - bore_c[1]).astype(np.float32)

    # Light comes from the top left, so a hole's chamfer is lit on its far (lower-right) wall
    # and shadowed on the near one. Summing over holes is fine: the rings never overlap.
    chamfer_shade = np.zeros((h, w), np.float32)
    for cx, cy, _ in circles:
        d = np.hypot(xx - cx, yy - cy) + 1e-3
        near = d < (hole_r if (cx, cy) != bore_c else bore_r) + 3 * ring
        lit = ((xx - cx) + (yy - cy)) / (d * math.sqrt(2.0))
        chamfer_shade += np.where(near, lit, 0.0).astype(np.float32)

    # Edge bevel from the gradient of the blurred outline: edges facing top-left catch light.
    blurred = cv2.GaussianBlur(plate, (0, 0), max(0.8, 1.2 * scale))
    gx = cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3)
    bevel = np.clip((gx + gy) * 1.2, -1.0, 1.0)
    shift = np.array([[1, 0, 3.0 * scale], [0, 1, 4.0 * scale]], np.float32)
    shadow = cv2.warpAffine(plate, shift, (w, h), borderMode=cv2.BORDER_CONSTANT)
    shadow = cv2.GaussianBlur(shadow, (0, 0), 3.0 * scale + 0.5)

    # Marking: product name, a lot line, a data-matrix-like code and a logo.
    text_box = (0.24 * w, 0.23 * h, 0.62 * w, 0.33 * h)
    lot_box = (0.24 * w, 0.36 * h, 0.50 * w, 0.41 * h)
    dm_side = 0.19 * s
    dm_box = (0.25 * w, 0.50 * h, 0.25 * w + dm_side, 0.50 * h + dm_side)
    logo_r = 0.055 * s
    logo_c = (0.52 * w, 0.61 * h)
    logo_box = (logo_c[0] - logo_r, logo_c[1] - logo_r, logo_c[0] + logo_r, logo_c[1] + logo_r)
    modules = _data_matrix_modules()

    def text_in_box(
        c: np.ndarray, ss: int, text: str, box: tuple[float, ...], thick: float
    ) -> None:
        font = cv2.FONT_HERSHEY_SIMPLEX
        bw, bh = (box[2] - box[0]) * ss, (box[3] - box[1]) * ss
        t = max(1, round(thick * ss))
        (tw, th), _ = cv2.getTextSize(text, font, 1.0, t)
        fs = min(bw / tw, bh / th)
        (tw, th), _ = cv2.getTextSize(text, font, fs, t)
        org = (round(box[0] * ss), round(box[1] * ss + th))
        cv2.putText(c, text, org, font, fs, 255, t, cv2.LINE_8)

    def ink_draw(c: np.ndarray, ss: int) -> None:
        text_in_box(c, ss, "STATION", text_box, 2.2 * scale)
        text_in_box(c, ss, "LOT 24-117", lot_box, 0.9 * scale)
        n = modules.shape[0]
        cell = dm_side / n
        for (iy, ix), on in np.ndenumerate(modules):
            if on:
                px, py = dm_box[0] + ix * cell, dm_box[1] + iy * cell
                cv2.rectangle(c, _pt(px, py, ss), _pt(px + cell, py + cell, ss), 255, -1)
        # Logo: a ring with a bar through it.
        cv2.circle(c, _pt(*logo_c, ss), round(logo_r * ss), 255, -1)
        cv2.circle(c, _pt(*logo_c, ss), round(0.62 * logo_r * ss), 0, -1)
        bar = 0.22 * logo_r
        cv2.rectangle(
            c,
            _pt(logo_c[0] - bar, logo_c[1] - logo_r, ss),
            _pt(logo_c[0] + bar, logo_c[1] + logo_r, ss),
            255,
            -1,
        )

    ink = _coverage(h, w, ink_draw)
    boxes = tuple(
        (int(b[0]), int(b[1]), math.ceil(b[2]), math.ceil(b[3]))
        for b in (text_box, lot_box, dm_box, logo_box)
    )

    # Bare plate for defect placement: away from the outline, holes and rings.
    bare = (plate > 0.99) & (rings < 0.01)
    k = max(1, round(3 * scale)) * 2 + 1  # 7 px at 256 px
    surface = cv2.erode(bare.astype(np.uint8), np.ones((k, k), np.uint8))
    # Defects start on bare metal, not on the marking, where a dark stain would be invisible.
    near_ink = cv2.dilate((ink > 0.05).astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    surface[(surface == 1) & ~near_ink] = 2

    # Lens fall-off: cos^4-like, about 15 % darker in the corners.
    ny, nx = (yy / (h - 1)) * 2 - 1, (xx / (w - 1)) * 2 - 1
    vignette = (1.0 - 0.075 * (nx**2 + ny**2)).astype(np.float32)

    arrays = (plate, holes, chamfer, chamfer_shade, facing, facing_r, bevel, shadow, ink)
    for a in (*arrays, surface, vignette, nx, ny):
        a.setflags(write=False)  # shared through the cache
    return _Layout(
        h=h,
        w=w,
        scale=scale,
        plate=plate,
        holes=holes,
        chamfer=chamfer,
        chamfer_shade=chamfer_shade,
        facing=facing,
        facing_r=facing_r,
        bevel=bevel,
        shadow=shadow,
        ink=ink,
        ink_boxes=boxes,
        surface=surface,
        vignette=vignette,
        yy=ny,
        xx=nx,
    )


# --------------------------------------------------------------------------------------------
# Per-part rendering.


def _noise(rng: np.random.Generator, h: int, w: int, sx: float, sy: float) -> np.ndarray:
    """Unit-variance Gaussian-filtered noise with standard deviations sx, sy (pixels).

    Wide filters run on a grid decimated to ~1/3 sigma and are upsampled: same look, a fraction
    of the cost, which keeps the default set well under the generation time budget.
    """
    fx, fy = max(1, int(sx / 3)), max(1, int(sy / 3))
    sh, sw = -(-h // fy) + 2, -(-w // fx) + 2
    n = rng.standard_normal((sh, sw), dtype=np.float32)
    out = cv2.GaussianBlur(n, (0, 0), sigmaX=sx / fx, sigmaY=sy / fy, borderType=cv2.BORDER_REFLECT)
    if (fx, fy) != (1, 1):
        out = cv2.resize(out, (w + 2 * fx, h + 2 * fy), interpolation=cv2.INTER_LINEAR)
        out = out[fy : fy + h, fx : fx + w]
    else:
        out = out[1 : h + 1, 1 : w + 1]
    return out / (float(out.std()) + 1e-6)


def _render_part(lay: _Layout, rng: np.random.Generator, ink: np.ndarray) -> np.ndarray:
    """Radiance of one part in its own frame (float32, ~0..255), before pose, light and noise."""
    h, w, sc = lay.h, lay.w, lay.scale
    # Brushed plate: long fine streaks + a few broader ones + slow mottling of the finish.
    fine = _noise(rng, h, w, 9.0 * sc + 2, 0.45)
    broad = _noise(rng, h, w, 40.0 * sc + 4, 1.5 * sc + 0.5)
    mottle = _noise(rng, h, w, 18.0 * sc + 2, 18.0 * sc + 2)
    base = 150.0 + rng.normal(0.0, 2.0)
    metal = base + 5.0 * fine + 3.5 * broad + 3.0 * mottle
    metal += 22.0 * lay.bevel

    # Spot-faced annulus around the bore: concentric turning marks instead of brushing.
    period = 1.6 * sc + 0.9
    turned = 158.0 + 5.0 * np.sin(lay.facing_r * (2 * np.pi / period) + rng.uniform(0, 2 * np.pi))
    turned += 2.0 * mottle
    metal = metal * (1.0 - lay.facing) + turned * lay.facing

    # Chamfer rings: bright where they face the light.
    ring = 175.0 + 55.0 * lay.chamfer_shade
    metal = metal * (1.0 - lay.chamfer) + ring * lay.chamfer

    # Laser marking: dark, slightly uneven annealing colour.
    ink_level = 48.0 + 6.0 * mottle
    metal = metal * (1.0 - ink) + ink_level * ink

    # Conveyor belt: dark rubber with fine grain, under the plate's shadow.
    belt = 38.0 + 5.0 * _noise(rng, h, w, 0.8, 0.8) + 3.0 * mottle
    belt *= 1.0 - 0.6 * lay.shadow
    img = belt * (1.0 - lay.plate) + metal * lay.plate
    # Through the holes one sees the belt in the plate's shadow.
    hole = 22.0 + 3.0 * mottle
    img = img * (1.0 - lay.holes) + hole * lay.holes
    return img.astype(np.float32)


@dataclass(frozen=True)
class _Pose:
    matrix: np.ndarray  # 2x3 affine, part frame -> image
    gain: float
    grad_x: float
    grad_y: float


def _draw_pose(rng: np.random.Generator, lay: _Layout) -> _Pose:
    """A conveyor pose: a few pixels of shift, under 1.5 degrees of turn, +-5 % brightness."""
    angle = rng.uniform(-1.2, 1.2)
    dx, dy = rng.uniform(-3.0, 3.0, size=2) * max(lay.scale, 0.5)
    m = cv2.getRotationMatrix2D(((lay.w - 1) / 2, (lay.h - 1) / 2), angle, 1.0)
    m[:, 2] += (dx, dy)
    gain = rng.uniform(0.95, 1.05)
    gx, gy = rng.uniform(-0.03, 0.03, size=2)
    return _Pose(m.astype(np.float32), float(gain), float(gx), float(gy))


def _warp(a: np.ndarray, pose: _Pose, nearest: bool = False) -> np.ndarray:
    """Apply the part's pose to an image-sized array."""
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    h, w = a.shape[:2]
    return cv2.warpAffine(a, pose.matrix, (w, h), flags=flags, borderMode=cv2.BORDER_REFLECT_101)


def _optics(a: np.ndarray) -> np.ndarray:
    """The lens' point spread: the same slight blur for the image and the defect's footprint."""
    return cv2.GaussianBlur(a, (0, 0), _PSF_SIGMA, borderType=cv2.BORDER_REFLECT_101)


def _finish(radiance: np.ndarray, lay: _Layout, pose: _Pose, noise: np.ndarray) -> np.ndarray:
    """Camera side: lens blur, illumination and fall-off, sensor noise, 8-bit quantisation."""
    radiance = _optics(radiance)
    light = pose.gain * lay.vignette * (1.0 + pose.grad_x * lay.xx + pose.grad_y * lay.yy)
    signal = radiance * light
    # Shot noise grows with the signal, read noise does not; `noise` is unit normal.
    sigma = np.sqrt(1.2**2 + 0.012 * np.maximum(signal, 0.0))
    return np.clip(np.rint(signal + sigma * noise), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Defects: each returns the altered radiance and a float "how much changed" map 0..1.


def _sample_point(rng: np.random.Generator, allowed: np.ndarray) -> tuple[float, float]:
    """A random (x, y) on bare metal away from the marking (`allowed` == 2), sub-pixel jitter."""
    idx = np.flatnonzero(allowed == 2)
    if idx.size == 0:
        raise DemoDataError("demo product: no bare surface to place a defect on")
    i = int(idx[rng.integers(idx.size)])
    y, x = divmod(i, allowed.shape[1])
    return x + rng.uniform(-0.5, 0.5), y + rng.uniform(-0.5, 0.5)


def _inside(points: np.ndarray, allowed: np.ndarray, level: int = 1) -> bool:
    """Whether all (x, y) points fall where `allowed` >= level."""
    h, w = allowed.shape
    xi, yi = np.rint(points[:, 0]).astype(int), np.rint(points[:, 1]).astype(int)
    if (xi < 0).any() or (yi < 0).any() or (xi >= w).any() or (yi >= h).any():
        return False
    return bool((allowed[yi, xi] >= level).all())


def _draw_strokes(
    h: int, w: int, polylines: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Coverage x strength of polylines; each is (points Nx2, widths N-1, strengths N-1)."""
    canvas = np.zeros((h * _SS, w * _SS), np.float32)
    for pts, widths, strengths in polylines:
        for i in range(len(pts) - 1):
            p0 = _pt(pts[i][0], pts[i][1], _SS)
            p1 = _pt(pts[i + 1][0], pts[i + 1][1], _SS)
            t = max(1, round(widths[i] * _SS))
            # Max-combine so overlapping segment caps do not double the strength.
            seg = np.zeros_like(canvas)
            cv2.line(seg, p0, p1, float(strengths[i]), t, cv2.LINE_8)
            np.maximum(canvas, seg, out=canvas)
    return cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA)


def _stroke_alpha(
    h: int, w: int, polylines: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Image-sized stroke alpha, drawn supersampled only in a window around the strokes."""
    allpts = np.concatenate([p for p, _, _ in polylines])
    pad = 6
    x0 = max(0, int(np.floor(allpts[:, 0].min())) - pad)
    y0 = max(0, int(np.floor(allpts[:, 1].min())) - pad)
    x1 = min(w, int(np.ceil(allpts[:, 0].max())) + pad + 1)
    y1 = min(h, int(np.ceil(allpts[:, 1].max())) + pad + 1)
    local = [(p - (x0, y0), wd, st) for p, wd, st in polylines]
    out = np.zeros((h, w), np.float32)
    out[y0:y1, x0:x1] = _draw_strokes(y1 - y0, x1 - x0, local)
    return out


def _taper(n: int, rng: np.random.Generator, power: float) -> np.ndarray:
    """Strength along a stroke: fading out at both ends, slowly varying in between."""
    t = (np.arange(n) + 0.5) / n
    wobble = 0.75 + 0.25 * np.sin(2 * np.pi * (rng.uniform(0.5, 2.0) * t + rng.uniform()))
    return (np.sin(np.pi * t) ** power * wobble).astype(np.float32)


def _scratch(rng: np.random.Generator, lay: _Layout, allowed: np.ndarray) -> np.ndarray:
    """Alpha of a thin curved scratch, 1-3 px wide and 20-80 px long (at 256 px)."""
    sc = lay.scale
    for _ in range(100):
        length = rng.uniform(20.0, 80.0) * sc
        x, y = _sample_point(rng, allowed)
        a = rng.uniform(0, np.pi)
        d = np.array([np.cos(a), np.sin(a)])
        n = np.array([-d[1], d[0]])
        bend = rng.uniform(-0.25, 0.25) * length
        t = np.linspace(0.0, 1.0, max(8, int(length / 3)))[:, None]
        # Quadratic Bezier centred on the chosen point: a tool slipping across the surface.
        p0 = np.array([x, y]) - d * length / 2
        p2 = np.array([x, y]) + d * length / 2
        p1 = np.array([x, y]) + n * bend
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        if not _inside(pts, allowed):
            continue
        width = rng.uniform(1.0, 3.0) * max(sc, 0.4)
        segs = len(pts) - 1
        widths = np.full(segs, max(width, 1.0))
        return _stroke_alpha(lay.h, lay.w, [(pts, widths, _taper(segs, rng, 0.35))])
    raise DemoDataError("demo product: could not place a scratch on the part")


def _crack(rng: np.random.Generator, lay: _Layout, allowed: np.ndarray) -> np.ndarray:
    """Alpha of a dark jagged crack with 1-3 short branches."""
    sc = lay.scale

    def walk(start: np.ndarray, heading: float, length: float) -> np.ndarray:
        step = 2.2 * max(sc, 0.5)
        k = max(4, int(length / step))
        # Jagged: each step deviates strongly, but the drift is small so the crack keeps going.
        drift = np.cumsum(rng.normal(0.0, 0.08, k))
        angles = heading + drift + rng.normal(0.0, 0.55, k)
        steps = np.stack([np.cos(angles), np.sin(angles)], 1) * step
        return np.vstack([start, start + np.cumsum(steps, 0)])

    for _ in range(100):
        length = rng.uniform(35.0, 85.0) * sc
        x, y = _sample_point(rng, allowed)
        heading = rng.uniform(0, 2 * np.pi)
        main = walk(np.array([x, y]), heading, length)
        lines = [main]
        for _ in range(int(rng.integers(1, 4))):
            j = int(rng.integers(len(main) // 4, max(len(main) // 4 + 1, 3 * len(main) // 4)))
            side = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.1)
            lines.append(walk(main[j], heading + side, length * rng.uniform(0.2, 0.45)))
        if not all(_inside(p, allowed) for p in lines):
            continue
        strokes = []
        for i, p in enumerate(lines):
            segs = len(p) - 1
            w0 = (1.8 if i == 0 else 1.1) * max(sc, 0.6)
            t = (np.arange(segs) + 0.5) / segs
            # The crack opens widest where it started and thins towards its tips.
            widths = np.maximum(1.0, w0 * (1.0 - 0.6 * t))
            strength = (0.85 + 0.15 * rng.random(segs)) * (1.0 - 0.5 * t**2)
            if i == 0:
                strength *= np.minimum(1.0, 3 * (1 - t))
            strokes.append((p, widths, strength.astype(np.float32)))
        return _stroke_alpha(lay.h, lay.w, strokes)
    raise DemoDataError("demo product: could not place a crack on the part")


def _spot(rng: np.random.Generator, lay: _Layout, allowed: np.ndarray) -> np.ndarray:
    """Alpha of a soft-edged irregular stain, 4-12 px radius (at 256 px)."""
    sc = lay.scale
    for _ in range(100):
        r = max(1.5, rng.uniform(5.0, 12.0) * sc)
        x, y = _sample_point(rng, allowed)
        ring = np.stack(
            [
                x + 1.3 * r * np.cos(np.linspace(0, 2 * np.pi, 16)),
                y + 1.3 * r * np.sin(np.linspace(0, 2 * np.pi, 16)),
            ],
            1,
        )
        if not _inside(ring, allowed, level=2):
            continue
        h, w = lay.h, lay.w
        x0, x1 = max(0, int(x - 2 * r) - 2), min(w, int(x + 2 * r) + 3)
        y0, y1 = max(0, int(y - 2 * r) - 2), min(h, int(y + 2 * r) + 3)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx, dy = xx - x, yy - y
        theta = np.arctan2(dy, dx)
        # An irregular outline: low harmonics of the radius, like a drying droplet.
        radius = np.full_like(theta, r)
        for k in (2, 3, 5):
            radius += r * rng.uniform(0.0, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        q = np.hypot(dx, dy) / radius
        soft = np.clip((1.15 - q) / 0.55, 0.0, 1.0)
        alpha = soft * soft * (3 - 2 * soft)  # smoothstep edge
        grain = 0.8 + 0.2 * _noise(rng, y1 - y0, x1 - x0, 1.2, 1.2)
        out = np.zeros((h, w), np.float32)
        out[y0:y1, x0:x1] = np.clip(alpha * grain, 0.0, 1.0)
        return out
    raise DemoDataError("demo product: could not place a spot on the part")


def _patch_coverage(h: int, w: int, box: tuple[float, ...], ellipse: bool) -> np.ndarray:
    """Coverage of an axis-aligned rectangle or ellipse given as (x, y, width, height)."""
    px, py, pw, ph = box

    def draw(c: np.ndarray, ss: int) -> None:
        if ellipse:
            center = _pt(px + pw / 2, py + ph / 2, ss)
            axes = (round(pw / 2 * ss), round(ph / 2 * ss))
            cv2.ellipse(c, center, axes, 0.0, 0.0, 360.0, 255, -1)
        else:
            cv2.rectangle(c, _pt(px, py, ss), _pt(px + pw, py + ph, ss), 255, -1)

    return _coverage(h, w, draw)


def _missing_print(rng: np.random.Generator, lay: _Layout) -> np.ndarray:
    """The marking's ink with part of one element missing (a clogged / skipped laser pass)."""
    h, w, sc = lay.h, lay.w, lay.scale
    min_px = 70.0 * sc * sc  # enough missing ink to be a defect, not a speck
    max_px = 0.025 * h * w
    for _ in range(200):
        x0, y0, x1, y1 = lay.ink_boxes[int(rng.choice(4, p=[0.4, 0.15, 0.3, 0.15]))]
        bw, bh = x1 - x0, y1 - y0
        pw, ph = bw * rng.uniform(0.25, 0.6), bh * rng.uniform(0.35, 1.0)
        px = x0 + rng.uniform(0, bw - pw)
        py = y0 + rng.uniform(0, bh - ph)
        gone = _patch_coverage(h, w, (px, py, pw, ph), rng.random() < 0.5)
        removed = lay.ink * gone
        if min_px <= float((removed > _MASK_THRESHOLD).sum()) <= max_px:
            return (lay.ink - removed).astype(np.float32)
    raise DemoDataError("demo product: could not remove part of the marking")


# --------------------------------------------------------------------------------------------
# Public API.


def _folder_code(folder: str) -> int:
    if folder not in FOLDERS:
        raise ConfigError(f"demo product: unknown folder {folder!r} (one of {', '.join(FOLDERS)})")
    return FOLDERS.index(folder)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2:
        raise ConfigError(f"demo product: size must be (height, width), got {size!r}")
    h, w = int(size[0]), int(size[1])
    if not (MIN_DEMO_SIDE <= h <= MAX_DEMO_SIDE and MIN_DEMO_SIDE <= w <= MAX_DEMO_SIDE):
        raise ConfigError(
            f"demo product: size {h}x{w} outside {MIN_DEMO_SIDE}..{MAX_DEMO_SIDE} px per side"
        )
    if max(h, w) > 2 * min(h, w):
        raise ConfigError(f"demo product: size {h}x{w} is too elongated (aspect at most 2:1)")
    return h, w


def render_sample(
    folder: str, index: int, *, size: tuple[int, int] = (256, 256), seed: int = 0
) -> DemoSample:
    """Render image `index` of `folder` ("train/good", "test/<defect>", ...) as written on disk."""
    h, w = _check_size(size)
    code = _folder_code(folder)
    lay = _layout(h, w)
    if index < 0:
        raise ConfigError(f"demo product: image index must be >= 0, got {index}")
    rng = np.random.default_rng([int(seed) % 2**64, code, int(index)])
    kind = folder.split("/", 1)[1]

    pose = _draw_pose(rng, lay)
    noise = rng.standard_normal((h, w), dtype=np.float32)
    part_seed, defect_seed = (int(v) for v in rng.integers(2**63, size=2))
    defect_rng = np.random.default_rng(defect_seed)

    clean_radiance = _warp(_render_part(lay, np.random.default_rng(part_seed), lay.ink), pose)
    clean = _finish(clean_radiance, lay, pose, noise)
    if kind == "good":
        return DemoSample(image=clean, mask=None, clean=clean)

    allowed = _warp(lay.surface, pose, nearest=True)  # the surface map in the image frame
    radiance = clean_radiance.copy()
    if kind == "missing_print":
        ink = _missing_print(defect_rng, lay)
        # Same part seed: texture and finish are those of the clean twin, only the ink differs.
        radiance = _warp(_render_part(lay, np.random.default_rng(part_seed), ink), pose)
        alpha = _warp(lay.ink - ink, pose)
    elif kind == "scratch":
        alpha = _scratch(defect_rng, lay, allowed)
        # Mostly bright (the cut catches light), sometimes dark (filled with grime).
        delta = defect_rng.uniform(45.0, 75.0) * (1.0 if defect_rng.random() < 0.7 else -0.7)
        radiance += delta * alpha
    elif kind == "crack":
        alpha = _crack(defect_rng, lay, allowed)
        radiance *= 1.0 - defect_rng.uniform(0.6, 0.75) * alpha
    else:  # spot
        alpha = _spot(defect_rng, lay, allowed)
        if defect_rng.random() < 0.65:  # oil / corrosion stain
            radiance *= 1.0 - defect_rng.uniform(0.35, 0.55) * alpha
        else:  # dried coolant residue
            radiance += defect_rng.uniform(35.0, 55.0) * alpha
    # The mask is where the defect, as the camera blurs it, changed the pixel noticeably.
    mask = np.where(_optics(alpha) > _MASK_THRESHOLD, 255, 0).astype(np.uint8)
    return DemoSample(image=_finish(radiance, lay, pose, noise), mask=mask, clean=clean)


def is_demo_product(root: str | Path) -> bool:
    """Whether `root` holds a demo product written by this module (its README marker)."""
    readme = Path(root) / README_NAME
    try:
        with readme.open(encoding="utf-8") as f:
            return f.readline().strip() == README_MARKER
    except OSError:
        return False


def _prepare_root(root: Path, force: bool) -> None:
    """Create `root`, refusing a non-empty folder that is not an earlier demo product."""
    if root.exists() and not root.is_dir():
        raise DemoDataError(f"{root}: exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        if is_demo_product(root):
            # Remove the earlier set's images so a smaller set leaves no stale files behind;
            # only our own leaf folders and only PNGs, so nothing else the user put there.
            leaves = [*FOLDERS, *(f"ground_truth/{d}" for d in DEFECT_TYPES)]
            for leaf in leaves:
                for p in (root / leaf).glob("*.png"):
                    p.unlink()
        elif not force:
            raise DemoDataError(
                f"{root}: folder is not empty and is not a demo product; "
                "use an empty folder, or --force (force=True) to write into it anyway"
            )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoDataError(f"{root}: cannot create folder ({exc.strerror or exc})") from exc


def _write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise DemoDataError(f"{path}: could not write image")


def _readme(h: int, w: int, seed: int, counts: tuple[tuple[str, int], ...]) -> str:
    lines = [
        README_MARKER,
        "",
        "Synthetic images of a brushed, laser-marked metal plate on a conveyor, written by",
        "`station demo-data` (station.demo_product) in the MVTec-AD layout:",
        "  train/good, test/good            defect-free parts",
        "  test/<defect>                    scratch, spot, crack, missing_print",
        "  ground_truth/<defect>/*_mask.png  8-bit masks, 255 = defective pixel",
        "",
        f"size {h}x{w} (HxW), seed {seed}",
        *(f"  {folder}: {n}" for folder, n in counts),
        "",
        "Regenerating into this folder replaces these images. Not real production data.",
    ]
    return "\n".join(lines) + "\n"


def generate_demo_product(
    root: Path,
    *,
    n_train: int = 120,
    n_test_good: int = 30,
    n_per_defect: int = 10,
    size: tuple[int, int] = (256, 256),
    seed: int = 0,
    force: bool = False,
) -> DemoSummary:
    """Write the demo product under `root` in the MVTec-AD layout and return what was written."""
    t0 = time.perf_counter()
    for name, n in (("n_train", n_train), ("n_test_good", n_test_good)):
        if n < 0:
            raise ConfigError(f"demo product: {name} must be >= 0, got {n}")
    if n_per_defect < 0:
        raise ConfigError(f"demo product: n_per_defect must be >= 0, got {n_per_defect}")
    h, w = _check_size(size)
    root = Path(root)
    _prepare_root(root, force)

    plan = [("train/good", n_train), ("test/good", n_test_good)]
    plan += [(f"test/{d}", n_per_defect) for d in DEFECT_TYPES]
    digits = max(3, len(str(max(n for _, n in plan) - 1)))
    for folder, n in plan:
        out = root / folder
        out.mkdir(parents=True, exist_ok=True)
        kind = folder.split("/", 1)[1]
        gt = root / "ground_truth" / kind
        if kind != "good":
            gt.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            sample = render_sample(folder, i, size=(h, w), seed=seed)
            stem = f"{i:0{digits}d}"
            _write_png(out / f"{stem}.png", sample.image)
            if sample.mask is not None:
                _write_png(gt / f"{stem}_mask.png", sample.mask)
    counts = tuple(plan)
    (root / README_NAME).write_text(_readme(h, w, seed, counts), encoding="utf-8")
    return DemoSummary(
        root=root, size=(h, w), seed=seed, counts=counts, elapsed_s=time.perf_counter() - t0
    )
