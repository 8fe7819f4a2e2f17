"""A full disk loses no verdict: the data directory on a real, small filesystem (a tmpfs, so the
test needs root, as CI has), every part's image archived until the disk is full.

The spool's reserve, set aside at start, takes the results the database cannot; after the disk
has room again every verdict is in the database and the stored counters equal the rows. The
screen warns before the disk is full.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_pipeline import line_config, station_factory  # tests/integration

from station.app import StationApp
from station.model.patchcore import PatchCore
from station.records import db_path

__all__ = ["station_factory"]  # the fixture, used by name

PARTS = 300
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)"
)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_loses_no_verdict(
    demo_product: Path,
    demo_patchcore: PatchCore,
    station_factory: Callable[..., StationApp],
    small_disk: Path,
    tmp_path: Path,
) -> None:
    data = small_disk / "data"
    cfg = line_config(demo_product / "test", fps=0.0, queue_size=PARTS + 10)
    cfg = dataclasses.replace(
        cfg,
        records=dataclasses.replace(
            cfg.records, ok_sample_every=1, spool_mb=6.0, disk_warning_mb=14.0
        ),
    )
    app = station_factory(cfg, data, model=demo_patchcore, max_frames=PARTS)
    app.start()
    alarms: set[str] = set()
    while not app.wait(0.2):
        alarms.update(app.status().alarms)
    app.stop(30)
    st = app.recorder.stats()
    assert st.submitted == PARTS
    assert st.unrecorded == 0, st  # none lost: the reserve took what the database could not
    assert st.recorded + st.queued == PARTS, st
    assert any("disk nearly full" in a for a in alarms), alarms
    # The disk did fill: the reserve was given back to it, results went through the spool and
    # images stopped being archived (that room is for records).
    assert app.recorder.spool.released and st.spooled > 0 and st.images_unarchived > 0, st
    app.close()

    # The disk gets room again (the data moves to a bigger one): every verdict reaches the
    # database, the stored counters equal the rows, and no archived file lacks its row.
    big = tmp_path / "big"
    shutil.copytree(data, big)
    again = station_factory(cfg, big, model=demo_patchcore, max_frames=1)
    again.start()
    assert again.wait(120)
    again.stop(30)
    again.close()
    with sqlite3.connect(db_path(big)) as conn:
        rows = conn.execute("SELECT count(*) FROM inspections").fetchone()[0]
        stored = conn.execute("SELECT sum(inspected), sum(unrecorded) FROM shift_counters")
        inspected, unrecorded = stored.fetchone()
        paths = {p for (p,) in conn.execute("SELECT image_path FROM inspections") if p}
        warned = conn.execute(
            "SELECT min(time) FROM events WHERE message LIKE 'disk nearly full%'"
        ).fetchone()[0]
        failed = conn.execute(
            "SELECT min(time) FROM events WHERE kind = 'storage' AND message NOT LIKE 'disk %'"
        ).fetchone()[0]
    assert rows == PARTS + 1
    assert (inspected, unrecorded) == (PARTS + 1, 0)
    maps = {p for (p,) in sqlite3.connect(db_path(big)).execute(
        "SELECT map_path FROM inspections") if p}  # fmt: skip
    # An image whose row was rolled back while the disk was full can be left behind; the
    # retention pass sweeps such orphans (after an hour; here at once).
    from station.records import Database
    from station.records.retention import apply_retention

    with Database(db_path(big)) as db:
        swept = apply_retention(db, big, 90, 100_000, orphan_grace_s=0.0)
    on_disk = {str(p.relative_to(big)) for p in (big / "archive").rglob("*.png")}
    assert on_disk <= paths | maps, sorted(on_disk - paths - maps)[:5]  # no orphan image
    assert swept.expired == 0 and swept.over_budget == 0  # only orphans went
    assert warned is not None and (failed is None or warned <= failed)
