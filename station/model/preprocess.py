"""Image -> network input, without discarding defects.

No centre crop: the whole part is kept. Parts near square are resized with their aspect kept and
padded to the square canvas (padded patches are masked out of the bank and the score). Long parts
(e.g. 500x1260 strips) are cut into overlapping square tiles, each resized to the canvas, so a
defect keeps its resolution instead of being squeezed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from station.imageio import to_engine_image

STRIDE = 8  # patch grid stride of the features PatchCore scores


@dataclass(frozen=True)
class Preprocessing:
    """Everything needed to turn an image into the network input; stored in the model manifest."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pixel_max: float = 255.0  # full scale of the training images (255, 1023, 4095 or 65535)
    color: bool = False  # False: colour frames are converted to luminance, like the training set
    tile_aspect: float = 2.0  # parts longer than this ratio are tiled; 0 = never tile

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
        size = self.batch.shape[-1]
        g = size // STRIDE
        centres = np.arange(g) * STRIDE + STRIDE / 2
        out = np.zeros((len(self.tiles), g, g), dtype=bool)
        for i, t in enumerate(self.tiles):
            out[i] = (centres[:, None] < t.valid_h) & (centres[None, :] < t.valid_w)
        return out


def pixel_max_for(images_max: float) -> float:
    """Full scale for a training set: the smallest of 255, 1023, 4095, 65535 that holds it."""
    for full in (255.0, 1023.0, 4095.0, 65535.0):
        if images_max <= full:
            return full
    return float(images_max)


def plan_tiles(height: int, width: int, size: int, tile_aspect: float) -> list[Tile]:
    """Letterbox for near-square parts; overlapping square windows for long ones."""
    long_side, short_side = max(height, width), min(height, width)
    if tile_aspect <= 0 or long_side <= tile_aspect * short_side:
        scale = size / long_side
        vh = max(1, min(size, round(height * scale)))
        vw = max(1, min(size, round(width * scale)))
        return [Tile(0, 0, height, width, vh, vw)]
    # At least a quarter overlap so a defect on a seam is whole in one tile.
    n = math.ceil((long_side - short_side) / (0.75 * short_side)) + 1
    offsets = np.linspace(0, long_side - short_side, n).round().astype(int)
    tiles = []
    for off in offsets:
        if height >= width:
            tiles.append(Tile(int(off), 0, short_side, short_side, size, size))
        else:
            tiles.append(Tile(0, int(off), short_side, short_side, size, size))
    return tiles


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    # INTER_AREA when shrinking: anti-aliased, so a thin scratch fades but does not vanish.
    shrink = w < img.shape[1] or h < img.shape[0]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def prepare(image: np.ndarray, pre: Preprocessing) -> Prepared:
    """Scale to [0, 1], match the model's channels, tile/letterbox and normalise."""
    image = to_engine_image(image)
    img = image.astype(np.float32) * np.float32(1.0 / pre.pixel_max)
    np.clip(img, 0.0, 1.0, out=img)
    if img.ndim == 3 and not pre.color:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    if img.ndim == 2:
        img = img[:, :, None]
    height, width = img.shape[:2]
    size = pre.image_size
    mean = np.asarray(pre.mean, np.float32)
    inv_std = 1.0 / np.asarray(pre.std, np.float32)
    tiles = plan_tiles(height, width, size, pre.tile_aspect)
    batch = np.zeros((len(tiles), 3, size, size), np.float32)
    for i, t in enumerate(tiles):
        window = img[t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w]
        resized = _resize(window, t.valid_w, t.valid_h)
        if resized.ndim == 2:
            resized = resized[:, :, None]
        chw = (resized - mean) * inv_std  # broadcasts 1 channel to 3
        batch[i, :, : t.valid_h, : t.valid_w] = chw.transpose(2, 0, 1)
        # Padding stays 0 = the normalised mean grey: no edge for the network to react to.
    return Prepared(batch, tuple(tiles), height, width)


def gaussian_blur(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of each T x H x W map (kernel 4 sigma wide each side, as the paper)."""
    if sigma <= 0:
        return maps
    k = 2 * math.ceil(4 * sigma) + 1
    return np.stack([cv2.GaussianBlur(m, (k, k), sigma, borderType=cv2.BORDER_REFLECT) for m in maps])


def assemble_map(
    patch_scores: np.ndarray, prepared: Prepared, blur_sigma: float
) -> np.ndarray:
    """Patch-score grids (T x g x g) -> one anomaly map at the image's own size (max on overlaps)."""
    size = prepared.batch.shape[-1]
    ups = np.stack(
        [cv2.resize(g.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
         for g in patch_scores]
    )
    ups = gaussian_blur(ups, blur_sigma)
    out = np.zeros((prepared.height, prepared.width), np.float32)
    for up, t in zip(ups, prepared.tiles, strict=True):
        crop = up[: t.valid_h, : t.valid_w]
        back = cv2.resize(crop, (t.w, t.h), interpolation=cv2.INTER_LINEAR)
        region = out[t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w]
        np.maximum(region, back, out=region)
    return out
