"""The image archive: `archive/YYYY-MM-DD/<id>_<verdict>.png` (+ `<id>_<verdict>_map.png`).

Formats (chosen so that every archived file opens in any image viewer and needs no extra
metadata file):

- the image: PNG, 8- or 16-bit as the camera gave it, RGB or mono;
- the anomaly map: a 16-bit mono PNG holding `map / threshold * MAP_UNITS` (clipped to 65535),
  i.e. the threshold sits at grey level 16384 and scores up to 4x the threshold keep a resolution
  of threshold/16384. The row stores the threshold, so `read_map(path, threshold)` gives back
  float32 scores; anything above 4x the threshold is a clear defect and saturates. Maps larger
  than MAP_MAX_SIDE on their long side are stored area-downsampled to it: the model computes
  them on a patch grid of a <= few-hundred-pixel input and blurs them, so a full 5 MP map holds
  no more detail and would cost ~10x the bytes and encoding time; `read_map(..., size=(h, w))`
  resizes back for an overlay.

PNGs use zlib level 1 with the run-length strategy: on camera images with sensor noise it is
faster and smaller than the default filter/LZ77 search, and flat backgrounds still shrink.

Every file is written atomically (a temporary name in the same folder, fsync, `os.replace`), and
the folder is fsynced before the database row that points at it commits, so a committed row
never points at a missing or half-written file, even across a power loss.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from station.core.errors import ImageError
from station.core.imageio import read_image
from station.core.overlay import compose

if TYPE_CHECKING:  # only a type: the archive stays below the queries
    from station.records.db import InspectionRow

MAP_UNITS = 16384  # grey level of a map value equal to the threshold
MAP_MAX_SIDE = 1024  # long side of a stored map (see the module docstring)
_PNG_PARAMS = [
    cv2.IMWRITE_PNG_COMPRESSION,
    1,
    cv2.IMWRITE_PNG_STRATEGY,
    cv2.IMWRITE_PNG_STRATEGY_RLE,
]


def day_dir(timestamp: float) -> str:
    """The archive subfolder of a frame time (local date), relative to the data directory."""
    return f"archive/{datetime.fromtimestamp(timestamp):%Y-%m-%d}"


def archive_names(row_id: int, verdict: str, timestamp: float) -> tuple[str, str]:
    """Relative paths (image, map) of a row's archive files; '/' separated on every system."""
    base = f"{day_dir(timestamp)}/{row_id}_{verdict}"
    return f"{base}.png", f"{base}_map.png"


def encode_image(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB or mono, 8- or 16-bit image."""
    img = np.ascontiguousarray(image)
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)  # OpenCV writes BGR
    ok, buf = cv2.imencode(".png", img, _PNG_PARAMS)
    if not ok:
        raise ImageError(f"cannot encode a {img.shape} {img.dtype} image as PNG")
    return buf.tobytes()


def encode_map(anomaly_map: np.ndarray, threshold: float) -> bytes:
    """16-bit PNG bytes of an anomaly map, scaled so that the threshold is MAP_UNITS."""
    scale = MAP_UNITS / threshold if threshold > 0 else float(MAP_UNITS)
    m: np.ndarray = np.squeeze(
        np.nan_to_num(np.asarray(anomaly_map, dtype=np.float32), nan=0.0, posinf=65535.0)
    )
    if m.ndim != 2:
        raise ImageError(f"anomaly map of shape {np.shape(anomaly_map)} is not HxW")
    h, w = m.shape
    if max(h, w) > MAP_MAX_SIDE:
        f = MAP_MAX_SIDE / max(h, w)
        size = (max(1, round(w * f)), max(1, round(h * f)))
        m = cv2.resize(m, size, interpolation=cv2.INTER_AREA)
    q = np.clip(np.rint(m * scale), 0, 65535).astype(np.uint16)
    ok, buf = cv2.imencode(".png", q, _PNG_PARAMS)
    if not ok:
        raise ImageError(f"cannot encode a {q.shape} anomaly map as PNG")
    return buf.tobytes()


def read_map(path: str | Path, threshold: float, size: tuple[int, int] | None = None) -> np.ndarray:
    """An archived anomaly map back as float32 scores (the row's threshold undoes the scaling);
    with `size` (h, w), resized to that (e.g. the archived image's size)."""
    data = np.fromfile(str(path), dtype=np.uint8)
    q = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if q is None or q.dtype != np.uint16:
        raise ImageError(f"{path}: not an archived anomaly map (16-bit PNG)")
    scale = MAP_UNITS / threshold if threshold > 0 else float(MAP_UNITS)
    m: np.ndarray = q.astype(np.float32) / np.float32(scale)
    if size is not None and m.shape != tuple(size):
        m = cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return m


def read_archived_image(path: str | Path) -> np.ndarray:
    """An archived image back as the engine reads images (RGB or mono)."""
    return read_image(path)


def load_archived(
    data_dir: str | Path, image_path: str | None, map_path: str | None, threshold: float
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A recorded part's archived image and anomaly map (resized to the image), each None when
    not kept (retention, an OK part not sampled); an unreadable file raises ImageError."""
    if not image_path:
        return None, None
    root = Path(data_dir)
    image = read_archived_image(root / image_path)
    amap = None
    if map_path and (root / map_path).is_file():
        amap = read_map(root / map_path, threshold, size=image.shape[:2])
    return image, amap


def archived_picture(
    data_dir: str | Path, row: InspectionRow, side: int, *, mark_peak: bool
) -> np.ndarray | None:
    """A recorded part's archived image with its overlay, fitted into side x side RGB; None
    when no image is kept or it cannot be read (a thumbnail must never fail a page)."""
    try:
        image, amap = load_archived(data_dir, row.image_path, row.map_path, row.threshold)
    except (ImageError, OSError):
        return None
    if image is None:
        return None
    return compose(image, amap, row.threshold, (side, side), mark_peak=mark_peak)
