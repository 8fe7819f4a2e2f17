"""`station dispose`: record what happened to a part (confirmed defect, false reject, ...)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

KINDS = ("confirmed_defect", "false_reject", "rework", "missed_defect")


def register(subparsers: Any) -> None:
    """Add the `dispose` command."""
    p = subparsers.add_parser(
        "dispose",
        help="record a part's disposition (confirmed defect, false reject, rework, missed)",
        description=(
            "Appends a disposition to a recorded part: confirmed_defect, false_reject or rework "
            "for a rejected part, missed_defect for a part that passed and was found bad later. "
            "The latest one stands; all are kept and audited. Confirmed false rejects are offered "
            "to the technician as good parts (`station update-bank --false-rejects`)."
        ),
    )
    p.add_argument("part", help="part id as shown on the screen, e.g. DEMO-20261201-000123")
    p.add_argument("kind", choices=KINDS, help="what happened to the part")
    p.add_argument("--reason", required=True, help="what was found (kept with the disposition)")
    p.add_argument("--config", type=Path, metavar="FILE", help="station config (TOML)")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (overrides the config)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from station.app import StationApp
    from station.config import data_dir, load_config

    cfg = load_config(args.config)
    app = StationApp(cfg, data_dir(cfg, args.data_dir))
    try:
        d = app.dispose(app.shell_session(), args.part, args.kind, args.reason)
    finally:
        app.close()
    print(f"{d.part_id}: {d.kind.label.lower()} ({d.user}, {d.when:%Y-%m-%d %H:%M:%S})")
    return 0
