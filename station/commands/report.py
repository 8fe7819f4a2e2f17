"""`station report`: a shift's report as PDF and/or CSV."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the `report` command."""
    p = subparsers.add_parser(
        "report",
        help="write a shift report (PDF and/or CSV)",
        description=(
            "Writes the report of one shift: counts, rates, model versions and limits, the NOK "
            "rate as a p-chart, throughput, latency, scores, drift, alarms, dispositions, the "
            "highest-scoring NOK parts and the audit trail (PDF); one row per inspection (CSV). "
            "Without --pdf and --csv both go into the reports folder under their default names. "
            "The station also writes each shift's report there when the shift ends."
        ),
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="station config (TOML)")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (overrides the config)")
    p.add_argument(
        "--shift",
        default="current",
        help="YYYY-MM-DD/HH (the day and start hour, e.g. 2026-12-01/06), current or previous",
    )
    p.add_argument("--product", help="only this product's parts (default: all)")
    p.add_argument("--pdf", type=Path, metavar="OUT.pdf", help="write the PDF here")
    p.add_argument("--csv", type=Path, metavar="OUT.csv", help="write the CSV here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the report through the app (role checked, audited)."""
    from station.app import StationApp
    from station.config import data_dir, load_config

    cfg = load_config(args.config)
    app = StationApp(cfg, data_dir(cfg, args.data_dir))
    try:
        files = app.shift_report(
            app.shell_session(), args.shift, product=args.product, pdf=args.pdf, csv=args.csv
        )
    finally:
        app.close()
    c = files.counts
    print(
        f"shift {files.shift.key} ({files.shift.label}): {c.get('inspected', 0)} inspected, "
        f"{c.get('ok', 0)} OK, {c.get('check', 0)} CHECK, {c.get('nok', 0)} NOK"
    )
    for path in (files.pdf, files.csv):
        if path is not None:
            print(f"  {path}")
    return 0
