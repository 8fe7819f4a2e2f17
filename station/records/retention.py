"""Archive retention: by age, then by disk budget (OK images go first, NOK images are kept longest).

Rows are never deleted: a row whose files are removed keeps its verdict, score and times, and its
`image_path` / `map_path` become NULL. The rows are updated (committed) *before* the files are
unlinked, so an interruption leaves at worst an unreferenced file, never a row pointing at a
missing one; unreferenced files older than a grace period (leftovers of a crash between an
archive write and its commit) are swept on the next run.

Sizes are file sizes (st_size), which is what an operator sees in a file manager; the budget
covers the archive only, not the database.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from station.core.files import TMP_PREFIX, remove_quietly
from station.records.db import ARCHIVE_DIR, Database

log = logging.getLogger(__name__)

ORPHAN_GRACE_S = 3600.0  # a file younger than this may belong to a row not yet committed
_UPDATE_CHUNK = 500


@dataclass(frozen=True)
class RetentionReport:
    """What one retention pass removed and what is left."""

    expired: int = 0  # rows whose images were removed for age
    over_budget: int = 0  # rows whose images were removed for the disk budget
    orphans: int = 0  # unreferenced files swept
    freed_bytes: int = 0
    archive_bytes: int = 0  # archive size after the pass


def _scan(archive: Path) -> dict[str, tuple[int, float]]:
    """Every file under the archive: relative path ('archive/...') -> (size, mtime)."""
    files: dict[str, tuple[int, float]] = {}
    if not archive.is_dir():
        return files
    for day in os.scandir(archive):
        if not day.is_dir(follow_symlinks=False):
            continue
        for f in os.scandir(day.path):
            if f.is_file(follow_symlinks=False):
                st = f.stat(follow_symlinks=False)
                files[f"{ARCHIVE_DIR}/{day.name}/{f.name}"] = (st.st_size, st.st_mtime)
    return files


def _release(
    db: Database,
    data_dir: Path,
    rows: list[tuple[int, str | None, str | None]],
    files: dict[str, tuple[int, float]],
) -> int:
    """NULL the rows' paths (committed first), then delete their files; returns bytes freed."""
    freed = 0
    for i in range(0, len(rows), _UPDATE_CHUNK):
        chunk = rows[i : i + _UPDATE_CHUNK]
        with db.transaction() as cur:
            cur.executemany(
                "UPDATE inspections SET image_path = NULL, map_path = NULL WHERE id = ?",
                [(r[0],) for r in chunk],
            )
        for _, image, amap in chunk:
            for rel in (image, amap):
                if rel:
                    freed += remove_quietly(data_dir / rel)
                    files.pop(rel, None)
    return freed


def apply_retention(
    db: Database,
    data_dir: str | Path,
    retention_days: float,
    disk_budget_mb: float,
    *,
    now: float | None = None,
    orphan_grace_s: float = ORPHAN_GRACE_S,
) -> RetentionReport:
    """One retention pass over `data_dir/archive`; 0 (or less) disables a limit."""
    data_dir = Path(data_dir)
    archive = data_dir / ARCHIVE_DIR
    now = time.time() if now is None else now
    files = _scan(archive)
    freed = expired = over = orphans = 0

    # 1. Age: every image older than the retention period, whatever its verdict.
    if retention_days > 0:
        cutoff = now - retention_days * 86400.0
        rows = db.fetch(
            "SELECT id, image_path, map_path FROM inspections "
            "WHERE (image_path IS NOT NULL OR map_path IS NOT NULL) AND time < ? ORDER BY time",
            [cutoff],
        )
        freed += _release(db, data_dir, rows, files)
        expired = len(rows)

    # 2. Orphans: files no row points at (crash leftovers, temporaries), once old enough.
    referenced: set[str] = set()
    for image, amap in db.fetch(
        "SELECT image_path, map_path FROM inspections "
        "WHERE image_path IS NOT NULL OR map_path IS NOT NULL"
    ):
        referenced.update(p for p in (image, amap) if p)
    for rel, (_size, mtime) in list(files.items()):
        name = rel.rsplit("/", 1)[-1]
        if rel in referenced or now - mtime < orphan_grace_s:
            continue
        if name.startswith(TMP_PREFIX) or name.endswith(".png"):
            freed += remove_quietly(data_dir / rel)
            files.pop(rel)
            orphans += 1

    # 3. Budget: oldest OK images first, then oldest NOK images (a QA override counts).
    budget = int(disk_budget_mb * 1024 * 1024)
    total = sum(size for size, _ in files.values())
    if budget > 0 and total > budget:
        victims: list[tuple[int, str | None, str | None]] = []
        excess = total - budget
        for row_id, image, amap in db.fetch(
            "SELECT id, image_path, map_path FROM inspections "
            "WHERE image_path IS NOT NULL OR map_path IS NOT NULL "
            "ORDER BY coalesce(override_verdict, verdict) = 'NOK', time, id"
        ):
            victims.append((row_id, image, amap))
            excess -= sum(files.get(p, (0, 0.0))[0] for p in (image, amap) if p)
            if excess <= 0:
                break
        freed += _release(db, data_dir, victims, files)
        over = len(victims)

    # Empty day folders from earlier days go too (today's may be about to get a file).
    if archive.is_dir():
        for day in os.scandir(archive):
            if day.is_dir(follow_symlinks=False) and now - day.stat().st_mtime >= orphan_grace_s:
                with contextlib.suppress(OSError):
                    os.rmdir(day.path)  # only succeeds when empty

    report = RetentionReport(
        expired=expired,
        over_budget=over,
        orphans=orphans,
        freed_bytes=freed,
        archive_bytes=sum(size for size, _ in files.values()),
    )
    if expired or over or orphans:
        log.info(
            "retention: %d expired, %d over budget, %d orphans, %.1f MB freed, %.1f MB kept",
            expired,
            over,
            orphans,
            freed / 1e6,
            report.archive_bytes / 1e6,
        )
    return report
