"""Fit and evaluate on a set of long strips stay within the memory a Jetson Orin Nano can give.

The bounds are issue 15's: fit at most 2 GB peak for 200 strips of 500 x 1260 px (building the
model on the station itself), evaluate at most 1.5 GB for 190 of them. Each command runs in a
process of its own, started by a small parent that reads its peak resident memory
(`ru_maxrss` of its only child), so the test process's own memory does not count.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from station.demo_product import generate_demo_product

FIT_BOUND_MB = 2048
EVALUATE_BOUND_MB = 1536

_PEAK = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:]).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)\n"
    "sys.exit(rc)\n"
)


def _peak_mb(*args: str) -> int:
    """Run `station ARGS` in its own process; its peak RSS in MB."""
    cmd = [sys.executable, "-c", _PEAK, sys.executable, "-m", "station", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_fit_and_evaluate_of_200_long_strips_stay_under_the_bounds(tmp_path: Path) -> None:
    data = tmp_path / "strips"
    # 200 good strips to fit on; 190 test strips (98 good, 23 of each of the 4 defect types).
    # The demo parts are at most 2:1, so each is widened to 1260 px by repeating its last
    # column (the masks by zeros): the size and the tiling of a long strip, no new content.
    generate_demo_product(data, n_train=200, n_test_good=98, n_per_defect=23, size=(500, 1000))
    for f in data.rglob("*.png"):
        a = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        border = cv2.BORDER_CONSTANT if "ground_truth" in f.parts else cv2.BORDER_REPLICATE
        cv2.imwrite(str(f), cv2.copyMakeBorder(a, 0, 0, 0, 260, border, value=0))
    model = tmp_path / "model"
    fit_mb = _peak_mb("fit", "--data", str(data), "--out", str(model), "--quiet")
    report = tmp_path / "evaluate.json"
    eval_mb = _peak_mb(
        "evaluate", "--model", str(model), "--data", str(data), "--json", str(report), "--quiet"
    )
    result = json.loads(report.read_text())
    assert cv2.imread(str(next((data / "test" / "good").iterdir()))).shape[:2] == (500, 1260)
    print(f"fit peak {fit_mb} MB, evaluate peak {eval_mb} MB, image AUROC {result['image_auroc']}")
    assert result["n_good"] + result["n_defect"] == 190
    assert fit_mb <= FIT_BOUND_MB, f"fit peaked at {fit_mb} MB"
    assert eval_mb <= EVALUATE_BOUND_MB, f"evaluate peaked at {eval_mb} MB"
    assert result["pixel_auroc_error"] < 1e-3 and len(result["scores"]) == 190
