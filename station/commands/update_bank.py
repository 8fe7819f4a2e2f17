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
            "line runs the version once it is activated. --false-rejects adds the parts the "
            "current version rejected that QA confirmed good (`station dispose ... "
            "false_reject`). Audited."
        ),
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="station config (TOML)")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (overrides the config)")
    p.add_argument("--product", help="product (default: the station's)")
    p.add_argument("--data", type=Path, help="the new good parts")
    p.add_argument(
        "--false-rejects",
        action="store_true",
        help="add the current version's confirmed false rejects (their archived images)",
    )
    p.add_argument("--base", metavar="vNNNN", help="version to update (default: the current)")
    p.add_argument("--json", type=Path, help="also write the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Update through the app (role checked, audited)."""
    from station.app import StationApp
    from station.config import data_dir, load_config
    from station.core.errors import ConfigError, StationError
    from station.model.patchcore import training_images

    if args.data is None and not args.false_rejects:
        raise ConfigError("give the new good parts: --data DIR, --false-rejects, or both")
    cfg = load_config(args.config)
    app = StationApp(cfg, data_dir(cfg, args.data_dir))
    product = args.product or app.product
    try:
        session = app.shell_session()
        images = training_images(args.data) if args.data is not None else []
        if args.false_rejects:
            found = app.false_rejects(session, product)
            if not found and not images:
                raise StationError(
                    f"{product}: no confirmed false rejects of the current version with an "
                    "archived image"
                )
            print(f"adding {len(found)} confirmed false rejects")
            images += [f.image for f in found]
        report = app.update_bank(session, product, images, base=args.base)
    finally:
        app.close()
    print(
        f"{product}/{report.artifact.name}: bank {report.bank_size} after adding "
        f"{report.n_train} parts ({report.n_calibration} held back), "
        f"{report.fit_seconds:.1f} s (not active yet)"
        + (f"; per-position {report.position_norm}" if report.position_norm else "")
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
                    "position_norm": report.position_norm,
                },
                indent=2,
            )
        )
    return 0
