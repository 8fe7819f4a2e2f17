"""`station log`: show recorded inspections (or events) as a table, or export them as CSV."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from station.commands._tables import iso, parse_time, print_table, write_csv
from station.core.errors import StationError

CSV_COLUMNS = (
    "id",
    "time",
    "frame_id",
    "source",
    "score",
    "threshold",
    "verdict",
    "latency_ms",
    "model_version",
    "label",
    "image_path",
    "map_path",
    "override_verdict",
    "override_operator",
    "override_time",
    "part_id",
)


def _verdict(text: str) -> str:
    v = text.strip().upper()
    if v not in ("OK", "NOK"):
        raise argparse.ArgumentTypeError(f"'{text}' is not OK or NOK")
    return v


def register(subparsers: Any) -> None:
    """Add the `log` command."""
    p = subparsers.add_parser(
        "log",
        help="show or export recorded inspections",
        description="Recorded inspections, newest first, as a table or a CSV file.",
    )
    p.add_argument("--config", metavar="FILE", help="station config (for the data directory)")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (overrides the config)")
    p.add_argument("--since", metavar="TIME", help="from 2026-11-21T06:00, or an age: 8h, 30m")
    p.add_argument("--until", metavar="TIME", help="up to (not including) this time")
    p.add_argument("--verdict", type=_verdict, metavar="OK|NOK", help="only this verdict")
    p.add_argument("--limit", type=int, metavar="N", help="at most N rows (the newest)")
    p.add_argument("--csv", metavar="OUT", help="write CSV to OUT ('-' for standard output)")
    p.add_argument("--events", action="store_true", help="list events instead of inspections")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Query the records and print or export them."""
    from station.app import StationApp
    from station.config import data_dir, load_config

    cfg = load_config(args.config)
    folder = data_dir(cfg, args.data_dir)
    app = StationApp(cfg, folder)
    path = app.db_file
    if not path.is_file():
        raise StationError(f"no records in {folder} ({path.name} not found)")
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    if args.limit is not None and args.limit < 0:
        raise StationError("--limit must be 0 or more")
    session = app.shell_session()
    try:
        if args.events:
            events = app.events(session, since, until, limit=args.limit)
            header = ["id", "time", "kind", "state", "message"]
            table = [
                [str(e.id), iso(e.time), e.kind, e.state.value if e.state else "", e.message]
                for e in events
            ]
            if args.csv:
                write_csv(args.csv, header, table)
            else:
                print_table(header, table, sys.stdout)
                print(f"{len(table)} events in {path}")
            return 0
        rows = app.inspections(session, since, until, args.verdict, args.limit)
    finally:
        app.close()
    if args.csv:
        records = [
            [
                r.id,
                iso(r.time),
                r.frame_id,
                r.source,
                repr(r.score),
                repr(r.threshold),
                r.verdict.value,
                f"{r.latency_ms:.3f}",
                r.model_version,
                r.label or "",
                r.image_path or "",
                r.map_path or "",
                r.override_verdict.value if r.override_verdict else "",
                r.override_operator or "",
                iso(r.override_time),
                r.part_id or "",
            ]
            for r in rows
        ]
        n = write_csv(args.csv, list(CSV_COLUMNS), records)
        if args.csv != "-":
            print(f"wrote {n} rows to {args.csv}")
        return 0
    header = ["id", "time", "frame", "verdict", "score", "thr", "ms", "model", "label", "image"]
    table = []
    for r in rows:
        verdict = r.verdict.value
        if r.override_verdict and r.override_verdict != r.verdict:
            verdict += f" ->{r.override_verdict.value} ({r.override_operator or '?'})"
        table.append(
            [
                str(r.id),
                iso(r.time)[:19].replace("T", " "),
                str(r.frame_id),
                verdict,
                f"{r.score:.4g}",
                f"{r.threshold:.4g}",
                f"{r.latency_ms:.0f}",
                r.model_version,
                r.label or "",
                r.image_path or "",
            ]
        )
    print_table(header, table, sys.stdout)
    nok = sum(1 for r in rows if r.verdict.value == "NOK")
    print(f"{len(rows)} inspections ({nok} NOK) in {path}")
    return 0
