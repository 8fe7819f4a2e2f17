"""Frames the line cannot judge are refused one by one, counted on the screen and recorded as
events with their reason; a frame far too large is refused before it is decoded or archived.

The bad files are real files in a real replay folder: truncated, empty, not an image, 1x1 and
8000x8000 pixels.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from test_pipeline import line_config, station_factory  # tests/integration

from station.app import StationApp
from station.model.patchcore import PatchCore
from station.records import db_path

__all__ = ["station_factory"]  # the fixture, used by name


def _folder(demo_product: Path, dst: Path) -> tuple[int, dict[str, str]]:
    good = sorted((demo_product / "test" / "good").glob("*.png"))[:6]
    dst.mkdir(parents=True)
    for f in good:
        shutil.copy(f, dst / f.name)
    whole = good[0].read_bytes()
    bad = {
        "t_truncated.png": "not a readable image",
        "t_empty.png": "empty file",
        "t_text.png": "not a readable image",
        "t_tiny.png": "too small",
        "t_huge.png": "over the limit of 40 MP",
    }
    (dst / "t_truncated.png").write_bytes(whole[: len(whole) // 3])
    (dst / "t_empty.png").write_bytes(b"")
    (dst / "t_text.png").write_text("this is a shift note, not an image\n")
    cv2.imwrite(str(dst / "t_tiny.png"), np.zeros((1, 1), np.uint8))
    cv2.imwrite(str(dst / "t_huge.png"), np.zeros((8000, 8000), np.uint8))
    return len(good), bad


def test_each_bad_frame_is_counted_and_recorded_with_its_reason(
    demo_product: Path,
    demo_patchcore: PatchCore,
    station_factory: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    n_good, bad = _folder(demo_product, tmp_path / "replay")
    data = tmp_path / "data"
    cfg = line_config(tmp_path / "replay", fps=0.0, loop=False, queue_size=64)
    app = station_factory(cfg, data, model=demo_patchcore)
    app.start()
    assert app.wait(120), "the replay did not finish"
    app.flush()
    st = app.status()
    assert st.counters.inspected == n_good
    assert st.counters.bad_frames == len(bad)
    with sqlite3.connect(db_path(data)) as conn:
        events = conn.execute(
            "SELECT message FROM events WHERE kind = 'bad_frame' ORDER BY id"
        ).fetchall()
        rows = conn.execute("SELECT count(*) FROM inspections").fetchone()[0]
    assert rows == n_good
    assert len(events) == len(bad)
    for name, why in bad.items():
        (message,) = next(e for e in events if name in e[0])
        assert why in message, message
    # Nothing of the huge frame reached the archive.
    archived = [p.stat().st_size for p in (data / "archive").rglob("*") if p.is_file()]
    assert max(archived, default=0) < 5_000_000


def test_the_counter_shows_bad_frames_beside_dropped_ones() -> None:
    from station.core.result import Counters
    from station.gui.counters import counter_texts

    assert counter_texts(Counters(dropped=3))["dropped"] == "3"
    assert counter_texts(Counters(dropped=3, bad_frames=5))["dropped"] == "3 + 5 bad"
