"""GenICam (PFNC) pixel formats to the engine's input: HxW mono or HxWx3 RGB, uint8 or uint16.

Every conversion returns a new, contiguous array that owns its memory, so the driver buffer it
was read from can be handed back to the producer as soon as `convert` returns.

Depth: 8-bit formats give uint8. Formats deeper than 8 bits (Mono10/12/14/16, their packed
variants, Bayer 10/12/16) give uint16 *keeping the sensor's value range*: a Mono12 pixel stays in
0..4095, it is not rescaled to 0..65535. The engine normalises by the dtype's range, so callers
that need full-scale values shift them with `full_scale()`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from station.core.errors import CameraError

__all__ = [
    "SUPPORTED_FORMATS",
    "PixelFormat",
    "bytes_per_line",
    "convert",
    "full_scale",
    "pixel_format",
]


@dataclass(frozen=True)
class PixelFormat:
    """What the converter knows about one PFNC format."""

    name: str
    bits_per_pixel: int  # storage bits per pixel in the buffer
    significant_bits: int  # value range of each sample (10 for Mono10, 8 for RGB8)
    channels: int  # channels of the converted image (1 or 3)
    packed: bool = False  # pixels share bytes (Mono10p, Mono12Packed, ...)


def _fmt(name: str, bpp: int, bits: int, channels: int, packed: bool = False) -> PixelFormat:
    return PixelFormat(name, bpp, bits, channels, packed)


_FORMATS: dict[str, PixelFormat] = {
    f.name: f
    for f in [
        _fmt("Mono8", 8, 8, 1),
        _fmt("Mono10", 16, 10, 1),
        _fmt("Mono12", 16, 12, 1),
        _fmt("Mono14", 16, 14, 1),
        _fmt("Mono16", 16, 16, 1),
        _fmt("Mono10p", 10, 10, 1, packed=True),
        _fmt("Mono12p", 12, 12, 1, packed=True),
        _fmt("Mono10Packed", 12, 10, 1, packed=True),
        _fmt("Mono12Packed", 12, 12, 1, packed=True),
        _fmt("RGB8", 24, 8, 3),
        _fmt("BGR8", 24, 8, 3),
        _fmt("RGBa8", 32, 8, 3),
        _fmt("BGRa8", 32, 8, 3),
        _fmt("YUV422_8", 16, 8, 3),
        _fmt("YCbCr422_8", 16, 8, 3),
        _fmt("YUV422_8_UYVY", 16, 8, 3),
        *[
            _fmt(f"Bayer{pattern}{bits}", 8 if bits == 8 else 16, bits, 3)
            for pattern in ("RG", "GB", "GR", "BG")
            for bits in (8, 10, 12, 16)
        ],
    ]
}

SUPPORTED_FORMATS: tuple[str, ...] = tuple(_FORMATS)

# PFNC names the 2x2 tile from the top-left pixel; OpenCV's *RGGB-style* aliases do the same
# (its short BayerRG names are shifted by one pixel, a classic source of swapped red and blue).
_BAYER_CODES = {
    "RG": cv2.COLOR_BayerRGGB2RGB,
    "GB": cv2.COLOR_BayerGBRG2RGB,
    "GR": cv2.COLOR_BayerGRBG2RGB,
    "BG": cv2.COLOR_BayerBGGR2RGB,
}


def pixel_format(name: str) -> PixelFormat:
    """Look up a PFNC format; CameraError listing the supported ones if it is unknown."""
    try:
        return _FORMATS[name]
    except KeyError:
        raise CameraError(
            f"pixel format '{name}' is not supported; supported: {', '.join(SUPPORTED_FORMATS)}"
        ) from None


def bytes_per_line(name: str, width: int) -> int:
    """Bytes one image line of `width` pixels takes in the buffer, without padding."""
    fmt = pixel_format(name)
    return (width * fmt.bits_per_pixel + 7) // 8


def full_scale(image: np.ndarray, significant_bits: int) -> np.ndarray:
    """Shift a uint16 image holding `significant_bits`-bit values to the full 16-bit range."""
    if image.dtype != np.uint16 or significant_bits >= 16:
        return image
    return np.left_shift(image, 16 - significant_bits)


def _lines(raw: np.ndarray, height: int, line_bytes: int, pitch: int) -> np.ndarray:
    """The image's lines as an (H, line_bytes) uint8 view, dropping per-line padding."""
    return raw[: height * pitch].reshape(height, pitch)[:, :line_bytes]


def _as_u16(lines: np.ndarray, height: int, samples: int) -> np.ndarray:
    # PFNC multi-byte samples are little-endian; '<u2' keeps that true on any host.
    u16 = np.ascontiguousarray(lines).view("<u2").reshape(height, samples)
    return u16.astype(np.uint16, copy=True)


def _groups(data: np.ndarray, count: int, pixels: int, nbytes: int) -> np.ndarray:
    """Bytes as (groups, nbytes) uint16 rows of `pixels` pixels each, zero-filling a short tail."""
    groups = (count + pixels - 1) // pixels
    need = groups * nbytes
    chunk = data[:need]
    if chunk.size < need:
        chunk = np.concatenate([chunk, np.zeros(need - chunk.size, dtype=np.uint8)])
    return chunk.reshape(groups, nbytes).astype(np.uint16)


