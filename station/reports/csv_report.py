"""The shift's inspections as CSV: one row per inspection, for a spreadsheet or a MES import."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path

from station.core.files import write_atomic
from station.records.db import Database
from station.records.shifts import Shift
from station.reports.shift_data import CSV_HEADER, inspection_rows


def write_csv(db: Database, shift: Shift, out: str | Path, *, product: str | None = None) -> int:
    """Write the shift's inspections to `out` (atomically); returns the number of rows.

    Times are local ISO 8601 with their offset; `limit` is the reject limit the part was judged
    against; `disposition` the one that stands; `image_path` relative to the data directory
    (empty when no image was kept, or retention removed it).
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    n = 0
    for r in inspection_rows(db, shift, product):
        w.writerow(
            (
                r.part_id or f"#{r.id}",
                datetime.fromtimestamp(r.time).astimezone().isoformat(timespec="milliseconds"),
                r.product or "",
                r.model_version,
                f"{r.score:.4f}",
                f"{r.threshold:.4f}",
                r.verdict.value,
                r.disposition or "",
                r.image_path or "",
            )
        )
        n += 1
    write_atomic(Path(out), buf.getvalue().encode("utf-8"))
    return n
