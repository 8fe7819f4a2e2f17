"""A score or a limit that is not a number never passes a part as OK.

The NaN is real: the demo model's memory bank filled with NaN (what a corrupted bank in memory or
a broken runtime gives), run through the real engine on the real line.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from test_pipeline import line_config, station_factory  # tests/integration

from station.app import StationApp
from station.core.result import Verdict
from station.inspect.decision import verdict
from station.model.memory_bank import MemoryBank
from station.model.patchcore import PatchCore
from station.records import db_path

__all__ = ["station_factory"]  # the fixture, used by name


@pytest.mark.parametrize(
    ("score", "threshold", "check"),
    [
        (math.nan, 20.0, None),
        (math.inf, 20.0, None),
        (-math.inf, 20.0, None),
        (5.0, math.nan, None),
        (5.0, 20.0, math.nan),
        (math.nan, math.nan, math.nan),
    ],
)
def test_not_a_number_is_never_ok(score: float, threshold: float, check: float | None) -> None:
    assert verdict(score, threshold, check) == Verdict.NOK


def test_a_model_that_scores_nan_judges_nothing_and_says_so(
    demo_product: Path,
    demo_model: Path,
    station_factory: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    model = PatchCore.load(demo_model, "onnx")
    # The exact torch search (the torch runtime's own) gives NaN distances for a NaN bank.
    model.bank = MemoryBank(np.full_like(model.artifact.bank, np.nan), backend="torch")
    assert not math.isfinite(model.predict(np.zeros((256, 256, 3), np.uint8)).score)
    data = tmp_path / "data"
    cfg = line_config(demo_product / "test", fps=0.0, loop=False, queue_size=64)
    app = station_factory(cfg, data, model=model)
    app.start()
    assert app.wait(120)
    app.flush()
    st = app.status()
    assert st.counters.inspected == 0  # no verdict at all, so none that says OK
    assert st.counters.bad_frames == 30  # every part, each counted
    # The screen still shows no verdict: parts refused one after another are an alarm.
    assert any("30 frames in a row not inspected" in a for a in st.alarms), st.alarms
    with sqlite3.connect(db_path(data)) as conn:
        assert conn.execute("SELECT count(*) FROM inspections").fetchone()[0] == 0
        messages = [
            m for (m,) in conn.execute("SELECT message FROM events WHERE kind = 'bad_frame'")
        ]
    assert len(messages) == 30 and all("not a number" in m for m in messages), messages[:2]
    model.close()
