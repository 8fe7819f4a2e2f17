"""Pixel-format conversion against OpenCV's own conversion on generated buffers."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest

from station.camera.pixel_formats import (
    SUPPORTED_FORMATS,
    bytes_per_line,
    convert,
    full_scale,
    pixel_format,
)
from station.core.errors import CameraError

H, W = 48, 64  # even sizes: Bayer tiles and YUV pairs fit exactly
RNG = np.random.default_rng(7)


def _rgb() -> np.ndarray:
    return RNG.integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample an RGB image through a PFNC Bayer tile named from its top-left pixel."""
    index = {"R": 0, "G": 1, "B": 2}
    tile = [[pattern[0], pattern[1]], [pattern[2], pattern[3]]]
    out = np.empty(rgb.shape[:2], dtype=rgb.dtype)
    for dy in (0, 1):
        for dx in (0, 1):
            out[dy::2, dx::2] = rgb[dy::2, dx::2, index[tile[dy][dx]]]
    return out


def _pack_bits_lsb(values: np.ndarray, bits: int) -> bytes:
    """Reference PFNC 'p' packer: each value LSB-first into one continuous bit stream."""
    stream = 0
    for i, v in enumerate(values.ravel().tolist()):
        stream |= int(v) << (i * bits)
    return stream.to_bytes((values.size * bits + 7) // 8, "little")


def _pack_gev(values: np.ndarray, bits: int) -> bytes:
    """Reference GigE Vision MonoXXPacked packer, two pixels in three bytes."""
    low = bits - 8
    out = bytearray()
    flat = values.ravel().tolist()
    for a, b in zip(flat[0::2], flat[1::2], strict=True):
        out += bytes([a >> low, (a & ((1 << low) - 1)) | ((b & ((1 << low) - 1)) << 4), b >> low])
    return bytes(out)


def test_every_issue_format_is_supported() -> None:
    wanted = ["Mono8", "Mono10", "Mono12", "Mono16", "RGB8", "BGR8", "RGBa8"]
    wanted += [f"Bayer{p}8" for p in ("RG", "GB", "GR", "BG")]
    assert set(wanted) <= set(SUPPORTED_FORMATS)


def test_mono8_is_an_owned_copy() -> None:
    img = RNG.integers(0, 256, size=(H, W), dtype=np.uint8)
    raw = bytearray(img.tobytes())
    out = convert(raw, W, H, "Mono8")
    assert out.dtype == np.uint8 and out.shape == (H, W)
    np.testing.assert_array_equal(out, img)
    raw[:] = bytes(len(raw))  # the driver reuses its buffer: the frame must not change
    np.testing.assert_array_equal(out, img)
    assert out.flags["C_CONTIGUOUS"] and out.flags["OWNDATA"]


@pytest.mark.parametrize(
    "name,bits", [("Mono10", 10), ("Mono12", 12), ("Mono14", 14), ("Mono16", 16)]
)
def test_mono_16bit_containers_keep_value_range(name: str, bits: int) -> None:
    img = RNG.integers(0, 1 << bits, size=(H, W), dtype=np.uint16)
    out = convert(img.astype("<u2").tobytes(), W, H, name)
    assert out.dtype == np.uint16 and out.shape == (H, W)
    np.testing.assert_array_equal(out, img)
    assert int(out.max()) < (1 << bits)
    # What OpenCV writes and reads back as a 16-bit PNG holds the same values.
    ok, png = cv2.imencode(".png", out)
    assert ok
    np.testing.assert_array_equal(cv2.imdecode(png, cv2.IMREAD_UNCHANGED), img)
    np.testing.assert_array_equal(full_scale(out, bits), img << (16 - bits))


@pytest.mark.parametrize(
    "name,pack",
    [
        ("Mono10p", lambda v: _pack_bits_lsb(v, 10)),
        ("Mono12p", lambda v: _pack_bits_lsb(v, 12)),
        ("Mono10Packed", lambda v: _pack_gev(v, 10)),
        ("Mono12Packed", lambda v: _pack_gev(v, 12)),
    ],
)
def test_packed_mono(name: str, pack: Callable[[np.ndarray], bytes]) -> None:
    bits = pixel_format(name).significant_bits
    img = RNG.integers(0, 1 << bits, size=(H, W), dtype=np.uint16)
    out = convert(pack(img), W, H, name)
    assert out.dtype == np.uint16 and out.shape == (H, W)
    np.testing.assert_array_equal(out, img)


def test_packed_mono_with_line_padding() -> None:
    img = RNG.integers(0, 1 << 12, size=(H, W), dtype=np.uint16)
    pad = 5
    raw = b"".join(_pack_bits_lsb(row, 12) + b"\xff" * pad for row in img)
    np.testing.assert_array_equal(convert(raw, W, H, "Mono12p", padding_x=pad), img)


@pytest.mark.parametrize(
    "name,channels,code",
    [
        ("RGB8", 3, None),
        ("BGR8", 3, cv2.COLOR_BGR2RGB),
        ("RGBa8", 4, cv2.COLOR_RGBA2RGB),
        ("BGRa8", 4, cv2.COLOR_BGRA2RGB),
    ],
)
def test_packed_colour(name: str, channels: int, code: int | None) -> None:
    buf = RNG.integers(0, 256, size=(H, W, channels), dtype=np.uint8)
    out = convert(buf.tobytes(), W, H, name)
    expected = buf if code is None else cv2.cvtColor(buf, code)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_rgb_order_is_rgb() -> None:
    red = np.zeros((H, W, 3), np.uint8)
    red[..., 0] = 255
    bgr_buffer = cv2.cvtColor(red, cv2.COLOR_RGB2BGR).tobytes()
    assert convert(bgr_buffer, W, H, "BGR8")[0, 0].tolist() == [255, 0, 0]
    bgra = cv2.cvtColor(red, cv2.COLOR_RGB2BGRA).tobytes()
    assert convert(bgra, W, H, "BGRa8")[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize(
    "name,code",
    [
        ("YUV422_8", cv2.COLOR_YUV2RGB_YUYV),
        ("YCbCr422_8", cv2.COLOR_YUV2RGB_YUYV),
        ("YUV422_8_UYVY", cv2.COLOR_YUV2RGB_UYVY),
    ],
)
def test_yuv422(name: str, code: int) -> None:
    buf = RNG.integers(0, 256, size=(H, W, 2), dtype=np.uint8)
    np.testing.assert_array_equal(convert(buf.tobytes(), W, H, name), cv2.cvtColor(buf, code))


PATTERNS = {"RG": "RGGB", "GB": "GBRG", "GR": "GRBG", "BG": "BGGR"}


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_bayer8_matches_opencv(pattern: str) -> None:
    mosaic = _mosaic(_rgb(), PATTERNS[pattern])
    code = getattr(cv2, f"COLOR_Bayer{PATTERNS[pattern]}2RGB")
    out = convert(mosaic.tobytes(), W, H, f"Bayer{pattern}8")
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, cv2.cvtColor(mosaic, code))


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_bayer8_colours_land_in_the_right_channel(pattern: str) -> None:
    # Independent of OpenCV's naming: a flat colour must come back as that colour.
    colour = np.array([200, 90, 20], np.uint8)
    flat = np.broadcast_to(colour, (H, W, 3)).copy()
    out = convert(_mosaic(flat, PATTERNS[pattern]).tobytes(), W, H, f"Bayer{pattern}8")
    np.testing.assert_allclose(out[4:-4, 4:-4].reshape(-1, 3).mean(axis=0), colour, atol=2)


@pytest.mark.parametrize("pattern", list(PATTERNS))
@pytest.mark.parametrize("bits", [10, 12, 16])
def test_bayer16_matches_opencv(pattern: str, bits: int) -> None:
    rgb = RNG.integers(0, 1 << bits, size=(H, W, 3), dtype=np.uint16)
    mosaic = _mosaic(rgb, PATTERNS[pattern])
    code = getattr(cv2, f"COLOR_Bayer{PATTERNS[pattern]}2RGB")
    out = convert(mosaic.astype("<u2").tobytes(), W, H, f"Bayer{pattern}{bits}")
    assert out.dtype == np.uint16 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, cv2.cvtColor(mosaic, code))
    assert int(out.max()) < (1 << bits)


@pytest.mark.parametrize("name", SUPPORTED_FORMATS)
def test_line_padding_is_dropped(name: str) -> None:
    line = bytes_per_line(name, W)
    pad = 6
    body = RNG.integers(0, 256, size=(H, line), dtype=np.uint8)
    padded = np.concatenate([body, np.full((H, pad), 0xAB, np.uint8)], axis=1)
    a = convert(body.tobytes(), W, H, name)
    b = convert(padded.tobytes(), W, H, name, padding_x=pad)
    np.testing.assert_array_equal(a, b)
    # The last line's padding may be missing from the buffer.
    c = convert(padded.tobytes()[:-pad], W, H, name, padding_x=pad)
    np.testing.assert_array_equal(a, c)


def test_errors_name_the_problem() -> None:
    with pytest.raises(CameraError, match=r"Coord3D_ABC32f.*not supported"):
        convert(b"\0" * 100, 10, 10, "Coord3D_ABC32f")
    with pytest.raises(
        CameraError, match=r"Mono8 64x48: buffer holds 10 bytes, the image needs 3072"
    ):
        convert(b"\0" * 10, W, H, "Mono8")
