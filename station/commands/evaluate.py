"""`station evaluate`: detection/localisation metrics and the threshold for a miss-rate target."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from station.config import load_config
from station.core.errors import StationError
from station.inspect.evaluation import evaluate, test_items
from station.model.patchcore import PatchCore
from station.model.search import SearchSpec


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="image/pixel AUROC, AUPRO and the threshold meeting a false-negative target",
    )
    p.add_argument("--model", required=True, type=Path, help="model folder")
    p.add_argument("--data", required=True, type=Path, help="MVTec-layout set with test/")
    p.add_argument("--target-fnr", type=float, default=0.005, help="allowed miss rate (0.005)")
    p.add_argument("--runtime", choices=["torch", "onnx", "tensorrt"], help="default from config")
    p.add_argument("--config", type=Path)
    p.add_argument("--json", type=Path, help="write the report as JSON")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def _fmt(x: float) -> str:
    return "n/a" if isinstance(x, float) and math.isnan(x) else f"{x:.4f}"


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if not 0.0 <= args.target_fnr < 1.0:
        raise StationError(f"--target-fnr {args.target_fnr:g} must be in [0, 1), e.g. 0.005")
    cfg = load_config(args.config)
    model = PatchCore.load(
        args.model,
        args.runtime or cfg.model.runtime,
        threads=cfg.model.threads,
        search=SearchSpec.from_config(cfg.model),
    )
    n = len(test_items(args.data))
    with tqdm(total=n, desc="evaluate", unit="img", disable=args.quiet) as bar:
        report = evaluate(model, args.data, args.target_fnr, progress=bar.update)
    print(f"model {args.model} on {args.data}: {report.n_good} good, {report.n_defect} defective")
    if report.unmasked_defects:
        print(
            f"  warning: {len(report.unmasked_defects)} defective images have no mask or an "
            f"empty one (first: {report.unmasked_defects[0]}); they count in the image metrics "
            "and are kept out of the pixel metrics"
        )
    print(
        f"  image AUROC {_fmt(report.image_auroc)}  pixel AUROC {_fmt(report.pixel_auroc)}  "
        f"AUPRO(0.3) {_fmt(report.aupro)}\n"
        f"  pixel AUROC against good parts only {_fmt(report.pixel_auroc_good)}"
    )
    for t, v in report.per_type.items():
        px = report.per_type_pixel.get(t, float("nan"))
        share = report.defect_pixel_share.get(t, float("nan"))
        print(
            f"  {t:<16} image AUROC {_fmt(v)}  pixel AUROC {_fmt(px)}"
            f"  ({'n/a' if math.isnan(share) else f'{share:.1%}'} of defect pixels)"
        )
    c = report.confusion
    print(
        f"  threshold {report.threshold:.4g} for FNR <= {report.target_fnr}: FNR {_fmt(report.fnr)}"
        f", FPR {_fmt(report.fpr)} (tp {c['tp']}, fn {c['fn']}, fp {c['fp']}, tn {c['tn']})"
    )
    print(
        f"  stored limit {report.stored_threshold:.4g} (what the line runs): "
        f"misses {_fmt(report.stored_fnr)}, false rejects {_fmt(report.stored_fpr)}"
    )
    _print_limit_setters(report.scores)
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2))
    return 0


def _print_limit_setters(scores: list[dict], n: int = 3) -> None:
    """The parts that decide the limit: the lowest-scoring defects, the highest good parts."""
    defects = sorted((s for s in scores if s["type"] != "good"), key=lambda s: s["score"])
    good = sorted((s for s in scores if s["type"] == "good"), key=lambda s: -s["score"])
    for title, rows in (("lowest defects", defects[:n]), ("highest good", good[:n])):
        if rows:
            listed = ", ".join(
                f"{Path(r['file']).name} ({r['type']}) {r['score']:.4g}" for r in rows
            )
            print(f"  {title}: {listed}")
