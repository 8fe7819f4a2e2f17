"""Image -> network input, without discarding defects.

No centre crop: the whole part is kept. Parts near square are resized with their aspect kept and
padded to the square canvas (padded patches are masked out of the bank and the score). Long parts
(e.g. 500x1260 strips) are cut into overlapping square tiles, each resized to the canvas, so a
defect keeps its resolution instead of being squeezed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from station.core.imageio import to_engine_image

STRIDE = 8  # patch grid stride of the features PatchCore scores
EXPOSURE_TARGET = 0.9  # where "auto" exposure puts the 99th percentile (headroom for glints)
# model.exposure = "choose" takes per-image gain when the training images' bright level
# (bright_level) varies more than this between their 10th and 90th percentiles. Measured:
# magnetic_tile 2.32 (shot at six exposures), the demo product 1.09, deeppcb 1.00 (binarised).
EXPOSURE_SPREAD = 1.25
RESOLVED_EXPOSURES = ("fixed", "auto")  # what a manifest may hold: "choose" is resolved at fit


@dataclass(frozen=True)
class Preprocessing:
    """Everything needed to turn an image into the network input; stored in the model manifest."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pixel_max: float = 255.0  # full scale of the training images (255, 1023, 4095 or 65535)
    color: bool = False  # False: colour frames are converted to luminance, like the training set
    tile_aspect: float = 2.0  # parts longer than this ratio are tiled; 0 = never tile
    scale: float = 0.0  # 0: fit the part to the canvas; > 0: fixed scale, tiles cover the part
    exposure: str = "fixed"  # "auto": per-image gain so the 99th percentile sits at full scale
    max_tiles: int = 0  # with scale > 0: parts needing more windows are shrunk to fit; 0 = no cap

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Preprocessing:
        return cls(
            image_size=int(d["image_size"]),  # type: ignore[call-overload]
            mean=tuple(d["mean"]),  # type: ignore[arg-type]
            std=tuple(d["std"]),  # type: ignore[arg-type]
            pixel_max=float(d["pixel_max"]),  # type: ignore[arg-type]
            color=bool(d["color"]),
            tile_aspect=float(d["tile_aspect"]),  # type: ignore[arg-type]
            scale=float(d.get("scale", 0.0)),  # type: ignore[arg-type]
            exposure=_stored_exposure(d.get("exposure", "fixed")),
            max_tiles=int(d.get("max_tiles", 0)),  # type: ignore[call-overload]
        )


def _stored_exposure(value: object) -> str:
    # A manifest holds the exposure fit resolved (never "choose"); anything else would silently
    # run as "fixed".
    if value not in RESOLVED_EXPOSURES:
        raise ValueError(f"preprocessing exposure {value!r} is not 'fixed' or 'auto'")
    return str(value)


