"""Odd inputs give a correct result or a clear error that names what is wrong."""

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from station.core.errors import ImageError
from station.core.imageio import read_image
from station.model.preprocess import plan_tiles


@pytest.fixture(scope="module")
def good_image(demo_product: Path) -> np.ndarray:
    return read_image(sorted((demo_product / "test" / "good").iterdir())[0])


def test_corrupt_file_is_a_clear_error(tmp_path: Path):
    f = tmp_path / "part.png"
    f.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ImageError, match=r"part.png: not a readable image"):
        read_image(f)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        read_image(empty)


def test_file_gone_between_check_and_read_is_a_clear_error(tmp_path: Path, monkeypatch):
    """A replay folder renamed while a file is opened (seen in CI) must be an ImageError, which
    the camera turns into a bad frame or a lost source, not an OSError that ends acquisition.
    The read fails through a patched np.fromfile because the window between the existence
    check and the read is too narrow to hit on demand."""
    f = tmp_path / "part.png"
    cv2.imwrite(str(f), np.zeros((32, 32), np.uint8))

    def vanished(*_args, **_kw):
        raise FileNotFoundError(2, "No such file or directory", str(f))

    monkeypatch.setattr(np, "fromfile", vanished)
    with pytest.raises(ImageError, match=r"part.png: cannot be read \(No such file or directory\)"):
        read_image(f)


def test_tiny_image_is_a_clear_error(demo_patchcore):
    with pytest.raises(ImageError, match=r"8x8 px is too small"):
        demo_patchcore.predict(np.zeros((8, 8), np.uint8))


def test_16_bit_scores_like_8_bit(demo_patchcore, good_image, tmp_path: Path):
    """A 16-bit file of the same part scores like the 8-bit one once the model knows the depth."""
    wide = good_image.astype(np.uint16) * 257  # same picture at 16-bit full scale
    f = tmp_path / "part16.png"
    cv2.imwrite(str(f), wide)
    loaded = read_image(f)
    assert loaded.dtype == np.uint16
    s8 = demo_patchcore.predict(good_image).score
    # The demo model was fitted on 8-bit parts; a 16-bit frame is rescaled by its own depth when
    # its values exceed the model's full scale.
    s16 = demo_patchcore.predict(loaded).score
    assert s16 == pytest.approx(s8, rel=0.02)


def test_rgba_and_rgb_frames_are_accepted(demo_patchcore, good_image):
    rgb = np.dstack([good_image] * 3)
    rgba = np.dstack([rgb, np.full_like(good_image, 255)])
    s = demo_patchcore.predict(good_image).score
    assert demo_patchcore.predict(rgb).score == pytest.approx(s, rel=0.02)
    assert demo_patchcore.predict(rgba).score == pytest.approx(s, rel=0.02)


def test_huge_image_gives_a_full_size_map(demo_patchcore, good_image):
    big = cv2.resize(good_image, (6000, 6000), interpolation=cv2.INTER_LINEAR)
    pred = demo_patchcore.predict(big)
    assert pred.anomaly_map.shape == (6000, 6000)
    assert np.isfinite(pred.score)


def test_odd_sized_image_map_matches_input(demo_patchcore, good_image):
    odd = cv2.resize(good_image, (301, 187))
    pred = demo_patchcore.predict(odd)
    assert pred.anomaly_map.shape == (187, 301)


def test_long_strip_is_tiled_not_squeezed():
    tiles = plan_tiles(500, 1260, 320, 2.0)
    assert len(tiles) >= 3
    assert all(t.h == 500 and t.w == 500 for t in tiles)
    assert tiles[0].x0 == 0 and tiles[-1].x0 + tiles[-1].w == 1260
    # neighbours overlap by at least a quarter so a defect on a seam is whole in one tile
    for a, b in itertools.pairwise(tiles):
        assert a.x0 + a.w - b.x0 >= 0.25 * 500


def test_defect_on_the_edge_of_a_strip_is_found(demo_patchcore, demo_product: Path):
    """A defect in the last tile of a long part lights up the map where its mask is."""
    good = [read_image(p) for p in sorted((demo_product / "test" / "good").iterdir())[:3]]
    bad_file = sorted((demo_product / "test" / "spot").iterdir())[0]
    bad = read_image(bad_file)
    mask = read_image(demo_product / "ground_truth" / "spot" / f"{bad_file.stem}_mask.png") > 0
    clean_strip = np.hstack(good)
    bad_strip = np.hstack([*good[:2], bad])
    full_mask = np.hstack([np.zeros_like(mask), np.zeros_like(mask), mask])
    clean_map = demo_patchcore.predict(clean_strip).anomaly_map
    bad_map = demo_patchcore.predict(bad_strip).anomaly_map
    assert bad_map.shape == bad_strip.shape
    assert bad_map[full_mask].max() > 1.3 * clean_map[full_mask].max()


@pytest.mark.parametrize(
    ("hw", "max_tiles", "native"),
    [
        ((640, 640), 9, True),
        ((256, 256), 4, True),
        ((640, 640), 4, False),
        ((2048, 2448), 9, False),
    ],
)
def test_tile_cap_keeps_native_pixels_when_it_can_and_bounds_the_cost(hw, max_tiles, native):
    """At scale 1 a part keeps its pixels while it fits `max_tiles` windows; a bigger frame is
    shrunk just enough (the largest scale within the cap), still covered edge to edge."""
    from station.model.preprocess import capped_scale

    h, w = hw
    s = capped_scale(h, w, 320, 1.0, max_tiles)
    tiles = plan_tiles(h, w, 320, 2.0, 1.0, max_tiles)
    assert len(tiles) <= max_tiles
    assert (s == 1.0) is native
    if not native:
        assert len(plan_tiles(h, w, 320, 2.0, s * 1.02)) > max_tiles  # no room left to grow
    assert min(t.y0 for t in tiles) == 0 and max(t.y0 + t.h for t in tiles) == h
    assert min(t.x0 for t in tiles) == 0 and max(t.x0 + t.w for t in tiles) == w
    assert len(plan_tiles(h, w, 320, 2.0, 1.0)) >= len(tiles)  # no cap: at least as many
