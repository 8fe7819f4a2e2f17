"""`station update-bank`: teach a model new good parts without a refit."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the `update-bank` command."""
    p = subparsers.add_parser(
        "update-bank",
        help="add new good parts to a model's memory bank (a new version)",
        description=(
            "A new version of the product's current model whose memory bank is a coreset over "
            "its old bank plus the patches of the new good parts (DIR/train/good in MVTec "
            "layout, or a folder of images): no refit from all images. The limit is kept; the "
            "line runs the version once it is activated. Audited."
        ),
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="station config (TOML)")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (overrides the config)")
    p.add_argument("--product", help="product (default: the station's)")
    p.add_argument("--data", required=True, type=Path, help="the new good parts")
    p.add_argument("--base", metavar="vNNNN", help="version to update (default: the current)")
    p.add_argument("--json", type=Path, help="also write the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Update through the app (role checked, audited)."""
    from station.app import StationApp
    from station.config import data_dir, load_config
    from station.model.patchcore import training_images

    cfg = load_config(args.config)
    app = StationApp(cfg, data_dir(cfg, args.data_dir))
    product = args.product or app.product
    try:
        report = app.update_bank(
            app.shell_session(), product, training_images(args.data), base=args.base
        )
    finally:
        app.close()
    print(
        f"{product}/{report.artifact.name}: bank {report.bank_size} after adding "
        f"{report.n_train} parts ({report.n_calibration} held back), "
        f"{report.fit_seconds:.1f} s (not active yet)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "model": str(report.artifact),
                    "added": report.n_train,
                    "held_back": report.n_calibration,
                    "bank_size": report.bank_size,
                    "seconds": round(report.fit_seconds, 2),
                },
                indent=2,
            )
        )
    return 0