def bright_level(img: np.ndarray) -> float:
    """The image's 99th percentile on a grid of about 128 x 128 pixels: the level "auto"
    exposure brings to EXPOSURE_TARGET (not the maximum: a small bright defect must not set
    the gain)."""
    step_y, step_x = max(1, img.shape[0] // 128), max(1, img.shape[1] // 128)
    return float(np.percentile(img[::step_y, ::step_x], 99))


def choose_exposure(levels: Sequence[float]) -> tuple[str, str]:
    """model.exposure = "choose": per-image gain ("auto") when the training images' bright
    levels spread more than EXPOSURE_SPREAD (p90 / p10), else "fixed"; and why, in words.

    Why from the set: where the lighting or exposure varies between good parts (magnetic_tile:
    six exposures, 2.3x apart), a dark good part and a bright one look different to the CNN
    and the brighter ones score higher (good-score correlation with mean grey 0.52); cancelling
    the gain raised image AUROC 0.940 -> 0.956, halved the misses at the stored limit and cut the
    false rejects at 1 to 5 % misses (at 0.5 % they rose, 0.505 -> 0.826: there one tile shot
    three times decides, README "Accuracy on the shared sets"). Where good parts are lit alike,
    a part much brighter or darker than the rest is itself worth a look, and the gain would
    hide it: the exposure stays fixed.
    """
    lv = np.asarray(levels, np.float64)
    if lv.size < 2:
        return "fixed", f"fixed: {lv.size} training image, the spread needs 2"
    lo, hi = np.percentile(lv, [10, 90])
    spread = float(hi / lo) if lo > 0 else float("inf")
    if spread > EXPOSURE_SPREAD:
        return "auto", (
            f"auto (per-image gain): the training images' bright level spreads {spread:.2f}x "
            f"(p90 / p10), over {EXPOSURE_SPREAD}"
        )
    return "fixed", (
        f"fixed: the training images' bright level spreads {spread:.2f}x (p90 / p10), "
        f"at most {EXPOSURE_SPREAD}"
    )


@dataclass(frozen=True)
class Tile:
    """Where one network input came from: a window of the image and its valid canvas area."""

    y0: int
    x0: int
    h: int  # window size in image pixels
    w: int
    valid_h: int  # part of the canvas holding image (the rest is padding)
    valid_w: int


@dataclass(frozen=True)
class Prepared:
    """Network input for one image: T tiles of 3 x S x S, and how to map back."""

    batch: np.ndarray  # float32, T x 3 x S x S, normalised
    tiles: tuple[Tile, ...]
    height: int
    width: int

    def valid_patches(self) -> np.ndarray:
        """Bool T x g x g: patch cells whose centre lies on the image, not on padding."""
        return valid_patch_mask(self.tiles, self.batch.shape[-1])


def valid_patch_mask(tiles: Sequence[Tile], size: int) -> np.ndarray:
    """Bool T x g x g for tiles of a `size` px input: patch centres on the image."""
    g = size // STRIDE
    centres = np.arange(g) * STRIDE + STRIDE / 2
    out = np.zeros((len(tiles), g, g), dtype=bool)
    for i, t in enumerate(tiles):
        out[i] = (centres[:, None] < t.valid_h) & (centres[None, :] < t.valid_w)
    return out


def valid_patch_count(height: int, width: int, pre: Preprocessing) -> int:
    """The patches on the image (bank rows) that `prepare` gives a part of this size, from the
    tiling alone: no pixel is touched."""
    tiles = plan_tiles(height, width, pre.image_size, pre.tile_aspect, pre.scale, pre.max_tiles)
    return int(valid_patch_mask(tiles, pre.image_size).sum())


def pixel_max_for(images_max: float) -> float:
    """Full scale for a training set: the smallest of 255, 1023, 4095, 65535 that holds it."""
    for full in (255.0, 1023.0, 4095.0, 65535.0):
        if images_max <= full:
            return full
    return float(images_max)


def _offsets(length: int, window: int) -> list[int]:
    """Window starts covering [0, length) with at least a quarter overlap between neighbours."""
    if length <= window:
        return [0]
    # A quarter overlap so a defect on a seam lies whole in one tile.
    n = math.ceil((length - window) / (0.75 * window)) + 1
    return [int(o) for o in np.linspace(0, length - window, n).round()]


def full_scale(image: np.ndarray, model_pixel_max: float) -> float:
    """The value that means 'white' for this frame.

    8-bit frames: 255. 16-bit frames: the model's own full scale when it was fitted on 10..16-bit
    parts (a Mono12 camera delivers 0..4095 in a 16-bit container); else 65535, so a 16-bit frame
    given to an 8-bit model is not clipped to white.
    """
    if image.dtype == np.uint8:
        return 255.0
    return model_pixel_max if model_pixel_max > 255.0 else 65535.0


def _window_count(height: int, width: int, size: int, scale: float) -> int:
    win = max(1, round(size / scale))
    return len(_offsets(height, win)) * len(_offsets(width, win))


def capped_scale(height: int, width: int, size: int, scale: float, max_tiles: int) -> float:
    """`scale`, or the largest smaller one at which the part needs at most `max_tiles` windows.

    Bounds the cost of a large frame (a 5 MP camera at native scale would be a hundred windows)
    while a part that fits the budget keeps its pixels: small defects survive.
    """
    if scale <= 0 or max_tiles <= 0 or _window_count(height, width, size, scale) <= max_tiles:
        return scale
    lo = min(scale, size / max(height, width, 1))  # one window holds the whole part
    hi = scale
    for _ in range(40):  # the window count only grows with the scale: bisect
        mid = 0.5 * (lo + hi)
        if _window_count(height, width, size, mid) <= max_tiles:
            lo = mid
        else:
            hi = mid
    return lo


def plan_tiles(
    height: int,
    width: int,
    size: int,
    tile_aspect: float,
    scale: float = 0.0,
    max_tiles: int = 0,
) -> list[Tile]:
    """Where each network input comes from.

    scale > 0: every image at the same pixel scale (texture looks the same whatever the part's
    size), cut into overlapping windows of size/scale image pixels; small parts are padded.
    With max_tiles > 0 a part that would need more windows is shrunk until it needs no more.
    scale = 0: near-square parts are letterboxed into one canvas; long ones get square windows.
    """
    scale = capped_scale(height, width, size, scale, max_tiles)
    if scale > 0:
        win = max(1, round(size / scale))
        tiles = []
        for y0 in _offsets(height, win):
            for x0 in _offsets(width, win):
                h, w = min(win, height), min(win, width)
                vh = max(1, min(size, round(h * scale)))
                vw = max(1, min(size, round(w * scale)))
                tiles.append(Tile(y0, x0, h, w, vh, vw))
        return tiles
    long_side, short_side = max(height, width), min(height, width)
    if tile_aspect <= 0 or long_side <= tile_aspect * short_side:
        s = size / long_side
        vh = max(1, min(size, round(height * s)))
        vw = max(1, min(size, round(width * s)))
        return [Tile(0, 0, height, width, vh, vw)]
    tiles = []
    for off in _offsets(long_side, short_side):
        if height >= width:
            tiles.append(Tile(off, 0, short_side, short_side, size, size))
        else:
            tiles.append(Tile(0, off, short_side, short_side, size, size))
    return tiles


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    # INTER_AREA when shrinking: anti-aliased, so a thin scratch fades but does not vanish.
    shrink = w < img.shape[1] or h < img.shape[0]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def prepare(image: np.ndarray, pre: Preprocessing) -> Prepared:
    """Scale to [0, 1], match the model's channels, tile/letterbox and normalise."""
    image = to_engine_image(image)
    img = image.astype(np.float32) * np.float32(1.0 / full_scale(image, pre.pixel_max))
    if pre.exposure == "auto":
        # Exposure is a gain on every pixel: dividing by a bright percentile cancels it. The 99th
        # percentile, not the maximum, so a small bright defect does not set the gain.
        p99 = bright_level(img)
        if p99 > 1e-3:
            img *= np.float32(EXPOSURE_TARGET / p99)
    np.clip(img, 0.0, 1.0, out=img)
    if img.ndim == 3 and not pre.color:
        img = np.asarray(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), np.float32)
    if img.ndim == 2:
        img = img[:, :, None]
    height, width = img.shape[:2]
    size = pre.image_size
    mean = np.asarray(pre.mean, np.float32)
    inv_std = 1.0 / np.asarray(pre.std, np.float32)
    tiles = plan_tiles(height, width, size, pre.tile_aspect, pre.scale, pre.max_tiles)
    batch = np.zeros((len(tiles), 3, size, size), np.float32)
    for i, t in enumerate(tiles):
        window = img[t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w]
        resized = _resize(window, t.valid_w, t.valid_h)
        if resized.ndim == 2:
            resized = resized[:, :, None]
        chw = (resized - mean) * inv_std  # broadcasts 1 channel to 3
        batch[i, :, : t.valid_h, : t.valid_w] = chw.transpose(2, 0, 1)
        # Padding stays 0 = the normalised mean grey. (Edge-reflected padding, so that the
        # border of a dark part meets no grey, did worse on magnetic_tile: image AUROC 0.956
        # -> 0.935 with the gain.)
    return Prepared(batch, tuple(tiles), height, width)


