"""Shared by the commands that list records: time arguments, tables, CSV files."""

from __future__ import annotations

import csv
import re
import sys
from datetime import datetime, timedelta
from typing import IO, Any

from station.core.errors import StationError

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """'2026-11-21T06:00' (local time), '2026-11-21', or an age back from now: '8h', '30m', '2d'."""
    m = _RELATIVE.match(text)
    if m:
        seconds = float(m.group(1)) * _UNIT_S[m.group(2).lower()]
        return (now or datetime.now()) - timedelta(seconds=seconds)
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise StationError(
            f"'{text}' is not a time: use 2026-11-21T06:00, 2026-11-21, or an age like 8h, 30m, 2d"
        ) from None


def iso(t: float | None) -> str:
    return datetime.fromtimestamp(t).isoformat(timespec="milliseconds") if t is not None else ""


def write_csv(out: str, header: list[str], rows: list[list[Any]]) -> int:
    if out == "-":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return len(rows)
    try:
        with open(out, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
    except OSError as exc:
        raise StationError(f"{out}: cannot write CSV: {exc}") from exc
    return len(rows)


def print_table(header: list[str], rows: list[list[str]], out: IO[str]) -> None:
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    for line in [header, *rows]:
        out.write("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n")
