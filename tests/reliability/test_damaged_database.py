"""A damaged records database is never written to: checked at start, moved aside, replaced.

The damage is real: random bytes written into the middle of a real database file (what a failing
disk or a careless copy leaves), or over its header.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from test_pipeline import line_config, station_factory, wait_until  # tests/integration

from station.app import StationApp
from station.core.result import StationState
from station.model.patchcore import PatchCore
from station.records import db_path

__all__ = ["station_factory"]  # the fixture, used by name


def _run(make: Callable[..., StationApp], cfg, data: Path, model: PatchCore, n: int) -> StationApp:
    app = make(cfg, data, model=model, max_frames=n)
    app.start()
    assert app.wait(120), "the line did not stop after its frames"
    return app


def _damage(path: Path, where: str) -> None:
    size = path.stat().st_size
    with path.open("r+b") as fh:
        if where == "middle":
            fh.seek((size // 2) // 4096 * 4096)
            fh.write(np.random.default_rng(7).integers(0, 256, 4096, np.uint8).tobytes())
        else:
            fh.write(b"not a database at all" * 5)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("where", ["middle", "header"])
def test_a_damaged_database_is_moved_aside_and_a_new_one_started(
    demo_product: Path,
    demo_patchcore: PatchCore,
    station_factory: Callable[..., StationApp],
    tmp_path: Path,
    where: str,
) -> None:
    data = tmp_path / "data"
    cfg = line_config(demo_product, fps=0.0)
    first = _run(station_factory, cfg, data, demo_patchcore, 40)
    first.close()
    db = db_path(data)
    _damage(db, where)
    before = _sha(db)
    with sqlite3.connect(db) as conn, pytest.raises(sqlite3.DatabaseError):  # really damaged
        rows = conn.execute("PRAGMA integrity_check").fetchall()
        if rows != [("ok",)]:
            raise sqlite3.DatabaseError(rows)

    second = station_factory(cfg, data, model=demo_patchcore, max_frames=10)
    second.start()
    wait_until(lambda: second.status().counters.inspected >= 1, 60, "inspecting again")
    alarm = " ".join(second.status().alarms)
    assert "records database was damaged" in alarm and "moved to station.db.damaged-" in alarm
    assert second.wait(120)
    assert second.status().state == StationState.STOPPED
    second.flush()

    aside = sorted(data.glob("station.db.damaged-*"))
    assert [p.name for p in aside if not p.name.endswith(("-wal", "-shm"))], aside
    damaged = next(p for p in aside if not p.name.endswith(("-wal", "-shm")))
    assert _sha(damaged) == before, "the damaged file was written to"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT count(*) FROM inspections").fetchone()[0] == 10
        (message,) = conn.execute(
            "SELECT message FROM events WHERE kind = 'storage' AND message LIKE '%damaged%'"
        ).fetchone()
    assert damaged.name in message


def test_a_sound_database_is_kept(
    demo_product: Path,
    demo_patchcore: PatchCore,
    station_factory: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    cfg = line_config(demo_product, fps=0.0)
    _run(station_factory, cfg, data, demo_patchcore, 5).close()
    again = _run(station_factory, cfg, data, demo_patchcore, 5)
    again.flush()
    assert not list(data.glob("station.db.damaged-*"))
    assert not [a for a in again.status().alarms if "damaged" in a]
    with sqlite3.connect(db_path(data)) as conn:
        assert conn.execute("SELECT count(*) FROM inspections").fetchone()[0] == 10
