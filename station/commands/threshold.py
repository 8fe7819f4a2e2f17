"""`station threshold`: a new model version with another reject limit (and check band)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from station.core.errors import ConfigError


def register(subparsers: Any) -> None:
    """Add the `threshold` command."""
    p = subparsers.add_parser(
        "threshold",
        help="write a new model version with another reject limit",
        description=(
            "Writes a new, sealed version of the product's current model with the limit given "
            "(--value) or the one that meets a miss-rate target on a labelled set (--target-fnr "
            "with --data, MVTec layout), and prints it. The line runs it once it is activated "
            "(`station models activate`). Audited."
        ),
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="station config (TOML)")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (overrides the config)")
    p.add_argument("--product", help="product (default: the station's)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--value", type=float, help="the new reject limit")
    how.add_argument("--target-fnr", type=float, help="allowed miss rate, e.g. 0.005")
    p.add_argument("--data", type=Path, help="labelled set for --target-fnr (MVTec layout)")
    p.add_argument("--check", type=float, help="a check band from this score up to the limit")
    p.add_argument("--reason", default="", help="why (kept in the audit trail)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the version through the app (role checked, audited)."""
    from station.app import StationApp
    from station.config import data_dir, load_config

    if args.target_fnr is not None and args.data is None:
        raise ConfigError("--target-fnr needs --data, a labelled set to meet it on")
    cfg = load_config(args.config)
    app = StationApp(cfg, data_dir(cfg, args.data_dir))
    product = args.product or app.product
    try:
        session = app.shell_session()
        if args.value is not None:
            v = app.set_threshold(
                session, args.value, product=product, check=args.check, reason=args.reason
            )
            print(f"{product}/{v.version}: limit {v.threshold:.6g} (not active yet)")
        else:
            v, report = app.threshold_for_target(
                session, args.data, args.target_fnr, product=product
            )
            if args.check is not None:
                v = app.set_threshold(
                    session, v.threshold, product=product, check=args.check, reason=args.reason
                )
            print(
                f"{product}/{v.version}: limit {v.threshold:.6g} for a miss rate <= "
                f"{args.target_fnr:g}: misses {report.fnr:.4f}, false rejects {report.fpr:.4f} "
                f"on {report.n_good} good and {report.n_defect} defective parts (not active yet)"
            )
    finally:
        app.close()
    return 0
