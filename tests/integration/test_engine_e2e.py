"""End to end: fit + evaluate through the CLI on the demo product and on real images; runtime
conformance (every runtime present gives the same anomaly maps and AUROC)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from station.cli import main
from station.core.imageio import list_images, read_image
from station.inspect.metrics import auroc
from station.model.patchcore import PatchCore

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def real_subset(tmp_path: Path, name: str, n_train: int, n_test: int) -> Path:
    """An MVTec-layout view of a few real images made of symlinks (the data is never copied)."""
    src = SHARED / name
    if not src.is_dir():
        pytest.skip(f"{src} is absent (the shared real-image sets live beside the repository)")
    dst = tmp_path / name
    for split, n in (("train", n_train), ("test", n_test)):
        for folder in sorted((src / split).iterdir()):
            files = list_images(folder)
            step = max(1, len(files) // n)
            (dst / split / folder.name).mkdir(parents=True)
            for f in files[::step][:n]:
                os.symlink(f, dst / split / folder.name / f.name)
                if split == "test" and folder.name != "good":
                    gt = src / "ground_truth" / folder.name / f"{f.stem}_mask.png"
                    (dst / "ground_truth" / folder.name).mkdir(parents=True, exist_ok=True)
                    os.symlink(gt, dst / "ground_truth" / folder.name / gt.name)
    return dst


def cli_fit(data: Path, out: Path, tmp_path: Path) -> None:
    """`station fit` with the small test config; asserts it succeeded."""
    args = ["fit", "--data", str(data), "--out", str(out), "--quiet"]
    assert main([*args, "--config", str(small_config(tmp_path))]) == 0


def small_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "small.toml"
    cfg.write_text("[model]\nimage_size = 224\ncoreset_ratio = 0.05\n")
    return cfg


@pytest.mark.slow
def test_fit_and_evaluate_demo_product(demo_product: Path, tmp_path: Path, capsys):
    model = tmp_path / "models" / "demo" / "v0001"
    cli_fit(demo_product, model, tmp_path)
    assert "bank" in capsys.readouterr().out
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(model),
                "--data",
                str(demo_product),
                "--quiet",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    r = json.loads(out.read_text())
    for key in (
        "image_auroc",
        "pixel_auroc",
        "aupro",
        "per_type",
        "threshold",
        "target_fnr",
        "fnr",
        "fpr",
        "n_good",
        "n_defect",
    ):
        assert key in r
    assert r["n_good"] == 10 and r["n_defect"] == 20
    # The synthetic defects are clear: a working engine separates them and finds where they are.
    assert r["image_auroc"] >= 0.85 and r["pixel_auroc"] >= 0.9
    assert r["pixel_auroc_good"] >= 0.9
    assert set(r["per_type"]) == {"scratch", "spot", "crack", "missing_print"}
    assert set(r["per_type_pixel"]) == set(r["per_type"]) == set(r["defect_pixel_share"])
    assert min(r["per_type_pixel"].values()) >= 0.8
    assert sum(r["defect_pixel_share"].values()) == pytest.approx(1.0)
    assert r["fnr"] <= 0.05  # 20 defects: at most floor(0.005*20)=0 misses at the threshold


@pytest.mark.slow
def test_fit_and_evaluate_real_magnetic_tile_subset(tmp_path: Path):
    data = real_subset(tmp_path, "magnetic_tile", n_train=40, n_test=6)
    model = tmp_path / "mt"
    cli_fit(data, model, tmp_path)
    out = tmp_path / "eval.json"
    assert (
        main(
            ["evaluate", "--model", str(model), "--data", str(data), "--quiet", "--json", str(out)]
        )
        == 0
    )
    r = json.loads(out.read_text())
    assert r["n_good"] == 6 and r["n_defect"] == 30
    assert r["image_auroc"] > 0.5 and r["pixel_auroc"] > 0.6  # better than chance on 40 parts


def _runtimes() -> list[str]:
    found = ["torch", "onnx"]
    try:
        from station.runtime.tensorrt_runtime import unavailable_reason

        if unavailable_reason() is None:
            found.append("tensorrt")
    except Exception:
        pass
    return found


@pytest.mark.slow
def test_runtime_conformance_on_real_images(tmp_path: Path, record_property):
    """Same real images through every runtime present: maps agree, AUROC equal to 3 decimals."""
    data = real_subset(tmp_path, "magnetic_tile", n_train=30, n_test=4)
    model = tmp_path / "mt"
    cli_fit(data, model, tmp_path)
    items = [
        (f, d.name != "good") for d in sorted((data / "test").iterdir()) for f in list_images(d)
    ]
    images = [read_image(f) for f, _ in items]
    labels = np.array([y for _, y in items])
    results = {}
    for rt in _runtimes():
        m = PatchCore.load(model, rt)
        preds = [m.predict(im) for im in images]
        results[rt] = ([p.anomaly_map for p in preds], np.array([p.score for p in preds]))
        m.close()
    ref_maps, ref_scores = results["torch"]
    ref_auc = auroc(ref_scores, labels)
    for rt, (maps, scores) in results.items():
        diff = max(float(np.abs(a - b).max()) for a, b in zip(maps, ref_maps, strict=True))
        rel = diff / max(float(np.abs(m).max()) for m in ref_maps)
        record_property(f"{rt}_max_abs_map_diff", diff)
        print(
            f"\nruntime {rt}: max abs anomaly-map difference vs torch {diff:.2e} "
            f"(relative {rel:.1e}), image AUROC {auroc(scores, labels):.4f}"
        )
        assert rel < 1e-3
        assert round(auroc(scores, labels), 3) == round(ref_auc, 3)


def test_bench_json_compares_runtimes_on_the_same_model(
    demo_model: Path, demo_product: Path, tmp_path: Path
):
    """`station bench` keeps the JSON keys later tooling reads, and a compared runtime carries its
    throughput ratio. Timing values are not asserted: benchmarks, not tests, judge speed."""
    out = tmp_path / "bench.json"
    args = ["bench", "--model", str(demo_model), "--data", str(demo_product), "--runtime", "onnx"]
    args += ["--compare", "torch", "--images", "3", "--iterations", "4", "--warmup", "1"]
    assert main([*args, "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["runtime"] == "onnx" and set(r["latency_ms"]) == {"p50", "p95"}
    assert set(r["stages_ms"]) == {"preprocess", "backbone", "knn", "postprocess"}
    for key in ("throughput_fps", "peak_rss_mb", "floor_ms", "x_floor"):
        assert r[key] > 0
    (torch_run,) = r["compare"]
    assert torch_run["runtime"] == "torch" and torch_run["throughput_ratio"] > 0
    assert torch_run["floor_ms"] == r["floor_ms"]  # one GEMM rate, one floor, for both
