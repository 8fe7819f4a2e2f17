"""Reading images from disk into the engine's input form, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from station.core.errors import ImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MIN_SIDE = 16  # below this no defect can be localised at the network's stride


def to_engine_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Normalise an array to HxW or HxWx3 (RGB), uint8 or uint16; RGBA loses alpha.

    Raises ImageError naming `what` for shapes, depths or sizes the engine cannot take.
    """
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{what}: expected a numpy array, got {type(image).__name__}")
    if image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    if image.dtype not in (np.uint8, np.uint16):
        if np.issubdtype(image.dtype, np.floating) and image.size and np.isfinite(image).all():
            lo, hi = float(image.min()), float(image.max())
            if lo >= 0.0 and hi <= 1.0:
                image = np.round(image * 255.0).astype(np.uint8)
            else:
                raise ImageError(f"{what}: float image with values outside [0, 1] ({lo}..{hi})")
        else:
            raise ImageError(f"{what}: pixel type {image.dtype} not supported (8- or 16-bit)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ImageError(f"{what}: shape {image.shape} is not HxW, HxWx1, HxWx3 or HxWx4")
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{what}: {w}x{h} px is too small (at least {MIN_SIDE} px per side)")
    return np.ascontiguousarray(image)


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) from the file's header, without decoding it; None when unknown."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except Image.DecompressionBombError:
        # Pillow refuses to even describe an image this large; it is over any sane limit.
        return (1 << 16, 1 << 16)
    except Exception:  # not an image PIL knows: read_image will say what is wrong with it
        return None


def read_image(path: str | Path, max_megapixels: float | None = None) -> np.ndarray:
    """Read an image file as HxW or HxWx3 RGB, 8- or 16-bit. Corrupt files raise ImageError,
    and so do files over `max_megapixels`, found from the header before any decoding."""
    p = Path(path)
    if not p.is_file():
        raise ImageError(f"{p}: no such image file")
    if max_megapixels is not None:
        size = image_size(p)
        if size is not None and size[0] * size[1] > max_megapixels * 1e6:
            raise ImageError(
                f"{p}: {size[0]}x{size[1]} px ({size[0] * size[1] / 1e6:.1f} MP) is over the "
                f"limit of {max_megapixels:g} MP (camera.max_megapixels)"
            )
    try:
        data = np.fromfile(str(p), dtype=np.uint8)
    except OSError as exc:  # gone or unreadable between the check above and the read
        raise ImageError(f"{p}: cannot be read ({exc.strerror or exc})") from exc
    if data.size == 0:
        raise ImageError(f"{p}: empty file")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError(f"{p}: not a readable image (corrupt or unsupported format)")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return to_engine_image(image, str(p))


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name."""
    f = Path(folder)
    return sorted(p for p in f.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
