"""The synthetic demo product: layout, masks, determinism, defect visibility and the CLI."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from station.cli import main
from station.core.errors import ConfigError, StationError
from station.demo_product import (
    DEFECT_TYPES,
    DemoDataError,
    generate_demo_product,
    is_demo_product,
    render_sample,
)

# Small but complete: every folder present, enough defects to see each kind's variety.
SMALL = {"n_train": 4, "n_test_good": 3, "n_per_defect": 5}


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.png"))
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    generate_demo_product(root, **SMALL, seed=0)
    return root


def test_layout_and_counts(tmp_path: Path) -> None:
    summary = generate_demo_product(tmp_path / "d", **SMALL, seed=0)
    root = tmp_path / "d"
    assert summary.root == root
    assert summary.count("train/good") == 4
    assert summary.count("test/good") == 3
    assert summary.n_images == 4 + 3 + 5 * len(DEFECT_TYPES)
    assert summary.n_masks == 5 * len(DEFECT_TYPES)
    assert len(list((root / "train" / "good").glob("*.png"))) == 4
    assert len(list((root / "test" / "good").glob("*.png"))) == 3
    assert sorted(p.name for p in (root / "test").iterdir()) == sorted(["good", *DEFECT_TYPES])
    assert sorted(p.name for p in (root / "ground_truth").iterdir()) == sorted(DEFECT_TYPES)
    for defect in DEFECT_TYPES:
        images = sorted((root / "test" / defect).glob("*.png"))
        masks = sorted((root / "ground_truth" / defect).glob("*.png"))
        assert len(images) == 5
        assert [m.name for m in masks] == [f"{p.stem}_mask.png" for p in images]
    assert is_demo_product(root)
    assert "synthetic" in (root / "README.txt").read_text().lower()


def test_images_are_8bit_gray_at_the_requested_size(tmp_path: Path) -> None:
    generate_demo_product(tmp_path, n_train=1, n_test_good=1, n_per_defect=1, size=(96, 160))
    for p in tmp_path.rglob("*.png"):
        image = _read(p)
        assert image.dtype == np.uint8 and image.shape == (96, 160), p


def test_masks_binary_sized_nonempty_and_small(demo: Path) -> None:
    for defect in DEFECT_TYPES:
        for p in sorted((demo / "test" / defect).glob("*.png")):
            image = _read(p)
            mask = _read(demo / "ground_truth" / defect / f"{p.stem}_mask.png")
            assert mask.shape == image.shape and mask.dtype == np.uint8
            assert set(np.unique(mask)) <= {0, 255}
            frac = float((mask > 0).mean())
            # Realistic, not trivially huge: ~0.2-3 % typically; thin short scratches less.
            assert 0.0005 < frac < 0.03, (p, frac)


def test_good_parts_have_no_mask_and_are_consistent(demo: Path) -> None:
    assert not (demo / "ground_truth" / "good").exists()
    goods = [_read(p).astype(np.float32) for p in sorted((demo / "train" / "good").glob("*.png"))]
    assert render_sample("train/good", 0).mask is None
    # Parts differ (pose, texture, noise) but only a little: same product, same marking.
    for a, b in itertools.pairwise(goods):
        assert 0.5 < float(np.abs(a - b).mean()) < 25.0
        assert abs(float(a.mean()) - float(b.mean())) < 0.12 * float(a.mean())


def test_files_match_render_sample(demo: Path) -> None:
    sample = render_sample("test/crack", 2, seed=0)
    assert np.array_equal(_read(demo / "test" / "crack" / "002.png"), sample.image)
    assert sample.mask is not None
    assert np.array_equal(_read(demo / "ground_truth" / "crack" / "002_mask.png"), sample.mask)
    assert np.array_equal(
        _read(demo / "train" / "good" / "001.png"), render_sample("train/good", 1).image
    )


def test_deterministic_per_seed(tmp_path: Path, demo: Path) -> None:
    again = generate_demo_product(tmp_path / "same", **SMALL, seed=0).root
    other = generate_demo_product(tmp_path / "other", **SMALL, seed=1).root
    assert _digest(again) == _digest(demo)
    a, b = _digest(demo), _digest(other)
    assert a.keys() == b.keys()
    assert all(a[k] != b[k] for k in a)


@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_defect_pixels_differ_from_the_good_part(defect: str) -> None:
    for index in range(3):
        sample = render_sample(f"test/{defect}", index)
        assert sample.mask is not None
        inside = sample.mask > 0
        diff = np.abs(sample.image.astype(np.float32) - sample.clean.astype(np.float32))
        # The twin is the same part, pose, light and noise; only the defect differs.
        assert float(diff[inside].mean()) > 10.0
        assert float(diff[~inside].mean()) < 0.05
        assert float(diff[inside].mean()) > 100 * float(diff[~inside].mean()) + 5.0


def _aligned(reference: np.ndarray, image: np.ndarray) -> np.ndarray:
    """`reference` registered onto `image` (rigid ECC), as a golden-part check would align it."""
    warp = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5)
    smooth = [cv2.GaussianBlur(a, (0, 0), 1.5) for a in (image, reference)]
    _, warp = cv2.findTransformECC(*smooth, warp, cv2.MOTION_EUCLIDEAN, criteria, None, 5)
    h, w = image.shape
    return cv2.warpAffine(reference, warp, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)


@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_defects_stand_out_against_an_aligned_good_part(demo: Path, defect: str) -> None:
    # Only files on disk: a different good part, aligned, is what a golden-image check sees.
    good = _read(demo / "train" / "good" / "000.png").astype(np.float32)
    ratios = []
    for p in sorted((demo / "test" / defect).glob("*.png")):
        image = _read(p).astype(np.float32)
        inside = _read(demo / "ground_truth" / defect / f"{p.stem}_mask.png") > 0
        diff = np.abs(image - _aligned(good, image))
        ratios.append(float(diff[inside].mean()) / float(diff[~inside].mean()))
    # Natural variation (texture, noise, residual pose) is outside too; defects are well above.
    assert min(ratios) > 1.2, ratios
    assert float(np.median(ratios)) > 2.0, ratios


def test_defect_positions_vary(demo: Path) -> None:
    for defect in ("scratch", "spot", "crack"):
        centres = []
        for p in sorted((demo / "ground_truth" / defect).glob("*.png")):
            ys, xs = np.nonzero(_read(p))
            centres.append((xs.mean(), ys.mean()))
        spread = np.ptp(np.array(centres), axis=0)
        assert (spread > 20).all(), (defect, centres)


def test_regenerating_a_demo_product_replaces_it(tmp_path: Path) -> None:
    generate_demo_product(tmp_path, n_train=5, n_test_good=1, n_per_defect=2)
    generate_demo_product(tmp_path, n_train=2, n_test_good=1, n_per_defect=1)
    assert len(list((tmp_path / "train" / "good").glob("*.png"))) == 2
    assert len(list((tmp_path / "ground_truth" / "spot").glob("*.png"))) == 1


def test_refuses_foreign_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DemoDataError, match="not empty"):
        generate_demo_product(tmp_path, n_train=1, n_test_good=0, n_per_defect=0)
    assert not (tmp_path / "train").exists()
    summary = generate_demo_product(tmp_path, n_train=1, n_test_good=0, n_per_defect=0, force=True)
    assert summary.count("train/good") == 1
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "kwargs",
    [{"size": (8, 8)}, {"size": (64, 400)}, {"n_train": -1}, {"n_per_defect": -2}],
)
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        generate_demo_product(tmp_path, **kwargs)


def test_cli_writes_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = ["demo-data", str(out), "--train", "2", "--test-good", "1", "--per-defect", "1"]
    assert main([*argv, "--size", "128x160", "--seed", "3"]) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "train/good 2" in line and " s" in line
    assert _read(out / "test" / "spot" / "000.png").shape == (128, 160)
    assert len(list(out.rglob("*.png"))) == 2 + 1 + 2 * len(DEFECT_TYPES)
    assert main(argv) == 0  # an earlier demo product may be overwritten


def test_cli_refuses_non_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data.csv").write_text("a,b\n")
    argv = ["demo-data", str(tmp_path), "--train", "1", "--test-good", "0", "--per-defect", "0"]
    assert main(argv) == 1
    assert "not empty" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0


def test_demo_data_error_is_a_station_error() -> None:
    assert issubclass(DemoDataError, StationError)
