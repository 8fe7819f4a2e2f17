"""`station audit`: print or export the audit trail, or verify its hash chain."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from station.commands._tables import iso, parse_time, print_table, write_csv
from station.core.errors import StationError

CSV_COLUMNS = (
    "id",
    "time",
    "user",
    "role",
    "action",
    "object",
    "before",
    "after",
    "reason",
    "via",
    "hash",
)


def register(subparsers: Any) -> None:
    """Add the `audit` command."""
    p = subparsers.add_parser(
        "audit",
        help="show, export or verify the audit trail",
        description=(
            "Who changed what and when: logins and refusals, pause and resume, limits, model "
            "activations, users, dispositions. --verify checks every row's hash chain and exits "
            "non-zero naming the first edited or deleted row."
        ),
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="station config (TOML)")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (overrides the config)")
    p.add_argument("--since", metavar="TIME", help="from 2026-11-21T06:00, or an age: 8h, 30m")
    p.add_argument("--until", metavar="TIME", help="up to (not including) this time")
    p.add_argument("--csv", metavar="OUT", help="write CSV to OUT ('-' for standard output)")
    p.add_argument("--verify", action="store_true", help="check the hash chain; exit 0 if intact")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print, export or verify."""
    from station.app import StationApp
    from station.config import data_dir, load_config

    cfg = load_config(args.config)
    folder = data_dir(cfg, args.data_dir)
    app = StationApp(cfg, folder)
    if not app.db_file.is_file():
        raise StationError(f"no records in {folder} ({app.db_file.name} not found)")
    try:
        session = app.shell_session()
        if args.verify:
            result = app.verify_audit(session)
            if result.ok:
                print(f"audit trail intact: {result.rows} rows, hash chain and head checked")
                return 0
            print(f"station audit: BROKEN: {result.problem}", file=sys.stderr)
            return 3
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
        rows = app.audit_rows(session, since, until)
    finally:
        app.close()
    table = [
        [
            str(r.id),
            iso(r.time),
            r.user,
            r.role,
            r.action,
            r.object,
            r.before or "",
            r.after or "",
            r.reason,
            r.via,
            r.hash,
        ]
        for r in rows
    ]
    if args.csv:
        n = write_csv(args.csv, list(CSV_COLUMNS), table)
        if args.csv != "-":
            print(f"wrote {n} audit rows to {args.csv}")
        return 0
    print_table(list(CSV_COLUMNS[:-1]), [row[:-1] for row in table], sys.stdout)
    print(f"{len(table)} audit rows")
    return 0