def _unpack_10p(data: np.ndarray, count: int) -> np.ndarray:
    # PFNC Mono10p: LSB-first bit stream, four pixels in five bytes.
    q = _groups(data, count, 4, 5)
    out = np.empty(q.shape[0] * 4, dtype=np.uint16)
    out[0::4] = q[:, 0] | ((q[:, 1] & 0x03) << 8)
    out[1::4] = (q[:, 1] >> 2) | ((q[:, 2] & 0x0F) << 6)
    out[2::4] = (q[:, 2] >> 4) | ((q[:, 3] & 0x3F) << 4)
    out[3::4] = (q[:, 3] >> 6) | (q[:, 4] << 2)
    return out[:count]


def _unpack_12p(data: np.ndarray, count: int) -> np.ndarray:
    # PFNC Mono12p: b0 = p0[7:0], b1 = p1[3:0]<<4 | p0[11:8], b2 = p1[11:4].
    q = _groups(data, count, 2, 3)
    out = np.empty(q.shape[0] * 2, dtype=np.uint16)
    out[0::2] = q[:, 0] | ((q[:, 1] & 0x0F) << 8)
    out[1::2] = (q[:, 1] >> 4) | (q[:, 2] << 4)
    return out[:count]


def _unpack_gev_packed(data: np.ndarray, count: int, bits: int) -> np.ndarray:
    # GigE Vision MonoXXPacked: b0 = p0 high bits, b1 = p0 low bits (low nibble) and p1 low
    # bits (high nibble), b2 = p1 high bits.
    q = _groups(data, count, 2, 3)
    low = bits - 8
    mask = (1 << low) - 1
    out = np.empty(q.shape[0] * 2, dtype=np.uint16)
    out[0::2] = (q[:, 0] << low) | (q[:, 1] & mask)
    out[1::2] = (q[:, 2] << low) | ((q[:, 1] >> 4) & mask)
    return out[:count]


def _packed(
    raw: np.ndarray, fmt: PixelFormat, width: int, height: int, padding_x: int
) -> np.ndarray:
    if padding_x:
        # Padded lines start on a byte boundary: unpack each line's bytes on its own.
        line = bytes_per_line(fmt.name, width)
        pitch = line + padding_x
        if raw.size < pitch * height:
            raw = np.concatenate([raw, np.zeros(pitch * height - raw.size, dtype=np.uint8)])
        rows = _lines(raw, height, line, pitch)
        return np.stack([_packed(np.ascontiguousarray(r), fmt, width, 1, 0)[0] for r in rows])
    count = width * height
    if fmt.name == "Mono10p":
        flat = _unpack_10p(raw, count)
    elif fmt.name == "Mono12p":
        flat = _unpack_12p(raw, count)
    else:
        flat = _unpack_gev_packed(raw, count, fmt.significant_bits)
    return flat.reshape(height, width)


def convert(
    raw: np.ndarray | bytes | bytearray | memoryview,
    width: int,
    height: int,
    name: str,
    *,
    padding_x: int = 0,
) -> np.ndarray:
    """Convert one buffer to an owned HxW / HxWx3 RGB array (see the module doc for depths).

    `raw` holds the image's bytes from its first pixel; `padding_x` is the number of bytes
    appended to each line. Raises CameraError for unknown formats or a buffer that is too small.
    """
    fmt = pixel_format(name)
    data = np.frombuffer(raw, dtype=np.uint8) if not isinstance(raw, np.ndarray) else raw
    if data.dtype != np.uint8:
        data = data.view(np.uint8)
    data = data.reshape(-1)
    line = bytes_per_line(name, width)
    pitch = line + padding_x
    if fmt.packed and not padding_x:
        needed = (width * height * fmt.bits_per_pixel + 7) // 8  # one continuous bit stream
    else:
        needed = pitch * height - padding_x  # the last line's padding may be cut off
    if width <= 0 or height <= 0 or data.size < needed:
        raise CameraError(
            f"{name} {width}x{height}: buffer holds {data.size} bytes, the image needs {needed}"
        )
    if fmt.packed:
        return np.ascontiguousarray(_packed(data, fmt, width, height, padding_x))

    if data.size < pitch * height:  # short last-line padding: extend so lines reshape evenly
        data = np.concatenate([data, np.zeros(pitch * height - data.size, dtype=np.uint8)])
    lines = _lines(data, height, line, pitch)

    if name == "Mono8":
        return lines.copy()
    if fmt.name.startswith("Mono"):
        return _as_u16(lines, height, width)
    if name == "RGB8":
        return lines.reshape(height, width, 3).copy()
    if name == "BGR8":
        return cv2.cvtColor(lines.reshape(height, width, 3), cv2.COLOR_BGR2RGB)
    if name == "RGBa8":
        return cv2.cvtColor(lines.reshape(height, width, 4), cv2.COLOR_RGBA2RGB)
    if name == "BGRa8":
        return cv2.cvtColor(lines.reshape(height, width, 4), cv2.COLOR_BGRA2RGB)
    if name in ("YUV422_8", "YCbCr422_8"):
        return cv2.cvtColor(lines.reshape(height, width, 2), cv2.COLOR_YUV2RGB_YUYV)
    if name == "YUV422_8_UYVY":
        return cv2.cvtColor(lines.reshape(height, width, 2), cv2.COLOR_YUV2RGB_UYVY)
    # Bayer: demosaic in the sample depth (OpenCV handles 8- and 16-bit mosaics alike).
    code = _BAYER_CODES[name[5:7]]
    mosaic = lines if fmt.bits_per_pixel == 8 else _as_u16(lines, height, width)
    return cv2.cvtColor(np.ascontiguousarray(mosaic), code)
