"""`station bench-update-bank`: update-bank against a full refit, over several seeds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the `bench-update-bank` command."""
    p = subparsers.add_parser(
        "bench-update-bank",
        help="compare learning new good parts (update-bank) with a full refit",
        description=(
            "For each seed: a bank fitted on all of DIR/train/good (less the held-back parts) "
            "against one fitted on a random half and updated with the other half as `station "
            "update-bank` does. Both are scored on DIR/test: image AUROC and false rejects at "
            "the miss-rate target and at 5 %% missed. Prints each trial, then JSON with the "
            "means and their difference (update minus full) and the full fit's own spread "
            "over the seeds."
        ),
    )
    p.add_argument("--data", type=Path, required=True, help="MVTec-layout set")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (3)")
    p.add_argument("--target-fnr", type=float, default=0.005, help="miss-rate target (0.005)")
    p.add_argument("--config", type=Path, metavar="FILE", help="station config (TOML)")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Featurise once, build and score every bank, print the JSON."""
    from station.app.bank_study import study_update
    from station.config import load_config
    from station.core.errors import ConfigError

    if args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds}: at least 1")
    if not 0 <= args.target_fnr < 1:
        raise ConfigError(f"--target-fnr {args.target_fnr}: a rate in [0, 1)")
    cfg = load_config(args.config)
    result = study_update(args.data, cfg.model, range(args.seeds), args.target_fnr)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0
