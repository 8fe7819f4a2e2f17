"""Records: the SQLite database, the image archive, retention and the recorder thread.

One data directory holds `station.db` (this package), `archive/` (this package) and `models/`.
"""

from station.records.db import (
    ARCHIVE_DIR,
    DB_NAME,
    Database,
    EventRow,
    InspectionRow,
    ShiftCounts,
    db_path,
)
from station.records.migrations import LATEST_VERSION
from station.records.recorder import Committed, Recorder, RecorderStats
from station.records.retention import RetentionReport, apply_retention
from station.records.shifts import Shift, parse_shift, shift_key, shift_window

__all__ = [
    "ARCHIVE_DIR",
    "DB_NAME",
    "LATEST_VERSION",
    "Committed",
    "Database",
    "EventRow",
    "InspectionRow",
    "Recorder",
    "RecorderStats",
    "RetentionReport",
    "Shift",
    "ShiftCounts",
    "apply_retention",
    "db_path",
    "parse_shift",
    "shift_key",
    "shift_window",
]
