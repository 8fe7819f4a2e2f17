"""`station demo-data DIR`: write the synthetic demo product (MVTec-AD layout) into DIR."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from station.demo_product import generate_demo_product


def parse_size(text: str) -> tuple[int, int]:
    """Parse "HxW" (or a single number for a square) into (h, w)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX*]\s*(\d+))?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"size must look like 256x256 (HxW), got {text!r}")
    h = int(m.group(1))
    return h, int(m.group(2) or h)


def _count(text: str) -> int:
    """A non-negative image count."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {n}")
    return n


def register(subparsers: Any) -> None:
    """Add the `demo-data` subcommand."""
    p = subparsers.add_parser(
        "demo-data",
        help="write the synthetic demo product (MVTec-AD layout)",
        description=(
            "Write synthetic images of the demo product (a brushed, laser-marked metal plate) "
            "with scratch, spot, crack and missing_print defects and their masks, in the "
            "MVTec-AD layout. Deterministic for a given seed."
        ),
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="output folder")
    p.add_argument("--train", type=_count, default=120, metavar="N", help="good training images")
    p.add_argument("--test-good", type=_count, default=30, metavar="N", help="good test images")
    p.add_argument(
        "--per-defect", type=_count, default=10, metavar="N", help="test images per defect type"
    )
    p.add_argument(
        "--size", type=parse_size, default=(256, 256), metavar="HxW", help="image size (256x256)"
    )
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (0)")
    p.add_argument(
        "--force",
        action="store_true",
        help="write even into a non-empty folder that is not an earlier demo product",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate the demo product and print a one-line summary."""
    summary = generate_demo_product(
        args.dir,
        n_train=args.train,
        n_test_good=args.test_good,
        n_per_defect=args.per_defect,
        size=args.size,
        seed=args.seed,
        force=args.force,
    )
    print(summary.one_line())
    return 0