def gaussian_blur(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of each T x H x W map (kernel 4 sigma wide each side, as the paper)."""
    if sigma <= 0:
        return maps
    k = 2 * math.ceil(4 * sigma) + 1
    return np.stack(
        [cv2.GaussianBlur(m, (k, k), sigma, borderType=cv2.BORDER_REFLECT) for m in maps]
    )


def fill_padding(grids: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Extend each grid's valid rectangle over its padded cells.

    Zeros there would be blended in by upsampling and smoothing and pull down the scores along
    the part's edge, exactly where chipped edges and breaks are.
    """
    out = grids.copy()
    for g, v in zip(out, valid, strict=True):
        rows = np.flatnonzero(v.any(axis=1))
        cols = np.flatnonzero(v.any(axis=0))
        if rows.size == 0 or cols.size == 0:
            continue
        gh, gw = rows[-1] + 1, cols[-1] + 1
        g[gh:, :gw] = g[gh - 1 : gh, :gw]
        g[:, gw:] = g[:, gw - 1 : gw]
    return out


def assemble_map(patch_scores: np.ndarray, prepared: Prepared, blur_sigma: float) -> np.ndarray:
    """Patch-score grids (T x g x g) -> one anomaly map at the image's size (max on overlaps)."""
    size = prepared.batch.shape[-1]
    patch_scores = fill_padding(patch_scores, prepared.valid_patches())
    ups = np.stack(
        [
            cv2.resize(g.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
            for g in patch_scores
        ]
    )
    ups = gaussian_blur(ups, blur_sigma)
    out = np.zeros((prepared.height, prepared.width), np.float32)
    for up, t in zip(ups, prepared.tiles, strict=True):
        crop = up[: t.valid_h, : t.valid_w]
        back = cv2.resize(crop, (t.w, t.h), interpolation=cv2.INTER_LINEAR)
        region = out[t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w]
        np.maximum(region, back, out=region)
    return out


def patch_cover(mask: np.ndarray, prepared: Prepared) -> np.ndarray:
    """The share of each valid patch that `mask` (the image's size, 1 = defect) covers, in the
    order of the patches' rows (valid_patch_features): assemble_map's mapping the other way,
    from the image to the patches (the discriminator's training labels)."""
    size = prepared.batch.shape[-1]
    g = size // STRIDE
    out = np.zeros((len(prepared.tiles), g, g), np.float32)
    for i, t in enumerate(prepared.tiles):
        crop = mask[t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w].astype(np.float32)
        canvas = np.zeros((size, size), np.float32)
        canvas[: t.valid_h, : t.valid_w] = cv2.resize(
            crop, (t.valid_w, t.valid_h), interpolation=cv2.INTER_AREA
        )
        out[i] = cv2.resize(canvas, (g, g), interpolation=cv2.INTER_AREA)
    return out[prepared.valid_patches()]
