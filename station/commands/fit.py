"""`station fit`: build a model version from good parts."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from station.config import load_config
from station.model.patchcore import training_images
from station.model.training import fit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit",
        help="fit a PatchCore model on good images",
        description="Fit PatchCore on DIR/train/good (MVTec layout) or on a flat folder of good "
        "images. With --product the model becomes the product's next version in the station's "
        "data directory (it runs once activated: `station models activate`; audited); with "
        "--out it is written to a folder of its own.",
    )
    p.add_argument("--data", required=True, type=Path, help="MVTec-layout set or folder of images")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--product", help="fit into this product's model store (next version)")
    where.add_argument("--out", type=Path, help="model folder to create instead")
    p.add_argument("--data-dir", metavar="DIR", help="data directory for --product")
    p.add_argument("--backbone", help="backbone (default from config: efficientnet_lite0)")
    p.add_argument("--weights", help="backbone state-dict file (needed for resnet*)")
    p.add_argument("--config", type=Path, help="TOML config (default configs/default.toml)")
    p.add_argument("--json", type=Path, help="also write the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--auto",
        action="store_true",
        help="choose the recipe from the good images alone (candidates judged on synthetic "
        "defects within model.latency_budget_ms), then fit it",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    app = None
    if args.product:
        from station.app import StationApp
        from station.config import data_dir

        app = StationApp(cfg, data_dir(cfg, args.data_dir))
        model_cfg = app.products.config(args.product, cfg).model
    else:
        model_cfg = cfg.model
    if args.backbone:
        model_cfg = dataclasses.replace(model_cfg, backbone=args.backbone)
    if args.weights:
        model_cfg = dataclasses.replace(model_cfg, weights=args.weights)
    images = training_images(args.data)
    auto = None
    if args.auto:
        from station.app.auto_recipe import choose_recipe

        auto = choose_recipe(
            images, model_cfg, budget_ms=model_cfg.latency_budget_ms,
            log=(lambda _m: None) if args.quiet else print,
        )  # fmt: skip
        model_cfg = auto.config
    if app is not None:
        try:
            report = app.fit_version(
                app.shell_session(), args.product, images, progress=not args.quiet,
                model_cfg=model_cfg,
            )  # fmt: skip
        finally:
            app.close()
    else:
        from station.config import data_dir
        from station.model.signing import station_signer

        # Signed with this station's key (or the plant key): it runs here once copied into
        # the store; elsewhere, once that station trusts the key or an admin signs it there.
        signer = station_signer(
            data_dir(cfg, args.data_dir), cfg.model.signing_key, cfg.model.trust_dir
        )
        report = fit(images, model_cfg, args.out, progress=not args.quiet, signer=signer)
    summary = {
        "model": str(report.artifact),
        "n_train": report.n_train,
        "n_calibration": report.n_calibration,
        "n_patches": report.n_patches,
        "bank_size": report.bank_size,
        "fit_seconds": round(report.fit_seconds, 2),
        "threshold": report.threshold,
        "position_norm": report.position_norm,
        "exposure": report.exposure,
        "discriminator": report.discriminator,
    }
    if auto is not None:
        summary["auto"] = auto.to_json()
    print(
        f"fitted {report.artifact}: {report.n_train} images ({report.n_calibration} held out for "
        f"calibration), bank {report.bank_size} of {report.n_patches} patches, "
        f"threshold {report.threshold:.4g}, fit time {report.fit_seconds:.1f} s; per-position "
        f"normalisation {report.position_norm}; exposure {report.exposure}; "
        f"discriminator {report.discriminator}"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0
