"""Image + anomaly overlay composition in numpy/cv2, at the size it will be shown (no Qt here:
the screens and the shift report draw the same overlay).

Everything is downscaled to the view first, so the cost per update follows the screen, not the
camera: a 5 MP frame shown in a 700 px view costs one area resize plus work on 0.3 MP.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Heat map colours: index 0 .. 255 covers score 0 .. 2 x threshold, so the threshold sits in the
# middle of the scale and "twice as bad as the limit" saturates. TURBO keeps low values dark blue
# and high values red without the dark band of JET at the top.
_LUT_RGB = np.ascontiguousarray(
    cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), cv2.COLORMAP_TURBO)[
        :, :, ::-1
    ]
)


FADE_FROM = 0.7  # heat map weight: 0 below 0.7 x threshold, full opacity from the threshold up
PEAK_FRACTION = 0.9  # see compose(mark_peak=True)


@dataclass(frozen=True)
class View:
    """Which part of the image is shown: zoom >= 1 and the centre in image fractions (0..1)."""

    zoom: float = 1.0
    cx: float = 0.5
    cy: float = 0.5

    def clamped(self) -> View:
        """The same view with the centre kept so that the crop stays inside the image."""
        z = max(1.0, self.zoom)
        half = 0.5 / z
        return View(z, min(max(self.cx, half), 1 - half), min(max(self.cy, half), 1 - half))


def fit_size(h: int, w: int, max_w: int, max_h: int) -> tuple[int, int]:
    """(width, height) of an h x w image scaled to fit in max_w x max_h, aspect kept."""
    if h <= 0 or w <= 0 or max_w <= 0 or max_h <= 0:
        return 0, 0
    s = min(max_w / w, max_h / h)
    return max(1, round(w * s)), max(1, round(h * s))


def crop_box(h: int, w: int, view: View) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the visible part of an h x w image."""
    v = view.clamped()
    ch, cw = max(1, round(h / v.zoom)), max(1, round(w / v.zoom))
    y0 = min(max(0, round(v.cy * h - ch / 2)), h - ch)
    x0 = min(max(0, round(v.cx * w - cw / 2)), w - cw)
    return y0, y0 + ch, x0, x0 + cw


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """uint8 RGB from mono/RGB, uint8/uint16 (16-bit scaled by its own maximum bit depth)."""
    if image.dtype != np.uint8:
        peak = float(image.max()) if image.size else 0.0
        # 10/12/14-bit sensors deliver in uint16; scale to the depth that holds the data.
        bits = 8 if peak < 256 else int(np.ceil(np.log2(peak + 1)))
        image = cv2.convertScaleAbs(image, alpha=255.0 / ((1 << bits) - 1))
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)
    return image


def shrink(a: np.ndarray, tw: int, th: int) -> np.ndarray:
    """Resize to (tw, th): area averaging when shrinking (fine scratches must not alias away),
    linear when enlarging; big reductions go through a cheap linear step to 2x first, which is
    5x faster than one area resize on a 5 MP frame and looks the same at display size."""
    h, w = a.shape[:2]
    if (tw, th) == (w, h):
        return a
    if tw >= w or th >= h:
        return cv2.resize(a, (tw, th), interpolation=cv2.INTER_LINEAR)
    if w > 2 * tw and h > 2 * th:
        a = cv2.resize(a, (2 * tw, 2 * th), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(a, (tw, th), interpolation=cv2.INTER_AREA)


def compose(
    image: np.ndarray,
    anomaly_map: np.ndarray | None,
    threshold: float | None,
    size: tuple[int, int],
    *,
    opacity: float = 0.45,
    show_overlay: bool = True,
    view: View | None = None,
    mark_peak: bool = False,
) -> np.ndarray:
    """The RGB picture to draw: `image` fitted into size=(w, h) with the overlay blended in.

    The heat map is the anomaly map normalised to 0 .. 2 x threshold, blended with `opacity`
    where the map is at or above the threshold and fading out to FADE_FROM x threshold (so the
    part itself stays visible); regions at or above the threshold get a white outline with a dark
    edge, visible on any part colour. Returns a C-contiguous uint8 array (h' x w' x 3).

    `mark_peak` (for NOK parts): the image score is the worst single patch, the map is smoothed,
    so a NOK part's map may stay under the threshold everywhere. The overlay then uses the
    map's own peak (outline within 10 % of it) instead: the operator always sees where the
    score came from.
    """
    h, w = image.shape[:2]
    if view is not None and view.zoom > 1.0:
        y0, y1, x0, x1 = crop_box(h, w, view)
        image = image[y0:y1, x0:x1]
        if anomaly_map is not None:
            mh, mw = anomaly_map.shape[:2]
            sy, sx = mh / h, mw / w
            anomaly_map = anomaly_map[
                round(y0 * sy) : max(round(y1 * sy), round(y0 * sy) + 1),
                round(x0 * sx) : max(round(x1 * sx), round(x0 * sx) + 1),
            ]
        h, w = image.shape[:2]
    tw, th = fit_size(h, w, size[0], size[1])
    if tw == 0:
        return np.zeros((1, 1, 3), np.uint8)
    overlay = (
        show_overlay
        and anomaly_map is not None
        and threshold is not None
        and np.isfinite(threshold)
        and threshold > 0
    )
    if not overlay:
        return np.ascontiguousarray(to_rgb8(shrink(image, tw, th)))
    assert anomaly_map is not None and threshold is not None
    # Blend at no more than the image's own resolution: enlarging first would only multiply
    # the per-pixel work; the result is enlarged once at the end and the outline drawn sharp.
    ww, wh = (tw, th) if tw <= w else (w, h)
    rgb = to_rgb8(shrink(image, ww, wh))
    # The map is smooth (blurred patch distances): a linear resize is exact enough and 5x faster.
    amap = cv2.resize(
        anomaly_map.astype(np.float32, copy=False), (ww, wh), interpolation=cv2.INTER_LINEAR
    )
    idx = cv2.convertScaleAbs(amap, alpha=255.0 / (2.0 * threshold))  # saturates at 2x
    heat = cv2.LUT(cv2.cvtColor(idx, cv2.COLOR_GRAY2RGB), _LUT_RGB)
    # Full opacity at the threshold and above, fading to nothing at FADE_FROM x threshold: normal
    # texture and background (scores well below the limit) stay untinted, so the part itself
    # remains readable and the eye goes to what is near or over the limit.
    level = threshold
    if mark_peak:
        peak = float(amap.max())
        if 0.0 < peak < threshold:
            level = PEAK_FRACTION * peak
    ramp = 1.0 / (level * (1.0 - FADE_FROM))
    alpha = np.clip((amap - FADE_FROM * level) * (ramp * float(opacity)), 0.0, float(opacity))
    out = cv2.blendLinear(heat, rgb, alpha, 1.0 - alpha)
    if (ww, wh) != (tw, th):
        out = cv2.resize(out, (tw, th), interpolation=cv2.INTER_LINEAR)
    mask = (amap >= level).astype(np.uint8)
    if mask.any():
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if (ww, wh) != (tw, th):
            scale = np.array([tw / ww, th / wh])
            contours = tuple(np.round((c + 0.5) * scale - 0.5).astype(np.int32) for c in contours)
        t = max(2, round(max(tw, th) / 250))
        cv2.drawContours(out, contours, -1, (0, 0, 0), 2 * t + 2, cv2.LINE_AA)
        cv2.drawContours(out, contours, -1, (255, 255, 255), t, cv2.LINE_AA)
    return np.ascontiguousarray(out)
